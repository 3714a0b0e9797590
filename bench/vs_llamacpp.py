"""ktx against llama.cpp on the same machine, file and threads: decode and prefill tokens/s.

    python bench/vs_llamacpp.py [--gguf FILE ...] [--v2-lite] [--threads N] [--rounds 5]
                                [--gen 64] [--prompt 128] [--isa avx2] [--json OUT.json]

The peer is llama-cpp-python built from source on this machine (`CMAKE_ARGS=-DGGML_NATIVE=ON`)
in a venv of its own (default ~/.cache/ktx/llama-venv, built on first use: ~12 min on 2 cores;
`--llama-python` names another venv's python). It runs in a worker process
(bench/llamacpp_worker.py) that keeps its model loaded; ktx runs in this process. Each round
runs both on the same prompt token ids, alternating which goes first; a run prefills the
prompt as one batch, then decodes greedily one token per step (the argmax of the last logits
on both sides, no sampler). Figures are the best of the rounds (the machines are noisy) and
the ratio ktx / llama.cpp; the greedy tokens of both are compared as a sanity check.

Files: the demo model (default) and, with --v2-lite, a `ktx synth` DeepSeek-V2-Lite shape with
27 layers (llama.cpp reads deepseek2 files as V2-Lite only at 27) and 16 experts, so it fits a
CI-sized box (made once in ~/.cache/ktx/bench). The machine's CPU, ISA path and DRAM read
bandwidth (measured in this run) are printed with the results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path.home() / ".cache" / "ktx"
LLAMA_VENV = CACHE / "llama-venv"
V2_LITE = CACHE / "bench" / "v2-lite-27l-16e-q4_k_m.gguf"
WORKER = Path(__file__).with_name("llamacpp_worker.py")
TEXT = (
    "The history of the city begins with a small settlement on the river, where traders from the "
    "north met farmers from the valleys. Over the centuries the market grew into a town, "
)


def llama_python(path: str | None, build: bool) -> Path:
    """The python of a venv with llama-cpp-python, built here from source if missing."""
    py = Path(path) if path else LLAMA_VENV / "bin" / "python"
    if py.exists() and subprocess.run([py, "-c", "import llama_cpp"], capture_output=True).returncode == 0:
        return py
    if path or not build:
        sys.exit(f"no llama-cpp-python at {py}: build it with --build-llama (or name a venv's python)")
    print(f"building llama-cpp-python from source in {LLAMA_VENV} (about 12 min on 2 cores) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", LLAMA_VENV], check=True)
    env = {**os.environ, "CMAKE_ARGS": "-DGGML_NATIVE=ON"}
    subprocess.run([py, "-m", "pip", "install", "-q", "llama-cpp-python", "numpy"], check=True, env=env)
    return py


class LlamaWorker:
    def __init__(self, python: Path, gguf: Path, threads: int, context: int):
        self.proc = subprocess.Popen(
            [python, WORKER, str(gguf), str(threads), str(context)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        hello = self._read()
        self.version = hello.get("version", "?")

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the llama.cpp worker exited (code {self.proc.wait()})")
        return json.loads(line)

    def run(self, ids: list[int], gen: int) -> dict:
        self.proc.stdin.write(json.dumps({"ids": ids, "gen": gen}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def ktx_run(model, ids: list[int], gen: int) -> dict:
    import torch

    from ktx.core.runtime.context import Segment
    from ktx.core.runtime.generate import forward_step, make_pool, prefill
    from ktx.core.runtime.kv_cache import SequenceKV

    pool = make_pool(model, len(ids) + gen + 1)
    seq = SequenceKV()
    with torch.inference_mode():
        t0 = time.perf_counter()
        logits = prefill(model, pool, seq, ids)
        token = int(logits.argmax())
        t1 = time.perf_counter()
        tokens = [token]
        for _ in range(gen - 1):
            logits = forward_step(model, pool, [Segment(seq, seq.length, 1)], torch.tensor([token]))[0]
            token = int(logits.argmax())
            tokens.append(token)
        t2 = time.perf_counter()
    pool.free(seq)
    return {"prefill_s": t1 - t0, "decode_s": t2 - t1, "tokens": tokens}


def rates(run: dict, n_prompt: int, gen: int) -> tuple[float, float]:
    return n_prompt / run["prefill_s"], (gen - 1) / run["decode_s"]


def compare(path: Path, args, py: Path) -> dict:
    from ktx.core.loader import load

    model = load(path, cpu_threads=args.threads)
    ids = model.tokenizer.encode(TEXT * 20)[: args.prompt]
    worker = LlamaWorker(py, path, args.threads, len(ids) + args.gen + 16)
    sides = {"ktx": lambda: ktx_run(model, ids, args.gen), "llama.cpp": lambda: worker.run(ids, args.gen)}
    sides["ktx"]()  # warm-up: first touches of the mmap, the pools, the caches
    sides["llama.cpp"]()
    rounds = []
    for r in range(args.rounds):
        order = ("ktx", "llama.cpp") if r % 2 == 0 else ("llama.cpp", "ktx")
        got = {}
        for side in order:
            time.sleep(0.2)
            got[side] = sides[side]()
        rounds.append(got)
        print(
            f"  round {r + 1}: "
            + "  ".join(
                f"{s} prefill {rates(got[s], len(ids), args.gen)[0]:.1f} decode "
                f"{rates(got[s], len(ids), args.gen)[1]:.2f} tok/s"
                for s in ("ktx", "llama.cpp")
            ),
            flush=True,
        )
    worker.close()
    best = {
        s: {
            "prefill_tok_s": max(rates(g[s], len(ids), args.gen)[0] for g in rounds),
            "decode_tok_s": max(rates(g[s], len(ids), args.gen)[1] for g in rounds),
        }
        for s in sides
    }
    a, b = rounds[0]["ktx"]["tokens"], rounds[0]["llama.cpp"]["tokens"]
    same = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return {
        "file": str(path),
        "model": model.arch.variant,
        "prompt_tokens": len(ids),
        "gen_tokens": args.gen,
        "llama_cpp_python": worker.version,
        "best": best,
        "ratio": {k: best["ktx"][k] / best["llama.cpp"][k] for k in ("prefill_tok_s", "decode_tok_s")},
        "greedy_tokens_equal_before": same,
        "rounds": [{s: {k: v for k, v in g[s].items() if k != "tokens"} for s in g} for g in rounds],
    }


def machine(threads: int) -> dict:
    from ktx.core import cpu, membw

    name = platform.processor()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
            break
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout
    except OSError:
        commit = ""
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": name,
        "isa": cpu.isa(),
        "supported_isas": cpu.supported_isas(),
        "threads": threads,
        "dram_read_gb_s": membw.read_gb_s(threads),
        "commit": commit.strip() or "unknown",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", action="append", help="a GGUF file (repeatable; default: the demo model)")
    ap.add_argument(
        "--v2-lite", action="store_true", help="also the V2-Lite-shaped MoE (27 layers, 16 experts)"
    )
    ap.add_argument("--threads", type=int, help="threads for both (default: one per physical core)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (default: 5)")
    ap.add_argument("--gen", type=int, default=64, help="tokens decoded per run (default: 64)")
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens prefilled per run (default: 128)")
    ap.add_argument("--isa", help="force ktx's kernels (avx2, avx512, ...): the other ISA's figures")
    ap.add_argument("--llama-python", help="python of a venv with llama-cpp-python")
    ap.add_argument("--no-build", action="store_true", help="do not build llama-cpp-python if it is missing")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    from ktx.core import cpu
    from ktx.core.demo import demo_gguf

    if args.isa:
        cpu.set_isa(args.isa)
    args.threads = args.threads or cpu.default_threads()
    py = llama_python(args.llama_python, build=not args.no_build)
    files = [Path(p) for p in args.gguf] if args.gguf else [demo_gguf()]
    if args.v2_lite:
        if not V2_LITE.exists():
            from ktx.core.convert import synth_gguf

            print(f"writing {V2_LITE} (ktx synth --preset v2-lite --experts 16) ...", flush=True)
            synth_gguf(V2_LITE, None, "v2-lite", experts=16)
        files.append(V2_LITE)
    info = machine(args.threads)
    print(
        f"{info['cpu']} · ktx kernels {info['isa']} (CPU offers {', '.join(info['supported_isas'])}) · "
        f"{args.threads} threads · DRAM read {info['dram_read_gb_s']:.1f} GB/s",
        flush=True,
    )
    results = []
    for path in files:
        print(f"{path.name}: {args.rounds} rounds, prompt {args.prompt}, decode {args.gen}", flush=True)
        results.append(compare(path, args, py))
    print(f"\n{'file':<40} {'metric':<10} {'ktx':>9} {'llama.cpp':>10} {'ratio':>7}")
    for r in results:
        for key, label in (("decode_tok_s", "decode"), ("prefill_tok_s", "prefill")):
            print(
                f"{Path(r['file']).name[:40]:<40} {label:<10} {r['best']['ktx'][key]:>9.2f} "
                f"{r['best']['llama.cpp'][key]:>10.2f} {r['ratio'][key]:>6.2f}x"
            )
        print(
            f"{'':<40} greedy tokens equal for the first "
            f"{r['greedy_tokens_equal_before']} of {r['gen_tokens']}"
        )
    if args.json:
        args.json.write_text(json.dumps({**info, "results": results}, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
