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
    if device in ("auto", "cpu"):
        return "cpu"
    raise ModelError(
        f"device {device!r}: this build runs models on the CPU only; the GPU backends "
        "(--device cuda) arrive with the CUDA backend"
    )


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
) -> Any:
    """Builds the transformers model on the meta device, injects ktx operators by rules, loads weights.

    Returns the model with `.tokenizer` (from the GGUF), `.config`, `.gguf`, `.arch` and
    `.load_seconds`. No `gguf_path` loads the embedded demo model (ktx[demo]).
    `progress(stage, done, total)` is called as loading goes (stages: build, weights, tokenizer).
    """

    def report(stage: str, done: int = 0, total: int = 0) -> None:
        if progress is not None:
            progress(stage, done, total)

    from .inject import optimize_and_load_gguf

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
    rule_path = Path(rules) if rules is not None else arch.rules_path
    model.injection = optimize_and_load_gguf(
        model,
        rule_path,
        gf,
        config,
        default_device=default_device,
        progress=lambda done, total: report("weights", done, total),
    )
    model.gguf, model.arch = gf, arch
    if tokenizer:
        from .tokenizer import Tokenizer

        report("tokenizer")
        model.tokenizer = Tokenizer.from_gguf(gf)
    model.load_seconds = time.perf_counter() - start
    return model
