# CI's overlay (`docker buildx bake -f docker-bake.hcl -f docker-bake.ci.hcl cpu`): the base is
# imported from mmdebstrap (no registry there: nox -s image_smoke makes ktx-base:bookworm), the
# CPU torch wheel comes from images/wheels/, the build reaches PyPI through the host network,
# and no cache is exported.

variable "CI_BASE" { default = "ktx-base:bookworm" }

target "cpu" {
  args = {
    BASE_IMAGE = CI_BASE
    TORCH_INDEX = "" # the CPU wheel is in images/wheels; PyPI is the only index reachable
    APT_BUILD = "g++ cmake ninja-build python3-dev" # Debian's python3 keeps its headers apart
  }
  cache-from = []
  cache-to = []
  output = ["type=docker"]
}
