// A decoder layer's two halves as single calls for CPU decode steps: the attention block
// (norm, q/k/v, q/k norms, RoPE, cache write, paged attention, output projection, residual)
// and the gated-MLP block (norm, gate/up with the activation, down, residual). The step plan
// (core/runtime/plan.py) builds them once from the layer's loaded operators, so a decode
// step costs two calls per layer instead of a dozen Python-level ones; each piece is the
// same kernel the operators call one by one, in the same order, so the results are equal.
#pragma once
#include <cstdint>
#include <vector>

#include "moe.h"
#include "qmatmul.h"
#include "routing.h"
#include "step.h"

namespace ktx {

struct Norm {
  const float* w = nullptr;  // null: no norm here
  float eps = 0.0f;
};

struct AttnBlockSpec {
  int64_t hidden = 0;
  Norm norm;       // before the block
  Norm post_norm;  // on its output before the residual add (Gemma 3); else added as is
  QMatrix q{}, k{}, v{}, o{};
  const float *q_bias = nullptr, *k_bias = nullptr, *v_bias = nullptr, *o_bias = nullptr;
  Norm q_norm, k_norm;  // per head (Qwen 3, Gemma 3)
  int heads = 0, kv_heads = 0, head_dim = 0;
  const float* rope_freqs = nullptr;  // rope_dim / 2
  int rope_dim = 0;                   // the rotated leading part of each head (0: all of it; GLM: half)
  bool qk_norm_full = false;          // q/k norms over all heads together (MiniMax-M2), else per head
  float rope_scale = 1.0f;
  bool rope_interleaved = false;
  float scale = 1.0f;
  int64_t window = 0;  // sliding window (0: none)
  float softcap = 0.0f;
  const float* sinks = nullptr;  // [heads] (gpt-oss), or null
  bool exact = false;
  int threads = 1;
};

// Multi-head latent attention (DeepSeek-V2/V3, Kimi-K2) in its absorbed form over the latent
// cache (core/ops/mla.py's CPU path): q (directly, or q_a -> norm -> q_b), the latent
// kv_a -> (norm(c), RoPE(k_pe)) written to the cache, q_nope through each head's k_b into
// latent space, paged attention with the latent rows as keys (their first `rank` values as
// values), each head's v_b, the output projection, the residual.
struct MlaBlockSpec {
  int64_t hidden = 0;
  Norm norm;     // before the block
  QMatrix q{};   // q_proj, or q_b_proj when q_a is set
  QMatrix q_a{}; // rows 0: none (no q LoRA)
  Norm q_a_norm;
  QMatrix kv_a{};  // [rank + rope_dim][hidden]
  Norm kv_norm;    // on the latent c
  QMatrix k_b{}, v_b{};  // one head's matrix: [rank][nope], [v_dim][rank]
  int64_t k_b_stride = 0, v_b_stride = 0;  // rows from one head's matrix to the next
  QMatrix o{};
  int heads = 0, nope = 0, rope_dim = 0, rank = 0, v_dim = 0;
  const float* rope_freqs = nullptr;  // rope_dim / 2, interleaved pairs
  float rope_scale = 1.0f;
  float scale = 1.0f;
  bool exact = false;
  int threads = 1;
};

struct MlpBlockSpec {
  int64_t hidden = 0, inter = 0;
  Norm norm, post_norm;
  QMatrix gate{}, up{}, down{};
  int act = 0;  // step.h's act_mul codes
  bool exact = false;
  int threads = 1;
};

// A MoE layer's MLP half: norm, router, routed experts (the layer's MoeLayer), shared experts
// if any (gated, then down, added to the experts' sum as core/ops/moe.py's MoE adds them),
// residual.
struct MoeBlockSpec {
  int64_t hidden = 0;
  Norm norm, post_norm;
  RouteSpec route;
  MoeLayer* experts = nullptr;  // not owned
  QMatrix shared_gate{}, shared_up{}, shared_down{};  // rows 0: no shared experts
  int act = 0;
  bool exact = false;  // the shared experts'
  int threads = 1;
};

// Time spent in the blocks by kind of work, for `ktx bench e2e --breakdown` (the blocks run
// several kernel families in one call). Nanoseconds since the last reset.
enum BlockClock { kClockNorm, kClockRope, kClockLinear, kClockAttention, kClockExperts, kClockRouting, kClockCount };
std::vector<int64_t> block_clock();
void reset_block_clock();

class AttnBlock {
 public:
  explicit AttnBlock(const AttnBlockSpec& s);
  // x [n][hidden] += the block's output, for n new tokens (token t of sequence seq[t] at
  // position pos[t]); their K/V are written to k_store / v_store ([blocks][block_size][kv_heads
  // * head_dim] floats) first.
  void forward(float* x, int64_t n, float* k_store, float* v_store, const PagedCache& cache, const int32_t* seq,
               const int64_t* pos);

 private:
  AttnBlockSpec s_;
  std::vector<float> h_, q_, k_, v_, o_, y_;
};

class MlaBlock {
 public:
  explicit MlaBlock(const MlaBlockSpec& s);
  // x [n][hidden] += the block's output; the new tokens' latent rows (rank + rope_dim floats)
  // are written to `store` first.
  void forward(float* x, int64_t n, float* store, const PagedCache& cache, const int32_t* seq, const int64_t* pos);

 private:
  MlaBlockSpec s_;
  std::vector<float> h_, qa_, q_, ckv_, qn_, ql_, qabs_, ol_, o_;
};

class MoeBlock {
 public:
  explicit MoeBlock(const MoeBlockSpec& s);
  void forward(float* x, int64_t n);  // x [n][hidden] += the block's output

 private:
  MoeBlockSpec s_;
  std::vector<float> h_, w_, y_, g_, z_;
  std::vector<int64_t> ids_;
};

class MlpBlock {
 public:
  explicit MlpBlock(const MlpBlockSpec& s);
  void forward(float* x, int64_t n);  // x [n][hidden] += the block's output

 private:
  MlpBlockSpec s_;
  std::vector<float> h_, g_, y_;
};

}  // namespace ktx
