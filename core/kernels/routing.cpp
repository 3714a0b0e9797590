#include "routing.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

namespace ktx {

namespace {

// The k largest of v[0..count) (ties to the lower index), largest first.
void top_k(const float* v, int count, int k, int* out) {
  for (int j = 0; j < k; ++j) {
    int best = -1;
    for (int e = 0; e < count; ++e) {
      bool taken = false;
      for (int i = 0; i < j && !taken; ++i) taken = out[i] == e;
      if (!taken && (best < 0 || v[e] > v[best])) best = e;
    }
    out[j] = best;
  }
}

void check(const RouteSpec& s) {
  check_matrix(s.gate, "router");
  const int64_t experts = s.gate.rows;
  if (s.top_k < 1 || s.top_k > experts) throw std::invalid_argument("router: top_k must be 1 .. experts");
  if (s.scoring != kSoftmax && s.scoring != kSigmoid) throw std::invalid_argument("router: unknown scoring");
  if (s.group < kGroupNone || s.group > kGroupTop2Sum) throw std::invalid_argument("router: unknown group limit");
  if (s.group != kGroupNone && s.n_group > 1) {
    if (experts % s.n_group || s.topk_group < 1 || s.topk_group > s.n_group)
      throw std::invalid_argument("router: groups must split the experts evenly, topk_group 1 .. n_group");
    if (s.group == kGroupTop2Sum && experts / s.n_group < 2)
      throw std::invalid_argument("router: a top-2 group sum needs two experts per group");
  }
}

}  // namespace

void route(const RouteSpec& s, const float* x, int64_t n, int64_t* ids, float* weights) {
  check(s);
  if (n <= 0) return;
  const int E = (int)s.gate.rows, k = s.top_k;
  std::vector<float> logits((size_t)n * E);
  const LinearOut out{s.gate, logits.data(), E, nullptr, false};
  linear_many(&out, 1, x, n, /*exact=*/true, s.threads);
  std::vector<float> scores(E), choice(E), group_score(s.n_group);
  std::vector<int> chosen(k), groups(s.topk_group);
  const bool grouped = s.group != kGroupNone && s.n_group > 1;
  const int per_group = E / s.n_group;
  for (int64_t t = 0; t < n; ++t) {
    float* l = logits.data() + t * E;
    if (s.logit_bias)
      for (int e = 0; e < E; ++e) l[e] += s.logit_bias[e];
    if (s.scoring == kSoftmax) {
      float mx = l[0];
      for (int e = 1; e < E; ++e) mx = std::max(mx, l[e]);
      float sum = 0.0f;
      for (int e = 0; e < E; ++e) sum += scores[e] = std::exp(l[e] - mx);
      for (int e = 0; e < E; ++e) scores[e] /= sum;
    } else {
      for (int e = 0; e < E; ++e) scores[e] = 1.0f / (1.0f + std::exp(-l[e]));
    }
    for (int e = 0; e < E; ++e) choice[e] = s.bias ? scores[e] + s.bias[e] : scores[e];
    if (grouped) {
      for (int g = 0; g < s.n_group; ++g) {
        const float* c = choice.data() + g * per_group;
        if (s.group == kGroupMax) {
          float mx = c[0];
          for (int e = 1; e < per_group; ++e) mx = std::max(mx, c[e]);
          group_score[g] = mx;
        } else {
          int two[2];
          top_k(c, per_group, 2, two);
          group_score[g] = c[two[0]] + c[two[1]];
        }
      }
      top_k(group_score.data(), s.n_group, s.topk_group, groups.data());
      const float fill = s.group == kGroupMax ? 0.0f : -std::numeric_limits<float>::infinity();
      for (int g = 0; g < s.n_group; ++g) {
        bool keep = false;
        for (int i = 0; i < s.topk_group && !keep; ++i) keep = groups[i] == g;
        if (!keep)
          for (int e = 0; e < per_group; ++e) choice[g * per_group + e] = fill;
      }
    }
    top_k(choice.data(), E, k, chosen.data());
    float sum = 0.0f;
    for (int j = 0; j < k; ++j) sum += scores[chosen[j]];
    for (int j = 0; j < k; ++j) {
      const float w = scores[chosen[j]];
      ids[t * k + j] = chosen[j];
      weights[t * k + j] = (s.norm ? w / (sum + 1e-20f) : w) * s.scale;
    }
  }
}

}  // namespace ktx
