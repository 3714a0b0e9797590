"""The hybrid path on a real GPU (marked `cuda`: runs on the device machine).

Oracle: the same tiny model on the CPU only (KTX_EXACT=1, float32). On the GPU the weights
are bfloat16 and so is the KV cache, so logits agree to bf16's precision, not float32's:
the tolerance is relative to the logits' scale (2e-2 of max |logit|), and greedy tokens must
agree on a short horizon. Each GPU op is also checked alone against its CPU reference.
"""

from __future__ import annotations

import pytest
import torch
from hf_oracle import random_ids

from ktx.core.loader import load
from ktx.core.runtime.generate import prefill_and_generate

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.usefixtures("exact_kernels"),
]
REL = 2e-2


@pytest.mark.parametrize(
    "name",
    [
        "deepseek-v3",
        "deepseek-v2",
        "qwen3moe",
        "qwen2moe",
        "mixtral",
        "gemma3",
        "gpt-oss",
        "glm4moe",
        "minimax-m2",
    ],
)
def test_hybrid_logits_match_the_cpu_run(name, tiny_gguf):
    gguf = tiny_gguf(name)
    ids = torch.tensor([random_ids(500, 24)])
    with torch.inference_mode():
        expected = load(gguf, device="cpu")(ids).logits
        gpu = load(gguf, device="cuda")
        got = gpu(ids).logits.float().cpu()
    assert gpu.model.embed_tokens.device.type == "cuda"
    err = (got - expected).abs().max().item()
    assert err <= REL * expected.abs().max().item(), f"max |gpu - cpu| = {err:.3g}"


@pytest.mark.parametrize("name", ["deepseek-v3", "qwen3moe", "gpt-oss"])  # gpt-oss: sinks in the paged decode
@pytest.mark.parametrize("graph", [False, True])
def test_hybrid_generation_matches_the_cpu_run(name, graph, tiny_gguf):
    gguf = tiny_gguf(name, "q8_0")
    cpu, gpu = load(gguf, device="cpu"), load(gguf, device="cuda")
    prompt = random_ids(500, 20)
    a = prefill_and_generate(cpu, cpu.tokenizer, prompt, 12, ignore_eos=True)
    b = prefill_and_generate(gpu, gpu.tokenizer, prompt, 12, ignore_eos=True, use_cuda_graph=graph)
    assert a.tokens[:6] == b.tokens[:6]  # bf16 may flip a near-tie later, not this early


def test_gpu_experts_and_4bit_linear_weights(tiny_gguf, tmp_path):
    from ktx.core.models.registry import RULES_DIR

    gguf = tiny_gguf("deepseek-v3")
    ids = torch.tensor([random_ids(500, 16)])
    rules = tmp_path / "gguf-linear.yaml"
    old = "replace: {class: ktx.core.ops.linear.QuantLinear}"
    rules.write_text(
        (RULES_DIR / "moe.yaml").read_text().replace(old, old[:-1] + ", kwargs: {weights: gguf}}")
    )
    with torch.inference_mode():
        expected = load(gguf, device="cpu")(ids).logits
        for model in (load(gguf, device="cuda", gpu_experts=3), load(gguf, device="cuda", rules=rules)):
            got = model(ids).logits.float().cpu()
            assert (got - expected).abs().max().item() <= REL * expected.abs().max().item()


def test_quant_linear_on_gpu_matches_cpu_dequant(tiny_gguf):
    from ktx.core.ops.linear import QuantLinear

    gguf = tiny_gguf("qwen3moe")
    cpu = load(gguf, device="cpu")
    gpu = load(gguf, device="cuda")
    a = dict(cpu.named_modules())["model.layers.0.self_attn.q_proj"]
    b = dict(gpu.named_modules())["model.layers.0.self_attn.q_proj"]
    assert isinstance(b, QuantLinear) and b.weight.dtype == torch.bfloat16
    # the GPU's bf16 weights are the CPU's float32 dequantization rounded once
    assert torch.equal(b.weight.cpu(), a.source.dequantize(torch.float32).bfloat16())


def test_stream_experts_match_the_cpu_layer():
    import numpy as np

    from ktx.backends.cuda.host_moe import StreamExperts, check_all
    from ktx.core.convert.synth_blocks import random_blocks
    from ktx.core.cpu_moe import CpuMoE, ExpertTensor
    from ktx.core.gguf import GGMLType

    e, h, i = 8, 256, 512
    rng = np.random.default_rng(0)
    t = GGMLType.Q8_0

    def tensor(rows, cols):
        data = random_blocks(t, e * rows * cols // 32, rng).reshape(-1)
        return ExpertTensor(data, int(t), e, rows, cols)

    moe = CpuMoE(tensor(i, h), tensor(i, h), tensor(h, i), threads=2)
    stream = StreamExperts(moe, torch.device("cuda"))
    for n in (1, 5, 1):
        x = torch.randn(n, h) * 1e-3
        ids = torch.stack([torch.randperm(e)[:2] for _ in range(n)])
        w = torch.rand(n, 2)
        stream.submit(x.cuda(), ids.cuda(), w.cuda())
        got = stream.sync()
        check_all()
        assert torch.equal(got.cpu(), moe(x, ids, w))


@pytest.mark.parametrize("name", ["gemma3", "deepseek-v3"])
def test_a_prefill_step_does_not_wait_for_the_gpu(name, tiny_gguf):
    """Between the step's start and its logits nothing reads the GPU back (torch's sync debug
    mode warns on each implicit wait): positions and slots go up once per step, pinned."""
    import warnings

    from ktx.core.runtime import SequenceKV, make_pool
    from ktx.core.runtime.context import ForwardBatch, Segment, forward_batch
    from ktx.core.runtime.forward import layers_forward

    model = load(tiny_gguf(name), device="cuda")
    pool = make_pool(model, 256)
    seq = SequenceKV()
    ids = torch.tensor(random_ids(500, 40))
    for start, n in ((0, 24), (24, 16)):  # the second chunk reads the first's cache
        pool.reserve(seq, start + n)
        batch = ForwardBatch(pool, [Segment(seq, start, n)])
        chunk = ids[start : start + n].pin_memory().cuda(non_blocking=True)
        torch.cuda.synchronize()
        with torch.inference_mode(), forward_batch(batch), warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                logits = layers_forward(model, chunk, batch.positions)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        seq.length = start + n
        torch.cuda.synchronize()
        assert logits.shape[0] == n
        syncs = [str(w.message) for w in seen if "synchroniz" in str(w.message)]
        assert not syncs, syncs


def test_chat_turns_replay_one_graph_and_mla_weights_stay_bf16(tiny_gguf):
    from ktx.core.ops.mla import MLAAttention

    gpu = load(tiny_gguf("deepseek-v3", "q8_0"), device="cuda")
    mla = [m for m in gpu.modules() if isinstance(m, MLAAttention)]
    assert mla and all(m.w_k.dtype == m.w_v.dtype == torch.bfloat16 for m in mla)
    runners, answers = [], []
    for seed in (1, 2, 1):
        prompt = random_ids(500, 20, seed=seed)
        answers.append(
            prefill_and_generate(gpu, gpu.tokenizer, prompt, 8, ignore_eos=True, use_cuda_graph=True)
        )
        runners.append(gpu.__dict__["_ktx_generation_pool"].__dict__["_ktx_graph_runner"])
    assert runners[0] is runners[1] is runners[2]  # captured once, replayed by every turn
    assert answers[0].tokens == answers[2].tokens  # the same prompt again: the same answer
