"""`ktx bench e2e`: a whole model, prompt to answer: prefill and decode tokens/s, TTFT, memory,
and where a decode step's time goes (the CPU experts vs the rest of the model).

For each prompt length: random token ids (seeded, away from the special tokens) are prefilled
in chunks, then `gen` tokens are decoded greedily (end-of-sequence ignored). Routing is
counted during prefill and reported as its spread over experts (ktx.core.runtime.profile):
a benchmark whose tokens all go to a few experts would flatter prefill.

A decode step's parts: `cpu_ms` is the time the CPU MoE layers spent running (their own
clock), `rest_ms` the step time of a second decode pass with every CPU expert slot skipped
(all of the model but the CPU experts, launch overheads included). Overlap makes the step
shorter than their sum; `step_vs_parts` = step / (cpu + rest) says how well (≤ 1.2 wanted).

Ceilings measured in the same run: DRAM read bandwidth (the CPU experts' decode floor is
active expert bytes per token / bandwidth) and, on CUDA, pinned host-to-device bandwidth.
"""

from __future__ import annotations

import contextlib
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..backend import device_module
from ..runtime.context import Segment
from ..runtime.generate import decode_step, make_pool, prefill
from ..runtime.kv_cache import SequenceKV
from ..runtime.profile import count_routing, spread
from . import breakdown


@dataclass
class E2EConfig:
    prompts: list[int]
    gen: int = 128
    chunk_size: int = 512
    cuda_graph: bool = False
    seed: int = 0
    breakdown: bool = False  # also time a decode pass by kernel family (bench/breakdown.py)
    warmup: int = 1  # untimed rounds (a prefill and a few decode steps) before the first measurement


def _sync(device: torch.device) -> None:
    mod = device_module(device)
    if mod is not None:
        mod.synchronize(device)


def peak_memory_gb(device: torch.device) -> float:
    """The accelerator's peak allocated memory since the last reset (0 on the CPU)."""
    mod = device_module(device)
    return mod.max_memory_allocated(device) / 1e9 if mod is not None else 0.0


def _experts(model) -> list:
    from ..ops.moe import Experts

    return [m for m in model.modules() if isinstance(m, Experts)]


def cpu_busy_s(model) -> float:
    return sum(m.kernel.busy_seconds for m in _experts(model) if m.kernel is not None)


def active_expert_bytes(model) -> int:
    """Bytes of routed-expert weights one token reads from RAM: k experts per MoE layer."""
    total = 0
    for m in _experts(model):
        if m.kernel is None:
            continue
        k = int(model.config.num_experts_per_tok)
        n_experts = m.parts["gate"][0].shape[0]
        total += k * sum(m.parts[p][0].nbytes for p in ("gate", "up", "down")) // n_experts
    return total


def h2d_gb_s(device: torch.device, nbytes: int = 256 << 20) -> float:
    host = torch.empty(nbytes, dtype=torch.uint8).pin_memory()
    dev = torch.empty(nbytes, dtype=torch.uint8, device=device)
    best = float("inf")
    for _ in range(5):
        _sync(device)
        t0 = time.perf_counter()
        dev.copy_(host, non_blocking=True)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return nbytes / best / 1e9


def random_prompt(vocab: int, n: int, seed: int) -> list[int]:
    low = min(1000, vocab // 4)  # clear of the special and byte tokens at the start of most vocabularies
    return np.random.default_rng(seed).integers(low, vocab, n).tolist()


@contextlib.contextmanager
def cpu_experts_off(model):
    # the step plan is rebuilt on the way in and out: a CPU MoE block runs the experts itself
    experts = _experts(model)
    for m in experts:
        m.cpu_off = True
    model.__dict__.pop("_ktx_step_plan", None)
    try:
        yield
    finally:
        for m in experts:
            m.cpu_off = False
        model.__dict__.pop("_ktx_step_plan", None)


def _decode(
    model, pool, seq, logits, gen: int, cuda_graph: bool, device, timed=contextlib.nullcontext
) -> tuple[float, float]:
    """(seconds for `gen` greedy decode steps after `logits`, the CPU experts' busy seconds in them).

    One more step runs first, untimed: it compiles kernels and, with `cuda_graph`, warms up and
    captures the graph; timing it would charge a one-off cost to every step. `timed()` is a
    context entered around the timed steps only (a profiler)."""
    step = decode_step(model, pool, cuda_graph, reuse=False)  # passes differ (CPU experts off)

    def one(logits):
        return step([Segment(seq, seq.length, 1)], torch.tensor([int(logits.argmax())]))[0]

    logits = one(logits)
    _sync(device)
    with timed():
        busy0, t0 = cpu_busy_s(model), time.perf_counter()
        for _ in range(gen):
            logits = one(logits)
        _sync(device)
        elapsed = time.perf_counter() - t0
    return elapsed, cpu_busy_s(model) - busy0


def warm_up(model, cfg: E2EConfig) -> None:
    """`cfg.warmup` untimed rounds of the first prompt length's prefill and a few decode steps:
    the first call of each kernel (Triton's JIT, autotuning, the allocator's first blocks) is
    paid here, not by the first measured prompt."""
    if not cfg.warmup or not cfg.prompts:
        return
    device = model.model.embed_tokens.device
    n = cfg.prompts[0]
    ids = random_prompt(int(model.config.vocab_size), n, cfg.seed + 1)
    pool = make_pool(model, n + 8)
    with torch.inference_mode():
        for _ in range(cfg.warmup):
            seq = SequenceKV()
            logits = prefill(model, pool, seq, ids, cfg.chunk_size)
            _decode(model, pool, seq, logits, 2, cfg.cuda_graph, device)
            pool.free(seq)


def measure(model, n_prompt: int, cfg: E2EConfig) -> dict[str, Any]:
    device = model.model.embed_tokens.device
    vocab = int(model.config.vocab_size)
    ids = random_prompt(vocab, n_prompt, cfg.seed + n_prompt)
    passes = 3 if cfg.breakdown else 2
    pool = make_pool(model, n_prompt + passes * (cfg.gen + 1) + 1)
    accel = device_module(device)
    if accel is not None:
        accel.reset_peak_memory_stats(device)
    with torch.inference_mode():
        seq = SequenceKV()
        _sync(device)
        t0 = time.perf_counter()
        with count_routing(model) as counts:
            logits = prefill(model, pool, seq, ids, cfg.chunk_size)
        int(logits.argmax())  # the first token: TTFT ends here
        ttft = time.perf_counter() - t0
        decode_s, cpu_s = _decode(model, pool, seq, logits, cfg.gen, cfg.cuda_graph, device)
        # as many steps again, on with the same sequence, with every CPU expert slot skipped:
        # the rest of the model's time at nearly the same context length
        with cpu_experts_off(model):
            rest_s, _ = _decode(model, pool, seq, logits, cfg.gen, cfg.cuda_graph, device)
        families = None
        if cfg.breakdown:  # eager steps: a captured graph would not run the timers
            got = []

            @contextlib.contextmanager
            def timed():
                with breakdown.profiled(model) as bd:
                    got.append(bd)
                    yield

            _decode(model, pool, seq, logits, cfg.gen, False, device, timed=timed)
            families = {f: 1e3 * s / cfg.gen for f, s in got[0].seconds.items()}
        pool.free(seq)
    step_ms, cpu_ms, rest_ms = (1e3 * s / cfg.gen for s in (decode_s, cpu_s, rest_s))
    row = {
        "prompt_tokens": n_prompt,
        "gen_tokens": cfg.gen,
        "prefill_tok_s": n_prompt / ttft,
        "ttft_s": ttft,
        "decode_tok_s": cfg.gen / decode_s,
        "step_ms": step_ms,
        "cpu_experts_ms": cpu_ms,
        "rest_ms": rest_ms,
        "step_vs_parts": step_ms / (cpu_ms + rest_ms) if cpu_ms + rest_ms else None,
        "cpu_busy_share": cpu_ms / step_ms,
        "rest_busy_share": min(1.0, rest_ms / step_ms),
        "peak_vram_gb": peak_memory_gb(device),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
        "routing": spread(counts),
    }
    if families is not None:
        # rest: the unprofiled step minus the families (eager steps; see bench/breakdown.py)
        eager_ms = step_ms if not cfg.cuda_graph else None
        row["breakdown_ms"] = {
            **families,
            "rest": max(0.0, eager_ms - sum(families.values())) if eager_ms else None,
        }
    return row


def machine() -> dict[str, str]:
    """When, where and at which commit (KTX_COMMIT, else git) a result was measured."""
    import datetime
    import os
    import platform
    import subprocess

    cpu_name = platform.processor()
    with contextlib.suppress(OSError):
        names = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")]
        cpu_name = names[0].split(":", 1)[1].strip() if names else cpu_name
    commit = os.environ.get("KTX_COMMIT", "")
    if not commit:
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit = ""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_name,
        "gpu": gpu,
        "commit": commit or "unknown",
    }


def header(model, dram_gb_s: float, h2d: float | None, cfg: E2EConfig) -> dict[str, Any]:
    from .. import cpu

    per_token = active_expert_bytes(model)
    return {
        **machine(),
        "model": model.arch.variant,
        "layers": int(model.config.num_hidden_layers),
        "device": str(model.model.embed_tokens.device),
        "cpu_isa": cpu.isa(),
        "cpu_threads": cpu.default_threads(),
        "cuda_graph": cfg.cuda_graph,
        "dram_read_gb_s": dram_gb_s,
        "h2d_pinned_gb_s": h2d,
        "active_expert_mb_per_token": per_token / 1e6,
        "decode_floor_tok_s": dram_gb_s * 1e9 / per_token if per_token else None,
    }


def table_row(row: dict[str, Any], floor: float | None) -> str:
    frac = f"{row['decode_tok_s'] / floor:6.1%}" if floor else "     -"
    r = row["routing"]
    spread_text = f"{r['min_experts_used']:.0%}/{r['max_load_vs_even']:.1f}x" if r else "-"
    return (
        f"{row['prompt_tokens']:>7} {row['prefill_tok_s']:>10.1f} {row['ttft_s']:>8.2f} "
        f"{row['decode_tok_s']:>9.1f} {frac:>7} {row['step_ms']:>8.2f} {row['cpu_experts_ms']:>8.2f} "
        f"{row['rest_ms']:>8.2f} {row['step_vs_parts'] or 0:>6.2f} {row['peak_vram_gb']:>6.2f} "
        f"{row['peak_rss_gb']:>6.2f} {spread_text:>11}"
    )


def breakdown_lines(row: dict[str, Any]) -> list[str]:
    """The decode step by kernel family: ms per token and share of the step."""
    b = row.get("breakdown_ms")
    if not b:
        return []
    step = row["step_ms"]
    lines = [f"  decode step at {row['prompt_tokens']} tokens of context, per token:"]
    for family, ms in b.items():
        if family == "rest":
            text = f"{ms:8.2f} ms {ms / step:6.1%}" if ms is not None else "   (not measured: CUDA graph)"
            lines.append(f"    {'rest (Python, framework)':<26}{text}")
        elif ms > 0:
            lines.append(f"    {family:<26}{ms:8.2f} ms {ms / step:6.1%}")
    lines.append(f"    {'step':<26}{step:8.2f} ms")
    return lines


TABLE_HEADER = (
    f"{'prompt':>7} {'prefill/s':>10} {'TTFT s':>8} {'decode/s':>9} {'vs floor':>7} {'step ms':>8} "
    f"{'cpu ms':>8} {'rest ms':>8} {'ratio':>6} {'VRAM':>6} {'RSS':>6} {'spread':>11}"
)
