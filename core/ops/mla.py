"""Multi-head latent attention (DeepSeek-V2/V3, Kimi-K2) over a compressed-latent KV cache.

The cache stores, per token, the normalised KV latent c [kv_lora_rank] and the rotated shared
key k_pe [rope_dim] — 576 values for DeepSeek instead of 2 x 128 heads x 192.
Two equal ways to attend (tests check they agree):
- naive (prefill): expand c through kv_b into per-head K_nope and V, then ordinary attention;
- absorbed (decode): fold kv_b's K half into the query and its V half into the output, so
  attention runs in latent space and reads only the cache.
kv_b comes from `attn_kv_b` (older GGUFs) or from llama.cpp's split `attn_k_b`/`attn_v_b`,
held in float32 on the CPU and in bfloat16 on an accelerator (as the memory plan counts it).
The naive form's temporaries grow with the history (K and V for every head); past
memory_plan.MLA_ATTENTION_WORKSPACE the absorbed form runs instead, in tiles of queries whose
scores fit that budget, so a long prefill never holds more than it.
On CPU decode steps the plan runs the absorbed path below as one kernel call
(runtime/cpu_blocks.mla_block: the same kernels in the same order).
"""

from __future__ import annotations

import torch

from .. import _kernels, cpu
from ..memory_plan import MLA_ATTENTION_WORKSPACE
from ..runtime.context import PAGED_MAX_TOKENS, current
from . import cpu_kernels
from .attention import attend_cached_cpu, cpu_paged, paged_kernels, segments, warm_decode
from .base import Operator, adopt
from .rope import Rope, inv_freq


class MLAAttention(Operator):
    paged_max_tokens = PAGED_MAX_TOKENS  # absorbed only for short segments (runtime/context.py)

    def __init__(self, key, gguf, config, orig=None, device="cpu", absorb: str = "decode", **kwargs):
        super().__init__(key, gguf, config, orig, device, **kwargs)
        if absorb not in ("decode", "always", "never"):
            raise ValueError(f"MLAAttention absorb must be decode, always or never, not {absorb!r}")
        adopt(
            self,
            orig,
            (
                "q_proj",
                "q_a_proj",
                "q_a_layernorm",
                "q_b_proj",
                "kv_a_proj_with_mqa",
                "kv_a_layernorm",
                "o_proj",
            ),
        )
        self.absorb = absorb
        self.layer_idx = orig.layer_idx
        self.heads = config.num_attention_heads
        self.nope, self.rope_dim = config.qk_nope_head_dim, config.qk_rope_head_dim
        self.v_dim, self.rank = config.v_head_dim, config.kv_lora_rank
        self.scale = orig.scaling
        self.rope = self.w_k = self.w_v = None
        self.k_heads = self.v_heads = None  # (QMatrix, head stride in rows): the CPU kernels' form
        self.threads = cpu.default_threads()

    def kv_spec(self) -> tuple[tuple[int, ...], ...]:
        return ((self.rank + self.rope_dim,),)

    def load(self) -> None:
        freqs, scale = inv_freq(self.config, self.rope_dim)
        self.rope = Rope(freqs, scale, interleaved=True)
        dtype = torch.bfloat16 if self.accelerated else torch.float32
        if self.has(f"{self.key}.attn_kv_b.weight"):
            kv_b = self.dequant(f"{self.key}.attn_kv_b.weight", dtype).view(
                self.heads, self.nope + self.v_dim, self.rank
            )
            self.w_k, self.w_v = kv_b[:, : self.nope].contiguous(), kv_b[:, self.nope :].contiguous()
        else:  # llama.cpp split form: k_b [H, rank, nope] (transposed), v_b [H, v, rank]
            w_k = self.dequant(f"{self.key}.attn_k_b.weight", dtype).view(self.heads, self.rank, self.nope)
            self.w_k = w_k.transpose(1, 2).contiguous()
            self.w_v = self.dequant(f"{self.key}.attn_v_b.weight", dtype).view(
                self.heads, self.v_dim, self.rank
            )
        if self.device.type == "cpu":
            self._load_heads()
        warm_decode(self, "warm_mla", heads=self.heads, rank=self.rank, rope=self.rope_dim)

    def _load_heads(self) -> None:
        """The absorbed projections for the CPU kernels, on the GGUF blocks as they are: q_lat =
        q_nope @ k_b[h].T (k_b: [H, rank, nope]) and o = o_lat @ v_b[h].T (v_b: [H, v, rank], or
        the v rows of attn_kv_b). kv_b's k half is stored the other way round: that product
        stays a float32 einsum (older GGUFs only)."""
        from ..cpu_moe import exact_default

        self.exact = exact_default() if self.kwargs.get("exact") is None else bool(self.kwargs["exact"])

        def heads(name: str, rows: int, cols: int, first: int = 0, stride: int | None = None):
            t = self.tensor(name)
            row_bytes = t.raw.nbytes // (self.heads * (stride or rows))
            try:
                w = _kernels.QMatrix(int(t.type), t.raw.ctypes.data + first * row_bytes, rows, cols)
            except ValueError:  # a width or type the kernels cannot take: the einsum stays
                return None
            return w, stride or rows

        if self.has(f"{self.key}.attn_k_b.weight"):
            self.k_heads = heads(f"{self.key}.attn_k_b.weight", self.rank, self.nope)
            self.v_heads = heads(f"{self.key}.attn_v_b.weight", self.v_dim, self.rank)
        else:
            step = self.nope + self.v_dim
            self.v_heads = heads(f"{self.key}.attn_kv_b.weight", self.v_dim, self.rank, self.nope, step)

    @staticmethod
    def _mm(equation: str, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """einsum with w in its own dtype (bfloat16 on an accelerator) -> float32."""
        return torch.einsum(equation, x.to(w.dtype), w).float()

    def _heads(self, which, x: torch.Tensor, w: torch.Tensor, equation: str) -> torch.Tensor:
        if which is None:
            return self._mm(equation, x, w)
        return cpu_kernels.linear_heads(which[0], self.heads, which[1], x, self.exact, self.threads)

    def unload(self) -> None:
        self.w_k = self.w_v = self.k_heads = self.v_heads = None

    def _naive_bytes(self, n: int, s: int) -> int:
        """float32 temporaries of the naive form: K_nope, V and K for every head, scores and probs."""
        per_key = self.heads * (2 * self.nope + self.v_dim + self.rope_dim)
        return 4 * s * (per_key + 2 * self.heads * n)

    def _absorbed_tile(self, s: int) -> int:
        """Queries per tile of the absorbed form within the workspace: scores, masked, probs."""
        return max(1, MLA_ATTENTION_WORKSPACE // (4 * 3 * self.heads * s))

    def _attend(self, q_nope, q_pe, latent, start, absorbed):
        # q_nope: [n, H, nope], q_pe: [n, H, rope]; latent: [S, rank + rope] -> [n, H, v]
        n, s = q_nope.shape[0], latent.shape[0]
        if absorbed or self._naive_bytes(n, s) > MLA_ATTENTION_WORKSPACE:
            tile = self._absorbed_tile(s)
            return torch.cat(
                [
                    self._attend_absorbed(q_nope[i : i + tile], q_pe[i : i + tile], latent, start + i)
                    for i in range(0, n, tile)
                ]
            )
        c, k_pe = latent[:, : self.rank], latent[:, self.rank :]
        dev = q_nope.device
        mask = torch.arange(s, device=dev)[None, :] <= torch.arange(start, start + n, device=dev)[:, None]
        k_nope = self._mm("sr,hdr->hsd", c, self.w_k)  # [H, S, nope]
        v = self._mm("sr,hvr->hsv", c, self.w_v)  # [H, S, v]
        k = torch.cat((k_nope, k_pe[None].expand(self.heads, -1, -1)), -1)
        q = torch.cat((q_nope, q_pe), -1).transpose(0, 1)  # [H, n, d]
        out = torch.nn.functional.scaled_dot_product_attention(
            q[None], k[None], v[None], attn_mask=mask, scale=self.scale
        )
        return out[0].transpose(0, 1)

    def _attend_absorbed(self, q_nope, q_pe, latent, start):
        # queries at positions start .. start + n over the latent history: attention in latent space
        c, k_pe = latent[:, : self.rank], latent[:, self.rank :]
        n, s = q_nope.shape[0], latent.shape[0]
        dev = q_nope.device
        mask = torch.arange(s, device=dev)[None, :] <= torch.arange(start, start + n, device=dev)[:, None]
        q_lat = self._mm("nhd,hdr->nhr", q_nope, self.w_k)  # [n, H, rank]
        scores = torch.einsum("nhr,sr->hns", q_lat, c) + torch.einsum("nhd,sd->hns", q_pe, k_pe)
        probs = (scores * self.scale).masked_fill(~mask, float("-inf")).softmax(-1)
        o_lat = torch.einsum("hns,sr->nhr", probs, c)
        return self._mm("nhr,hvr->nhv", o_lat, self.w_v)

    def _project(self, x: torch.Tensor, positions: torch.Tensor):
        # x: [N, hidden] -> q_nope [N, H, nope], q_pe [N, H, rope] (rotated), latent [N, rank + rope]
        q = self.q_proj(x) if self.q_proj is not None else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(x.shape[0], self.heads, self.nope + self.rope_dim).float()
        q_nope, q_pe = q[..., : self.nope], self.rope.rotate_(q[..., self.nope :], positions)
        ckv = self.kv_a_proj_with_mqa(x).float()
        c = self.kv_a_layernorm(ckv[:, : self.rank].contiguous())
        k_pe = self.rope.rotate_(ckv[:, None, self.rank :], positions)[:, 0]
        return q_nope, q_pe, torch.cat((c, k_pe), -1)

    def forward(self, hidden_states: torch.Tensor, position_ids=None, **kwargs):
        decode = paged_kernels(self, "mla_decode")
        if decode is not None:
            return self._forward_paged(hidden_states, decode)
        pool, rows, positions = segments(hidden_states, position_ids)
        x = hidden_states.reshape(-1, hidden_states.shape[-1])
        q_nope, q_pe, latent = self._project(x, positions)
        if pool is not None and cpu_paged(self, pool) and self.absorb != "never":
            o = self._attend_cpu(pool, q_nope, q_pe, latent)
            o = o.reshape(*hidden_states.shape[:-1], self.heads * self.v_dim)
            return self.o_proj(o.to(hidden_states.dtype)), None
        outs = []
        for rs, seg, start in rows:
            lat = latent[rs]
            if seg is not None:
                put, get = seg.slots(pool, self.device)
                pool.write(self.layer_idx, seg.seq, seg.start, lat, slots=put)
                (lat,) = pool.read(self.layer_idx, seg.seq, seg.start + seg.length, slots=get)
                lat = lat.float()  # an accelerator's pool holds bfloat16
            n = rs.stop - rs.start
            absorbed = self.absorb == "always" or (self.absorb == "decode" and n == 1)
            outs.append(self._attend(q_nope[rs], q_pe[rs], lat, start, absorbed))
        o = torch.cat(outs).reshape(*hidden_states.shape[:-1], self.heads * self.v_dim)
        return self.o_proj(o.to(hidden_states.dtype)), None

    def _attend_cpu(self, pool, q_nope, q_pe, latent) -> torch.Tensor:
        # Absorbed form on the CPU paged kernel: the latent cache is an MQA cache whose keys are
        # whole rows (c, k_pe) and whose values are their first `rank` values, c.
        seq, table, positions = current().cpu_rows
        (store,) = pool.layers[self.layer_idx]
        cpu_kernels.kv_write(store, latent, seq, table, positions)

        def q(rs):  # the absorbed query of rows rs: [n, H, rank + rope]
            return torch.cat((self._heads(self.k_heads, q_nope[rs], self.w_k, "nhd,hdr->nhr"), q_pe[rs]), -1)

        def long_segment(rs, seg, start):
            (lat,) = pool.read(self.layer_idx, seg.seq, seg.start + seg.length, slots=seg.slots(pool)[1])
            absorbed = self.absorb == "always"
            return self._attend(q_nope[rs], q_pe[rs], lat, start, absorbed)

        def expand(o_lat):  # [n, H, rank] -> [n, H, v]
            return self._heads(self.v_heads, o_lat, self.w_v, "nhr,hvr->nhv")

        return attend_cached_cpu(
            self, q, (store, store), self.rank + self.rope_dim, self.rank, 1, long_segment, expand
        )

    def _forward_paged(self, hidden_states: torch.Tensor, decode):
        # Absorbed form over the latent cache, one new token per sequence (the backend's kernel).
        ctx = current()
        dev = ctx.on(self.device)
        x = hidden_states.reshape(-1, hidden_states.shape[-1])
        q_nope, q_pe, latent = self._project(x, dev.positions)
        ctx.pool.write_rows(self.layer_idx, dev.write_slots, latent)
        (cache,) = ctx.pool.layers[self.layer_idx]
        q_lat = self._mm("nhd,hdr->nhr", q_nope, self.w_k)  # [S, H, rank]
        o_lat = decode(q_lat, q_pe, cache, dev.block_table, dev.seq_lens, self.scale, self.rank)
        o = self._mm("nhr,hvr->nhv", o_lat, self.w_v)
        o = o.reshape(*hidden_states.shape[:-1], self.heads * self.v_dim)
        return self.o_proj(o.to(hidden_states.dtype)), None
