"""tokenizer.json (+ tokenizer_config.json) -> the `tokenizer.*` GGUF metadata llama.cpp reads.

Two kinds, told apart as gguf-py's LlamaHfVocab does (a BPE model with byte_fallback and a
Sequence decoder is SentencePiece-style):
- byte-level BPE (Qwen, Llama 3, DeepSeek): `tokenizer.ggml.model = gpt2` with tokens, token
  types (1 normal, 3 control, 4 user-defined, 5 unused padding), merges and `tokenizer.ggml.pre`.
  llama.cpp picks `pre` by hashing the encoding of a test string; ktx guesses from the
  architecture instead (qwen2 for Qwen, llama-bpe for Llama, deepseek-v3 for DeepSeek-V3,
  deepseek-llm for DeepSeek-V2, whose tokenizer is deepseek-llm's), overridable with `pre=`.
- SentencePiece BPE (Gemma, Llama 2, Mistral): `tokenizer.ggml.model = llama` with tokens,
  scores, types (6 byte for <0xNN>, 2 unknown, 3 control, 4 user-defined) and add_space_prefix.
  llama.cpp reads the scores from tokenizer.model with sentencepiece; from tokenizer.json alone
  (LlamaHfVocab) it writes -1000 for every token, which loses the merge order its SPM tokenizer
  needs. ktx writes score = -(merge rank) for a token made by a merge and 0 otherwise, which
  orders merges exactly as the BPE model does.
Special token ids, add_bos/add_eos and the chat template come from gguf-py's SpecialVocab, as in
llama.cpp.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import gguf

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_BYTE_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
PRE_BY_MODEL_TYPE = {
    "qwen2": "qwen2",
    "qwen3": "qwen2",
    "qwen2_moe": "qwen2",
    "qwen3_moe": "qwen2",
    "llama": "llama-bpe",
    "mixtral": "llama-bpe",
    "deepseek_v3": "deepseek-v3",
    "deepseek_v2": "deepseek-llm",
}


def looks_special(token: str) -> bool:
    """llama.cpp's heuristic for added tokens that should be control tokens though not marked so."""
    return (
        token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (token.startswith("<|") and token.endswith("|>"))
        or (token.startswith("<｜") and token.endswith("｜>"))
        or (token.startswith("<unused") and token.endswith(">"))
    )


def is_sentencepiece(tj: dict[str, Any]) -> bool:
    model = tj.get("model") or {}
    decoder = tj.get("decoder") or {}
    return (
        model.get("type") == "BPE" and bool(model.get("byte_fallback")) and decoder.get("type") == "Sequence"
    )


def _add_space_prefix(tj: dict[str, Any]) -> bool:
    """True when the normalizer prepends '▁' or a Metaspace pre-tokenizer adds the prefix."""

    def walk(node: Any) -> bool:
        if isinstance(node, dict):
            if node.get("type") == "Prepend" and node.get("prepend") == "▁":
                return True
            if node.get("type") == "Metaspace":
                return node.get("prepend_scheme", "always") != "never" and node.get("add_prefix_space", True)
            return any(walk(v) for v in node.values())
        if isinstance(node, list):
            return any(walk(v) for v in node)
        return False

    return walk(tj.get("normalizer")) or walk(tj.get("pre_tokenizer"))


def _merge_pairs(merges: list[Any]) -> list[tuple[str, str]]:
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in merges]  # type: ignore[misc]


def _vocab(tj: dict[str, Any], vocab_size: int) -> tuple[list[str], dict[int, dict[str, Any]]]:
    """Token strings by id, padded with llama.cpp's `[PAD{i}]`, and the added-token records by id."""
    by_id: dict[int, str] = {int(i): t for t, i in tj["model"]["vocab"].items()}
    added = {int(a["id"]): a for a in tj.get("added_tokens", [])}
    for i, a in added.items():
        by_id[i] = a["content"]
    n = max(vocab_size, max(by_id) + 1)
    if n > vocab_size:
        raise ValueError(f"tokenizer has ids up to {n - 1} but the model's vocab_size is {vocab_size}")
    return [by_id.get(i, f"[PAD{i}]") for i in range(n)], added


def add_tokenizer(
    gw: gguf.GGUFWriter, hf_dir: Path, model_type: str, vocab_size: int, *, pre: str | None = None
) -> dict[str, Any]:
    """Writes the tokenizer metadata into `gw`; returns a summary (kind, token count, pre)."""
    path = hf_dir / "tokenizer.json"
    if not path.is_file():
        hint = (
            " (only tokenizer.model: save it with a fast tokenizer)"
            if (hf_dir / "tokenizer.model").is_file()
            else ""
        )
        raise FileNotFoundError(f"{hf_dir} has no tokenizer.json{hint}")
    tj = json.loads(path.read_text(encoding="utf-8"))
    if (tj.get("model") or {}).get("type") != "BPE":
        raise ValueError(
            f"{path}: only BPE tokenizers convert (this one is {tj.get('model', {}).get('type')})"
        )
    tokens, added = _vocab(tj, vocab_size)
    base = tj["model"]["vocab"]
    if is_sentencepiece(tj):
        summary = _sentencepiece(gw, tj, tokens, added, base, model_type)
        merges = False
    else:
        summary = _byte_level(gw, tokens, added, base, pre or PRE_BY_MODEL_TYPE.get(model_type, "default"))
        merges = True
    special = gguf.SpecialVocab(hf_dir, load_merges=merges, n_vocab=len(tokens))
    special.add_to_gguf(gw, quiet=True)
    return summary


def _byte_level(
    gw: gguf.GGUFWriter, tokens: list[str], added: dict[int, Any], base: dict[str, int], pre: str
) -> dict[str, Any]:
    base_ids, types = set(base.values()), []
    for i, tok in enumerate(tokens):
        if i in added:
            types.append(CONTROL if added[i].get("special") or looks_special(tok) else USER_DEFINED)
        else:
            types.append(NORMAL if i in base_ids else UNUSED)
    for i, t in enumerate(types):
        if t == USER_DEFINED:
            tokens[i] = tokens[i].replace("▁", " ")  # llama.cpp pre-normalizes user-defined spaces
    gw.add_tokenizer_model("gpt2")
    gw.add_tokenizer_pre(pre)
    gw.add_token_list(tokens)
    gw.add_token_types(types)
    return {"model": "gpt2", "tokens": len(tokens), "pre": pre}


def _sentencepiece(
    gw: gguf.GGUFWriter,
    tj: dict[str, Any],
    tokens: list[str],
    added: dict[int, Any],
    base: dict[str, int],
    model_type: str,
) -> dict[str, Any]:
    rank: dict[str, int] = {}
    for r, (a, b) in enumerate(_merge_pairs(tj["model"].get("merges", []))):
        rank.setdefault(a + b, r)
    unk = tj["model"].get("unk_token")
    base_ids, scores, types = set(base.values()), [], []
    for i, tok in enumerate(tokens):
        scores.append(-float(rank[tok]) if tok in rank else 0.0)
        if _BYTE_TOKEN.match(tok):
            types.append(BYTE)
        elif tok == unk:
            types.append(UNKNOWN)
        elif i in added and added[i].get("special"):
            types.append(CONTROL)
        elif i in added and i not in base_ids:
            types.append(USER_DEFINED)
        elif i in base_ids:
            types.append(NORMAL)
        else:
            types.append(UNUSED)
    gw.add_tokenizer_model("llama")
    gw.add_tokenizer_pre("default")
    gw.add_token_list(tokens)
    gw.add_token_scores(scores)
    gw.add_token_types(types)
    # Gemma's tokenizer.json has no prefix rule, and llama.cpp writes False for Gemma explicitly.
    gw.add_add_space_prefix(False if model_type.startswith("gemma") else _add_space_prefix(tj))
    return {"model": "llama", "tokens": len(tokens), "pre": "default"}
