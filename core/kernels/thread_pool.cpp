#include "thread_pool.h"

#include <cstdlib>
#include <map>
#include <memory>
#include <string>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace ktx {

namespace {
// How long a worker polls for the next job before it sleeps: long enough to catch the next
// layer's products during decode, short enough not to steal the core from PyTorch's own threads.
constexpr int kSpinIterations = 20000;

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}
}  // namespace

ThreadPool::ThreadPool(int n_threads, bool pin) {
  std::vector<int> cpus;
#if defined(__linux__)
  cpu_set_t allowed;
  if (pin && sched_getaffinity(0, sizeof allowed, &allowed) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
#endif
  for (int i = 1; i < n_threads; ++i) {
    workers_.emplace_back([this] { work_loop(); });
#if defined(__linux__)
    // Worker i on the i-th allowed CPU (the caller, whose thread is Python's, stays free to
    // move; it usually ends up on CPU 0's core, which no worker takes).
    if (!cpus.empty()) {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpus[i % cpus.size()], &one);
      pthread_setaffinity_np(workers_.back().native_handle(), sizeof one, &one);
    }
#endif
  }
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
  // One pool per size, kept for the life of the process: a caller holding a pool (the MoE
  // layer's background thread, say) never sees it torn down because another caller asked
  // for a different size. Idle pools' workers sleep.
  static std::mutex m;
  static std::map<int, std::unique_ptr<ThreadPool>> pools;
  static const bool pin = [] {
    const char* v = std::getenv("KTX_PIN");
    return v && *v && std::string(v) != "0";
  }();
  std::lock_guard<std::mutex> lock(m);
  if (n_threads < 1) n_threads = 1;
  auto& pool = pools[n_threads];
  if (!pool) pool = std::make_unique<ThreadPool>(n_threads, pin);
  return *pool;
}

}  // namespace ktx
