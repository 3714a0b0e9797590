// A MoE router for CPU steps: the gate's logits, the scores, the group limit and the top-k,
// as core/ops/moe.py's `route` reference does them (that function is the oracle). One call
// instead of a dozen small PyTorch ops per layer and step.
#pragma once
#include <cstdint>

#include "qmatmul.h"

namespace ktx {

enum RouteScoring { kSoftmax = 0, kSigmoid = 1 };
// Group limit: none; keep the groups with the largest max score (DeepSeek-V2's
// group_limited_greedy, others filled with 0); or the largest sum of the top two (V3, Kimi-K2:
// others filled with -inf).
enum RouteGroup { kGroupNone = 0, kGroupMax = 1, kGroupTop2Sum = 2 };

struct RouteSpec {
  QMatrix gate{};                 // [experts][hidden]; its product runs on float32 activations
  const float* bias = nullptr;    // [experts] score correction for the choice only (V3), or null
  const float* logit_bias = nullptr;  // [experts] added to the logits (gpt-oss's router), or null
  int top_k = 1;
  int scoring = kSoftmax;
  int group = kGroupNone;
  int n_group = 1, topk_group = 1;
  bool norm = false;  // weights / (their sum + 1e-20)
  float scale = 1.0f;
  int threads = 1;
};

// ids [n][top_k] (largest choice first; ties to the lower id) and weights [n][top_k] for the
// n rows of x [n][gate.cols]. Throws std::invalid_argument on a spec the router cannot run.
void route(const RouteSpec& s, const float* x, int64_t n, int64_t* ids, float* weights);

}  // namespace ktx
