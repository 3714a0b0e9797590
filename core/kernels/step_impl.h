// The float32 pieces of a decode step, per ISA (included by quants_impl.h): RMSNorm, the
// gated activations, RoPE and one attention part over a paged KV cache. They replace chains
// of small PyTorch ops whose dispatch cost more than their arithmetic (a decode step of the
// demo model ran ~1,700 of them).
//
// Arithmetic follows the PyTorch reference ops (core/ops/norm.py, rope.py, attention.py) in
// float32, up to summation order; exp is a Cephes-style polynomial (within 2 ulp of expf).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernel_table.h"

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace ktx {
namespace KTX_ISA_NS {

// ---- exp -----------------------------------------------------------------------------------
// exp(x) = 2^n * exp(r), x = n ln2 + r, |r| <= ln2 / 2; ln2 split in two for an exact r.
constexpr float kExpHi = 88.3762626647949f, kExpLo = -87.3365447504019f;
constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f, kP3 = 4.1665795894e-2f,
                kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;

// The vector operations the step kernels are written in, per ISA.
#if defined(__AVX512F__)
constexpr int kVec = 16;
using vfloat = __m512;
static inline vfloat vload(const float* p) { return _mm512_loadu_ps(p); }
static inline void vstore(float* p, vfloat v) { _mm512_storeu_ps(p, v); }
static inline vfloat vset(float f) { return _mm512_set1_ps(f); }
static inline vfloat vadd(vfloat a, vfloat b) { return _mm512_add_ps(a, b); }
static inline vfloat vsub(vfloat a, vfloat b) { return _mm512_sub_ps(a, b); }
static inline vfloat vmul(vfloat a, vfloat b) { return _mm512_mul_ps(a, b); }
static inline vfloat vdiv(vfloat a, vfloat b) { return _mm512_div_ps(a, b); }
static inline vfloat vmin(vfloat a, vfloat b) { return _mm512_min_ps(a, b); }
static inline vfloat vmax(vfloat a, vfloat b) { return _mm512_max_ps(a, b); }
static inline vfloat vfma(vfloat a, vfloat b, vfloat c) { return _mm512_fmadd_ps(a, b, c); }
static inline vfloat vfnma(vfloat a, vfloat b, vfloat c) { return _mm512_fnmadd_ps(a, b, c); }
static inline vfloat vround(vfloat v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT); }
static inline vfloat vscale2(vfloat p, vfloat n) { return _mm512_scalef_ps(p, n); }  // p * 2^n
static inline float vsum(vfloat v) { return _mm512_reduce_add_ps(v); }
#elif defined(__AVX2__)
constexpr int kVec = 8;
using vfloat = __m256;
static inline vfloat vload(const float* p) { return _mm256_loadu_ps(p); }
static inline void vstore(float* p, vfloat v) { _mm256_storeu_ps(p, v); }
static inline vfloat vset(float f) { return _mm256_set1_ps(f); }
static inline vfloat vadd(vfloat a, vfloat b) { return _mm256_add_ps(a, b); }
static inline vfloat vsub(vfloat a, vfloat b) { return _mm256_sub_ps(a, b); }
static inline vfloat vmul(vfloat a, vfloat b) { return _mm256_mul_ps(a, b); }
static inline vfloat vdiv(vfloat a, vfloat b) { return _mm256_div_ps(a, b); }
static inline vfloat vmin(vfloat a, vfloat b) { return _mm256_min_ps(a, b); }
static inline vfloat vmax(vfloat a, vfloat b) { return _mm256_max_ps(a, b); }
static inline vfloat vfma(vfloat a, vfloat b, vfloat c) { return _mm256_fmadd_ps(a, b, c); }
static inline vfloat vfnma(vfloat a, vfloat b, vfloat c) { return _mm256_fnmadd_ps(a, b, c); }
static inline vfloat vround(vfloat v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// p * 2^n through the exponent bits (n within [-126, 127] after exp's clamp)
static inline vfloat vscale2(vfloat p, vfloat n) {
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
static inline float vsum(vfloat v) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
}
#endif

#if defined(__AVX2__) || defined(__AVX512F__)
static inline vfloat vexp(vfloat x) {
  x = vmax(vmin(x, vset(kExpHi)), vset(kExpLo));
  const vfloat n = vround(vmul(x, vset(kLog2e)));
  const vfloat r = vfnma(n, vset(kLn2Lo), vfnma(n, vset(kLn2Hi), x));
  vfloat p = vset(kP0);
  p = vfma(p, r, vset(kP1));
  p = vfma(p, r, vset(kP2));
  p = vfma(p, r, vset(kP3));
  p = vfma(p, r, vset(kP4));
  p = vfma(p, r, vset(kP5));
  return vscale2(vfma(vmul(p, r), r, vadd(r, vset(1.0f))), n);
}
#endif

static inline float sexp(float x) { return std::exp(std::min(std::max(x, kExpLo), kExpHi)); }

// ---- RMSNorm ---------------------------------------------------------------------------------
// out (+)= x * (1 / sqrt(mean(x^2) + eps)) * w for one row (PyTorch's order: (x * r) * w).
static void rms_norm_row(const float* x, int64_t cols, const float* w, float eps, float* out, bool accumulate) {
  double ss = 0.0;
  int64_t i = 0;
#if defined(__AVX2__) || defined(__AVX512F__)
  vfloat acc = vset(0.0f);
  for (; i + kVec <= cols; i += kVec) {
    const vfloat v = vload(x + i);
    acc = vadd(acc, vmul(v, v));
  }
  ss = vsum(acc);
#endif
  for (; i < cols; ++i) ss += (double)x[i] * x[i];
  const float r = 1.0f / std::sqrt((float)ss / (float)cols + eps);
  for (int64_t j = 0; j < cols; ++j) {
    const float v = (x[j] * r) * w[j];
    out[j] = accumulate ? out[j] + v : v;
  }
}

// ---- gated activations -----------------------------------------------------------------------
// g[i] = act(g[i]) * u[i]; act 0: SiLU, 1: GELU with the tanh approximation.
static void act_mul(float* g, const float* u, int64_t n, int act) {
  constexpr float kC = 0.7978845608028654f, kA = 0.044715f;
#if defined(__AVX2__) || defined(__AVX512F__)
  const vfloat one = vset(1.0f), two = vset(2.0f), half = vset(0.5f), c = vset(kC), a = vset(kA);
  auto f = [&](vfloat x) {
    if (act == 0) return vdiv(x, vadd(one, vexp(vmul(vset(-1.0f), x))));
    const vfloat z = vmul(c, vadd(x, vmul(a, vmul(x, vmul(x, x)))));
    const vfloat t = vsub(one, vdiv(two, vadd(vexp(vmul(two, z)), one)));  // tanh(z)
    return vmul(vmul(half, x), vadd(one, t));
  };
  int64_t i = 0;
  for (; i + kVec <= n; i += kVec) vstore(g + i, vmul(f(vload(g + i)), vload(u + i)));
  if (i < n) {
    // the tail through the same vector code: a value's result must not depend on where a
    // task's rows end (batch invariance: task sizes follow the batch)
    alignas(64) float gt[kVec] = {}, ut[kVec] = {};
    std::memcpy(gt, g + i, sizeof(float) * (n - i));
    std::memcpy(ut, u + i, sizeof(float) * (n - i));
    vstore(gt, vmul(f(vload(gt)), vload(ut)));
    std::memcpy(g + i, gt, sizeof(float) * (n - i));
  }
#else
  auto silu = [](float x) { return x / (1.0f + sexp(-x)); };
  auto gelu = [](float x) {
    const float y = kC * (x + kA * x * x * x);
    return 0.5f * x * (1.0f + (1.0f - 2.0f / (sexp(2.0f * y) + 1.0f)));
  };
  for (int64_t i = 0; i < n; ++i) g[i] = (act == 0 ? silu(g[i]) : gelu(g[i])) * u[i];
#endif
}

// ---- RoPE ------------------------------------------------------------------------------------
// Rotates `heads` vectors of `dim` values (at x + h * head_stride) for position `pos`:
// angle_i = pos * freq_i in float32, as the reference computes it; cos and sin times `scale`.
// interleaved: pairs (2i, 2i + 1) (llama.cpp NORM); else halves (i, i + dim / 2) (NEOX).
static void rope_row(float* x, int heads, int64_t head_stride, int dim, int64_t pos, const float* freq, float scale,
                     bool interleaved, float* cs) {
  const int half = dim / 2;
  for (int i = 0; i < half; ++i) {
    const float angle = (float)pos * freq[i];
    cs[i] = std::cos(angle) * scale;
    cs[half + i] = std::sin(angle) * scale;
  }
  for (int h = 0; h < heads; ++h) {
    float* v = x + h * head_stride;
    for (int i = 0; i < half; ++i) {
      const int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
      const float x1 = v[a], x2 = v[b], c = cs[i], s = cs[half + i];
      v[a] = x1 * c - x2 * s;
      v[b] = x2 * c + x1 * s;
    }
  }
}

// ---- attention over a paged cache --------------------------------------------------------------
#if defined(__AVX2__) || defined(__AVX512F__)

// acc[h][c0 .. c0 + U * kVec) = sum_j e[h][j] * v_j[...] for H heads: the sums stay in
// registers over all keys (a store per key and head would bound the loop).
template <int H, int U>
static void weigh_values(const AttnPart& p, const float* e, int n, const int64_t* rows, int r0, int c0) {
  vfloat acc[H][U];
  for (int h = 0; h < H; ++h)
    for (int u = 0; u < U; ++u) acc[h][u] = vset(0.0f);
  for (int j = 0; j < n; ++j) {
    const float* v = p.v + rows[j] * p.v_stride + c0;
    vfloat vv[U];
    for (int u = 0; u < U; ++u) vv[u] = vload(v + u * kVec);
    for (int h = 0; h < H; ++h) {
      const vfloat w = vset(e[(r0 + h) * n + j]);
      for (int u = 0; u < U; ++u) acc[h][u] = vfma(w, vv[u], acc[h][u]);
    }
  }
  for (int h = 0; h < H; ++h)
    for (int u = 0; u < U; ++u) vstore(p.acc + (int64_t)(r0 + h) * p.dv + c0 + u * kVec, acc[h][u]);
}

template <int U>
static void weigh_heads(const AttnPart& p, const float* e, int n, const int64_t* rows, int c0) {
  int r0 = 0;
  for (; r0 + 4 <= p.rep; r0 += 4) weigh_values<4, U>(p, e, n, rows, r0, c0);
  for (; r0 < p.rep; ++r0) weigh_values<1, U>(p, e, n, rows, r0, c0);
}
#endif

// One query row's `rep` heads (one KV head's group) against keys [s0, s1) of its sequence:
// the unnormalised softmax part m (max score), l (sum of exp), acc (sum of exp * v), which the
// caller merges across parts (step.cpp). Scores are q.k * scale, then softcap * tanh(s / softcap).
static void attn_part(const AttnPart& p) {
  const int n = (int)(p.s1 - p.s0);
  float* sc = p.scratch;  // [rep][n]
  static thread_local std::vector<int64_t> rows_buf;
  rows_buf.resize(n);
  int64_t* rows = rows_buf.data();
  for (int j = 0; j < n; ++j) {
    const int64_t s = p.s0 + j;
    rows[j] = (int64_t)p.blocks[s / p.block_size] * p.block_size + s % p.block_size;
  }
  for (int j = 0; j < n; ++j) {
    const float* k = p.k + rows[j] * p.k_stride;
    for (int r = 0; r < p.rep; ++r) sc[r * n + j] = dot_f32(p.q + r * p.q_stride, k, p.dk) * p.scale;
  }
  for (int r = 0; r < p.rep; ++r) {
    float* s = sc + r * n;
    if (p.softcap > 0.0f) {
      const float cap = p.softcap;
      for (int j = 0; j < n; ++j) {
        const float y = s[j] / cap;
        s[j] = (1.0f - 2.0f / (sexp(2.0f * y) + 1.0f)) * cap;
      }
    }
    float m = -INFINITY;
    for (int j = 0; j < n; ++j) m = std::max(m, s[j]);
    float l = 0.0f;
    int64_t j = 0;
#if defined(__AVX2__) || defined(__AVX512F__)
    vfloat vl = vset(0.0f);
    for (; j + kVec <= n; j += kVec) {
      const vfloat e = vexp(vadd(vload(s + j), vset(-m)));
      vstore(s + j, e);
      vl = vadd(vl, e);
    }
    l = vsum(vl);
#endif
    for (; j < n; ++j) {
      s[j] = sexp(s[j] - m);
      l += s[j];
    }
    p.m[r] = m;
    p.l[r] = l;
  }
  int c0 = 0;
#if defined(__AVX2__) || defined(__AVX512F__)
  for (; c0 + 4 * kVec <= p.dv; c0 += 4 * kVec) weigh_heads<4>(p, sc, n, rows, c0);
  for (; c0 + kVec <= p.dv; c0 += kVec) weigh_heads<1>(p, sc, n, rows, c0);
#endif
  for (int r = 0; r < p.rep; ++r) {
    float* acc = p.acc + (int64_t)r * p.dv;
    for (int c = c0; c < p.dv; ++c) acc[c] = 0.0f;
    for (int j = 0; j < n; ++j) {
      const float* v = p.v + rows[j] * p.v_stride;
      const float e = sc[r * n + j];
      for (int c = c0; c < p.dv; ++c) acc[c] += e * v[c];
    }
  }
}

// ---- gated DeltaNet (Qwen3-Next's linear attention), one value head, one token -------------
// The order of transformers' torch_recurrent_gated_delta_rule: decay the state, read its memory
// of k, write the beta-weighted correction, read q. Two passes over S, vectorised over dv.
static void delta_head(float* S, const float* k, const float* q, const float* v, float decay, float beta, int dk,
                       int dv, float* o) {
  std::vector<float> mem(dv, 0.0f);
  for (int i = 0; i < dk; ++i) {
    float* row = S + (int64_t)i * dv;
    int j = 0;
#if defined(__AVX2__) || defined(__AVX512F__)
    const vfloat d = vset(decay), ki = vset(k[i]);
    for (; j + kVec <= dv; j += kVec) {
      const vfloat s = vmul(vload(row + j), d);
      vstore(row + j, s);
      vstore(mem.data() + j, vfma(s, ki, vload(mem.data() + j)));
    }
#endif
    for (; j < dv; ++j) {
      row[j] *= decay;
      mem[j] += row[j] * k[i];
    }
  }
  for (int j = 0; j < dv; ++j) mem[j] = (v[j] - mem[j]) * beta;  // the correction (delta)
  std::fill(o, o + dv, 0.0f);
  for (int i = 0; i < dk; ++i) {
    float* row = S + (int64_t)i * dv;
    int j = 0;
#if defined(__AVX2__) || defined(__AVX512F__)
    const vfloat ki = vset(k[i]), qi = vset(q[i]);
    for (; j + kVec <= dv; j += kVec) {
      const vfloat s = vfma(ki, vload(mem.data() + j), vload(row + j));
      vstore(row + j, s);
      vstore(o + j, vfma(s, qi, vload(o + j)));
    }
#endif
    for (; j < dv; ++j) {
      row[j] += k[i] * mem[j];
      o[j] += row[j] * q[i];
    }
  }
}

}  // namespace KTX_ISA_NS
}  // namespace ktx
