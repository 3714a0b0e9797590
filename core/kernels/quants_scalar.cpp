// Baseline x86-64 (SSE2) build of the kernels: the fallback on CPUs without AVX2.
#define KTX_ISA_NS scalar
#define KTX_ISA_NAME "scalar"
#include "quants_impl.h"
