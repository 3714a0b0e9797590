"""bench/device_check.sh, the device machine's one-call check, run here in its CPU half with the
work shrunk: the files it brings back parse, every part is in the summary, and a kernel path this
CPU lacks (AMX here, AVX-512 on an AVX2 machine) is recorded as skipped rather than failing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ktx.core import cpu

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "device_check.sh"
ISAS = ("amx", "avx512", "avx2")
# a few seconds each: a tiny layer, two batch sizes, a tiny synthetic model for e2e on the CPU
SHRUNK = {
    "AMX_TESTS": "tests/core/test_cpu.py",
    "MOE_PRESETS": "v2-lite",
    "MOE_ISAS": " ".join(ISAS),
    "MOE_TOKENS": "1,4",
    "MOE_ARGS": "--probe-mib 16 --layers 2 --experts 8 --repeats 1",
    "E2E_DEVICE": "cpu",
    "E2E_MODELS": "tiny",
    "SYNTH_ARGS": "--arch qwen3moe",
    "E2E_VARIANTS": "eager",
    "E2E_PROMPTS": "16",
    "E2E_GEN": "4",
    "THREADS": "2",
}
# synth-tiny runs in the background: its row lands wherever it finishes
PARTS = ["machine", "wheels", "build", "doctor", "gpu", "cuda-tests", "synth-tiny", "amx-tests", "e2e-tiny"]
PARTS += [f"moe-v2-lite-{isa}" for isa in ISAS]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("timeout") is None, reason="needs coreutils' timeout"),
]


def run_check(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "SYNTH_DIR": str(tmp_path), **env}
    env.pop("KTX_ISA", None)
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--cpu-only", "--skip-install"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (out / "summary.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads((out / "summary.json").read_text())


def test_cpu_half(tmp_path):
    proc, summary = run_check(tmp_path, **SHRUNK)
    assert proc.returncode == 0, proc.stdout[-3000:]
    out = tmp_path / "out"
    # flat, few files: what the device tool brings back (at most 8, no deeper than 2 folders)
    assert sorted(p.name for p in out.iterdir()) == [
        "doctor.json",
        "e2e.json",
        "log.txt",
        "moe.json",
        "summary.json",
    ]

    names = [p["name"] for p in summary["parts"]]
    assert sorted(names) == sorted(PARTS)  # every part reported once
    assert [n for n in names if n != "synth-tiny"] == [n for n in PARTS if n != "synth-tiny"]  # in order
    status = {p["name"]: p for p in summary["parts"]}
    assert summary["options"]["cpu_only"] and summary["options"]["skip_install"]
    assert summary["counts"]["fail"] == summary["counts"]["timeout"] == 0
    for name in ("wheels", "build"):
        assert status[name]["status"] == "skipped" and status[name]["note"] == "--skip-install"
    for name in ("gpu", "cuda-tests"):
        assert status[name]["status"] == "skipped" and status[name]["note"] == "--cpu-only"
    for name in ("machine", "doctor", "amx-tests", "synth-tiny", "e2e-tiny"):
        assert status[name]["status"] == "pass", status[name]
    log = (out / "log.txt").read_text()
    assert "==== summary" in log and "==== amx-tests: pass" in log
    for name in PARTS:  # the summary table at the end names every part
        assert name in proc.stdout.split("==== summary")[1]

    doctor = json.loads((out / "doctor.json").read_text())
    assert {"cpu", "kernels", "threads", "memory", "versions", "backends", "problems"} <= set(doctor)
    assert doctor["kernels"]["supported"] == cpu.supported_isas()

    e2e = json.loads((out / "e2e.json").read_text())
    assert list(e2e) == ["tiny"]
    assert e2e["tiny"]["commit"] == summary["commit"]
    assert [r["prompt_tokens"] for r in e2e["tiny"]["rows"]] == [16]
    assert e2e["tiny"]["rows"][0]["decode_tok_s"] > 0

    moe = json.loads((out / "moe.json").read_text())
    for isa in ISAS:
        part = status[f"moe-v2-lite-{isa}"]
        if isa not in cpu.supported_isas():
            assert part["status"] == "skipped" and f"no {isa}" in part["note"]
            assert f"v2-lite-{isa}" not in moe
            continue
        assert part["status"] == "pass", part
        rows = moe[f"v2-lite-{isa}"]
        assert [r["tokens"] for r in rows] == [1, 4]
        for r in rows:
            assert r["isa"] == isa and r["threads"] == 2
            for key in ("ms_per_layer", "tokens_per_s", "weights_gb_s", "dram_read_gb_s", "gflops"):
                assert isinstance(r[key], float) and r[key] > 0, (isa, key)


def test_deadline_and_skip(tmp_path):
    """A part that would start with under 10 s left is skipped, not started; SKIP names parts."""
    proc, summary = run_check(tmp_path, **SHRUNK, DEADLINE="12", SKIP="doctor synth-*")
    assert proc.returncode == 0, proc.stdout[-3000:]
    status = {p["name"]: p for p in summary["parts"]}
    assert status["doctor"]["note"] == status["synth-tiny"]["note"] == "SKIP=doctor synth-*"
    assert status["machine"]["note"] == status["amx-tests"]["note"] == "out of time: DEADLINE=12s"
    assert status["e2e-tiny"]["note"].startswith("no ")  # no model: its synth was skipped
    assert all(p["status"] == "skipped" for p in summary["parts"])
    assert not (tmp_path / "out" / "moe.json").exists()
