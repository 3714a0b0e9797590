"""`ktx chat`: an interactive conversation with streamed answers and speed figures after each.

Enter sends the message. End a line with a backslash to continue on the next line, or paste
a block between two lines of three double quotes. /reset clears the conversation, /exit quits.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from .model_args import (
    add_model_flags,
    load_model,
    prompt_ids,
    sampling_params,
    stats_line,
    text_file,
    write,
)

HELP = 'Enter sends · end a line with \\ to continue · """ starts/ends a block · /reset · /exit'

EXAMPLES = """\
examples:
  ktx chat                                  chat with the demo model
  ktx chat --gguf ~/models/DeepSeek-V2-Lite-Chat-Q4_K_M.gguf --temperature 0.6
  ktx chat --gguf model.gguf --prompt-file question.txt
"""


def add_parser(subcommands) -> None:
    p = subcommands.add_parser(
        "chat",
        help="chat with a model in the terminal",
        description="Chat with a model in the terminal. " + HELP,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--prompt-file", type=text_file, metavar="FILE", help="send this file's text as the first message"
    )
    p.add_argument(
        "--force-think", action="store_true", help="start each answer with <think> (reasoning models)"
    )
    p.add_argument("--system", help="system prompt")
    add_model_flags(p)
    p.set_defaults(run=run)


def read_message(prompt: str = ">>> ") -> str | None:
    """One user message; None at end of input."""
    try:
        line = input(prompt)
    except EOFError:
        return None
    if line.strip() == '"""':
        lines = []
        while True:
            try:
                more = input("... ")
            except EOFError:
                break
            if more.strip() == '"""':
                break
            lines.append(more)
        return "\n".join(lines)
    lines = [line]
    while lines[-1].endswith("\\"):
        lines[-1] = lines[-1][:-1]
        try:
            lines.append(input("... "))
        except EOFError:
            break
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..runtime.generate import prefill_and_generate

    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and in-session history for input())
    params = sampling_params(args, default_temperature=0.7)
    model = load_model(args)
    tok = model.tokenizer
    print(HELP, file=sys.stderr)
    system = [{"role": "system", "content": args.system}] if args.system else []
    history: list[dict] = []
    first = args.prompt_file
    while True:
        message = first if first is not None else read_message()
        if first is not None:
            print(f">>> {first}")
        first = None
        if message is None or message.strip() in ("/exit", "/quit", "/bye"):
            print(file=sys.stderr)
            return 0
        if message.strip() == "/reset":
            history.clear()
            print("(conversation cleared)", file=sys.stderr)
            continue
        if not message.strip():
            continue
        ids = prompt_ids(tok, message, chat=True, force_think=args.force_think, history=system + history)
        try:
            gen = prefill_and_generate(
                model,
                tok,
                ids,
                args.max_new_tokens,
                sampling=params,
                stop=args.stop,
                chunk_size=args.chunk_size,
                on_text=write,
                use_cuda_graph=args.cuda_graph,
            )
        except ValueError as e:  # e.g. the conversation outgrew the context: say so, keep the session
            print(f"ktx: {e} (/reset starts over)", file=sys.stderr)
            continue
        except KeyboardInterrupt:  # Ctrl-C stops this answer, not the chat
            write("\n")
            continue
        write("\n")
        print(f"[{stats_line(gen)}]", file=sys.stderr)
        history += [{"role": "user", "content": message}, {"role": "assistant", "content": gen.text}]
