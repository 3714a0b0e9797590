"""Byte-level BPE vocabularies (`tokenizer.ggml.model = "gpt2"`) as a `tokenizers` BPE model.

The file carries the merges; what it does not carry is the regex that cut text into words before
those merges were learned, only its name in `tokenizer.ggml.pre`. The regexes below are the ones
llama.cpp applies for each name (in the form of the original `tokenizer.json` where llama.cpp had
to rewrite them for its own regex engine). Several regexes in a row split each other's pieces
further, as a sequence of `Split` pre-tokenizers does.
"""

from __future__ import annotations

import logging
import re

from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE

from .gguf_vocab import CONTROL, USER_DEFINED, GGUFVocab

log = logging.getLogger(__name__)

_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
_LLAMA3 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_UPPER, _LOWER = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]", r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"
_GPT4O = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTIONS}?"
    rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{_CONTRACTIONS}?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TEKKEN = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT2_NO_TAIL = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
# DeepSeek LLM: letters of the cased scripts (Latin, Greek, Cyrillic, Armenian, Georgian, ...).
_DEEPSEEK_LETTERS = (
    "A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af"
    "\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5"
    "\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba"
    "\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45"
    "\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe"
    "\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc"
    "\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134"
    "\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee"
    "\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf"
    "\ufb00-\ufb06\ufb13-\ufb17"
    "Ａ-Ｚａ-ｚ\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2"
    "\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943"
)
_DEEPSEEK_LLM = [
    r"[\r\n]",
    rf"\s?[{_DEEPSEEK_LETTERS}]+",
    r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
    r"\s+$",
    r"[一-龥ࠀ-一가-퟿]+",
    r"\p{N}+",
]
_DEEPSEEK_V3 = [
    r"\p{N}{1,3}",
    r"[一-龥぀-ゟ゠-ヿ]+",
    r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"
    r"| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
]
_DEEPSEEK_CODER = [r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", r"[一-龥ࠀ-一가-퟿]+", r"\p{N}"]

LLAMA3_FAMILY = frozenset(
    {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"}
)
GPT2_FAMILY = frozenset({"default", "gpt2", "gpt-2", "mpt", "olmo", "jais", "trillion", "granite-docling"})

SPLITS: dict[str, list[str]] = {
    **{name: [_LLAMA3] for name in LLAMA3_FAMILY | {"dbrx", "smaug-bpe"}},
    **{name: [_QWEN2] for name in ("qwen2", "stablelm2", "deepseek-r1-qwen", "hunyuan", "megrez")},
    **{name: [_GPT4O] for name in ("gpt-4o", "llama4", "minimax-m2")},
    "tekken": [_TEKKEN],
    "deepseek-llm": _DEEPSEEK_LLM,
    "deepseek-v3": _DEEPSEEK_V3,
    "deepseek-coder": _DEEPSEEK_CODER,
    **{
        name: [r"\p{N}", _GPT2_NO_TAIL]
        for name in ("starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b")
    },
}


def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character map: the spelling of every byte-level token."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = (b for b in range(256) if b not in table)
    table.update((b, chr(256 + i)) for i, b in enumerate(extra))
    return dict(sorted(table.items()))


_OUTSIDE_ALPHABET = re.compile("[^" + "".join(re.escape(c) for c in byte_alphabet().values()) + "]")


def spelled_tokens(v: GGUFVocab, tokens: list[str]) -> list[str]:
    """Normal tokens with characters outside the byte alphabet are spelled by their UTF-8 bytes,
    as a byte-level model expects; control and user-defined tokens stay as the file has them."""
    alphabet = byte_alphabet()
    out = list(tokens)
    types = v.token_types
    for i, t in enumerate(tokens):
        if _OUTSIDE_ALPHABET.search(t) and types[i] not in (CONTROL, USER_DEFINED):
            out[i] = "".join(alphabet[b] for b in t.encode("utf-8"))
    return out


def pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    regexes = SPLITS.get(pre)
    if regexes is None:
        if pre not in GPT2_FAMILY:
            log.warning("unknown tokenizer.ggml.pre %r: splitting text with GPT-2's regex", pre)
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    steps = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in regexes]
    return pre_tokenizers.Sequence(
        [*steps, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )


def build_bpe(v: GGUFVocab, tokens: list[str]) -> tuple[Tokenizer, list[str], dict[str, int]]:
    """The backend tokenizer (without added tokens), the token spellings it uses, and its vocabulary."""
    if v.merges is None:
        raise ValueError("a gpt2 (byte-level BPE) vocabulary needs tokenizer.ggml.merges")
    spelled = spelled_tokens(v, tokens)
    merges = []
    for m in v.merges:
        cut = m.find(" ", 1)  # a piece may itself start with a space, as llama.cpp allows
        if cut < 0:
            raise ValueError(f"tokenizer.ggml.merges entry {m!r} has no space")
        merges.append((m[:cut], m[cut + 1 :]))
    vocab = {t: i for i, t in enumerate(spelled)}
    # llama.cpp takes a whole word that is a token without merging, after the LLAMA3-family splits.
    model = BPE(vocab=vocab, merges=merges, ignore_merges=v.pre in LLAMA3_FAMILY)
    tk = Tokenizer(model)
    tk.pre_tokenizer = pre_tokenizer(v.pre)
    tk.decoder = decoders.ByteLevel()
    return tk, spelled, vocab
