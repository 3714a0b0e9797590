// A minimal fork-join over a range, for whole-tensor work (dequantize, quantize) where a
// thread start (~tens of microseconds) is small next to the work. The MoE kernels use a
// persistent pool instead.
#pragma once
#include <cstdint>
#include <thread>
#include <vector>

namespace ktx {

// Calls fn(begin, end) on up to n_threads contiguous slices of [0, n), at least `grain`
// items each; the calling thread takes the first slice.
template <typename Fn>
void parallel_for(int64_t n, int n_threads, int64_t grain, Fn&& fn) {
  if (n <= 0) return;
  int64_t max_threads = grain > 0 ? (n + grain - 1) / grain : n;
  const int t = (int)(n_threads < max_threads ? n_threads : max_threads);
  if (t <= 1) {
    fn((int64_t)0, n);
    return;
  }
  std::vector<std::thread> workers;
  workers.reserve(t - 1);
  const int64_t step = (n + t - 1) / t;
  for (int i = 1; i < t; ++i) {
    const int64_t b = i * step, e = b + step < n ? b + step : n;
    if (b < e) workers.emplace_back([&fn, b, e] { fn(b, e); });
  }
  fn((int64_t)0, step < n ? step : n);
  for (auto& w : workers) w.join();
}

}  // namespace ktx
