// Dequantizers for every GGUF type ktx reads, into float32. Included once per ISA (see
// quants_impl.h); the loops are written so the compiler vectorizes them with that ISA.
//
// They must agree bit for bit with gguf-py's numpy dequantizers, so the arithmetic follows
// theirs step by step: each product and difference rounded on its own (the build passes
// -ffp-contract=off, so `a * b - c` is never fused), scales formed in the same order.
#pragma once
#include <cstdint>

#include "fp16.h"
#include "ggml_types.h"
#include "iq_grids.h"

#if defined(__AVX512F__) || defined(__AVX2__) || defined(__BMI2__)
#include <immintrin.h>
#endif

namespace ktx {
namespace KTX_ISA_NS {

static void dq_f32(const uint8_t* src, float* y, int64_t n) {
  const float* x = reinterpret_cast<const float*>(src);
  for (int64_t i = 0; i < n; ++i) y[i] = x[i];
}

static void dq_f16(const uint8_t* src, float* y, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  // maskz form: GCC 12's plain _mm512_cvtph_ps trips -Wmaybe-uninitialized in its own header.
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(y + i, _mm512_maskz_cvtph_ps(0xFFFF, _mm256_loadu_si256((const __m256i*)(src + 2 * i))));
#elif defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(src + 2 * i))));
#endif
  for (; i < n; ++i) y[i] = fp16_to_fp32(src + 2 * i);
}

static void dq_bf16(const uint8_t* src, float* y, int64_t n) {
  const uint16_t* x = reinterpret_cast<const uint16_t*>(src);
  uint32_t* out = reinterpret_cast<uint32_t*>(y);
  for (int64_t i = 0; i < n; ++i) out[i] = (uint32_t)x[i] << 16;
}

// Q4_0: y[j] = d * (lo(qs[j]) - 8), y[j + 16] = d * (hi(qs[j]) - 8).
static void dq_q4_0(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 18, y += 32) {
    const float d = fp16_to_fp32(b);
    const uint8_t* qs = b + 2;
    for (int j = 0; j < 16; ++j) y[j] = d * (float)((qs[j] & 0xF) - 8);
    for (int j = 0; j < 16; ++j) y[j + 16] = d * (float)((qs[j] >> 4) - 8);
  }
}

// Q4_1: y = d * q + m, q unsigned 4-bit in Q4_0's order.
static void dq_q4_1(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 20, y += 32) {
    const float d = fp16_to_fp32(b), m = fp16_to_fp32(b + 2);
    const uint8_t* qs = b + 4;
    for (int j = 0; j < 16; ++j) y[j] = d * (float)(qs[j] & 0xF) + m;
    for (int j = 0; j < 16; ++j) y[j + 16] = d * (float)(qs[j] >> 4) + m;
  }
}

// Q5_0: the fifth bit of element j is bit j of the little-endian u32 qh; y = d * (q - 16).
static void dq_q5_0(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 22, y += 32) {
    const float d = fp16_to_fp32(b);
    const uint32_t qh = load_u32(b + 2);
    const uint8_t* qs = b + 6;
    for (int j = 0; j < 16; ++j) {
      const int lo = (qs[j] & 0xF) | (int)(((qh >> j) & 1u) << 4);
      const int hi = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4);
      y[j] = d * (float)(lo - 16);
      y[j + 16] = d * (float)(hi - 16);
    }
  }
}

static void dq_q5_1(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 24, y += 32) {
    const float d = fp16_to_fp32(b), m = fp16_to_fp32(b + 2);
    const uint32_t qh = load_u32(b + 4);
    const uint8_t* qs = b + 8;
    for (int j = 0; j < 16; ++j) {
      const int lo = (qs[j] & 0xF) | (int)(((qh >> j) & 1u) << 4);
      const int hi = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4);
      y[j] = d * (float)lo + m;
      y[j + 16] = d * (float)hi + m;
    }
  }
}

static void dq_q8_0(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 34, y += 32) {
    const float d = fp16_to_fp32(b);
    const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
    for (int j = 0; j < 32; ++j) y[j] = (float)qs[j] * d;
  }
}

// Q2_K: 16 groups of 16; scales[k] holds group k's scale (low nibble) and min (high
// nibble). Element g*128 + s*32 + j is bits 2s..2s+1 of qs[g*32 + j].
static void dq_q2_k(const uint8_t* __restrict b, float* __restrict y, int64_t nb) {
  using namespace layout;
  for (int64_t i = 0; i < nb; ++i, b += 84, y += QK_K) {
    const float d = fp16_to_fp32(b + q2k_d), dmin = fp16_to_fp32(b + q2k_dmin);
    const uint8_t* sc = b + q2k_scales;
    for (int g = 0; g < 2; ++g)
      for (int s = 0; s < 4; ++s) {
        const uint8_t* q = b + q2k_qs + 32 * g;
        float* out = y + 128 * g + 32 * s;
        for (int h = 0; h < 2; ++h) {  // two groups of 16 share these 32 bytes
          const int k = 8 * g + 2 * s + h;
          const float dl = d * (float)(sc[k] & 0xF), ml = dmin * (float)(sc[k] >> 4);
          for (int j = 16 * h; j < 16 * h + 16; ++j) out[j] = dl * (float)((q[j] >> (2 * s)) & 3) - ml;
        }
      }
  }
}

// Q3_K: 16 groups of 16 with 6-bit signed scales (low 4 bits in bytes 0..7, high 2 bits in
// bytes 8..11). Low two bits of element g*128 + s*32 + j come from qs like Q2_K; its third bit
// is bit s' of hmask[j] for element s'*32 + j, and a *clear* bit subtracts 4.
static void dq_q3_k(const uint8_t* __restrict b, float* __restrict y, int64_t nb) {
  using namespace layout;
  for (int64_t i = 0; i < nb; ++i, b += 110, y += QK_K) {
    const float d = fp16_to_fp32(b + q3k_d);
    const uint8_t* hm = b + q3k_hmask;
    const uint8_t* sc = b + q3k_scales;
    for (int g = 0; g < 2; ++g)
      for (int s = 0; s < 4; ++s) {
        const uint8_t* q = b + q3k_qs + 32 * g;
        const int hs = 4 * g + s;  // this run of 32 is hmask bit hs
        float* out = y + 128 * g + 32 * s;
        for (int h = 0; h < 2; ++h) {
          const int k = 8 * g + 2 * s + h;
          const int lo = k < 8 ? (sc[k] & 0xF) : (sc[k - 8] >> 4);
          const int hi = (sc[8 + k % 4] >> (2 * (k / 4))) & 3;
          const float dl = d * (float)((int8_t)(lo | (hi << 4)) - 32);
          for (int j = 16 * h; j < 16 * h + 16; ++j) {
            const int low = (q[j] >> (2 * s)) & 3;
            const int neg = ((hm[j] >> hs) & 1) ? 0 : 4;
            out[j] = dl * (float)(low - neg);
          }
        }
      }
  }
}

// The 12-byte K-quant scale field -> 8 six-bit scales and 8 mins, one byte each (byte j of
// the result is sub-block j's): sub-block j < 4 keeps the low 6 bits of bytes j (scale) and
// j + 4 (min); j >= 4 takes a nibble of byte j + 4 and the top two bits of bytes j - 4 (scale)
// and j (min). Four bytes at a time; the int8 kernels (qdot_impl.h) use it too.
static inline uint64_t kq_unpack(const uint8_t* s, uint64_t& mins) {
  const uint32_t w0 = load_u32(s), w1 = load_u32(s + 4), w2 = load_u32(s + 8);
  const uint64_t sc = (uint64_t)(w0 & 0x3F3F3F3Fu) |
                      (uint64_t)((w2 & 0x0F0F0F0Fu) | ((w0 >> 2) & 0x30303030u)) << 32;
  mins = (uint64_t)(w1 & 0x3F3F3F3Fu) | (uint64_t)(((w2 >> 4) & 0x0F0F0F0Fu) | ((w1 >> 2) & 0x30303030u)) << 32;
  return sc;
}

static inline int byte_of(uint64_t v, int j) { return (int)((v >> (8 * j)) & 0xFF); }

// Q4_K: 8 sub-blocks of 32: y = (d*sc) * q - (dmin*mn). Element g*64 + s*32 + j is
// nibble s of qs[g*32 + j].
static void dq_q4_k(const uint8_t* b, float* y, int64_t nb) {
  using namespace layout;
  for (int64_t i = 0; i < nb; ++i, b += 144, y += QK_K) {
    const float d = fp16_to_fp32(b + q4k_d), dmin = fp16_to_fp32(b + q4k_dmin);
    const uint8_t* qs = b + q4k_qs;
    uint64_t mns;
    const uint64_t scs = kq_unpack(b + q4k_scales, mns);
    for (int sb = 0; sb < 8; ++sb) {
      const float dl = d * (float)byte_of(scs, sb), ml = dmin * (float)byte_of(mns, sb);
      const uint8_t* q = qs + (sb / 2) * 32;
      const int shift = 4 * (sb % 2);
      float* out = y + sb * 32;
      for (int j = 0; j < 32; ++j) out[j] = dl * (float)((q[j] >> shift) & 0xF) - ml;
    }
  }
}

// Q5_K: Q4_K plus a fifth bit: bit sb of qh[j] for element sb*32 + j.
static void dq_q5_k(const uint8_t* b, float* y, int64_t nb) {
  using namespace layout;
  for (int64_t i = 0; i < nb; ++i, b += 176, y += QK_K) {
    const float d = fp16_to_fp32(b + q5k_d), dmin = fp16_to_fp32(b + q5k_dmin);
    const uint8_t* qh = b + q5k_qh;
    const uint8_t* qs = b + q5k_qs;
    uint64_t mns;
    const uint64_t scs = kq_unpack(b + q5k_scales, mns);
    for (int sb = 0; sb < 8; ++sb) {
      const float dl = d * (float)byte_of(scs, sb), ml = dmin * (float)byte_of(mns, sb);
      const uint8_t* q = qs + (sb / 2) * 32;
      const int shift = 4 * (sb % 2);
      float* out = y + sb * 32;
      for (int j = 0; j < 32; ++j) {
        const int v = ((q[j] >> shift) & 0xF) | (((qh[j] >> sb) & 1) << 4);
        out[j] = dl * (float)v - ml;
      }
    }
  }
}

// Q6_K: 16 groups of 16 with int8 scales; y = (d*sc) * (q - 32). Element g*128 + s*64 + j
// (j < 64) takes nibble s of ql[g*64 + j]; element g*128 + t*32 + j (j < 32) takes bits
// 2t..2t+1 of qh[g*32 + j] as its high two bits.
static void dq_q6_k(const uint8_t* __restrict b, float* __restrict y, int64_t nb) {
  using namespace layout;
  for (int64_t i = 0; i < nb; ++i, b += 210, y += QK_K) {
    const float d = fp16_to_fp32(b + q6k_d);
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + q6k_scales);
    for (int g = 0; g < 2; ++g)
      for (int t = 0; t < 4; ++t) {  // the run of 32 at g*128 + t*32
        const uint8_t* ql = b + q6k_ql + 64 * g + 32 * (t % 2);
        const uint8_t* qh = b + q6k_qh + 32 * g;
        const int s = t / 2;
        float* out = y + 128 * g + 32 * t;
        for (int h = 0; h < 2; ++h) {
          const float dl = d * (float)sc[8 * g + 2 * t + h];
          for (int j = 16 * h; j < 16 * h + 16; ++j) {
            const int v = ((ql[j] >> (4 * s)) & 0xF) | (((qh[j] >> (2 * t)) & 3) << 4);
            out[j] = dl * (float)(v - 32);
          }
        }
      }
  }
}

// Writes d * book[q & 15] for 16 bytes of nibbles to out[0..16) (low nibbles) and
// out[16..32) (high nibbles): the layout shared by IQ4_NL blocks, IQ4_XS sub-blocks and MXFP4.
static inline void book_run(const int8_t* __restrict book, const uint8_t* __restrict qs, float dl,
                            float* __restrict out) {
#if defined(__AVX2__)
  // A byte shuffle is a 16-entry table lookup; the compiler cannot vectorize the gather.
  const __m128i table = _mm_loadu_si128((const __m128i*)book);
  const __m128i nib = _mm_set1_epi8(0x0F);
  const __m128i q = _mm_loadu_si128((const __m128i*)qs);
  const __m128i lo = _mm_shuffle_epi8(table, _mm_and_si128(q, nib));
  const __m128i hi = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(q, 4), nib));
  const __m256 vd = _mm256_set1_ps(dl);
  const __m128i runs[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
  for (int r = 0; r < 4; ++r)
    _mm256_storeu_ps(out + 8 * r, _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(runs[r]))));
#else
  for (int j = 0; j < 16; ++j) out[j] = dl * (float)book[qs[j] & 0xF];
  for (int j = 0; j < 16; ++j) out[j + 16] = dl * (float)book[qs[j] >> 4];
#endif
}

static inline void iq4_run(const uint8_t* __restrict qs, float dl, float* __restrict out) {
  book_run(kIQ4Values, qs, dl, out);
}

// MXFP4: y = e8m0_half(e) * book[q], IQ4_NL's nibble order (gguf-py: d * float(q)).
static void dq_mxfp4(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 17, y += 32) book_run(kMXFP4Values, b + 1, e8m0_half(b[0]), y);
}

// IQ4_NL: Q4_0's layout, but each nibble indexes the non-linear code book.
static void dq_iq4_nl(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 18, y += 32) iq4_run(b + 2, fp16_to_fp32(b), y);
}

// IQ4_XS's eight 6-bit sub-block scales (before the -32), one byte each: low nibbles from
// scales_l, high pairs of bits from scales_h (deposited into the bytes with pdep on BMI2).
static inline uint64_t iq4xs_scales(const uint8_t* b) {
  using namespace layout;
#if defined(__BMI2__)
  return _pdep_u64(load_u32(b + iq4xs_scales_l), 0x0F0F0F0F0F0F0F0FULL) |
         _pdep_u64(load_u16(b + iq4xs_scales_h), 0x3030303030303030ULL);
#else
  const uint16_t sh = load_u16(b + iq4xs_scales_h);
  uint64_t v = 0;
  for (int sb = 0; sb < 8; ++sb) {
    const uint64_t lo = (b[iq4xs_scales_l + sb / 2] >> (4 * (sb % 2))) & 0xF, hi = (sh >> (2 * sb)) & 3;
    v |= (lo | (hi << 4)) << (8 * sb);
  }
  return v;
#endif
}

// IQ4_XS: 8 sub-blocks of 32 with 6-bit signed scales (iq4xs_scales); within a sub-block,
// IQ4_NL's nibble order over 16 bytes.
static void dq_iq4_xs(const uint8_t* b, float* y, int64_t nb) {
  using namespace layout;
  for (int64_t i = 0; i < nb; ++i, b += 136, y += QK_K) {
    const float d = fp16_to_fp32(b + iq4xs_d);
    const uint64_t ls = iq4xs_scales(b);
    for (int sb = 0; sb < 8; ++sb) {
      const float dl = d * (float)(byte_of(ls, sb) - 32);
      iq4_run(b + iq4xs_qs + sb * 16, dl, y + sb * 32);
    }
  }
}

// NVFP4: MXFP4's book, an E4M3 scale per 16 values (ggml_types.h).
static void dq_nvfp4(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 36, y += 64)
    for (int s = 0; s < 4; ++s) {
      const float d = ue4m3_half(b[s]);
      const uint8_t* qs = b + 4 + 8 * s;
      for (int j = 0; j < 8; ++j) y[16 * s + j] = d * (float)kMXFP4Values[qs[j] & 0xF];
      for (int j = 0; j < 8; ++j) y[16 * s + 8 + j] = d * (float)kMXFP4Values[qs[j] >> 4];
    }
}

// ---- the low-bit types: i-quants (code books, iq_grids.h) and ternary TQ ------------------
// Each follows gguf-py's numpy order: the scale of a group is formed first (d * (...) in
// float32), then the value is scale * grid value (and its sign applied, which is exact).

static inline float signed_of(float v, unsigned signs, int j) { return ((signs >> j) & 1) ? -v : v; }

// IQ2_XXS: 8 runs of 32; run ib has u32 grid indices (one byte per 8 values) and u32 of 4 x 7
// sign bits (ksigns expands each to 8) with the run's scale in its top 4 bits.
static void dq_iq2_xxs(const uint8_t* b, float* y, int64_t nb) {
  const IQGrids& G = iq_grids();
  for (int64_t i = 0; i < nb; ++i, b += 66, y += QK_K) {
    const float d = fp16_to_fp32(b);
    for (int ib = 0; ib < 8; ++ib) {
      const uint32_t idx = load_u32(b + 2 + 8 * ib), aux = load_u32(b + 6 + 8 * ib);
      const float db = d * (0.5f + (float)(aux >> 28)) * 0.25f;
      for (int l = 0; l < 4; ++l) {
        const int8_t* g = G.iq2xxs + 8 * ((idx >> (8 * l)) & 0xFF);
        const unsigned signs = G.ksigns[(aux >> (7 * l)) & 127];
        for (int j = 0; j < 8; ++j) y[32 * ib + 8 * l + j] = signed_of(db * (float)g[j], signs, j);
      }
    }
  }
}

// The 4-bit scale of group k (of 8 values) in IQ2_XS / IQ2_S: nibble k / 2 of the scales bytes.
static inline float iq2_scale(const uint8_t* scales, int k, float d) {
  const int s = (scales[k / 4] >> (4 * ((k / 2) % 2))) & 0xF;
  return d * (0.5f + (float)s) * 0.25f;
}

// IQ2_XS: 32 groups of 8, each a u16 of a 9-bit grid index and 7 sign bits.
static void dq_iq2_xs(const uint8_t* b, float* y, int64_t nb) {
  using namespace layout;
  const IQGrids& G = iq_grids();
  for (int64_t i = 0; i < nb; ++i, b += 74, y += QK_K) {
    const float d = fp16_to_fp32(b);
    for (int k = 0; k < 32; ++k) {
      const uint16_t q = load_u16(b + iq2xs_qs + 2 * k);
      const float db = iq2_scale(b + iq2xs_scales, k, d);
      const int8_t* g = G.iq2xs + 8 * (q & 511);
      const unsigned signs = G.ksigns[q >> 9];
      for (int j = 0; j < 8; ++j) y[8 * k + j] = signed_of(db * (float)g[j], signs, j);
    }
  }
}

// IQ2_S: a 10-bit grid index per group of 8 (a byte of qs, two bits of qh), a sign byte each.
static void dq_iq2_s(const uint8_t* b, float* y, int64_t nb) {
  using namespace layout;
  const IQGrids& G = iq_grids();
  for (int64_t i = 0; i < nb; ++i, b += 82, y += QK_K) {
    const float d = fp16_to_fp32(b);
    for (int k = 0; k < 32; ++k) {
      const int idx = b[iq2s_qs + k] | (((b[iq2s_qh + k / 4] >> (2 * (k % 4))) & 3) << 8);
      const float db = iq2_scale(b + iq2s_scales, k, d);
      const int8_t* g = G.iq2s + 8 * idx;
      const unsigned signs = b[iq2s_signs + k];
      for (int j = 0; j < 8; ++j) y[8 * k + j] = signed_of(db * (float)g[j], signs, j);
    }
  }
}

// IQ3_XXS: 8 runs of 32; grid entries of 4 values (a byte of qs each), a u32 per run of 4 x 7
// sign bits and the run's scale in the top 4 bits.
static void dq_iq3_xxs(const uint8_t* b, float* y, int64_t nb) {
  using namespace layout;
  const IQGrids& G = iq_grids();
  for (int64_t i = 0; i < nb; ++i, b += 98, y += QK_K) {
    const float d = fp16_to_fp32(b);
    for (int ib = 0; ib < 8; ++ib) {
      const uint32_t aux = load_u32(b + iq3xxs_ss + 4 * ib);
      const float db = d * (0.5f + (float)(aux >> 28)) * 0.5f;
      for (int l = 0; l < 4; ++l) {
        const unsigned signs = G.ksigns[(aux >> (7 * l)) & 127];
        const int8_t* g0 = G.iq3xxs + 4 * b[iq3xxs_qs + 8 * ib + 2 * l];
        const int8_t* g1 = G.iq3xxs + 4 * b[iq3xxs_qs + 8 * ib + 2 * l + 1];
        float* out = y + 32 * ib + 8 * l;
        for (int j = 0; j < 4; ++j) out[j] = signed_of(db * (float)g0[j], signs, j);
        for (int j = 0; j < 4; ++j) out[4 + j] = signed_of(db * (float)g1[j], signs, 4 + j);
      }
    }
  }
}

// IQ3_S: 9-bit grid indices (qs byte, one qh bit) of 4 values, a sign byte per 8 values, an
// odd scale 1 + 2 * s per run of 32.
static void dq_iq3_s(const uint8_t* b, float* y, int64_t nb) {
  using namespace layout;
  const IQGrids& G = iq_grids();
  for (int64_t i = 0; i < nb; ++i, b += 110, y += QK_K) {
    const float d = fp16_to_fp32(b);
    for (int ib = 0; ib < 8; ++ib) {
      const int s = (b[iq3s_scales + ib / 2] >> (4 * (ib % 2))) & 0xF;
      const float db = d * (float)(1 + 2 * s);
      for (int l = 0; l < 4; ++l) {
        const unsigned signs = b[iq3s_signs + 4 * ib + l];
        for (int h = 0; h < 2; ++h) {
          const int m = 8 * ib + 2 * l + h;
          const int idx = b[iq3s_qs + m] | (((b[iq3s_qh + m / 8] >> (m % 8)) & 1) << 8);
          const int8_t* g = G.iq3s + 4 * idx;
          for (int j = 0; j < 4; ++j) y[32 * ib + 8 * l + 4 * h + j] = signed_of(db * (float)g[j], signs, 4 * h + j);
        }
      }
    }
  }
}

// IQ1_S: 11-bit grid indices (qs byte + 3 bits of the run's u16 qh) of 8 values in {-1, 0, 1},
// shifted by +-kIQ1Delta (qh's top bit); the run's odd scale 2 * s + 1 from qh bits 12-14.
static void dq_iq1_s(const uint8_t* b, float* y, int64_t nb) {
  using namespace layout;
  const IQGrids& G = iq_grids();
  for (int64_t i = 0; i < nb; ++i, b += 50, y += QK_K) {
    const float d = fp16_to_fp32(b);
    for (int ib = 0; ib < 8; ++ib) {
      const uint16_t qh = load_u16(b + iq1s_qh + 2 * ib);
      const float dl = d * (float)(2 * ((qh >> 12) & 7) + 1);
      const float delta = (qh & 0x8000) ? -kIQ1Delta : kIQ1Delta;
      for (int l = 0; l < 4; ++l) {
        const int8_t* g = G.iq1s + 8 * (b[iq1s_qs + 4 * ib + l] | (((qh >> (3 * l)) & 7) << 8));
        for (int j = 0; j < 8; ++j) y[32 * ib + 8 * l + j] = dl * ((float)g[j] + delta);
      }
    }
  }
}

// IQ1_M's f16 d, spread over the top nibbles of its four scale words.
static inline float iq1m_d(const uint8_t* b) {
  using namespace layout;
  const uint16_t s0 = load_u16(b + iq1m_scales), s1 = load_u16(b + iq1m_scales + 2);
  const uint16_t s2 = load_u16(b + iq1m_scales + 4), s3 = load_u16(b + iq1m_scales + 6);
  return fp16_to_fp32((uint16_t)(((s0 & 0xF000) >> 12) | ((s1 & 0xF000) >> 8) | ((s2 & 0xF000) >> 4) | (s3 & 0xF000)));
}

// IQ1_M: IQ1_S's grid; a nibble of qh per group of 8 (3 index bits, the delta's sign), an odd
// 3-bit scale per 16 values (four per scale word).
static void dq_iq1_m(const uint8_t* b, float* y, int64_t nb) {
  using namespace layout;
  const IQGrids& G = iq_grids();
  for (int64_t i = 0; i < nb; ++i, b += 56, y += QK_K) {
    const float d = iq1m_d(b);
    for (int k = 0; k < 32; ++k) {
      const int c = k / 2;
      const int s = (load_u16(b + iq1m_scales + 2 * (c / 4)) >> (3 * (c % 4))) & 7;
      const float dl = d * (float)(2 * s + 1);
      const int nib = (b[iq1m_qh + k / 2] >> (4 * (k % 2))) & 0xF;
      const float delta = (nib & 8) ? -kIQ1Delta : kIQ1Delta;
      const int8_t* g = G.iq1s + 8 * (b[k] | ((nib & 7) << 8));
      for (int j = 0; j < 8; ++j) y[8 * k + j] = dl * ((float)g[j] + delta);
    }
  }
}

// TQ1_0's ternary digit: byte v holds a base-3 fraction; digit = (v * 3) >> 8 (0, 1 or 2).
static inline int tq1_digit(uint8_t byte, int pow3) { return (((int)(uint8_t)(byte * pow3)) * 3) >> 8; }

// TQ1_0: 160 values from 32 bytes (5 digits each, digit m of every byte, then m + 1, ...), 80
// from the next 16, 16 from the 4 qh bytes (4 digits each); y = d * (digit - 1).
static void dq_tq1_0(const uint8_t* b, float* y, int64_t nb) {
  using namespace layout;
  static const int pow3[5] = {1, 3, 9, 27, 81};
  for (int64_t i = 0; i < nb; ++i, b += 54, y += QK_K) {
    const float d = fp16_to_fp32(b + tq1_d);
    for (int m = 0; m < 5; ++m)
      for (int j = 0; j < 32; ++j) y[32 * m + j] = d * (float)(tq1_digit(b[j], pow3[m]) - 1);
    for (int m = 0; m < 5; ++m)
      for (int j = 0; j < 16; ++j) y[160 + 16 * m + j] = d * (float)(tq1_digit(b[32 + j], pow3[m]) - 1);
    for (int m = 0; m < 4; ++m)
      for (int j = 0; j < 4; ++j) y[240 + 4 * m + j] = d * (float)(tq1_digit(b[tq1_qh + j], pow3[m]) - 1);
  }
}

// TQ2_0: 2-bit digits, bits 2s..2s+1 of qs[32c + j] for value 128c + 32s + j; y = d * (q - 1).
static void dq_tq2_0(const uint8_t* b, float* y, int64_t nb) {
  using namespace layout;
  for (int64_t i = 0; i < nb; ++i, b += 66, y += QK_K) {
    const float d = fp16_to_fp32(b + tq2_d);
    for (int c = 0; c < 2; ++c)
      for (int sh = 0; sh < 4; ++sh)
        for (int j = 0; j < 32; ++j) y[128 * c + 32 * sh + j] = d * (float)(((b[32 * c + j] >> (2 * sh)) & 3) - 1);
  }
}

// float -> bfloat16, round to nearest even, NaN kept NaN. Branch-free so it vectorizes.
static void f32_to_bf16(const float* x, uint16_t* y, int64_t n) {
  const uint32_t* u = reinterpret_cast<const uint32_t*>(x);
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t v = u[i];
    const uint32_t rounded = (v + 0x7fffu + ((v >> 16) & 1u)) >> 16;
    const uint32_t nan = (v >> 16) | 64u;
    y[i] = (uint16_t)(((v & 0x7fffffffu) > 0x7f800000u) ? nan : rounded);
  }
}

}  // namespace KTX_ISA_NS
}  // namespace ktx
