// The code books of the i-quants (IQ1_S/M, IQ2_XXS/XS/S, IQ3_XXS/S) and their sign table.
// ktx does not carry a copy of them: they are read at first use from gguf-py (the reference
// dequantizer the tests compare with), which holds them as data, by ktx/core/gguf/iq_grids.py
// through set_iq_grid(). Kernels of a grid type throw if they were never loaded.
#pragma once
#include <cstdint>

namespace ktx {

struct IQGrids {
  // grid entries as signed bytes (the values themselves: 8/25/43, 4..62, 1..15, -1/0/1)
  int8_t iq2xxs[256 * 8], iq2xs[512 * 8], iq2s[1024 * 8], iq3xxs[256 * 4], iq3s[512 * 4], iq1s[2048 * 8];
  uint8_t ksigns[128];  // 7 sign bits -> 8 (the eighth makes the count of minus signs even)
};

const IQGrids& iq_grids();
// Copies `n` bytes into the named table ("iq2xxs", ..., "ksigns"); false for an unknown name or
// a size that does not match. After every table was set once, iq_grids_ready() is true.
bool set_iq_grid(const char* name, const int8_t* values, int64_t n);
bool iq_grids_ready();
// Whether a ggml type's kernels read the grids.
bool uses_iq_grids(int type);
// Throws std::runtime_error naming the type when the grids are not loaded.
void require_iq_grids(int type);

}  // namespace ktx
