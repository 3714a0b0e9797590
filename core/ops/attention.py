"""Grouped-query attention over the block KV cache (Llama, Mixtral, Qwen2/3(-MoE), Gemma 3,
gpt-oss).

The projections and q/k norms are the replaced module's children (rules may replace them in
turn); this operator adds RoPE, the cache and the attention itself. Sliding windows (Gemma 3's
local layers, gpt-oss's even ones) are applied as a mask; the cache keeps every token.
gpt-oss's attention sinks (a logit per head that joins the softmax without a value) run in the
PyTorch path, the CPU paged kernel and the CUDA backend's paged decode. Qwen3-Next's q_proj
also yields an output gate (per head, the second half of its rows): the attention's output is
multiplied by sigmoid(gate) before o_proj.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import cpu
from ..runtime.context import current
from . import cpu_kernels
from .base import Operator, adopt
from .linear import fused_linears
from .rope import Rope, inv_freq


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_start: int,
    scale: float,
    window: int | None = None,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention of n new queries at positions q_start.. over keys 0..S-1.

    q: [n, H, D]; k: [S, KVH, D]; v: [S, KVH, Dv] -> [n, H, Dv], all float32. sinks: [H]
    logits (gpt-oss) that join each head's softmax without a value.
    """
    n, s = q.shape[0], k.shape[0]
    qpos = torch.arange(q_start, q_start + n, device=q.device)[:, None]
    kpos = torch.arange(s, device=q.device)[None, :]
    mask = kpos <= qpos
    if window is not None:
        mask &= qpos - kpos < window
    if sinks is not None:
        if softcap is not None:
            raise NotImplementedError("attention with both sinks and a logit softcap (no model has both)")
        return _attend_sinks(q, k, v, mask, scale, sinks)
    # every query sees every key: known from the positions, without reading the mask back
    full = s - 1 <= q_start and (window is None or q_start + n - 1 < window)
    rep = q.shape[1] // k.shape[1]
    qh, kh, vh = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)  # heads first
    if softcap is not None:
        kh, vh = kh.repeat_interleave(rep, 0), vh.repeat_interleave(rep, 0)
        scores = torch.matmul(qh, kh.transpose(1, 2)) * scale
        scores = torch.tanh(scores / softcap) * softcap
        scores = scores.masked_fill(~mask, float("-inf"))
        return torch.matmul(scores.softmax(-1), vh).transpose(0, 1)
    # Fold each KV head's query group into the query axis: [KVH, rep * n, D] against [KVH, S, D]
    # (SDPA's own GQA path is several times slower on the CPU for decode-sized inputs).
    kvh, d = k.shape[1], q.shape[-1]
    qg = qh.reshape(kvh, rep * n, d)
    out = F.scaled_dot_product_attention(
        qg, kh, vh, attn_mask=None if full else mask.repeat(rep, 1), scale=scale
    )
    return out.reshape(kvh * rep, n, -1).transpose(0, 1)


def _attend_sinks(q, k, v, mask, scale: float, sinks: torch.Tensor) -> torch.Tensor:
    """attend() with gpt-oss's sinks: one more key per head, scored by its sink logit, whose
    value is zero: it only adds exp(sink) to the softmax's denominator."""
    n, heads, rep = q.shape[0], q.shape[1], q.shape[1] // k.shape[1]
    kh = torch.cat([k, k.new_zeros(1, *k.shape[1:])]).transpose(0, 1).repeat_interleave(rep, 0)
    vh = torch.cat([v, v.new_zeros(1, *v.shape[1:])]).transpose(0, 1).repeat_interleave(rep, 0)
    bias = torch.zeros(heads, n, k.shape[0] + 1, device=q.device)
    bias[:, :, :-1].masked_fill_(~mask, float("-inf"))
    bias[:, :, -1] = sinks.to(q.device, torch.float32)[:, None]
    out = F.scaled_dot_product_attention(q.transpose(0, 1), kh, vh, attn_mask=bias, scale=scale)
    return out.transpose(0, 1)


def paged_kernels(op: Operator, name: str):
    """The backend's paged decode kernel `name` for this step, or None (PyTorch path).

    It applies on an accelerator whose backend has it, when every sequence of the step adds one
    token: attention then reads the pool through block tables, with no Python-side shapes."""
    ctx = current()
    if ctx is None or not op.accelerated or not ctx.decode_only:
        return None
    from ..backend import kernels

    return getattr(kernels(op.device.type), name, None)


def warm_decode(op: Operator, name: str, **config) -> None:
    """Compiles the backend's paged decode kernel `name` ("warm_gqa", "warm_mla") for this
    layer's config now, at load, rather than in the first decode step (seconds, cold)."""
    if not op.accelerated:
        return
    from ..backend import kernels
    from ..runtime.kv_cache import ACCEL_DTYPE, BLOCK_SIZE

    warm = getattr(kernels(op.device.type), name, None)
    if warm is not None:
        warm(op.device, dtype=ACCEL_DTYPE, block_size=BLOCK_SIZE, **config)


def cpu_paged(op: Operator, pool) -> bool:
    """The layer's cache is a float32 pool on the CPU, which the CPU paged kernel reads."""
    return op.device.type == "cpu" and pool.layers[op.layer_idx][0].dtype == torch.float32


def attend_cached_cpu(
    op, q: torch.Tensor, stores, dk: int, dv: int, kv_heads: int, long_segment, finish=None
) -> torch.Tensor:
    """Attention of q [T, H, dk] (or q(rows) -> those rows' q) over the step's cache, the new
    tokens already written.

    Segments of at most op.paged_max_tokens new tokens (None: all) run the CPU paged kernel
    ([n, H, dv], then `finish` if given: MLA's value expansion); `long_segment(rows, seg,
    start)` computes the others' rows (PyTorch), in the finished form."""
    ctx = current()
    seq, table, positions = ctx.cpu_rows
    k_store, v_store = stores

    def paged(rs: slice) -> torch.Tensor:
        o = cpu_kernels.paged_attention(
            q(rs) if callable(q) else q[rs],
            k_store,
            v_store,
            kv_heads,
            dv,
            seq[rs],
            table,
            positions[rs],
            op.scale,
            getattr(op, "window", None),
            getattr(op, "softcap", None),
            op.threads,
            getattr(op, "sinks", None),
        )
        return finish(o) if finish is not None else o

    limit = op.paged_max_tokens
    if limit is None or all(seg.length <= limit for _, seg, _ in ctx.rows):
        return paged(slice(0, len(positions)))
    outs = [paged(rs) if seg.length <= limit else long_segment(rs, seg, start) for rs, seg, start in ctx.rows]
    return torch.cat(outs)


def segments(hidden: torch.Tensor, position_ids: torch.Tensor | None):
    """(pool or None, [(row slice, Segment or None, start)], positions [B*T]) for this forward."""
    ctx = current()
    b, t = hidden.shape[:2]
    if ctx is not None:
        if b != 1:
            raise ValueError("with a KV-cache batch, hidden states are one flat row of tokens [1, T]")
        return ctx.pool, ctx.rows, ctx.positions_on(hidden.device)
    if position_ids is None:
        position_ids = torch.arange(t).expand(b, t)
    positions = position_ids.reshape(-1).cpu()
    # No cache: the keys are exactly this row's tokens, so the causal mask starts at 0.
    rows = [(slice(i * t, (i + 1) * t), None, 0) for i in range(b)]
    return None, rows, positions


class Attention(Operator):
    paged_max_tokens = None  # the CPU paged kernel takes segments of any length

    def __init__(self, key, gguf, config, orig=None, device="cpu", **kwargs):
        super().__init__(key, gguf, config, orig, device, **kwargs)
        adopt(self, orig, ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm"))
        self.layer_idx = orig.layer_idx
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scale = getattr(orig, "scaling", None) or 1 / math.sqrt(self.head_dim)
        layer_types = getattr(config, "layer_types", None)
        self.layer_type = layer_types[self.layer_idx] if layer_types else None
        self.window = getattr(orig, "sliding_window", None)
        if self.layer_type == "full_attention":
            self.window = None
        self.softcap = getattr(config, "attn_logit_softcapping", None)
        self.interleaved = bool(
            kwargs.get("rope_interleaved", getattr(config, "ktx_rope_interleaved", False))
        )
        self.rope = None
        # MiniMax-M2 normalises q and k over all heads together (weights of heads * head_dim),
        # the others per head
        qn = getattr(orig, "q_norm", None)
        w = getattr(qn, "weight", None)
        self.qk_norm_full = w is not None and w.numel() == self.heads * self.head_dim and self.heads > 1
        self.sinks = None  # gpt-oss: [heads] logits that join each head's softmax
        # Qwen3-Next: q_proj's rows per head are the query, then the output gate
        qp = getattr(orig, "q_proj", None)
        self.gated = getattr(qp, "out_features", 0) == 2 * self.heads * self.head_dim
        self.threads = cpu.default_threads()

    def kv_spec(self) -> tuple[tuple[int, ...], ...]:
        return ((self.kv_heads, self.head_dim), (self.kv_heads, self.head_dim))

    def load(self) -> None:
        freqs, scale = inv_freq(self.config, self.head_dim, self.layer_type)
        if self.has("rope_freqs.weight"):  # llama 3 scaling as llama.cpp stores it
            freqs = freqs / self.dequant("rope_freqs.weight").cpu()
        self.rope = Rope(freqs, scale, self.interleaved)
        if self.has(f"{self.key}.attn_sinks.weight"):
            self.sinks = self.dequant(f"{self.key}.attn_sinks.weight").float().contiguous()
        warm_decode(
            self,
            "warm_gqa",
            heads=self.heads,
            kv_heads=self.kv_heads,
            head_dim=self.head_dim,
            window=self.window,
            softcap=self.softcap,
        )

    def _qkv(self, x: torch.Tensor, positions: torch.Tensor):
        # x: [N, hidden] -> q [N, H, D], k [N, KVH, D], v [N, KVH, D] float32, q and k rotated,
        # and the output gate [N, H * D] (None but for Qwen3-Next)
        projs = (self.q_proj, self.k_proj, self.v_proj)
        fused = fused_linears(projs, x) if all(hasattr(p, "qmatrix") for p in projs) else None
        q, k, v = fused if fused is not None else (p(x) for p in projs)
        n = x.shape[0]
        gate = None
        if self.gated:
            qg = q.view(n, self.heads, 2 * self.head_dim)
            q, gate = qg[..., : self.head_dim].contiguous(), qg[..., self.head_dim :].reshape(n, -1).float()
        if self.q_norm is not None and self.qk_norm_full:
            q, k = self.q_norm(q.float()), self.k_norm(k.float())
        q = q.view(n, self.heads, self.head_dim).float()
        k = k.view(n, self.kv_heads, self.head_dim).float()
        v = v.view(n, self.kv_heads, self.head_dim).float()
        if self.q_norm is not None and not self.qk_norm_full:
            q, k = self.q_norm(q), self.k_norm(k)
        return self.rope.rotate_(q, positions), self.rope.rotate_(k, positions), v, gate

    def _out(self, o: torch.Tensor, gate: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        # o: [..., H * D] -> o_proj(o), through the output gate where there is one
        if gate is not None:
            o = o * torch.sigmoid(gate).view(o.shape)
        return self.o_proj(o.to(dtype))

    def forward(self, hidden_states: torch.Tensor, position_ids=None, **kwargs):
        decode = paged_kernels(self, "gqa_decode")
        if decode is not None:
            return self._forward_paged(hidden_states, decode)
        pool, rows, positions = segments(hidden_states, position_ids)
        x = hidden_states.reshape(-1, hidden_states.shape[-1])  # [N, hidden]
        q, k, v, gate = self._qkv(x, positions)
        if pool is not None and cpu_paged(self, pool):
            o = self._attend_cpu(pool, q, k, v)
            o = o.reshape(*hidden_states.shape[:-1], self.heads * self.head_dim)
            return self._out(o, gate, hidden_states.dtype), None
        outs = []
        for rs, seg, start in rows:
            qs, ks, vs = q[rs], k[rs], v[rs]
            if seg is not None:
                put, get = seg.slots(pool, self.device)
                pool.write(self.layer_idx, seg.seq, seg.start, ks, vs, slots=put)
                ks, vs = pool.read(self.layer_idx, seg.seq, seg.start + seg.length, slots=get)
                ks, vs = ks.float(), vs.float()  # an accelerator's pool holds bfloat16
            outs.append(attend(qs, ks, vs, start, self.scale, self.window, self.softcap, self.sinks))
        o = torch.cat(outs).reshape(*hidden_states.shape[:-1], self.heads * self.head_dim)
        return self._out(o, gate, hidden_states.dtype), None

    def _attend_cpu(self, pool, q, k, v) -> torch.Tensor:
        # q [T, H, D], k, v [T, KVH, D] float32 -> [T, H, D]; the new K/V written first
        seq, table, positions = current().cpu_rows
        stores = pool.layers[self.layer_idx]
        cpu_kernels.kv_write(stores[0], k, seq, table, positions)
        cpu_kernels.kv_write(stores[1], v, seq, table, positions)

        def long_segment(rs, seg, start):
            ks, vs = pool.read(self.layer_idx, seg.seq, seg.start + seg.length, slots=seg.slots(pool)[1])
            return attend(q[rs], ks, vs, start, self.scale, self.window, self.softcap, self.sinks)

        return attend_cached_cpu(self, q, stores, self.head_dim, self.head_dim, self.kv_heads, long_segment)

    def _forward_paged(self, hidden_states: torch.Tensor, decode):
        # one new token per sequence: [1, S, hidden] -> [1, S, hidden]
        ctx = current()
        dev = ctx.on(self.device)
        x = hidden_states.reshape(-1, hidden_states.shape[-1])
        q, k, v, gate = self._qkv(x, dev.positions)
        ctx.pool.write_rows(self.layer_idx, dev.write_slots, k, v)
        k_cache, v_cache = ctx.pool.layers[self.layer_idx]
        sinks = {} if self.sinks is None else {"sinks": self.sinks}  # gpt-oss
        o = decode(
            q, k_cache, v_cache, dev.block_table, dev.seq_lens, self.scale, self.window, self.softcap, **sinks
        )
        o = o.reshape(*hidden_states.shape[:-1], self.heads * self.head_dim)
        return self._out(o, gate, hidden_states.dtype), None
