"""Tokenizers built from GGUF metadata: SentencePiece and byte-level BPE, chat templates, streaming.

from ktx.core.tokenizer import Tokenizer
tok = Tokenizer.from_gguf("model.gguf")
ids = tok.encode("Hello")
stream = tok.stream()                 # StreamDecoder: stream.push(id) -> new text
"""

from .chat_template import CHATML_TEMPLATE, GEMMA_TEMPLATE, fallback_template, render
from .gguf_vocab import GGUFVocab
from .stream import StreamDecoder
from .tokenizer import Tokenizer

__all__ = [
    "CHATML_TEMPLATE",
    "GEMMA_TEMPLATE",
    "GGUFVocab",
    "StreamDecoder",
    "Tokenizer",
    "fallback_template",
    "render",
]
