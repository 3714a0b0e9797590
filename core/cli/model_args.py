"""Flags shared by the commands that load a model (`chat`, `generate`) and the loading itself."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_model_flags(p: argparse.ArgumentParser, sampling: bool = True) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--gguf", metavar="FILE|DIR", help="GGUF file, split shard or folder (default: the demo model)"
    )
    g.add_argument(
        "--model-path",
        metavar="DIR",
        help="folder with a Hugging Face config.json that overrides the config built from GGUF metadata",
    )
    g.add_argument(
        "--rules",
        metavar="YAML",
        help="placement rules (default: the architecture's own). A linear rule's kwargs {weights: gguf} "
        "keeps GPU weights as GGUF blocks: about half the VRAM of bfloat16, linear layers ~2x slower, "
        "one matrix expanded per call (counted in the memory plan)",
    )
    g.add_argument(
        "--device",
        default="auto",
        help="where all but the routed experts run: auto, cpu, cuda, cuda:N "
        "(default auto: the GPU when there is one; the experts stay on the CPU)",
    )
    g.add_argument(
        "--gpu-experts",
        type=int,
        default=0,
        metavar="N",
        help="keep N routed experts per layer on the GPU (the busiest in --profile, else the first N)",
    )
    g.add_argument("--profile", metavar="JSON", help="routing profile from `ktx profile` for --gpu-experts")
    g.add_argument(
        "--cache-lens",
        type=int,
        default=4096,
        metavar="N",
        help="KV-cache tokens the memory plan reserves (default %(default)s)",
    )
    g.add_argument(
        "--chat-template",
        metavar="FILE|NAME",
        help="a Jinja chat template (a file, or chatml / gemma) instead of the GGUF's own; a base "
        "model given one is chatted with in that format",
    )
    g.add_argument(
        "--ctx-size",
        type=positive_int,
        metavar="N",
        help="tokens of context, prompt and answer together (default: --cache-lens); a longer prompt "
        "is refused",
    )
    g.add_argument(
        "--cuda-graph",
        action="store_true",
        help="replay each decode step as one captured graph (CUDA/HIP, XPU and NPU devices)",
    )
    g.add_argument(
        "--cpu-threads", type=positive_int, metavar="N", help="CPU threads (default: physical cores)"
    )
    g.add_argument(
        "--experts-per-tok",
        type=int,
        metavar="K",
        help="run K routed experts per token instead "
        "of the trained number (faster, slightly different answers)",
    )
    if sampling:
        add_sampling_flags(p)


def add_sampling_flags(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("sampling")
    s.add_argument(
        "--max-new-tokens",
        type=positive_int,
        default=None,
        metavar="N",
        help="default: 512 in chat, 128 in generate",
    )
    s.add_argument(
        "--temperature", type=float, default=None, help="0 = greedy (default: 0.8 in chat, 0 in generate)"
    )
    s.add_argument("--top-k", type=int, default=None, help="0 = off (default: 40 in chat, off in generate)")
    s.add_argument(
        "--top-p", type=float, default=None, help="1 = off (default: 0.9 in chat, off in generate)"
    )
    s.add_argument("--min-p", type=float, default=0.0)
    s.add_argument(
        "--repetition-penalty",
        type=float,
        default=None,
        help="1 = off (default 1.1, as Ollama's: small models loop without it)",
    )
    s.add_argument("--presence-penalty", type=float, default=0.0)
    s.add_argument("--frequency-penalty", type=float, default=0.0)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop string (repeatable)")
    s.add_argument(
        "--chunk-size", type=int, default=512, metavar="N", help="prefill chunk in tokens (default 512)"
    )


# Sampling a conversation as Ollama does by default (temperature 0.8, top-k 40, top-p 0.9), and
# Ollama's repetition penalty of 1.1 in both commands: greedy decoding of a small base model
# (the demo) otherwise repeats one sentence until the token limit ("The capital of France is the
# capital of the country of France. It is the capital of ..."); with it, it ends at its EOS.
# llama.cpp's default penalty is 1.0 (off); --repetition-penalty 1 gives plain greedy decoding.
CHAT_SAMPLING = {
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 0.9,
    "repetition_penalty": 1.1,
    "max_new_tokens": 512,
}
GENERATE_SAMPLING = {
    "temperature": 0.0,
    "top_k": 0,
    "top_p": 1.0,
    "repetition_penalty": 1.1,
    "max_new_tokens": 128,
}


def sampling_params(args: argparse.Namespace, defaults: dict[str, float]) -> Any:
    """The flags given, else `defaults` (CHAT_SAMPLING or GENERATE_SAMPLING); fills
    args.max_new_tokens the same way."""
    from ..runtime.sampler import SamplingParams

    def get(name):
        value = getattr(args, name)
        return defaults[name] if value is None else value

    args.max_new_tokens = get("max_new_tokens")
    params = SamplingParams(
        temperature=get("temperature"),
        top_k=get("top_k"),
        top_p=get("top_p"),
        min_p=args.min_p,
        repetition_penalty=get("repetition_penalty"),
        presence_penalty=args.presence_penalty,
        frequency_penalty=args.frequency_penalty,
        seed=args.seed,
    )
    params.validate()
    return params


def at_least(low: int):
    """argparse type: an integer of at least `low` (a usage error says which bound it missed)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be at least {low}")
        return value

    return parse


positive_int = at_least(1)


def text_file(path: str) -> str:
    """argparse type: a readable text file's contents (a usage error names the file otherwise)."""
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        raise argparse.ArgumentTypeError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise argparse.ArgumentTypeError(f"{path}: cannot read it ({e.strerror or e})") from None


def chat_template_source(given: str) -> str:
    """--chat-template: a named template or a file's, checked to compile (before any loading)."""
    from ..tokenizer.chat_template import CHATML_TEMPLATE, GEMMA_TEMPLATE, compile_template

    named = {"chatml": CHATML_TEMPLATE, "gemma": GEMMA_TEMPLATE}
    if given in named:
        source = named[given]
    else:
        try:
            source = Path(given).read_text()
        except OSError as e:
            raise ValueError(
                f"--chat-template {given}: not chatml, gemma or a readable file ({e.strerror})"
            ) from None
    try:
        compile_template(source)
    except Exception as e:  # jinja2's syntax errors: say which template and where
        raise ValueError(f"--chat-template {given}: not a valid Jinja template ({e})") from None
    return source


def load_options(args: argparse.Namespace) -> dict[str, Any]:
    """The loader's keyword arguments that the model flags set (every model a command loads)."""
    return dict(
        rules=args.rules,
        device=args.device,
        cpu_threads=args.cpu_threads,
        num_experts_per_tok=args.experts_per_tok,
        gpu_experts=args.gpu_experts,
        profile=args.profile,
        cache_tokens=max(args.cache_lens, getattr(args, "ctx_size", None) or 0),
    )


def load_model(args: argparse.Namespace, quiet: bool = False) -> Any:
    """Loads with a spinner on stderr (stdout stays clean for --json)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .. import cpu

    cpu.isa()  # a KTX_ISA this CPU cannot run is refused before the memory plan and the load
    given = getattr(args, "chat_template", None)
    template = chat_template_source(given) if given else None

    err = Console(stderr=True, highlight=False)
    err.soft_wrap = not err.is_terminal  # a log file gets whole lines, not 80-column pieces
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=quiet or not err.is_terminal,
    )
    # shown from the first moment: importing torch and transformers alone takes seconds
    task = bar.add_task(f"starting: loading {args.gguf or 'the demo model'}", total=None)
    names = {"build": "building the model", "weights": "loading weights (modules)", "tokenizer": "tokenizer"}

    def progress(stage: str, done: int, total: int) -> None:
        bar.update(task, description=names.get(stage, stage), completed=done, total=total or None)

    def show_plan(plan) -> None:
        if not quiet:
            for line in plan.lines():
                err.print(f"[dim]memory plan: {line}[/dim]")

    with bar:
        from ..loader import load

        model = load(
            args.gguf, model_path=args.model_path, progress=progress, on_plan=show_plan, **load_options(args)
        )
    if template is not None:  # the model's own from now on: chat, generate --chat and serve use it
        model.tokenizer.chat_templates["default"] = template
    if not quiet:
        import torch

        from .. import cpu

        tok = getattr(model, "tokenizer", None)
        kind = (
            ""
            if tok is None
            else "chat model · "
            if tok.has_chat_template
            else "base model (no chat template) · "
        )
        err.print(
            f"[dim]{model.arch.variant} · {kind}{model.config.num_hidden_layers} layers · "
            f"device {model.model.embed_tokens.device} · CPU path {cpu.isa()} · "
            f"{torch.get_num_threads()} threads · loaded in {model.load_seconds:.1f} s[/dim]"
        )
    return model


def prompt_ids(
    tokenizer: Any, text: str, chat: bool, force_think: bool = False, history: list[dict] | None = None
) -> list[int]:
    """Token ids for a raw prompt, or for a conversation rendered by the model's chat template."""
    if not chat:
        return tokenizer.encode(text)
    messages = (history or []) + ([{"role": "user", "content": text}] if text is not None else [])
    return tokenizer.chat_prompt_ids(messages, force_think)


def stats_line(gen: Any) -> str:
    # one token comes from prefill: a decode rate needs at least one step after it
    decode = f"{gen.decode_tok_s:.1f} tok/s" if gen.completion_tokens > 1 else "- tok/s (one token)"
    return (
        f"{gen.prompt_tokens} prompt tokens · TTFT {gen.ttft_s:.2f} s · prefill {gen.prefill_tok_s:.1f} tok/s"
        f" · decode {decode} · {gen.completion_tokens} tokens ({gen.finish_reason})"
    )


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
