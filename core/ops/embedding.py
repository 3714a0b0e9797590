"""Token embedding.

On the CPU it dequantizes only the rows it looks up (a 262k x 640 table stays in GGUF form).
On an accelerator the table is expanded there once, in `dtype` (bfloat16 by default), so a
lookup is one gather on the device (and can be captured in a CUDA graph).
"""

from __future__ import annotations

import numpy as np
import torch

from ..gguf import quants
from .base import Operator


class Embedding(Operator):
    def __init__(self, key, gguf, config, orig=None, device="cpu", dtype: str = "bfloat16", **kwargs):
        super().__init__(key, gguf, config, orig, device, **kwargs)
        # Gemma scales embeddings by sqrt(hidden); transformers keeps that on the module.
        self.scale = float(config.hidden_size**0.5) if hasattr(orig, "embed_scale") else None
        self.table_dtype = getattr(torch, dtype)
        self.rows = self.table = None

    def load(self) -> None:
        t = self.tensor(f"{self.key}.weight")
        self.type, self.dim = t.type, t.shape[-1]
        if self.accelerated:
            self.table = self.dequant(f"{self.key}.weight", self.table_dtype)  # [vocab, hidden]
        else:
            self.rows = t.data.reshape(t.shape[0], -1)  # [vocab, bytes per row], a view into the mmap

    def unload(self) -> None:
        self.rows = self.table = None

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # input_ids: [B, T] -> [B, T, hidden] float32
        if self.table is not None:
            out = self.table[input_ids.to(self.device)].float()
            return out * self.scale if self.scale is not None else out
        flat = input_ids.reshape(-1).cpu().numpy()
        raw = np.ascontiguousarray(self.rows[flat])
        out = quants.dequantize(raw, self.type, (len(flat), self.dim), torch.float32)
        if self.scale is not None:
            out = out * torch.tensor(self.scale, dtype=torch.float32)
        return out.reshape(*input_ids.shape, self.dim).to(self.device)
