#include "thread_pool.h"

#include <memory>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace ktx {

namespace {
// How long a worker polls for the next job before it sleeps: long enough to catch the next
// layer's GEMV during decode, short enough not to steal the core from PyTorch's own threads.
constexpr int kSpinIterations = 20000;

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}
}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this] { work_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(sleep_mutex_);
    stop_.store(true);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::drain() {
  for (int64_t t; (t = next_.fetch_add(1, std::memory_order_relaxed)) < n_tasks_;) fn_(ctx_, t);
}

void ThreadPool::work_loop() {
  uint64_t seen = 0;
  for (;;) {
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen && !stop_.load(std::memory_order_relaxed)) {
      if (++spins < kSpinIterations) {
        cpu_relax();
        continue;
      }
      std::unique_lock<std::mutex> lock(sleep_mutex_);
      wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen || stop_.load(); });
    }
    if (stop_.load()) return;
    seen = generation_.load(std::memory_order_acquire);
    drain();
    busy_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run(int64_t n_tasks, TaskFn fn, void* ctx) {
  if (n_tasks <= 0) return;
  std::lock_guard<std::mutex> job(run_mutex_);
  if (workers_.empty() || n_tasks == 1) {
    for (int64_t t = 0; t < n_tasks; ++t) fn(ctx, t);
    return;
  }
  n_tasks_ = n_tasks;
  fn_ = fn;
  ctx_ = ctx;
  next_.store(0, std::memory_order_relaxed);
  busy_.store((int)workers_.size(), std::memory_order_relaxed);
  {
    // Publishing under the sleep mutex means a worker that is about to sleep either sees the
    // new generation or is already waiting when notify_all comes.
    std::lock_guard<std::mutex> lock(sleep_mutex_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  wake_.notify_all();
  drain();
  while (busy_.load(std::memory_order_acquire) != 0) cpu_relax();
}

ThreadPool& thread_pool(int n_threads) {
  static std::mutex m;
  static std::unique_ptr<ThreadPool> pool;
  std::lock_guard<std::mutex> lock(m);
  if (n_threads < 1) n_threads = 1;
  if (!pool || pool->size() != n_threads) {
    pool.reset();  // joins the old workers first
    pool = std::make_unique<ThreadPool>(n_threads);
  }
  return *pool;
}

}  // namespace ktx
