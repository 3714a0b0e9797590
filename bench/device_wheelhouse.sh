#!/usr/bin/env bash
# Run HERE (with network), not on the device machine: downloads the cp312 x86-64 wheels that
# ktx needs at run and test time and the device machine's image lacks, into .whl/ (git-ignored;
# a device `run` takes it along with carry: [".whl"], and bench/device_check.sh installs it).
#   bash bench/device_wheelhouse.sh                 # -> .whl/, prints the total size
#   WHEELHOUSE=/tmp/w BUILD_TOOLS=1 bash bench/device_wheelhouse.sh
# Each wheel is pinned to the version installed in this Python (the one ktx is tested with
# here), else the newest; --no-deps, so every missing dependency is named below. At most
# 50 MiB (the working tree that travels is capped at 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${WHEELHOUSE:-.whl}
py=${PYTHON:-python3}
limit_mib=50

# What the device image lacks (/work/.library/device/KINDS.md, "Python packages already there"),
# against pyproject.toml's dependencies and what tests/core and tests/backends import:
wheels=(
  gguf                # ktx's GGUF tables (needs numpy, pyyaml, requests, tqdm: there)
  fastapi             # ktx serve / bench serve; needs starlette, pydantic, typing-inspection,
  starlette           #   annotated-doc (there), anyio (there), opentelemetry-api
  opentelemetry-api
  pydantic
  pydantic-core       # the one binary wheel: cp312 manylinux
  annotated-types
  typing-inspection
  typing-extensions   # there, but pydantic wants a recent one; a newer one changes nothing else
  uvicorn             # needs click, h11: there
)
# The image has scikit-build-core, pybind11, cmake and ninja; BUILD_TOOLS=1 carries the Python
# ones too (cmake's wheel alone is ~30 MiB), for an image that lacks them.
if [ "${BUILD_TOOLS:-0}" = 1 ]; then
  wheels+=(scikit-build-core pybind11 ninja)
fi

# The device's glibc is recent (Python 3.12.3: Ubuntu 24.04, glibc 2.39); pip matches each
# manylinux tag exactly, so name them all.
platforms=(--platform manylinux1_x86_64 --platform manylinux2014_x86_64)
for n in $(seq 5 39); do platforms+=(--platform "manylinux_2_${n}_x86_64"); done

mkdir -p "$dir"
rm -f "$dir"/*.whl # one version of each: two of one package stop the whole install there
specs=()
for name in "${wheels[@]}"; do
  v=$("$py" -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass" "$name")
  specs+=("$name${v:+==$v}")
done
echo "downloading: ${specs[*]}"
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --abi cp312 --abi abi3 --abi none "${platforms[@]}" -d "$dir" "${specs[@]}"

# one file per distribution (a wheel's name is NAME-VERSION-...; names normalized as pip does)
dups=$(for f in "$dir"/*.whl; do basename "$f" | cut -d- -f1 | tr 'A-Z.-' 'a-z__'; done | sort | uniq -d)
if [ -n "$dups" ]; then
  echo "error: more than one wheel of: $dups (in $dir)" >&2
  exit 1
fi
bytes=0
count=0
for f in "$dir"/*.whl; do
  n=$(wc -c <"$f")
  printf '  %8.1f KiB  %s\n' "$(awk -v n="$n" 'BEGIN { print n / 1024 }')" "$f"
  bytes=$((bytes + n)) count=$((count + 1))
done
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
echo "wheelhouse: $dir, $count wheels, $mib MiB"
if [ "$bytes" -gt $((limit_mib * 1048576)) ]; then
  echo "error: $mib MiB is over the $limit_mib MiB budget (the tree that travels is capped at 64 MiB)" >&2
  exit 1
fi
