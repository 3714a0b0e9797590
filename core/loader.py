"""`ktx.core.load`: a GGUF (file, split set or folder) -> an injected transformers model.

model = ktx.core.load("model.gguf")
logits = model(torch.tensor([[2, 651, 6037]])).logits
model.tokenizer.encode("Hello")
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import gguf
from .models import ModelError, config_from_gguf


def _device(device: str) -> str:
    from .backend import resolve_device

    try:
        return resolve_device(device)
    except ValueError as e:
        raise ModelError(str(e)) from None


def build_meta_model(gf: Any, model_path: str | None = None, num_experts_per_tok: int | None = None):
    """(arch, config, transformers model on the meta device) for an open GGUF: no memory used."""
    arch, config = config_from_gguf(gf, model_path)
    if num_experts_per_tok:
        if not hasattr(config, "num_experts_per_tok"):
            raise ModelError(f"--experts-per-tok: {arch.variant} is not a mixture-of-experts model")
        config.num_experts_per_tok = int(num_experts_per_tok)
    with torch.device("meta"):
        model = arch.load_class("model")(config)
    return arch, config, model


def load(
    gguf_path: str | os.PathLike[str] | None = None,
    *,
    model_path: str | None = None,
    rules: str | os.PathLike[str] | None = None,
    device: str = "auto",
    cpu_threads: int | None = None,
    num_experts_per_tok: int | None = None,
    tokenizer: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
    gpu_experts: int = 0,
    profile: str | os.PathLike[str] | None = None,
    cache_tokens: int = 4096,
    on_plan: Callable[[Any], None] | None = None,
    memory_check: bool = True,
) -> Any:
    """Builds the transformers model on the meta device, injects ktx operators by rules, loads weights.

    Returns the model with `.tokenizer` (from the GGUF), `.config`, `.gguf`, `.arch`,
    `.memory_plan` and `.load_seconds`. No `gguf_path` loads the embedded demo model (ktx[demo]).
    `device`: where everything but the routed experts runs (auto, cpu, cuda, cuda:1 ...).
    `gpu_experts`: experts per layer kept on that device (the busiest in `profile`, a routing
    profile from `ktx profile`, else the first). `progress(stage, done, total)` is called as
    loading goes (stages: build, weights, tokenizer); `on_plan(plan)` once the memory plan (for
    `cache_tokens` of KV cache) is known, before any weight is read; a plan that does not fit
    raises ModelError unless `memory_check=False`.
    """

    def report(stage: str, done: int = 0, total: int = 0) -> None:
        if progress is not None:
            progress(stage, done, total)

    from .inject import optimize_and_load_gguf
    from .inject.inject import inject
    from .inject.rules import load_rules
    from .memory_plan import free_memory, plan_memory

    start = time.perf_counter()
    default_device = _device(device)  # refuse an unusable device before any heavy work
    if gguf_path is None:
        from .demo import demo_gguf

        gguf_path = demo_gguf()
    # Subnormal floats (from exp() of very negative attention scores, among others) run ~100x
    # slower on x86; flushing them to zero changes results by < 1e-38 and made the demo's
    # attention 300x faster. It is a per-thread CPU flag: set it where inference runs.
    torch.set_flush_denormal(True)
    if cpu_threads:
        torch.set_num_threads(int(cpu_threads))
        os.environ["KTX_THREADS"] = str(int(cpu_threads))
    gf = gguf.open(gguf_path)
    report("build")
    arch, config, model = build_meta_model(gf, model_path, num_experts_per_tok)
    rule_list = load_rules(Path(rules) if rules is not None else arch.rules_path)
    if gpu_experts:
        _keep_experts_on(rule_list, default_device, int(gpu_experts), profile)
    dry = inject(model, rule_list, gf, config, arch.gguf_name, default_device, dry_run=True)
    kwargs_of = {path: rule_list[i].kwargs for i, paths in dry.matched.items() for path in paths}
    plan = plan_memory(gf, arch.gguf_name, config, dry.devices, kwargs_of, cache_tokens)
    if on_plan is not None:
        on_plan(plan)
    if memory_check:
        plan.check(free_memory({d for d, _ in plan.parts}))
    model.injection = optimize_and_load_gguf(
        model,
        rule_list,
        gf,
        config,
        default_device=default_device,
        progress=lambda done, total: report("weights", done, total),
    )
    model.gguf, model.arch, model.memory_plan = gf, arch, plan
    if tokenizer:
        from .tokenizer import Tokenizer

        report("tokenizer")
        model.tokenizer = Tokenizer.from_gguf(gf)
    model.load_seconds = time.perf_counter() - start
    return model


def _keep_experts_on(rules: list, device: str, n: int, profile: Any) -> None:
    """Gives the routed-experts rules `gpu_experts: n` on `device`."""
    from .ops.moe import Experts

    if device == "cpu":
        raise ModelError("--gpu-experts keeps experts on an accelerator: give --device cuda (or another)")
    if profile is not None and not Path(profile).is_file():
        raise ModelError(f"routing profile {profile}: no such file; record one with `ktx profile`")
    hits = [r for r in rules if isinstance(r.replace_class, type) and issubclass(r.replace_class, Experts)]
    if not hits:
        raise ModelError("--gpu-experts: no rule places routed experts (ktx.core.ops.moe.Experts)")
    for r in hits:
        r.kwargs = {**r.kwargs, "gpu_experts": n, "gpu_device": device}
        if profile is not None:
            r.kwargs["profile"] = str(profile)
