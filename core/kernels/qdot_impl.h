// Matrix products over GGUF-native weights, per ISA (included by quants_impl.h).
//
// The int8 path, as llama.cpp's CPU backend does it (our own code): each activation row is
// quantized to int8 in runs with one float scale d per run (16 values; 256 for Q4_K and
// Q5_K, whose sub-block scales are integers: a super-block's products then sum in integers,
// llama.cpp's Q8_K scheme); each weight row is decoded block by block into int8 values q with
// a float scale a and offset b per group of 16 (w = a * q + b; every GGUF block type of the
// table maps onto that exactly); a product is then sum over groups of a*d * (integer dot of
// the group) + b * (d * sum of the group's activations), d being the group's run's scale.
// The integer dots run on VNNI (AVX-512) or maddubs (AVX2).
//
// The float path (BF16, F16, F32, Q2_K, Q3_K, or any type when exact float32 activations
// are asked for) decodes weight rows to float32 and multiplies float32 activations.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "fp16.h"
#include "ggml_types.h"
#include "kernel_table.h"

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace ktx {
namespace KTX_ISA_NS {

// ---- activations -------------------------------------------------------------------------

// max |x| over n values (n % 16 == 0).
static inline float abs_max(const float* x, int64_t n) {
#if defined(__AVX512F__)
  __m512 m = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(x + i)));
  return _mm512_reduce_max_ps(m);
#elif defined(__AVX2__)
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 m = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
#else
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) amax = std::fmax(amax, std::fabs(x[i]));
  return amax;
#endif
}

// 16 values -> q = round-half-even(x * id) (|q| <= 127 when id = 127 / max|x|); returns sum(q).
static inline int quant16(const float* xg, float id, int8_t* q) {
#if defined(__AVX512F__)
  const __m512i qi = _mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_mul_ps(_mm512_loadu_ps(xg), _mm512_set1_ps(id)),
                                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm512_cvtepi32_epi8(qi));
  return _mm512_reduce_add_epi32(qi);
#elif defined(__AVX2__)
  const __m256 vid = _mm256_set1_ps(id);
  const __m256i q0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(xg), vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  const __m256i q1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(xg + 8), vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  // int32 -> int8 (values within [-127, 127]): pack to 16 bits, then to 8, fix the lane order
  const __m256i p16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8);
  const __m128i p8 = _mm_packs_epi16(_mm256_castsi256_si128(p16), _mm256_extracti128_si256(p16, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), p8);
  __m256i t = _mm256_add_epi32(q0, q1);
  __m128i u = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
  u = _mm_add_epi32(u, _mm_shuffle_epi32(u, 0x4E));
  u = _mm_add_epi32(u, _mm_shuffle_epi32(u, 0xB1));
  return _mm_cvtsi128_si32(u);
#else
  int sum = 0;
  for (int j = 0; j < 16; ++j) {
    const int v = (int)std::nearbyint(xg[j] * id);
    q[j] = (int8_t)v;
    sum += v;
  }
  return sum;
#endif
}

// One row of `cols` floats (cols % group == 0) -> q[cols] int8, each run of `group` values
// (16 or 256) with one scale: d = max|x| / 127 over the run, q = round-half-even(x * (127 /
// max|x|)); per group g of 16, d[g] (its run's d) and s[g] = d[g] * sum(q of the group).
template <int kGroup>
static void quantize_runs(const float* x, int64_t cols, int8_t* q, float* d, float* s) {
  for (int64_t r = 0; r < cols / kGroup; ++r) {
    const float* xr = x + r * kGroup;
    const float amax = abs_max(xr, kGroup);
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f, dd = amax / 127.0f;
    for (int g = 0; g < kGroup / 16; ++g) {
      const int64_t at = r * (kGroup / 16) + g;
      d[at] = dd;
      s[at] = dd * (float)quant16(xr + g * 16, id, q + at * 16);
    }
  }
}

// Groups of 16 (the 32-value block types and IQ4_XS) and runs of 256 (the K-quants, whose
// sub-block scales are then integers against one activation scale, as llama.cpp's Q8_K).
static void quantize_act(const float* x, int64_t cols, int8_t* q, float* d, float* s) {
  quantize_runs<16>(x, cols, q, d, s);
}
static void quantize_act_256(const float* x, int64_t cols, int8_t* q, float* d, float* s) {
  quantize_runs<256>(x, cols, q, d, s);
}

// ---- weight decoders: n_blocks blocks -> q (block_size int8), a and b (block_size / 16) ----

static inline void set2(float* p, float v) { p[0] = p[1] = v; }

// IEEE half -> float: one instruction with F16C (every AVX2 build has it).
static inline float half(const uint8_t* p) {
#if defined(__F16C__)
  return _cvtsh_ss(load_u16(p));
#else
  return fp16_to_fp32(p);
#endif
}

// A block's scale: f16 at its start, or MXFP4's E8M0 byte (the one 17-byte type).
template <int kBytes>
static inline float block_scale(const uint8_t* p) {
  if constexpr (kBytes == 17) return e8m0_half(p[0]);
  return half(p);
}

#if defined(__AVX2__)
static inline float hsum(__m256 v) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}

static inline __m256i load256(const void* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
static inline void store256(void* p, __m256i v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
static inline __m128i load128(const void* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }

// Eight f16 values `stride` bytes apart (block scales) -> floats: gathered, then one conversion.
static inline __m256 f16x8(const uint8_t* p, int stride) {
  __m128i h = _mm_cvtsi32_si128(load_u16(p));
  h = _mm_insert_epi16(h, load_u16(p + stride), 1);
  h = _mm_insert_epi16(h, load_u16(p + 2 * stride), 2);
  h = _mm_insert_epi16(h, load_u16(p + 3 * stride), 3);
  h = _mm_insert_epi16(h, load_u16(p + 4 * stride), 4);
  h = _mm_insert_epi16(h, load_u16(p + 5 * stride), 5);
  h = _mm_insert_epi16(h, load_u16(p + 6 * stride), 6);
  h = _mm_insert_epi16(h, load_u16(p + 7 * stride), 7);
  return _mm256_cvtph_ps(h);
}

// 32 bits -> 32 bytes, 0xFF where the bit is set (byte j <- bit j).
static inline __m256i bits_to_bytes(uint32_t bits) {
  const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3,
                                        3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x(0x8040201008040201LL);
  const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), shuf);
  return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

// 16 nibble bytes -> 32 bytes (low nibbles, then high nibbles).
// (The 16 bytes go to both lanes, shifted by 0 and 4: three instructions where splitting and
// joining the halves took five, in the AVX2 kernels' inner loops.)
static inline __m256i nibbles32(const uint8_t* qs) {
  const __m256i v = _mm256_broadcastsi128_si256(load128(qs));
  return _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0F));
}

// 16 bytes of nibbles -> 32 values of a 16-entry byte table (low nibbles first): IQ4_NL and
// IQ4_XS sub-blocks; `book` holds the table in both lanes.
static inline __m256i book32(__m256i book, const uint8_t* qs) { return _mm256_shuffle_epi8(book, nibbles32(qs)); }

static inline __m256i iq4_book() { return _mm256_broadcastsi128_si256(load128(kIQ4Values)); }

// A Q5_0 / Q5_1 block's 32 unsigned 5-bit values: nibbles, and bit j of qh as element j's fifth.
static inline __m256i q5_values(const uint8_t* qs, uint32_t qh) {
  return _mm256_or_si256(nibbles32(qs), _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(0x10)));
}

// A Q4_K / Q5_K super-block's 256 unsigned values in element order, 32 per register: run j
// of 32 bytes of qs holds sub-blocks 2j (low nibbles) and 2j + 1 (high); Q5_K's fifth bit of
// sub-block s is bit s of qh[l].
template <bool kFive>
static inline void kq_values(const uint8_t* w, __m256i q[8]) {
  const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
  const uint8_t* qs = w + (kFive ? layout::q5k_qs : layout::q4k_qs);
  for (int j = 0; j < 4; ++j) {
    const __m256i v = load256(qs + 32 * j);
    q[2 * j] = _mm256_and_si256(v, m4);
    q[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    if (kFive) {
      const __m256i hb = load256(w + layout::q5k_qh);
      q[2 * j] = _mm256_or_si256(q[2 * j], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * j), one), 4));
      q[2 * j + 1] =
          _mm256_or_si256(q[2 * j + 1], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * j + 1), one), 4));
    }
  }
}

// A Q6_K super-block's 256 unsigned 6-bit values (w = d * sc * (q - 32)) in element order:
// per half h, ql's low then high nibbles of its two 32-byte runs, with bits 2t..2t+1 of qh
// as the high pair of run t.
static inline void q6k_values(const uint8_t* w, __m256i q[8]) {
  using namespace layout;
  const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3);
  for (int h = 0; h < 2; ++h) {
    const __m256i l0 = load256(w + q6k_ql + 64 * h), l1 = load256(w + q6k_ql + 64 * h + 32);
    const __m256i hb = load256(w + q6k_qh + 32 * h);
    auto hi2 = [&](int shift) { return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, shift), m2), 4); };
    q[4 * h] = _mm256_or_si256(_mm256_and_si256(l0, m4), hi2(0));
    q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, m4), hi2(2));
    q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), hi2(4));
    q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), hi2(6));
  }
}

// 32 weight bytes times 32 activation bytes without VNNI: maddubs (unsigned x signed bytes,
// pairs to 16 bits) then madd (pairs to 32 bits): 8 lanes, 4 per group of 16. Unsigned weights
// must stay below 64 (2 * 63 * 127 < 2^15); signed ones go through the sign trick (|q| <= 128
// times x with q's sign; |x| <= 127).
static inline __m256 prod_unsigned(__m256i w, const int8_t* x) {
  const __m256i p = _mm256_maddubs_epi16(w, load256(x));
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

static inline __m256 prod_signed(__m256i w, const int8_t* x) {
  const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(load256(x), w));
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

// 16 per-group values from 16 bytes (signed or unsigned) times f -> out[16] floats.
static inline void bytes_times(__m128i b, bool is_signed, float f, float* out) {
#if defined(__AVX512F__)
  const __m512i v = is_signed ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b);
  _mm512_storeu_ps(out, _mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_set1_ps(f)));
#else
  const __m256 vf = _mm256_set1_ps(f);
  const __m256i lo = is_signed ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b);
  const __m256i hi = is_signed ? _mm256_cvtepi8_epi32(_mm_srli_si128(b, 8)) : _mm256_cvtepu8_epi32(_mm_srli_si128(b, 8));
  _mm256_storeu_ps(out, _mm256_mul_ps(_mm256_cvtepi32_ps(lo), vf));
  _mm256_storeu_ps(out + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(hi), vf));
#endif
}
#endif

// 16 bytes of nibbles -> 32 code-book values (low nibbles first), IQ4_NL / IQ4_XS order.
static inline void iq4_bytes(const uint8_t* qs, int8_t* out) {
#if defined(__AVX2__)
  store256(out, book32(iq4_book(), qs));
#else
  for (int j = 0; j < 16; ++j) out[j] = kIQ4Values[qs[j] & 0xF];
  for (int j = 0; j < 16; ++j) out[j + 16] = kIQ4Values[qs[j] >> 4];
#endif
}

// a[g] = d * sc, b[g] = -(dmin * mn) for the 16 groups of 16 of a K-quant super-block (each
// sub-block of 32 is two groups).
static inline void kq_ab(const uint8_t* s, float d, float dmin, float* a, float* b) {
  uint64_t mn;
  const uint64_t sc = kq_unpack(s, mn);
#if defined(__AVX2__)
  const __m128i scv = _mm_cvtsi64_si128((long long)sc), mnv = _mm_cvtsi64_si128((long long)mn);
  bytes_times(_mm_unpacklo_epi8(scv, scv), false, d, a);
  bytes_times(_mm_unpacklo_epi8(mnv, mnv), false, -dmin, b);
#else
  for (int j = 0; j < 8; ++j) {
    set2(a + 2 * j, d * (float)((sc >> (8 * j)) & 0xFF));
    set2(b + 2 * j, -(dmin * (float)((mn >> (8 * j)) & 0xFF)));
  }
#endif
}

static void dec_q8_0(const uint8_t* w, int64_t nb, int8_t* q, float* a, float* b) {
  for (int64_t i = 0; i < nb; ++i, w += 34, q += 32, a += 2, b += 2) {
    std::memcpy(q, w + 2, 32);
    set2(a, half(w));
    set2(b, 0.0f);
  }
}

// Q4_0 / Q4_1 / IQ4_NL share the nibble order: low nibbles are elements 0..15.
static void dec_q4_0(const uint8_t* w, int64_t nb, int8_t* q, float* a, float* b) {
  for (int64_t i = 0; i < nb; ++i, w += 18, q += 32, a += 2, b += 2) {
#if defined(__AVX2__)
    store256(q, _mm256_sub_epi8(nibbles32(w + 2), _mm256_set1_epi8(8)));
#else
    for (int j = 0; j < 16; ++j) q[j] = (int8_t)((w[2 + j] & 0xF) - 8);
    for (int j = 0; j < 16; ++j) q[j + 16] = (int8_t)((w[2 + j] >> 4) - 8);
#endif
    set2(a, half(w));
    set2(b, 0.0f);
  }
}

static void dec_q4_1(const uint8_t* w, int64_t nb, int8_t* q, float* a, float* b) {
  for (int64_t i = 0; i < nb; ++i, w += 20, q += 32, a += 2, b += 2) {
    for (int j = 0; j < 16; ++j) q[j] = (int8_t)(w[4 + j] & 0xF);
    for (int j = 0; j < 16; ++j) q[j + 16] = (int8_t)(w[4 + j] >> 4);
    set2(a, half(w));
    set2(b, half(w + 2));
  }
}

static void dec_iq4_nl(const uint8_t* w, int64_t nb, int8_t* q, float* a, float* b) {
  for (int64_t i = 0; i < nb; ++i, w += 18, q += 32, a += 2, b += 2) {
    iq4_bytes(w + 2, q);
    set2(a, half(w));
    set2(b, 0.0f);
  }
}

// MXFP4: the doubled E2M1 book (|q| <= 12) and the block's E8M0 scale.
static void dec_mxfp4(const uint8_t* w, int64_t nb, int8_t* q, float* a, float* b) {
  for (int64_t i = 0; i < nb; ++i, w += 17, q += 32, a += 2, b += 2) {
#if defined(__AVX2__)
    store256(q, book32(_mm256_broadcastsi128_si256(load128(kMXFP4Values)), w + 1));
#else
    for (int j = 0; j < 16; ++j) q[j] = kMXFP4Values[w[1 + j] & 0xF];
    for (int j = 0; j < 16; ++j) q[j + 16] = kMXFP4Values[w[1 + j] >> 4];
#endif
    set2(a, e8m0_half(w[0]));
    set2(b, 0.0f);
  }
}

// NVFP4: its scale per 16 values is exactly a group's a.
static void dec_nvfp4(const uint8_t* w, int64_t nb, int8_t* q, float* a, float* b) {
  for (int64_t i = 0; i < nb; ++i, w += 36, q += 64, a += 4, b += 4)
    for (int s = 0; s < 4; ++s) {
      a[s] = ue4m3_half(w[s]), b[s] = 0.0f;
      const uint8_t* qs = w + 4 + 8 * s;
      for (int j = 0; j < 8; ++j) q[16 * s + j] = kMXFP4Values[qs[j] & 0xF];
      for (int j = 0; j < 8; ++j) q[16 * s + 8 + j] = kMXFP4Values[qs[j] >> 4];
    }
}

// ---- the low-bit types (dequant_impl.h describes their layouts) -----------------------------
// Their values are small integers (grid entries with signs; IQ1's grid +- 1/8 as 8 * g +- 1
// over a scale divided by 8, both exact), so a * q equals the dequantized value bit for bit.

static inline uint64_t load_u64(const void* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
static inline uint64_t grid4(const int8_t* p) {  // one 4-byte grid entry
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Four groups of 8 grid bytes (g[k] little-endian) with 32 sign bits (bit 8k + j negates value
// j of group k) -> q[32]; IQ1 (`iq1`): 8 * g + delta[k] instead, delta[k] = +-1, no signs.
static inline void grid32(const uint64_t g[4], uint32_t signs, int8_t* q) {
#if defined(__AVX2__)
  const __m256i v = _mm256_setr_epi64x((long long)g[0], (long long)g[1], (long long)g[2], (long long)g[3]);
  const __m256i m = bits_to_bytes(signs);  // 0xFF where negated: (v ^ m) - m = -v
  store256(q, _mm256_sub_epi8(_mm256_xor_si256(v, m), m));
#else
  for (int k = 0; k < 4; ++k)
    for (int j = 0; j < 8; ++j) {
      const int8_t x = (int8_t)(g[k] >> (8 * j));
      q[8 * k + j] = ((signs >> (8 * k + j)) & 1) ? (int8_t)-x : x;
    }
#endif
}

static inline void iq1_grid32(const uint64_t g[4], const bool minus[4], int8_t* q) {
#if defined(__AVX2__)
  const __m256i v = _mm256_setr_epi64x((long long)g[0], (long long)g[1], (long long)g[2], (long long)g[3]);
  const long long one = 0x0101010101010101LL, neg = -1LL;  // bytes of +1 / -1
  const __m256i delta = _mm256_setr_epi64x(minus[0] ? neg : one, minus[1] ? neg : one, minus[2] ? neg : one,
                                           minus[3] ? neg : one);
  const __m256i v2 = _mm256_add_epi8(v, v), v4 = _mm256_add_epi8(v2, v2);
  store256(q, _mm256_add_epi8(_mm256_add_epi8(v4, v4), delta));
#else
  for (int k = 0; k < 4; ++k)
    for (int j = 0; j < 8; ++j) q[8 * k + j] = (int8_t)(8 * (int8_t)(g[k] >> (8 * j)) + (minus[k] ? -1 : 1));
#endif
}

static inline void set_ab(float* a, float* b, int groups, float v) {
  for (int k = 0; k < groups; ++k) a[k] = v, b[k] = 0.0f;
}

// 4 sign bytes (IQ2_S, IQ3_S) or 4 x 7 bits through ksigns (IQ2_XXS, IQ3_XXS) -> 32 sign bits.
static inline uint32_t signs4(const uint8_t* p) { return load_u32(p); }
static inline uint32_t ksigns4(uint32_t aux, const uint8_t* ksigns) {
  return (uint32_t)ksigns[aux & 127] | (uint32_t)ksigns[(aux >> 7) & 127] << 8 |
         (uint32_t)ksigns[(aux >> 14) & 127] << 16 | (uint32_t)ksigns[(aux >> 21) & 127] << 24;
}

static void dec_iq2_xxs(const uint8_t* w, int64_t nb, int8_t* q, float* a, float* b) {
  const IQGrids& G = iq_grids();
  for (int64_t i = 0; i < nb; ++i, w += 66, q += QK_K, a += 16, b += 16) {
    const float d = half(w);
    for (int ib = 0; ib < 8; ++ib) {
      const uint32_t idx = load_u32(w + 2 + 8 * ib), aux = load_u32(w + 6 + 8 * ib);
      set_ab(a + 2 * ib, b + 2 * ib, 2, d * (0.5f + (float)(aux >> 28)) * 0.25f);
      uint64_t g[4];
      for (int l = 0; l < 4; ++l) g[l] = load_u64(G.iq2xxs + 8 * ((idx >> (8 * l)) & 0xFF));
      grid32(g, ksigns4(aux, G.ksigns), q + 32 * ib);
    }
  }
}

static void dec_iq2_xs(const uint8_t* w, int64_t nb, int8_t* q, float* a, float* b) {
  using namespace layout;
  const IQGrids& G = iq_grids();
  for (int64_t i = 0; i < nb; ++i, w += 74, q += QK_K, a += 16, b += 16) {
    const float d = half(w);
    for (int k = 0; k < 32; k += 2) set_ab(a + k / 2, b + k / 2, 1, iq2_scale(w + iq2xs_scales, k, d));
    for (int k = 0; k < 32; k += 4) {
      uint64_t g[4];
      uint32_t signs = 0;
      for (int l = 0; l < 4; ++l) {
        const uint16_t v = load_u16(w + iq2xs_qs + 2 * (k + l));
        g[l] = load_u64(G.iq2xs + 8 * (v & 511));
        signs |= (uint32_t)G.ksigns[v >> 9] << (8 * l);
      }
      grid32(g, signs, q + 8 * k);
    }
  }
}

static void dec_iq2_s(const uint8_t* w, int64_t nb, int8_t* q, float* a, float* b) {
  using namespace layout;
  const IQGrids& G = iq_grids();
  for (int64_t i = 0; i < nb; ++i, w += 82, q += QK_K, a += 16, b += 16) {
    const float d = half(w);
    for (int k = 0; k < 32; k += 2) set_ab(a + k / 2, b + k / 2, 1, iq2_scale(w + iq2s_scales, k, d));
    for (int k = 0; k < 32; k += 4) {
      uint64_t g[4];
      const int qh = w[iq2s_qh + k / 4];
      for (int l = 0; l < 4; ++l) g[l] = load_u64(G.iq2s + 8 * (w[iq2s_qs + k + l] | (((qh >> (2 * l)) & 3) << 8)));
      grid32(g, signs4(w + iq2s_signs + k), q + 8 * k);
    }
  }
}

static void dec_iq3_xxs(const uint8_t* w, int64_t nb, int8_t* q, float* a, float* b) {
  using namespace layout;
  const IQGrids& G = iq_grids();
  for (int64_t i = 0; i < nb; ++i, w += 98, q += QK_K, a += 16, b += 16) {
    const float d = half(w);
    for (int ib = 0; ib < 8; ++ib) {
      const uint32_t aux = load_u32(w + iq3xxs_ss + 4 * ib);
      set_ab(a + 2 * ib, b + 2 * ib, 2, d * (0.5f + (float)(aux >> 28)) * 0.5f);
      const uint8_t* qs = w + iq3xxs_qs + 8 * ib;
      uint64_t g[4];
      for (int l = 0; l < 4; ++l)
        g[l] = grid4(G.iq3xxs + 4 * qs[2 * l]) | grid4(G.iq3xxs + 4 * qs[2 * l + 1]) << 32;
      grid32(g, ksigns4(aux, G.ksigns), q + 32 * ib);
    }
  }
}

static void dec_iq3_s(const uint8_t* w, int64_t nb, int8_t* q, float* a, float* b) {
  using namespace layout;
  const IQGrids& G = iq_grids();
  for (int64_t i = 0; i < nb; ++i, w += 110, q += QK_K, a += 16, b += 16) {
    const float d = half(w);
    for (int ib = 0; ib < 8; ++ib) {
      const int s = (w[iq3s_scales + ib / 2] >> (4 * (ib % 2))) & 0xF;
      set_ab(a + 2 * ib, b + 2 * ib, 2, d * (float)(1 + 2 * s));
      const int qh = w[iq3s_qh + ib];  // bit m % 8 for the 8 entries of this run
      uint64_t g[4];
      for (int l = 0; l < 4; ++l) {
        const int m0 = 2 * l, m1 = 2 * l + 1;
        const int i0 = w[iq3s_qs + 8 * ib + m0] | (((qh >> m0) & 1) << 8);
        const int i1 = w[iq3s_qs + 8 * ib + m1] | (((qh >> m1) & 1) << 8);
        g[l] = grid4(G.iq3s + 4 * i0) | grid4(G.iq3s + 4 * i1) << 32;
      }
      grid32(g, signs4(w + iq3s_signs + 4 * ib), q + 32 * ib);
    }
  }
}

// IQ1: 8 * g + (delta > 0 ? 1 : -1) over the scale / 8.
static void dec_iq1_s(const uint8_t* w, int64_t nb, int8_t* q, float* a, float* b) {
  using namespace layout;
  const IQGrids& G = iq_grids();
  for (int64_t i = 0; i < nb; ++i, w += 50, q += QK_K, a += 16, b += 16) {
    const float d = half(w);
    for (int ib = 0; ib < 8; ++ib) {
      const uint16_t qh = load_u16(w + iq1s_qh + 2 * ib);
      set_ab(a + 2 * ib, b + 2 * ib, 2, d * (float)(2 * ((qh >> 12) & 7) + 1) * 0.125f);
      uint64_t g[4];
      const bool m = qh & 0x8000, minus[4] = {m, m, m, m};
      for (int l = 0; l < 4; ++l) g[l] = load_u64(G.iq1s + 8 * (w[iq1s_qs + 4 * ib + l] | (((qh >> (3 * l)) & 7) << 8)));
      iq1_grid32(g, minus, q + 32 * ib);
    }
  }
}

static void dec_iq1_m(const uint8_t* w, int64_t nb, int8_t* q, float* a, float* b) {
  using namespace layout;
  const IQGrids& G = iq_grids();
  for (int64_t i = 0; i < nb; ++i, w += 56, q += QK_K, a += 16, b += 16) {
    const float d = iq1m_d(w);
    for (int c = 0; c < 16; ++c) {
      const int s = (load_u16(w + iq1m_scales + 2 * (c / 4)) >> (3 * (c % 4))) & 7;
      set_ab(a + c, b + c, 1, d * (float)(2 * s + 1) * 0.125f);
    }
    for (int k = 0; k < 32; k += 4) {
      uint64_t g[4];
      bool minus[4];
      for (int l = 0; l < 4; ++l) {
        const int nib = (w[iq1m_qh + (k + l) / 2] >> (4 * ((k + l) % 2))) & 0xF;
        g[l] = load_u64(G.iq1s + 8 * (w[k + l] | ((nib & 7) << 8)));
        minus[l] = nib & 8;
      }
      iq1_grid32(g, minus, q + 8 * k);
    }
  }
}

static void dec_tq1_0(const uint8_t* w, int64_t nb, int8_t* q, float* a, float* b) {
  using namespace layout;
  static const int pow3[5] = {1, 3, 9, 27, 81};
  for (int64_t i = 0; i < nb; ++i, w += 54, q += QK_K, a += 16, b += 16) {
    set_ab(a, b, 16, half(w + tq1_d));
    for (int m = 0; m < 5; ++m)
      for (int j = 0; j < 32; ++j) q[32 * m + j] = (int8_t)(tq1_digit(w[j], pow3[m]) - 1);
    for (int m = 0; m < 5; ++m)
      for (int j = 0; j < 16; ++j) q[160 + 16 * m + j] = (int8_t)(tq1_digit(w[32 + j], pow3[m]) - 1);
    for (int m = 0; m < 4; ++m)
      for (int j = 0; j < 4; ++j) q[240 + 4 * m + j] = (int8_t)(tq1_digit(w[tq1_qh + j], pow3[m]) - 1);
  }
}

static void dec_tq2_0(const uint8_t* w, int64_t nb, int8_t* q, float* a, float* b) {
  using namespace layout;
  for (int64_t i = 0; i < nb; ++i, w += 66, q += QK_K, a += 16, b += 16) {
    set_ab(a, b, 16, half(w + tq2_d));
    for (int c = 0; c < 2; ++c)
      for (int sh = 0; sh < 4; ++sh)
        for (int j = 0; j < 32; ++j) q[128 * c + 32 * sh + j] = (int8_t)(((w[32 * c + j] >> (2 * sh)) & 3) - 1);
  }
}

// Q5_0 / Q5_1: the fifth bit of element j is bit j of the little-endian u32 qh.
static inline void q5_bytes(const uint8_t* qs, uint32_t qh, int offset, int8_t* q) {
#if defined(__AVX2__)
  store256(q, _mm256_sub_epi8(q5_values(qs, qh), _mm256_set1_epi8((char)offset)));
  return;
#endif
  for (int j = 0; j < 16; ++j) {
    q[j] = (int8_t)(((qs[j] & 0xF) | (((qh >> j) & 1u) << 4)) - offset);
    q[j + 16] = (int8_t)(((qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4)) - offset);
  }
}

static void dec_q5_0(const uint8_t* w, int64_t nb, int8_t* q, float* a, float* b) {
  for (int64_t i = 0; i < nb; ++i, w += 22, q += 32, a += 2, b += 2) {
    q5_bytes(w + 6, load_u32(w + 2), 16, q);
    set2(a, half(w));
    set2(b, 0.0f);
  }
}

static void dec_q5_1(const uint8_t* w, int64_t nb, int8_t* q, float* a, float* b) {
  for (int64_t i = 0; i < nb; ++i, w += 24, q += 32, a += 2, b += 2) {
    q5_bytes(w + 8, load_u32(w + 4), 0, q);
    set2(a, half(w));
    set2(b, half(w + 2));
  }
}

// Q4_K / Q5_K: w = (d*sc) * q - dmin*mn per sub-block of 32 (q unsigned, 4 or 5 bits). Run
// g of 32 qs bytes holds sub-blocks 2g (low nibbles) and 2g + 1; Q5_K's fifth bit of sub-block
// s is bit s of qh[j].
template <bool kFive>
static void dec_kq(const uint8_t* w, int64_t nb, int8_t* q, float* a, float* b) {
  using namespace layout;
  const int bytes = kFive ? 176 : 144;
  for (int64_t i = 0; i < nb; ++i, w += bytes, q += QK_K, a += 16, b += 16) {
    kq_ab(w + q4k_scales, half(w + q4k_d), half(w + q4k_dmin), a, b);  // same fields in Q5_K
#if defined(__AVX2__)
    __m256i v[8];
    kq_values<kFive>(w, v);
    for (int k = 0; k < 8; ++k) store256(q + 32 * k, v[k]);
#else
    const uint8_t* qs = w + (kFive ? q5k_qs : q4k_qs);
    const uint8_t* qh = w + q5k_qh;
    for (int g = 0; g < 4; ++g)
      for (int j = 0; j < 32; ++j) {
        const int h0 = kFive ? ((qh[j] >> (2 * g)) & 1) << 4 : 0, h1 = kFive ? ((qh[j] >> (2 * g + 1)) & 1) << 4 : 0;
        q[g * 64 + j] = (int8_t)((qs[g * 32 + j] & 0xF) | h0);
        q[g * 64 + 32 + j] = (int8_t)((qs[g * 32 + j] >> 4) | h1);
      }
#endif
  }
}

// Q6_K: w = (d*sc[g]) * (q - 32) per group g of 16: the group index is the scale index.
static void dec_q6_k(const uint8_t* w, int64_t nb, int8_t* q, float* a, float* b) {
  using namespace layout;
  for (int64_t i = 0; i < nb; ++i, w += 210, q += QK_K, a += 16, b += 16) {
    const float d = half(w + q6k_d);
    const int8_t* sc = reinterpret_cast<const int8_t*>(w + q6k_scales);
#if defined(__AVX2__)
    bytes_times(load128(sc), true, d, a);
    std::memset(b, 0, 16 * sizeof(float));
    __m256i v[8];
    q6k_values(w, v);
    for (int k = 0; k < 8; ++k) store256(q + 32 * k, _mm256_sub_epi8(v[k], _mm256_set1_epi8(32)));
#else
    for (int g = 0; g < 16; ++g) {
      a[g] = d * (float)sc[g];
      b[g] = 0.0f;
    }
    for (int h = 0; h < 2; ++h) {  // halves of 128 elements
      const uint8_t* ql = w + q6k_ql + 64 * h;
      const uint8_t* qh = w + q6k_qh + 32 * h;
      int8_t* o = q + 128 * h;
      for (int j = 0; j < 32; ++j) {
        o[j] = (int8_t)(((ql[j] & 0xF) | ((qh[j] & 3) << 4)) - 32);
        o[j + 32] = (int8_t)(((ql[j + 32] & 0xF) | (((qh[j] >> 2) & 3) << 4)) - 32);
        o[j + 64] = (int8_t)(((ql[j] >> 4) | (((qh[j] >> 4) & 3) << 4)) - 32);
        o[j + 96] = (int8_t)(((ql[j + 32] >> 4) | (((qh[j] >> 6) & 3) << 4)) - 32);
      }
    }
#endif
  }
}

static void dec_iq4_xs(const uint8_t* w, int64_t nb, int8_t* q, float* a, float* b) {
  using namespace layout;
  for (int64_t i = 0; i < nb; ++i, w += 136, q += QK_K, a += 16, b += 16) {
    const float d = half(w + iq4xs_d);
    const uint64_t ls = iq4xs_scales(w);
    for (int sb = 0; sb < 8; ++sb) {
      set2(a + 2 * sb, d * (float)(byte_of(ls, sb) - 32));
      set2(b + 2 * sb, 0.0f);
      iq4_bytes(w + iq4xs_qs + sb * 16, q + sb * 32);
    }
  }
}

// ---- dot products ------------------------------------------------------------------------

#if defined(__AVX512F__)
// A VNNI product of 64 unsigned weight bytes with 64 activation bytes: lane l holds bytes
// 4l..4l+3, i.e. group 4k + l / 4 of a run of 256 for the k-th 64 bytes (lane_groups(k)),
// scaled by that group's c and added to acc.
static inline __m512i lane_groups(int k) {
  return _mm512_add_epi32(_mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0), _mm512_set1_epi32(4 * k));
}

static inline __m512 fma_groups(__m512i w, const int8_t* x, __m512 c, __m512i lanes, __m512 acc) {
  const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, _mm512_loadu_si512(x));
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_permutexvar_ps(lanes, c), acc);
}
#endif

// <w, x> for one decoded weight row and one quantized activation row; cols % 32 == 0.
static inline float dot_i8(const int8_t* wq, const float* wa, const float* wb, const int8_t* xq, const float* xd,
                           const float* xs, int64_t cols) {
  const int64_t ng = cols / 16;
#if defined(__AVX512F__)
  // VNNI multiplies unsigned by signed bytes: feed q + 128 (an xor), and take 128 * a * s
  // back out with the offsets, where s = d * sum(x) per group.
  const __m512i flip = _mm512_set1_epi8((char)0x80);
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  auto chunk = [&](int64_t at, __m512 c, int k) {
    acc[k] = fma_groups(_mm512_xor_si512(_mm512_loadu_si512(wq + at), flip), xq + at, c, lane_groups(k), acc[k]);
  };
  int64_t i = 0;
  for (; i + 256 <= cols; i += 256) {
    const __m512 c = _mm512_mul_ps(_mm512_loadu_ps(wa + i / 16), _mm512_loadu_ps(xd + i / 16));
    for (int k = 0; k < 4; ++k) chunk(i + 64 * k, c, k);
  }
  if (i < cols) {  // under 256 left, in runs of 32
    const int64_t left_groups = (cols - i) / 16;
    const __mmask16 m = (__mmask16)((1u << left_groups) - 1);
    const __m512 c = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, wa + i / 16), _mm512_maskz_loadu_ps(m, xd + i / 16));
    int k = 0;
    for (; i + 64 <= cols; i += 64, ++k) chunk(i, c, k);
    if (i < cols) {  // 32 left: zero the upper half of the bytes
      const __m512i u = _mm512_xor_si512(
          _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wq + i))), flip);
      const __m512i x = _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + i)));
      const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, x);
      acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_permutexvar_ps(lane_groups(k), c), acc[k]);
    }
  }
  const __m512 k128 = _mm512_set1_ps(128.0f);
  __m512 off = _mm512_setzero_ps();
  for (int64_t g = 0; g < ng; g += 16) {
    const __mmask16 m = ng - g >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (ng - g)) - 1);
    const __m512 a = _mm512_maskz_loadu_ps(m, wa + g), b = _mm512_maskz_loadu_ps(m, wb + g);
    off = _mm512_fmadd_ps(_mm512_fnmadd_ps(a, k128, b), _mm512_maskz_loadu_ps(m, xs + g), off);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(_mm512_add_ps(acc[2], acc[3]), off)));
#elif defined(__AVX2__)
  // maddubs with the sign trick (prod_signed): the decoded q are signed.
  const __m256i lo_lanes = _mm256_set_epi32(1, 1, 1, 1, 0, 0, 0, 0);
  const __m256i hi_lanes = _mm256_set_epi32(3, 3, 3, 3, 2, 2, 2, 2);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  auto prod = [&](int64_t k) { return prod_signed(load256(wq + k), xq + k); };
  for (; i + 64 <= cols; i += 64) {
    const __m256 c = _mm256_castps128_ps256(_mm_mul_ps(_mm_loadu_ps(wa + i / 16), _mm_loadu_ps(xd + i / 16)));
    acc0 = _mm256_fmadd_ps(prod(i), _mm256_permutevar8x32_ps(c, lo_lanes), acc0);
    acc1 = _mm256_fmadd_ps(prod(i + 32), _mm256_permutevar8x32_ps(c, hi_lanes), acc1);
  }
  if (i < cols) {
    const float c0 = wa[i / 16] * xd[i / 16], c1 = wa[i / 16 + 1] * xd[i / 16 + 1];
    acc0 = _mm256_fmadd_ps(prod(i), _mm256_set_ps(c1, c1, c1, c1, c0, c0, c0, c0), acc0);
  }
  __m256 off = _mm256_setzero_ps();
  int64_t g = 0;
  for (; g + 8 <= ng; g += 8)
    off = _mm256_fmadd_ps(_mm256_loadu_ps(wb + g), _mm256_loadu_ps(xs + g), off);
  float r = hsum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), off));
  for (; g < ng; ++g) r += wb[g] * xs[g];
  return r;
#else
  float acc = 0.0f;
  for (int64_t g = 0; g < ng; ++g) {
    int32_t sum = 0;
    for (int j = 0; j < 16; ++j) sum += (int32_t)wq[g * 16 + j] * (int32_t)xq[g * 16 + j];
    acc += wa[g] * xd[g] * (float)sum + wb[g] * xs[g];
  }
  return acc;
#endif
}

static inline float dot_f32(const float* w, const float* x, int64_t cols) {
#if defined(__AVX512F__)
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= cols; i += 32) {
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
  }
  for (; i < cols; i += 16) {
    const __mmask16 m = cols - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (cols - i)) - 1);
    a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + i), _mm512_maskz_loadu_ps(m, x + i), a0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
#elif defined(__AVX2__)
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= cols; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
  }
  float r = hsum(_mm256_add_ps(a0, a1));
  for (; i < cols; ++i) r += w[i] * x[i];
  return r;
#else
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= cols; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += w[i + k] * x[i + k];
  float r = 0.0f;
  for (int k = 0; k < 8; ++k) r += acc[k];
  for (; i < cols; ++i) r += w[i] * x[i];
  return r;
#endif
}

#if defined(__AVX2__)
// ---- fused decode-and-dot: what the AVX-512 and AVX2 kernels share ----------------------------
// Each fused kernel takes up to kFusedRows activation rows: the weights are read and decoded
// once for all of them (the rows may be in K-quant order, see Activations).

template <int N>
struct FusedRows {
  const int8_t* q[N];
  const float* d[N];
  const float* s[N];
};

// Runs kernel<N> over `rows` weight rows for n = 1..kFusedRows activation rows given as
// pointer arrays (FusedDotFn). Asks for the row 64 KiB ahead into L2 (prefetcht2: not L1,
// whose few fill buffers the loads need), never past `end` (another expert's rows).
template <template <int> class K>
static void fused_rows(const uint8_t* w, int64_t rb, int rows, int64_t nb, const int8_t* const* q,
                       const float* const* d, const float* const* s, int n, float* out, const uint8_t* end) {
  const int64_t ahead = rb * 2 > kPrefetchBytes ? rb * 2 : kPrefetchBytes;
  auto run = [&](auto tag) {
    constexpr int N = decltype(tag)::value;
    FusedRows<N> x;
    for (int t = 0; t < N; ++t) x.q[t] = q[t], x.d[t] = d[t], x.s[t] = s[t];
    for (int r = 0; r < rows; ++r) {
      const uint8_t* row = w + r * rb;
      if (row + ahead + rb <= end)
        for (int64_t off = 0; off < rb; off += 64) __builtin_prefetch(row + ahead + off, 0, 1);
      K<N>::run(row, nb, x, out + r * N);
    }
  };
  switch (n) {
    case 1: return run(std::integral_constant<int, 1>());
    case 2: return run(std::integral_constant<int, 2>());
    case 3: return run(std::integral_constant<int, 3>());
    default: return run(std::integral_constant<int, 4>());
  }
}

#endif

#if defined(__AVX512F__)
// ---- fused decode-and-dot for decode-sized steps (AVX-512 VNNI) ---------------------------
// Decoding into a buffer and reading it back costs more than the product itself when a row
// meets only a few activation rows; these read the GGUF blocks and multiply in registers.
// The 4- and 5-bit K-quants keep their values unsigned (the mins are offsets), so they feed
// VNNI directly; their nibble layout pairs elements 0-31 with 64-95 (and 32-63 with 96-127)
// in each run of 128, so they take activations stored in that order (kq_order below).

// 8 sub-block bytes (K order, one per group of 16) times f.
static inline __m512 kq_groups(uint64_t bytes, float f) {
  const __m128i order = _mm_setr_epi8(0, 0, 2, 2, 1, 1, 3, 3, 4, 4, 6, 6, 5, 5, 7, 7);
  const __m128i v = _mm_shuffle_epi8(_mm_cvtsi64_si128((long long)bytes), order);
  return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v)), _mm512_set1_ps(f));
}

// Sums a run's products for each of N rows: the group scales c = a * d and offsets b * s.
template <int N>
struct RowSums {
  __m512 acc0[N], acc1[N], off[N];
  RowSums() {
    for (int t = 0; t < N; ++t) acc0[t] = acc1[t] = off[t] = _mm512_setzero_ps();
  }
  // One run of 256 values from value `at` of the rows: unsigned weight bytes q[0..3] (64
  // values each), their group scales a and offsets b (16 groups).
  void add_run(const FusedRows<N>& x, int64_t at, __m512 a, __m512 b, const __m512i* q) {
    const __m512i l0 = lane_groups(0), l1 = lane_groups(1), l2 = lane_groups(2), l3 = lane_groups(3);
    for (int t = 0; t < N; ++t) {
      const int8_t* xq = x.q[t] + at;
      const __m512 c = _mm512_mul_ps(a, _mm512_loadu_ps(x.d[t] + at / 16));
      off[t] = _mm512_fmadd_ps(b, _mm512_loadu_ps(x.s[t] + at / 16), off[t]);
      acc0[t] = fma_groups(q[0], xq, c, l0, acc0[t]);
      acc1[t] = fma_groups(q[1], xq + 64, c, l1, acc1[t]);
      acc0[t] = fma_groups(q[2], xq + 128, c, l2, acc0[t]);
      acc1[t] = fma_groups(q[3], xq + 192, c, l3, acc1[t]);
    }
  }
  // Half a run: 128 values (two products), their 8 group scales and offsets in lanes 0-7.
  void add_half(const FusedRows<N>& x, int64_t at, __m512 a, __m512 b, __m512i q0, __m512i q1) {
    const __m512i l0 = lane_groups(0), l1 = lane_groups(1);
    for (int t = 0; t < N; ++t) {
      const int8_t* xq = x.q[t] + at;
      const __m512 c = _mm512_mul_ps(a, _mm512_maskz_loadu_ps(0xFF, x.d[t] + at / 16));
      off[t] = _mm512_fmadd_ps(b, _mm512_maskz_loadu_ps(0xFF, x.s[t] + at / 16), off[t]);
      acc0[t] = fma_groups(q0, xq, c, l0, acc0[t]);
      acc1[t] = fma_groups(q1, xq + 64, c, l1, acc1[t]);
    }
  }
  void finish(float* out) const {
    for (int t = 0; t < N; ++t) out[t] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0[t], acc1[t]), off[t]));
  }
};

// Q4_K / Q5_K against activations with one scale per super-block (act_per_256): the
// sub-block scales are integers, so a super-block's products sum in integers (maddubs, then
// dpwssd with each lane's sub-block scale) and meet the float scales once; the mins stay the
// per-group offsets b * s.
template <bool kFive, int N>
static void fused_kq_n(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* out) {
  const __m512i m4 = _mm512_set1_epi8(0x0F), one = _mm512_set1_epi8(1);
  // the bit of qh holding the fifth bit, for the two halves of each product: sub-blocks (0, 2),
  // (1, 3), (4, 6), (5, 7); srlv_epi16 takes a count per 16-bit word
  auto counts = [](int lo, int hi) {
    const long long l = 0x0001000100010001LL * lo, h = 0x0001000100010001LL * hi;
    return _mm512_set_epi64(h, h, h, h, l, l, l, l);
  };
  const __m512i s0 = counts(0, 2), s1 = counts(1, 3), s2 = counts(4, 6), s3 = counts(5, 7);
  // product k's 32 16-bit lanes after maddubs: 0-15 from sub-block lo, 16-31 from hi; these
  // pick each lane's scale out of the 8 widened scale bytes
  auto pick = [](int lo, int hi) {
    const short l = (short)lo, h = (short)hi;
    return _mm512_set_epi16(h, h, h, h, h, h, h, h, h, h, h, h, h, h, h, h, l, l, l, l, l, l, l, l, l, l, l, l, l, l, l, l);
  };
  const __m512i p0 = pick(0, 2), p1 = pick(1, 3), p2 = pick(4, 6), p3 = pick(5, 7);
  const int bytes = kFive ? 176 : 144, qs_at = kFive ? layout::q5k_qs : layout::q4k_qs;
  __m512 acc[N], off[N];
  for (int t = 0; t < N; ++t) acc[t] = off[t] = _mm512_setzero_ps();
  for (int64_t i = 0; i < nb; ++i, w += bytes) {
    uint64_t mn;
    const uint64_t sc = kq_unpack(w + 4, mn);
    const float dw = half(w);
    const __m512 b = kq_groups(mn, -half(w + 2));
    const __m512i sc16 = _mm512_cvtepu8_epi16(_mm256_zextsi128_si256(_mm_cvtsi64_si128((long long)sc)));
    const __m512i c0 = _mm512_permutexvar_epi16(p0, sc16), c1 = _mm512_permutexvar_epi16(p1, sc16);
    const __m512i c2 = _mm512_permutexvar_epi16(p2, sc16), c3 = _mm512_permutexvar_epi16(p3, sc16);
    const __m512i z0 = _mm512_loadu_si512(w + qs_at), z1 = _mm512_loadu_si512(w + qs_at + 64);
    __m512i q0 = _mm512_and_si512(z0, m4), q1 = _mm512_and_si512(_mm512_srli_epi16(z0, 4), m4);
    __m512i q2 = _mm512_and_si512(z1, m4), q3 = _mm512_and_si512(_mm512_srli_epi16(z1, 4), m4);
    if (kFive) {
      const __m512i h = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + layout::q5k_qh)));
      auto fifth = [&](__m512i shift) {
        return _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(h, shift), one), 4);
      };
      q0 = _mm512_or_si512(q0, fifth(s0));
      q1 = _mm512_or_si512(q1, fifth(s1));
      q2 = _mm512_or_si512(q2, fifth(s2));
      q3 = _mm512_or_si512(q3, fifth(s3));
    }
    for (int t = 0; t < N; ++t) {
      const int8_t* xq = x.q[t] + i * QK_K;
      // unsigned q <= 31 times int8: pairs stay within int16 (2 * 31 * 127)
      __m512i p = _mm512_dpwssd_epi32(_mm512_setzero_si512(), _mm512_maddubs_epi16(q0, _mm512_loadu_si512(xq)), c0);
      p = _mm512_dpwssd_epi32(p, _mm512_maddubs_epi16(q1, _mm512_loadu_si512(xq + 64)), c1);
      p = _mm512_dpwssd_epi32(p, _mm512_maddubs_epi16(q2, _mm512_loadu_si512(xq + 128)), c2);
      p = _mm512_dpwssd_epi32(p, _mm512_maddubs_epi16(q3, _mm512_loadu_si512(xq + 192)), c3);
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_set1_ps(dw * x.d[t][i * 16]), acc[t]);
      off[t] = _mm512_fmadd_ps(b, _mm512_loadu_ps(x.s[t] + i * 16), off[t]);
    }
  }
  for (int t = 0; t < N; ++t) out[t] = _mm512_reduce_add_ps(_mm512_add_ps(acc[t], off[t]));
}

// Q6_K in natural order: w = (d * sc[g]) * (q - 32), q unsigned 6-bit; the -32 is an offset.
template <int N>
static void fused_q6_k_n(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* out) {
  using namespace layout;
  const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(3);
  // high two bits: bits 0-1 / 2-3 of qh for the low nibbles' two halves, 4-5 / 6-7 for the high
  const __m512i sh_lo = _mm512_set_epi64(0x0002000200020002LL, 0x0002000200020002LL, 0x0002000200020002LL,
                                         0x0002000200020002LL, 0, 0, 0, 0);
  const __m512i sh_hi = _mm512_add_epi16(sh_lo, _mm512_set1_epi16(4));
  const __m512 k32 = _mm512_set1_ps(-32.0f);
  RowSums<N> sums;
  for (int64_t i = 0; i < nb; ++i, w += 210) {
    const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + q6k_scales));
    const __m512 a = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc)), _mm512_set1_ps(half(w + q6k_d)));
    const __m512 b = _mm512_mul_ps(a, k32);
    __m512i q[4];
    for (int h = 0; h < 2; ++h) {
      const __m512i l = _mm512_loadu_si512(w + q6k_ql + 64 * h);
      const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + q6k_qh + 32 * h)));
      q[2 * h] = _mm512_or_si512(_mm512_and_si512(l, m4),
                                 _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh_lo), m2), 4));
      q[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                                     _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh_hi), m2), 4));
    }
    sums.add_run(x, i * QK_K, a, b, q);
  }
  sums.finish(out);
}

// Eight f16 scales `stride` bytes apart -> floats, each doubled (one per group of 16).
static inline __m512 block_scales(const uint8_t* p, int stride) {
  const __m512 v = _mm512_castps256_ps512(f16x8(p, stride));
  return _mm512_permutexvar_ps(_mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0), v);
}

static inline __m512i join(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }

// Four f16 scales `stride` bytes apart -> floats, each doubled (groups 0-7), lanes 8-15 zero.
static inline __m512 block_scales4(const uint8_t* p, int stride) {
  __m128i h = _mm_cvtsi32_si128(load_u16(p));
  h = _mm_insert_epi16(h, load_u16(p + stride), 1);
  h = _mm_insert_epi16(h, load_u16(p + 2 * stride), 2);
  h = _mm_insert_epi16(h, load_u16(p + 3 * stride), 3);
  const __m512 v = _mm512_castps128_ps512(_mm_cvtph_ps(h));
  return _mm512_maskz_permutexvar_ps(0xFF, _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 3, 3, 2, 2, 1, 1, 0, 0), v);
}

// The 32-value block types: runs of 8 blocks (256 values), then a run of 4, then pairs.
// `pair(w)` gives two consecutive blocks' 64 values as unsigned bytes u with w = d * (u -
// kZero); `one(w)` a lone block's 32.
template <int kBytes, int kZero, int N, typename Pair, typename One>
static inline void fused_blocks32(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* out, Pair pair,
                                  One one) {
  const __m512i l0 = lane_groups(0);  // the tail pairs: groups 0-3 of a product
  const __m512 zero = _mm512_set1_ps(-(float)kZero);
  // eight (four) block scales, each doubled (one per group of 16)
  auto scales8 = [](const uint8_t* p) {
    if constexpr (kBytes != 17) return block_scales(p, kBytes);
    alignas(64) float d[16];
    for (int k = 0; k < 8; ++k) d[2 * k] = d[2 * k + 1] = e8m0_half(p[k * kBytes]);
    return _mm512_load_ps(d);
  };
  auto scales4 = [](const uint8_t* p) {
    if constexpr (kBytes != 17) return block_scales4(p, kBytes);
    alignas(64) float d[16] = {};
    for (int k = 0; k < 4; ++k) d[2 * k] = d[2 * k + 1] = e8m0_half(p[k * kBytes]);
    return _mm512_load_ps(d);
  };
  RowSums<N> sums;
  int64_t i = 0;
  for (; i + 8 <= nb; i += 8, w += 8 * kBytes) {
    const __m512 a = scales8(w), b = _mm512_mul_ps(a, zero);
    const __m512i q[4] = {pair(w), pair(w + 2 * kBytes), pair(w + 4 * kBytes), pair(w + 6 * kBytes)};
    sums.add_run(x, i * 32, a, b, q);
  }
  if (i + 4 <= nb) {  // rows of 640 or 1408 values end here, not in two pairs
    const __m512 a = scales4(w), b = _mm512_mul_ps(a, zero);
    sums.add_half(x, i * 32, a, b, pair(w), pair(w + 2 * kBytes));
    i += 4, w += 4 * kBytes;
  }
  for (; i < nb; i += 2, w += 2 * kBytes) {
    const bool two = i + 1 < nb;  // else one block: the upper half stays zero
    const float d0 = block_scale<kBytes>(w), d1 = two ? block_scale<kBytes>(w + kBytes) : 0.0f;
    const __m512 a = _mm512_castps128_ps512(_mm_setr_ps(d0, d0, d1, d1)), b = _mm512_mul_ps(a, zero);
    const __mmask16 m = two ? 0xF : 0x3;
    const __m512i q = two ? pair(w) : _mm512_zextsi256_si512(one(w));
    for (int t = 0; t < N; ++t) {
      const __m512 c = _mm512_mul_ps(a, _mm512_maskz_loadu_ps(m, x.d[t] + i * 2));
      sums.off[t] = _mm512_fmadd_ps(b, _mm512_maskz_loadu_ps(m, x.s[t] + i * 2), sums.off[t]);
      const __m512i xv = _mm512_maskz_loadu_epi8(two ? ~0ULL : 0xFFFFFFFFULL, x.q[t] + i * 32);
      const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, xv);
      sums.acc0[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_permutexvar_ps(l0, c), sums.acc0[t]);
    }
  }
  sums.finish(out);
}

// Two blocks of 16 nibble bytes at qs0 and qs1 -> 64 values: each block's low nibbles, then
// its high ones (one broadcast per block, one variable shift for all four quarters).
static inline __m512i nibbles64(const uint8_t* qs0, const uint8_t* qs1) {
  const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_broadcastsi128_si256(load128(qs0))),
                                       _mm256_broadcastsi128_si256(load128(qs1)), 1);
  const __m512i shift = _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0);
  return _mm512_and_si512(_mm512_srlv_epi64(v, shift), _mm512_set1_epi8(0x0F));
}

// Q8_0: signed values; q ^ 0x80 = q + 128 as unsigned.
template <int N>
static void fused_q8_0_n(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* out) {
  auto one = [](const uint8_t* b) { return _mm256_xor_si256(load256(b + 2), _mm256_set1_epi8((char)0x80)); };
  fused_blocks32<34, 128>(w, nb, x, out, [&](const uint8_t* b) { return join(one(b), one(b + 34)); }, one);
}

// Q5_0: 4 low bits from nibbles, the fifth from qh (bit j for value j); w = d * (q - 16).
template <int N>
static void fused_q5_0_n(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* out) {
  auto one = [](const uint8_t* b) {
    return _mm256_or_si256(nibbles32(b + 6), _mm256_maskz_mov_epi8(load_u32(b + 2), _mm256_set1_epi8(0x10)));
  };
  auto pair = [](const uint8_t* b) {
    const __mmask64 high = (__mmask64)load_u32(b + 2) | (__mmask64)load_u32(b + 24) << 32;
    return _mm512_or_si512(nibbles64(b + 6, b + 28), _mm512_maskz_mov_epi8(high, _mm512_set1_epi8(0x10)));
  };
  fused_blocks32<22, 16>(w, nb, x, out, pair, one);
}

// Q4_0: w = d * (q - 8).
template <int N>
static void fused_q4_0_n(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* out) {
  fused_blocks32<18, 8>(w, nb, x, out, [](const uint8_t* b) { return nibbles64(b + 2, b + 20); },
                        [](const uint8_t* b) { return nibbles32(b + 2); });
}

// IQ4_XS: the code book shifted by 128 is unsigned; w = dl * (u - 128) per sub-block of 32.
template <int N>
static void fused_iq4_xs_n(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* out) {
  using namespace layout;
  alignas(16) int8_t book_u[16];
  for (int j = 0; j < 16; ++j) book_u[j] = (int8_t)(kIQ4Values[j] + 128);
  const __m256i book = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(book_u)));
  const __m512 k128 = _mm512_set1_ps(-128.0f);
  auto sub = [&](const uint8_t* qs) { return book32(book, qs); };
  RowSums<N> sums;
  for (int64_t i = 0; i < nb; ++i, w += 136) {
    const __m128i v = _mm_cvtsi64_si128((long long)iq4xs_scales(w));
    const __m512i ls16 = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(v, v)), _mm512_set1_epi32(32));
    const __m512 a = _mm512_mul_ps(_mm512_cvtepi32_ps(ls16), _mm512_set1_ps(half(w + iq4xs_d)));
    const __m512 b = _mm512_mul_ps(a, k128);
    const uint8_t* qs = w + iq4xs_qs;
    const __m512i q0 = join(sub(qs), sub(qs + 16)), q1 = join(sub(qs + 32), sub(qs + 48));
    const __m512i q2 = join(sub(qs + 64), sub(qs + 80)), q3 = join(sub(qs + 96), sub(qs + 112));
    const __m512i q[4] = {q0, q1, q2, q3};
    sums.add_run(x, i * QK_K, a, b, q);
  }
  sums.finish(out);
}

// MXFP4: the book shifted by 128 is unsigned (at most 140, fine for VNNI's u8 x s8);
// w = d * (u - 128).
template <int N>
static void fused_mxfp4_n(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* out) {
  alignas(16) int8_t book_u[16];
  for (int j = 0; j < 16; ++j) book_u[j] = (int8_t)(kMXFP4Values[j] + 128);
  const __m128i b128 = _mm_load_si128(reinterpret_cast<const __m128i*>(book_u));
  const __m256i book = _mm256_broadcastsi128_si256(b128);
  const __m512i book512 = _mm512_broadcast_i32x4(b128);
  fused_blocks32<17, 128>(w, nb, x, out,
                          [&](const uint8_t* b) { return _mm512_shuffle_epi8(book512, nibbles64(b + 1, b + 18)); },
                          [&](const uint8_t* b) { return book32(book, b + 1); });
}

template <int N> struct Q4K { static void run(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* o) { fused_kq_n<false, N>(w, nb, x, o); } };
template <int N> struct Q5K { static void run(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* o) { fused_kq_n<true, N>(w, nb, x, o); } };
template <int N> struct Q6K { static void run(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* o) { fused_q6_k_n<N>(w, nb, x, o); } };
template <int N> struct Q80 { static void run(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* o) { fused_q8_0_n<N>(w, nb, x, o); } };
template <int N> struct Q50 { static void run(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* o) { fused_q5_0_n<N>(w, nb, x, o); } };
template <int N> struct Q40 { static void run(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* o) { fused_q4_0_n<N>(w, nb, x, o); } };
template <int N> struct IQ4XS { static void run(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* o) { fused_iq4_xs_n<N>(w, nb, x, o); } };
template <int N> struct MXFP4 { static void run(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* o) { fused_mxfp4_n<N>(w, nb, x, o); } };

// The low-bit 256-value types (i-quants, TQ): each super-block decoded by its int8 decoder into
// an L1 buffer (their code-book gathers have no register form), then multiplied as the other
// fused kernels: q + 128 unsigned for VNNI, the 128 taken back out with the offsets.
template <DecodeI8Fn Dec, int kBytes>
struct Decoded {
  template <int N>
  struct K {
    static void run(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* out) {
      alignas(64) int8_t q[QK_K];
      alignas(64) float a[16], b[16];
      const __m512i flip = _mm512_set1_epi8((char)0x80);
      const __m512 k128 = _mm512_set1_ps(-128.0f);
      RowSums<N> sums;
      for (int64_t i = 0; i < nb; ++i, w += kBytes) {
        Dec(w, 1, q, a, b);
        const __m512 av = _mm512_load_ps(a), bv = _mm512_fmadd_ps(av, k128, _mm512_load_ps(b));
        const __m512i qv[4] = {_mm512_xor_si512(_mm512_load_si512(q), flip),
                               _mm512_xor_si512(_mm512_load_si512(q + 64), flip),
                               _mm512_xor_si512(_mm512_load_si512(q + 128), flip),
                               _mm512_xor_si512(_mm512_load_si512(q + 192), flip)};
        sums.add_run(x, i * QK_K, av, bv, qv);
      }
      sums.finish(out);
    }
  };
};

// BF16 rows . float32 activations: widen 16 values at a time (a shift) and multiply-add.
static void fused_bf16(const uint8_t* w, int64_t n, const float* const* x, int rows, float* out) {
  const uint16_t* p = reinterpret_cast<const uint16_t*>(w);
  __m512 a0[kFusedRows], a1[kFusedRows];
  for (int t = 0; t < kFusedRows; ++t) a0[t] = a1[t] = _mm512_setzero_ps();
  auto widen = [](const uint16_t* q) {
    return _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q))), 16));
  };
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512 w0 = widen(p + i), w1 = widen(p + i + 16);
    for (int t = 0; t < rows; ++t) {
      a0[t] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x[t] + i), a0[t]);
      a1[t] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x[t] + i + 16), a1[t]);
    }
  }
  for (int t = 0; t < rows; ++t) {
    float r = _mm512_reduce_add_ps(_mm512_add_ps(a0[t], a1[t]));
    for (int64_t j = i; j < n; ++j) r += bf16_to_fp32(p[j]) * x[t][j];
    out[t] = r;
  }
}
#endif

#if defined(__AVX2__) && !defined(__AVX512F__)
// ---- fused decode-and-dot, AVX2 --------------------------------------------------------------
// As the AVX-512 kernels, in 256-bit registers and without VNNI (prod_unsigned / prod_signed).

// Lanes 0-3 <- c[j], 4-7 <- c[j + 1] of 8 group scales.
static inline __m256 scale_pair(__m256 c8, int j) {
  return _mm256_permutevar8x32_ps(c8, _mm256_setr_epi32(j, j, j, j, j + 1, j + 1, j + 1, j + 1));
}

template <int N>
struct RowSums {
  __m256 acc[N], off[N];
  RowSums() {
    for (int t = 0; t < N; ++t) acc[t] = off[t] = _mm256_setzero_ps();
  }
  // 256 values from value `at` of the rows: 8 products of 32 weights (w[k], groups 2k, 2k + 1),
  // group scales a and offsets b (16 groups, two registers each).
  template <bool kSigned>
  void add_run(const FusedRows<N>& x, int64_t at, const __m256 a[2], const __m256 b[2], const __m256i* w) {
    for (int t = 0; t < N; ++t) {
      const int8_t* xq = x.q[t] + at;
      const float *xd = x.d[t] + at / 16, *xs = x.s[t] + at / 16;
      for (int h = 0; h < 2; ++h) {
        const __m256 c = _mm256_mul_ps(a[h], _mm256_loadu_ps(xd + 8 * h));
        off[t] = _mm256_fmadd_ps(b[h], _mm256_loadu_ps(xs + 8 * h), off[t]);
        for (int k = 0; k < 4; ++k) {
          const __m256 p = kSigned ? prod_signed(w[4 * h + k], xq + 128 * h + 32 * k)
                                   : prod_unsigned(w[4 * h + k], xq + 128 * h + 32 * k);
          acc[t] = _mm256_fmadd_ps(p, scale_pair(c, 2 * k), acc[t]);
        }
      }
    }
  }
  void finish(float* out) const {
    for (int t = 0; t < N; ++t) out[t] = hsum(_mm256_add_ps(acc[t], off[t]));
  }
};

// 8 bytes, each for two groups, times f -> the 16 group values in two registers.
static inline void groups_of_bytes(uint64_t bytes, float f, __m256 out[2]) {
  const __m128i v = _mm_cvtsi64_si128((long long)bytes);
  const __m128i d = _mm_unpacklo_epi8(v, v);
  const __m256 vf = _mm256_set1_ps(f);
  out[0] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(d)), vf);
  out[1] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(d, 8))), vf);
}

// Q4_K / Q5_K: nibbles in natural order per 32 bytes (low: sub-block 2j, high: 2j + 1); Q5_K's
// fifth bit is bit 2j (low) or 2j + 1 (high) of qh[l]. Values below 16 / 32. The activations
// have one scale per super-block (act_per_256), so its products sum in integers with the
// sub-block scales (maddubs, then madd by the scale) and meet the float scales once; the mins
// stay the per-group offsets b * s.
template <bool kFive, int N>
static void fused_kq_n(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* out) {
  __m256 acc[N], off[N];
  for (int t = 0; t < N; ++t) acc[t] = off[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i, w += kFive ? 176 : 144) {
    uint64_t mn;
    const uint64_t sc = kq_unpack(w + 4, mn);
    const float dw = half(w);
    __m256 b[2];
    groups_of_bytes(mn, -half(w + 2), b);
    __m256i q[8], c[8];
    kq_values<kFive>(w, q);
    for (int k = 0; k < 8; ++k) c[k] = _mm256_set1_epi16((short)((sc >> (8 * k)) & 0xFF));
    for (int t = 0; t < N; ++t) {
      const int8_t* xq = x.q[t] + i * QK_K;
      const float* xs = x.s[t] + i * 16;
      // unsigned q <= 31 times int8: pairs stay within int16 (2 * 31 * 127)
      __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(q[0], load256(xq)), c[0]);
      for (int k = 1; k < 8; ++k)
        p = _mm256_add_epi32(p, _mm256_madd_epi16(_mm256_maddubs_epi16(q[k], load256(xq + 32 * k)), c[k]));
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * x.d[t][i * 16]), acc[t]);
      off[t] = _mm256_fmadd_ps(b[0], _mm256_loadu_ps(xs), off[t]);
      off[t] = _mm256_fmadd_ps(b[1], _mm256_loadu_ps(xs + 8), off[t]);
    }
  }
  for (int t = 0; t < N; ++t) out[t] = hsum(_mm256_add_ps(acc[t], off[t]));
}

// IQ4_XS: signed code-book values (sign trick).
template <int N>
static void fused_iq4_xs_n(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* out) {
  using namespace layout;
  const __m256i book = iq4_book();
  RowSums<N> sums;
  for (int64_t i = 0; i < nb; ++i, w += 136) {
    const __m128i v = _mm_cvtsi64_si128((long long)iq4xs_scales(w)), dup = _mm_unpacklo_epi8(v, v);
    const __m256 d = _mm256_set1_ps(half(w + iq4xs_d));
    const __m256i k32 = _mm256_set1_epi32(32);
    __m256 a[2], b[2];
    a[0] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(dup), k32)), d);
    a[1] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(dup, 8)), k32)), d);
    b[0] = b[1] = _mm256_setzero_ps();
    __m256i q[8];
    for (int k = 0; k < 8; ++k) q[k] = book32(book, w + iq4xs_qs + 16 * k);
    sums.template add_run<true>(x, i * QK_K, a, b, q);
  }
  sums.finish(out);
}

// Q6_K: unsigned 6-bit q (the -32 is an offset), natural order.
template <int N>
static void fused_q6_k_n(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* out) {
  using namespace layout;
  RowSums<N> sums;
  for (int64_t i = 0; i < nb; ++i, w += 210) {
    const __m128i scb = load128(w + q6k_scales);
    const __m256 d = _mm256_set1_ps(half(w + q6k_d)), k32 = _mm256_set1_ps(-32.0f);
    __m256 a[2], b[2];
    a[0] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(scb)), d);
    a[1] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(scb, 8))), d);
    b[0] = _mm256_mul_ps(a[0], k32);
    b[1] = _mm256_mul_ps(a[1], k32);
    __m256i q[8];
    q6k_values(w, q);
    sums.template add_run<false>(x, i * QK_K, a, b, q);
  }
  sums.finish(out);
}

// Q8_0 (signed, kZero = 0), Q5_0 (unsigned 5-bit, kZero = 16) and Q4_0 (kZero = 8), 8 blocks
// per run; the rest of a row (under 8 blocks) one block at a time.
template <int kBytes, int kZero, bool kSigned, int N, typename Bytes>
static void fused_blocks32(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* out, Bytes bytes) {
  RowSums<N> sums;
  int64_t i = 0;
  const __m256i pairs = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
  for (; i + 8 <= nb; i += 8, w += 8 * kBytes) {
    __m256 d8;
    if constexpr (kBytes == 17) {  // MXFP4's E8M0 byte
      alignas(32) float dq[8];
      for (int k = 0; k < 8; ++k) dq[k] = block_scale<kBytes>(w + k * kBytes);
      d8 = _mm256_load_ps(dq);
    } else {
      d8 = f16x8(w, kBytes);
    }
    __m256 a[2], b[2];
    a[0] = _mm256_permutevar8x32_ps(d8, pairs);
    a[1] = _mm256_permutevar8x32_ps(d8, _mm256_add_epi32(pairs, _mm256_set1_epi32(4)));
    b[0] = _mm256_mul_ps(a[0], _mm256_set1_ps(-(float)kZero));
    b[1] = _mm256_mul_ps(a[1], _mm256_set1_ps(-(float)kZero));
    __m256i q[8];
    for (int k = 0; k < 8; ++k) q[k] = bytes(w + k * kBytes);
    sums.template add_run<kSigned>(x, i * 32, a, b, q);
  }
  for (; i < nb; ++i, w += kBytes) {
    const float d = block_scale<kBytes>(w);
    const __m256i q = bytes(w);
    for (int t = 0; t < N; ++t) {
      const float c0 = d * x.d[t][2 * i], c1 = d * x.d[t][2 * i + 1];
      const __m256 p = kSigned ? prod_signed(q, x.q[t] + 32 * i) : prod_unsigned(q, x.q[t] + 32 * i);
      sums.acc[t] = _mm256_fmadd_ps(p, _mm256_setr_ps(c0, c0, c0, c0, c1, c1, c1, c1), sums.acc[t]);
      const float o = -(float)kZero * d * (x.s[t][2 * i] + x.s[t][2 * i + 1]);
      sums.off[t] = _mm256_add_ps(sums.off[t], _mm256_setr_ps(o, 0, 0, 0, 0, 0, 0, 0));
    }
  }
  sums.finish(out);
}

template <int N>
static void fused_q8_0_n(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* out) {
  fused_blocks32<34, 0, true>(w, nb, x, out, [](const uint8_t* b) { return load256(b + 2); });
}

template <int N>
static void fused_q5_0_n(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* out) {
  fused_blocks32<22, 16, false>(w, nb, x, out, [](const uint8_t* b) { return q5_values(b + 6, load_u32(b + 2)); });
}

// Q4_0: w = d * (q - 8).
template <int N>
static void fused_q4_0_n(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* out) {
  fused_blocks32<18, 8, false>(w, nb, x, out, [](const uint8_t* b) { return nibbles32(b + 2); });
}

// MXFP4: the signed book (|q| <= 12) through the sign trick.
template <int N>
static void fused_mxfp4_n(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* out) {
  const __m256i book = _mm256_broadcastsi128_si256(load128(kMXFP4Values));
  fused_blocks32<17, 0, true>(w, nb, x, out, [&](const uint8_t* b) { return book32(book, b + 1); });
}

template <int N> struct Q4K { static void run(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* o) { fused_kq_n<false, N>(w, nb, x, o); } };
template <int N> struct Q6K { static void run(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* o) { fused_q6_k_n<N>(w, nb, x, o); } };
template <int N> struct Q80 { static void run(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* o) { fused_q8_0_n<N>(w, nb, x, o); } };
template <int N> struct Q50 { static void run(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* o) { fused_q5_0_n<N>(w, nb, x, o); } };
template <int N> struct Q40 { static void run(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* o) { fused_q4_0_n<N>(w, nb, x, o); } };
template <int N> struct Q5K { static void run(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* o) { fused_kq_n<true, N>(w, nb, x, o); } };
template <int N> struct IQ4XS { static void run(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* o) { fused_iq4_xs_n<N>(w, nb, x, o); } };
template <int N> struct MXFP4 { static void run(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* o) { fused_mxfp4_n<N>(w, nb, x, o); } };

// The low-bit 256-value types: decoded a super-block at a time into an L1 buffer, then the sign
// trick (their values are signed, |q| <= 127).
template <DecodeI8Fn Dec, int kBytes>
struct Decoded {
  template <int N>
  struct K {
    static void run(const uint8_t* w, int64_t nb, const FusedRows<N>& x, float* out) {
      alignas(32) int8_t q[QK_K];
      alignas(32) float a[16], b[16];
      RowSums<N> sums;
      for (int64_t i = 0; i < nb; ++i, w += kBytes) {
        Dec(w, 1, q, a, b);
        const __m256 av[2] = {_mm256_load_ps(a), _mm256_load_ps(a + 8)};
        const __m256 bv[2] = {_mm256_load_ps(b), _mm256_load_ps(b + 8)};
        __m256i qv[8];
        for (int k = 0; k < 8; ++k) qv[k] = load256(q + 32 * k);
        sums.template add_run<true>(x, i * QK_K, av, bv, qv);
      }
      sums.finish(out);
    }
  };
};
#endif

// Activation rows a tile is multiplied with, taken in blocks of this many so they stay in L2
// while every row of the weight tile passes over them.
constexpr int kTokenBlock = 16;

#if defined(__AVX512F__)
// Tiles with many activation rows, AVX-512: 16 activation rows ("tokens") per register, one
// per 32-bit lane, packed so that 4 consecutive values of a token share a lane
// ([cols / 4][16 tokens][4] bytes). A weight row's 4 values are broadcast to every lane, so
// one VNNI instruction advances 16 dot products by 4 values; a group's float scaling (one
// scale per token, one per weight row) then costs 4 instructions per 16 products instead of
// 4 per 4. Weights enter VNNI as the unsigned operand (q + 128); the 128 * sum(x) that adds
// is taken back with the offsets, as in dot_i8.
constexpr int kTileRows = 8;

struct TokenPanel {
  std::vector<int8_t> q;    // [cols / 4][16][4]
  std::vector<float> d, s;  // [ng][16]
};

// A panel's results into the tile's output: acc[r] holds weight row r0 + r (r < nr) against
// the panel's tokens, activation rows i0.. (lane l: row i0 + l).
static inline void put_panel(const TileOut& o, int i0, int r0, int nr, const __m512* acc) {
  alignas(64) float out[kTileRows][16];
  for (int r = 0; r < nr; ++r) _mm512_store_ps(out[r], acc[r]);
  const int n = o.n - i0 < 16 ? o.n - i0 : 16;
  for (int l = 0; l < n; ++l)
    for (int r = 0; r < nr; ++r) o.put(i0 + l, r0 + r, out[r][l]);
}

// Activation rows i0 .. i0 + n (n <= 16) of a tile into one panel (missing tokens stay zero).
static void pack_panel(const ActI8& x, const int32_t* xrow, int i0, int n, int64_t cols, TokenPanel& p) {
  const int64_t ng = cols / 16;
  p.q.assign(cols * 16, 0);
  p.d.assign(ng * 16, 0.0f);
  p.s.assign(ng * 16, 0.0f);
  alignas(64) int32_t offset[16] = {};
  for (int l = 0; l < n; ++l) offset[l] = (int32_t)((xrow ? xrow[i0 + l] : i0 + l) * cols / 4);  // dwords
  const __m512i idx = _mm512_load_si512(offset);
  const __mmask16 live = (__mmask16)((1u << n) - 1);
  // 4 values of 16 tokens per gather: a transpose of the tokens' dwords
  for (int64_t k4 = 0; k4 < cols / 4; ++k4)
    _mm512_storeu_si512(&p.q[k4 * 64], _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live,
                                                                   _mm512_add_epi32(idx, _mm512_set1_epi32((int)k4)),
                                                                   x.q, 4));
  for (int l = 0; l < n; ++l) {
    const int64_t t = xrow ? xrow[i0 + l] : i0 + l;
    for (int64_t g = 0; g < ng; ++g) {
      p.d[g * 16 + l] = x.d[t * ng + g];
      p.s[g * 16 + l] = x.s[t * ng + g];
    }
  }
}

static void dot_tile_i8_panels(const DecodedI8& w, const ActI8& x, const TileOut& o) {
  const int64_t cols = w.cols, ng = cols / 16;
  static thread_local std::vector<TokenPanel> panels;
  static thread_local std::vector<uint8_t> wu;     // kTileRows rows of q + 128
  static thread_local std::vector<float> ap, bp;  // a, and b - 128 a
  const __m512i flip = _mm512_set1_epi8((char)0x80);
  const int n_panels = (o.n + 15) / 16;
  if ((int)panels.size() < n_panels) panels.resize(n_panels);
  for (int pi = 0; pi < n_panels; ++pi)
    pack_panel(x, o.xrow, 16 * pi, o.n - 16 * pi < 16 ? o.n - 16 * pi : 16, cols, panels[pi]);
  for (int r0 = 0; r0 < w.rows; r0 += kTileRows) {
    const int nr = w.rows - r0 < kTileRows ? w.rows - r0 : kTileRows;
    // rows past the tile's end stay zero (their results are dropped)
    wu.assign(kTileRows * cols, 0);
    bp.assign(kTileRows * ng, 0.0f);
    ap.assign(kTileRows * ng, 0.0f);
    for (int r = 0; r < nr; ++r) {
      const int8_t* q = w.q + (r0 + r) * cols;
      int64_t k = 0;
      for (; k + 64 <= cols; k += 64)
        _mm512_storeu_si512(&wu[r * cols + k], _mm512_xor_si512(_mm512_loadu_si512(q + k), flip));
      for (; k < cols; k += 16)  // a width of 32 * odd: a 64-byte store would run past the row (heap)
        _mm_storeu_si128((__m128i*)&wu[r * cols + k],
                         _mm_xor_si128(_mm_loadu_si128((const __m128i*)(q + k)), _mm512_castsi512_si128(flip)));
      const float *a = w.a + (r0 + r) * ng, *b = w.b + (r0 + r) * ng;
      for (int64_t g = 0; g < ng; ++g) {
        ap[r * ng + g] = a[g];
        bp[r * ng + g] = b[g] - 128.0f * a[g];
      }
    }
    for (int pi = 0; pi < n_panels; ++pi) {
      const TokenPanel& panel = panels[pi];
      __m512 acc[kTileRows];
      for (int r = 0; r < kTileRows; ++r) acc[r] = _mm512_setzero_ps();
      for (int64_t g = 0; g < ng; ++g) {
        const int8_t* xp = &panel.q[g * 256];  // group g: 4 steps of [16 tokens][4 values]
        const __m512 dv = _mm512_loadu_ps(&panel.d[g * 16]), sv = _mm512_loadu_ps(&panel.s[g * 16]);
        __m512i p[kTileRows];
        for (int r = 0; r < kTileRows; ++r) p[r] = _mm512_setzero_si512();
        for (int step = 0; step < 4; ++step) {  // 8 independent chains, not one chain of 4
          const __m512i xs = _mm512_loadu_si512(xp + 64 * step);
          for (int r = 0; r < kTileRows; ++r)
            p[r] = _mm512_dpbusd_epi32(p[r], _mm512_set1_epi32((int)load_u32(&wu[r * cols + g * 16 + 4 * step])), xs);
        }
        for (int r = 0; r < kTileRows; ++r) {
          acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p[r]), _mm512_mul_ps(dv, _mm512_set1_ps(ap[r * ng + g])), acc[r]);
          acc[r] = _mm512_fmadd_ps(sv, _mm512_set1_ps(bp[r * ng + g]), acc[r]);
        }
      }
      put_panel(o, 16 * pi, r0, nr, acc);
    }
  }
}
#endif

#if defined(__AVX2__) && !defined(__AVX512F__)
// Tiles with many activation rows, AVX2: 8 tokens per register, one per 32-bit lane, packed
// [cols / 4][8 tokens][4] bytes, and a weight row's 4 values broadcast to every lane, as the
// AVX-512 panels. Without VNNI, maddubs (unsigned weight x signed activation, pairs to int16)
// and madd (pairs to int32) advance 8 dot products by 4 values; the pairs stay within int16
// when the weights enter as q + 64 <= 128, so this takes tiles whose |q| <= 64 (every int8
// form but Q8_0's and the IQ4 code books'); the 64 * sum(x) it adds is taken back with the
// offsets.
constexpr int kTileRows2 = 4;

struct TokenPanel8 {
  std::vector<int8_t> q;    // [cols / 4][8][4]
  std::vector<float> d, s;  // [ng][8]
};

static bool small_q(const int8_t* q, int64_t n) {  // every |q| <= 64 (n % 32 == 0)
  __m256i m = _mm256_setzero_si256();
  for (int64_t i = 0; i < n; i += 32) m = _mm256_max_epu8(m, _mm256_abs_epi8(load256(q + i)));
  return _mm256_testz_si256(_mm256_cmpgt_epi8(m, _mm256_set1_epi8(64)), _mm256_set1_epi8(-1)) &&
         _mm256_testz_si256(_mm256_cmpeq_epi8(m, _mm256_set1_epi8((char)0x80)), _mm256_set1_epi8(-1));
}

static void pack_panel8(const ActI8& x, const int32_t* xrow, int i0, int n, int64_t cols, TokenPanel8& p) {
  const int64_t ng = cols / 16;
  p.q.assign(cols * 8, 0);
  p.d.assign(ng * 8, 0.0f);
  p.s.assign(ng * 8, 0.0f);
  for (int l = 0; l < n; ++l) {
    const int64_t t = xrow ? xrow[i0 + l] : i0 + l;
    const int8_t* src = x.q + t * cols;
    for (int64_t k4 = 0; k4 < cols / 4; ++k4) std::memcpy(&p.q[k4 * 32 + 4 * l], src + 4 * k4, 4);
    for (int64_t g = 0; g < ng; ++g) {
      p.d[g * 8 + l] = x.d[t * ng + g];
      p.s[g * 8 + l] = x.s[t * ng + g];
    }
  }
}

static void dot_tile_i8_panels8(const DecodedI8& w, const ActI8& x, const TileOut& o) {
  const int64_t cols = w.cols, ng = cols / 16;
  static thread_local std::vector<TokenPanel8> panels;
  static thread_local std::vector<uint8_t> wu;    // kTileRows2 rows of q + 64
  static thread_local std::vector<float> ap, bp;  // a, and b - 64 a
  const __m256i k64 = _mm256_set1_epi8(64), ones = _mm256_set1_epi16(1);
  const int n_panels = (o.n + 7) / 8;
  if ((int)panels.size() < n_panels) panels.resize(n_panels);
  for (int pi = 0; pi < n_panels; ++pi)
    pack_panel8(x, o.xrow, 8 * pi, o.n - 8 * pi < 8 ? o.n - 8 * pi : 8, cols, panels[pi]);
  for (int r0 = 0; r0 < w.rows; r0 += kTileRows2) {
    const int nr = w.rows - r0 < kTileRows2 ? w.rows - r0 : kTileRows2;
    // rows past the tile's end stay zero (their results are dropped)
    wu.assign(kTileRows2 * cols, 0);
    ap.assign(kTileRows2 * ng, 0.0f);
    bp.assign(kTileRows2 * ng, 0.0f);
    for (int r = 0; r < nr; ++r) {
      const int8_t* q = w.q + (r0 + r) * cols;
      for (int64_t k = 0; k < cols; k += 32) store256(&wu[r * cols + k], _mm256_add_epi8(load256(q + k), k64));
      const float *a = w.a + (r0 + r) * ng, *b = w.b + (r0 + r) * ng;
      for (int64_t g = 0; g < ng; ++g) {
        ap[r * ng + g] = a[g];
        bp[r * ng + g] = b[g] - 64.0f * a[g];
      }
    }
    for (int pi = 0; pi < n_panels; ++pi) {
      const TokenPanel8& panel = panels[pi];
      __m256 acc[kTileRows2];
      for (int r = 0; r < kTileRows2; ++r) acc[r] = _mm256_setzero_ps();
      for (int64_t g = 0; g < ng; ++g) {
        const int8_t* xp = &panel.q[g * 128];  // group g: 4 steps of [8 tokens][4 values]
        const __m256 dv = _mm256_loadu_ps(&panel.d[g * 8]), sv = _mm256_loadu_ps(&panel.s[g * 8]);
        __m256i p[kTileRows2];
        for (int r = 0; r < kTileRows2; ++r) p[r] = _mm256_setzero_si256();
        for (int step = 0; step < 4; ++step) {
          const __m256i xs = load256(xp + 32 * step);
          for (int r = 0; r < kTileRows2; ++r) {
            const __m256i wb = _mm256_set1_epi32((int)load_u32(&wu[r * cols + g * 16 + 4 * step]));
            p[r] = _mm256_add_epi32(p[r], _mm256_madd_epi16(_mm256_maddubs_epi16(wb, xs), ones));
          }
        }
        for (int r = 0; r < kTileRows2; ++r) {
          acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p[r]), _mm256_mul_ps(dv, _mm256_set1_ps(ap[r * ng + g])), acc[r]);
          acc[r] = _mm256_fmadd_ps(sv, _mm256_set1_ps(bp[r * ng + g]), acc[r]);
        }
      }
      alignas(32) float out[kTileRows2][8];
      for (int r = 0; r < nr; ++r) _mm256_store_ps(out[r], acc[r]);
      const int n = o.n - 8 * pi < 8 ? o.n - 8 * pi : 8;
      for (int l = 0; l < n; ++l)
        for (int r = 0; r < nr; ++r) o.put(8 * pi + l, r0 + r, out[r][l]);
    }
  }
}
#endif

// Products of every decoded weight row with every activation row of `o` (TileOut::put).
static void dot_tile_i8(const DecodedI8& w, const ActI8& x, const TileOut& o) {
#if defined(__AVX512F__)
  if (o.n >= kPanelMinRows) return dot_tile_i8_panels(w, x, o);
#endif
#if defined(__AVX2__) && !defined(__AVX512F__)
  if (o.n >= kPanelMinRows && small_q(w.q, (int64_t)w.rows * w.cols)) return dot_tile_i8_panels8(w, x, o);
#endif
  const int64_t ng = w.cols / 16;
  for (int i0 = 0; i0 < o.n; i0 += kTokenBlock) {
    const int i1 = i0 + kTokenBlock < o.n ? i0 + kTokenBlock : o.n;
    for (int r = 0; r < w.rows; ++r) {
      const int8_t* wq = w.q + r * w.cols;
      const float *wa = w.a + r * ng, *wb = w.b + r * ng;
      for (int i = i0; i < i1; ++i) {
        const int64_t t = o.x_row(i);
        o.put(i, r, dot_i8(wq, wa, wb, x.q + t * x.cols, x.d + t * ng, x.s + t * ng, w.cols));
      }
    }
  }
}

#if defined(__AVX512F__)
// Float tiles with 8+ activation rows: as dot_tile_i8_panels, 16 tokens per register
// ([cols][16] floats per panel) and 8 weight rows broadcast, one FMA per row and value.
static void dot_tile_f32_panels(const DecodedF32& w, const float* x, const TileOut& o) {
  const int64_t cols = w.cols;
  static thread_local std::vector<float> panels;
  const int n_panels = (o.n + 15) / 16;
  panels.assign((size_t)n_panels * cols * 16, 0.0f);
  for (int p = 0; p < n_panels; ++p) {
    const int n = o.n - 16 * p < 16 ? o.n - 16 * p : 16;
    alignas(64) int32_t offset[16] = {};
    for (int l = 0; l < n; ++l) offset[l] = (int32_t)(o.x_row(16 * p + l) * cols);
    const __m512i idx = _mm512_load_si512(offset);
    const __mmask16 live = (__mmask16)((1u << n) - 1);
    float* dst = &panels[(size_t)p * cols * 16];
    for (int64_t k = 0; k < cols; ++k)
      _mm512_storeu_ps(dst + k * 16, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live,
                                                               _mm512_add_epi32(idx, _mm512_set1_epi32((int)k)), x, 4));
  }
  static thread_local std::vector<float> rows8;
  for (int r0 = 0; r0 < w.rows; r0 += kTileRows) {
    const int nr = w.rows - r0 < kTileRows ? w.rows - r0 : kTileRows;
    rows8.assign((size_t)kTileRows * cols, 0.0f);  // rows past the end stay zero
    std::memcpy(rows8.data(), w.w + r0 * cols, sizeof(float) * nr * cols);
    for (int p = 0; p < n_panels; ++p) {
      const float* panel = &panels[(size_t)p * cols * 16];
      __m512 acc[kTileRows];
      for (int r = 0; r < kTileRows; ++r) acc[r] = _mm512_setzero_ps();
      for (int64_t k = 0; k < cols; ++k) {
        const __m512 xv = _mm512_loadu_ps(panel + k * 16);
        for (int r = 0; r < kTileRows; ++r) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(rows8[r * cols + k]), xv, acc[r]);
      }
      put_panel(o, 16 * p, r0, nr, acc);
    }
  }
}
#endif

static void dot_tile_f32(const DecodedF32& w, const float* x, const TileOut& o) {
#if defined(__AVX512F__)
  if (o.n >= kPanelMinRows) return dot_tile_f32_panels(w, x, o);
#endif
  for (int i0 = 0; i0 < o.n; i0 += kTokenBlock) {
    const int i1 = i0 + kTokenBlock < o.n ? i0 + kTokenBlock : o.n;
    for (int r = 0; r < w.rows; ++r)
      for (int i = i0; i < i1; ++i) o.put(i, r, dot_f32(w.w + r * w.cols, x + o.x_row(i) * w.cols, w.cols));
  }
}

}  // namespace KTX_ISA_NS
}  // namespace ktx
