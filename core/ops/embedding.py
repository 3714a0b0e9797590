"""Token embedding that dequantizes only the rows it looks up (a 262k x 640 table stays in GGUF form)."""

from __future__ import annotations

import numpy as np
import torch

from ..gguf import quants
from .base import Operator


class Embedding(Operator):
    def __init__(self, key, gguf, config, orig=None, device="cpu", **kwargs):
        super().__init__(key, gguf, config, orig, device, **kwargs)
        # Gemma scales embeddings by sqrt(hidden); transformers keeps that on the module.
        self.scale = float(config.hidden_size**0.5) if hasattr(orig, "embed_scale") else None
        self.rows = None

    def load(self) -> None:
        t = self.tensor(f"{self.key}.weight")
        self.type, self.dim = t.type, t.shape[-1]
        self.rows = t.data.reshape(t.shape[0], -1)  # [vocab, bytes per row], a view into the mmap

    def unload(self) -> None:
        self.rows = None

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # input_ids: [B, T] -> [B, T, hidden] float32
        flat = input_ids.reshape(-1).cpu().numpy()
        raw = np.ascontiguousarray(self.rows[flat])
        out = quants.dequantize(raw, self.type, (len(flat), self.dim), torch.float32)
        if self.scale is not None:
            out = out * torch.tensor(self.scale, dtype=torch.float32)
        return out.reshape(*input_ids.shape, self.dim).to(self.device)
