"""`ktx bench serve` against the live test server: its counts add up."""

from __future__ import annotations

import json

from ktx.core.cli.main import main


def test_bench_serve_counts_every_token(live, capsys):
    argv = [
        "bench",
        "serve",
        "--url",
        live.url,
        "--concurrency",
        "1,3",
        "--requests",
        "3",
        "--max-tokens",
        "4",
    ]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == live.engine.model_name and report["dram_read_gb_s"] > 0
    for row, c in zip(report["rows"], (1, 3), strict=True):
        assert row["concurrency"] == c and row["requests"] == 3 and row["errors"] == 0
        assert row["output_tokens"] == 3 * 4  # greedy, max 4 each; the demo model never stops that early
        assert row["output_tok_s"] > 0 and 0 < row["ttft_p50_s"] <= row["ttft_p99_s"]
        assert 0 < row["itl_p50_s"] <= row["itl_p99_s"]
    live.wait_idle()
    assert live.engine.stats()["kv_blocks_in_requests"] == 0
