// AMX-INT8 tile products for prefill tiles: 16 tokens x 16 weight rows per tile product.
//
// The int8 scheme is the one of qdot_impl.h (activations and weights in groups of 16 values,
// a float scale per group on each side), so a tile product runs over one group at a time
// (K = 16: A is 16 tokens x 16 bytes, B is 4 x 64 bytes in VNNI order, C 16 x 16 int32) and
// the group's scales are applied to C with AVX-512 while the next product runs. Results equal
// the other ISAs' up to float summation order; no weight is re-quantized.
//
// Written against a tile policy: `AmxTiles` (the instructions, amx.cpp) or `EmulatedTiles`
// (the same operations in scalar C++, amx_emulated.cpp), so the packing and scaling run in
// the tests on any AVX-512 machine; only the six instructions need a machine with AMX.
#pragma once
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fp16.h"
#include "kernel_table.h"

namespace ktx {
namespace amx_tiles {

struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// Tile 0: C (16 x 16 int32), 1: A (16 tokens x 16 bytes), 2: B (4 rows of 16 x 4 bytes).
inline TileConfig group_config() {
  TileConfig cfg;
  std::memset(&cfg, 0, sizeof cfg);
  cfg.palette_id = 1;
  cfg.rows[0] = 16, cfg.colsb[0] = 64;
  cfg.rows[1] = 16, cfg.colsb[1] = 16;
  cfg.rows[2] = 4, cfg.colsb[2] = 64;
  return cfg;
}

// The same operations in scalar code (for tests on machines without AMX).
struct EmulatedTiles {
  int8_t a[16][16];
  int8_t b[4][64];
  int32_t c[16][16];
  void configure() {}
  void release() {}
  void zero_c() { std::memset(c, 0, sizeof c); }
  void load_a(const int8_t* p, int64_t stride) {
    for (int m = 0; m < 16; ++m) std::memcpy(a[m], p + m * stride, 16);
  }
  void load_b(const int8_t* p) { std::memcpy(b, p, sizeof b); }
  void dot() {  // TDPBSSD: C[m][n] += sum_k sum_i A[m][4k + i] * B[k][4n + i]
    for (int m = 0; m < 16; ++m)
      for (int n = 0; n < 16; ++n)
        for (int k = 0; k < 4; ++k)
          for (int i = 0; i < 4; ++i) c[m][n] += (int32_t)a[m][4 * k + i] * (int32_t)b[k][4 * n + i];
  }
  void store_c(int32_t* p) { std::memcpy(p, c, sizeof c); }
};

// For r < w.rows, i < o.n: as dot_tile_i8 (see TileOut).
template <class Tiles>
void dot_tile(const DecodedI8& w, const ActI8& x, const TileOut& o) {
  const int64_t cols = w.cols, ng = cols / 16;
  const int n_panels = (o.n + 15) / 16;
  static thread_local std::vector<int8_t> apack, bpack;
  static thread_local std::vector<float> avec, bvec;
  static thread_local std::vector<int64_t> row_of;
  // Tokens, 16 per panel, rows of `cols` bytes (missing tokens zero).
  apack.assign((size_t)n_panels * 16 * cols, 0);
  row_of.assign((size_t)n_panels * 16, -1);
  for (int i = 0; i < o.n; ++i) {
    row_of[i] = o.x_row(i);
    std::memcpy(&apack[(size_t)i * cols], x.q + row_of[i] * cols, cols);
  }
  Tiles tiles;
  tiles.configure();
  alignas(64) int32_t c[16][16];
  for (int64_t r0 = 0; r0 < w.rows; r0 += 16) {
    const int nr = w.rows - r0 < 16 ? (int)(w.rows - r0) : 16;
    // Weight rows r0.. in VNNI order per group: [ng][4][16 rows][4 bytes]; scales [ng][16].
    bpack.assign((size_t)ng * 256, 0);
    avec.assign((size_t)ng * 16, 0.0f);
    bvec.assign((size_t)ng * 16, 0.0f);
    for (int j = 0; j < nr; ++j) {
      const int8_t* q = w.q + (r0 + j) * cols;
      for (int64_t g = 0; g < ng; ++g) {
        for (int k = 0; k < 4; ++k) std::memcpy(&bpack[g * 256 + k * 64 + j * 4], q + g * 16 + 4 * k, 4);
        avec[g * 16 + j] = w.a[(r0 + j) * ng + g];
        bvec[g * 16 + j] = w.b[(r0 + j) * ng + g];
      }
    }
    for (int p = 0; p < n_panels; ++p) {
      const int n = o.n - 16 * p < 16 ? o.n - 16 * p : 16;
      const int64_t* rows = &row_of[(size_t)16 * p];
      __m512 acc[16];
      for (int t = 0; t < 16; ++t) acc[t] = _mm512_setzero_ps();
      for (int64_t g = 0; g < ng; ++g) {
        tiles.zero_c();
        tiles.load_a(&apack[((size_t)16 * p) * cols + g * 16], cols);
        tiles.load_b(&bpack[g * 256]);
        tiles.dot();
        tiles.store_c(&c[0][0]);
        const __m512 av = _mm512_loadu_ps(&avec[g * 16]), bv = _mm512_loadu_ps(&bvec[g * 16]);
        for (int t = 0; t < n; ++t) {  // lanes: weight rows; scales of token t's group g
          const float d = x.d[rows[t] * ng + g], s = x.s[rows[t] * ng + g];
          const __m512 cv = _mm512_cvtepi32_ps(_mm512_load_si512(c[t]));
          acc[t] = _mm512_fmadd_ps(cv, _mm512_mul_ps(av, _mm512_set1_ps(d)), acc[t]);
          acc[t] = _mm512_fmadd_ps(bv, _mm512_set1_ps(s), acc[t]);
        }
      }
      const __mmask16 live = (__mmask16)((1u << nr) - 1);
      for (int t = 0; t < n; ++t) {
        const int i = 16 * p + t;
        float* dst = o.y + (o.yrow ? o.yrow[i] : i) * o.y_stride + r0;
        __m512 v = o.yscale ? _mm512_mul_ps(acc[t], _mm512_set1_ps(o.yscale[i])) : acc[t];
        if (o.accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(live, dst));
        _mm512_mask_storeu_ps(dst, live, v);
      }
    }
  }
  tiles.release();
}

// The amx tables' dot_i8: tiles for kAmxMinRows activation rows or more, AVX-512 below.
template <class Tiles>
void dot_i8(const DecodedI8& w, const ActI8& x, const TileOut& o) {
  if (o.n >= kAmxMinRows) return dot_tile<Tiles>(w, x, o);
  avx512::kernel_table().dot_i8(w, x, o);
}

// dot_tile<Tiles> against AVX-512's kernel on one random tile (32 rows of 256 values, 20
// tokens): true if every product agrees to 1e-4 (float summation order differs).
template <class Tiles>
bool agrees_with_avx512() {
  constexpr int kRows = 32, kCols = 256, kTokens = 20, kGroups = kCols / 16;
  std::vector<int8_t> wq(kRows * kCols), xq(kTokens * kCols);
  std::vector<float> wa(kRows * kGroups), wb(kRows * kGroups), xd(kTokens * kGroups), xs(kTokens * kGroups);
  uint32_t seed = 12345;
  auto next = [&seed] { return seed = seed * 1664525u + 1013904223u; };
  for (auto& v : wq) v = (int8_t)(next() >> 24);
  for (auto& v : xq) v = (int8_t)((int)(next() >> 25) - 64);
  for (auto& v : wa) v = (float)((next() >> 16) & 0xFF) / 256.0f;
  for (auto& v : wb) v = (float)((next() >> 16) & 0xFF) / 1024.0f;
  for (auto& v : xd) v = (float)((next() >> 16) & 0xFF) / 512.0f;
  for (int i = 0; i < kTokens * kGroups; ++i) {  // s = d * sum(q), as quantize_act makes it
    int sum = 0;
    for (int j = 0; j < 16; ++j) sum += xq[i * 16 + j];
    xs[i] = xd[i] * (float)sum;
  }
  const DecodedI8 w{wq.data(), wa.data(), wb.data(), kCols, kRows};
  const ActI8 x{xq.data(), xd.data(), xs.data(), kCols};
  std::vector<float> got(kTokens * kRows), want(kTokens * kRows);
  dot_tile<Tiles>(w, x, {nullptr, nullptr, nullptr, kTokens, got.data(), kRows, false});
  avx512::kernel_table().dot_i8(w, x, {nullptr, nullptr, nullptr, kTokens, want.data(), kRows, false});
  for (int i = 0; i < kTokens * kRows; ++i) {
    const float tol = 1e-4f * (std::fabs(want[i]) + 1.0f);
    if (!(std::fabs(got[i] - want[i]) <= tol)) return false;
  }
  return true;
}

}  // namespace amx_tiles
}  // namespace ktx
