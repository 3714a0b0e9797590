"""The `ktx` command line: `inspect` against gguf-py's GGUFReader (the oracle) and ktx's own reader,
`doctor` against ktx.core.cpu, clean one-line errors, help for every command; in-process through
`main()` and once per behaviour as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from importlib.metadata import entry_points

import gguf
import numpy as np
import pytest

import ktx.core.gguf as kg
from ktx.core import __version__, cpu
from ktx.core.cli.inspect import inspect_report
from ktx.core.cli.main import main
from ktx.core.gguf import GGMLType, ValueType
from ktx.core.gguf.writer import Typed


def ktx(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`ktx ARGS` as a separate process, with KTX_* taken from `env` only."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KTX_")} | env
    return subprocess.run(
        [sys.executable, "-m", "ktx.core.cli.main", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(code: int, out: str, err: str, *fragments: str) -> None:
    assert code != 0
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ktx: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


# --- inspect: the demo model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def oracle(demo_gguf):
    return gguf.GGUFReader(demo_gguf)


@pytest.fixture(scope="module")
def report(demo_gguf):
    """`ktx inspect DEMO --json`, run as a process: the JSON a script would read."""
    r = ktx("inspect", str(demo_gguf), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_inspect_json_agrees_with_gguf_py(report, oracle, demo_gguf):
    assert report["files"] == [str(demo_gguf)]
    assert report["file_bytes"] == demo_gguf.stat().st_size
    assert report["architecture"] == oracle.fields["general.architecture"].contents() == "gemma3"
    assert report["name"] == oracle.fields["general.name"].contents()
    assert report["version"] == oracle.fields["GGUF.version"].contents() == 3
    assert report["alignment"] == oracle.alignment
    assert report["tensor_count"] == len(oracle.tensors) == 236
    assert report["parameter_count"] == sum(int(t.n_elements) for t in oracle.tensors)
    assert report["tensor_bytes"] == sum(int(t.n_bytes) for t in oracle.tensors)

    types = {row["type"]: row for row in report["types"]}
    assert {name: row["count"] for name, row in types.items()} == Counter(
        t.tensor_type.name for t in oracle.tensors
    )
    for name, row in types.items():
        mine = [t for t in oracle.tensors if t.tensor_type.name == name]
        assert row["elements"] == sum(int(t.n_elements) for t in mine)
        assert row["bytes"] == sum(int(t.n_bytes) for t in mine)
    assert sum(row["share"] for row in report["types"]) == pytest.approx(1.0)
    assert [row["bytes"] for row in report["types"]] == sorted(
        (row["bytes"] for row in report["types"]), reverse=True
    )

    assert len(report["tensors"]) == len(oracle.tensors)
    for row, t in zip(report["tensors"], oracle.tensors, strict=True):
        assert row["name"] == t.name
        assert row["type"] == t.tensor_type.name
        assert row["shape"] == [int(d) for d in reversed(t.shape)]  # gguf-py lists ne, fastest first
        assert (row["elements"], row["bytes"], row["offset"]) == (t.n_elements, t.n_bytes, t.data_offset)
        assert row["file"] == 0


def test_inspect_tokenizer_agrees_with_gguf_py(report, oracle):
    tok = report["tokenizer"]
    assert tok["vocab_size"] == len(oracle.fields["tokenizer.ggml.tokens"].data) == 262144
    assert tok["model"] == oracle.fields["tokenizer.ggml.model"].contents() == "llama"
    assert tok["kind"].startswith("SentencePiece")
    for name, key in [
        ("bos", "tokenizer.ggml.bos_token_id"),
        ("eos", "tokenizer.ggml.eos_token_id"),
        ("unk", "tokenizer.ggml.unknown_token_id"),
        ("pad", "tokenizer.ggml.padding_token_id"),
        ("add_bos", "tokenizer.ggml.add_bos_token"),
        ("add_eos", "tokenizer.ggml.add_eos_token"),
    ]:
        assert tok[name] == oracle.fields[key].contents(), name
    assert tok["chat_template"]["present"] == ("tokenizer.chat_template" in oracle.fields)
    assert tok["merges"] == (
        len(oracle.fields["tokenizer.ggml.merges"].data) if "tokenizer.ggml.merges" in oracle.fields else None
    )


def test_inspect_metadata_agrees_with_gguf_py(report, oracle):
    fields = {k: f for k, f in oracle.fields.items() if not k.startswith("GGUF.")}
    hyper = report["hyperparameters"]
    assert list(hyper) == [k for k in fields if k.startswith("gemma3.")]
    for key, value in hyper.items():
        field = fields[key]
        if field.types[0] == gguf.GGUFValueType.FLOAT32:  # reported as the shortest float32 decimal
            assert np.float32(value) == np.float32(field.contents()), key
        else:
            assert value == field.contents(), key
    assert hyper["gemma3.attention.layer_norm_rms_epsilon"] == 1e-06
    # Everything else is somewhere in the report, and the big arrays are summarised, not dumped.
    shown = {"general.architecture", "general.name", *hyper, *report["metadata"]}
    tokenizer_keys = {k for k in fields if k.startswith("tokenizer.")} - set(report["metadata"])
    assert set(fields) == shown | tokenizer_keys
    assert report["metadata"]["tokenizer.ggml.scores"] == {"type": "array[FLOAT32]", "length": 262144}
    assert report["metadata"]["tokenizer.ggml.token_type"] == {"type": "array[INT32]", "length": 262144}
    assert report["metadata"]["general.tags"] == [str(x) for x in fields["general.tags"].contents()]


def test_inspect_in_process_matches_the_library_and_the_process(capsys, demo_gguf, report):
    code, out, err = run_main(capsys, "inspect", str(demo_gguf), "--json", "--no-tensors")
    assert code == 0 and err == ""
    quick = json.loads(out)
    assert "tensors" not in quick
    assert quick == {k: v for k, v in report.items() if k != "tensors"}
    assert inspect_report(demo_gguf) == report


def test_inspect_tables(capsys, demo_gguf):
    code, out, err = run_main(capsys, "inspect", str(demo_gguf))
    assert code == 0 and err == ""
    for fragment in ("gemma3", "Gemma 3 270m", "262,144 tokens", "SentencePiece", "Q4_K", "Q6_K", "1e-06"):
        assert fragment in out
    # Piped output is not cut to 80 columns: every tensor row is there in full.
    with kg.open(demo_gguf) as f:
        t = f.tensors["token_embd.weight"]
        assert f"{t.offset:,}" in out and "262144 × 640" in out
        assert all(name in out for name in f.tensors)
    code, out, _ = run_main(capsys, "inspect", str(demo_gguf), "--no-tensors")
    assert code == 0 and "blk.0.attn_q.weight" not in out and "Q4_K" in out


def test_inspect_is_fast_and_never_imports_torch(demo_gguf):
    code = (
        "import sys, time\n"
        "from ktx.core.cli.main import main\n"
        "t = time.perf_counter()\n"
        f"assert main(['inspect', {str(demo_gguf)!r}, '--json']) == 0\n"
        "print(time.perf_counter() - t, 'torch' in sys.modules, file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    seconds, torch_loaded = r.stderr.split()
    assert torch_loaded == "False"  # importing torch alone takes ~2 s
    assert float(seconds) < 1.0


def test_inspect_without_file_uses_the_demo_model(capsys, demo_gguf):
    code, out, _ = run_main(capsys, "inspect", "--json", "--no-tensors")
    assert code == 0
    assert json.loads(out)["files"] == [str(demo_gguf)]


# --- inspect: files written here --------------------------------------------------------------


def write_model(path, **kw):
    rng = np.random.default_rng(0)
    metadata = {
        "qwen2.block_count": 2,
        "qwen2.rope.freq_base": 1000000.0,
        "qwen2.nan": float("nan"),
        "general.name": "[bold red]not markup[/bold red]",
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": [f"t{i}" for i in range(40)],
        "tokenizer.ggml.merges": ["t 1", "t 2", "t1 0"],
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}",
        "tokenizer.chat_template.tool_use": "{{ tools }}",
        "x.short": [1.5, 2.5],
        "x.long": Typed(list(range(17)), ValueType.ARRAY, ValueType.INT64),
        "x.nested": [[1, 2]] * 20,
    }
    tensors = {
        "token_embd.weight": (rng.standard_normal((40, 256)).astype(np.float32), GGMLType.Q4_K),
        "blk.0.ffn_down.weight": (rng.standard_normal((8, 64)).astype(np.float32), GGMLType.Q8_0),
        "output_norm.weight": rng.standard_normal(256).astype(np.float32),
    }
    return kg.write_gguf(path, "qwen2", metadata, tensors, **kw)


def test_inspect_reports_every_tokenizer_and_metadata_shape(tmp_path, capsys):
    (path,) = write_model(tmp_path / "m.gguf")
    code, out, err = run_main(capsys, "inspect", str(path), "--json")
    assert code == 0 and err == ""
    r = json.loads(out)  # NaN included: the output is strict JSON
    assert r["architecture"] == "qwen2" and r["name"] == "[bold red]not markup[/bold red]"
    assert r["hyperparameters"]["qwen2.nan"] == "nan"
    assert r["hyperparameters"]["qwen2.rope.freq_base"] == 1000000.0
    tok = r["tokenizer"]
    assert (tok["model"], tok["vocab_size"], tok["merges"]) == ("gpt2", 40, 3)
    assert tok["kind"].startswith("byte-level BPE")
    assert (tok["bos"], tok["eos"], tok["unk"], tok["add_bos"], tok["add_eos"]) == (1, 2, None, False, None)
    assert tok["chat_template"] == {"present": True, "length": 50, "named": {"tool_use": 11}}
    md = r["metadata"]
    assert md["x.short"] == [1.5, 2.5]
    assert md["x.long"] == {"type": "array[INT64]", "length": 17}
    assert md["x.nested"] == {"type": "array[array[INT32]]", "length": 20}
    assert not any(k.startswith("tokenizer.chat_template") for k in md)
    assert {row["type"]: row["count"] for row in r["types"]} == {"Q4_K": 1, "Q8_0": 1, "F32": 1}
    assert r["parameter_count"] == 40 * 256 + 8 * 64 + 256

    code, out, _ = run_main(capsys, "inspect", str(path))
    assert code == 0
    assert "[bold red]not markup[/bold red]" in out  # metadata is text, not rich markup
    assert "present, 50 characters; named: tool_use (11 characters)" in out


def test_inspect_split_set_and_directory(tmp_path, capsys):
    (single,) = write_model(tmp_path / "one" / "m.gguf")
    shards = write_model(tmp_path / "split" / "m.gguf", split_max_tensors=1)
    assert len(shards) == 3
    one = inspect_report(single)
    for entry in (shards[0], shards[2], tmp_path / "split"):
        code, out, _ = run_main(capsys, "inspect", str(entry), "--json")
        assert code == 0
        r = json.loads(out)
        assert r["files"] == [str(p) for p in shards]
        assert r["file_bytes"] == sum(p.stat().st_size for p in shards)
        assert [t["file"] for t in r["tensors"]] == [0, 1, 2]
        assert [t["name"] for t in r["tensors"]] == [t["name"] for t in one["tensors"]]
        assert r["types"] == one["types"] and r["parameter_count"] == one["parameter_count"]
    code, out, _ = run_main(capsys, "inspect", str(shards[1]))
    assert code == 0 and "files" in out and str(shards[2]) in out


# --- errors -----------------------------------------------------------------------------------


def test_missing_file_is_one_clean_line(tmp_path, capsys):
    missing = tmp_path / "nope.gguf"
    assert_clean_error(*run_main(capsys, "inspect", str(missing)), str(missing), "no such file")
    r = ktx("inspect", str(missing))
    assert_clean_error(r.returncode, r.stdout, r.stderr, str(missing))


def test_garbage_file_is_one_clean_line(tmp_path, capsys):
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(np.random.default_rng(1).bytes(4096))
    assert_clean_error(*run_main(capsys, "inspect", str(garbage)), str(garbage), "not a GGUF file")
    r = ktx("inspect", str(garbage), "--json")
    assert_clean_error(r.returncode, r.stdout, r.stderr, str(garbage), "at byte 0")


def test_truncated_file_is_one_clean_line(tmp_path, capsys, demo_gguf):
    truncated = tmp_path / "cut.gguf"
    with open(demo_gguf, "rb") as f:
        truncated.write_bytes(f.read(100_000))  # the header and part of the vocabulary
    assert_clean_error(*run_main(capsys, "inspect", str(truncated)), str(truncated))


def test_usage_errors_exit_2(capsys):
    code, out, err = run_main(capsys, "inspect", "--bogus")
    assert code == 2 and "unrecognized arguments: --bogus" in err and "Traceback" not in err
    code, out, _ = run_main(capsys)
    assert code == 2 and "doctor" in out and "inspect" in out


# --- doctor -----------------------------------------------------------------------------------


def test_doctor_json_reports_this_cpu(capsys):
    code, out, err = run_main(capsys, "doctor", "--json")
    assert code == 0 and err == ""
    r = json.loads(out)
    features = cpu.features()
    assert r["kernels"]["active"] == cpu.isa()
    assert r["kernels"]["supported"] == cpu.supported_isas()
    assert r["kernels"]["best"] == cpu.best_isa()
    assert r["cpu"]["vendor"] == features["vendor"] and r["cpu"]["brand"] == features["brand"]
    for key, on in r["cpu"]["features"].items():
        assert on == features[key], key
    assert {"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq"} <= set(r["cpu"]["features"])
    assert {"avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"} <= set(r["cpu"]["features"])
    assert r["cpu"]["os_enabled"] == {
        "avx": features["os_avx"],
        "avx512": features["os_avx512"],
        "amx": features["os_amx"],
    }
    assert r["cpu"]["physical_cores"] == cpu.physical_cores()
    assert r["threads"]["default"] == cpu.default_threads()
    assert r["memory"]["total"] == cpu.memory()["total"] > 0
    assert r["numa_nodes"] == cpu.numa_nodes()
    assert r["versions"]["ktx"] == __version__ and r["versions"]["torch"]
    assert r["backends"][0]["name"] == "cpu" and r["backends"][0]["available"]
    assert {"cuda", "rocm", "xpu", "ascend"} <= {b["name"] for b in r["backends"]}
    has_amx = features["amx_tile"] and features["amx_int8"] and features["amx_bf16"]
    assert (r["amx_selftest"] is None) == (not has_amx)
    assert r["problems"] == []


@pytest.mark.amx
def test_doctor_amx_selftest_passes(capsys):
    if "amx" not in cpu.supported_isas():
        pytest.skip("this CPU cannot run the amx kernels")
    code, out, _ = run_main(capsys, "doctor", "--json")
    assert code == 0 and json.loads(out)["amx_selftest"] is True


def test_doctor_tables(capsys):
    code, out, err = run_main(capsys, "doctor")
    assert code == 0 and err == ""
    for fragment in ("AVX-512", "AMX", "OS enabled", f"{cpu.isa()} (", "NUMA", "cuda", "ascend"):
        assert fragment in out


def test_ktx_isa_changes_the_reported_kernel_path():
    if "avx2" not in cpu.supported_isas():
        pytest.skip("this CPU cannot run the avx2 kernels")
    r = ktx("doctor", "--json", KTX_ISA="avx2")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["kernels"]["active"] == "avx2" and report["kernels"]["ktx_isa"] == "avx2"
    assert report["backends"][0]["detail"].startswith("avx2 kernels")
    if cpu.best_isa() != "avx2":
        r = ktx("doctor", KTX_ISA="avx2")
        assert f"avx2 (forced; best is {cpu.best_isa()})" in r.stdout


def test_bogus_ktx_isa_is_reported_not_raised():
    r = ktx("doctor", "--json", KTX_ISA="bogus")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    report = json.loads(r.stdout)
    assert report["kernels"]["active"] is None
    assert "unknown ISA 'bogus'" in report["kernels"]["error"]
    assert report["problems"] == [report["kernels"]["error"]]
    assert not report["backends"][0]["available"]
    r = ktx("doctor", KTX_ISA="bogus", KTX_THREADS="many")
    assert r.returncode == 1 and r.stderr == ""
    assert "unknown ISA 'bogus'" in r.stdout and "KTX_THREADS='many' is not a number" in r.stdout


# --- help, version, entry points --------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["doctor"], ["inspect"]])
def test_help(capsys, command):
    code, out, _ = run_main(capsys, *command, "--help")
    assert code == 0
    assert out.startswith(f"usage: ktx {' '.join(command)}".rstrip())
    assert "examples:" in out


def test_help_and_version_as_a_process():
    r = ktx("inspect", "--help")
    assert r.returncode == 0 and "--no-tensors" in r.stdout
    r = ktx("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"ktx {__version__}"


def test_console_script_points_at_main():
    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "ktx"]
    assert script.value == "ktx.core.cli.main:main"
    assert script.load() is main


def test_demo_model_can_be_an_assembled_copy(tmp_path, monkeypatch):
    """KTX_DEMO_GGUF (the container images carry the assembled file, not the chunks)."""
    from ktx.core.demo import demo_gguf

    copy = tmp_path / "demo.gguf"
    copy.write_bytes(b"GGUF")
    monkeypatch.setenv("KTX_DEMO_GGUF", str(copy))
    assert demo_gguf() == copy
    monkeypatch.setenv("KTX_DEMO_GGUF", str(tmp_path / "missing.gguf"))
    with pytest.raises(FileNotFoundError, match=r"KTX_DEMO_GGUF=.*missing\.gguf: no such file"):
        demo_gguf()


@pytest.mark.parametrize("command,default", [("serve", 8192), ("chat", 4096), ("generate", 4096)])
def test_help_states_the_cache_default_each_command_uses(command, default, capsys):
    assert main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps help lines
    assert f"KV-cache tokens the memory plan reserves (default {default})" in text


def test_status_lines_stay_whole_when_stderr_is_not_a_terminal(tiny_gguf, capsys):
    """A log file gets the memory plan and the load line as one line each (Rich cut them at 80)."""
    gguf_path = tiny_gguf("deepseek-v3")
    assert main(["generate", "--gguf", str(gguf_path), "--prompt", "Hi", "--max-new-tokens", "1"]) == 0
    err = capsys.readouterr().err.splitlines()
    plan = [line for line in err if "memory plan" in line]
    assert plan and all(line.endswith(")") for line in plan), plan  # "cpu RAM ... (parts)"
    assert any("loaded in" in line and line.rstrip().endswith(" s") for line in err), err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["generate", "--cpu-threads", "0"], "--cpu-threads: 0 must be at least 1"),
        (["generate", "--prompt-file", "/nonexistent/q.txt"], "/nonexistent/q.txt: no such file"),
        (["chat", "--prompt-file", "/nonexistent/q.txt"], "/nonexistent/q.txt: no such file"),
    ],
)
def test_bad_flags_are_usage_errors_that_name_the_problem(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_an_empty_prompt_is_refused_not_replaced(capsys):
    assert main(["generate", "--prompt", "  "]) == 1
    assert "the prompt is empty" in capsys.readouterr().err


def test_an_unusable_isa_is_refused_before_loading():
    # a process of its own: the kernels read KTX_ISA once, at their first use
    usable = set(cpu.supported_isas())
    missing = next((i for i in ("amx", "avx512", "avx2") if i not in usable), None)
    if missing is None:
        pytest.skip("this CPU runs every kernel path: no KTX_ISA to refuse")
    argv = [sys.executable, "-m", "ktx.core.cli.main", "generate", "--prompt", "Hi", "--max-new-tokens", "1"]
    proc = subprocess.run(
        argv, env={**os.environ, "KTX_ISA": missing}, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert missing in proc.stderr and "memory plan" not in proc.stderr


def _chat(monkeypatch, lines, argv=()):
    """ktx chat on the demo model (a base model), fed `lines` (an exception instance is raised
    by input() at its turn, as Ctrl-C or Ctrl-D would); -> (status, stdout, stderr)."""
    import builtins

    feed = iter(lines)

    def fake_input(prompt=""):
        item = next(feed, EOFError())
        if isinstance(item, BaseException):
            raise item
        return item

    monkeypatch.setattr(builtins, "input", fake_input)
    return main(["chat", "--max-new-tokens", "4", *argv])


def test_chat_commands_stay_out_of_the_conversation_and_ctrl_c_quits_cleanly(monkeypatch, capsys):
    status = _chat(monkeypatch, ["/help", "/nope", "The capital of France is", KeyboardInterrupt()])
    err = capsys.readouterr().err
    assert status == 0
    assert "/reset" in err and "unknown command /nope: /help lists them" in err
    assert "base model (no chat template)" in err  # the demo says what it is
    assert err.count("prompt tokens") == 1  # only the sentence reached the model
    assert err.endswith("\n")  # Ctrl-C at the prompt: a clean exit, on a new line


def test_ctrl_c_during_an_answer_keeps_it_and_its_figures(monkeypatch, capsys):
    from ktx.core.cli import chat

    real_write, calls = chat.write, []

    def interrupted_write(text):
        calls.append(text)
        if len(calls) == 2:  # the answer has begun
            raise KeyboardInterrupt
        real_write(text)

    monkeypatch.setattr(chat, "write", interrupted_write)
    status = _chat(monkeypatch, ["Once upon a time", "/exit"], ["--max-new-tokens", "32"])
    assert status == 0
    assert "(interrupted)]" in capsys.readouterr().err


def test_rules_check_names_each_rule_and_small_plans_read_in_mib(tiny_gguf, capsys):
    from ktx.core.memory_plan import MemoryPlan

    assert main(["rules", "check", "--gguf", str(tiny_gguf("qwen3moe"))]) == 0
    out = capsys.readouterr().out
    assert "rule 0 (name ~ " in out and "-> " in out  # what the rule is, not just its number
    plan = MemoryPlan()
    plan.add("cpu", "layers", 3 << 20)
    assert plan.lines() == ["cpu RAM 3.00 MiB (layers 3.00)"]
    plan.add("cpu", "experts", 2 << 30)
    assert plan.lines()[0].startswith("cpu RAM 2.00 GiB")


def test_a_one_token_answer_has_no_decode_rate():
    from ktx.core.cli.model_args import stats_line
    from ktx.core.runtime.generate import Generation

    one = Generation(tokens=[5], prompt_tokens=3, ttft_s=0.1, prefill_s=0.1)
    assert "decode - tok/s (one token)" in stats_line(one)


def test_ctx_size_bounds_the_context_and_generate_takes_a_system_prompt(tiny_gguf, capsys):
    gguf_path = str(tiny_gguf("qwen3moe"))
    long_prompt = "word " * 200
    assert main(["generate", "--gguf", gguf_path, "--ctx-size", "64", "--prompt", long_prompt]) == 1
    assert "more than the context size (--ctx-size, else --cache-lens) of 64" in capsys.readouterr().err
    assert main(["generate", "--gguf", gguf_path, "--cache-lens", "64", "--prompt", long_prompt]) == 1
    assert "of 64" in capsys.readouterr().err  # --cache-lens bounds it too (the plan reserved no more)
    argv = ["generate", "--gguf", gguf_path, "--prompt", "Hi", "--max-new-tokens", "2", "--json"]
    assert main([*argv, "--chat", "--system", "Be brief."]) == 0
    with_system = json.loads(capsys.readouterr().out)["prompt_tokens"]
    assert main([*argv, "--chat"]) == 0
    assert with_system > json.loads(capsys.readouterr().out)["prompt_tokens"]
    assert main([*argv, "--system", "Be brief."]) == 1
    assert "--system needs --chat" in capsys.readouterr().err


def test_chat_keeps_its_input_history_between_sessions(tmp_path, monkeypatch):
    readline = pytest.importorskip("readline", reason="this Python has no readline: chat uses plain input()")
    from ktx.core.cli import chat

    monkeypatch.setenv("KTX_CACHE_DIR", str(tmp_path))
    readline.clear_history()
    chat._history()
    readline.add_history("What is a mixture of experts?")
    chat._save(readline, tmp_path / "chat_history")
    readline.clear_history()
    chat._history()  # the next session: Up brings the message back
    assert readline.get_history_item(readline.get_current_history_length()) == "What is a mixture of experts?"


def test_a_chat_template_can_be_given_by_name_or_file(tmp_path, capsys):
    argv = ["generate", "--prompt", "Hi", "--max-new-tokens", "1", "--json", "--chat"]
    assert main([*argv, "--chat-template", "chatml"]) == 0
    chatml = json.loads(capsys.readouterr().out)["prompt_tokens"]
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert main([*argv, "--chat-template", str(template)]) == 0
    plain = json.loads(capsys.readouterr().out)["prompt_tokens"]
    assert chatml > plain  # ChatML's role markers are tokens the bare template leaves out
    template.write_text("{% for m in messages %}")
    assert main([*argv, "--chat-template", str(template)]) == 1
    assert "not a valid Jinja template" in capsys.readouterr().err
    assert main([*argv, "--chat-template", "nonesuch"]) == 1
    assert "not chatml, gemma or a readable file" in capsys.readouterr().err
