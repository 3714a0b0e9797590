#include "iq_grids.h"

#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>

#include "ggml_types.h"

namespace ktx {
namespace {
IQGrids grids;
std::atomic<unsigned> loaded{0};  // one bit per table
constexpr unsigned kAll = (1u << 7) - 1;
}  // namespace

const IQGrids& iq_grids() { return grids; }

bool set_iq_grid(const char* name, const int8_t* values, int64_t n) {
  struct Slot {
    const char* name;
    void* dst;
    int64_t size;
  };
  const Slot slots[] = {{"iq2xxs", grids.iq2xxs, sizeof grids.iq2xxs}, {"iq2xs", grids.iq2xs, sizeof grids.iq2xs},
                        {"iq2s", grids.iq2s, sizeof grids.iq2s},       {"iq3xxs", grids.iq3xxs, sizeof grids.iq3xxs},
                        {"iq3s", grids.iq3s, sizeof grids.iq3s},       {"iq1s", grids.iq1s, sizeof grids.iq1s},
                        {"ksigns", grids.ksigns, sizeof grids.ksigns}};
  for (int i = 0; i < 7; ++i) {
    if (std::strcmp(name, slots[i].name) != 0) continue;
    if (n != slots[i].size) return false;
    std::memcpy(slots[i].dst, values, (size_t)n);
    loaded |= 1u << i;
    return true;
  }
  return false;
}

bool iq_grids_ready() { return loaded.load() == kAll; }

bool uses_iq_grids(int type) {
  switch (type) {
    case GGML_IQ2_XXS:
    case GGML_IQ2_XS:
    case GGML_IQ2_S:
    case GGML_IQ3_XXS:
    case GGML_IQ3_S:
    case GGML_IQ1_S:
    case GGML_IQ1_M: return true;
    default: return false;
  }
}

void require_iq_grids(int type) {
  if (uses_iq_grids(type) && !iq_grids_ready())
    throw std::runtime_error("the i-quant code books are not loaded (ktx.core.gguf.iq_grids.load()) for ggml type " +
                             std::to_string(type));
}

}  // namespace ktx
