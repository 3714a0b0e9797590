"""Architectures: GGUF metadata -> transformers config, tensor names, default rules."""

from .config import config_from_gguf
from .errors import ModelError
from .names import gguf_prefix
from .registry import KNOWN_ARCHITECTURES, VARIANTS, Arch, check_architecture

__all__ = [
    "KNOWN_ARCHITECTURES",
    "VARIANTS",
    "Arch",
    "ModelError",
    "check_architecture",
    "config_from_gguf",
    "gguf_prefix",
]
