#include "blocks.h"

#include <atomic>
#include <chrono>
#include <cstring>
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
    if (s.qk_norm_full) {  // one norm over each row's heads (rows qw / kw floats wide)
      if (s.q_norm.w) rms_norm(q_.data(), n, qw, qw, s.q_norm.w, s.q_norm.eps, q_.data(), qw, false);
      if (s.k_norm.w) rms_norm(k_.data(), n, kw, kw, s.k_norm.w, s.k_norm.eps, k_.data(), kw, false);
    } else {
      if (s.q_norm.w) rms_norm(q_.data(), n * s.heads, d, d, s.q_norm.w, s.q_norm.eps, q_.data(), d, false);
      if (s.k_norm.w) rms_norm(k_.data(), n * s.kv_heads, d, d, s.k_norm.w, s.k_norm.eps, k_.data(), d, false);
    }
    const int rd = s.rope_dim > 0 ? s.rope_dim : (int)d;
    rope(q_.data(), n, s.heads, qw, d, rd, pos, s.rope_freqs, s.rope_scale, s.rope_interleaved);
    rope(k_.data(), n, s.kv_heads, kw, d, rd, pos, s.rope_freqs, s.rope_scale, s.rope_interleaved);
  }
  o_.resize(n * qw);
  {
    Timed t(kClockAttention);
    kv_write(k_store, kw, k_.data(), kw, kw, n, cache, seq, pos);
    kv_write(v_store, kw, v_.data(), kw, kw, n, cache, seq, pos);
    paged_attention(q_.data(), qw, n, s.heads, s.kv_heads, (int)d, (int)d, k_store, kw, v_store, kw, cache, seq,
                    pos, s.scale, s.window, s.softcap, o_.data(), s.threads, s.sinks);
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

MlaBlock::MlaBlock(const MlaBlockSpec& s) : s_(s) {
  need(s.heads > 0 && s.nope > 0 && s.rank > 0 && s.v_dim > 0, "MLA needs heads, nope, rank and v_dim");
  need(s.rope_dim > 0 && s.rope_dim % 2 == 0 && s.rope_freqs, "rope_dim must be even, with RoPE frequencies");
  need(s.kv_norm.w != nullptr, "MLA needs the latent's norm");
  const bool lora = s.q_a.rows > 0;
  for (const QMatrix* m : {&s.q, &s.kv_a, &s.k_b, &s.v_b, &s.o}) check_matrix(*m, "decoder block");
  if (lora) {
    check_matrix(s.q_a, "decoder block");
    need(s.q_a.cols == s.hidden && s.q.cols == s.q_a.rows && s.q_a_norm.w, "q_a must read hidden values, q_b its");
  } else {
    need(s.q.cols == s.hidden, "q must read hidden values");
  }
  need(s.q.rows == (int64_t)s.heads * (s.nope + s.rope_dim), "q must give heads * (nope + rope_dim) values");
  need(s.kv_a.cols == s.hidden && s.kv_a.rows == s.rank + s.rope_dim, "kv_a must give rank + rope_dim values");
  need(s.k_b.rows == s.rank && s.k_b.cols == s.nope && s.k_b_stride >= s.k_b.rows, "k_b heads must be [rank][nope]");
  need(s.v_b.rows == s.v_dim && s.v_b.cols == s.rank && s.v_b_stride >= s.v_b.rows, "v_b heads must be [v_dim][rank]");
  need(s.o.cols == (int64_t)s.heads * s.v_dim && s.o.rows == s.hidden, "o must map heads * v_dim back to hidden");
}

void MlaBlock::forward(float* x, int64_t n, float* store, const PagedCache& cache, const int32_t* seq,
                       const int64_t* pos) {
  if (n <= 0) return;
  const MlaBlockSpec& s = s_;
  const int64_t H = s.heads, dq = s.nope + s.rope_dim, qw = H * dq, lw = s.rank + s.rope_dim;
  const float* h = normed(s.norm, x, n, s.hidden, h_);
  q_.resize(n * qw);
  ckv_.resize(n * lw);
  {
    Timed t(kClockLinear);
    if (s.q_a.rows > 0) {
      qa_.resize(n * s.q_a.rows);
      const LinearOut outs[2] = {{s.q_a, qa_.data(), s.q_a.rows, nullptr, false},
                                 {s.kv_a, ckv_.data(), lw, nullptr, false}};
      linear_many(outs, 2, h, n, s.exact, s.threads);
    } else {
      const LinearOut outs[2] = {{s.q, q_.data(), qw, nullptr, false}, {s.kv_a, ckv_.data(), lw, nullptr, false}};
      linear_many(outs, 2, h, n, s.exact, s.threads);
    }
  }
  if (s.q_a.rows > 0) {
    {
      Timed t(kClockNorm);
      rms_norm(qa_.data(), n, s.q_a.rows, s.q_a.rows, s.q_a_norm.w, s.q_a_norm.eps, qa_.data(), s.q_a.rows, false);
    }
    Timed t(kClockLinear);
    const LinearOut out{s.q, q_.data(), qw, nullptr, false};
    linear_many(&out, 1, qa_.data(), n, s.exact, s.threads);
  }
  {
    Timed t(kClockNorm);
    rms_norm(ckv_.data(), n, s.rank, lw, s.kv_norm.w, s.kv_norm.eps, ckv_.data(), lw, false);
  }
  {
    Timed t(kClockRope);
    rope(q_.data() + s.nope, n, s.heads, qw, dq, s.rope_dim, pos, s.rope_freqs, s.rope_scale, true);
    rope(ckv_.data() + s.rank, n, 1, lw, lw, s.rope_dim, pos, s.rope_freqs, s.rope_scale, true);
  }
  // the absorbed query [n][H][rank + rope_dim]: q_nope through k_b, then q_pe
  qn_.resize(n * H * s.nope);
  ql_.resize(n * H * s.rank);
  qabs_.resize(n * H * lw);
  for (int64_t r = 0; r < n * H; ++r)
    std::memcpy(qn_.data() + r * s.nope, q_.data() + r * dq, s.nope * sizeof(float));
  {
    Timed t(kClockLinear);
    linear_heads(s.k_b, s.heads, s.k_b_stride, qn_.data(), n, ql_.data(), s.exact, s.threads);
  }
  for (int64_t r = 0; r < n * H; ++r) {
    std::memcpy(qabs_.data() + r * lw, ql_.data() + r * s.rank, s.rank * sizeof(float));
    std::memcpy(qabs_.data() + r * lw + s.rank, q_.data() + r * dq + s.nope, s.rope_dim * sizeof(float));
  }
  ol_.resize(n * H * s.rank);
  {
    Timed t(kClockAttention);
    kv_write(store, lw, ckv_.data(), lw, lw, n, cache, seq, pos);
    paged_attention(qabs_.data(), H * lw, n, s.heads, 1, (int)lw, s.rank, store, lw, store, lw, cache, seq, pos,
                    s.scale, 0, 0.0f, ol_.data(), s.threads);
  }
  o_.resize(n * H * s.v_dim);
  Timed t(kClockLinear);
  linear_heads(s.v_b, s.heads, s.v_b_stride, ol_.data(), n, o_.data(), s.exact, s.threads);
  const LinearOut out{s.o, x, s.hidden, nullptr, true};  // the residual add is the product's own accumulation
  linear_many(&out, 1, o_.data(), n, s.exact, s.threads);
}

MoeBlock::MoeBlock(const MoeBlockSpec& s) : s_(s) {
  need(s.experts != nullptr && s.experts->hidden() == s.hidden, "the experts must read hidden values");
  route(s.route, nullptr, 0, nullptr, nullptr);  // checks the router
  need(s.route.gate.cols == s.hidden && s.route.gate.rows == s.experts->n_experts(),
       "the router must score every expert from hidden values");
  if (s.shared_gate.rows > 0) {
    for (const QMatrix* m : {&s.shared_gate, &s.shared_up, &s.shared_down}) check_matrix(*m, "decoder block");
    need(s.shared_gate.cols == s.hidden && s.shared_up.cols == s.hidden && s.shared_up.rows == s.shared_gate.rows,
         "shared gate/up must read hidden values, give one width");
    need(s.shared_down.cols == s.shared_gate.rows && s.shared_down.rows == s.hidden,
         "shared down must map back to hidden");
    need(s.act == 0 || s.act == 1, "act must be 0 (SiLU) or 1 (GELU tanh)");
  }
}

void MoeBlock::forward(float* x, int64_t n) {
  if (n <= 0) return;
  const MoeBlockSpec& s = s_;
  const int k = s.route.top_k;
  const float* h = normed(s.norm, x, n, s.hidden, h_);
  ids_.resize(n * k);
  w_.resize(n * k);
  {
    Timed t(kClockRouting);
    route(s.route, h, n, ids_.data(), w_.data());
  }
  y_.resize(n * s.hidden);
  {
    Timed t(kClockExperts);
    s.experts->forward({n, k, ids_.data(), w_.data(), h, false, y_.data(), false});
  }
  if (s.shared_gate.rows > 0) {
    Timed t(kClockLinear);
    g_.resize(n * s.shared_gate.rows);
    gated_linear(s.shared_gate, s.shared_up, h, n, g_.data(), s.act, s.exact, s.threads);
    const LinearOut out{s.shared_down, y_.data(), s.hidden, nullptr, true};  // y + shared, as the operator adds them
    linear_many(&out, 1, g_.data(), n, s.exact, s.threads);
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
