#include "moe.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <functional>
#include <numeric>
#include <stdexcept>
#include <string>

#include "dispatch.h"
#include "fp16.h"
#include "thread_pool.h"

namespace ktx {
namespace {

// One background thread runs submitted layers in order: the caller (Python) goes on with
// attention or shared experts on the accelerator meanwhile.
class Runner {
 public:
  Runner() : thread_([this] { loop(); }) {}
  ~Runner() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void post(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
  }

 private:
  void loop() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stop_ = false;
  std::thread thread_;
};

Runner& runner() {
  static Runner r;
  return r;
}

inline float silu(float g) { return g / (1.0f + std::exp(-g)); }

// gpt-oss's SwiGLU: the gate clamped from above, up on both sides, and up shifted by one.
inline float clamped_swiglu(float g, float u, float alpha, float limit) {
  g = std::min(g, limit);
  u = std::min(std::max(u, -limit), limit);
  return g / (1.0f + std::exp(-alpha * g)) * (u + 1.0f);
}

}  // namespace

MoeLayer::MoeLayer(int64_t n_experts, int64_t hidden, int64_t inter, QMatrix gate, QMatrix up, QMatrix down,
                   int n_threads, bool exact)
    : n_experts_(n_experts), hidden_(hidden), inter_(inter), gate_(gate), up_(up), down_(down),
      n_threads_(std::max(1, n_threads)), exact_(exact) {
  if (n_experts <= 0) throw std::invalid_argument("MoeLayer: n_experts must be positive");
  gate_.rows = up_.rows = inter;
  gate_.cols = up_.cols = hidden;
  down_.rows = hidden;
  down_.cols = inter;
  check_matrix(gate_, "experts' gate");
  check_matrix(up_, "experts' up");
  check_matrix(down_, "experts' down");
}

void MoeLayer::set_extras(const float* gate_bias, const float* up_bias, const float* down_bias, int act,
                          float alpha, float limit) {
  if (act != 0 && act != 1) throw std::invalid_argument("MoeLayer: act must be 0 (SiLU) or 1 (clamped SwiGLU)");
  std::lock_guard<std::mutex> lock(mutex_);
  if (pending_) throw std::runtime_error("MoeLayer: set_extras while a call is in flight");
  gate_bias_ = gate_bias, up_bias_ = up_bias, down_bias_ = down_bias;
  act_kind_ = act, alpha_ = alpha, limit_ = limit;
}

MoeLayer::~MoeLayer() {
  try {
    sync();
  } catch (...) {
  }
}

void MoeLayer::forward(const MoeCall& c) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (pending_) throw std::runtime_error("MoeLayer: forward while a submitted call is in flight (sync first)");
  }
  run(c);
}

void MoeLayer::run(const MoeCall& c) {
  if (c.n <= 0) return;
  if (c.k <= 0) throw std::invalid_argument("MoeLayer: k must be positive");
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t n = c.n, k = c.k, H = hidden_, I = inter_, slots = n * k;
  // -1 marks a slot whose expert runs elsewhere (kept on the GPU): it is skipped here.
  for (int64_t i = 0; i < slots; ++i)
    if (c.ids[i] < -1 || c.ids[i] >= n_experts_)
      throw std::invalid_argument("MoeLayer: expert id " + std::to_string(c.ids[i]) + " out of range [0, " +
                                  std::to_string(n_experts_) + ")");
  const KernelTable& t = active_table();
  ThreadPool& pool = thread_pool(n_threads_);

  // Tokens grouped by expert (counting sort): slot ids, their tokens and weights.
  std::vector<int32_t> count(n_experts_ + 1, 0);
  for (int64_t i = 0; i < slots; ++i)
    if (c.ids[i] >= 0) ++count[c.ids[i] + 1];
  std::vector<int32_t> start(n_experts_ + 1, 0);
  std::partial_sum(count.begin(), count.end(), start.begin());
  std::vector<int32_t> slot_of(slots), token_of(slots), fill(start.begin(), start.end() - 1);
  std::vector<float> weight_of(slots);
  for (int64_t i = 0; i < slots; ++i) {
    if (c.ids[i] < 0) continue;
    const int32_t at = fill[c.ids[i]]++;
    slot_of[at] = (int32_t)i;
    token_of[at] = (int32_t)(i / k);
    weight_of[at] = c.weights[i];
  }
  std::vector<int32_t> active;
  for (int64_t e = 0; e < n_experts_; ++e)
    if (count[e + 1]) active.push_back((int32_t)e);
  // Busiest experts first, so the longest tasks start early (dynamic balancing does the rest).
  std::stable_sort(active.begin(), active.end(), [&](int32_t a, int32_t b) { return count[a + 1] > count[b + 1]; });

  // Input rows as float32, quantized once for every expert that reads them.
  const float* x = static_cast<const float*>(c.x);
  if (c.x_bf16) {
    xf_.resize(n * H);
    const uint16_t* xb = static_cast<const uint16_t*>(c.x);
    for (int64_t i = 0; i < n * H; ++i) xf_[i] = bf16_to_fp32(xb[i]);
    x = xf_.data();
  }
  const bool gate_i8 = uses_int8(t, gate_.type, exact_), up_i8 = uses_int8(t, up_.type, exact_);
  ActNeeds x_needs;
  x_needs.add(t, gate_.type, exact_);
  x_needs.add(t, up_.type, exact_);
  x_acts_.prepare(t, x, n, H, x_needs, pool);

  // Gate and up: task = (expert, tile of rows); act[slot][r] = silu(gate) * up.
  act_.resize(slots * I);
  const int64_t per_expert = (slots + (int64_t)active.size() - 1) / std::max<int64_t>(1, (int64_t)active.size());
  const int rows1 = rows_per_task(gate_, per_expert, pool.size());
  const int64_t tiles1 = (I + rows1 - 1) / rows1;
  pool.run((int64_t)active.size() * tiles1, [&](int64_t task) {
    const int32_t e = active[task / tiles1];
    const int64_t r0 = (task % tiles1) * rows1;
    const int nr = (int)std::min<int64_t>(rows1, I - r0);
    const int m = count[e + 1];
    const int32_t* toks = token_of.data() + start[e];
    static thread_local std::vector<float> g, u;
    g.resize((size_t)m * nr);
    u.resize((size_t)m * nr);
    tile_product(t, gate_.expert(e), r0, nr, x_acts_, gate_i8, {toks, nullptr, nullptr, m, g.data(), nr, false});
    tile_product(t, up_.expert(e), r0, nr, x_acts_, up_i8, {toks, nullptr, nullptr, m, u.data(), nr, false});
    const float* gb = gate_bias_ ? gate_bias_ + (int64_t)e * I + r0 : nullptr;
    const float* ub = up_bias_ ? up_bias_ + (int64_t)e * I + r0 : nullptr;
    for (int i = 0; i < m; ++i) {
      float* dst = act_.data() + (int64_t)slot_of[start[e] + i] * I + r0;
      const float *gi = g.data() + (size_t)i * nr, *ui = u.data() + (size_t)i * nr;
      for (int r = 0; r < nr; ++r) {
        const float gv = gb ? gi[r] + gb[r] : gi[r], uv = ub ? ui[r] + ub[r] : ui[r];
        dst[r] = act_kind_ == 0 ? silu(gv) * uv : clamped_swiglu(gv, uv, alpha_, limit_);
      }
    }
  });

  // Skipped slots' rows are never read by down, but they are quantized with the rest: keep them finite.
  for (int64_t i = 0; i < slots; ++i)
    if (c.ids[i] < 0) std::memset(act_.data() + i * I, 0, sizeof(float) * I);

  // Down: task = tile of output rows over every active expert, in expert order: a token's
  // sum over its experts is then added up the same way whatever else is in the batch.
  std::vector<int32_t> by_id(active);
  std::sort(by_id.begin(), by_id.end());
  const bool down_i8 = uses_int8(t, down_.type, exact_);
  ActNeeds act_needs;
  act_needs.add(t, down_.type, exact_);
  act_acts_.prepare(t, act_.data(), slots, I, act_needs, pool);
  float* outf = static_cast<float*>(c.out);
  if (c.out_bf16) {
    outf_.resize(n * H);
    outf = outf_.data();
  }
  const int rows2 = rows_per_task(down_, per_expert, pool.size());
  pool.run((H + rows2 - 1) / rows2, [&](int64_t task) {
    const int64_t r0 = task * rows2;
    const int nr = (int)std::min<int64_t>(rows2, H - r0);
    for (int64_t i = 0; i < n; ++i) std::memset(outf + i * H + r0, 0, sizeof(float) * nr);
    for (int32_t e : by_id) {
      const int32_t s0 = start[e];
      tile_product(t, down_.expert(e), r0, nr, act_acts_, down_i8,
                   {slot_of.data() + s0, token_of.data() + s0, weight_of.data() + s0, count[e + 1], outf + r0, H, true});
      if (down_bias_) {  // each token's weight times the expert's bias, after its product
        const float* db = down_bias_ + (int64_t)e * H + r0;
        for (int32_t i = s0; i < s0 + count[e + 1]; ++i) {
          float* dst = outf + (int64_t)token_of[i] * H + r0;
          for (int r = 0; r < nr; ++r) dst[r] += weight_of[i] * db[r];
        }
      }
    }
  });
  if (c.out_bf16) {
    uint16_t* ob = static_cast<uint16_t*>(c.out);
    for (int64_t i = 0; i < n * H; ++i) ob[i] = fp32_to_bf16(outf[i]);
  }
  busy_ns_ += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
}

void MoeLayer::submit(const MoeCall& c) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (pending_) throw std::runtime_error("MoeLayer: submit while a previous call is in flight (sync first)");
    pending_ = true;
    error_ = nullptr;
  }
  runner().post([this, c] {
    std::exception_ptr err;
    try {
      run(c);
    } catch (...) {
      err = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      pending_ = false;
      error_ = err;
    }
    done_cv_.notify_all();
  });
}

void MoeLayer::sync() {
  std::unique_lock<std::mutex> lock(mutex_);
  done_cv_.wait(lock, [&] { return !pending_; });
  if (error_) {
    std::exception_ptr e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
}

// Host-callback entry points: plain C functions with one pointer argument, the shape that
// cuLaunchHostFunc takes, so the GPU stream itself starts and awaits the CPU experts (and a
// CUDA graph can hold both). Nothing may throw across them: errors are kept in the task.
extern "C" void ktx_moe_host_submit(void* p) {
  auto* task = static_cast<MoeHostTask*>(p);
  try {
    task->layer->submit(task->call);
  } catch (const std::exception& e) {
    task->set_error(e.what());
  }
}

extern "C" void ktx_moe_host_sync(void* p) {
  auto* task = static_cast<MoeHostTask*>(p);
  try {
    task->layer->sync();
  } catch (const std::exception& e) {
    task->set_error(e.what());
  }
}

void MoeHostTask::set_error(const std::string& message) {
  std::lock_guard<std::mutex> lock(mutex);
  if (error.empty()) error = message;  // the first failure explains the rest
}

std::string MoeHostTask::take_error() {
  std::lock_guard<std::mutex> lock(mutex);
  std::string e;
  e.swap(error);
  return e;
}

}  // namespace ktx
