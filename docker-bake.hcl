# ktx's images: `docker buildx bake` (cpu, the default), `docker buildx bake all`, or one target
# (`docker buildx bake cuda-amx`). Tags: ktx:<target> and ktx:<target>-<version>, prefixed by
# REGISTRY when set. CI adds docker-bake.ci.hcl (an imported base, the local torch wheel).

variable "REGISTRY" { default = "" }
variable "TAG" { default = "0.1.0" } # the version in the second tag and the OCI label
variable "COMMIT" { default = "unknown" }

# One base image per target; each is overridable (e.g. CUDA_BASE=nvidia/cuda:12.9.1-...).
variable "CPU_BASE" { default = "python:3.11-slim-bookworm" }
variable "CUDA_BASE" { default = "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04" }
variable "ROCM_BASE" { default = "rocm/dev-ubuntu-24.04:6.4" }
variable "XPU_BASE" { default = "intel/oneapi-basekit:2025.1.0-0-devel-ubuntu24.04" }
variable "ASCEND_BASE" { default = "ascendai/cann:8.1.rc1-910b-ubuntu22.04-py3.10" }

function "tags" {
  params = [target]
  result = ["${REGISTRY}ktx:${target}", "${REGISTRY}ktx:${target}-${TAG}"]
}

group "default" { targets = ["cpu"] }
group "all" { targets = ["cpu", "cuda-amx", "rocm", "xpu", "ascend"] }

target "common" {
  context = "."
  dockerfile = "images/Dockerfile"
  platforms = ["linux/amd64"]
  args = {
    VERSION = TAG
    COMMIT = COMMIT
    KTX_EXTRAS = "demo"
  }
  # pip behind a TLS-intercepting proxy: `--set '*.secret=id=cacert,src=/etc/ssl/certs/ca-certificates.crt'`
  cache-from = ["type=local,src=.cache/buildx"]
  cache-to = ["type=local,dest=.cache/buildx,mode=max"]
}

# The CPU image: Debian slim, CPU torch, the demo model; `docker run ktx:cpu` serves it at once.
target "cpu" {
  inherits = ["common"]
  tags = tags("cpu")
  args = {
    BASE_IMAGE = CPU_BASE
    TORCH_SPEC = "torch==2.13.0"
    TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
  }
}

# The accelerators: the GPU (or NPU) runs attention and the dense layers, the CPU the routed
# experts (AMX/AVX-512/AVX2 chosen at run time: one image for every x86-64 CPU).
target "gpu" {
  name = tgt.name
  inherits = ["common"]
  matrix = {
    tgt = [
      {
        name = "cuda-amx", base = CUDA_BASE, aliases = ["cuda"],
        torch = "torch==2.13.0 triton", index = "https://download.pytorch.org/whl/cu128",
      },
      {
        name = "rocm", base = ROCM_BASE, aliases = [],
        torch = "torch==2.13.0 pytorch-triton-rocm", index = "https://download.pytorch.org/whl/rocm6.4",
      },
      {
        # Intel GPUs: pytorch-triton-xpu, never plain triton (it would shadow the XPU build)
        name = "xpu", base = XPU_BASE, aliases = [],
        torch = "torch==2.13.0 pytorch-triton-xpu", index = "https://download.pytorch.org/whl/xpu",
      },
      {
        # Ascend NPUs: CPU torch plus the torch_npu of the same version (each pins its torch)
        # on the CANN base; x86-64 hosts only, like every image (ktx's CPU kernels are x86)
        name = "ascend", base = ASCEND_BASE, aliases = [],
        torch = "torch==2.13.0 torch_npu==2.13.0", index = "https://download.pytorch.org/whl/cpu",
      },
    ]
  }
  tags = concat(tags(tgt.name), flatten([for a in tgt.aliases : tags(a)]))
  args = {
    BASE_IMAGE = tgt.base
    TORCH_SPEC = tgt.torch
    TORCH_INDEX = tgt.index
    APT_BUILD = "python3 python3-venv python3-dev g++ cmake ninja-build"
    APT_RUN = "python3 python3-venv libgomp1"
  }
}
