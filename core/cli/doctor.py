"""`ktx doctor`: what this machine offers ktx and what ktx will use on it.

`doctor_report()` gathers it as plain data (a script can call it); the command prints it as tables
or, with --json, as JSON. Misconfigurations (an unusable KTX_ISA, a bad KTX_THREADS, a failing AMX
self-test) are reported in `problems` and make the command exit 1, never crash it.
"""

from __future__ import annotations

import argparse
import os
import platform
from dataclasses import asdict
from typing import Any

from .. import __version__, cpu
from ..backend import detect_backends
from .output import console, human_bytes, kv_table, print_json, show

# (row label, ((feature label, key in cpu.features()), ...)): what the kernel paths depend on.
FEATURE_GROUPS = (
    (
        "AVX2",
        (("AVX2", "avx2"), ("FMA", "fma"), ("F16C", "f16c"), ("BMI2", "bmi2"), ("AVX-VNNI", "avx_vnni")),
    ),
    (
        "AVX-512",
        (
            ("F", "avx512f"),
            ("BW", "avx512bw"),
            ("VL", "avx512vl"),
            ("DQ", "avx512dq"),
            ("VNNI", "avx512_vnni"),
            ("BF16", "avx512_bf16"),
        ),
    ),
    ("AMX", (("tile", "amx_tile"), ("int8", "amx_int8"), ("bf16", "amx_bf16"))),
)
# Register state the OS must save on context switch (XCR0) before a program may use it.
OS_STATE = (("AVX", "os_avx"), ("AVX-512", "os_avx512"), ("AMX", "os_amx"))

EXAMPLES = """\
examples:
  ktx doctor                 the report as tables
  ktx doctor --json | jq .kernels
  KTX_ISA=avx2 ktx doctor    check what forcing the AVX2 kernels would do

exit status: 0 when ktx can run here as configured, 1 when a problem is listed."""


def doctor_report() -> dict[str, Any]:
    """CPU, kernel path, threads, memory, software versions and backends, as JSON-ready data."""
    features = cpu.features()
    problems: list[str] = []

    kernels: dict[str, Any] = {
        "supported": cpu.supported_isas(),
        "best": cpu.best_isa(),
        "active": None,
        "ktx_isa": os.environ.get("KTX_ISA") or None,
        "error": None,
    }
    try:
        kernels["active"] = cpu.isa()
    except RuntimeError as e:
        kernels["error"] = str(e)
        problems.append(str(e))

    amx_selftest = None
    if all(features[k] for k in ("amx_tile", "amx_int8", "amx_bf16")):
        from .. import _kernels

        try:
            amx_selftest = bool(_kernels.amx_selftest())
            if not amx_selftest:
                problems.append("AMX tile self-test computed wrong products")
        except RuntimeError as e:  # the OS did not enable AMX, or refused the tile permission
            amx_selftest = False
            problems.append(f"AMX unusable: {e}")

    threads: dict[str, Any] = {
        "default": None,
        "physical_cores": cpu.physical_cores(),
        "ktx_threads": os.environ.get("KTX_THREADS") or None,
        "error": None,
    }
    try:
        threads["default"] = cpu.default_threads()
    except ValueError as e:
        threads["error"] = str(e)
        problems.append(str(e))

    return {
        "cpu": {
            "vendor": features["vendor"],
            "brand": features["brand"],
            "physical_cores": cpu.physical_cores(),
            "logical_cpus": len(os.sched_getaffinity(0)),
            "features": {key: bool(features[key]) for _, group in FEATURE_GROUPS for _, key in group},
            "os_enabled": {key.removeprefix("os_"): bool(features[key]) for _, key in OS_STATE},
        },
        "kernels": kernels,
        "amx_selftest": amx_selftest,
        "threads": threads,
        "memory": cpu.memory(),
        "numa_nodes": cpu.numa_nodes(),
        "versions": {
            "python": platform.python_version(),
            "ktx": __version__,
            "torch": _torch_version(),
            "os": platform.platform(),
        },
        "backends": [asdict(d) for d in detect_backends()],
        "problems": problems,
    }


def _torch_version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def print_doctor(report: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    def mark(on: bool, label: str) -> Text:
        return Text(f"✓ {label}", style="green") if on else Text(f"✗ {label}", style="dim")

    def marks(pairs) -> Text:
        return Text("  ").join(mark(on, label) for label, on in pairs)

    c, k, t = report["cpu"], report["kernels"], report["threads"]
    cpu_rows = [
        ("model", f"{c['brand']} ({c['vendor']})"),
        ("cores", f"{c['physical_cores']} physical, {c['logical_cpus']} logical CPUs available to ktx"),
    ]
    for row, group in FEATURE_GROUPS:
        cpu_rows.append((row, marks((label, c["features"][key]) for label, key in group)))
    cpu_rows.append(
        ("OS enabled", marks((label, c["os_enabled"][key.removeprefix("os_")]) for label, key in OS_STATE))
    )

    if k["active"]:
        why = "the best this CPU supports" if k["active"] == k["best"] else f"forced; best is {k['best']}"
        running: Any = f"{k['active']} ({why})"
    else:
        running = Text(f"none: {k['error']}", style="bold red")
    selftest = report["amx_selftest"]
    kernel_rows = [
        ("supported", ", ".join(k["supported"])),
        ("running", running),
        ("KTX_ISA", k["ktx_isa"] or "unset"),
        (
            "AMX self-test",
            "not run (no AMX)"
            if selftest is None
            else Text("passed", style="green")
            if selftest
            else Text("FAILED", style="bold red"),
        ),
    ]
    if t["error"]:
        kernel_rows.append(("threads", Text(t["error"], style="bold red")))
    else:
        source = f"KTX_THREADS={t['ktx_threads']}" if t["ktx_threads"] else "one per physical core"
        kernel_rows.append(("threads", f"{t['default']} ({source})"))

    m, v = report["memory"], report["versions"]
    nodes = report["numa_nodes"]
    system_rows = [
        ("RAM", f"{human_bytes(m['total'])} total, {human_bytes(m['available'])} available"),
        ("NUMA", f"{nodes} node{'s' if nodes != 1 else ''}"),
        ("Python", v["python"]),
        ("ktx", v["ktx"]),
        ("torch", v["torch"] or "not installed"),
        ("OS", v["os"]),
    ]

    backends = Table(title="Backends", title_justify="left", box=None, pad_edge=False)
    for col in ("backend", "device", "usable", "detail"):
        backends.add_column(col, no_wrap=col != "detail", overflow="fold")
    for b in report["backends"]:
        usable = Text("yes", style="green") if b["available"] else Text("no", style="dim")
        backends.add_row(Text(b["name"]), Text(b["device_type"]), usable, Text(b["detail"]))

    out = console()
    for title, rows in (("CPU", cpu_rows), ("Kernels", kernel_rows), ("System", system_rows)):
        show(out, kv_table(title, rows))
    show(out, backends)
    for problem in report["problems"]:
        out.print(Text(f"problem: {problem}", style="bold red"))


def run(args: argparse.Namespace) -> int:
    report = doctor_report()
    if args.json:
        print_json(report)
    else:
        print_doctor(report)
    return 1 if report["problems"] else 0


def add_parser(subcommands) -> None:
    p = subcommands.add_parser(
        "doctor",
        help="what this machine offers: CPU features, kernel path, threads, memory, backends",
        description="Report the CPU (vendor, cores, AVX2 / AVX-512 / VNNI / BF16 / AMX and whether "
        "the OS enabled them), the kernel path ktx will run and why, threads, RAM, NUMA, "
        "software versions and which backends (CPU, CUDA, ROCm, XPU, Ascend) are usable.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)
