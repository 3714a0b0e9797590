// A persistent pool of worker threads for short parallel kernels (decode-sized products), where
// starting threads per call (~0.1 ms) costs more than the work. Workers spin briefly after a
// job, then sleep on a condition variable; tasks are taken from an atomic counter, so uneven
// tasks balance themselves. One job runs at a time (callers are serialised by a mutex).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace ktx {

class ThreadPool {
 public:
  using TaskFn = void (*)(void* ctx, int64_t task);

  // n_threads in total, the caller included; pin: worker i runs only on the i-th CPU this
  // process may use (KTX_PIN=1 for the process-wide pools).
  explicit ThreadPool(int n_threads, bool pin = false);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return (int)workers_.size() + 1; }
  // Calls fn(ctx, t) for every t in [0, n_tasks) on the pool and the calling thread; returns
  // when all have finished.
  void run(int64_t n_tasks, TaskFn fn, void* ctx);

  template <typename F>
  void run(int64_t n_tasks, F&& f) {
    run(n_tasks, [](void* c, int64_t t) { (*static_cast<F*>(c))(t); }, &f);
  }

 private:
  void work_loop();
  void drain();

  std::vector<std::thread> workers_;
  std::mutex run_mutex_;  // one job at a time
  std::mutex sleep_mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int64_t> next_{0};
  std::atomic<int> busy_{0};
  std::atomic<bool> stop_{false};
  int64_t n_tasks_ = 0;
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
};

// The process-wide pool of n_threads threads (one per size asked for, made on first use and
// kept; pinned if KTX_PIN=1).
ThreadPool& thread_pool(int n_threads);

}  // namespace ktx
