// The per-ISA kernel table: one instance per instruction set, filled by the translation unit
// compiled for it, chosen once at start-up (dispatch.cpp). A null entry means "not offered".
#pragma once
#include <cstdint>

#include "ggml_types.h"

namespace ktx {

// Dequantize `n_blocks` whole blocks from `src` into `dst` (block_size floats per block).
using DequantFn = void (*)(const uint8_t* src, float* dst, int64_t n_blocks);
// Quantize `n_blocks` blocks' worth of floats into blocks of the type.
using QuantFn = void (*)(const float* src, uint8_t* dst, int64_t n_blocks);
// float -> bfloat16 (round to nearest even) over n elements.
using ToBF16Fn = void (*)(const float* src, uint16_t* dst, int64_t n);
// Rows [r0, r1) of y = x W^T for W = s * q - o (int8 q; float s, o per group of 16 or 32; o
// may be null), and n_tok float rows x.
using GemvFn = void (*)(const int8_t* q, const float* s, const float* o, int group, int64_t r0, int64_t r1,
                        int64_t cols, const float* x, int64_t n_tok, float* y, int64_t y_stride);

struct KernelTable {
  const char* name;
  DequantFn dequant[GGML_TYPE_SLOTS];
  QuantFn quant[GGML_TYPE_SLOTS];
  ToBF16Fn to_bf16;
  GemvFn gemv_i8;
};

// Each lives in its own translation unit, compiled with that ISA's flags.
namespace scalar { const KernelTable& kernel_table(); }
namespace avx2 { const KernelTable& kernel_table(); }
namespace avx512 { const KernelTable& kernel_table(); }
namespace amx { const KernelTable& kernel_table(); }

// AMX (amx.cpp): ask Linux for the tile-data permission; true once granted.
bool amx_request_permission();
// Multiplies two small bf16 matrices on the tiles and checks the result against a scalar
// loop: proves the toolchain, the permission and the tile configuration work together.
bool amx_selftest();

}  // namespace ktx
