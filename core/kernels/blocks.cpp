#include "blocks.h"

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>

namespace ktx {

namespace {
std::atomic<int64_t> g_clock[kClockCount];

// Adds the time until the end of its scope to one kind of work.
class Timed {
 public:
  explicit Timed(BlockClock c) : c_(c), t0_(std::chrono::steady_clock::now()) {}
  ~Timed() {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0_);
    g_clock[c_].fetch_add(ns.count(), std::memory_order_relaxed);
  }

 private:
  BlockClock c_;
  std::chrono::steady_clock::time_point t0_;
};

void need(bool ok, const char* what) {
  if (!ok) throw std::invalid_argument(std::string("decoder block: ") + what);
}

// out = norm(x) rows, or x itself when there is no norm
const float* normed(const Norm& n, const float* x, int64_t rows, int64_t cols, std::vector<float>& buf) {
  if (!n.w) return x;
  Timed t(kClockNorm);
  buf.resize(rows * cols);
  rms_norm(x, rows, cols, cols, n.w, n.eps, buf.data(), cols, false);
  return buf.data();
}

// x += y, or x += post_norm(y)
void add_into(float* x, const float* y, int64_t rows, int64_t cols, const Norm& post) {
  Timed t(kClockNorm);
  if (post.w) {
    rms_norm(y, rows, cols, cols, post.w, post.eps, x, cols, true);
    return;
  }
  for (int64_t i = 0; i < rows * cols; ++i) x[i] += y[i];
}
}  // namespace

std::vector<int64_t> block_clock() {
  std::vector<int64_t> v;
  for (auto& c : g_clock) v.push_back(c.load());
  return v;
}

void reset_block_clock() {
  for (auto& c : g_clock) c.store(0);
}

AttnBlock::AttnBlock(const AttnBlockSpec& s) : s_(s) {
  need(s.heads > 0 && s.kv_heads > 0 && s.heads % s.kv_heads == 0, "heads must be a multiple of kv_heads");
  need(s.head_dim > 0 && s.head_dim % 2 == 0 && s.rope_freqs, "head_dim must be even, with RoPE frequencies");
  for (const QMatrix* m : {&s.q, &s.k, &s.v, &s.o}) check_matrix(*m, "decoder block");
  need(s.q.cols == s.hidden && s.k.cols == s.hidden && s.v.cols == s.hidden, "q/k/v must read hidden values");
  need(s.q.rows == (int64_t)s.heads * s.head_dim, "q must give heads * head_dim values");
  need(s.k.rows == (int64_t)s.kv_heads * s.head_dim && s.v.rows == s.k.rows, "k/v must give kv_heads * head_dim");
  need(s.o.cols == s.q.rows && s.o.rows == s.hidden, "o must map heads * head_dim back to hidden");
}

void AttnBlock::forward(float* x, int64_t n, float* k_store, float* v_store, const PagedCache& cache,
                        const int32_t* seq, const int64_t* pos) {
  if (n <= 0) return;
  const AttnBlockSpec& s = s_;
  const int64_t d = s.head_dim, qw = s.q.rows, kw = s.k.rows;
  const float* h = normed(s.norm, x, n, s.hidden, h_);
  q_.resize(n * qw);
  k_.resize(n * kw);
  v_.resize(n * kw);
  const LinearOut outs[3] = {{s.q, q_.data(), qw, s.q_bias, false},
                             {s.k, k_.data(), kw, s.k_bias, false},
                             {s.v, v_.data(), kw, s.v_bias, false}};
  {
    Timed t(kClockLinear);
    linear_many(outs, 3, h, n, s.exact, s.threads);
  }
  {
    Timed t(kClockRope);  // with the q/k norms
    if (s.q_norm.w) rms_norm(q_.data(), n * s.heads, d, d, s.q_norm.w, s.q_norm.eps, q_.data(), d, false);
    if (s.k_norm.w) rms_norm(k_.data(), n * s.kv_heads, d, d, s.k_norm.w, s.k_norm.eps, k_.data(), d, false);
    rope(q_.data(), n, s.heads, qw, d, (int)d, pos, s.rope_freqs, s.rope_scale, s.rope_interleaved);
    rope(k_.data(), n, s.kv_heads, kw, d, (int)d, pos, s.rope_freqs, s.rope_scale, s.rope_interleaved);
  }
  o_.resize(n * qw);
  {
    Timed t(kClockAttention);
    kv_write(k_store, kw, k_.data(), kw, kw, n, cache, seq, pos);
    kv_write(v_store, kw, v_.data(), kw, kw, n, cache, seq, pos);
    paged_attention(q_.data(), qw, n, s.heads, s.kv_heads, (int)d, (int)d, k_store, kw, v_store, kw, cache, seq,
                    pos, s.scale, s.window, s.softcap, o_.data(), s.threads);
  }
  if (!s.post_norm.w && !s.o_bias) {  // the residual add is the product's own accumulation
    Timed t(kClockLinear);
    const LinearOut out{s.o, x, s.hidden, s.o_bias, true};
    linear_many(&out, 1, o_.data(), n, s.exact, s.threads);
    return;
  }
  y_.resize(n * s.hidden);
  {
    Timed t(kClockLinear);
    const LinearOut out{s.o, y_.data(), s.hidden, s.o_bias, false};
    linear_many(&out, 1, o_.data(), n, s.exact, s.threads);
  }
  add_into(x, y_.data(), n, s.hidden, s.post_norm);
}

MlpBlock::MlpBlock(const MlpBlockSpec& s) : s_(s) {
  for (const QMatrix* m : {&s.gate, &s.up, &s.down}) check_matrix(*m, "decoder block");
  need(s.gate.cols == s.hidden && s.up.cols == s.hidden, "gate/up must read hidden values");
  need(s.gate.rows == s.inter && s.up.rows == s.inter, "gate/up must give inter values");
  need(s.down.cols == s.inter && s.down.rows == s.hidden, "down must map inter back to hidden");
  need(s.act == 0 || s.act == 1, "act must be 0 (SiLU) or 1 (GELU tanh)");
}

void MlpBlock::forward(float* x, int64_t n) {
  if (n <= 0) return;
  const MlpBlockSpec& s = s_;
  const float* h = normed(s.norm, x, n, s.hidden, h_);
  g_.resize(n * s.inter);
  const bool add_in_place = !s.post_norm.w;  // the residual add is the product's own accumulation
  if (!add_in_place) y_.resize(n * s.hidden);
  {
    Timed t(kClockLinear);
    gated_linear(s.gate, s.up, h, n, g_.data(), s.act, s.exact, s.threads);
    const LinearOut out{s.down, add_in_place ? x : y_.data(), s.hidden, nullptr, add_in_place};
    linear_many(&out, 1, g_.data(), n, s.exact, s.threads);
  }
  if (!add_in_place) add_into(x, y_.data(), n, s.hidden, s.post_norm);
}

}  // namespace ktx
