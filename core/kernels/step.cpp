#include "step.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "dispatch.h"
#include "thread_pool.h"

namespace ktx {

void rms_norm(const float* x, int64_t rows, int64_t cols, int64_t x_stride, const float* w, float eps, float* out,
              int64_t out_stride, bool accumulate) {
  const KernelTable& t = active_table();
  for (int64_t r = 0; r < rows; ++r) t.rms_norm(x + r * x_stride, cols, w, eps, out + r * out_stride, accumulate);
}

void act_mul(float* g, const float* u, int64_t n, int act) {
  if (act != 0 && act != 1) throw std::invalid_argument("act_mul: act must be 0 (SiLU) or 1 (GELU tanh)");
  active_table().act_mul(g, u, n, act);
}

void rope(float* x, int64_t rows, int heads, int64_t row_stride, int64_t head_stride, int dim, const int64_t* pos,
          const float* freq, float scale, bool interleaved) {
  if (dim <= 0 || dim % 2) throw std::invalid_argument("rope: dim must be positive and even");
  const KernelTable& t = active_table();
  std::vector<float> cs(dim);
  for (int64_t r = 0; r < rows; ++r)
    t.rope(x + r * row_stride, heads, head_stride, dim, pos[r], freq, scale, interleaved, cs.data());
}

void deltanet_step(const DeltaStep& s, int n_threads) {
  if (s.nk <= 0 || s.nv % s.nk || s.dk <= 0 || s.dv <= 0 || s.K < 2)
    throw std::invalid_argument("deltanet_step: bad head counts or sizes");
  const int64_t kd = (int64_t)s.nk * s.dk, C = 2 * kd + (int64_t)s.nv * s.dv, kept = s.K - 1;
  // the convolution over [state | x], then the state shifted by one
  std::vector<float> x(C);
  for (int64_t c = 0; c < C; ++c) {
    float* st = s.conv_state + c * kept;
    const float* w = s.conv_w + c * s.K;
    float acc = 0.0f;
    for (int64_t i = 0; i < kept; ++i) acc += st[i] * w[i];
    acc += s.mixed[c] * w[kept];
    x[c] = acc / (1.0f + std::exp(-acc));
    std::memmove(st, st + 1, sizeof(float) * (kept - 1));
    st[kept - 1] = s.mixed[c];
  }
  // q, k: x * rsqrt(sum x^2 + 1e-6) per key head (transformers' l2norm), q by 1/sqrt(dk)
  const float qscale = 1.0f / std::sqrt((float)s.dk);
  for (int64_t part = 0; part < 2; ++part)
    for (int h = 0; h < s.nk; ++h) {
      float* p = x.data() + part * kd + (int64_t)h * s.dk;
      float ss = 0.0f;
      for (int i = 0; i < s.dk; ++i) ss += p[i] * p[i];
      const float r = 1.0f / std::sqrt(ss + 1e-6f) * (part == 0 ? qscale : 1.0f);
      for (int i = 0; i < s.dk; ++i) p[i] *= r;
    }
  const KernelTable& t = active_table();
  const int rep = s.nv / s.nk;
  thread_pool(n_threads).run(s.nv, [&](int64_t h) {
    const int kh = s.tiled ? (int)(h % s.nk) : (int)(h / rep);
    const float* q = x.data() + (int64_t)kh * s.dk;
    const float* k = x.data() + kd + (int64_t)kh * s.dk;
    const float* v = x.data() + 2 * kd + h * s.dv;
    float* o = s.out + h * s.dv;
    // beta = sigmoid(b); decay = exp(a_neg * softplus(a + dt_bias)), softplus as PyTorch's
    // (the input itself above 20)
    const float beta = 1.0f / (1.0f + std::exp(-s.b[h]));
    const float x = s.a[h] + s.dt_bias[h];
    const float softplus = x > 20.0f ? x : std::log1p(std::exp(x));
    t.delta_head(s.S + h * s.dk * s.dv, k, q, v, std::exp(s.a_neg[h] * softplus), beta, s.dk, s.dv, o);
    // gated RMSNorm of the head's output
    float ss = 0.0f;
    for (int j = 0; j < s.dv; ++j) ss += o[j] * o[j];
    const float r = 1.0f / std::sqrt(ss / (float)s.dv + s.eps);
    const float* z = s.z + h * s.dv;
    for (int j = 0; j < s.dv; ++j) o[j] = (o[j] * r) * s.norm_w[j] * (z[j] / (1.0f + std::exp(-z[j])));
  });
}

namespace {
// The cache row of position p of a sequence whose blocks are `blocks`.
inline int64_t cache_row(const PagedCache& c, const int32_t* blocks, int64_t p) {
  return (int64_t)blocks[p / c.block_size] * c.block_size + p % c.block_size;
}
}  // namespace

void kv_write(float* store, int64_t store_stride, const float* src, int64_t src_stride, int64_t width, int64_t rows,
              const PagedCache& cache, const int32_t* seq, const int64_t* pos) {
  for (int64_t t = 0; t < rows; ++t) {
    const int32_t* blocks = cache.table + seq[t] * cache.width;
    std::memcpy(store + cache_row(cache, blocks, pos[t]) * store_stride, src + t * src_stride, sizeof(float) * width);
  }
}

namespace {
struct Part {
  int64_t row, s0, s1;
  int head0, heads;  // query heads head0 .. head0 + heads, of one KV head
};
// Keys per part: a row's keys are split into parts of this many whatever else is in the step,
// so its result (the parts' merge order) does not depend on the batch (batch invariance);
// a decode step of one sequence still spreads over the threads once its context has a few
// hundred tokens.
constexpr int64_t kKeysPerPart = 128;
// Query heads per part: MLA has 16 or 128 heads on one latent "KV head"; groups of 4 spread
// them over the threads and keep a group's sums in registers (step_impl.h's weigh_values).
constexpr int kHeadsPerPart = 4;
}  // namespace

void paged_attention(const float* q, int64_t q_stride, int64_t rows, int heads, int kv_heads, int dk, int dv,
                     const float* k, int64_t k_stride, const float* v, int64_t v_stride, const PagedCache& cache,
                     const int32_t* seq, const int64_t* pos, float scale, int64_t window, float softcap, float* out,
                     int n_threads, const float* sinks) {
  if (rows <= 0) return;
  if (kv_heads <= 0 || heads % kv_heads) throw std::invalid_argument("paged_attention: heads must be a multiple of kv_heads");
  const int rep = heads / kv_heads;
  const KernelTable& t = active_table();
  ThreadPool& pool = thread_pool(n_threads);
  auto first_key = [&](int64_t r) { return window > 0 ? std::max<int64_t>(0, pos[r] - window + 1) : 0; };
  // a stream: one row's group of query heads (within one KV head); its parts split the keys
  const int group = std::min(rep, kHeadsPerPart), groups = (rep + group - 1) / group;
  const int64_t streams = rows * kv_heads * groups;
  std::vector<Part> parts;
  std::vector<int64_t> first_part(streams + 1);
  for (int64_t r = 0; r < rows; ++r)
    for (int h = 0; h < kv_heads; ++h)
      for (int g = 0; g < groups; ++g) {
        first_part[(r * kv_heads + h) * groups + g] = (int64_t)parts.size();
        const int head0 = h * rep + g * group, nh = std::min(group, rep - g * group);
        for (int64_t s0 = first_key(r); s0 <= pos[r]; s0 += kKeysPerPart)
          parts.push_back({r, s0, std::min(pos[r] + 1, s0 + kKeysPerPart), head0, nh});
      }
  first_part[streams] = (int64_t)parts.size();
  const int64_t stride = (int64_t)group * (dv + 2);  // m[heads], l[heads], acc[heads][dv] per part
  std::vector<float> partial(parts.size() * stride);
  pool.run((int64_t)parts.size(), [&](int64_t i) {
    static thread_local std::vector<float> scratch;
    const Part& p = parts[i];
    const int kv = p.head0 / rep;
    scratch.resize((size_t)p.heads * (p.s1 - p.s0));
    float* m = partial.data() + i * stride;
    AttnPart a;
    a.q = q + p.row * q_stride + (int64_t)p.head0 * dk;
    a.q_stride = dk;
    a.rep = p.heads, a.dk = dk, a.dv = dv;
    a.k = k + (int64_t)kv * dk, a.k_stride = k_stride;
    a.v = v + (int64_t)kv * dv, a.v_stride = v_stride;
    a.blocks = cache.table + seq[p.row] * cache.width;
    a.block_size = cache.block_size;
    a.s0 = p.s0, a.s1 = p.s1;
    a.scale = scale, a.softcap = softcap;
    a.m = m, a.l = m + p.heads, a.acc = m + 2 * p.heads;
    a.scratch = scratch.data();
    t.attn_part(a);
  });
  // Merge each stream's parts: rescale to the largest max, add, divide by the sum (a sink
  // joins the max and the sum).
  for (int64_t sidx = 0; sidx < streams; ++sidx) {
    const int64_t first = first_part[sidx], last = first_part[sidx + 1];
    const Part& p0 = parts[first];
    for (int j = 0; j < p0.heads; ++j) {
      const float sink = sinks ? sinks[p0.head0 + j] : -INFINITY;
      float mx = sink;
      for (int64_t i = first; i < last; ++i) mx = std::max(mx, partial[i * stride + j]);
      float* o = out + (p0.row * heads + p0.head0 + j) * dv;
      std::fill(o, o + dv, 0.0f);
      float l = sinks ? std::exp(sink - mx) : 0.0f;
      for (int64_t i = first; i < last; ++i) {
        const float* base = partial.data() + i * stride;
        const float f = std::exp(base[j] - mx);
        l += base[p0.heads + j] * f;
        const float* acc = base + 2 * p0.heads + (int64_t)j * dv;
        for (int c = 0; c < dv; ++c) o[c] += acc[c] * f;
      }
      const float inv = 1.0f / l;
      for (int c = 0; c < dv; ++c) o[c] *= inv;
    }
  }
}

}  // namespace ktx
