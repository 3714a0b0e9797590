"""YAML placement rules: which module is replaced by which operator, on which device.

A rule file is a list of rules:

    - match: {name: "<regex searched in the module path>", class: <dotted class>}  # either or both
      replace: {class: <dotted operator class> | default, device: cpu, kwargs: {...}}
      recursive: false      # optional: do not look inside the matched module

The first rule that matches a module wins. Rules are checked when loaded; errors name the
rule's index and field.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml


class RuleError(ValueError):
    """A rule file that cannot be used: names the file, the rule's index and the field."""


@dataclass
class Rule:
    index: int
    name: re.Pattern[str] | None
    match_class: type | None
    replace_class: type | None  # None = "default": keep the module, only place it
    device: str | None
    kwargs: dict[str, Any] = field(default_factory=dict)
    recursive: bool = True

    def matches(self, path: str, module: torch.nn.Module) -> bool:
        if self.name is not None and not self.name.search(path):
            return False
        return self.match_class is None or isinstance(module, self.match_class)


def import_class(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    if not module:
        raise ImportError(f"{dotted!r} is not a dotted path like package.module.Class")
    cls = getattr(importlib.import_module(module), name, None)
    if not isinstance(cls, type):
        raise ImportError(f"{module} has no class {name}")
    return cls


def check_device(device: str) -> str:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"{device!r} is not a device (cpu, cuda, cuda:1, xpu, ...)") from e
    if dev.type not in ("cpu", "cuda", "xpu", "npu", "mps", "meta"):
        raise ValueError(f"{device!r} is not a device ktx places modules on")
    return str(dev)


def parse_rules(data: Any, source: str = "<rules>") -> list[Rule]:
    if not isinstance(data, list):
        raise RuleError(f"{source}: a rule file is a YAML list of rules, got {type(data).__name__}")
    rules = []
    for i, item in enumerate(data):
        where = f"{source}: rule {i}"
        if not isinstance(item, dict):
            raise RuleError(f"{where}: each rule is a mapping with match/replace, got {item!r}")
        unknown = set(item) - {"match", "replace", "recursive"}
        if unknown:
            raise RuleError(
                f"{where}: unknown field(s) {sorted(unknown)}; allowed: match, replace, recursive"
            )
        match, replace = item.get("match"), item.get("replace", {})
        if (
            not isinstance(match, dict)
            or not ({"name", "class"} & set(match))
            or set(match) - {"name", "class"}
        ):
            raise RuleError(f"{where}: field 'match' needs 'name' (a regex) and/or 'class' (a dotted class)")
        if not isinstance(replace, dict) or set(replace) - {"class", "device", "kwargs"}:
            raise RuleError(f"{where}: field 'replace' takes class, device and kwargs")
        try:
            name = re.compile(match["name"]) if "name" in match else None
        except (re.error, TypeError) as e:
            raise RuleError(
                f"{where}: field 'match.name' is not a valid regex ({match['name']!r}: {e})"
            ) from None
        classes = []
        for fld, dotted in (("match.class", match.get("class")), ("replace.class", replace.get("class"))):
            if dotted is None or (fld == "replace.class" and dotted == "default"):
                classes.append(None)
                continue
            try:
                classes.append(import_class(str(dotted)))
            except (ImportError, ValueError) as e:
                raise RuleError(f"{where}: field '{fld}': cannot import {dotted!r} ({e})") from None
        device = replace.get("device")
        if device is not None:
            try:
                device = check_device(str(device))
            except ValueError as e:
                raise RuleError(f"{where}: field 'replace.device': {e}") from None
        kwargs = replace.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise RuleError(f"{where}: field 'replace.kwargs' must be a mapping")
        recursive = item.get("recursive", True)
        if not isinstance(recursive, bool):
            raise RuleError(f"{where}: field 'recursive' must be true or false")
        rules.append(Rule(i, name, classes[0], classes[1], device, dict(kwargs), recursive))
    return rules


def load_rules(path: str | Path) -> list[Rule]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise RuleError(f"{path}: cannot read the rule file ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise RuleError(f"{path}: not valid YAML ({e})") from None
    return parse_rules(data, str(path))
