#!/bin/sh
# slim.sh VENV: drops what ktx never runs from the image's environment: torch's C++ test
# binaries and its C++ headers (for compiling extensions and torch.compile's C++ backend; ktx's
# kernels are prebuilt). ~145 MB of the CPU image.
set -eu
site=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
rm -rf "$site/torch/test" "$site/torch/include"
