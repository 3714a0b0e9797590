"""The operator seam: a module that replaces a transformers module and loads its own weights.

Built from (key, gguf file, config, original module, device, **kwargs) by the injector; it
allocates nothing until `load()`, so a model built on the meta device stays free.
"""

from __future__ import annotations

import warnings
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
        """The tensor in `dtype` (shape as numpy/torch order), on this operator's device."""
        return dequant_to(self.tensor(name), self.device, dtype)

    @property
    def accelerated(self) -> bool:
        """Placed on an accelerator (weights there are held in bfloat16 by default)."""
        return self.device.type != "cpu"


def dequant_to(t: Any, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A GGUF tensor dequantized on `device`: there, the GGUF blocks are uploaded and expanded by
    the backend's kernel (bit-exact with the CPU's), else on the CPU and copied over."""
    from ..backend import kernels

    kern = kernels(device.type)
    if kern is not None and hasattr(kern, "dequantize"):
        with warnings.catch_warnings():  # a read-only mmap view: only ever copied from here
            warnings.simplefilter("ignore", UserWarning)
            raw = torch.from_numpy(t.raw).to(device)
        try:
            return kern.dequantize(raw, int(t.type), tuple(t.shape), dtype)
        except NotImplementedError:
            pass  # a type without a device kernel: the CPU's result is the same
    return t.dequantize(torch.float32).to(device=device, dtype=dtype)


def adopt(dst: nn.Module, src: nn.Module | None, names: tuple[str, ...]) -> None:
    """Moves the named children of the replaced module onto the operator, so rules can replace them too."""
    for name in names:
        child = getattr(src, name, None) if src is not None else None
        setattr(dst, name, child if isinstance(child, nn.Module) else None)
