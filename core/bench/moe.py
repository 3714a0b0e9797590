"""The CPU MoE kernels (ktx.core.cpu_moe) at a real model's expert shapes, against DRAM bandwidth.

    bench = MoeBench(MoeBenchConfig(preset="v2-lite", type="q4_k", tokens=(1, 16)))
    bench.measure_dram(); bench.build()
    rows = [bench.measure(n) for n in bench.config.tokens]

The experts are random GGUF blocks (ktx.core.convert.synth_blocks) of the preset's shapes, typed
as llama-quantize would type them: a projection whose input width is not a multiple of the
type's block falls back (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, IQ4_XS -> IQ4_NL), e.g.
V2-Lite's down projection (1408 columns). Decode must read its experts from DRAM, as in a real
model, so the benchmark holds several layers (by default enough for 4x the L3, at least 2),
cycles through them call after call and routes every call afresh (uniform random top-k distinct
experts per token). Layers are capped at 40% of the available RAM by cutting the experts per
layer (never below 2 x top-k), which the report says.

Each row is the median call (by time) of `repeats`: ms per layer, tokens through one layer per
second, GB/s of the distinct experts that call touched, that as a fraction of the DRAM read
bandwidth measured in the same run, and GFLOP/s (2 x tokens x top-k x 3 x hidden x inter).
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import cpu, membw
from ..convert.presets import PRESETS
from ..convert.synth_blocks import BlockPool
from ..convert.tensor_types import FALLBACK
from ..gguf.constants import BLOCK_SIZES, GGMLType

if TYPE_CHECKING:  # torch and the kernels load when a benchmark runs, not with `ktx --help`
    import torch

    from ..cpu_moe import CpuMoE

TYPES: dict[str, GGMLType] = {
    "q4_k": GGMLType.Q4_K,
    "q5_k": GGMLType.Q5_K,
    "q6_k": GGMLType.Q6_K,
    "q8_0": GGMLType.Q8_0,
    "iq4_xs": GGMLType.IQ4_XS,
    "iq4_nl": GGMLType.IQ4_NL,
    "mxfp4": GGMLType.MXFP4,
    "iq1_s": GGMLType.IQ1_S,
    "iq1_m": GGMLType.IQ1_M,
    "iq2_xxs": GGMLType.IQ2_XXS,
    "iq2_xs": GGMLType.IQ2_XS,
    "iq2_s": GGMLType.IQ2_S,
    "iq3_xxs": GGMLType.IQ3_XXS,
    "iq3_s": GGMLType.IQ3_S,
    "tq1_0": GGMLType.TQ1_0,
    "tq2_0": GGMLType.TQ2_0,
    "bf16": GGMLType.BF16,
    "f16": GGMLType.F16,
}
# llama-quantize's fallbacks for a row length the block does not divide (tensor_types.FALLBACK
# plus the IQ4 pair, which `ktx convert` does not write).
FALLBACKS: dict[GGMLType, GGMLType] = {
    **FALLBACK,
    GGMLType.IQ4_XS: GGMLType.IQ4_NL,
    GGMLType.MXFP4: GGMLType.F16,
    GGMLType.TQ1_0: GGMLType.F16,
    GGMLType.TQ2_0: GGMLType.F16,
}

DEFAULT_TOKENS = (1, 4, 16, 64, 256, 1024)
DEFAULT_PROBE_MIB = 1024
RAM_FRACTION = 0.4  # of the available RAM, at most, for the weights
L3_MULTIPLE = 4  # weights >= this many L3s, so decode reads DRAM
MIN_LAYERS = 2
DEFAULT_L3 = 32 << 20  # when sysfs does not say
FILL_BATCH_BYTES = 64 << 20  # per task of the threads that fill the weights
PROJECTIONS = ("gate", "up", "down")
ROW_KEYS = (
    "preset",
    "type",
    "isa",
    "threads",
    "tokens",
    "ms_per_layer",
    "tokens_per_s",
    "weights_gb_s",
    "dram_read_gb_s",
    "bw_fraction",
    "gflops",
)


def _expert_count(cfg: dict[str, Any]) -> int | None:
    for key in ("n_routed_experts", "num_experts", "num_local_experts"):
        if cfg.get(key):
            return int(cfg[key])
    return None


MOE_PRESETS = tuple(name for name, cfg in PRESETS.items() if _expert_count(cfg))


@dataclass(frozen=True)
class MoeShape:
    preset: str
    experts: int
    top_k: int
    hidden: int
    inter: int


def preset_shape(name: str) -> MoeShape:
    """The routed experts' shape of a preset in ktx.core.convert.presets (its HF config keys)."""
    if name not in MOE_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(MOE_PRESETS)}")
    cfg = PRESETS[name]
    return MoeShape(
        preset=name,
        experts=_expert_count(cfg) or 0,
        top_k=int(cfg["num_experts_per_tok"]),
        hidden=int(cfg["hidden_size"]),
        inter=int(cfg.get("moe_intermediate_size") or cfg["intermediate_size"]),
    )


def parse_tokens(text: str) -> list[int]:
    """'1,4,16' -> [1, 4, 16]; ValueError unless every item is a positive integer."""
    items = [s.strip() for s in str(text).split(",")]
    try:
        tokens = [int(s) for s in items]
    except ValueError:
        tokens = []
    if not tokens or any(n < 1 for n in tokens):
        raise ValueError(f"--tokens {text!r}: expected positive integers separated by commas, e.g. 1,4,16")
    return tokens


def parse_type(name: str) -> GGMLType:
    key = name.lower()
    if key not in TYPES:
        raise ValueError(f"unknown type {name!r}; choose from {', '.join(TYPES)}")
    return TYPES[key]


def fitted_type(wanted: GGMLType, cols: int) -> GGMLType:
    """The type llama-quantize writes for rows of `cols` values when `wanted` was asked for."""
    chosen = wanted
    while cols % BLOCK_SIZES[chosen][0]:
        chosen = FALLBACKS[chosen]
    return chosen


def projection_types(wanted: GGMLType, shape: MoeShape) -> dict[str, GGMLType]:
    """gate and up take `hidden` values per row, down takes `inter`."""
    return {
        "gate": fitted_type(wanted, shape.hidden),
        "up": fitted_type(wanted, shape.hidden),
        "down": fitted_type(wanted, shape.inter),
    }


def row_bytes(ggml_type: GGMLType, cols: int) -> int:
    block, type_size = BLOCK_SIZES[ggml_type]
    return cols // block * type_size


def projection_dims(shape: MoeShape) -> dict[str, tuple[int, int]]:
    """(rows, cols) of one expert's projection."""
    return {
        "gate": (shape.inter, shape.hidden),
        "up": (shape.inter, shape.hidden),
        "down": (shape.hidden, shape.inter),
    }


def expert_bytes(types: dict[str, GGMLType], shape: MoeShape) -> int:
    """Bytes of one expert (gate + up + down)."""
    dims = projection_dims(shape)
    return sum(dims[p][0] * row_bytes(types[p], dims[p][1]) for p in PROJECTIONS)


def l3_bytes() -> int | None:
    """cpu0's L3 size from sysfs ('32768K'), or None."""
    try:
        text = Path("/sys/devices/system/cpu/cpu0/cache/index3/size").read_text().strip()
    except OSError:
        return None
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    digits = text[:-1] if text[-1:].upper() in "KMG" else text
    try:
        return int(digits) * scale
    except ValueError:
        return None


def threads_text(n: int) -> str:
    return f"{n} thread" if n == 1 else f"{n} threads"


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


@dataclass
class MoePlan:
    """How many layers of how many experts the benchmark holds, and why."""

    shape: MoeShape
    types: dict[str, GGMLType]
    experts: int  # per layer
    layers: int
    expert_bytes: int
    l3: int
    cap: int  # bytes the weights may take
    notes: list[str] = field(default_factory=list)

    @property
    def layer_bytes(self) -> int:
        return self.experts * self.expert_bytes

    @property
    def total_bytes(self) -> int:
        return self.layers * self.layer_bytes


def plan_memory(
    shape: MoeShape,
    types: dict[str, GGMLType],
    *,
    layers: int | None = None,
    experts: int | None = None,
    available: int,
    l3: int | None,
) -> MoePlan:
    """Layers (default: enough for L3_MULTIPLE x the L3, at least MIN_LAYERS) and experts per
    layer (default: the preset's, cut to fit RAM_FRACTION of `available`, never below 2 x top-k)."""
    k = shape.top_k
    eb = expert_bytes(types, shape)
    notes = []
    if l3 is None:
        notes.append(f"L3 size unknown (no sysfs entry): assuming {DEFAULT_L3 >> 20} MiB")
        l3 = DEFAULT_L3
    cap = int(RAM_FRACTION * available)
    if layers is not None and layers < 1:
        raise ValueError(f"--layers {layers}: at least 1 layer needed")
    if experts is not None and experts < k:
        raise ValueError(
            f"--experts {experts}: each token routes to top-{k} distinct experts, so at least {k} needed"
        )

    def default_layers(e: int) -> int:
        return max(MIN_LAYERS, math.ceil(L3_MULTIPLE * l3 / (e * eb)))

    n_experts = experts if experts is not None else shape.experts
    n_layers = layers if layers is not None else default_layers(n_experts)
    if experts is None and n_layers * n_experts * eb > cap:
        cut = max(2 * k, min(n_experts, cap // (n_layers * eb)))
        notes.append(
            f"experts per layer cut from {n_experts} to {cut}: {n_layers} layers of {n_experts} would take "
            f"{gb(n_layers * n_experts * eb)}, over {RAM_FRACTION:.0%} of the available RAM ({gb(cap)}); "
            "--experts overrides"
        )
        n_experts = cut
        if layers is None:
            n_layers = default_layers(n_experts)
    total = n_layers * n_experts * eb
    if total > cap:
        raise ValueError(
            f"{n_layers} layers of {n_experts} experts take {gb(total)}, over {RAM_FRACTION:.0%} of the "
            f"available RAM ({gb(cap)}): ask for fewer --layers or --experts"
        )
    if total < L3_MULTIPLE * l3:
        notes.append(
            f"the weights ({gb(total)}) are under {L3_MULTIPLE}x the L3 ({l3 >> 20} MiB): "
            "part of what small batches read may come from cache"
        )
    if n_experts < 2 * k:
        notes.append(f"{n_experts} experts per layer, under 2 x top-{k}: most are touched by every call")
    return MoePlan(shape, types, n_experts, n_layers, eb, l3, cap, notes)


class _Progress:
    """'building weights: 3.2 / 12.7 GB' on stderr, once building has taken more than a second."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self.last = self.t0
        self.shown = False

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if not self.enabled or now - self.t0 < 1.0 or now - self.last < (0.5 if self.tty else 5.0):
            return
        self.last, self.shown = now, True
        line = f"building weights: {done / 1e9:.1f} / {self.total / 1e9:.1f} GB"
        print(f"\r{line}" if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def done(self) -> None:
        seconds = time.perf_counter() - self.t0
        if self.enabled and (self.shown or seconds >= 1.0):
            end = "\r" if self.tty and self.shown else ""
            print(
                f"{end}built {self.total / 1e9:.1f} GB of weights in {seconds:.1f} s"
                f" ({self.total / seconds / 1e9:.1f} GB/s)" + " " * 10,
                file=sys.stderr,
                flush=True,
            )


@dataclass
class MoeBenchConfig:
    preset: str
    type: str = "q4_k"
    tokens: Sequence[int] = DEFAULT_TOKENS
    threads: int | None = None
    layers: int | None = None
    experts: int | None = None
    repeats: int = 5
    probe_mib: int = DEFAULT_PROBE_MIB
    seed: int = 0


class MoeBench:
    """Plans on construction (cheap, validates everything); measure_dram() and build() do the work."""

    def __init__(self, config: MoeBenchConfig) -> None:
        self.config = config
        self.shape = preset_shape(config.preset)
        self.type_name = config.type.lower()
        self.wanted = parse_type(config.type)
        if not config.tokens or any(int(n) < 1 for n in config.tokens):
            raise ValueError(f"tokens {list(config.tokens)!r}: expected positive integers")
        if config.repeats < 1:
            raise ValueError(f"--repeats {config.repeats}: at least 1 needed")
        if config.probe_mib < 1:
            raise ValueError(f"--probe-mib {config.probe_mib}: at least 1 needed")
        self.threads = config.threads if config.threads is not None else cpu.default_threads()
        if self.threads < 1:
            raise ValueError(f"--threads {self.threads}: at least 1 needed")
        self.isa = cpu.isa()
        self.types = projection_types(self.wanted, self.shape)
        self.plan = plan_memory(
            self.shape,
            self.types,
            layers=config.layers,
            experts=config.experts,
            available=cpu.memory()["available"],
            l3=l3_bytes(),
        )
        self.rng = np.random.default_rng(config.seed)
        self.dram_gb_s: float | None = None
        self.layers: list[CpuMoE] = []
        self._cycle = itertools.cycle(range(self.plan.layers))

    # --- what is measured -----------------------------------------------------------------

    def fallback_notes(self) -> list[str]:
        dims = projection_dims(self.shape)
        return [
            f"{p} is {t.name}, not {self.wanted.name}: its {dims[p][1]} columns are not a multiple of "
            f"{BLOCK_SIZES[self.wanted][0]} (llama-quantize's fallback)"
            for p, t in self.types.items()
            if t != self.wanted
        ]

    def header(self) -> list[str]:
        s, p = self.shape, self.plan
        lines = [
            f"ktx bench moe: {s.preset} routed experts on the CPU kernels "
            f"({self.isa}, {threads_text(self.threads)})",
            f"  shape:   {s.experts} experts, top-{s.top_k}, hidden {s.hidden}, inter {s.inter}",
            "  types:   " + ", ".join(f"{proj} {t.name}" for proj, t in self.types.items()),
            f"  weights: {p.layers} layers x {p.experts} experts x {p.expert_bytes / 1e6:.2f} MB = "
            f"{p.total_bytes / 1e9:.2f} GB (L3 {p.l3 >> 20} MiB; cap {RAM_FRACTION:.0%} of available RAM "
            f"= {p.cap / 1e9:.1f} GB)",
        ]
        if self.dram_gb_s is not None:
            lines.append(
                f"  DRAM:    {self.dram_gb_s:.1f} GB/s read ({self.config.probe_mib} MiB probe, "
                f"{threads_text(self.threads)})"
            )
        lines += [f"  note: {n}" for n in self.fallback_notes() + p.notes]
        return lines

    def measure_dram(self) -> float:
        self.dram_gb_s = membw.read_gb_s(self.threads, self.config.probe_mib << 20)
        return self.dram_gb_s

    def build(self, progress: bool = False) -> None:
        """Allocates the layers and fills them with random blocks copied from a pool (slices at
        random offsets), on `threads` threads: first-touch page faults, not the copies, are what
        takes the time, and they scale with threads."""
        from ..cpu_moe import CpuMoE, ExpertTensor

        p, s = self.plan, self.shape
        pool = BlockPool(self.rng, pool_bytes=min(32 << 20, max(1 << 20, p.total_bytes // 16)))
        dims = projection_dims(s)
        tensors: list[ExpertTensor] = []
        batches: list[list[tuple[np.ndarray, np.ndarray]]] = [[]]  # (destination, source) pairs
        batch_bytes = 0
        for _ in range(p.layers):
            for proj in PROJECTIONS:
                t = self.types[proj]
                rows, cols = dims[proj]
                data = np.empty(p.experts * rows * row_bytes(t, cols), dtype=np.uint8)
                pos = 0
                for chunk in pool.fill(t, data.nbytes):
                    batches[-1].append((data[pos : pos + chunk.size], chunk))
                    pos += chunk.size
                    batch_bytes += chunk.size
                    if batch_bytes >= FILL_BATCH_BYTES:
                        batches.append([])
                        batch_bytes = 0
                assert pos == data.nbytes, (proj, pos, data.nbytes)
                tensors.append(ExpertTensor(data, int(t), p.experts, rows, cols))

        def copy(batch: list[tuple[np.ndarray, np.ndarray]]) -> int:
            for dst, src in batch:
                np.copyto(dst, src)  # releases the GIL
            return sum(src.size for _, src in batch)

        bar = _Progress(p.total_bytes, progress)
        done = 0
        with ThreadPoolExecutor(max_workers=self.threads) as workers:
            for nbytes in workers.map(copy, batches):
                done += nbytes
                bar.update(done)
        bar.done()
        self.layers = [CpuMoE(*tensors[i : i + 3], threads=self.threads) for i in range(0, len(tensors), 3)]

    def route(self, n: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Uniform random top-k distinct experts per token, their weights, and how many distinct
        experts the call touches."""
        import torch

        k, e = self.shape.top_k, self.plan.experts
        ids = np.argpartition(self.rng.random((n, e)), k - 1, axis=1)[:, :k].astype(np.int64)
        w = self.rng.random((n, k), dtype=np.float32) + np.float32(0.1)
        w /= w.sum(axis=1, keepdims=True)
        return torch.from_numpy(ids), torch.from_numpy(w), int(np.unique(ids).size)

    def _call(self, x: torch.Tensor, out: torch.Tensor) -> tuple[float, int]:
        layer = self.layers[next(self._cycle)]
        ids, w, touched = self.route(x.shape[0])
        t0 = time.perf_counter()
        layer(x, ids, w, out=out)
        return time.perf_counter() - t0, touched

    def measure(self, n: int) -> dict[str, Any]:
        """One row: the median of `repeats` calls, each on the next layer with fresh routing."""
        if not self.layers:
            raise RuntimeError("MoeBench.measure: build() first")
        if self.dram_gb_s is None:
            self.measure_dram()
        import torch

        s, k = self.shape, self.shape.top_k
        x = torch.randn(n, s.hidden, generator=torch.Generator().manual_seed(n))
        out = torch.empty_like(x)
        self._call(x, out)  # warm-up: thread start-up, the layer's buffers for n tokens
        calls = sorted(self._call(x, out) for _ in range(self.config.repeats))
        seconds, touched = calls[(len(calls) - 1) // 2]
        weights_gb_s = touched * self.plan.expert_bytes / seconds / 1e9
        return {
            "preset": s.preset,
            "type": self.type_name,
            "isa": self.isa,
            "threads": self.threads,
            "tokens": n,
            "ms_per_layer": round(seconds * 1e3, 4),
            "tokens_per_s": round(n / seconds, 2),
            "weights_gb_s": round(weights_gb_s, 3),
            "dram_read_gb_s": round(self.dram_gb_s, 3),
            "bw_fraction": round(weights_gb_s / self.dram_gb_s, 4),
            "gflops": round(2 * n * k * 3 * s.hidden * s.inter / seconds / 1e9, 3),
            "experts_touched": touched,
            "experts": self.plan.experts,
            "layers": self.plan.layers,
            "types": {p: t.name for p, t in self.types.items()},
        }

    def run(self, on_row: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        rows = []
        for n in self.config.tokens:
            rows.append(self.measure(int(n)))
            if on_row:
                on_row(rows[-1])
        return rows


# --- printing ---------------------------------------------------------------------------------

TABLE_COLUMNS = (  # (title, key, format)
    ("tokens", "tokens", "{:d}"),
    ("ms/layer", "ms_per_layer", "{:.3f}"),
    ("tokens/s", "tokens_per_s", "{:.1f}"),
    ("weights GB/s", "weights_gb_s", "{:.2f}"),
    ("DRAM GB/s", "dram_read_gb_s", "{:.2f}"),
    ("bw frac", "bw_fraction", "{:.1%}"),
    ("GFLOP/s", "gflops", "{:.1f}"),
    ("experts", "experts_touched", "{:d}"),
)
_WIDTHS = tuple(max(len(title), 9) for title, _, _ in TABLE_COLUMNS)


def table_header() -> str:
    return "".join(f"{title:>{w + 2}}" for (title, _, _), w in zip(TABLE_COLUMNS, _WIDTHS, strict=True))


def table_row(row: dict[str, Any]) -> str:
    return "".join(
        f"{fmt.format(row[key]):>{w + 2}}" for (_, key, fmt), w in zip(TABLE_COLUMNS, _WIDTHS, strict=True)
    )


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "--plot needs matplotlib, which is not installed: "
            "pip install matplotlib (or pip install 'ktx[bench]')"
        ) from None


def plot(rows: list[dict[str, Any]], path: str | Path, title: str) -> None:
    """tokens (log x) against bw_fraction and gflops, in two panels."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = [r["tokens"] for r in rows]
    fig, (ax_bw, ax_fl) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax_bw.plot(tokens, [r["bw_fraction"] for r in rows], marker="o")
    ax_bw.axhline(1.0, linestyle="--", linewidth=1, color="gray")
    ax_bw.set_ylabel("weights read / DRAM read bandwidth")
    ax_bw.set_ylim(bottom=0)
    ax_fl.plot(tokens, [r["gflops"] for r in rows], marker="o", color="tab:orange")
    ax_fl.set_ylabel("GFLOP/s")
    ax_fl.set_ylim(bottom=0)
    for ax in (ax_bw, ax_fl):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("tokens per call")
        ax.grid(True, which="major", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
