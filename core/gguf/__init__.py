"""GGUF: read llama.cpp model files fast and strictly; convert their tensors.

import ktx.core.gguf as gguf
with gguf.open("model.gguf") as f:            # a file, a split set, or a directory
    f.metadata.get_int("llama.block_count")
    w = f.tensors["blk.0.attn_q.weight"]
    w.type, w.shape, w.data                    # raw blocks, zero-copy
    w.dequantize()                             # torch float32 (or dtype=torch.bfloat16)
"""

from .constants import BLOCK_SIZES, DEQUANT_TYPES, QUANT_TYPES, GGMLType, ValueType
from .errors import GGUFError
from .file import GGUFFile, GGUFTensor, model_files, open
from .metadata import Metadata, StringArray
from .quants import dequantize, quantize
from .writer import write_gguf

__all__ = [
    "BLOCK_SIZES",
    "DEQUANT_TYPES",
    "QUANT_TYPES",
    "GGMLType",
    "GGUFError",
    "GGUFFile",
    "GGUFTensor",
    "Metadata",
    "StringArray",
    "ValueType",
    "dequantize",
    "model_files",
    "open",
    "quantize",
    "write_gguf",
]
