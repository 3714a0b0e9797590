// One layer's routed experts on the CPU: gate and up products, SiLU(gate) * up, down product,
// and each token's weighted sum over its experts. Weights stay where they are (typically
// views into the GGUF mmap, GGUF-native blocks, no copy).
//
// Work is split into tasks on the persistent pool: (expert x tile of rows) for gate/up,
// tiles of output rows across all experts for down, so no two tasks write the same values
// and results do not depend on scheduling. Tokens are grouped by expert, so a prefill
// reads each active expert's weights once per step.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "qmatmul.h"

namespace ktx {

struct MoeCall {
  int64_t n;              // tokens
  int k;                  // experts per token
  const int64_t* ids;     // [n][k] expert ids
  const float* weights;   // [n][k]
  const void* x;          // [n][hidden] float32 or bfloat16
  bool x_bf16;
  void* out;              // [n][hidden] float32 or bfloat16
  bool out_bf16;
};

class MoeLayer {
 public:
  // gate, up: [n_experts][inter][hidden]; down: [n_experts][hidden][inter] (GGUF blocks).
  MoeLayer(int64_t n_experts, int64_t hidden, int64_t inter, QMatrix gate, QMatrix up, QMatrix down,
           int n_threads, bool exact);
  ~MoeLayer();
  MoeLayer(const MoeLayer&) = delete;
  MoeLayer& operator=(const MoeLayer&) = delete;

  // Synchronous; throws std::invalid_argument on a bad expert id, std::runtime_error while a
  // submitted call is in flight (they share the layer's buffers).
  void forward(const MoeCall& c);
  // Starts forward on a background thread and returns; the buffers must stay alive until
  // sync(), which waits and rethrows what forward threw. One call in flight per layer.
  void submit(const MoeCall& c);
  void sync();

  // gpt-oss's experts: per-expert biases ([n_experts][inter] for gate and up, [n_experts][hidden]
  // for down; null for none) and the activation: 0 SiLU(g) * u, 1 the clamped SwiGLU
  // (g = min(g, limit), u = clamp(u, -limit, limit), g * sigmoid(alpha * g) * (u + 1)).
  // The arrays must outlive the layer. Not while a call is in flight.
  void set_extras(const float* gate_bias, const float* up_bias, const float* down_bias, int act, float alpha,
                  float limit);

  int64_t n_experts() const { return n_experts_; }
  // Nanoseconds spent running calls since construction (the benchmark's CPU busy share).
  int64_t busy_ns() const { return busy_ns_.load(); }
  int64_t hidden() const { return hidden_; }
  int64_t inter() const { return inter_; }

 private:
  void run(const MoeCall& c);

  int64_t n_experts_, hidden_, inter_;
  QMatrix gate_, up_, down_;
  int n_threads_;
  bool exact_;
  const float *gate_bias_ = nullptr, *up_bias_ = nullptr, *down_bias_ = nullptr;
  int act_kind_ = 0;
  float alpha_ = 1.0f, limit_ = 0.0f;
  // Buffers reused between calls.
  std::vector<float> xf_, act_, outf_;
  Activations x_acts_, act_acts_;

  std::mutex mutex_;
  std::condition_variable done_cv_;
  bool pending_ = false;
  std::exception_ptr error_;
  std::atomic<int64_t> busy_ns_{0};
};

// One layer's call with fixed buffers (pinned host memory the GPU copies in and out of),
// started and awaited from a GPU stream: ktx_moe_host_submit / ktx_moe_host_sync below.
struct MoeHostTask {
  MoeLayer* layer;
  MoeCall call;
  std::mutex mutex;
  std::string error;  // first error of a callback (it cannot throw); read with take_error()
  void set_error(const std::string& message);
  std::string take_error();
};

extern "C" void ktx_moe_host_submit(void* task);  // MoeHostTask*: layer->submit(call)
extern "C" void ktx_moe_host_sync(void* task);    // MoeHostTask*: layer->sync()

}  // namespace ktx
