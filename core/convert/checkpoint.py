"""A Hugging Face checkpoint folder, read lazily: config, tensor names and shapes, one tensor at a time.

Big models (DeepSeek-V3: 163 shards, 1.3 TB in BF16) must never sit in memory, so `Checkpoint`
indexes the safetensors headers only and loads a tensor (or one expert's slice of a fused
tensor) when asked, as float32.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np


def load_config(hf_dir: Path) -> dict[str, Any]:
    """config.json as a dict; a multimodal config's `text_config` is merged over it (Gemma 3 4B+)."""
    path = hf_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{hf_dir} has no config.json: not a Hugging Face model folder")
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(cfg.get("text_config"), dict):
        text = cfg["text_config"]
        cfg = {**cfg, **text, "model_type": text.get("model_type", cfg.get("model_type"))}
    return cfg


class Checkpoint:
    """The safetensors files of one model folder (`model.safetensors`, or shards + index).

    `shape(name)` reads headers only; `load(name)` / `load_slice(name, i)` read one tensor (or
    its i-th outermost slice) and return float32 numpy. Use as a context manager.
    """

    def __init__(self, hf_dir: str | Path) -> None:
        self.dir = Path(hf_dir)
        self._stack = ExitStack()
        self._where: dict[str, Any] = {}
        files = self._files()
        if not files:
            raise FileNotFoundError(
                f"{self.dir} has no *.safetensors weights (PyTorch .bin checkpoints are not supported; "
                "re-save the model with save_pretrained(safe_serialization=True))"
            )
        from safetensors import safe_open

        for file in files:
            handle = self._stack.enter_context(safe_open(str(file), framework="pt"))
            for name in handle.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                self._where[name] = handle

    def _files(self) -> list[Path]:
        index = self.dir / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
            files = sorted({self.dir / f for f in weight_map.values()})
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise FileNotFoundError(f"{self.dir}: shards named by the index are missing: {missing}")
            return files
        return sorted(self.dir.glob("*.safetensors"))

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()

    def __contains__(self, name: object) -> bool:
        return name in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def names(self) -> list[str]:
        return list(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self._where[name].get_slice(name).get_shape())

    def load(self, name: str) -> np.ndarray:
        """The whole tensor as float32 numpy (BF16/F16/F8 sources are widened)."""
        return _to_numpy(self._where[name].get_tensor(name))

    def load_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """tensor[start:stop] (outermost dimension): a big embedding, a few thousand rows at a time."""
        return _to_numpy(self._where[name].get_slice(name)[start:stop])

    def load_slice(self, name: str, index: int) -> np.ndarray:
        """tensor[index] (outermost dimension) without reading the rest: one expert of a fused tensor."""
        return _to_numpy(self._where[name].get_slice(name)[index : index + 1])[0]


def _to_numpy(tensor: Any) -> np.ndarray:
    import torch

    if tensor.dtype != torch.float32:
        tensor = tensor.to(torch.float32)
    return tensor.numpy()
