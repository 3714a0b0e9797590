"""`ktx bench`: benchmarks on this machine (`moe`: the CPU MoE layer; `e2e`: a whole model)."""

from __future__ import annotations

import argparse
import json
import sys

from ..bench import moe
from .model_args import at_least, positive_int

MOE_EXAMPLES = f"""\
examples:
  ktx bench moe --preset v2-lite --type q4_k --tokens 1,16 --threads 2
  ktx bench moe --preset v3 --type q4_k --json > v3-q4_k.json
  ktx bench moe --preset qwen3-30b-a3b --type q8_0 --plot qwen3-q8_0.png

Each row times one layer's routed experts (gate, up, SiLU, down, weighted sum) for a batch of
tokens: the median of --repeats calls, each on the next of --layers layers with fresh uniform
random top-k routing, so decode reads its experts from DRAM as a real model does. The layers
hold {moe.L3_MULTIPLE}x the L3 by default (at least {moe.MIN_LAYERS}); where that would take
over {moe.RAM_FRACTION:.0%} of the available RAM, fewer experts per layer are built, and the
output says so.

columns: ms_per_layer; tokens_per_s (tokens through one layer per second); weights_gb_s (bytes of
the distinct experts the call touched / time); dram_read_gb_s (measured once at the start);
bw_fraction (weights_gb_s / dram_read_gb_s); gflops (2 x tokens x top-k x 3 x hidden x inter / time).
A K-quant projection whose width is not a multiple of 256 falls back as llama-quantize does
(q4_k -> q5_0, q5_k -> q5_1, q6_k -> q8_0, iq4_xs -> iq4_nl): V2-Lite's down projection."""


def run_moe(args: argparse.Namespace) -> int:
    tokens = moe.parse_tokens(args.tokens)
    if args.plot:
        moe.require_matplotlib()  # before minutes of measuring, not after
    bench = moe.MoeBench(
        moe.MoeBenchConfig(
            preset=args.preset,
            type=args.type,
            tokens=tokens,
            threads=args.threads,
            layers=args.layers,
            experts=args.experts,
            repeats=args.repeats,
            probe_mib=args.probe_mib,
            seed=args.seed,
        )
    )
    info = sys.stderr if args.json else sys.stdout  # --json: stdout carries the JSON only
    bench.measure_dram()
    for line in bench.header():
        print(line, file=info, flush=True)
    bench.build(progress=not args.quiet)
    if args.json:
        rows = bench.run()
        sys.stdout.write(json.dumps(rows, indent=2, allow_nan=False) + "\n")
    else:
        print("\n" + moe.table_header(), flush=True)
        rows = bench.run(on_row=lambda row: print(moe.table_row(row), flush=True))
    if args.plot:
        title = f"ktx MoE layer: {bench.shape.preset} {bench.type_name}, {bench.isa}, {bench.threads} threads"
        moe.plot(rows, args.plot, title)
        print(f"plot: {args.plot}", file=info)
    return 0


E2E_EXAMPLES = """\
examples:
  ktx synth --preset v2-lite -o v2-lite.gguf
  ktx bench e2e --gguf v2-lite.gguf --device cuda --prompt 512,2048,8192 --gen 128 --cuda-graph
  ktx bench e2e --prompt 64,256 --gen 32            the demo model, on this machine's default device

columns: prefill/s (prompt tokens / time to the first token); TTFT; decode/s; vs floor (decode rate
/ the CPU experts' floor: DRAM read bandwidth / active expert bytes per token); step ms; cpu ms
(CPU MoE layers' running time per step); rest ms (a step with the CPU experts skipped: the rest of
the model); ratio (step / (cpu + rest): below 1 means overlap, the goal is at most 1.2); VRAM
(peak allocated); RSS (peak resident, mmap'd experts included); spread (routing during prefill:
least share of experts used by any layer / busiest expert's load vs an even share)."""


def run_e2e(args: argparse.Namespace) -> int:
    from .. import membw
    from ..bench import e2e
    from .model_args import load_model

    prompts = moe.parse_tokens(args.prompt)
    cfg = e2e.E2EConfig(
        prompts, args.gen, args.chunk_size, args.cuda_graph, args.seed or 0, args.breakdown, args.warmup
    )
    info = sys.stderr if args.json else sys.stdout
    model = load_model(args, quiet=args.json)
    dram = membw.read_gb_s()
    device = model.model.embed_tokens.device
    h2d = e2e.h2d_gb_s(device) if device.type != "cpu" else None
    head = e2e.header(model, dram, h2d, cfg)
    print(
        f"{head['model']} · {head['layers']} layers · {head['device']} · CPU {head['cpu_isa']} "
        f"{head['cpu_threads']} threads · DRAM read {dram:.1f} GB/s"
        + (f" · pinned H2D {h2d:.1f} GB/s" if h2d else "")
        + f" · active experts {head['active_expert_mb_per_token']:.1f} MB/token"
        + (f" (floor {head['decode_floor_tok_s']:.0f} tok/s)" if head["decode_floor_tok_s"] else ""),
        file=info,
        flush=True,
    )
    if cfg.warmup:
        print(f"warm-up: {cfg.warmup} untimed round(s) of a {prompts[0]}-token prompt", file=info, flush=True)
        e2e.warm_up(model, cfg)
    if not args.json:
        print(e2e.TABLE_HEADER, flush=True)
    rows = []
    for n in prompts:
        rows.append(e2e.measure(model, n, cfg))
        if not args.json:
            print(e2e.table_row(rows[-1], head["decode_floor_tok_s"]), flush=True)
            for line in e2e.breakdown_lines(rows[-1]):
                print(line, flush=True)
    if args.json:
        sys.stdout.write(json.dumps({**head, "rows": rows}, indent=2) + "\n")
    return 0


SERVE_EXAMPLES = """\
examples:
  ktx bench serve                                   the demo model, concurrency 1,4,8,16
  ktx bench serve --url http://127.0.0.1:10002 --concurrency 1,8 --max-tokens 128

Without --url a server is started in this process on a free loopback port (model flags as for
ktx serve; --max-batch-size defaults to the largest concurrency). Each level sends --requests
streaming greedy chat requests (default: 2 per client, at least 8) of mixed prompt lengths.
columns: out tok/s (completion tokens / the level's wall time); vs c=1; TTFT and ITL (time between
streamed chunks of one answer) percentiles; errors."""


def run_serve(args: argparse.Namespace) -> int:
    import asyncio

    from .. import membw
    from ..bench import serve as sb

    levels = moe.parse_tokens(args.concurrency)
    info = sys.stderr if args.json else sys.stdout
    server = None
    url = args.url
    if url is None:
        from .serve import build_app

        if args.max_batch_size is None:
            args.max_batch_size = max(levels)
        args.web, args.api_key = False, None
        server, url = _start_server(build_app(args))
        model = server.config.app.state.engine
        name, weight_bytes = model.model_name, sum(t.nbytes for t in model.model.gguf.tensors.values())
    else:
        import httpx

        name, weight_bytes = httpx.get(f"{url}/v1/models", timeout=30).json()["data"][0]["id"], None
    dram = membw.read_gb_s()
    line = f"{name} at {url} · DRAM read {dram:.1f} GB/s"
    if weight_bytes:
        ceiling = dram * 1e9 / weight_bytes
        line += f" · weights {weight_bytes / 1e6:.0f} MB: single-stream ceiling {ceiling:.0f} tok/s"
    print(line, file=info, flush=True)
    rows = []
    try:
        if not args.json:
            print(sb.table_header(), flush=True)
        for c in levels:
            n = args.requests or max(8, 2 * c)
            row = asyncio.run(sb.run_level(url, name, c, sb.prompts(n, seed=c), args.max_tokens))
            rows.append(row)
            if not args.json:
                print(sb.table_row(row, rows[0]["output_tok_s"]), flush=True)
    finally:
        if server is not None:
            server.should_exit = True
    from ..bench.e2e import machine

    head = {**machine(), "model": name, "url": url, "dram_read_gb_s": dram, "weight_bytes": weight_bytes}
    if args.json:
        sys.stdout.write(json.dumps({**head, "rows": rows}, indent=2) + "\n")
    return 0


def _start_server(app):
    import socket
    import threading
    import time

    import httpx
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the benchmark's server did not start")


def add_parser(subcommands) -> None:
    p = subcommands.add_parser(
        "bench",
        help="benchmark ktx's kernels on this machine against its memory bandwidth",
        description="Benchmarks of ktx's kernels at real models' shapes, each against a ceiling "
        "measured in the same run.",
    )
    benchmarks = p.add_subparsers(title="benchmarks", metavar="BENCHMARK")
    p.set_defaults(run=lambda args: _no_benchmark(p))

    m = benchmarks.add_parser(
        "moe",
        help="one MoE layer's routed experts on the CPU kernels, decode to prefill",
        description="Time one MoE layer's routed experts on the CPU kernels at a real model's shapes "
        "(random weights), for batches from decode (1 token) to prefill, against the DRAM read "
        "bandwidth measured in the same run.",
        epilog=MOE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m.add_argument(
        "--preset",
        required=True,
        metavar="NAME",
        help=f"model shapes: {', '.join(moe.MOE_PRESETS)}",
    )
    m.add_argument(
        "--type",
        default="q4_k",
        metavar="TYPE",
        help=f"expert weight type: {', '.join(moe.TYPES)} (default: q4_k)",
    )
    m.add_argument(
        "--tokens",
        default=",".join(map(str, moe.DEFAULT_TOKENS)),
        help="comma-separated batch sizes (default: %(default)s)",
    )
    m.add_argument(
        "--threads", type=positive_int, help="CPU threads (default: KTX_THREADS, else one per physical core)"
    )
    m.add_argument(
        "--layers",
        type=positive_int,
        help=f"layers to cycle through (default: enough for {moe.L3_MULTIPLE}x the L3, "
        f"at least {moe.MIN_LAYERS})",
    )
    m.add_argument(
        "--experts",
        type=positive_int,
        help="experts per layer (default: the model's, fewer if the layers would not fit in "
        f"{moe.RAM_FRACTION * 100:.0f}%% of the available RAM; at least top-k)",
    )
    m.add_argument(
        "--repeats", type=positive_int, default=5, help="timed calls per row, median kept (default: 5)"
    )
    m.add_argument("--seed", type=int, default=0, help="random seed of weights and routing (default: 0)")
    m.add_argument(
        "--probe-mib",
        type=positive_int,
        default=moe.DEFAULT_PROBE_MIB,
        metavar="MIB",
        help="size of the DRAM read-bandwidth probe in MiB (default: %(default)s; for quick tests only: "
        "a probe that fits in cache overstates DRAM bandwidth)",
    )
    m.add_argument("--json", action="store_true", help="print the rows as a JSON list (header on stderr)")
    m.add_argument(
        "--plot", metavar="PNG", help="also plot bw_fraction and GFLOP/s against tokens (matplotlib)"
    )
    m.add_argument("-q", "--quiet", action="store_true", help="no progress while building the weights")
    m.set_defaults(run=run_moe)

    from .model_args import add_model_flags

    e = benchmarks.add_parser(
        "e2e",
        help="a whole model: prefill and decode tokens/s, TTFT, memory, CPU vs GPU time per step",
        description="Prefill random prompts of the given lengths and decode --gen tokens after each; "
        "report speed, memory and where a decode step's time goes, against this machine's DRAM "
        "bandwidth measured in the same run.",
        epilog=E2E_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument(
        "--prompt", default="512,2048", help="comma-separated prompt lengths (default: %(default)s)"
    )
    e.add_argument("--gen", type=positive_int, default=128, help="tokens decoded per prompt (default: 128)")
    e.add_argument(
        "--warmup",
        type=at_least(0),
        default=1,
        metavar="N",
        help="untimed rounds (a prefill of the first prompt length and a few decode steps) before "
        "measuring, so kernel compiles and first allocations are not timed (default: 1; 0: none). "
        "Each measured decode pass also runs one untimed step first (JIT, CUDA-graph capture)",
    )
    e.add_argument(
        "--breakdown",
        action="store_true",
        help="also time one more decode pass by kernel family (attention, dense linear, MoE experts and "
        "routing, LM head, norms/RoPE, embedding) and the rest (Python, framework)",
    )
    e.add_argument("--json", action="store_true", help="print one JSON object (header and rows)")
    add_model_flags(e)
    e.set_defaults(run=run_e2e)

    sv = benchmarks.add_parser(
        "serve",
        help="the HTTP server under load: output tokens/s, TTFT and inter-token latency by concurrency",
        description="Load `ktx serve` with N concurrent streaming clients and report throughput and "
        "latency percentiles per concurrency level.",
        epilog=SERVE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sv.add_argument("--url", help="an already running server (default: start one here)")
    sv.add_argument("--concurrency", default="1,4,8,16", help="comma-separated levels (default: %(default)s)")
    sv.add_argument(
        "--requests", type=positive_int, help="requests per level (default: 2 per client, at least 8)"
    )
    sv.add_argument(
        "--max-tokens", type=positive_int, default=64, help="completion tokens per request (default 64)"
    )
    sv.add_argument(
        "--max-batch-size", type=positive_int, help="the started server's (default: largest level)"
    )
    sv.add_argument("--json", action="store_true", help="print one JSON object (header and rows)")
    add_model_flags(sv, sampling=False)
    sv.set_defaults(
        run=run_serve,
        cache_lens=16384,
        chunk_size=512,
        max_new_tokens=512,
        served_model_name=None,
        no_prefix_cache=True,  # every request is new text; a warm cache would flatter TTFT
        prefix_cache_ram_gb=0.0,
        prefix_cache_dir=None,
        prefix_cache_disk_gb=0.0,
    )


def _no_benchmark(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2
