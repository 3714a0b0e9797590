"""Products over GGUF-native weights (ktx.core._kernels.qmatmul, decode_i8, quantize_act).

Oracle: int8_oracle (gguf-py dequantization; the activation scheme in numpy). The kernels sum
float32 products in another order than float64: outputs are held to 1e-5 of sum(|w| |x|) per
output (rows here have <= 608 terms; measured <= 2e-6, the AVX-512 path's +128 offset trick
being the largest contributor).
"""

from __future__ import annotations

import gguf as gguf_py
import numpy as np
import pytest
from int8_oracle import T, dequantize, fake_quant, int8_types, quantize_act, random_weights, run_of

from ktx.core import _kernels, cpu

INT8 = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.IQ4_NL, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_XS, T.MXFP4]
# the low-bit types of 1.6-2.7-bit files: int8 too (decoded, then multiplied)
LOW_BIT = [T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ1_S, T.IQ1_M, T.TQ1_0, T.TQ2_0, T.NVFP4]
INT8 += LOW_BIT
FLOAT = [T.BF16, T.F16, T.F32, T.Q2_K, T.Q3_K]
TOKENS = (1, 3, 7, 16, 100, 512)  # 7: the fused kernels take 4 rows, then 3
REL = 1e-5


def _cols(ggml_type) -> int:
    block = gguf_py.GGML_QUANT_SIZES[ggml_type][0]
    # 608 = 19 blocks of 32: the fused kernels' runs of 8 blocks plus a pair and a single
    return 512 if block == 256 else 640 if block == 64 else 608


def _qmatmul(ggml_type, raw, rows, cols, x, exact, threads=2):
    y = np.full((x.shape[0], rows), np.nan, np.float32)
    _kernels.qmatmul(
        int(ggml_type), raw.ctypes.data, rows, cols, x.ctypes.data, x.shape[0], y.ctypes.data, exact, threads
    )
    return y


def test_int8_types_are_the_expected_set():
    assert int8_types() == {int(t) for t in INT8}


@pytest.mark.parametrize("ggml_type", INT8 + FLOAT, ids=lambda t: t.name)
@pytest.mark.parametrize("n", TOKENS)
def test_qmatmul_matches_float64_on_dequantized_weights(ggml_type, n, isa):
    rng = np.random.default_rng(int(ggml_type) * 1000 + n)
    rows, cols = 37, _cols(ggml_type)
    raw = random_weights(ggml_type, rows, cols, rng)
    w = dequantize(raw, ggml_type, rows, cols)
    x = rng.standard_normal((n, cols), dtype=np.float32)
    for exact in (False, True):
        xr = x.astype(np.float64) if exact or ggml_type not in INT8 else fake_quant(x, run_of(ggml_type))
        y = _qmatmul(ggml_type, raw, rows, cols, x, exact)
        err = np.abs(y - xr @ w.T) / (np.abs(xr) @ np.abs(w).T)
        assert err.max() <= REL, f"exact={exact}: relative error {err.max():.3g}"


@pytest.mark.parametrize(
    "ggml_type", [T.Q4_0, T.Q5_0, T.Q8_0, T.IQ4_NL, T.Q4_1, T.Q5_1, T.MXFP4], ids=lambda t: t.name
)
@pytest.mark.parametrize("n_blocks", [1, 2, 3, 4, 5, 6, 12, 20, 44])
@pytest.mark.parametrize("n", [2, 40])
def test_every_row_length_of_32_value_blocks(ggml_type, n_blocks, n, isa):
    # the fused kernels take a row in runs of 8 blocks, then a run of 4, then pairs, then a lone
    # block: lengths that end in each (640 values is the demo's, 1408 V2-Lite's down projection);
    # 40 tokens take the token panels, whose rows once ran 32 bytes past an odd number of blocks
    rng = np.random.default_rng(int(ggml_type) + 100 * n_blocks)
    rows, cols = 9, 32 * n_blocks
    raw = random_weights(ggml_type, rows, cols, rng)
    w = dequantize(raw, ggml_type, rows, cols)
    x = rng.standard_normal((n, cols), dtype=np.float32)
    y = _qmatmul(ggml_type, raw, rows, cols, x, exact=False)
    err = np.abs(y - fake_quant(x) @ w.T) / (np.abs(x) @ np.abs(w).T)
    assert err.max() <= REL, f"relative error {err.max():.3g}"


def test_int8_path_differs_from_float_activations():
    # the comparison above can tell the int8 path from the float one (else it proves nothing)
    rng = np.random.default_rng(1)
    raw = random_weights(T.Q4_K, 8, 512, rng)
    w = dequantize(raw, T.Q4_K, 8, 512)
    x = rng.standard_normal((2, 512), dtype=np.float32)
    y = _qmatmul(T.Q4_K, raw, 8, 512, x, exact=False)
    err = np.abs(y - x.astype(np.float64) @ w.T) / (np.abs(x) @ np.abs(w).T)
    assert err.max() > 100 * REL


@pytest.mark.parametrize("ggml_type", INT8, ids=lambda t: t.name)
def test_decoded_int8_form_is_exactly_the_dequantized_weights(ggml_type, isa):
    rng = np.random.default_rng(int(ggml_type))
    block = gguf_py.GGML_QUANT_SIZES[ggml_type][0]
    n_blocks = 24
    raw = random_weights(ggml_type, 1, n_blocks * block, rng)
    q = np.zeros(n_blocks * block, np.int8)
    a = np.zeros(n_blocks * block // 16, np.float32)
    b = np.zeros_like(a)
    _kernels.decode_i8(int(ggml_type), raw.ctypes.data, n_blocks, q.ctypes.data, a.ctypes.data, b.ctypes.data)
    got = np.repeat(a, 16) * q.astype(np.float32) + np.repeat(b, 16)  # float32, as w = a * q + b
    expected = gguf_py.quants.dequantize(raw, ggml_type).reshape(-1)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("run", [16, 256])
def test_quantize_act_matches_its_definition(run, isa):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 512), dtype=np.float32) * np.float32(3)
    x[1, :256] = 0.0  # an all-zero run: d = 0, q = 0
    x[3, 256:] *= np.float32(1e-3)  # runs of one row quantized apart
    # max 127 makes the scale 1, so these are exact ties: round half to even (0, 2, 2, -0, ...)
    x[2, :256] = np.clip(x[2, :256], -100, 100)
    x[2, 16:32] = [127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, 4.5, 5.5, 6.5, -7.5, 8.5, 9.5, 10.5, 11.5]
    q = np.zeros(x.shape, np.int8)
    d = np.zeros((5, 32), np.float32)
    s = np.zeros_like(d)
    _kernels.quantize_act(x.ctypes.data, 5, 512, q.ctypes.data, d.ctypes.data, s.ctypes.data, run)
    eq, ed, es = quantize_act(x, run)
    np.testing.assert_array_equal(q, eq)
    np.testing.assert_array_equal(d, ed)
    np.testing.assert_array_equal(s, es)
    assert (q[2, 17:32] == [0, 2, 2, 0, -2, -2, 4, 4, 6, 6, -8, 8, 10, 10, 12]).all()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_results_do_not_depend_on_the_thread_count(threads):
    rng = np.random.default_rng(3)
    raw = random_weights(T.Q6_K, 300, 512, rng)
    x = rng.standard_normal((2, 512), dtype=np.float32)
    base = _qmatmul(T.Q6_K, raw, 300, 512, x, False, threads=1)
    np.testing.assert_array_equal(_qmatmul(T.Q6_K, raw, 300, 512, x, False, threads=threads), base)


@pytest.fixture
def batch_invariant():
    _kernels.set_batch_invariant_rows(64)
    yield
    _kernels.set_batch_invariant_rows(0)


@pytest.mark.parametrize("ggml_type", INT8 + FLOAT, ids=lambda t: t.name)
@pytest.mark.parametrize("exact", [False, True])
def test_batch_invariant_rows_equal_each_row_alone(ggml_type, exact, isa, batch_invariant):
    # What the server relies on for batched decode: a row's result, bit for bit, does not
    # depend on how many rows share the call (up to the set limit; 16 would take panels or AMX
    # tiles otherwise)
    rng = np.random.default_rng(11)
    cols = _cols(ggml_type)
    raw = random_weights(ggml_type, 40, cols, rng)
    x = rng.standard_normal((16, cols), dtype=np.float32)
    together = _qmatmul(ggml_type, raw, 40, cols, x, exact)
    alone = np.concatenate([_qmatmul(ggml_type, raw, 40, cols, x[i : i + 1], exact) for i in range(16)])
    np.testing.assert_array_equal(together, alone)


def test_without_batch_invariance_batches_may_differ(isa):
    # the test above could not fail if rows were always computed alone: here they are not (the
    # AVX-512 and AVX2 paths' token panels sum in another order than a lone row)
    if cpu.isa() == "scalar":
        pytest.skip("the scalar kernels compute a batch's rows as alone anyway")
    rng = np.random.default_rng(12)
    raw = random_weights(T.Q4_K, 40, 512, rng)
    x = rng.standard_normal((16, 512), dtype=np.float32)
    together = _qmatmul(T.Q4_K, raw, 40, 512, x, False)
    alone = np.concatenate([_qmatmul(T.Q4_K, raw, 40, 512, x[i : i + 1], False) for i in range(16)])
    assert not np.array_equal(together, alone)


@pytest.mark.parametrize(
    ("ggml_type", "cols", "message"),
    [
        (T.Q4_K, 384, "multiple of 32 and of the type's block size"),
        (T.Q8_0, 40, "multiple of 32"),
        (99, 256, "no kernel"),
    ],
)
def test_bad_shapes_and_types_are_refused(ggml_type, cols, message):
    raw = np.zeros(4096, np.uint8)
    x = np.zeros((1, cols), np.float32)
    y = np.zeros((1, 4), np.float32)
    with pytest.raises(ValueError, match=message):
        _kernels.qmatmul(int(ggml_type), raw.ctypes.data, 4, cols, x.ctypes.data, 1, y.ctypes.data, False, 1)


def test_amx_start_up_check_passes_on_emulated_tiles():
    # The amx table checks its tile kernel against AVX-512's once and falls back on a mismatch;
    # the same check over emulated tiles must pass, or it would disable AMX on every machine.
    if "avx512" not in cpu.supported_isas():
        # The emulation is compiled with the AVX-512 flags (its tile epilogue is AVX-512 code):
        # a CPU without AVX-512 cannot run it at all, and the binding refuses. The CI machine and
        # the device machine both have AVX-512, so there this runs.
        pytest.skip("the AMX emulation needs AVX-512")
    assert _kernels.amx_emulated_selfcheck() is True


def test_linear_layer_refuses_an_input_of_the_wrong_width(tiny_gguf):
    # the kernels trust the shapes: a wider input would read past the weights
    import torch

    from ktx.core.loader import load
    from ktx.core.ops.linear import QuantLinear, fused_linears

    model = load(tiny_gguf("llama", "q8_0"))
    lin = next(m for m in model.modules() if isinstance(m, QuantLinear) and m.qmatrix is not None)
    cols = lin.qmatrix.cols
    assert lin(torch.randn(2, cols)).shape == (2, lin.rows)
    for wrong in (lin, lambda x: fused_linears((lin,), x)):
        with pytest.raises(ValueError, match="does not fit"):
            wrong(torch.randn(2, cols + 32))


@pytest.mark.parametrize("ggml_type", [T.Q5_0, T.Q4_K, T.Q8_0], ids=lambda t: t.name)
@pytest.mark.parametrize("n", [1, 3])
def test_linear_heads_multiplies_each_head_by_its_own_matrix(ggml_type, n, isa):
    # MLA's absorbed projections: head h times rows h * stride .. h * stride + rows of one
    # tensor (stride > rows: the v rows of a joint kv_b); many short rows split over the pool
    rng = np.random.default_rng(int(ggml_type) + n)
    heads, rows, stride = 16, 96, 128
    cols = 256 if ggml_type == T.Q4_K else 128
    raw = random_weights(ggml_type, heads * stride, cols, rng)
    w = dequantize(raw, ggml_type, heads * stride, cols).reshape(heads, stride, cols)[:, :rows]
    x = rng.standard_normal((n, heads, cols), dtype=np.float32)
    y = np.full((n, heads, rows), np.nan, np.float32)
    qm = _kernels.QMatrix(int(ggml_type), raw.ctypes.data, rows, cols)
    _kernels.linear_heads(qm, heads, stride, x.ctypes.data, n, y.ctypes.data, False, 2)
    xr = fake_quant(x.reshape(-1, cols), run_of(ggml_type)).reshape(n, heads, cols)
    expected = np.einsum("nhc,hrc->nhr", xr, w)
    err = np.abs(y - expected) / np.einsum("nhc,hrc->nhr", np.abs(xr), np.abs(w))
    assert err.max() <= REL, f"relative error {err.max():.3g}"
