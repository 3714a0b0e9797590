#include "bandwidth.h"

#include <atomic>
#include <cstring>

#include "parallel.h"

namespace ktx {

uint64_t memory_read(const void* p, int64_t nbytes, int n_threads) {
  const uint64_t* w = static_cast<const uint64_t*>(p);
  const int64_t n = nbytes / 8;
  std::atomic<uint64_t> total{0};
  parallel_for(n, n_threads, 1 << 16, [&](int64_t b, int64_t e) {
    // Eight independent accumulators: integer adds vectorize and keep loads in flight.
    uint64_t acc[8] = {};
    int64_t i = b;
    for (; i + 8 <= e; i += 8)
      for (int k = 0; k < 8; ++k) acc[k] += w[i + k];
    for (; i < e; ++i) acc[0] += w[i];
    uint64_t s = 0;
    for (uint64_t a : acc) s += a;
    total += s;
  });
  return total.load();
}

void memory_fill(void* p, int64_t nbytes, int value, int n_threads) {
  uint8_t* bytes = static_cast<uint8_t*>(p);
  // 64 KiB at a time: a large memset switches to non-temporal stores, which bypass the
  // cache and would overstate what ordinary stores achieve.
  constexpr int64_t kChunk = 1 << 16;
  parallel_for(nbytes, n_threads, 1 << 20, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i += kChunk) std::memset(bytes + i, value, e - i < kChunk ? e - i : kChunk);
  });
}

}  // namespace ktx
