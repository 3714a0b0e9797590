"""Bad models give one clear error each: unknown architecture, a missing tensor, bad rules."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_models import make_tiny

from ktx.core import gguf
from ktx.core.cli.main import main
from ktx.core.cli.output import plain
from ktx.core.convert.hf_to_gguf import convert_hf
from ktx.core.inject import RuleError
from ktx.core.loader import load
from ktx.core.models import KNOWN_ARCHITECTURES, ModelError


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    d = tmp_path_factory.mktemp("llama")
    make_tiny("llama", d / "hf")
    convert_hf(d / "hf", d / "m.gguf", "f32", progress=False)
    return d / "m.gguf"


def _copy_without(src, dst, drop: str):
    with gguf.open(src) as f:
        meta = {k: plain(f.metadata[k]) for k in f.metadata.keys() if k != "general.architecture"}  # noqa: SIM118
        tensors = {t.name: t.dequantize().numpy() for t in f if t.name != drop}
        arch = f.metadata["general.architecture"]
    gguf.write_gguf(dst, arch, meta, tensors)


def test_unknown_architecture_lists_known_ones(tmp_path):
    path = tmp_path / "x.gguf"
    gguf.write_gguf(path, "gpt-neox", {}, {"token_embd.weight": np.zeros((4, 32), np.float32)})
    with pytest.raises(ModelError) as e:
        load(path)
    assert "gpt-neox" in str(e.value)
    assert all(a in str(e.value) for a in KNOWN_ARCHITECTURES)


def test_missing_tensor_is_named(tiny_llama, tmp_path):
    broken = tmp_path / "broken.gguf"
    _copy_without(tiny_llama, broken, "blk.1.attn_v.weight")
    with pytest.raises(ModelError, match=r"blk\.1\.attn_v\.weight"):
        load(broken)


@pytest.mark.parametrize(
    "rule, field",
    [
        ('- match: {name: "(unclosed"}\n  replace: {class: default}\n', "match.name"),
        ("- match: {name: x}\n  replace: {class: ktx.core.ops.nope.Nope}\n", "replace.class"),
        ("- match: {name: x}\n  replace: {class: default, device: quantum:0}\n", "replace.device"),
    ],
)
def test_bad_rule_file_fails_before_loading(tiny_llama, tmp_path, rule, field):
    rules = tmp_path / "r.yaml"
    rules.write_text(rule)
    with pytest.raises(RuleError, match=rf"rule 0: field '{field}'"):
        load(tiny_llama, rules=rules)


def test_cli_reports_model_errors_in_one_line(tmp_path, capsys):
    path = tmp_path / "x.gguf"
    gguf.write_gguf(path, "gpt-neox", {}, {"token_embd.weight": np.zeros((4, 32), np.float32)})
    assert main(["generate", "--gguf", str(path), "--prompt", "hi"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ktx: error:") and "unknown architecture" in err and "Traceback" not in err


def test_rules_check_dry_run_lists_matches(tiny_llama, capsys):
    assert main(["rules", "check", "--gguf", str(tiny_llama), "--json"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    matched = {m for row in report["matched"] for m in row["modules"]}
    assert "model.layers.0.self_attn" in matched and "lm_head" in matched
    assert report["unmatched_with_weights"] == []


def test_chat_session_reads_multiline_resets_and_exits(tiny_llama, monkeypatch, capsys):
    import io

    script = 'hello there\n/reset\nfirst line \\\nsecond line\n"""\nblock one\nblock two\n"""\n/exit\n'
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    code = main(["chat", "--gguf", str(tiny_llama), "--max-new-tokens", "3", "--temperature", "0"])
    err = capsys.readouterr().err
    assert code == 0
    assert err.count("prompt tokens") == 3  # three answers, each followed by its figures
    assert "conversation cleared" in err and "decode" in err and "TTFT" in err


def test_chat_reports_a_too_long_conversation_and_goes_on(tiny_llama, monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("word " * 5000 + "\nhi\n"))
    assert main(["chat", "--gguf", str(tiny_llama), "--max-new-tokens", "2"]) == 0
    err = capsys.readouterr().err
    assert "more than the model's context" in err and err.count("prompt tokens") == 1


def test_ktx_core_load_returns_a_callable_model(tiny_llama):
    import torch

    import ktx.core

    model = ktx.core.load(tiny_llama)
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, model.config.vocab_size)
    assert (
        model.tokenizer.decode(model.tokenizer.encode("hello world", add_special_tokens=False))
        == "hello world"
    )


def test_unusable_device_is_refused_before_loading(tiny_llama):
    import torch

    with pytest.raises(ModelError, match="unknown; use auto, cpu, cuda"):
        load(tiny_llama, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="'cuda' is not usable here"):
            load(tiny_llama, device="cuda")


def test_gpu_experts_need_an_accelerator(tiny_llama):
    with pytest.raises(ModelError, match="--gpu-experts keeps experts on an accelerator"):
        load(tiny_llama, device="cpu", gpu_experts=2)
