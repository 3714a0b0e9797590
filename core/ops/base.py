"""The operator seam: a module that replaces a transformers module and loads its own weights.

Built from (key, gguf file, config, original module, device, **kwargs) by the injector; it
allocates nothing until `load()`, so a model built on the meta device stays free.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..models.errors import ModelError


class Operator(nn.Module):
    def __init__(
        self,
        key: str | None,
        gguf: Any,
        config: Any,
        orig: nn.Module | None = None,
        device: str | torch.device = "cpu",
        **kwargs: Any,
    ):
        super().__init__()
        self.key, self.gguf, self.config = key, gguf, config
        self.device = torch.device(device)
        self.kwargs = kwargs

    def load(self) -> None:
        """Reads this operator's own tensors (not its children's) from the GGUF."""

    def unload(self) -> None:
        """Frees what `load` made."""

    # -- helpers ------------------------------------------------------------------------------
    def tensor(self, name: str):
        try:
            return self.gguf.tensors[name]
        except KeyError:
            raise ModelError(
                f"{self.gguf.paths[0]}: tensor {name!r} is missing (needed by {type(self).__name__} "
                f"at {self.key}); the file is incomplete or not the architecture it claims"
            ) from None

    def has(self, name: str) -> bool:
        return name in self.gguf.tensors

    def dequant(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The tensor in float32 (shape as numpy/torch order), on this operator's device."""
        t = self.tensor(name).dequantize(torch.float32)
        return t.to(device=self.device, dtype=dtype)


def adopt(dst: nn.Module, src: nn.Module | None, names: tuple[str, ...]) -> None:
    """Moves the named children of the replaced module onto the operator, so rules can replace them too."""
    for name in names:
        child = getattr(src, name, None) if src is not None else None
        setattr(dst, name, child if isinstance(child, nn.Module) else None)
