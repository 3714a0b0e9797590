"""Where a decode step's time goes, by kernel family (`ktx bench e2e --breakdown`).

While a `StepBreakdown` is active, the operators' entry points and the CPU kernel wrappers are
wrapped with timers that keep *exclusive* time (a call's time minus the timed calls inside
it), so every microsecond lands in one family: the attention operator's own work (cache
writes, softmax, the paged kernel) counts as `attention`, its projections as `dense linear`,
its q/k norms and RoPE as `norms/rope`. The LM head counts whole, as `lm head`.

The CPU decoder blocks (runtime/cpu_blocks.py) run several families in one call; they keep
their own clocks by kind of work, which are added to the families here.

`rest` is what no family accounts for (the step's Python, framework dispatch, residual adds,
the sampler): the unprofiled step time minus the families' sum. A timer costs a caller about a
microsecond; that cost, measured at the start (`calibrate`), is taken off the caller's family
for each timed call it makes, so the timers inflate neither the families nor `rest`.
Families are timed on the host clock: exact on the CPU; on an accelerator they measure
launch time only.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

# the decoder blocks' clocks (core/kernels/blocks.h BlockClock) as families
BLOCK_CLOCKS = ("norms/rope", "norms/rope", "dense linear", "attention", "moe experts", "moe routing")
FAMILIES = ("attention", "dense linear", "moe experts", "moe routing", "lm head", "norms/rope", "embedding")


@dataclass
class _Frame:
    family: str
    absorb: bool
    child: float = 0.0  # time inside timed calls made from this one
    calls: int = 0  # how many


def _noop() -> None:
    pass


@dataclass
class StepBreakdown:
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(FAMILIES, 0.0))
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAMILIES, 0))
    _stack: list[_Frame] = field(default_factory=list)
    overhead: float = 0.0  # seconds a timed call adds to its caller's own time

    def calibrate(self, n: int = 20000) -> None:
        """Measures `overhead`: a timed no-op called n times inside a timed caller, against the
        same loop of plain calls."""
        child = self.wrap(_noop, "embedding")

        def timed_loop():
            for _ in range(n):
                child()

        def plain_loop():
            for _ in range(n):
                _noop()

        best = float("inf")
        for _ in range(5):
            self.reset()
            self.wrap(timed_loop, "attention")()
            t0 = time.perf_counter()
            plain_loop()
            plain = time.perf_counter() - t0
            best = min(best, (self.seconds["attention"] - plain) / n)
        self.overhead = max(0.0, best)
        self.reset()

    def wrap(self, fn, family: str, absorb: bool = False):
        """fn timed as `family`; absorb: calls made inside it count as this family too."""
        stack, seconds, calls = self._stack, self.seconds, self.calls

        def timed(*args, **kwargs):
            if stack and stack[-1].absorb:
                return fn(*args, **kwargs)
            frame = _Frame(family, absorb)
            stack.append(frame)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                stack.pop()
                seconds[family] += elapsed - frame.child - frame.calls * self.overhead
                calls[family] += 1
                if stack:
                    stack[-1].child += elapsed
                    stack[-1].calls += 1

        return timed

    def reset(self) -> None:
        for f in FAMILIES:
            self.seconds[f], self.calls[f] = 0.0, 0


def _targets() -> list[tuple[object, str, str]]:
    """(owner, attribute, family): the functions whose time a family is made of."""
    from ..ops import attention, cpu_kernels, embedding, linear, mla, mlp, moe, norm, rope

    return [
        (cpu_kernels, "linear", "dense linear"),
        (cpu_kernels, "linear1", "dense linear"),
        (cpu_kernels, "gated_linear", "dense linear"),
        (cpu_kernels, "linear_heads", "dense linear"),
        (linear.QuantLinear, "forward", "dense linear"),
        (mlp.GatedMLP, "forward", "dense linear"),
        (cpu_kernels, "rms_norm", "norms/rope"),
        (cpu_kernels, "rope_", "norms/rope"),
        (norm.RMSNorm, "forward", "norms/rope"),
        (norm.RMSNorm, "add_to", "norms/rope"),
        (rope.Rope, "__call__", "norms/rope"),
        (rope.Rope, "rotate_", "norms/rope"),
        (attention.Attention, "forward", "attention"),
        (mla.MLAAttention, "forward", "attention"),
        (cpu_kernels, "kv_write", "attention"),
        (cpu_kernels, "paged_attention", "attention"),
        (moe.Gate, "route", "moe routing"),
        (moe.TorchExperts, "forward", "moe experts"),
        (moe.Experts, "forward", "moe experts"),
        (moe.Experts, "submit", "moe experts"),
        (moe.Experts, "sync", "moe experts"),
        (embedding.Embedding, "forward", "embedding"),
    ]


@contextlib.contextmanager
def profiled(model) -> Iterator[StepBreakdown]:
    """Times the model's steps by family while inside (the plan is rebuilt on the way in and
    out, since it holds the operators' functions)."""

    from .. import _kernels

    bd = StepBreakdown()
    bd.calibrate()
    _kernels.reset_block_clock()
    saved = []
    for owner, name, family in _targets():
        if name in vars(owner):  # a class's own method, not one it inherits
            saved.append((owner, name, vars(owner)[name]))
            setattr(owner, name, bd.wrap(vars(owner)[name], family))
    head = model.lm_head
    head_forward = head.__dict__.get("forward")
    head.forward = bd.wrap(type(head).forward.__get__(head), "lm head", absorb=True)
    model.__dict__.pop("_ktx_step_plan", None)
    try:
        yield bd
        for family, ns in zip(BLOCK_CLOCKS, _kernels.block_clock(), strict=True):
            bd.seconds[family] += ns * 1e-9
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)
        if head_forward is None:
            del head.forward
        else:
            head.forward = head_forward
        model.__dict__.pop("_ktx_step_plan", None)


def table(per_token_ms: dict[str, float], step_ms: float) -> list[tuple[str, float, float]]:
    """(family, ms per token, share of the step) rows, `rest` last."""
    rows = [(f, per_token_ms[f], per_token_ms[f] / step_ms) for f in FAMILIES if per_token_ms[f] > 0]
    rest = max(0.0, step_ms - sum(per_token_ms.values()))
    return [*rows, ("rest (Python, framework)", rest, rest / step_ms)]
