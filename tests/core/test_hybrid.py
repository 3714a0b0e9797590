"""The hybrid placement's CPU-side logic: experts split between the CPU kernels and a second
device, the routing profile that picks them, and the memory plan made before loading.

The "GPU" experts run here on the CPU (`gpu_device: cpu`, float32): the split itself (slots
marked -1 for the CPU kernels, a dense weighted sum for the kept experts) is what is tested,
against the same model with every expert on the CPU kernels. With KTX_EXACT=1 both keep
float32 activations, so only summation order differs (TOL as in test_models.py).
"""

from __future__ import annotations

import json

import pytest
import torch
from hf_oracle import random_ids

from ktx.core.inject.inject import inject
from ktx.core.inject.rules import load_rules
from ktx.core.loader import build_meta_model, load
from ktx.core.memory_plan import GIB, MLA_ATTENTION_WORKSPACE, plan_memory
from ktx.core.models import ModelError
from ktx.core.models.registry import RULES_DIR
from ktx.core.ops.moe import Experts, choose_gpu_experts

TOL = 1e-4
EXPERTS_RULE = "replace: {class: ktx.core.ops.moe.Experts, device: cpu}"


pytestmark = pytest.mark.usefixtures("exact_kernels")


def _rules_with_experts_kwargs(tmp_path, kwargs: str):
    text = (RULES_DIR / "moe.yaml").read_text()
    assert EXPERTS_RULE in text
    path = tmp_path / "split.yaml"
    path.write_text(text.replace(EXPERTS_RULE, EXPERTS_RULE[:-1] + f", kwargs: {{{kwargs}}}}}"))
    return path


@pytest.mark.parametrize("name", ["qwen3moe", "deepseek-v3", "gpt-oss"])  # gpt-oss: biases, its SwiGLU
def test_experts_kept_on_another_device_give_the_same_logits(name, tiny_gguf, tmp_path):
    gguf = tiny_gguf(name)
    split = load(gguf, rules=_rules_with_experts_kwargs(tmp_path, "gpu_experts: 3, gpu_device: cpu"))
    kept = [m for m in split.modules() if isinstance(m, Experts)]
    assert kept and all(m.gpu_ids.tolist() == [0, 1, 2] for m in kept)  # no profile: the first 3
    ids = torch.tensor([random_ids(500, 20)])
    with torch.inference_mode():
        expected = load(gguf)(ids).logits
        got = split(ids).logits
        # and the split really routes: some tokens of each layer chose a kept expert
        layer = kept[0]
        x = torch.randn(20, layer.gpu_w[0].shape[-1])
        r_ids = torch.randint(0, len(layer.gpu_slot), (20, 2))
        cpu_ids, gpu_part = layer._gpu_part(x, r_ids, torch.ones(20, 2))
    assert (cpu_ids == -1).any() and (cpu_ids >= 0).any() and gpu_part.abs().sum() > 0
    assert (got - expected).abs().max().item() <= TOL


def test_routing_profile_picks_the_busiest_experts(tmp_path):
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"layers": {"blk.1": [5, 0, 9, 9, 1, 7, 0, 2]}}))
    assert choose_gpu_experts("blk.1", 8, 3, str(profile)) == [2, 3, 5]
    assert choose_gpu_experts("blk.2", 8, 2, str(profile)) == [0, 1]  # layer not profiled: the first
    assert choose_gpu_experts("blk.1", 8, 20, None) == list(range(8))
    with pytest.raises(ModelError, match="has 8 experts, the model 16"):
        choose_gpu_experts("blk.1", 16, 2, str(profile))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot read it"):
        choose_gpu_experts("blk.1", 8, 2, str(tmp_path / "bad.json"))


def _plan(gguf, device: str, rules=None, cache_tokens=1000):
    import ktx.core.gguf as g

    gf = g.open(gguf)
    arch, config, model = build_meta_model(gf)
    rule_list = load_rules(rules or arch.rules_path)
    dry = inject(model, rule_list, gf, config, arch.gguf_name, device, dry_run=True)
    kwargs = {p: rule_list[i].kwargs for i, paths in dry.matched.items() for p in paths}
    return gf, config, plan_memory(gf, arch.gguf_name, config, dry.devices, kwargs, cache_tokens)


def test_memory_plan_puts_experts_in_ram_and_the_rest_on_the_device(tiny_gguf, tmp_path):
    gguf = tiny_gguf("deepseek-v3")
    # a dry run: "cuda" is only a name here, nothing is allocated
    gf, config, plan = _plan(gguf, "cuda")
    tensors = gf.tensors.values()
    experts = sum(t.nbytes for t in tensors if "_exps." in t.name)
    others = sum(t.n_elements * (2 if len(t.shape) > 1 else 4) for t in tensors if "_exps." not in t.name)
    kv = config.num_hidden_layers * 1000 * (config.kv_lora_rank + config.qk_rope_head_dim) * 2
    per_device = plan.per_device()
    assert per_device["cpu"] == experts
    assert per_device["cuda"] == others + kv + MLA_ATTENTION_WORKSPACE + GIB
    assert plan.parts[("cuda", "KV cache")] == kv
    assert plan.parts[("cuda", "MLA prefill")] == MLA_ATTENTION_WORKSPACE  # once per device
    assert any(line.startswith("cuda VRAM") for line in plan.lines())
    plan.check({"cuda": per_device["cuda"], "cpu": per_device["cpu"]})  # exactly fits
    with pytest.raises(ModelError, match=r"cuda needs .* GiB free: lower --gpu-experts"):
        plan.check({"cuda": per_device["cuda"] - 1})

    # three experts per layer on the GPU move 3/E of the experts' values there, in bf16
    rules = _rules_with_experts_kwargs(tmp_path, "gpu_experts: 3, gpu_device: cuda")
    _, _, split = _plan(gguf, "cuda", rules)
    n_experts = config.n_routed_experts
    moved = sum(t.n_elements * 2 * 3 / n_experts for t in tensors if "_exps." in t.name)
    assert split.parts[("cuda", "GPU experts")] == pytest.approx(moved, abs=8)

    # all on the CPU: the file's bytes (mmap) plus a float32 KV cache
    _, _, cpu_plan = _plan(gguf, "cpu")
    assert cpu_plan.per_device() == {"cpu": sum(t.nbytes for t in tensors) + 2 * kv}


def test_memory_plan_counts_blocks_and_their_per_call_expansion(tiny_gguf, tmp_path):
    """Experts placed on the accelerator and `weights: gguf` linears are held as GGUF blocks;
    the largest matrix one call expands is counted once per device."""
    gguf = tiny_gguf("qwen3moe")
    text = (RULES_DIR / "moe.yaml").read_text()
    old = "replace: {class: ktx.core.ops.linear.QuantLinear}"
    assert EXPERTS_RULE in text and old in text
    rules = tmp_path / "blocks.yaml"
    rules.write_text(
        text.replace(EXPERTS_RULE, EXPERTS_RULE.replace("device: cpu", "device: cuda")).replace(
            old, old[:-1] + ", kwargs: {weights: gguf}}"
        )
    )
    gf, _, plan = _plan(gguf, "cuda", rules)
    tensors = list(gf.tensors.values())
    experts = [t for t in tensors if "_exps." in t.name]
    assert "cpu" not in plan.per_device()
    assert plan.parts[("cuda", "experts")] == sum(t.nbytes for t in experts)
    linears = [
        t for t in tensors if "_exps." not in t.name and len(t.shape) > 1 and "token_embd" not in t.name
    ]
    one_expert = max(3 * 4 * t.n_elements // t.shape[0] for t in experts)
    largest_linear = max(2 * t.n_elements for t in linears)
    assert plan.parts[("cuda", "expanded per call")] == max(one_expert, largest_linear)


def test_load_reports_the_plan_before_weights_and_refuses_what_does_not_fit(tiny_gguf, monkeypatch):
    seen = []
    model = load(tiny_gguf("qwen3moe"), on_plan=seen.append)
    assert seen == [model.memory_plan]
    import ktx.core.memory_plan as mp

    monkeypatch.setattr(mp, "free_memory", lambda devices: {"cpu": 1000})
    with pytest.raises(ModelError, match=r"does not fit: cpu needs"):
        load(tiny_gguf("qwen3moe"))
    load(tiny_gguf("qwen3moe"), memory_check=False)
