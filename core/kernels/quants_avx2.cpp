// AVX2 + FMA + F16C build of the kernels (compiled with -mavx2 -mfma -mf16c).
#define KTX_ISA_NS avx2
#define KTX_ISA_NAME "avx2"
#include "quants_impl.h"
