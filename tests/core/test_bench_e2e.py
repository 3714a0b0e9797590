"""`ktx profile` and `ktx bench e2e` on a tiny MoE model (CPU): what they record is consistent
with what the model did."""

from __future__ import annotations

import json

import pytest

from ktx.core.cli.main import main


@pytest.fixture(scope="module")
def tiny_moe(tiny_gguf):
    return tiny_gguf("qwen3moe")


def test_profile_counts_every_routing_decision(tiny_moe, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello world, this is a test\n\ndef f(x):\\n    return x\n")
    out = tmp_path / "profile.json"
    assert (
        main(
            ["profile", "--gguf", str(tiny_moe), "--device", "cpu", "--prompts", str(prompts), "-o", str(out)]
        )
        == 0
    )
    record = json.loads(out.read_text())
    assert record["prompts"] == 2  # the blank line is not a prompt
    k = record["experts_per_token"]
    assert record["layers"]  # every MoE layer, each expert's count
    for counts in record["layers"].values():
        assert sum(counts) == record["tokens"] * k  # each token picks k experts in every layer
    assert "of its experts; the busiest expert got" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    assert main(["profile", "--gguf", str(tiny_moe), "--prompts", str(empty), "-o", str(out)]) == 1


def test_bench_e2e_reports_speed_memory_and_the_step_split(tiny_moe, capsys):
    argv = ["bench", "e2e", "--gguf", str(tiny_moe), "--device", "cpu", "--prompt", "8,30", "--gen", "4"]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["device"] == "cpu" and report["dram_read_gb_s"] > 0
    assert report["active_expert_mb_per_token"] > 0 and report["decode_floor_tok_s"] > 0
    assert [r["prompt_tokens"] for r in report["rows"]] == [8, 30]
    for row in report["rows"]:
        assert row["prefill_tok_s"] > 0 and row["decode_tok_s"] > 0 and row["ttft_s"] > 0
        assert row["cpu_experts_ms"] > 0 and row["rest_ms"] > 0  # both parts of a step were timed
        assert row["step_ms"] == pytest.approx(1e3 / row["decode_tok_s"])
        assert 0 < row["routing"]["min_experts_used"] <= 1 and row["routing"]["max_load_vs_even"] >= 1
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "prefill/s" in table and "DRAM read" in table


def test_bench_e2e_does_not_time_the_first_decode_step(tiny_moe, monkeypatch):
    """The first step of a decode pass pays one-off costs (Triton's JIT, CUDA-graph capture); a
    clock that jumps 1000 s in each pass's first step shows whether it was timed."""
    import time

    from ktx.core.bench import e2e
    from ktx.core.loader import load

    jump = [0.0]
    real_step = e2e.decode_step

    def slow_first_step(model, pool, cuda_graph, **kwargs):
        step, calls = real_step(model, pool, cuda_graph, **kwargs), []

        def run(segments, tokens):
            if not calls:
                jump[0] += 1000.0
            calls.append(1)
            return step(segments, tokens)

        return run

    class Clock:
        @staticmethod
        def perf_counter():
            return time.perf_counter() + jump[0]

    monkeypatch.setattr(e2e, "decode_step", slow_first_step)
    monkeypatch.setattr(e2e, "time", Clock)
    model = load(tiny_moe, device="cpu")
    row = e2e.measure(model, 8, e2e.E2EConfig([8], gen=3))
    assert row["step_ms"] < 1e5 and row["rest_ms"] < 1e5  # a timed first step would add 333,333 ms
    assert jump[0] == 2000.0  # the two passes each ran their untimed first step
