// The float32 pieces of a step (norms, activations, RoPE, paged attention), for whole rows
// and batches: baseline-compiled drivers over the active ISA's kernels (step_impl.h), on the
// persistent pool where a piece is worth splitting.
#pragma once
#include <cstdint>

namespace ktx {

// out[r] (+)= rms_norm(x[r]) * w for `rows` rows of `cols` (row strides x_stride, out_stride).
void rms_norm(const float* x, int64_t rows, int64_t cols, int64_t x_stride, const float* w, float eps, float* out,
              int64_t out_stride, bool accumulate);

// g = act(g) * u over n values (act 0: SiLU, 1: GELU tanh approximation).
void act_mul(float* g, const float* u, int64_t n, int act);

// Rotates x in place: row t (at x + t * row_stride) holds `heads` vectors of `dim` values
// head_stride apart, at position pos[t].
void rope(float* x, int64_t rows, int heads, int64_t row_stride, int64_t head_stride, int dim, const int64_t* pos,
          const float* freq, float scale, bool interleaved);

// A paged cache: float32 rows (one per token slot), block b holding slots b * block_size ..;
// each sequence's blocks are a row of `table` (width entries).
struct PagedCache {
  const int32_t* table;
  int64_t width;
  int block_size;
};

// Row t of src (width floats, src_stride apart) into the cache row of position pos[t] of
// sequence seq[t] (store rows store_stride floats apart).
void kv_write(float* store, int64_t store_stride, const float* src, int64_t src_stride, int64_t width, int64_t rows,
              const PagedCache& cache, const int32_t* seq, const int64_t* pos);

// Causal attention of query rows over their sequences' cached keys 0 .. pos[t] (the last
// `window` of them if window > 0): q [rows][heads][dk] (q_stride floats per row), keys and
// values of cache row i at k + i * k_stride, v + i * v_stride (KV head h at + h * dk / + h * dv);
// out [rows][heads][dv]. heads = kv_heads * rep, head j reads KV head j / rep. sinks: per
// head, a logit that joins the softmax without a value (gpt-oss), or null.
void paged_attention(const float* q, int64_t q_stride, int64_t rows, int heads, int kv_heads, int dk, int dv,
                     const float* k, int64_t k_stride, const float* v, int64_t v_stride, const PagedCache& cache,
                     const int32_t* seq, const int64_t* pos, float scale, int64_t window, float softcap, float* out,
                     int n_threads, const float* sinks = nullptr);

// One token of one sequence through a gated DeltaNet (Qwen3-Next's linear attention) after its
// projections: the causal depthwise convolution over the last K-1 inputs (conv_state [C][K-1],
// shifted in place) and SiLU, q and k L2-normalised per key head (q also by 1/sqrt(dk)), the
// recurrence per value head on S [nv][dk][dv] (in place) with beta = sigmoid(b) and log decay
// g = a_neg * softplus(a + dt_bias), then the gated RMSNorm: out = rms_norm(o) * norm_w * silu(z).
// Everything per token is computed here, in scalar code per head, so a row's result does not
// depend on how many other rows its step holds (PyTorch's vector and tail paths differ in ulps). C = 2 nk dk + nv dv channels ([q | k | v]); value head
// h reads key head h % nk when `tiled` (llama.cpp's Qwen3.5 order), else h / (nv / nk).
struct DeltaStep {
  const float* mixed;     // [C] the new token's projected q, k, v
  float* conv_state;      // [C][K - 1]
  const float* conv_w;    // [C][K]
  const float* b;         // [nv] the beta projection
  const float* a;         // [nv] the decay projection
  const float* a_neg;     // [nv] -exp(A_log)
  const float* dt_bias;   // [nv]
  float* S;               // [nv][dk][dv]
  const float* z;         // [nv][dv]
  const float* norm_w;    // [dv]
  float eps;
  int nk, dk, nv, dv, K;
  bool tiled;
  float* out;             // [nv][dv]
};
void deltanet_step(const DeltaStep& s, int n_threads);

}  // namespace ktx
