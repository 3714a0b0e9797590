"""Every architecture against transformers in float32, through `ktx convert` and `ktx.core.load`.

A tiny random model is made from the real config class, saved by transformers, converted to
GGUF, and loaded by ktx. Oracle: transformers running the very weights the GGUF holds
(dequantized; `hf_oracle.py` undoes llama.cpp's layout changes).

Tolerance: ktx runs here with KTX_EXACT=1, so its CPU kernels keep activations in float32
like the oracle (the default int8 activations are compared with this exact path in
test_int8_activations.py). The only differences are
summation order (SDPA vs eager attention, fused vs per-expert matmuls): ~1e-6 relative on
logits of magnitude ~1. 1e-4 absolute holds for every type, since both sides use the same
dequantized weights; quantization error itself is not part of the comparison.
"""

from __future__ import annotations

import pytest
import torch
from hf_oracle import hf_model_on_gguf, random_ids
from tiny_models import GGUF_ARCH, TINY_NAMES, make_tiny

import ktx.core.gguf as kgguf
from ktx.core.convert.hf_to_gguf import convert_hf
from ktx.core.loader import load
from ktx.core.runtime.generate import prefill_and_generate

TOL = 1e-4


pytestmark = pytest.mark.usefixtures("exact_kernels")


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = make_tiny(name, tmp_path_factory.mktemp(name))
        return cache[name]

    return get


def _compare(hf_dir, gguf_path, arch, n_tokens=24):
    ours = load(gguf_path)
    ref = hf_model_on_gguf(hf_dir, gguf_path, arch)
    ids = torch.tensor([random_ids(ref.config.vocab_size, n_tokens)])
    with torch.inference_mode():
        expected = ref(ids).logits
        got = ours(ids).logits
    assert got.shape == expected.shape
    err = (got - expected).abs().max().item()
    assert err <= TOL, f"max |logits - transformers| = {err:.3g}"
    return ours, ref, ids


@pytest.mark.parametrize("name", TINY_NAMES)
def test_f32_logits_and_greedy_tokens_match_transformers(name, hf_dirs, tmp_path):
    gguf_path = tmp_path / "m.gguf"
    convert_hf(hf_dirs(name), gguf_path, "f32", progress=False)
    ours, ref, ids = _compare(hf_dirs(name), gguf_path, GGUF_ARCH[name])
    # 32 greedy tokens through the block KV cache (prefill in chunks of 5, then decode)
    gen = prefill_and_generate(ours, ours.tokenizer, ids, 32, chunk_size=5, ignore_eos=True)
    with torch.inference_mode():
        expected = ref.generate(
            ids, max_new_tokens=32, min_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=0
        )
    assert gen.tokens == expected[0, ids.shape[1] :].tolist()


@pytest.mark.parametrize("qtype", ["q8_0", "q4_k_m"])
@pytest.mark.parametrize("name", TINY_NAMES)
def test_quantized_logits_match_transformers_on_dequantized_weights(name, qtype, hf_dirs, tmp_path):
    gguf_path = tmp_path / "m.gguf"
    convert_hf(hf_dirs(name), gguf_path, qtype, progress=False)
    _compare(hf_dirs(name), gguf_path, GGUF_ARCH[name])


def test_gpt_oss_mxfp4_file_matches_transformers_on_dequantized_weights(hf_dirs, tmp_path):
    """`--type mxfp4` (gpt-oss's own mix): MXFP4 experts on the MoE kernels, Q8_0 elsewhere."""
    gguf_path = tmp_path / "m.gguf"
    convert_hf(hf_dirs("gpt-oss"), gguf_path, "mxfp4", progress=False)
    with kgguf.open(gguf_path) as f:
        assert f.tensors["blk.0.ffn_gate_exps.weight"].type == kgguf.GGMLType.MXFP4
        assert f.tensors["blk.0.attn_q.weight"].type == kgguf.GGMLType.Q8_0
    _compare(hf_dirs("gpt-oss"), gguf_path, "gpt-oss")


def test_mla_absorbed_decode_equals_naive(hf_dirs, tmp_path):
    gguf_path = tmp_path / "m.gguf"
    convert_hf(hf_dirs("deepseek-v2"), gguf_path, "f32", progress=False)
    model = load(gguf_path)
    ids = torch.tensor([random_ids(model.config.vocab_size, 12)])
    outs = {}
    for mode in ("never", "always"):
        for m in model.modules():
            if hasattr(m, "absorb"):
                m.absorb = mode
        with torch.inference_mode():
            outs[mode] = model(ids).logits
    assert (outs["never"] - outs["always"]).abs().max().item() <= TOL


@pytest.mark.parametrize("name", ["deepseek-v2", "deepseek-v3"])
def test_mla_prefill_past_its_workspace_runs_absorbed_in_query_tiles(name, hf_dirs, tmp_path, monkeypatch):
    """A history whose naive K/V expansion would exceed the workspace switches to the absorbed
    form in tiles of queries (here a workspace of ~3 queries' scores): same logits."""
    from ktx.core.ops import mla

    gguf_path = tmp_path / "m.gguf"
    convert_hf(hf_dirs(name), gguf_path, "f32", progress=False)
    heads, n = load(gguf_path).config.num_attention_heads, 24
    monkeypatch.setattr(mla, "MLA_ATTENTION_WORKSPACE", 4 * 3 * heads * n * 3)
    tiles = []
    absorbed = mla.MLAAttention._attend_absorbed

    def counted(self, q, *args):
        tiles.append(len(q))
        return absorbed(self, q, *args)

    monkeypatch.setattr(mla.MLAAttention, "_attend_absorbed", counted)
    _compare(hf_dirs(name), gguf_path, GGUF_ARCH[name], n_tokens=n)
    assert tiles and set(tiles) == {3}  # every layer, in tiles of 3 queries


def test_legacy_kv_b_and_split_k_b_v_b_agree(hf_dirs, tmp_path):
    logits = []
    for legacy in (False, True):
        path = tmp_path / f"m{legacy}.gguf"
        convert_hf(hf_dirs("deepseek-v3"), path, "f32", progress=False, legacy_mla=legacy)
        model = load(path)
        with torch.inference_mode():
            logits.append(model(torch.tensor([random_ids(model.config.vocab_size, 10)])).logits)
    assert (logits[0] - logits[1]).abs().max().item() <= TOL


def test_model_path_config_overrides_gguf_metadata(hf_dirs, tmp_path):
    gguf_path = tmp_path / "m.gguf"
    convert_hf(hf_dirs("qwen3moe"), gguf_path, "f32", progress=False)
    ours = load(gguf_path, model_path=hf_dirs("qwen3moe"))
    assert ours.config.to_dict()["moe_intermediate_size"] == ours.config.moe_intermediate_size
    _compare(hf_dirs("qwen3moe"), gguf_path, "qwen3moe")


@pytest.mark.parametrize("name", ["qwen3moe", "deepseek-v3", "mixtral"])
def test_fewer_experts_per_token_matches_transformers_with_that_top_k(name, hf_dirs, tmp_path):
    from transformers import AutoModelForCausalLM

    gguf_path = tmp_path / "m.gguf"
    convert_hf(hf_dirs(name), gguf_path, "f32", progress=False)
    ours = load(gguf_path, num_experts_per_tok=1)
    ref = AutoModelForCausalLM.from_pretrained(
        hf_dirs(name), dtype=torch.float32, num_experts_per_tok=1
    ).eval()
    full = AutoModelForCausalLM.from_pretrained(hf_dirs(name), dtype=torch.float32).eval()
    ids = torch.tensor([random_ids(ref.config.vocab_size, 16)])
    with torch.inference_mode():
        got, expected, trained = ours(ids).logits, ref(ids).logits, full(ids).logits
    assert (got - expected).abs().max().item() <= TOL
    assert (got - trained).abs().max().item() > 100 * TOL  # the override really changed the routing


def test_linear_weights_kept_in_gguf_form_give_the_same_logits(hf_dirs, tmp_path):
    from ktx.core.models.registry import RULES_DIR

    gguf_path = tmp_path / "m.gguf"
    convert_hf(hf_dirs("qwen3moe"), gguf_path, "q4_k_m", progress=False)
    rules = tmp_path / "gguf-linear.yaml"
    text = (RULES_DIR / "moe.yaml").read_text()
    old = "replace: {class: ktx.core.ops.linear.QuantLinear}"
    assert old in text
    rules.write_text(
        text.replace(old, "replace: {class: ktx.core.ops.linear.QuantLinear, kwargs: {weights: gguf}}")
    )
    ids = torch.tensor([random_ids(500, 12)])
    with torch.inference_mode():
        a = load(gguf_path)(ids).logits
        b = load(gguf_path, rules=rules)(ids).logits
    assert (a - b).abs().max().item() <= TOL


@pytest.mark.parametrize("qtype", ["f32", "q8_0"])
@pytest.mark.parametrize("name", TINY_NAMES)
def test_step_plan_logits_match_transformers_token_by_token(name, qtype, hf_dirs, tmp_path):
    """The lean step (runtime/plan.py) over the block cache, one token per step (the CPU paged
    attention, fused projections and MLA's per-head kernels), against transformers' logits."""
    from ktx.core.runtime.context import Segment
    from ktx.core.runtime.generate import forward_step, make_pool
    from ktx.core.runtime.kv_cache import SequenceKV
    from ktx.core.runtime.plan import LayerStep, StepPlan

    gguf_path = tmp_path / "m.gguf"
    convert_hf(hf_dirs(name), gguf_path, qtype, progress=False)
    ours = load(gguf_path)
    ref = hf_model_on_gguf(hf_dirs(name), gguf_path, GGUF_ARCH[name])
    ids = random_ids(ref.config.vocab_size, 20)
    with torch.inference_mode():
        expected = ref(torch.tensor([ids])).logits[0]
    pool, seq = make_pool(ours, 64, block_size=8), SequenceKV()
    got = torch.stack(
        [forward_step(ours, pool, [Segment(seq, i, 1)], torch.tensor([t]))[0] for i, t in enumerate(ids)]
    )
    err = (got - expected).abs().max().item()
    assert err <= TOL, f"max |logits - transformers| = {err:.3g}"
    assert all(isinstance(s, LayerStep) for s in StepPlan.of(ours).layers)  # no layer fell back
    for m in ours.modules():
        if type(m).__name__ == "MLAAttention":
            assert m.v_heads is not None and (m.k_heads is not None or not m.has(f"{m.key}.attn_k_b.weight"))


@pytest.mark.parametrize(
    "name",
    [
        "gemma3",
        "qwen3",
        "qwen2",
        "llama",
        "deepseek-v2",
        "deepseek-v2-qlora",
        "deepseek-v3",
        "qwen3moe",
        "mixtral",
        "gpt-oss",
        "glm4moe",
        "minimax-m2",
    ],
)
def test_cpu_decoder_blocks_give_the_operators_results_bit_for_bit(name, hf_dirs, tmp_path):
    """The fused CPU blocks (runtime/cpu_blocks.py) run the operators' kernels in their order:
    decode steps through them equal the operator-by-operator walk exactly."""
    from ktx.core.runtime.context import Segment
    from ktx.core.runtime.generate import forward_step, make_pool
    from ktx.core.runtime.kv_cache import SequenceKV
    from ktx.core.runtime.plan import StepPlan

    gguf_path = tmp_path / "m.gguf"
    convert_hf(hf_dirs(name), gguf_path, "q8_0", progress=False)
    ours = load(gguf_path)
    ids = random_ids(ours.config.vocab_size, 12)
    runs = []
    for fused in (True, False):
        ours.__dict__["_ktx_step_plan"] = plan = StepPlan(ours, fused=fused)
        blocks = [b for s in plan.layers for b in (s.attn_block, s.mlp_block) if b is not None]
        assert bool(blocks) == fused
        if fused:  # every layer's attention (GQA or MLA) and MLP (dense or MoE) is one block
            assert all(s.attn_block is not None and s.mlp_block is not None for s in plan.layers)
        pool, seq = make_pool(ours, 64, block_size=8), SequenceKV()
        runs.append(
            [forward_step(ours, pool, [Segment(seq, i, 1)], torch.tensor([t]))[0] for i, t in enumerate(ids)]
        )
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))
