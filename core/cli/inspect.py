"""`ktx inspect`: what is in a GGUF model, without loading it.

`inspect_report(path)` reads the header and tensor table (token strings are counted, not decoded)
and returns plain data; the command prints it as tables or, with --json, as JSON. Fast enough to
run on every file of a download directory: the demo model takes ~0.1 s.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ..demo import demo_gguf
from ..gguf import GGUFFile, ValueType
from ..gguf import open as open_gguf
from ..gguf.constants import TOKENIZER_KINDS
from .output import console, human_bytes, human_count, kv_table, plain, print_json, show

# Arrays longer than this are summarised as {type, length} rather than listed.
MAX_LISTED = 16

# tokenizer.ggml.* keys the tokenizer summary reports (by its own name); others stay in metadata.
TOKENIZER_IDS = {
    "bos": "tokenizer.ggml.bos_token_id",
    "eos": "tokenizer.ggml.eos_token_id",
    "unk": "tokenizer.ggml.unknown_token_id",
    "pad": "tokenizer.ggml.padding_token_id",
}
TOKENIZER_FLAGS = {
    "add_bos": "tokenizer.ggml.add_bos_token",
    "add_eos": "tokenizer.ggml.add_eos_token",
}
CHAT_TEMPLATE = "tokenizer.chat_template"

EXAMPLES = """\
examples:
  ktx inspect                                   the demo model (Gemma 3 270M Q4_K_M)
  ktx inspect model.gguf --no-tensors           summary only
  ktx inspect DeepSeek-V3-Q4_K_M-00001-of-00009.gguf   a split set, from any of its shards
  ktx inspect ~/models/Qwen3-30B-A3B/           a directory holding one model
  ktx inspect model.gguf --json | jq '.types'   bytes per ggml type, for scripts"""


def inspect_report(path: str | Path, *, tensors: bool = True) -> dict[str, Any]:
    """A GGUF model (file, any shard of a split set, or directory) as JSON-ready data.

    Shapes are in numpy order (outermost first), as `ktx.core.gguf` reports them; offsets are
    absolute byte offsets into `files[file]`. Raises GGUFError / FileNotFoundError.
    """
    with open_gguf(path) as f:
        return _report(f, tensors)


def _report(f: GGUFFile, with_tensors: bool) -> dict[str, Any]:
    md = f.metadata
    arch = md.architecture
    hyper = {k: _value(f, k) for k in md if arch and k.startswith(f"{arch}.")}
    tokenizer, used = _tokenizer(f)
    shown = {"general.architecture", "general.name", *hyper, *used}
    others = {k: _value(f, k) for k in md if k not in shown}

    file_index = {p: i for i, p in enumerate(f.paths)}
    tensor_bytes = sum(t.nbytes for t in f)
    by_type: dict[str, dict[str, int]] = {}
    for t in f:
        row = by_type.setdefault(t.type.name, {"count": 0, "elements": 0, "bytes": 0})
        row["count"] += 1
        row["elements"] += t.n_elements
        row["bytes"] += t.nbytes
    types = [
        {"type": name, **row, "share": row["bytes"] / tensor_bytes if tensor_bytes else 0.0}
        for name, row in sorted(by_type.items(), key=lambda kv: -kv[1]["bytes"])
    ]

    report: dict[str, Any] = {
        "files": [str(p) for p in f.paths],
        "file_bytes": f.nbytes,
        "version": f.version,
        "alignment": f.alignment,
        "architecture": arch,
        "name": plain(md.get("general.name")),
        "hyperparameters": hyper,
        "tokenizer": tokenizer,
        "metadata": others,
        "tensor_count": len(f.tensors),
        "parameter_count": sum(t.n_elements for t in f),
        "tensor_bytes": tensor_bytes,
        "types": types,
    }
    if with_tensors:
        report["tensors"] = [
            {
                "name": t.name,
                "type": t.type.name,
                "shape": list(t.shape),
                "elements": t.n_elements,
                "bytes": t.nbytes,
                "offset": t.offset,
                "file": file_index[t.path],
            }
            for t in f
        ]
    return report


def _tokenizer(f: GGUFFile) -> tuple[dict[str, Any] | None, set[str]]:
    """The tokenizer summary and the metadata keys it consumed."""
    md = f.metadata
    model = md.get("tokenizer.ggml.model")
    if model is None and "tokenizer.ggml.tokens" not in md:
        return None, set()
    used = {"tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.merges"}
    tokens = md.get("tokenizer.ggml.tokens")
    merges = md.get("tokenizer.ggml.merges")
    summary: dict[str, Any] = {
        "model": model,
        "kind": TOKENIZER_KINDS.get(model, f"unknown ({model})") if model is not None else None,
        "vocab_size": len(tokens) if tokens is not None else None,  # a StringArray: not decoded
        "merges": len(merges) if merges is not None else None,
    }
    for name, key in (*TOKENIZER_IDS.items(), *TOKENIZER_FLAGS.items()):
        summary[name] = plain(md.get(key))
        used.add(key)
    # llama.cpp stores the default template under tokenizer.chat_template and named ones
    # (tool_use, rag, ...) under tokenizer.chat_template.<name>.
    templates = {k: md[k] for k in md if k == CHAT_TEMPLATE or k.startswith(f"{CHAT_TEMPLATE}.")}
    used.update(templates)
    default = templates.pop(CHAT_TEMPLATE, None)
    summary["chat_template"] = {
        "present": default is not None,
        "length": len(default) if isinstance(default, str) else None,
        "named": {k.removeprefix(f"{CHAT_TEMPLATE}."): len(str(v)) for k, v in templates.items()},
    }
    return summary, used


def _value(f: GGUFFile, key: str) -> Any:
    """A metadata value as JSON-ready data; long arrays as {type, length} (never decoded)."""
    value = f.metadata[key]
    vtype, element = f.metadata.value_type(key)
    if vtype == ValueType.ARRAY and len(value) > MAX_LISTED:
        return {"type": _type_name(vtype, element), "length": len(value)}
    if ValueType.FLOAT32 in (vtype, element):
        # The shortest decimal that is the same float32: 1e-06, not 9.999999974752427e-07.
        shortest = [float(str(x)) for x in np.asarray(value, dtype=np.float32).reshape(-1)]
        return plain(shortest if vtype == ValueType.ARRAY else shortest[0])
    return plain(value)


def _type_name(vtype: ValueType, element: Any) -> str:
    """ARRAY of (ARRAY of INT32) -> 'array[array[INT32]]'."""
    if vtype != ValueType.ARRAY:
        return vtype.name
    if isinstance(element, tuple):
        return f"array[{_type_name(*element)}]"
    return f"array[{element.name if element is not None else '?'}]"  # None: an empty inner array


def print_inspect(report: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    out = console()
    files = report["files"]
    summary = [
        ("file" if len(files) == 1 else "files", "\n".join(files)),
        ("size", f"{human_bytes(report['file_bytes'])} ({report['file_bytes']:,} bytes)"),
        ("GGUF", f"version {report['version']}, alignment {report['alignment']}"),
        ("architecture", report["architecture"] or "none (general.architecture missing)"),
        ("name", report["name"] or "-"),
        ("parameters", f"{human_count(report['parameter_count'])} ({report['parameter_count']:,})"),
        ("tensors", f"{report['tensor_count']}, {human_bytes(report['tensor_bytes'])}"),
    ]
    show(out, kv_table("Model", summary))

    if report["hyperparameters"]:
        show(out, kv_table("Hyperparameters", [(k, _shown(v)) for k, v in report["hyperparameters"].items()]))

    tok = report["tokenizer"]
    if tok:
        ids = ", ".join(f"{name} {tok[name]}" for name in TOKENIZER_IDS if tok[name] is not None)
        flags = ", ".join(
            f"{name} {'yes' if tok[name] else 'no'}" for name in TOKENIZER_FLAGS if tok[name] is not None
        )
        tpl = tok["chat_template"]
        template = f"present, {tpl['length']:,} characters" if tpl["present"] else "none"
        if tpl["named"]:
            template += "; named: " + ", ".join(
                f"{n} ({length:,} characters)" for n, length in tpl["named"].items()
            )
        rows = [
            ("kind", tok["kind"] or "-"),
            ("vocabulary", f"{tok['vocab_size']:,} tokens" if tok["vocab_size"] is not None else "-"),
            ("special ids", ids or "-"),
            ("adds", flags or "-"),
            ("merges", f"{tok['merges']:,}" if tok["merges"] is not None else "none"),
            ("chat template", template),
        ]
        show(out, kv_table("Tokenizer", rows))

    if report["metadata"]:
        show(out, kv_table("Other metadata", [(k, _shown(v)) for k, v in report["metadata"].items()]))

    types = Table(title="Tensor types", title_justify="left", box=None, pad_edge=False)
    for col in ("type", "tensors", "elements", "bytes", "share"):
        types.add_column(col, justify="left" if col == "type" else "right")
    for row in report["types"]:
        types.add_row(
            Text(row["type"]),
            str(row["count"]),
            human_count(row["elements"]),
            human_bytes(row["bytes"]),
            f"{row['share']:.1%}",
        )
    show(out, types)

    if "tensors" in report:
        several = len(files) > 1
        table = Table(title="Tensors (shape outermost first)", title_justify="left", box=None, pad_edge=False)
        for col in ("name", "type", "shape", "elements", "bytes", "offset", *(("file",) if several else ())):
            table.add_column(
                col, justify="left" if col in ("name", "type", "shape") else "right", no_wrap=True
            )
        for t in report["tensors"]:
            table.add_row(
                Text(t["name"]),
                t["type"],
                " × ".join(map(str, t["shape"])),
                f"{t['elements']:,}",
                f"{t['bytes']:,}",
                f"{t['offset']:,}",
                *((str(t["file"] + 1),) if several else ()),
            )
        show(out, table)


def _shown(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"type", "length"}:
        return f"{value['type']}, {value['length']:,} items"
    if isinstance(value, str) and len(value) > 200:
        return f"{value[:200]!r}... ({len(value):,} characters)"
    return str(value)


def run(args: argparse.Namespace) -> int:
    path = args.file if args.file is not None else demo_gguf()
    report = inspect_report(path, tensors=not args.no_tensors)
    if args.json:
        print_json(report)
    else:
        print_inspect(report)
    return 0


def add_parser(subcommands) -> None:
    p = subcommands.add_parser(
        "inspect",
        help="what is in a GGUF model: architecture, hyperparameters, tokenizer, tensor types",
        description="Show a GGUF model without loading it: file(s), GGUF version, architecture, "
        "hyperparameters, tokenizer (kind, vocabulary size, special tokens, chat template), the "
        "other metadata, bytes and elements per ggml type, and the tensor table. FILE may be one "
        "file, any shard of a split set (the others are found beside it) or a directory holding "
        "one model; without FILE the demo model is inspected.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE", nargs="?", help="a .gguf file, split shard or directory")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-tensors", action="store_true", help="leave out the per-tensor table")
    p.set_defaults(run=run)
