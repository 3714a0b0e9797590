"""Qwen3-Next's linear attention: a gated DeltaNet over a recurrent state per sequence.

Per token t of a sequence, with q and k L2-normalised per head and q scaled by 1/sqrt(d_k):
    S <- exp(g_t) * S;   S <- S + k_t (beta_t (v_t - S^T k_t))^T;   o_t = S^T q_t
where g = ssm_a * softplus(a + dt_bias) (ssm_a = -exp(A_log), as llama.cpp stores it) and
beta = sigmoid(b). q, k and v come out of a causal depthwise convolution (kernel 4, SiLU) over
the projected [q | k | v] channels; the output is RMS-normalised per head, times silu(z), and
projected back. The recurrence itself is transformers' own PyTorch code (the chunked form for
prefill segments, the per-token form for decode), so this operator and transformers agree by
construction on the part where a re-implementation would be easiest to get subtly wrong.

State: each sequence holds, per linear layer, the last K-1 convolution inputs [C, K-1] and the
recurrent state [H_v, d_k, d_v] (float32), with the number of tokens they cover. A segment that
starts at 0 starts from zero; one that starts elsewhere must find the state at exactly its
start, else it fails loudly: a KV-cache prefix reused without its state (the server's prefix
cache) would otherwise give wrong answers silently. The state lives on the SequenceKV and goes
with it.

Tensors: attn_qkv + attn_gate (llama.cpp's converter today) or the legacy fused ssm_in (rows
grouped per key head: q, k, v, z), ssm_ba (rows per key head: b then a), ssm_conv1d [C, K],
ssm_a, ssm_dt.bias, ssm_norm [d_v] (shared by the heads), ssm_out.

Qwen3.5 (qwen35moe) files have ssm_beta and ssm_alpha instead of ssm_ba, and llama.cpp's
converter stores their value heads tiled (head j * n_k + g belongs to key head g) where
transformers groups them (head g * r + j): every per-value-head tensor of the file is in the
tiled order, so q and k are repeated tiled to meet them rather than interleaved.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from transformers.models.qwen3_next.modeling_qwen3_next import (
    torch_chunk_gated_delta_rule,
    torch_recurrent_gated_delta_rule,
)

from .. import cpu
from ..models.errors import ModelError
from ..runtime.context import current
from ..runtime.kv_cache import RECURRENT_ATTR
from . import cpu_kernels
from .base import Operator
from .linear import QuantLinear

# transformers warns once per process that these run as PyTorch code rather than its optional
# flash-linear-attention kernels: that is this operator's design, not something for a user to fix
logging.getLogger("transformers.integrations.hub_kernels").setLevel(logging.ERROR)


class LayerState:
    """One sequence's state in one linear layer, covering its first `length` tokens."""

    def __init__(self, conv: torch.Tensor, ssm: torch.Tensor | None, length: int):
        self.conv, self.ssm, self.length = conv, ssm, length


class GatedDeltaNet(Operator):
    tensor_out = True  # returns the layer's output alone (transformers' linear_attn does too)
    recurrent = True  # a state per sequence beside the KV cache (kv_cache.has_recurrent_layers)

    def __init__(self, key, gguf, config, orig=None, device="cpu", **kwargs):
        super().__init__(key, gguf, config, orig, device, **kwargs)
        self.layer_idx = orig.layer_idx
        self.nk, self.dk = int(config.linear_num_key_heads), int(config.linear_key_head_dim)
        self.nv, self.dv = int(config.linear_num_value_heads), int(config.linear_value_head_dim)
        self.kernel = int(config.linear_conv_kernel_dim)
        self.eps = float(config.rms_norm_eps)
        self.channels = 2 * self.nk * self.dk + self.nv * self.dv
        self.legacy = gguf is not None and f"{key}.ssm_in.weight" in gguf.tensors
        self.split_ba = gguf is not None and f"{key}.ssm_beta.weight" in gguf.tensors  # Qwen3.5
        lin = lambda name: QuantLinear(f"{key}.{name}", gguf, config, device=device)  # noqa: E731
        if self.legacy:
            self.in_proj = lin("ssm_in")
        else:
            self.qkv_proj, self.z_proj = lin("attn_qkv"), lin("attn_gate")
        if self.split_ba:
            self.b_proj, self.a_proj = lin("ssm_beta"), lin("ssm_alpha")
        else:
            self.ba_proj = lin("ssm_ba")
        self.out_proj = lin("ssm_out")
        self.conv_w = self.a_neg = self.dt_bias = self.norm_w = None
        self.threads = cpu.default_threads()

    def load(self) -> None:
        k = self.key
        self.conv_w = self.dequant(f"{k}.ssm_conv1d.weight").reshape(self.channels, self.kernel)
        self.a_neg = self.dequant(f"{k}.ssm_a").reshape(self.nv)
        self.dt_bias = self.dequant(f"{k}.ssm_dt.bias").reshape(self.nv)
        self.norm_w = self.dequant(f"{k}.ssm_norm.weight").reshape(-1)[: self.dv]

    def unload(self) -> None:
        self.conv_w = self.a_neg = self.dt_bias = self.norm_w = None

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x [N, hidden] -> mixed [N, C] (q of every key head, then k, then v) and z [N, H_v * d_v]
        if not self.legacy:
            return self.qkv_proj(x).float(), self.z_proj(x).float()
        n, r = x.shape[0], self.nv // self.nk
        g = self.in_proj(x).float().view(n, self.nk, 2 * self.dk + 2 * r * self.dv)
        q, k = g[..., : self.dk], g[..., self.dk : 2 * self.dk]
        v, z = g[..., 2 * self.dk : 2 * self.dk + r * self.dv], g[..., 2 * self.dk + r * self.dv :]
        return torch.cat([t.reshape(n, -1) for t in (q, k, v)], dim=1), z.reshape(n, -1)

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        shape = hidden_states.shape
        x = hidden_states.reshape(-1, shape[-1])
        mixed, z = self._project(x)
        n, r = x.shape[0], self.nv // self.nk
        if self.split_ba:
            b, a = self.b_proj(x).float(), self.a_proj(x).float()
        else:
            ba = self.ba_proj(x).float().view(n, self.nk, 2 * r)
            b, a = ba[..., :r].reshape(n, self.nv), ba[..., r:].reshape(n, self.nv)
        ctx = current()
        if ctx is not None:
            rows = [(rs, seg) for rs, seg, _ in ctx.rows]
        else:  # a plain forward: each batch row is a fresh sequence
            t = shape[-2] if len(shape) > 2 else n
            rows = [(slice(i * t, (i + 1) * t), None) for i in range(n // t)]
        outs = []
        for rs, seg in rows:
            held = self._state(seg)
            if held is not None and rs.stop - rs.start == 1 and self._kernel_fits(mixed):
                # a decode row: everything per token in the kernel, whatever else the step holds
                outs.append(self._step_cpu(mixed[rs][0], b[rs][0], a[rs][0], z[rs][0], held, seg)[None])
            else:
                beta, g = torch.sigmoid(b[rs]), self.a_neg * F.softplus(a[rs] + self.dt_bias)
                o = self._segment(mixed[rs], beta, g, seg, held).view(-1, self.nv, self.dv)
                # the gated RMSNorm per value head
                o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + self.eps) * self.norm_w
                outs.append((o * F.silu(z[rs].view(-1, self.nv, self.dv))).reshape(-1, self.nv * self.dv))
        return self.out_proj(torch.cat(outs).to(hidden_states.dtype)).view(*shape[:-1], -1)

    def _kernel_fits(self, x: torch.Tensor) -> bool:
        return x.device.type == "cpu" and self.conv_w.device.type == "cpu"

    def _step_cpu(self, mixed, b, a, z, held: LayerState, seg) -> torch.Tensor:
        # one decode token on the CPU kernels: the state updated in place
        out = cpu_kernels.deltanet_step(
            mixed.contiguous(),
            held.conv,
            self.conv_w,
            b.contiguous(),
            a.contiguous(),
            self.a_neg,
            self.dt_bias,
            held.ssm,
            z.contiguous(),
            self.norm_w,
            self.eps,
            (self.nk, self.dk, self.nv, self.dv),
            self.split_ba,
            self.threads,
        )
        held.length = seg.start + 1
        return out

    def _state(self, seg) -> LayerState | None:
        if seg is None or seg.start == 0:
            return None
        held = getattr(seg.seq, RECURRENT_ATTR, {}).get(self.layer_idx)
        if held is None or held.length != seg.start:
            have = "none" if held is None else f"{held.length} tokens"
            raise ModelError(
                f"layer {self.layer_idx}: the sequence continues at token {seg.start}, but its "
                f"linear-attention state covers {have}: a cached prefix cannot be reused without its "
                "recurrent state"
            )
        return held

    def _segment(self, mixed: torch.Tensor, beta: torch.Tensor, g: torch.Tensor, seg, held) -> torch.Tensor:
        # one sequence's new tokens (PyTorch): mixed [n, C], beta and g [n, H_v] -> [n, H_v * d_v]
        n, kept = mixed.shape[0], self.kernel - 1
        prev = held.conv if held is not None else mixed.new_zeros(self.channels, kept)
        inp = torch.cat([prev, mixed.T], dim=1)  # [C, K - 1 + n]
        conv = F.silu(F.conv1d(inp[None], self.conv_w[:, None, :], groups=self.channels)[0]).T  # [n, C]
        kd = self.nk * self.dk
        q = conv[:, :kd].reshape(1, n, self.nk, self.dk)
        k = conv[:, kd : 2 * kd].reshape(1, n, self.nk, self.dk)
        v = conv[:, 2 * kd :].reshape(1, n, self.nv, self.dv)
        if self.split_ba and self.nv != self.nk:  # the file's tiled value heads (see the notes)
            q, k = q.repeat(1, 1, self.nv // self.nk, 1), k.repeat(1, 1, self.nv // self.nk, 1)
        ssm = held.ssm if held is not None else None
        rule = (
            torch_recurrent_gated_delta_rule if n == 1 and ssm is not None else torch_chunk_gated_delta_rule
        )
        o, ssm = rule(
            q,
            k,
            v,
            g=g[None],
            beta=beta[None],
            initial_state=ssm,
            output_final_state=True,
            use_qk_l2norm_in_kernel=True,
        )
        if seg is not None:
            states = seg.seq.__dict__.setdefault(RECURRENT_ATTR, {})
            states[self.layer_idx] = LayerState(inp[:, -kept:].contiguous(), ssm.contiguous(), seg.start + n)
        return o.reshape(n, self.nv * self.dv)

    def extra_repr(self) -> str:
        return (
            f"key={self.key}, heads k/v={self.nk}/{self.nv}, d_k/d_v={self.dk}/{self.dv}, conv={self.kernel}"
        )
