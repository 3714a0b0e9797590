"""`ktx rules check RULES.yaml --gguf PATH`: which modules each rule would replace (a dry run)."""

from __future__ import annotations

import argparse

from .output import print_json


def add_parser(subcommands) -> None:
    p = subcommands.add_parser(
        "rules",
        help="check a placement rule file against a model",
        description="Work with YAML placement rules.",
    )
    sub = p.add_subparsers(title="actions", metavar="ACTION")
    c = sub.add_parser("check", help="show which modules each rule matches (nothing is loaded)")
    c.add_argument("rules", nargs="?", help="rule file (default: the model's own)")
    c.add_argument("--gguf", metavar="FILE|DIR", help="model (default: the demo model)")
    c.add_argument("--model-path", metavar="DIR", help="folder with a config.json overriding GGUF metadata")
    c.add_argument("--json", action="store_true")
    c.set_defaults(run=check)
    p.set_defaults(run=lambda args: p.print_help() or 2)


def describe(rule) -> str:
    """A rule as the file says it: its name pattern, class, replacement and device."""
    parts = []
    if rule.name is not None:
        parts.append(f"name ~ {rule.name.pattern}")
    if rule.match_class is not None:
        parts.append(f"class {rule.match_class.__name__}")
    target = rule.replace_class.__name__ if rule.replace_class is not None else "kept"
    parts.append(f"-> {target}" + (f" on {rule.device}" if rule.device else ""))
    return ", ".join(parts)


def check_report(rules_path, gguf_path=None, model_path=None) -> dict:
    from .. import gguf
    from ..demo import demo_gguf
    from ..inject import inject, load_rules
    from ..loader import build_meta_model

    gf = gguf.open(gguf_path or demo_gguf())
    arch, config, model = build_meta_model(gf, model_path)
    path = rules_path or arch.rules_path
    rules = load_rules(path)
    report = inject(model, rules, gf, config, arch.gguf_name, dry_run=True)
    return {
        "rules": str(path),
        "architecture": arch.variant,
        "matched": [
            {"rule": r.index, "describes": describe(r), "modules": report.matched.get(r.index, [])}
            for r in rules
        ],
        "unmatched_with_weights": report.unmatched,
    }


def check(args: argparse.Namespace) -> int:
    report = check_report(args.rules, args.gguf, args.model_path)
    if args.json:
        print_json(report)
        return 0
    print(f"{report['rules']} on {report['architecture']}:")
    for row in report["matched"]:
        mods = row["modules"]
        shown = ", ".join(mods[:4]) + (f", ... ({len(mods)} in all)" if len(mods) > 4 else "")
        print(f"  rule {row['rule']} ({row['describes']}): {shown or 'matches nothing'}")
    if report["unmatched_with_weights"]:
        print(f"  no rule: {', '.join(report['unmatched_with_weights'])} (loaded as plain modules)")
    return 0
