"""Tokenizers from GGUF metadata, against independent oracles.

- The demo Gemma 3 file: transformers' own GGUF tokenizer (slow to build: once per module).
- Byte-level BPE: a `tokenizers` BPE trained here, its vocabulary and merges written to a GGUF.
- SentencePiece BPE: a direct implementation of SentencePiece's merge loop (best-scored pair
  first, byte fallback), on a vocabulary trained here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from tiny_tokenizers import byte_level_metadata, write_tokenizer_gguf
from tiny_tokenizers import train_byte_level as train_byte_level_bpe
from tokenizers import Regex, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

import ktx.core.tokenizer.tokenizer as tokmod
from ktx.core import gguf
from ktx.core.gguf import ValueType
from ktx.core.gguf.writer import Typed
from ktx.core.tokenizer import Tokenizer, cache
from ktx.core.tokenizer.bpe import byte_alphabet, pre_tokenizer
from ktx.core.tokenizer.merges import ranked_merges

SAMPLES = [
    "Hello, world!",
    "hello world",
    " leading space",
    "trailing space ",
    "  two leading, three   inside,  two trailing  ",
    "line one\nline two\n\nafter a blank line\n",
    "\ttab\tseparated\tcolumns",
    "日本語のテキストと中文混合",
    "emoji: 😀🎉👍🏽 and a rare one 🫠 and 𓀀",
    "accents: café, naïve, Ångström, Ελληνικά, русский",
    "def f(x):\n    return x ** 2  # square\n",
    "<start_of_turn>user\nhi<end_of_turn>",
    "<start_of_turn>model\nSure!<end_of_turn>\n<eos>",
    "numbers 1234567890 and 3.14159, 1e-9",
    "URL: https://example.com/a?b=c&d=e#f",
    "Mixed CASE and CamelCaseWords and snake_case_words",
    "I'm sure they'll say we've done it, didn't they?",
    "a",
    "",
    "  ",
    "ℵ₀ ∑ ∫ ≠ ≤ ≥",
    "\r\nwindows\r\nnewlines",
]

CORPUS = """\
The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away into the forest.
Tokenizers cut text into pieces: words, parts of words, single characters, or bytes.
Byte-level BPE starts from the 256 bytes, and merges the most frequent pairs, again and again.
SentencePiece treats the input as a raw stream, and spaces become the meta symbol.
Numbers like 1234, 56 and 7.89 appear too; so do   runs of spaces and\ttabs.
Il était une fois un café où l'on parlait français, deutsch, español und Ελληνικά.
def tokenize(text):\n    return [piece for piece in text.split()]\n
They'll say it's fine; we've seen it, I'm sure you'd agree.
"""


# --- byte-level BPE --------------------------------------------------------------------------

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_byte_level() -> HFTokenizer:
    return train_byte_level_bpe(CORPUS.splitlines(keepends=True) * 3, 600, SPECIALS)


def byte_level_gguf(tmp_path: Path, tk: HFTokenizer, pre: str) -> Path:
    meta = byte_level_metadata(tk, SPECIALS, pre)
    vocab = tk.get_vocab()
    meta["tokenizer.ggml.bos_token_id"] = meta["tokenizer.ggml.eos_token_id"] = vocab["<|endoftext|>"]
    return write_tokenizer_gguf(tmp_path / f"bpe-{pre}.gguf", "qwen2", meta)


def _oracle_with_split(trained: HFTokenizer, regex: str, ignore_merges: bool = False) -> HFTokenizer:
    spec = json.loads(trained.to_str())
    spec["model"]["ignore_merges"] = ignore_merges
    oracle = HFTokenizer.from_str(json.dumps(spec))
    split = pre_tokenizers.Split(Regex(regex), behavior="isolated")
    to_bytes = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    oracle.pre_tokenizer = pre_tokenizers.Sequence([split, to_bytes])
    return oracle


def test_byte_level_matches_trained_tokenizer(tmp_path):
    trained = train_byte_level()
    tok = Tokenizer.from_gguf(byte_level_gguf(tmp_path, trained, "gpt2"), cache_dir=tmp_path / "c")
    assert tok.vocab_size == trained.get_vocab_size()
    for s in [*SAMPLES, "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>"]:
        want = trained.encode(s).ids
        assert tok.encode(s) == want, s  # gpt2 adds no BOS unless the file says so
        assert tok.decode(want) == trained.decode(want, skip_special_tokens=False), s
        assert tok.decode(tok.encode(s)) == s
    im_end = trained.token_to_id("<|im_end|>")
    assert tok.eos_token_ids == {trained.token_to_id("<|endoftext|>"), im_end}


@pytest.mark.parametrize("pre", ["llama-bpe", "qwen2", "gpt-4o"])
def test_byte_level_split_regex_by_pre(tmp_path, pre):
    """The split regex per `tokenizer.ggml.pre` against transformers' table of the same regexes."""
    mapping = pytest.importorskip("transformers.integrations.gguf.gguf_tokenizer_mapping")
    trained = train_byte_level()
    oracle = _oracle_with_split(
        trained, mapping.GGUF_PRE_TOKENIZER_SPLITS[pre], ignore_merges=pre == "llama-bpe"
    )
    tok = Tokenizer.from_gguf(byte_level_gguf(tmp_path, trained, pre), cache_dir=tmp_path / "c")
    for s in SAMPLES:
        assert tok.encode(s, add_special_tokens=False) == oracle.encode(s).ids, s
    assert tok.add_bos == (pre == "llama-bpe")  # llama.cpp's default for the LLAMA3 family


@pytest.mark.parametrize(
    ("pre", "text", "pieces"),
    [
        # DeepSeek V3: digits in threes, kana/CJK runs apart, punctuation glued to the next word.
        ("deepseek-v3", "abc 12345 日本語です.x", ["abc", " ", "123", "45", " ", "日本語です", ".x"]),
        # DeepSeek LLM: newlines alone, letter runs with one optional leading space, digit runs.
        ("deepseek-llm", "Hi there\n123 漢字", ["Hi", " there", "\n", "123", " ", "漢字"]),
    ],
)
def test_deepseek_split_regexes(pre, text, pieces):
    got = [p for p, _ in pre_tokenizer(pre).pre_tokenize_str(text)]
    alphabet = {c: b for b, c in byte_alphabet().items()}
    assert [bytes(alphabet[c] for c in p).decode() for p in got] == pieces


def test_unknown_pre_falls_back_to_gpt2_with_warning(tmp_path, caplog):
    trained = train_byte_level()
    with caplog.at_level(logging.WARNING):
        tok = Tokenizer.from_gguf(byte_level_gguf(tmp_path, trained, "no-such-pre"), cache_dir=tmp_path / "c")
    assert "no-such-pre" in caplog.text
    for s in SAMPLES[:8]:
        assert tok.encode(s) == trained.encode(s).ids


# --- SentencePiece BPE -----------------------------------------------------------------------

SPM_SPECIALS = ["<unk>", "<s>", "</s>", "<|user|>"]


def spm_vocab() -> tuple[list[str], list[float], list[int]]:
    """Byte tokens, specials, then pieces trained on the "▁"-spelled corpus, scored by merge order."""
    tk = HFTokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tk.train_from_iterator(CORPUS.splitlines(), trainers.BpeTrainer(vocab_size=500, special_tokens=[]))
    learned = [t for t, _ in sorted(tk.get_vocab().items(), key=lambda kv: kv[1])]
    tokens = SPM_SPECIALS + [f"<0x{b:02X}>" for b in range(256)] + learned
    types = [2, 3, 3, 3] + [6] * 256 + [1] * len(learned)
    scores = [0.0] * (len(SPM_SPECIALS) + 256) + [-float(i) for i in range(len(learned))]
    return tokens, scores, types


def spm_reference(text: str, tokens: list[str], scores: list[float], add_prefix: bool) -> list[int]:
    """SentencePiece's BPE encoding: repeatedly merge the adjacent pair whose concatenation is the
    best-scored token (leftmost on ties), then spell unknown pieces as byte tokens."""
    index = {t: i for i, t in enumerate(tokens)}
    if not text:
        return []
    text = ("\u2581" if add_prefix else "") + text.replace(" ", "\u2581")
    symbols = list(text)
    while True:
        best = None
        for i in range(len(symbols) - 1):
            j = index.get(symbols[i] + symbols[i + 1])
            if j is not None and (best is None or scores[j] > best[0]):
                best = (scores[j], i)
        if best is None:
            break
        i = best[1]
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
    out = []
    for s in symbols:
        if s in index:
            out.append(index[s])
        else:
            out.extend(index[f"<0x{b:02X}>"] for b in s.encode("utf-8"))
    return out


@pytest.mark.parametrize("add_prefix", [True, False, None])
def test_sentencepiece_matches_reference(tmp_path, add_prefix):
    tokens, scores, types = spm_vocab()
    meta = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": np.array(scores, np.float32),
        "tokenizer.ggml.token_type": Typed(types, ValueType.ARRAY, ValueType.INT32),
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
    }
    if add_prefix is not None:  # absent: llama.cpp's default for SentencePiece is to add one
        meta["tokenizer.ggml.add_space_prefix"] = add_prefix
    path = write_tokenizer_gguf(tmp_path / "spm.gguf", "llama", meta)
    tok = Tokenizer.from_gguf(path, cache_dir=tmp_path / "c")
    prefix = add_prefix is not False
    for s in SAMPLES:
        if "<" in s:
            continue
        want = spm_reference(s, tokens, scores, prefix)
        assert tok.encode(s) == [1, *want], s
        assert tok.decode(want) == s, s
    # After a special token the text starts anew, with its own space prefix (llama.cpp does this).
    got = tok.encode("<|user|>hello world", add_special_tokens=False)
    assert got == [3, *spm_reference("hello world", tokens, scores, prefix)]


# --- the demo model: transformers' GGUF tokenizer as the oracle ------------------------------


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tokcache")


@pytest.fixture(scope="module")
def demo_tok(demo_gguf, demo_cache) -> Tokenizer:
    return Tokenizer.from_gguf(demo_gguf, cache_dir=demo_cache)


@pytest.fixture(scope="module")
def hf_demo(demo_gguf):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(demo_gguf.parent), gguf_file=demo_gguf.name)


@pytest.mark.slow
def test_demo_encode_matches_transformers(demo_tok, hf_demo):
    for s in SAMPLES:
        assert demo_tok.encode(s) == hf_demo(s)["input_ids"], s
        assert (
            demo_tok.encode(s, add_special_tokens=False) == hf_demo(s, add_special_tokens=False)["input_ids"]
        )


def test_demo_round_trip_and_specials(demo_tok):
    assert demo_tok.vocab_size == 262144
    assert (demo_tok.bos_token_id, demo_tok.eos_token_id, demo_tok.pad_token_id) == (2, 1, 0)
    for s in SAMPLES:
        ids = demo_tok.encode(s)
        assert ids[0] == 2
        assert demo_tok.decode(ids[1:]) == s, s
    turn = demo_tok.token_to_id("<start_of_turn>")
    end = demo_tok.token_to_id("<end_of_turn>")
    assert demo_tok.encode("<start_of_turn>", add_special_tokens=False) == [turn]
    assert demo_tok.eos_token_ids == {1, end}
    assert demo_tok.decode(demo_tok.encode("<start_of_turn>user\nhi"), skip_special_tokens=True) == "user\nhi"


def test_demo_cache_is_used(demo_gguf, demo_cache, demo_tok, monkeypatch):
    assert len(list(demo_cache.glob("*.json"))) == 1
    monkeypatch.setattr(tokmod, "_build", _no_build)
    with gguf.open(demo_gguf) as f:  # an open file: its raw entries give the same key
        again = Tokenizer.from_gguf(f, cache_dir=demo_cache)
    assert all(again.encode(s) == demo_tok.encode(s) for s in SAMPLES)


# --- the cache -------------------------------------------------------------------------------


def _no_build(_):
    raise AssertionError("built again despite the cache")


def test_cache_hit_corrupt_file_and_env(tmp_path, monkeypatch):
    trained = train_byte_level()
    path = byte_level_gguf(tmp_path, trained, "gpt2")
    cache_dir = tmp_path / "cache"
    first = Tokenizer.from_gguf(path, cache_dir=cache_dir)
    (cached,) = cache_dir.glob("*.json")
    assert not list(cache_dir.glob("*.tmp"))

    with monkeypatch.context() as m:  # a second build loads the file instead of building
        m.setattr(tokmod, "_build", _no_build)
        hit = Tokenizer.from_gguf(path, cache_dir=cache_dir)
    assert all(hit.encode(s) == first.encode(s) for s in SAMPLES)

    # A corrupt cache file is ignored and replaced.
    cached.write_text('{"version": "1.0", "model": ', encoding="utf-8")
    rebuilt = Tokenizer.from_gguf(path, cache_dir=cache_dir)
    assert all(rebuilt.encode(s) == first.encode(s) for s in SAMPLES)
    assert HFTokenizer.from_file(str(cached)).get_vocab_size() == trained.get_vocab_size()

    # Metadata alone (no file to hash raw) works too; KTX_CACHE_DIR sets the root.
    monkeypatch.setenv("KTX_CACHE_DIR", str(tmp_path / "root"))
    with gguf.open(path) as f:
        from_meta = Tokenizer.from_gguf(f.metadata)
    assert list((tmp_path / "root" / "tokenizers").glob("*.json"))
    assert from_meta.encode(SAMPLES[0]) == first.encode(SAMPLES[0])


def test_cache_key_changes_with_vocabulary(tmp_path):
    trained = train_byte_level()
    a = byte_level_gguf(tmp_path, trained, "gpt2")
    b = byte_level_gguf(tmp_path, trained, "qwen2")
    with gguf.open(a) as fa, gguf.open(b) as fb:
        assert cache.cache_key(fa.metadata, fa.path) != cache.cache_key(fb.metadata, fb.path)
        assert cache.cache_key(fa.metadata, fa.path) == cache.cache_key(fa.metadata, fa.path)
        assert cache.cache_key(fa.metadata) != cache.cache_key(fb.metadata)


def test_merges_match_transformers_generate_merges():
    """The numpy merge derivation against transformers' reference loop, duplicates included."""
    tub = pytest.importorskip("transformers.tokenization_utils_base")

    tokens, scores, _ = spm_vocab()
    tokens = [*tokens, "ab", "abc", "bc", "a", "b", "c", "ab"]  # repeats: the last id counts
    scores = [*scores, -1.0, -2.0, -2.0, 0.0, 0.0, 0.0, -5.0]
    vocab = {t: i for i, t in enumerate(tokens)}
    want = tub.generate_merges(vocab, dict(zip(tokens, scores, strict=True)))
    assert ranked_merges(tokens, np.array(scores)) == want
