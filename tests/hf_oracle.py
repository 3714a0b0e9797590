"""The transformers side of the model tests: a float32 HF model holding exactly the weights a GGUF holds.

`hf_state_from_gguf` undoes llama.cpp's layout changes (q/k row permutation for llama rope,
Gemma's folded 1 + w, split experts, split MLA kv_b) so transformers runs the *dequantized*
GGUF weights: the oracle for quantized files.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from ktx.core import gguf
from ktx.core.models.names import gguf_prefix, tied


def _unpermute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    # inverse of llama.cpp's permute: rows (head, pair, half) <- (head, half, pair)
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _qwen3next_linear(t, gf, cfg, blk: str, part: str) -> torch.Tensor:
    """Qwen3-Next's gated DeltaNet parameter `part` from llama.cpp's tensors (attn_qkv + attn_gate,
    or the legacy ssm_in, regrouped per key head; A_log from ssm_a = -exp(A_log))."""
    nk, dk, nv, dv = (
        cfg.linear_num_key_heads,
        cfg.linear_key_head_dim,
        cfg.linear_num_value_heads,
        cfg.linear_value_head_dim,
    )
    if part == "in_proj_qkvz.weight":
        if f"{blk}.ssm_in.weight" in gf.tensors:
            return t(f"{blk}.ssm_in.weight")
        qkv, z = t(f"{blk}.attn_qkv.weight"), t(f"{blk}.attn_gate.weight")
        cols = qkv.shape[1]
        q, k, v = qkv[: nk * dk], qkv[nk * dk : 2 * nk * dk], qkv[2 * nk * dk :]
        per = nv // nk * dv
        parts = (q.view(nk, dk, cols), k.view(nk, dk, cols), v.view(nk, per, cols), z.view(nk, per, cols))
        return torch.cat(parts, dim=1).reshape(-1, cols)
    if part == "A_log":
        return torch.log(-t(f"{blk}.ssm_a"))
    names = {
        "in_proj_ba.weight": "ssm_ba.weight",
        "conv1d.weight": "ssm_conv1d.weight",
        "dt_bias": "ssm_dt.bias",
    }
    names |= {"norm.weight": "ssm_norm.weight", "out_proj.weight": "ssm_out.weight"}
    return t(f"{blk}.{names[part]}")


def _grouped(w: torch.Tensor, nk: int, nv: int) -> torch.Tensor:
    # llama.cpp's tiled value heads (j * nk + g) back to transformers' grouped ones (g * r + j)
    return w.reshape(nv // nk, nk, -1, *w.shape[1:]).transpose(0, 1).reshape(w.shape)


def _qwen35moe_linear(t, cfg, blk: str, part: str) -> torch.Tensor:
    """Qwen3.5's gated DeltaNet parameter `part` from llama.cpp's tensors (value heads tiled)."""
    nk, dk, nv = cfg.linear_num_key_heads, cfg.linear_key_head_dim, cfg.linear_num_value_heads
    if part in ("in_proj_qkv.weight", "conv1d.weight"):
        w = t(f"{blk}.attn_qkv.weight" if part.startswith("in_proj") else f"{blk}.ssm_conv1d.weight")
        return torch.cat([w[: 2 * nk * dk], _grouped(w[2 * nk * dk :], nk, nv)])
    if part == "out_proj.weight":
        return _grouped(t(f"{blk}.ssm_out.weight").T, nk, nv).T
    if part == "A_log":
        return _grouped(torch.log(-t(f"{blk}.ssm_a")), nk, nv)
    if part == "norm.weight":
        return t(f"{blk}.ssm_norm.weight")
    names = {"in_proj_z.weight": "attn_gate.weight", "in_proj_b.weight": "ssm_beta.weight"}
    names |= {"in_proj_a.weight": "ssm_alpha.weight", "dt_bias": "ssm_dt.bias"}
    return _grouped(t(f"{blk}.{names[part]}"), nk, nv)


def hf_state_from_gguf(gguf_path, model: torch.nn.Module, arch: str) -> dict[str, torch.Tensor]:
    gf = gguf.open(gguf_path)
    cfg = model.config

    def t(name: str) -> torch.Tensor:
        return gf.tensors[name].dequantize(torch.float32)

    state = {}
    for name, ref in model.state_dict().items():
        path, _, param = name.rpartition(".")
        layer = re.search(r"layers\.(\d+)\.", name)
        blk = f"blk.{layer.group(1)}" if layer else None
        if arch == "gpt-oss" and re.search(r"mlp\.experts\.gate_up_proj(_bias)?$", name):
            # [E, hidden, 2 * inter] (or [E, 2 * inter]): gate in even columns, up in odd ones
            part = "bias" if name.endswith("_bias") else "weight"
            g, u = t(f"{blk}.ffn_gate_exps.{part}"), t(f"{blk}.ffn_up_exps.{part}")
            if part == "weight":
                g, u = g.transpose(1, 2), u.transpose(1, 2)
            value = torch.stack((g, u), dim=-1).flatten(-2)
        elif arch == "gpt-oss" and name.endswith("mlp.experts.down_proj"):
            value = t(f"{blk}.ffn_down_exps.weight").transpose(1, 2)
        elif arch == "gpt-oss" and name.endswith("mlp.experts.down_proj_bias"):
            value = t(f"{blk}.ffn_down_exps.bias")
        elif arch == "gpt-oss" and name.endswith("mlp.router.weight"):
            value = t(f"{blk}.ffn_gate_inp.weight")
        elif arch == "gpt-oss" and name.endswith("mlp.router.bias"):
            value = t(f"{blk}.ffn_gate_inp.bias")
        elif arch == "qwen3next" and ".linear_attn." in name:
            value = _qwen3next_linear(t, gf, cfg, blk, name.rsplit(".linear_attn.", 1)[1])
        elif arch == "qwen35moe" and ".linear_attn." in name:
            value = _qwen35moe_linear(t, cfg, blk, name.rsplit(".linear_attn.", 1)[1])
        elif name.endswith("self_attn.sinks"):
            value = t(f"{blk}.attn_sinks.weight")
        elif name.endswith("mlp.experts.gate_up_proj"):
            value = torch.cat((t(f"{blk}.ffn_gate_exps.weight"), t(f"{blk}.ffn_up_exps.weight")), dim=1)
        elif name.endswith("mlp.experts.down_proj"):
            value = t(f"{blk}.ffn_down_exps.weight")
        elif name.endswith("e_score_correction_bias"):
            value = t(f"{blk}.exp_probs_b.bias")
        elif name.endswith("kv_b_proj.weight") and f"{blk}.attn_kv_b.weight" not in gf.tensors:
            h, nope, v, rank = cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.v_head_dim, cfg.kv_lora_rank
            k_b = t(f"{blk}.attn_k_b.weight").view(h, rank, nope).transpose(1, 2)
            v_b = t(f"{blk}.attn_v_b.weight").view(h, v, rank)
            value = torch.cat((k_b, v_b), dim=1).reshape(h * (nope + v), rank)
        else:
            key = tied(f"{gguf_prefix(arch, path)}.{param}", gf.tensors)
            value = t(key)
            if arch == "llama" and re.search(r"self_attn\.(q|k)_proj\.weight$", name):
                heads = cfg.num_attention_heads if ".q_proj" in name else cfg.num_key_value_heads
                value = _unpermute(value, heads)
            if arch in ("gemma3", "qwen3next", "qwen35moe") and "norm" in path:
                value = value - 1.0
        state[name] = value.reshape(ref.shape)
    gf.close()
    return state


def hf_model_on_gguf(hf_dir, gguf_path, arch: str):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    model.load_state_dict(hf_state_from_gguf(gguf_path, model, arch))
    return model.eval()


def random_ids(vocab: int, n: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(3, vocab, n).tolist()
