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
// Decoded weight rows (qdot_impl.h): row r holds cols int8 values q and, per group of 16, a
// scale a and offset b (w = a * q + b).
struct DecodedI8 {
  const int8_t* q;
  const float* a;
  const float* b;
  int64_t cols;
  int rows;
};
struct DecodedF32 {
  const float* w;
  int64_t cols;
  int rows;
};
// Activation rows quantized to int8 groups of 16: scale d and d * sum(q) per group.
struct ActI8 {
  const int8_t* q;
  const float* d;
  const float* s;
  int64_t cols;
};
// Where a tile's products go: for r < rows, i < n,
// y[yrow(i) * y_stride + r] (+)= yscale(i) * <weight row r, activation row xrow(i)>
// (null xrow / yrow / yscale mean i, i and 1).
struct TileOut {
  const int32_t* xrow;
  const int32_t* yrow;
  const float* yscale;
  int n;
  float* y;
  int64_t y_stride;
  bool accumulate;

  int64_t x_row(int i) const { return xrow ? xrow[i] : i; }
  // The product of weight row r and activation row xrow(i), into its place.
  void put(int i, int64_t r, float v) const {
    float* dst = y + (yrow ? yrow[i] : i) * y_stride + r;
    const float sv = yscale ? yscale[i] * v : v;
    *dst = accumulate ? *dst + sv : sv;
  }
};

// How many activation rows meet a weight row decides the kernel (qmatmul.cpp): up to
// kFusedMaxRows the fused decode-and-dot kernels, kFusedRows rows per pass; from
// kPanelMinRows the tile kernels (AVX-512: 16 tokens per register); from kAmxMinRows the AMX
// tiles where the CPU has them (fewer would leave a tile product mostly padding).
constexpr int kFusedRows = 4;
constexpr int kFusedMaxRows = 7;  // two passes (4 + 3) still beat decoding to a buffer
constexpr int kPanelMinRows = 8;
constexpr int kAmxMinRows = 16;
// How far ahead of the weight row being decoded to prefetch (at least two rows).
constexpr int64_t kPrefetchBytes = 64 << 10;

using QuantActFn = void (*)(const float* x, int64_t cols, int8_t* q, float* d, float* s);
using DecodeI8Fn = void (*)(const uint8_t* src, int64_t n_blocks, int8_t* q, float* a, float* b);
using DotTileI8Fn = void (*)(const DecodedI8& w, const ActI8& x, const TileOut& o);
using DotTileF32Fn = void (*)(const DecodedF32& w, const float* x, const TileOut& o);
// out[r * n + t] = <weight row r, int8 activation row t> for r < rows, t < n (n <= 4,
// kFusedRows): weight rows of GGUF blocks `row_bytes` apart, each decoded once, in registers.
// The rows loop inside the kernel (a call per row cost as much as a short row's products);
// rows ahead are prefetched, up to `end`.
using FusedDotFn = void (*)(const uint8_t* w, int64_t row_bytes, int rows, int64_t n_blocks,
                            const int8_t* const* xq, const float* const* xd, const float* const* xs, int n,
                            float* out, const uint8_t* end);
// The same for float32 activation rows (n_blocks blocks of the type; BF16 blocks are 1 value).
using FusedDotF32Fn = void (*)(const uint8_t* w, int64_t n_blocks, const float* const* x, int n, float* out);

// One query row's attention part (step_impl.h): the `rep` query heads of one KV head against
// keys [s0, s1) of a sequence whose cache rows are blocks[s / block_size] * block_size +
// s % block_size; writes m[rep], l[rep], acc[rep][dv].
struct AttnPart {
  const float* q;  // head r at q + r * q_stride, dk values
  int64_t q_stride;
  int rep, dk, dv;
  const float* k;  // key of cache row i at k + i * k_stride
  int64_t k_stride;
  const float* v;
  int64_t v_stride;
  const int32_t* blocks;
  int block_size;
  int64_t s0, s1;
  float scale, softcap;  // softcap <= 0: none
  float *m, *l, *acc;
  float* scratch;  // rep * (s1 - s0) floats
};

using RmsNormFn = void (*)(const float* x, int64_t cols, const float* w, float eps, float* out, bool accumulate);
using ActMulFn = void (*)(float* g, const float* u, int64_t n, int act);
using RopeFn = void (*)(float* x, int heads, int64_t head_stride, int dim, int64_t pos, const float* freq,
                        float scale, bool interleaved, float* cs);
using AttnPartFn = void (*)(const AttnPart& p);
// One gated-DeltaNet value head, one token: S [dk][dv] <- decay * S; m = S^T k;
// S += k (beta (v - m))^T; o = S^T q (step_impl.h).
using DeltaHeadFn = void (*)(float* S, const float* k, const float* q, const float* v, float decay, float beta, int dk,
                             int dv, float* o);

struct KernelTable {
  const char* name;
  DequantFn dequant[GGML_TYPE_SLOTS];
  QuantFn quant[GGML_TYPE_SLOTS];
  ToBF16Fn to_bf16;
  QuantActFn quant_act;      // groups of 16
  QuantActFn quant_act_256;  // runs of 256 (the K-quants' activations)
  DecodeI8Fn decode_i8[GGML_TYPE_SLOTS];  // null: the type has no int8 form (float path)
  DotTileI8Fn dot_i8;
  DotTileF32Fn dot_f32;
  FusedDotFn fused[GGML_TYPE_SLOTS];  // null: decode, then dot_i8
  bool fused_kq_order[GGML_TYPE_SLOTS];  // takes activations in K-quant order (Activations::kq)
  FusedDotF32Fn fused_f32[GGML_TYPE_SLOTS];
  // The float32 pieces of a step (step_impl.h).
  RmsNormFn rms_norm;
  ActMulFn act_mul;
  RopeFn rope;
  AttnPartFn attn_part;
  DeltaHeadFn delta_head;
};

// Each lives in its own translation unit, compiled with that ISA's flags.
namespace scalar { const KernelTable& kernel_table(); }
namespace avx2 { const KernelTable& kernel_table(); }
namespace avx512 { const KernelTable& kernel_table(); }
namespace amx { const KernelTable& kernel_table(); }
// AMX's table with the tile instructions emulated in scalar code (tests only).
namespace amx_emulated {
const KernelTable& kernel_table();
bool selfcheck();  // the check the amx table makes at start-up, on the emulated tiles
}  // namespace amx_emulated

// AMX (amx.cpp): ask Linux for the tile-data permission; true once granted.
bool amx_request_permission();
// The CPU and OS offer AMX and Linux granted the permission (asked once, then remembered).
bool amx_usable();
// Multiplies two small bf16 matrices on the tiles and checks the result against a scalar
// loop: proves the toolchain, the permission and the tile configuration work together.
bool amx_selftest();

}  // namespace ktx
