// Int8-weight matrix-vector products for decode: W = scale * int8 - offset per group of 16 or 32,
// times float32 activations. The weights are read once in 8-bit form (36 bytes per 32 values,
// against 128 for float32) and widened in registers; activations stay float32, so results
// match a float32 matmul on the dequantized weights up to summation order. Q8_0, Q5_0, Q4_0,
// Q6_K and Q4_K GGUF blocks convert to this layout exactly at load (ktx.core.gguf.repack).
//
// Written with GCC vector types: each ISA build widens them to its registers (16 lanes in one
// AVX-512 register, two AVX2 registers, or scalar code) and, with -ffp-contract=off, every
// build produces identical sums.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace ktx {
namespace KTX_ISA_NS {

typedef float v16f __attribute__((vector_size(64)));
typedef int8_t v16i8 __attribute__((vector_size(16)));
typedef int32_t v16i32 __attribute__((vector_size(64)));

// 16 int8 at p -> 16 floats (exact). GCC 12 widens int8 vectors lane by lane, so the x86
// builds use the one sign-extending instruction their ISA has; the rest stays portable.
static inline v16f widen(const int8_t* p) {
#if defined(__AVX512F__)
  const __m512i v = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return (v16f)_mm512_cvtepi32_ps(v);
#elif defined(__AVX2__)
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256 lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
  const __m256 hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8)));
  v16f out;
  std::memcpy(&out, &lo, 32);
  std::memcpy(reinterpret_cast<char*>(&out) + 32, &hi, 32);
  return out;
#else
  v16i8 q;
  std::memcpy(&q, p, 16);
  return __builtin_convertvector(__builtin_convertvector(q, v16i32), v16f);
#endif
}

static inline float lane_sum16(v16f v) {
  float s = 0;
  for (int k = 0; k < 16; ++k) s += v[k];
  return s;
}

#if defined(__AVX2__) && !defined(__AVX512F__)
// AVX2: the same lane-by-lane arithmetic as the vector-type code below (lanes 0-7 in `lo`, 8-15
// in `hi`; separate multiplies and adds, no FMA), so sums stay identical to the other builds;
// GCC's lowering of the 16-lane types to AVX2 ran at a third of this speed.
static inline __m256 widen8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// One row of W (ng groups) against one row of x.
static inline float dot_row(const int8_t* qr, const float* sr, const float* orow, int group, int64_t ng,
                            const float* xt) {
  __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
  if (group == 32) {
    for (int64_t b = 0; b < ng; ++b) {
      const int8_t* qb = qr + b * 32;
      const float* xb = xt + b * 32;
      const __m256 x0l = _mm256_loadu_ps(xb), x0h = _mm256_loadu_ps(xb + 8);
      const __m256 x1l = _mm256_loadu_ps(xb + 16), x1h = _mm256_loadu_ps(xb + 24);
      const __m256 pl = _mm256_add_ps(_mm256_mul_ps(widen8(qb), x0l), _mm256_mul_ps(widen8(qb + 16), x1l));
      const __m256 ph = _mm256_add_ps(_mm256_mul_ps(widen8(qb + 8), x0h), _mm256_mul_ps(widen8(qb + 24), x1h));
      const __m256 sc = _mm256_set1_ps(sr[b]);
      lo = _mm256_add_ps(lo, _mm256_mul_ps(pl, sc));
      hi = _mm256_add_ps(hi, _mm256_mul_ps(ph, sc));
      if (orow) {
        const __m256 off = _mm256_set1_ps(orow[b]);
        lo = _mm256_sub_ps(lo, _mm256_mul_ps(_mm256_add_ps(x0l, x1l), off));
        hi = _mm256_sub_ps(hi, _mm256_mul_ps(_mm256_add_ps(x0h, x1h), off));
      }
    }
  } else {  // 16
    for (int64_t g = 0; g < ng; ++g) {
      const int8_t* qg = qr + g * 16;
      const __m256 xl = _mm256_loadu_ps(xt + g * 16), xh = _mm256_loadu_ps(xt + g * 16 + 8);
      const __m256 sc = _mm256_set1_ps(sr[g]);
      lo = _mm256_add_ps(lo, _mm256_mul_ps(_mm256_mul_ps(widen8(qg), xl), sc));
      hi = _mm256_add_ps(hi, _mm256_mul_ps(_mm256_mul_ps(widen8(qg + 8), xh), sc));
      if (orow) {
        const __m256 off = _mm256_set1_ps(orow[g]);
        lo = _mm256_sub_ps(lo, _mm256_mul_ps(xl, off));
        hi = _mm256_sub_ps(hi, _mm256_mul_ps(xh, off));
      }
    }
  }
  v16f acc;
  _mm256_storeu_ps(reinterpret_cast<float*>(&acc), lo);
  _mm256_storeu_ps(reinterpret_cast<float*>(&acc) + 8, hi);
  return lane_sum16(acc);
}
#else
static inline float dot_row(const int8_t* qr, const float* sr, const float* orow, int group, int64_t ng,
                            const float* xt) {
  v16f acc = {};
  if (group == 32) {
    for (int64_t b = 0; b < ng; ++b) {
      v16f x0, x1;
      std::memcpy(&x0, xt + b * 32, 64);
      std::memcpy(&x1, xt + b * 32 + 16, 64);
      const v16f p = widen(qr + b * 32) * x0 + widen(qr + b * 32 + 16) * x1;
      acc += p * sr[b];
      if (orow) acc -= (x0 + x1) * orow[b];
    }
  } else {  // 16
    for (int64_t g = 0; g < ng; ++g) {
      v16f xg;
      std::memcpy(&xg, xt + g * 16, 64);
      acc += (widen(qr + g * 16) * xg) * sr[g];
      if (orow) acc -= xg * orow[g];
    }
  }
  return lane_sum16(acc);
}
#endif

// Rows [r0, r1) of y[t][r] = sum_c W[r][c] * x[t][c] with W = s * q - o per group of `group`
// (16 or 32) values. q: [rows][cols] int8; s, o: [rows][cols / group] floats (o may be null);
// x: n_tok rows of `cols` floats; y rows are `y_stride` floats apart.
static void gemv_i8(const int8_t* q, const float* s, const float* o, int group, int64_t r0, int64_t r1,
                    int64_t cols, const float* x, int64_t n_tok, float* y, int64_t y_stride) {
  const int64_t ng = cols / group;
  for (int64_t r = r0; r < r1; ++r) {
    const float* orow = o ? o + r * ng : nullptr;
    for (int64_t t = 0; t < n_tok; ++t)
      y[t * y_stride + r] = dot_row(q + r * cols, s + r * ng, orow, group, ng, x + t * cols);
  }
}

}  // namespace KTX_ISA_NS
}  // namespace ktx
