// AVX-512 (F, BW, VL, DQ) build of the kernels.
#define KTX_ISA_NS avx512
#define KTX_ISA_NAME "avx512"
#include "quants_impl.h"
