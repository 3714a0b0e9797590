"""`ktx chat`: an interactive conversation with streamed answers and speed figures after each.

Enter sends the message. End a line with a backslash to continue on the next line, or paste
a block between two lines of three double quotes. /help lists the commands, /reset clears the
conversation, /exit (or Ctrl-D, or Ctrl-C at an empty prompt) quits; Ctrl-C during an answer
stops that answer. A model without a chat template (a base model, like the demo) is not
dressed in another model's chat format: the conversation is one text that it continues.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from .model_args import (
    CHAT_SAMPLING,
    add_model_flags,
    load_model,
    prompt_ids,
    sampling_params,
    stats_line,
    text_file,
    write,
)

HELP = 'Enter sends · end a line with \\ to continue · """ starts/ends a block · /help · /reset · /exit'
COMMANDS = """\
  /help           this list
  /reset          forget the conversation (start over)
  /exit, /bye     quit (also Ctrl-D, or Ctrl-C at an empty prompt)
  Ctrl-C          during an answer: stop it there
  a line ending in \\ continues on the next; \"\"\" on a line starts or ends a block"""

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
    """One user message; None at end of input or Ctrl-C at the prompt (both quit)."""
    try:
        line = input(prompt)
    except (EOFError, KeyboardInterrupt):
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


BASE_MODEL_NOTE = (
    "a base model (no chat template): each message continues one running text, as a completion "
    "(try a sentence to finish); a chat model answers questions"
)


def _history() -> None:
    """Line editing for input(), and the messages of earlier sessions under Up (readline's file in
    ~/.cache/ktx, like a shell's history). Without readline (some Pythons): plain input()."""
    try:
        import readline
    except ImportError:
        return
    import atexit
    from pathlib import Path

    path = Path(os.environ.get("KTX_CACHE_DIR") or Path.home() / ".cache" / "ktx") / "chat_history"
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        readline.read_history_file(path)
    readline.set_history_length(1000)
    atexit.register(_save, readline, path)


def _save(readline, path) -> None:
    with contextlib.suppress(OSError):
        readline.write_history_file(path)


def run(args: argparse.Namespace) -> int:
    from ..runtime.generate import prefill_and_generate

    _history()
    params = sampling_params(args, CHAT_SAMPLING)
    model = load_model(args)
    tok = model.tokenizer
    chat = tok.has_chat_template
    if not chat:
        print(BASE_MODEL_NOTE, file=sys.stderr)
    print(HELP, file=sys.stderr)
    system = [{"role": "system", "content": args.system}] if args.system else []
    history: list[dict] = []
    transcript = args.system + "\n\n" if args.system and not chat else ""  # a base model's running text
    first = args.prompt_file
    while True:
        message = first if first is not None else read_message()
        if first is not None:
            print(f">>> {first}")
        first = None
        command = message.strip() if message is not None else "/exit"
        if command in ("/exit", "/quit", "/bye"):
            print(file=sys.stderr)
            return 0
        if command == "/reset":
            history.clear()
            transcript = args.system + "\n\n" if args.system and not chat else ""
            print("(conversation cleared)", file=sys.stderr)
            continue
        if command in ("/help", "/?"):
            print(COMMANDS, file=sys.stderr)
            continue
        if command.startswith("/") and " " not in command:
            print(f"unknown command {command}: /help lists them", file=sys.stderr)
            continue
        if not command:
            continue
        if chat:
            ids = prompt_ids(tok, message, chat=True, force_think=args.force_think, history=system + history)
        else:
            ids = prompt_ids(tok, transcript + message, chat=False)
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
                max_context=args.ctx_size or args.cache_lens,
                interruptible=True,
            )
        except ValueError as e:  # e.g. the conversation outgrew the context: say so, keep the session
            print(f"ktx: {e} (/reset starts over)", file=sys.stderr)
            continue
        write("\n")
        print(f"[{stats_line(gen)}]", file=sys.stderr)
        history += [{"role": "user", "content": message}, {"role": "assistant", "content": gen.text}]
        transcript += message + gen.text + "\n"
