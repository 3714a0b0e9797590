// Quantizers from float32 into GGUF blocks. Included once per ISA (see quants_impl.h).
//
// Q8_0, Q4_0 and BF16 follow ggml's reference rounding exactly, so their blocks equal
// gguf-py's quantizers byte for byte. The K-quants (Q4_K, Q5_K, Q6_K) fit each sub-block's
// scale (and offset) by least squares over a few candidate grids, then store the sub-block
// scales in 6 or 8 bits relative to the super-block's half-precision scale.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "fp16.h"
#include "ggml_types.h"

namespace ktx {
namespace KTX_ISA_NS {

// std::min/max are templates: an instantiation compiled here could be chosen by the linker
// for baseline code. These have internal linkage.
static inline float fminq(float a, float b) { return a < b ? a : b; }
static inline float fmaxq(float a, float b) { return a > b ? a : b; }
static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }
// roundf (halves away from zero) without a libm call, so the loop vectorizes: truncation is
// exact, and so is the fraction x - trunc(x).
static inline float round_away(float x) {
  const float t = truncf(x);
  return fabsf(x - t) >= 0.5f ? t + copysignf(1.0f, x) : t;
}
// Round to nearest (even) and clamp, without UB for NaN or huge inputs.
static inline int round_clamp(float v, int lo, int hi) {
  v = fminq(fmaxq(v, (float)lo), (float)hi);  // NaN -> lo
  return (int)nearbyintf(v);
}

static void q_bf16(const float* x, uint8_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) store_u16(dst + 2 * i, fp32_to_bf16(x[i]));
}

// ggml's quantize_row_q8_0_ref: d = amax / 127, q = round-half-away(x / d).
static void q_q8_0(const float* x, uint8_t* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 32, b += 34) {
    // Max in 8 lanes (max is exact in any order; the lanes let it vectorize).
    float lane[8] = {};
    for (int j = 0; j < 32; j += 8)
      for (int k = 0; k < 8; ++k) lane[k] = fmaxq(lane[k], fabsf(x[j + k]));
    float amax = 0.0f;
    for (int k = 0; k < 8; ++k) amax = fmaxq(amax, lane[k]);
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_u16(b, fp32_to_fp16(d));
    int8_t* qs = reinterpret_cast<int8_t*>(b + 2);
    for (int j = 0; j < 32; ++j) qs[j] = (int8_t)round_away(fminq(fmaxq(x[j] * id, -128.0f), 127.0f));
  }
}

// ggml's quantize_row_q4_0_ref: the value of largest magnitude maps to -8.
static void q_q4_0(const float* x, uint8_t* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 32, b += 18) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; ++j) {
      if (amax < fabsf(x[j])) {
        amax = fabsf(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_u16(b, fp32_to_fp16(d));
    uint8_t* qs = b + 2;
    for (int j = 0; j < 16; ++j) {
      // Truncation, as the reference does (x*id + 8.5 is >= 0.5 for finite input).
      const int lo = (int)fminq(fmaxq(x[j] * id + 8.5f, 0.0f), 15.0f);
      const int hi = (int)fminq(fmaxq(x[j + 16] * id + 8.5f, 0.0f), 15.0f);
      qs[j] = (uint8_t)(lo | (hi << 4));
    }
  }
}

// gguf-py's MXFP4.quantize_blocks (ggml's reference picks the same exponent): e = floor(log2(amax))
// - 2 + 127, so amax lands on the book's top values; each x takes the book entry nearest to
// x / d, the first of equals (the book holds 0 twice: index 0 wins). floor(log2) comes from
// the float's exponent field, exact where numpy's float32 log2 is not (within an ulp below a
// power of two it may round up to it; such a block then differs by one exponent step).
static void q_mxfp4(const float* x, uint8_t* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 32, b += 17) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = fmaxq(amax, fabsf(x[j]));
    int e = 0;
    if (amax > 0.0f) {
      int exp2;
      std::frexp(amax, &exp2);  // amax = m * 2^exp2, m in [0.5, 1): floor(log2) = exp2 - 1
      e = exp2 - 1 - 2 + 127;
      e = e < 0 ? 0 : (e > 255 ? 255 : e);
    }
    b[0] = (uint8_t)e;
    const float d = e8m0_half((uint8_t)e);
    uint8_t q[32];
    for (int j = 0; j < 32; ++j) {
      int best = 0;
      float err = fabsf(d * (float)kMXFP4Values[0] - x[j]);
      for (int k = 1; k < 16; ++k) {
        const float ek = fabsf(d * (float)kMXFP4Values[k] - x[j]);
        if (ek < err) err = ek, best = k;
      }
      q[j] = (uint8_t)best;
    }
    for (int j = 0; j < 16; ++j) b[1 + j] = (uint8_t)(q[j] | (q[j + 16] << 4));
  }
}

// Eight float lanes as a GCC vector type: the same source compiles to SSE2 pairs, AVX2 or
// AVX-512 registers, lane by lane with IEEE rounding (no FMA: -ffp-contract=off), so every
// kernel path computes identical fits. Sums run per lane and are combined in lane order.
typedef float v8f __attribute__((vector_size(32)));

static inline v8f splat(float v) { return v8f{} + v; }
static inline v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
static inline float lane_sum(v8f v) {
  float s = 0;
  for (int k = 0; k < 8; ++k) s += v[k];
  return s;
}
// Clamp to [lo, hi] (NaN -> lo), then round to nearest even. Adding and subtracting 1.5 * 2^23
// makes the adder round: exact for |v| < 2^22, and codes are clamped far below that.
static inline v8f round_clamp8(v8f v, float lo, float hi) {
  const v8f vlo = splat(lo), vhi = splat(hi), magic = splat(12582912.0f);
  v = v > vlo ? v : vlo;
  v = v < vhi ? v : vhi;
  return (v + magic) - magic;
}

// Least-squares fit of x ~= a*q + c over codes q (n/8 vectors); c is forced <= 0 when
// `nonpositive_offset` (the K-quant "min" is a non-negative amount subtracted). Returns the
// squared error. Sums of codes are exact: at most 32 * 63^2 < 2^24.
template <int n>
static float lsq_affine(const v8f* x, const v8f* q, bool nonpositive_offset, float& a, float& c) {
  v8f lq{}, lqq{}, lx{}, lqx{};
  for (int i = 0; i < n / 8; ++i) {
    lq += q[i];
    lqq += q[i] * q[i];
    lx += x[i];
    lqx += q[i] * x[i];
  }
  const float sq = lane_sum(lq), sqq = lane_sum(lqq), sx = lane_sum(lx), sqx = lane_sum(lqx);
  const float det = (float)n * sqq - sq * sq;
  if (det > 0) {
    a = ((float)n * sqx - sq * sx) / det;
    c = (sqq * sx - sq * sqx) / det;
  } else {
    a = 0;
    c = sx / (float)n;
  }
  if (nonpositive_offset && c > 0) {
    c = 0;
    a = sqq > 0 ? sqx / sqq : 0;
  }
  const v8f va = splat(a), vc = splat(c);
  v8f le{};
  for (int i = 0; i < n / 8; ++i) {
    const v8f r = va * q[i] + vc - x[i];
    le += r * r;
  }
  return lane_sum(le);
}

// Fits one sub-block as x ~= scale*q - offset, q in [0, nmax], offset >= 0: try grids that
// span [min(x, 0), max(x)] with slightly fewer or more steps than nmax, fit each by least
// squares, re-assign codes to the best fit twice. Outputs scale >= 0 and offset >= 0.
template <int n>
static void fit_affine(const float* xs, int nmax, float& scale, float& offset) {
  v8f x[n / 8];
  v8f vlo = load8(xs), vhi = vlo;
  for (int i = 0; i < n / 8; ++i) {
    x[i] = load8(xs + 8 * i);
    vlo = x[i] < vlo ? x[i] : vlo;
    vhi = x[i] > vhi ? x[i] : vhi;
  }
  float lo = 0.0f, hi = vhi[0];  // lo = min(x, 0)
  for (int k = 0; k < 8; ++k) {
    lo = fminq(lo, vlo[k]);
    hi = fmaxq(hi, vhi[k]);
  }
  scale = 0;
  offset = -lo;
  if (!(hi > lo)) return;  // constant (or NaN) sub-block
  v8f q[n / 8];
  float best = INFINITY;
  for (int k = -10; k <= 10; ++k) {
    const v8f iscale = splat(((float)nmax + 0.1f * (float)k) / (hi - lo));
    for (int i = 0; i < n / 8; ++i) q[i] = round_clamp8(iscale * (x[i] - splat(lo)), 0.0f, (float)nmax);
    float a, c;
    const float err = lsq_affine<n>(x, q, true, a, c);
    if (a > 0 && err < best) {
      best = err;
      scale = a;
      offset = -c;
    }
  }
  for (int pass = 0; pass < 2 && scale > 0; ++pass) {
    for (int i = 0; i < n / 8; ++i) q[i] = round_clamp8((x[i] + splat(offset)) / splat(scale), 0.0f, (float)nmax);
    float a, c;
    const float err = lsq_affine<n>(x, q, true, a, c);
    if (!(a > 0 && err < best)) break;
    best = err;
    scale = a;
    offset = -c;
  }
}

// Fits one sub-block as x ~= scale*q, q in [-(nmax+1), nmax]. The value of largest magnitude
// maps near the wider negative end (scale may be negative), then least squares refines.
template <int n>
static float fit_symmetric(const float* xs, int nmax) {
  float amax = 0, max = 0;
  for (int i = 0; i < n; ++i) {
    if (amax < fabsf(xs[i])) {
      amax = fabsf(xs[i]);
      max = xs[i];
    }
  }
  if (!(amax > 0)) return 0;
  v8f x[n / 8], q[n / 8];
  for (int i = 0; i < n / 8; ++i) x[i] = load8(xs + 8 * i);
  float best = INFINITY, scale = max / -(float)(nmax + 1);
  for (int k = -10; k <= 10; ++k) {
    const v8f iscale = splat(-((float)(nmax + 1) + 0.1f * (float)k) / max);
    v8f lxq{}, lqq{};
    for (int i = 0; i < n / 8; ++i) {
      q[i] = round_clamp8(iscale * x[i], -(float)(nmax + 1), (float)nmax);
      lxq += x[i] * q[i];
      lqq += q[i] * q[i];
    }
    const float sqq = lane_sum(lqq);
    if (sqq == 0) continue;
    const v8f a = splat(lane_sum(lxq) / sqq);
    v8f le{};
    for (int i = 0; i < n / 8; ++i) {
      const v8f r = a * q[i] - x[i];
      le += r * r;
    }
    const float err = lane_sum(le);
    if (err < best) {
      best = err;
      scale = a[0];
    }
  }
  return scale;
}

// Shared by Q4_K and Q5_K: fits 8 sub-blocks of 32, quantizes their scales and offsets to
// 6 bits, writes d, dmin and the packed scales, and returns each element's code in L.
static void k_quant_affine(const float* x, uint8_t* d_out, uint8_t* scales_out, int nmax, uint8_t* L) {
  float scale[8], offset[8], max_scale = 0, max_offset = 0;
  for (int sb = 0; sb < 8; ++sb) {
    fit_affine<32>(x + 32 * sb, nmax, scale[sb], offset[sb]);
    max_scale = fmaxq(max_scale, scale[sb]);
    max_offset = fmaxq(max_offset, offset[sb]);
  }
  const uint16_t d16 = fp32_to_fp16(max_scale / 63.0f);
  const uint16_t dmin16 = fp32_to_fp16(max_offset / 63.0f);
  const float d = fp16_to_fp32(d16), dmin = fp16_to_fp32(dmin16);
  int sc[8], mn[8];
  for (int sb = 0; sb < 8; ++sb) {
    sc[sb] = d > 0 ? round_clamp(scale[sb] / d, 0, 63) : 0;
    mn[sb] = dmin > 0 ? round_clamp(offset[sb] / dmin, 0, 63) : 0;
  }
  store_u16(d_out, d16);
  store_u16(d_out + 2, dmin16);
  for (int j = 0; j < 4; ++j) {
    scales_out[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
    scales_out[j + 4] = (uint8_t)(mn[j] | ((mn[j + 4] >> 4) << 6));
    scales_out[j + 8] = (uint8_t)((sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4));
  }
  // Codes against the scales as stored, so rounding of the scales is compensated.
  for (int sb = 0; sb < 8; ++sb) {
    const float dl = d * (float)sc[sb], ml = dmin * (float)mn[sb];
    for (int j = 0; j < 32; ++j) {
      const float v = x[32 * sb + j];
      L[32 * sb + j] = (uint8_t)(dl > 0 ? round_clamp((v + ml) / dl, 0, nmax) : 0);
    }
  }
}

static void q_q4_k(const float* x, uint8_t* b, int64_t nb) {
  using namespace layout;
  for (int64_t i = 0; i < nb; ++i, x += QK_K, b += 144) {
    uint8_t L[QK_K];
    k_quant_affine(x, b + q4k_d, b + q4k_scales, 15, L);
    uint8_t* qs = b + q4k_qs;
    for (int g = 0; g < 4; ++g)
      for (int j = 0; j < 32; ++j) qs[32 * g + j] = (uint8_t)(L[64 * g + j] | (L[64 * g + 32 + j] << 4));
  }
}

static void q_q5_k(const float* x, uint8_t* b, int64_t nb) {
  using namespace layout;
  for (int64_t i = 0; i < nb; ++i, x += QK_K, b += 176) {
    uint8_t L[QK_K];
    k_quant_affine(x, b + q5k_d, b + q5k_scales, 31, L);
    uint8_t* qh = b + q5k_qh;
    uint8_t* qs = b + q5k_qs;
    std::memset(qh, 0, 32);
    for (int g = 0; g < 4; ++g)
      for (int j = 0; j < 32; ++j)
        qs[32 * g + j] = (uint8_t)((L[64 * g + j] & 0xF) | ((L[64 * g + 32 + j] & 0xF) << 4));
    for (int sb = 0; sb < 8; ++sb)
      for (int j = 0; j < 32; ++j) qh[j] |= (uint8_t)((L[32 * sb + j] >> 4) << sb);
  }
}

static void q_q6_k(const float* x, uint8_t* b, int64_t nb) {
  using namespace layout;
  for (int64_t i = 0; i < nb; ++i, x += QK_K, b += 210) {
    float scale[16], amax = 0, max = 0;
    for (int g = 0; g < 16; ++g) {
      scale[g] = fit_symmetric<16>(x + 16 * g, 31);
      if (amax < fabsf(scale[g])) {
        amax = fabsf(scale[g]);
        max = scale[g];
      }
    }
    // The largest scale maps to -128, the wide end of int8, as in the sub-blocks.
    const uint16_t d16 = fp32_to_fp16(max / -128.0f);
    const float d = fp16_to_fp32(d16);
    int8_t* sc = reinterpret_cast<int8_t*>(b + q6k_scales);
    uint8_t L[QK_K];
    for (int g = 0; g < 16; ++g) {
      sc[g] = (int8_t)(d != 0 ? round_clamp(scale[g] / d, -128, 127) : 0);
      const float dl = d * (float)sc[g];
      for (int j = 0; j < 16; ++j) {
        const float v = x[16 * g + j];
        L[16 * g + j] = (uint8_t)((dl != 0 ? round_clamp(v / dl, -32, 31) : 0) + 32);
      }
    }
    store_u16(b + q6k_d, d16);
    uint8_t* ql = b + q6k_ql;
    uint8_t* qh = b + q6k_qh;
    for (int g = 0; g < 2; ++g) {
      for (int j = 0; j < 64; ++j)
        ql[64 * g + j] = (uint8_t)((L[128 * g + j] & 0xF) | ((L[128 * g + 64 + j] & 0xF) << 4));
      for (int j = 0; j < 32; ++j) {
        uint8_t h = 0;
        for (int t = 0; t < 4; ++t) h |= (uint8_t)((L[128 * g + 32 * t + j] >> 4) << (2 * t));
        qh[32 * g + j] = h;
      }
    }
  }
}

}  // namespace KTX_ISA_NS
}  // namespace ktx
