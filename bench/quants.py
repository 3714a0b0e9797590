"""Dequantization and quantization throughput per GGUF type, per kernel path and thread count.

    python bench/quants.py [--threads 1,2] [--isa avx2,avx512] [--mib 64] [--json] [--plot out.png]

Dequantization is reported in GB/s of float32 written, against the bandwidth of ordinary
stores measured in the same run (the ceiling for a conversion that writes 4 bytes per
element and reads at most 1); quantization in GB/s of float32 read, against DRAM read
bandwidth. Buffers exceed the L3, so DRAM is in the loop.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from ktx.core import cpu, membw
from ktx.core import gguf as kg
from ktx.core.gguf import BLOCK_SIZES, DEQUANT_TYPES, QUANT_TYPES, GGMLType
from ktx.core.membw import best_seconds


def random_raw(gtype: GGMLType, n: int, rng) -> np.ndarray:
    """Blocks from real quantization of N(0,1) data where ktx can write the type, else random
    bytes with finite half-precision scales (the speed of these kernels does not depend on
    the values)."""
    block, type_size = BLOCK_SIZES[gtype]
    if gtype in (GGMLType.F32, GGMLType.F16):
        return rng.standard_normal(n, dtype=np.float32).astype(
            np.float32 if gtype == GGMLType.F32 else np.float16
        )
    raw = rng.integers(0, 256, size=(n // block, type_size), dtype=np.uint8)
    raw[:, 1::2] &= 0xBB  # keeps every f16 exponent below all-ones wherever the scales sit
    return raw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default=None, help="comma list (default: 1 and all physical cores)")
    ap.add_argument("--isa", default=None, help="comma list (default: every supported path but scalar)")
    ap.add_argument("--mib", type=int, default=256, help="float32 MiB converted per call (default 256)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--out", help="also save the rows as JSON here")
    ap.add_argument("--plot", help="write a PNG bar chart here")
    args = ap.parse_args()
    threads = (
        [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, cpu.default_threads()})
    )
    isas = (
        args.isa.split(",") if args.isa else [i for i in cpu.supported_isas() if i not in ("scalar", "amx")]
    )
    n = args.mib * (1 << 20) // 4
    n -= n % 256
    rng = np.random.default_rng(0)

    ceilings = {t: {"write": membw.write_gb_s(t), "read": membw.read_gb_s(t)} for t in threads}
    rows = []
    out = torch.empty(n)
    out_bf16 = torch.empty(n, dtype=torch.bfloat16)
    for gtype in sorted(DEQUANT_TYPES, key=int):
        raw = random_raw(gtype, n, rng)
        for isa in isas:
            with cpu.forced_isa(isa):
                for t in threads:
                    s = best_seconds(
                        lambda raw=raw, gtype=gtype, t=t: kg.dequantize(raw, gtype, (n,), out=out, threads=t),
                        args.repeats,
                    )
                    sb = best_seconds(
                        lambda raw=raw, gtype=gtype, t=t: kg.dequantize(
                            raw, gtype, (n,), out=out_bf16, threads=t
                        ),
                        args.repeats,
                    )
                    gb_s = n * 4 / s / 1e9
                    rows.append(
                        {
                            "op": "dequant",
                            "type": gtype.name,
                            "isa": isa,
                            "threads": t,
                            "gb_s": round(gb_s, 2),
                            "bf16_gb_s": round(n * 2 / sb / 1e9, 2),
                            "ceiling_gb_s": round(ceilings[t]["write"], 2),
                            "fraction": round(gb_s / ceilings[t]["write"], 3),
                        }
                    )
    x = rng.standard_normal(n // 4, dtype=np.float32)  # quantization is slower: a quarter of the data
    for gtype in sorted(QUANT_TYPES, key=int):
        for isa in isas:
            with cpu.forced_isa(isa):
                for t in threads:
                    s = best_seconds(
                        lambda gtype=gtype, t=t: kg.quantize(x, gtype, threads=t), max(1, args.repeats - 1)
                    )
                    gb_s = x.nbytes / s / 1e9
                    rows.append(
                        {
                            "op": "quant",
                            "type": gtype.name,
                            "isa": isa,
                            "threads": t,
                            "gb_s": round(gb_s, 2),
                            "ceiling_gb_s": round(ceilings[t]["read"], 2),
                            "fraction": round(gb_s / ceilings[t]["read"], 3),
                        }
                    )
    result = {**run_info(), "mib_per_call": args.mib, "ceilings": ceilings, "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"CPU: {cpu.features()['brand']}; float32 per call: {n * 4 / 2**20:.0f} MiB")
        for t, c in ceilings.items():
            print(
                f"  {t} thread(s): ordinary-store bandwidth {c['write']:.1f} GB/s, read {c['read']:.1f} GB/s"
            )
        print(
            f"\n{'op':<8}{'type':<8}{'isa':<8}{'thr':>4}{'GB/s':>8}{'bf16 GB/s':>11}{'ceiling':>9}{'frac':>7}"
        )
        for r in rows:
            bf = f"{r['bf16_gb_s']:>11.2f}" if "bf16_gb_s" in r else " " * 11
            print(
                f"{r['op']:<8}{r['type']:<8}{r['isa']:<8}{r['threads']:>4}{r['gb_s']:>8.2f}{bf}"
                f"{r['ceiling_gb_s']:>9.1f}{r['fraction']:>7.1%}"
            )
    if args.plot:
        plot(rows, args.plot)


def run_info() -> dict:
    """When, where and on what code a result was measured."""
    import datetime
    import platform
    import subprocess

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu.features()["brand"],
        "cores": cpu.physical_cores(),
        "machine": platform.node(),
        "commit": commit,
    }


def plot(rows, path: str) -> None:
    try:
        import matplotlib
    except ImportError:
        print("--plot needs matplotlib: pip install 'ktx[bench]'")
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dq = [r for r in rows if r["op"] == "dequant"]
    series = sorted({(r["isa"], r["threads"]) for r in dq})
    types = list(dict.fromkeys(r["type"] for r in dq))
    fig, ax = plt.subplots(figsize=(12, 4.5))
    width = 0.8 / len(series)
    for k, (isa, t) in enumerate(series):
        vals = [
            next(r["gb_s"] for r in dq if r["type"] == ty and r["isa"] == isa and r["threads"] == t)
            for ty in types
        ]
        ax.bar(np.arange(len(types)) + k * width, vals, width, label=f"{isa}, {t} thr")
    for t in sorted({r["threads"] for r in dq}):
        ceiling = next(r["ceiling_gb_s"] for r in dq if r["threads"] == t)
        ax.axhline(ceiling, linestyle="--", linewidth=1, color="gray")
        ax.text(len(types) - 0.5, ceiling, f"store bw, {t} thr", va="bottom", ha="right", fontsize=8)
    ax.set_xticks(np.arange(len(types)) + 0.4 - width / 2, types, rotation=30)
    ax.set_ylabel("GB/s of float32 written")
    ax.set_title("ktx dequantization throughput")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
