"""StreamDecoder: token-by-token text that adds up to decode(all ids), never a broken character."""

from __future__ import annotations

import random

import numpy as np
import pytest
from tiny_tokenizers import byte_level_gguf

from ktx.core.gguf import ValueType, write_gguf
from ktx.core.gguf.writer import Typed
from ktx.core.tokenizer import StreamDecoder, Tokenizer

TEXTS = [
    "Hello world, this is a plain sentence.",
    "emoji 😀🎉👍🏽 mixed with text, and 🫠 rare ones like 𓀀 and 𠀋!",
    "中文测试，日本語のテキスト、한국어 텍스트.",
    "ℵ₀ ᠀ ꙮ \U0010fffd — byte fallback everywhere",
    "  leading spaces\n\tand tabs\n\nand newlines  ",
    "<start_of_turn>user\nhi 😀<end_of_turn>\n<start_of_turn>model\n",
    "<|im_start|>user\n中文 🎉<|im_end|>\n",
]


def _stream(tok: Tokenizer, ids: list[int], skip: bool = False) -> list[str]:
    stream = StreamDecoder(tok, skip_special_tokens=skip)
    chunks = [stream.push(i) for i in ids]
    chunks.append(stream.flush())
    return chunks


def check_stream(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text, add_special_tokens=False)
    for skip in (False, True):
        full = tok.decode(ids, skip_special_tokens=skip)
        chunks = _stream(tok, ids, skip)
        assert "".join(chunks) == full, (text, chunks)
        if "\ufffd" not in full:
            assert not any("\ufffd" in c for c in chunks), (text, chunks)


@pytest.fixture(scope="module")
def demo_tok(demo_gguf, tmp_path_factory) -> Tokenizer:
    return Tokenizer.from_gguf(demo_gguf, cache_dir=tmp_path_factory.mktemp("streamcache"))


@pytest.mark.parametrize("text", TEXTS)
def test_demo_stream_concatenates_to_decode(demo_tok, text):
    check_stream(demo_tok, text)


def test_demo_byte_fallback_is_held_until_complete(demo_tok):
    ids = demo_tok.encode("a 𓀀 b", add_special_tokens=False)
    pieces = [demo_tok.id_to_token(i) for i in ids]
    bytes_at = [i for i, p in enumerate(pieces) if p.startswith("<0x")]
    assert len(bytes_at) == 4  # the hieroglyph arrives as four byte tokens
    chunks = _stream(demo_tok, ids)
    assert all(c == "" for c in chunks[bytes_at[0] : bytes_at[-1]])  # held while incomplete
    assert chunks[bytes_at[-1]] == "𓀀"  # out as soon as its last byte is in
    assert "".join(chunks) == "a 𓀀 b"


def test_demo_stream_from_the_first_token(demo_tok):
    """Generated text starts after a prompt: a leading "▁" piece keeps its space mid-stream."""
    prompt = demo_tok.encode("Say hi:")
    reply = demo_tok.encode(" Hello there 🫠", add_special_tokens=False)
    stream = demo_tok.stream()
    out = "".join(stream.push(i) for i in prompt + reply) + stream.flush()
    assert out == demo_tok.decode(prompt + reply)


def test_demo_random_token_sequences(demo_tok):
    """Random text tokens between characters spelled in byte tokens (valid UTF-8 runs)."""
    rng = random.Random(0)
    rare = "𓀀𠀋ꙮ᠀ℵ\U0010fffd"  # characters the demo vocabulary spells byte by byte
    for _ in range(30):
        ids: list[int] = []
        for _ in range(12):
            if rng.random() < 0.4:
                ids += demo_tok.encode(rng.choice(rare), add_special_tokens=False)
            elif not (demo_tok.id_to_token(i := rng.randrange(demo_tok.vocab_size)) or "").startswith("<0x"):
                ids.append(i)
        assert "".join(_stream(demo_tok, ids)) == demo_tok.decode(ids)


def test_demo_invalid_bytes_do_not_break_the_stream(demo_tok):
    """Arbitrary byte tokens (invalid UTF-8): chunks are still strings, and the stream ends with
    what decode ends with once a text token closes the run."""
    rng = random.Random(1)
    byte_ids = [demo_tok.token_to_id(f"<0x{b:02X}>") for b in range(256)]
    for _ in range(20):
        ids = [rng.choice(byte_ids) for _ in range(rng.randrange(1, 8))] + demo_tok.encode("ok", False)
        out = "".join(_stream(demo_tok, ids))
        assert out.endswith("ok") and demo_tok.decode(ids).endswith("ok")


# --- a byte-level BPE vocabulary -------------------------------------------------------------


@pytest.fixture(scope="module")
def bpe_tok(tmp_path_factory) -> Tokenizer:
    tmp = tmp_path_factory.mktemp("bpe_stream")
    return Tokenizer.from_gguf(byte_level_gguf(tmp / "bpe.gguf"), cache_dir=tmp / "cache")


@pytest.mark.parametrize("text", TEXTS)
def test_byte_level_stream_concatenates_to_decode(bpe_tok, text):
    ids = bpe_tok.encode(text, add_special_tokens=False)
    assert len(ids) > len(text.encode()) // 4  # emoji and CJK arrive byte by byte here
    check_stream(bpe_tok, text)


def test_flush_resets_and_emits_incomplete_bytes(bpe_tok):
    ids = bpe_tok.encode("😀", add_special_tokens=False)
    assert len(ids) == 4
    stream = StreamDecoder(bpe_tok)
    assert [stream.push(i) for i in ids[:2]] == ["", ""]
    assert stream.flush() == bpe_tok.decode(ids[:2])  # what is left, replacement character and all
    assert stream.extend(ids) == "😀" and stream.flush() == ""


# --- SentencePiece with a space prefix (the decoder strips the first space) -------------------


@pytest.fixture(scope="module")
def prefix_tok(tmp_path_factory) -> Tokenizer:
    tmp = tmp_path_factory.mktemp("spm_stream")
    pieces = [
        "\u2581",
        "h",
        "e",
        "l",
        "o",
        "w",
        "r",
        "d",
        "i",
        "t",
        "\u2581h",
        "\u2581w",
        "\u2581hello",
        "\u2581world",
    ]
    tokens = ["<unk>", "<s>", "</s>", "<|user|>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    meta = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": np.array([0.0] * 260 + [-float(i) for i in range(len(pieces))], np.float32),
        "tokenizer.ggml.token_type": Typed(
            [2, 3, 3, 3] + [6] * 256 + [1] * len(pieces), ValueType.ARRAY, ValueType.INT32
        ),
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.add_space_prefix": True,
    }
    path = tmp / "spm.gguf"
    write_gguf(path, "llama", meta, {"token_embd.weight": np.zeros((4, 8), np.float32)})
    return Tokenizer.from_gguf(path, cache_dir=tmp / "cache")


@pytest.mark.parametrize(
    "text", ["hello world", "<|user|>hello world", "hello<|user|><|user|>world 中", "<|user|><|user|> hi 😀"]
)
def test_space_prefix_stream_with_and_without_specials(prefix_tok, text):
    assert prefix_tok.decode(prefix_tok.encode("hello world", add_special_tokens=False)) == "hello world"
    check_stream(prefix_tok, text)
