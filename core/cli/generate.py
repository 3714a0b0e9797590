"""`ktx generate`: one prompt in, one answer out (streamed, or one JSON object with --json)."""

from __future__ import annotations

import argparse

from .model_args import (
    GENERATE_SAMPLING,
    add_model_flags,
    load_model,
    prompt_ids,
    sampling_params,
    stats_line,
    text_file,
    write,
)
from .output import print_json

EXAMPLES = """\
examples:
  ktx generate --prompt "The capital of France is"
  ktx generate --gguf model.gguf --chat --prompt "Write a haiku" --temperature 0.7
  ktx generate --prompt "Hello" --max-new-tokens 32 --json
"""


def add_parser(subcommands) -> None:
    p = subcommands.add_parser(
        "generate",
        help="generate text for one prompt",
        description="Generate text for one prompt and print decode speed.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prompt", help="the prompt text (default: a short demo prompt)")
    src.add_argument("--prompt-file", type=text_file, metavar="FILE", help="read the prompt from a file")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.add_argument("--system", help="system prompt (with --chat)")
    p.add_argument(
        "--force-think", action="store_true", help="start the answer with <think> (reasoning models)"
    )
    p.add_argument(
        "--ignore-eos", action="store_true", help="keep generating past end-of-sequence (benchmarks)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streamed text")
    add_model_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..runtime.generate import prefill_and_generate

    text = args.prompt_file if args.prompt_file is not None else args.prompt
    if text is None:
        text = "The quick brown fox"
    if not text.strip():
        raise ValueError("the prompt is empty: give --prompt TEXT or --prompt-file FILE")
    params = sampling_params(args, GENERATE_SAMPLING)
    model = load_model(args, quiet=args.json)
    if args.system and not args.chat:
        raise ValueError("--system needs --chat: a system prompt is part of the chat template")
    history = [{"role": "system", "content": args.system}] if args.system else None
    ids = prompt_ids(model.tokenizer, text, args.chat, args.force_think, history=history)
    gen = prefill_and_generate(
        model,
        model.tokenizer,
        ids,
        args.max_new_tokens,
        sampling=params,
        stop=args.stop,
        chunk_size=args.chunk_size,
        on_text=None if args.json else write,
        ignore_eos=args.ignore_eos,
        use_cuda_graph=args.cuda_graph,
        max_context=args.ctx_size or args.cache_lens,
    )
    if args.json:
        print_json(
            {
                "text": gen.text,
                "prompt_tokens": gen.prompt_tokens,
                "completion_tokens": gen.completion_tokens,
                "finish_reason": gen.finish_reason,
                "ttft_s": gen.ttft_s,
                "prefill_tok_s": gen.prefill_tok_s,
                "decode_tok_s": gen.decode_tok_s,
                "load_s": model.load_seconds,
            }
        )
    else:
        import sys

        write("\n")
        print(stats_line(gen), file=sys.stderr)
    return 0
