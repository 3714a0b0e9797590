"""Rule injection: replace the modules of a model built on the meta device, then load weights.

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    optimize_and_load_gguf(model, "rules.yaml", "model.gguf", config)

Walks `named_modules` top-down; the first matching rule replaces a module with an operator
(or, for `class: default`, only places it) and the walk continues into the new module's
children unless the rule says `recursive: false`. Operators load their own tensors; every
other module gets its parameters dequantized from the GGUF under the llama.cpp tensor name.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import gguf as gguf_mod
from ..models.errors import ModelError
from ..models.names import gguf_prefix, tied
from ..models.registry import check_architecture
from ..ops.base import Operator
from .rules import Rule, load_rules


@dataclass
class InjectionReport:
    matched: dict[int, list[str]] = field(default_factory=dict)  # rule index -> module paths
    unmatched: list[str] = field(default_factory=list)  # modules with own weights no rule touched
    devices: dict[str, str] = field(default_factory=dict)  # module path -> device


def _own_tensors(module: nn.Module):
    yield from module.named_parameters(recurse=False)
    yield from module.named_buffers(recurse=False)


def inject(
    model: nn.Module,
    rules: list[Rule],
    gf: Any,
    config: Any,
    arch: str,
    default_device: str = "cpu",
    dry_run: bool = False,
) -> InjectionReport:
    report = InjectionReport()

    def walk(module: nn.Module, prefix: str, device: str) -> None:
        for name, child in list(module.named_children()):
            path = f"{prefix}{name}"
            rule = next((r for r in rules if r.matches(path, child)), None)
            dev = rule.device if rule is not None and rule.device else device
            report.devices[path] = dev
            if rule is not None:
                report.matched.setdefault(rule.index, []).append(path)
                if rule.replace_class is not None and not dry_run:
                    key = gguf_prefix(arch, path)
                    try:
                        child = rule.replace_class(key, gf, config, orig=child, device=dev, **rule.kwargs)
                    except TypeError as e:
                        raise ModelError(
                            f"rule {rule.index}: cannot build {rule.replace_class.__name__} for {path}: {e}"
                        ) from None
                    setattr(module, name, child)
                if not rule.recursive:
                    continue
            elif any(True for _ in _own_tensors(child)) and not isinstance(module, Operator):
                report.unmatched.append(path)
            walk(child, path + ".", dev)

    walk(model, "", default_device)
    return report


def _gemma_norm(module: nn.Module) -> bool:
    # transformers' Gemma RMSNorm computes x * (1 + w); llama.cpp stores 1 + w.
    return type(module).__name__.startswith("Gemma") and type(module).__name__.endswith("RMSNorm")


def load_weights(
    model: nn.Module,
    gf: Any,
    arch: str,
    devices: dict[str, str],
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Loads every operator and every plain module; `progress(done, total)` after each module."""
    modules = list(model.named_modules())
    for done, (path, module) in enumerate(modules, 1):
        if progress is not None:
            progress(done, len(modules))
        if isinstance(module, Operator):
            module.load()
            continue
        for pname, tensor in list(_own_tensors(module)):
            if tensor.device.type != "meta":
                continue
            prefix = gguf_prefix(arch, path)
            name = tied(f"{prefix}.{pname}", gf.tensors) if prefix else None
            if name is None or name not in gf.tensors:
                raise ModelError(
                    f"{gf.paths[0]}: no tensor for {path}.{pname} (looked for {name!r}); "
                    "the file is incomplete, or a rule should replace this module"
                )
            value = gf.tensors[name].dequantize(torch.float32)
            if _gemma_norm(module):
                value = value - 1.0
            value = value.to(devices.get(path, "cpu"))
            if pname in module._parameters:
                module._parameters[pname] = nn.Parameter(value, requires_grad=False)
            else:
                module._buffers[pname] = value
    left = [
        f"{p}.{n}" for p, m in model.named_modules() for n, t in _own_tensors(m) if t.device.type == "meta"
    ]
    if left:
        raise ModelError(
            f"these tensors were never loaded: {', '.join(left[:8])}{' ...' if len(left) > 8 else ''}"
        )


def optimize_and_load_gguf(
    model: nn.Module,
    rule_path: str | Path | list[Rule],
    gguf_path: Any,
    config: Any,
    default_device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> InjectionReport:
    """Injects operators into `model` (built under torch.device("meta")) by rules, then loads the GGUF."""
    gf = gguf_path if hasattr(gguf_path, "tensors") else gguf_mod.open(gguf_path)
    arch = check_architecture(gf.metadata.get_str("general.architecture", None), str(gf.paths[0]))
    rules = rule_path if isinstance(rule_path, list) else load_rules(rule_path)
    from ..models.registry import VARIANTS

    variant = VARIANTS.get(getattr(config, "model_type", ""))
    if not hasattr(config, "ktx_rope_interleaved"):
        config.ktx_rope_interleaved = variant.rope_interleaved if variant else False
    report = inject(model, rules, gf, config, arch, default_device)
    load_weights(model, gf, arch, report.devices, progress)
    hop_devices(model, report.devices)
    model.eval()
    return report


def hop_devices(model: nn.Module, devices: dict[str, str]) -> None:
    """Where rules split the decoder layers over devices (`cuda:0`, `cuda:1`, ...), each layer,
    the final norm and the LM head move their inputs to their own device first."""
    layer_paths = [p for p in devices if re.fullmatch(r"model\.layers\.\d+", p)]
    if len({devices[p] for p in layer_paths}) < 2:
        return
    modules = dict(model.named_modules())
    for path in [*layer_paths, "model.norm", "lm_head"]:
        if path in modules and path in devices:
            modules[path].register_forward_pre_hook(_mover(torch.device(devices[path])), with_kwargs=True)


def _mover(device: torch.device):
    def move(value):
        if isinstance(value, torch.Tensor):
            return value.to(device)
        if isinstance(value, tuple):
            return tuple(move(v) for v in value)
        return value

    def hook(module, args, kwargs):
        return tuple(move(a) for a in args), {k: move(v) for k, v in kwargs.items()}

    return hook
