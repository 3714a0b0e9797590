"""One MoE layer's routed experts on the CPU kernels (ktx.core.cpu_moe / _kernels.MoeLayer).

Oracle: float64 in numpy on gguf-py's dequantized experts: gate and up products, SiLU(gate) *
up, down product, weighted sum over each token's experts. For the int8 path the oracle feeds
each product the activations as the kernels quantize them (int8_oracle.fake_quant): the layer
input for gate/up, each (token, expert) SiLU row for down. Tolerance, per output: 1e-5 of
sum(|w| |x|) for each product (float32 summation), carried through SiLU(gate) * up to first
order, plus one rounding step of the down input (int8_oracle.step_allowance).
"""

from __future__ import annotations

import gguf as gguf_py
import numpy as np
import pytest
import torch
from int8_oracle import T, dequantize, fake_quant, int8_types, random_weights, run_of, step_allowance

from ktx.core.cpu_moe import CpuMoE, ExpertTensor

E, H, K = 8, 256, 2
COMBOS = [
    (T.Q4_K, T.Q4_K, T.Q6_K),
    (T.Q5_K, T.Q5_K, T.Q8_0),
    (T.IQ4_XS, T.IQ4_XS, T.Q5_0),
    (T.Q8_0, T.Q8_0, T.Q4_0),
    (T.MXFP4, T.MXFP4, T.MXFP4),  # gpt-oss
    (T.IQ1_S, T.IQ1_S, T.IQ2_XXS),  # 1.6-bit DeepSeek / Kimi files: experts IQ1_S, down IQ2_XXS
    (T.IQ2_XS, T.IQ3_XXS, T.IQ3_S),
    (T.BF16, T.BF16, T.BF16),
    (T.Q4_K, T.F16, T.Q3_K),  # int8 and float activations in one layer
]


def _inter(types) -> int:
    # 96 (not a multiple of 256, like V2-Lite's 1408) where the down type has 32-value blocks
    return 256 if gguf_py.GGML_QUANT_SIZES[types[2]][0] == 256 else 96


def _experts(types, rng, n_experts=E, hidden=H):
    inter = _inter(types)
    tensors, dense = [], []
    for t, (rows, cols) in zip(types, [(inter, hidden), (inter, hidden), (hidden, inter)], strict=True):
        raw = np.concatenate([random_weights(t, rows, cols, rng).reshape(-1) for _ in range(n_experts)])
        tensors.append(ExpertTensor(raw, int(t), n_experts, rows, cols))
        dense.append(np.stack([dequantize(r, t, rows, cols) for r in raw.reshape(n_experts, rows, -1)]))
    return tensors, dense


def _oracle(types, dense, x, ids, weights, exact):
    wg, wu, wd = dense
    i8 = set() if exact else int8_types()
    xin = {t: fake_quant(x, run_of(t)) if int(t) in i8 else x.astype(np.float64) for t in types[:2]}
    out = np.zeros((x.shape[0], wd.shape[1]))
    bound = np.zeros_like(out)
    for t in range(x.shape[0]):
        for e, w in zip(ids[t], weights[t], strict=True):
            xg, xu = xin[types[0]][t], xin[types[1]][t]
            g, u = xg @ wg[e].T, xu @ wu[e].T
            sig = 1 / (1 + np.exp(-g))
            act = (g * sig * u)[None].astype(np.float32)
            a = fake_quant(act, run_of(types[2])) if int(types[2]) in i8 else act.astype(np.float64)
            out[t] += w * (a[0] @ wd[e].T)
            # float32 error of gate and up, through SiLU(g) * u (d SiLU / dg = sig (1 + g (1 - sig)))
            dg, du = 1e-5 * (np.abs(xg) @ np.abs(wg[e]).T), 1e-5 * (np.abs(xu) @ np.abs(wu[e]).T)
            dact = dg * np.abs(sig * (1 + g * (1 - sig)) * u) + du * np.abs(g * sig)
            bound[t] += abs(w) * ((1e-5 * np.abs(a[0]) + dact) @ np.abs(wd[e]).T)
            if int(types[2]) in i8:
                bound[t] += abs(w) * step_allowance(act, wd[e], run_of(types[2]))[0]
    return out, bound


def _routing(rng, n, n_experts=E, k=K):
    ids = np.stack([rng.permutation(n_experts)[:k] for _ in range(n)]).astype(np.int64)
    weights = rng.uniform(0.1, 1.0, size=(n, k)).astype(np.float32)
    return ids, weights


@pytest.mark.parametrize("types", COMBOS, ids=lambda ts: "-".join(t.name for t in ts))
@pytest.mark.parametrize("n", [1, 3, 16, 100])
def test_layer_matches_float64_oracle(types, n, isa):
    rng = np.random.default_rng(n)
    tensors, dense = _experts(types, rng)
    # random GGUF scales make weights up to ~1e3: small inputs keep SiLU's argument moderate
    x = rng.standard_normal((n, H), dtype=np.float32) * np.float32(1e-3)
    ids, weights = _routing(rng, n)
    for exact in (False, True):
        layer = CpuMoE(*tensors, threads=2, exact=exact)
        got = layer(torch.from_numpy(x), torch.from_numpy(ids), torch.from_numpy(weights)).numpy()
        expected, bound = _oracle(types, dense, x, ids, weights, exact)
        excess = np.abs(got - expected) - bound
        assert excess.max() <= 0, f"exact={exact}: max |error| beyond the bound {excess.max():.3g}"


def test_unbalanced_routing_and_unused_experts():
    # every token on experts 0 and 1 (the others idle), then one token per expert
    rng = np.random.default_rng(5)
    types = (T.Q4_K, T.Q4_K, T.Q6_K)
    tensors, dense = _experts(types, rng)
    layer = CpuMoE(*tensors, threads=3)
    for ids in (np.tile([[0, 1]], (40, 1)), np.arange(E).reshape(-1, 2)[:, ::-1].copy()):
        ids = ids.astype(np.int64)
        weights = np.full(ids.shape, 0.5, np.float32)
        x = rng.standard_normal((ids.shape[0], H), dtype=np.float32) * np.float32(1e-3)
        got = layer(torch.from_numpy(x), torch.from_numpy(ids), torch.from_numpy(weights)).numpy()
        expected, bound = _oracle(types, dense, x, ids, weights, exact=False)
        assert (np.abs(got - expected) - bound).max() <= 0


def test_submit_then_sync_equals_forward_and_bf16_in_out():
    rng = np.random.default_rng(6)
    tensors, _ = _experts((T.Q4_K, T.Q4_K, T.Q8_0), rng)
    layer = CpuMoE(*tensors, threads=2)
    x = torch.randn(7, H)
    ids, weights = (torch.from_numpy(a) for a in _routing(rng, 7))
    sync_out = layer(x, ids, weights)
    layer.submit(x, ids, weights)
    assert torch.equal(layer.sync(), sync_out)
    xb = x.bfloat16()
    yb = layer(xb, ids, weights)
    assert yb.dtype == torch.bfloat16
    # bf16 in: the same layer on the widened input, rounded once at the end
    assert torch.equal(yb, layer(xb.float(), ids, weights).bfloat16())


def test_misuse_is_reported_not_crashed():
    rng = np.random.default_rng(7)
    tensors, _ = _experts((T.Q8_0, T.Q8_0, T.Q8_0), rng)
    layer = CpuMoE(*tensors, threads=2)
    x = torch.randn(2, H)
    w = torch.ones(2, K)
    with pytest.raises(ValueError, match="expert id 8 out of range"):
        layer(x, torch.tensor([[0, 8], [1, 2]]), w)
    with pytest.raises(ValueError, match="expert id -2 out of range"):
        layer.submit(x, torch.tensor([[0, 1], [-2, 2]]), w)
        layer.sync()
    with pytest.raises(RuntimeError, match="nothing was submitted"):
        layer.sync()
    # the C++ layer refuses a synchronous call while a submitted one (milliseconds long: 4000
    # tokens) is in flight: they would share its buffers
    big = torch.randn(4000, H)
    layer.submit(big, torch.randint(0, E, (4000, K)), torch.ones(4000, K))
    with pytest.raises(RuntimeError, match="in flight"):
        layer._layer.forward(*layer._args(x, torch.tensor([[0, 1], [1, 2]]), w, None)[0])
    layer.sync()
    with pytest.raises(ValueError, match=r"x must be \[tokens, 256\]"):
        layer(torch.randn(2, 100), torch.zeros(2, K, dtype=torch.long), w)
    bad = ExpertTensor(tensors[2].data, tensors[2].ggml_type, E, H, _inter((T.Q8_0,) * 3) + 32)
    with pytest.raises(ValueError, match="experts' down"):
        CpuMoE(tensors[0], tensors[1], bad)


def test_skipped_slots_equal_zero_weight():
    # id -1: the slot's expert runs elsewhere (on the GPU); the CPU adds nothing for it, which is
    # what a weight of 0 on any expert gives (the oracle-checked path above)
    rng = np.random.default_rng(8)
    tensors, _ = _experts((T.Q4_K, T.Q4_K, T.Q6_K), rng)
    layer = CpuMoE(*tensors, threads=2)
    x = torch.randn(9, H) * 1e-3
    ids, weights = (torch.from_numpy(a) for a in _routing(rng, 9))
    skip = torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) < 0.4
    zeroed = layer(x, ids, weights.masked_fill(skip, 0.0)).clone()
    assert torch.equal(layer(x, ids.masked_fill(skip, -1), weights), zeroed)
    assert not torch.equal(zeroed, layer(x, ids, weights))  # the skipped slots did contribute before
    all_skipped = layer(x, torch.full_like(ids, -1), weights)
    assert torch.equal(all_skipped, torch.zeros_like(x))


def test_host_callbacks_run_the_layer_on_fixed_buffers():
    # What a CUDA stream does through cuLaunchHostFunc, called here directly as C functions
    import ctypes

    rng = np.random.default_rng(9)
    tensors, _ = _experts((T.Q4_K, T.Q4_K, T.Q8_0), rng)
    layer = CpuMoE(*tensors, threads=2)
    n = 5
    x, out = torch.zeros(n, H), torch.zeros(n, H)
    ids, weights = torch.zeros(n, K, dtype=torch.int64), torch.zeros(n, K)
    task = layer.host_task(x, ids, weights, out)
    callback = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    submit, sync = callback(task.submit_fn), callback(task.sync_fn)
    before = layer.busy_seconds
    for step in range(3):  # the buffers are refilled in place between calls, as before a graph replay
        xs = torch.randn(n, H) * 1e-3
        r_ids, r_w = (torch.from_numpy(a) for a in _routing(np.random.default_rng(step), n))
        x.copy_(xs), ids.copy_(r_ids), weights.copy_(r_w)
        submit(task.address)
        sync(task.address)
        task.check()
        assert torch.equal(out, layer(xs, r_ids, r_w))
    assert layer.busy_seconds > before
    ids[0, 0] = E  # a bad id: the callback records it, check() raises
    submit(task.address)
    sync(task.address)
    with pytest.raises(RuntimeError, match="expert id 8 out of range"):
        task.check()
    task.check()  # reported once
    with pytest.raises(ValueError, match=r"ids must be a contiguous torch\.int64"):
        layer.host_task(x, ids.int(), weights, out)


def test_gpt_oss_biases_and_clamped_swiglu_match_float64():
    # gpt-oss's experts: biases on gate, up and down, SwiGLU with the gate clamped at `limit`,
    # up clamped to [-limit, limit] and shifted by one; inputs sized so that both clamps bite
    from ktx.core.gguf import quantize

    rng = np.random.default_rng(5)
    inter, alpha, limit, n = 64, 1.702, 7.0, 9
    dense = [
        rng.standard_normal((E, r, c)).astype(np.float32) for r, c in ((inter, H), (inter, H), (H, inter))
    ]
    raw = [quantize(w, T.MXFP4) for w in dense]
    tensors = [
        ExpertTensor(r.reshape(-1), int(T.MXFP4), E, w.shape[1], w.shape[2])
        for r, w in zip(raw, dense, strict=True)
    ]
    dense = [
        dequantize(r.reshape(-1), T.MXFP4, E * w.shape[1], w.shape[2]).reshape(w.shape)
        for r, w in zip(raw, dense, strict=True)
    ]
    gb, ub = rng.standard_normal((E, inter)), rng.standard_normal((E, inter))
    db = rng.standard_normal((E, H))
    x = rng.standard_normal((n, H)).astype(np.float32) * np.float32(0.4)
    ids, weights = _routing(rng, n)
    layer = CpuMoE(*tensors, threads=2, exact=True)
    layer.set_extras(*(torch.from_numpy(b).float() for b in (gb, ub, db)), swiglu=(alpha, limit))
    got = layer(torch.from_numpy(x), torch.from_numpy(ids), torch.from_numpy(weights)).numpy()
    expected, clamped = np.zeros((n, H)), 0
    for t in range(n):
        for e, w in zip(ids[t], weights[t], strict=True):
            g = x[t].astype(np.float64) @ dense[0][e].T + gb[e]
            u = x[t].astype(np.float64) @ dense[1][e].T + ub[e]
            clamped += int((g > limit).sum() + (np.abs(u) > limit).sum())
            g, u = np.minimum(g, limit), np.clip(u, -limit, limit)
            expected[t] += w * ((g / (1 + np.exp(-alpha * g)) * (u + 1)) @ dense[2][e].T + db[e])
    assert clamped > 0  # the clamps were exercised
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    with pytest.raises(ValueError, match="bias"):
        layer.set_extras(torch.zeros(E, inter + 1))
