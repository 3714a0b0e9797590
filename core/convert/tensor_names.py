"""HF checkpoint tensors -> GGUF tensors: names, shapes and the transforms llama.cpp applies.

Names come from gguf-py's TensorNameMap (the table llama.cpp's converter uses) and are checked
against `gguf.MODEL_TENSORS[arch]`. The transforms, each the one llama.cpp's converter makes:
- MoE experts are stacked into one 3-D tensor per projection, [n_expert, rows, cols]. Experts may
  be stored per expert (`mlp.experts.{e}.gate_proj.weight`, Hub checkpoints and what transformers'
  save_pretrained writes; Mixtral's `block_sparse_moe.experts.{e}.w1/w2/w3`) or fused, as
  transformers >= 5 holds them in memory (`mlp.experts.gate_up_proj` [E, 2*I, H], gate rows
  first, and `mlp.experts.down_proj` [E, H, I]); both are read.
- llama (and Mixtral): q_proj/k_proj rows are permuted from HF's rotate-half RoPE layout into
  llama.cpp's interleaved pairs (`permute`).
- Gemma 3: every `*norm.weight` gets +1 (Gemma3RMSNorm computes x * (1 + w)); lm_head is tied.
- DeepSeek: kv_b_proj is split per head into attn_k_b [n_head, kv_lora, nope] (transposed, for
  the absorbed-MLA matmul) and attn_v_b [n_head, v_dim, kv_lora]; `legacy_mla` keeps attn_kv_b.
  `e_score_correction_bias` becomes `exp_probs_b.bias`. MTP layers (index >= n_layers) are skipped.
- Qwen3-Next: norms get +1 (x * (1 + w), as Gemma 3) except the linear attention's gated norm;
  `in_proj_qkvz` (rows grouped per key head: q, k, v, z) becomes attn_qkv (all q, all k, all v
  rows) and attn_gate (z); `A_log` is stored as ssm_a = -exp(A_log), `dt_bias` as ssm_dt.bias,
  and the depthwise conv1d [C, 1, K] as ssm_conv1d [C, K].
- Qwen3.5 (qwen35moe): the same, from separate in_proj_qkv/z/b/a (attn_qkv, attn_gate,
  ssm_beta, ssm_alpha), and every per-value-head tensor moved from transformers' grouped order
  (head g * r + j with key head g) to llama.cpp's tiled one (head j * n_k + g): v rows and conv
  channels, z, b, a, A_log, dt_bias and out_proj's columns (`tile_value_heads`).
- gpt-oss: transformers holds the experts fused and transposed (`gate_up_proj` [E, hidden,
  2*inter] with gate in even columns and up in odd ones, `down_proj` [E, inter, hidden], and
  `*_bias`); they become ffn_{gate,up,down}_exps (+ .bias). `self_attn.sinks` is `attn_sinks.weight`.

Each planned tensor yields its data in pieces along the outermost axis (one expert at a time)
so that a 3-D expert tensor is never whole in memory.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gguf
import numpy as np

from .arch_meta import gguf_arch, rope_params
from .checkpoint import Checkpoint

_ARCH_ENUM = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_EXPERT = re.compile(r"\.layers\.(?P<bid>\d+)\..*\.experts\.(?P<e>\d+)\.(?P<proj>\w+)\.weight$")
_FUSED = re.compile(r"\.layers\.(?P<bid>\d+)\..*\.experts\.(?P<proj>gate_up_proj|down_proj)(\.weight)?$")
_CHUNK_ROWS_BYTES = 256 << 20  # copy-only tensors bigger than this (token_embd, lm_head) go in row chunks
_PROJ = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}
# gpt-oss: experts fused and transposed, gate and up interleaved along the last axis
_GPT_OSS_EXPERTS = re.compile(
    r"\.layers\.(?P<bid>\d+)\.mlp\.experts\.(?P<proj>gate_up_proj|down_proj)(?P<bias>_bias)?$"
)
# gpt-oss as OpenAI ships it: experts in MXFP4, [E, rows, cols / 32, 16] bytes and [E, rows,
# cols / 32] E8M0 scales (gate and up interleaved by row)
_GPT_OSS_MXFP4 = re.compile(
    r"\.layers\.(?P<bid>\d+)\.mlp\.experts\.(?P<proj>gate_up_proj|down_proj)_(?P<part>blocks|scales)$"
)
_SKIP = ("rotary_emb.inv_freq", "vision_tower.", "multi_modal_projector.", "vision_model.")
# Qwen3-Next / Qwen3.5 checkpoints: the next-token-prediction module (mtp.*, which llama.cpp's
# qwen3next converter drops and ktx never runs) and Qwen3.5's vision encoder
_SKIP_PREFIXES = ("mtp.", "model.visual.", "visual.")


@dataclass
class Planned:
    """One GGUF tensor: name, numpy-order shape, and a generator of float32 pieces (axis 0)."""

    name: str
    shape: tuple[int, ...]
    pieces: Callable[[], Iterator[np.ndarray]]
    sources: tuple[str, ...] = ()


def permute(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp's q/k row permutation: per head, rotate-half halves -> interleaved pairs."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def n_experts(cfg: dict[str, Any]) -> int:
    return int(
        next((cfg[k] for k in ("n_routed_experts", "num_local_experts", "num_experts") if cfg.get(k)), 0)
    )


def allowed_names(arch: str) -> set[str]:
    """gguf-py's tensor templates for an arch, e.g. {'token_embd', 'blk.{bid}.attn_q', ...}."""
    return {gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[_ARCH_ENUM[arch]]}


def template(name: str) -> str:
    """'blk.3.attn_q.weight' -> 'blk.{bid}.attn_q' (the form `allowed_names` lists)."""
    base = name.rsplit(".", 1)[0] if name.endswith((".weight", ".bias")) else name  # ssm_a has no suffix
    return re.sub(r"^blk\.\d+\.", "blk.{bid}.", base)


def _normalize(name: str) -> str | None:
    """Multimodal wrappers' prefixes removed; None for tensors that are not the text model's."""
    if any(s in name for s in _SKIP) or name.startswith(_SKIP_PREFIXES):
        return None
    for old, new in (
        ("model.language_model.", "model."),
        ("language_model.model.", "model."),
        ("language_model.lm_head.", "lm_head."),
    ):
        name = name.replace(old, new)
    return name.replace("e_score_correction_bias", "e_score_correction.bias")


class Planner:
    """Builds the GGUF tensor list for one checkpoint (see the module notes)."""

    def __init__(
        self,
        model_type: str,
        cfg: dict[str, Any],
        ckpt: Checkpoint,
        legacy_mla: bool = False,
        legacy_qkvz: bool = False,
    ):
        self.model_type, self.cfg, self.ckpt, self.legacy_mla = model_type, cfg, ckpt, legacy_mla
        self.legacy_qkvz = legacy_qkvz
        self.arch = gguf_arch(model_type)
        self.n_layers = int(cfg["num_hidden_layers"])
        self.tmap = gguf.get_tensor_name_map(_ARCH_ENUM[self.arch], self.n_layers)
        self.allowed = allowed_names(self.arch)

    def gguf_name(self, hf_name: str) -> str:
        name = self.tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None or template(name) not in self.allowed:
            raise ValueError(f"{self.arch}: no GGUF tensor for checkpoint tensor {hf_name!r}")
        return name

    def plan(self) -> list[Planned]:
        tied = bool(self.cfg.get("tie_word_embeddings", self.arch == "gemma3"))
        out: list[Planned] = []
        experts: dict[tuple[int, str], dict[int, str]] = {}
        for hf in self.ckpt.names():
            name = _normalize(hf)
            if name is None:
                continue
            m = _LAYER.search(name)
            if m and int(m.group(1)) >= self.n_layers:
                continue  # MTP / next-token-prediction layers: llama.cpp skips them too
            if name == "lm_head.weight" and (tied or self.arch == "gemma3"):
                continue
            if self.arch == "gpt-oss" and (g := _GPT_OSS_MXFP4.search(name)):
                if g["part"] == "blocks":  # its scales are read with it
                    out.extend(self._gpt_oss_mxfp4(hf, int(g["bid"]), g["proj"]))
            elif self.arch == "gpt-oss" and (g := _GPT_OSS_EXPERTS.search(name)):
                out.extend(self._gpt_oss_experts(hf, int(g["bid"]), g["proj"], bool(g["bias"])))
            elif name.endswith("self_attn.sinks"):  # llama.cpp names it a weight
                out.append(self._single(hf, name + ".weight"))
            elif e := _EXPERT.search(name):
                proj = _PROJ.get(e["proj"], e["proj"])
                experts.setdefault((int(e["bid"]), proj), {})[int(e["e"])] = hf
            elif (f := _FUSED.search(name)) and len(self.ckpt.shape(hf)) == 3:
                out.extend(self._fused(hf, int(f["bid"]), f["proj"]))
            elif name.endswith("kv_b_proj.weight") and not self.legacy_mla:
                out.extend(self._kv_b(hf, name))
            elif (
                self.arch == "qwen3next"
                and name.endswith("linear_attn.in_proj_qkvz.weight")
                and not self.legacy_qkvz
            ):
                out.extend(self._qkvz(hf, name))
            elif self.arch in ("qwen3next", "qwen35moe") and name.endswith(
                ("linear_attn.A_log", "linear_attn.dt_bias")
            ):
                out.append(self._ssm_vector(hf, name))
            else:
                out.append(self._single(hf, name))
        out.extend(self._stacked(experts))
        out.extend(self._extra())
        names = [p.name for p in out]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"checkpoint maps several tensors onto {dup}")
        return sorted(out, key=_order)

    def _transform(self, name: str) -> Callable[[np.ndarray], np.ndarray] | None:
        cfg = self.cfg
        if self.arch == "llama" and name.endswith(("q_proj.weight", "q_proj.bias")):
            heads = int(cfg["num_attention_heads"])
            return lambda w: permute(w, heads, heads)
        if self.arch == "llama" and name.endswith(("k_proj.weight", "k_proj.bias")):
            heads, kv = int(cfg["num_attention_heads"]), cfg.get("num_key_value_heads")
            return lambda w: permute(w, heads, kv)
        if self.arch == "gemma3" and name.endswith("norm.weight"):
            return lambda w: w + np.float32(1.0)
        next_arch = self.arch in ("qwen3next", "qwen35moe")
        if next_arch and name.endswith("norm.weight") and "linear_attn." not in name:
            return lambda w: w + np.float32(1.0)
        tile = self._tile if self.arch == "qwen35moe" else None
        if next_arch and name.endswith("linear_attn.conv1d.weight"):
            squeeze = lambda w: np.ascontiguousarray(w.reshape(w.shape[0], w.shape[-1]))  # noqa: E731
            return (lambda w: tile(squeeze(w), "conv")) if tile else squeeze
        for part, what in (
            ("in_proj_qkv", "conv"),
            ("in_proj_z", "rows"),
            ("in_proj_b", "one"),
            ("in_proj_a", "one"),
        ):
            if tile and name.endswith(f"linear_attn.{part}.weight"):
                return lambda w, what=what: tile(w, what)
        if tile and name.endswith("linear_attn.out_proj.weight"):
            return lambda w: tile(w, "cols")
        return None

    def _tile(self, w: np.ndarray, what: str) -> np.ndarray:
        """Value heads from transformers' grouped order to llama.cpp's tiled one (Qwen3.5):
        `conv` the v rows after the 2 * n_k * d_k q/k rows, `rows` / `one` every row (d_v or one
        per head), `cols` the columns."""
        cfg = self.cfg
        nk, dk, nv = (
            int(cfg["linear_num_key_heads"]),
            int(cfg["linear_key_head_dim"]),
            int(cfg["linear_num_value_heads"]),
        )
        if what == "conv":
            head = 2 * nk * dk
            return np.concatenate([w[:head], tile_value_heads(w[head:], nk, nv)])
        if what == "cols":
            return np.ascontiguousarray(tile_value_heads(w.T, nk, nv).T)
        return tile_value_heads(w, nk, nv)

    def _single(self, hf: str, name: str) -> Planned:
        fn, ckpt, shape = self._transform(name), self.ckpt, self.ckpt.shape(hf)
        if self.arch in ("qwen3next", "qwen35moe") and name.endswith("linear_attn.conv1d.weight"):
            shape = (shape[0], shape[-1])
        if fn is not None:
            return Planned(self.gguf_name(name), shape, lambda: iter([fn(ckpt.load(hf))]), (hf,))
        row_bytes = 4 * int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 0
        if row_bytes and row_bytes * shape[0] > _CHUNK_ROWS_BYTES:
            step = max(1, _CHUNK_ROWS_BYTES // row_bytes)
            gen = lambda: (ckpt.load_rows(hf, i, i + step) for i in range(0, shape[0], step))  # noqa: E731
            return Planned(self.gguf_name(name), shape, gen, (hf,))
        return Planned(self.gguf_name(name), shape, lambda: iter([ckpt.load(hf)]), (hf,))

    def _stacked(self, experts: dict[tuple[int, str], dict[int, str]]) -> list[Planned]:
        count, ckpt, out = n_experts(self.cfg), self.ckpt, []
        for (bid, proj), by_id in sorted(experts.items()):
            if sorted(by_id) != list(range(count)):
                raise ValueError(
                    f"layer {bid} {proj}: found experts {sorted(by_id)[:8]}..., expected {count}"
                )
            srcs = tuple(by_id[i] for i in range(count))
            name = self.gguf_name(f"model.layers.{bid}.mlp.experts.{proj}.weight")
            shape = (count, *ckpt.shape(srcs[0]))
            out.append(Planned(name, shape, lambda s=srcs: (ckpt.load(x) for x in s), srcs))
        return out

    def _fused(self, hf: str, bid: int, proj: str) -> list[Planned]:
        ckpt, (count, rows, cols) = self.ckpt, self.ckpt.shape(hf)
        if proj == "down_proj":
            name = self.gguf_name(f"model.layers.{bid}.mlp.experts.down_proj.weight")
            return [
                Planned(
                    name, (count, rows, cols), lambda: (ckpt.load_slice(hf, e) for e in range(count)), (hf,)
                )
            ]
        half, out = rows // 2, []
        for part, sl in (("gate_proj", slice(0, half)), ("up_proj", slice(half, rows))):
            name = self.gguf_name(f"model.layers.{bid}.mlp.experts.{part}.weight")
            gen = lambda sl=sl: (ckpt.load_slice(hf, e)[sl] for e in range(count))  # noqa: E731
            out.append(Planned(name, (count, half, cols), gen, (hf,)))
        return out

    def _gpt_oss_experts(self, hf: str, bid: int, proj: str, bias: bool) -> list[Planned]:
        """gpt-oss's gate_up_proj [E, hidden, 2 * inter] (gate in even columns, up in odd ones) and
        down_proj [E, inter, hidden], and their biases: split and transposed into llama.cpp's
        ffn_{gate,up,down}_exps [E, rows, cols] (+ .bias [E, rows])."""
        ckpt, shape = self.ckpt, self.ckpt.shape(hf)
        suffix = "bias" if bias else "weight"
        count = shape[0]

        def name(part: str) -> str:
            return self.gguf_name(f"model.layers.{bid}.mlp.experts.{part}.{suffix}")

        if proj == "down_proj":
            if bias:
                return [Planned(name("down_proj"), tuple(shape), lambda: iter([ckpt.load(hf)]), (hf,))]
            gen = lambda: (np.ascontiguousarray(ckpt.load_slice(hf, e).T) for e in range(count))  # noqa: E731
            return [Planned(name("down_proj"), (count, shape[2], shape[1]), gen, (hf,))]
        out = []
        for part, first in (("gate_proj", 0), ("up_proj", 1)):
            if bias:
                shape_out = (count, shape[1] // 2)

                def gen(first=first) -> Iterator[np.ndarray]:
                    yield np.ascontiguousarray(ckpt.load(hf)[:, first::2])
            else:
                shape_out = (count, shape[2] // 2, shape[1])

                def gen(first=first) -> Iterator[np.ndarray]:
                    for e in range(count):
                        yield np.ascontiguousarray(ckpt.load_slice(hf, e)[:, first::2].T)

            out.append(Planned(name(part), shape_out, gen, (hf,)))
        return out

    def _gpt_oss_mxfp4(self, hf: str, bid: int, proj: str) -> list[Planned]:
        """OpenAI's MXFP4 experts, expanded to float32 (exactly: every value is an E2M1 code times
        a power of two, so `--type mxfp4` writes the same values back)."""
        ckpt, scales = self.ckpt, hf.removesuffix("_blocks") + "_scales"
        count, rows, groups, _ = ckpt.shape(hf)
        if scales not in ckpt:
            raise ValueError(f"{hf}: no {scales} beside it")

        def expert(e: int) -> np.ndarray:
            return mxfp4_values(ckpt.load_slice(hf, e), ckpt.load_slice(scales, e))

        def name(part: str) -> str:
            return self.gguf_name(f"model.layers.{bid}.mlp.experts.{part}.weight")

        if proj == "down_proj":
            return [
                Planned(
                    name("down_proj"), (count, rows, groups * 32), lambda: map(expert, range(count)), (hf,)
                )
            ]
        out = []
        for part, first in (("gate_proj", 0), ("up_proj", 1)):

            def gen(first=first) -> Iterator[np.ndarray]:
                for e in range(count):
                    yield np.ascontiguousarray(expert(e)[first::2])

            out.append(Planned(name(part), (count, rows // 2, groups * 32), gen, (hf, scales)))
        return out

    def _kv_b(self, hf: str, name: str) -> list[Planned]:
        cfg, ckpt = self.cfg, self.ckpt
        heads, nope, v = int(cfg["num_attention_heads"]), int(cfg["qk_nope_head_dim"]), int(cfg["v_head_dim"])
        rows, kv_lora = ckpt.shape(hf)
        if rows != heads * (nope + v):
            raise ValueError(f"{hf}: {rows} rows, expected n_head * (nope + v) = {heads * (nope + v)}")

        def k_b() -> Iterator[np.ndarray]:
            kv = ckpt.load(hf).reshape(heads, nope + v, kv_lora)
            yield np.ascontiguousarray(kv[:, :nope].transpose(0, 2, 1))

        def v_b() -> Iterator[np.ndarray]:
            yield np.ascontiguousarray(ckpt.load(hf).reshape(heads, nope + v, kv_lora)[:, nope:])

        base = name.removesuffix("kv_b_proj.weight")
        return [
            Planned(self.gguf_name(base + "k_b_proj.weight"), (heads, kv_lora, nope), k_b, (hf,)),
            Planned(self.gguf_name(base + "v_b_proj.weight"), (heads, v, kv_lora), v_b, (hf,)),
        ]

    def _qkvz(self, hf: str, name: str) -> list[Planned]:
        """Qwen3-Next's in_proj_qkvz, rows [q_g, k_g, v_g, z_g] per key head g, -> attn_qkv (every
        q row, then every k row, then every v row, heads in order) and attn_gate (z)."""
        cfg, ckpt = self.cfg, self.ckpt
        nk, dk = int(cfg["linear_num_key_heads"]), int(cfg["linear_key_head_dim"])
        nv, dv = int(cfg["linear_num_value_heads"]), int(cfg["linear_value_head_dim"])
        per = nv // nk * dv  # v (and z) rows of one key head's group
        rows, cols = ckpt.shape(hf)
        if rows != nk * (2 * dk + 2 * per):
            raise ValueError(
                f"{hf}: {rows} rows, expected {nk * (2 * dk + 2 * per)} for the linear attention's sizes"
            )

        def grouped() -> np.ndarray:
            return ckpt.load(hf).reshape(nk, 2 * dk + 2 * per, cols)

        def qkv() -> Iterator[np.ndarray]:
            g = grouped()
            parts = (g[:, :dk], g[:, dk : 2 * dk], g[:, 2 * dk : 2 * dk + per])
            yield np.ascontiguousarray(np.concatenate([p.reshape(-1, cols) for p in parts]))

        def z() -> Iterator[np.ndarray]:
            yield np.ascontiguousarray(grouped()[:, 2 * dk + per :].reshape(-1, cols))

        base = name.removesuffix("in_proj_qkvz.weight")
        return [
            Planned(self.gguf_name(base + "in_proj_qkv.weight"), (nk * 2 * dk + nv * dv, cols), qkv, (hf,)),
            Planned(self.gguf_name(base + "in_proj_z.weight"), (nv * dv, cols), z, (hf,)),
        ]

    def _ssm_vector(self, hf: str, name: str) -> Planned:
        """A_log -> ssm_a = -exp(A_log) (what the recurrence multiplies by); dt_bias -> ssm_dt.bias."""
        ckpt, shape = self.ckpt, self.ckpt.shape(hf)
        tile = (lambda w: self._tile(w, "one")) if self.arch == "qwen35moe" else (lambda w: w)
        if name.endswith("A_log"):
            gguf_name = self.tmap.get_name(name)
            return Planned(gguf_name, shape, lambda: iter([tile(-np.exp(ckpt.load(hf)))]), (hf,))
        if self.arch == "qwen35moe":
            dt = self.gguf_name(name.replace("dt_bias", "dt_proj.bias"))
            return Planned(dt, shape, lambda: iter([tile(ckpt.load(hf))]), (hf,))
        return Planned(
            self.gguf_name(name.replace("dt_bias", "dt_proj.bias")),
            shape,
            lambda: iter([ckpt.load(hf)]),
            (hf,),
        )

    def _extra(self) -> list[Planned]:
        """Tensors llama.cpp computes rather than copies: Llama 3's rope_freqs."""
        factors = llama3_rope_factors(self.cfg) if self.arch == "llama" else None
        if factors is None:
            return []
        return [Planned("rope_freqs.weight", factors.shape, lambda: iter([factors]))]


def tile_value_heads(w: np.ndarray, nk: int, nv: int) -> np.ndarray:
    """Rows in nv equal runs, one per value head, from grouped order (head g * r + j, key head g)
    to tiled order (head j * nk + g), as llama.cpp's Qwen3.5 converter stores them."""
    r = nv // nk
    runs = w.reshape(nk, r, -1, *w.shape[1:])  # [g, j, ...]
    return np.ascontiguousarray(runs.swapaxes(0, 1).reshape(w.shape))


def mxfp4_values(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """OpenAI's MXFP4 (bytes [..., groups, 16], element 2k in the low nibble and 2k + 1 in the
    high one; E8M0 scales [..., groups], bias 127) -> float32 [..., groups * 32]."""
    b = blocks.astype(np.uint8)
    codes = np.stack((b & 0xF, b >> 4), axis=-1).reshape(*b.shape[:-1], 32)
    e2m1 = np.asarray(gguf.quants.MXFP4.kvalues, dtype=np.float32) / 2  # ggml stores them doubled
    values = np.ldexp(e2m1[codes], scales.astype(np.int32)[..., None] - 127)
    return values.reshape(*b.shape[:-2], -1).astype(np.float32)


def llama3_rope_factors(cfg: dict[str, Any]) -> np.ndarray | None:
    """Llama 3.1's per-frequency RoPE divisors (llama.cpp's `rope_freqs` tensor), or None."""
    rope = rope_params(cfg)
    if str(rope.get("rope_type", "")).lower() != "llama3":
        return None
    base = float(rope.get("rope_theta", 10000.0))
    dim = int(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])
    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope.get("original_max_position_embeddings", 8192))
    out = []
    for freq in 1.0 / base ** (np.arange(0, dim, 2, dtype=np.float32) / dim):
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def _order(p: Planned) -> tuple[int, int, str]:
    m = re.match(r"^blk\.(\d+)\.", p.name)
    if m:
        return (1, int(m.group(1)), p.name)
    return (0 if p.name.startswith("token_embd") else 2, 0, p.name)
