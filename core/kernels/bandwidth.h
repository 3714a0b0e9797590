// Memory-bandwidth probes: the ceilings benchmarks report their results against.
#pragma once
#include <cstdint>

namespace ktx {

// Reads nbytes from p over n_threads threads; returns a checksum so the reads cannot be
// optimised away.
uint64_t memory_read(const void* p, int64_t nbytes, int n_threads);
// Writes nbytes of a byte pattern to p with ordinary (cached) stores over n_threads threads,
// the same kind of stores a dequantizer makes.
void memory_fill(void* p, int64_t nbytes, int value, int n_threads);

}  // namespace ktx
