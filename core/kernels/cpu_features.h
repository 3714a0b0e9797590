// What the CPU and the OS offer, read once with cpuid/xgetbv. Compiled for baseline x86-64.
#pragma once
#include <string>

namespace ktx {

struct CpuFeatures {
  std::string vendor, brand;
  bool sse41 = false, avx = false, avx2 = false, fma = false, f16c = false, bmi2 = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512_vnni = false, avx512_bf16 = false, avx_vnni = false;
  bool amx_tile = false, amx_int8 = false, amx_bf16 = false;
  // The OS saves the register state (XCR0): without it the instructions fault.
  bool os_avx = false, os_avx512 = false, os_amx = false;

  bool has_avx2() const { return avx2 && fma && f16c && bmi2 && os_avx; }
  // The int8 kernels need VNNI (Cascade Lake, Ice Lake, Zen 4 and later); an AVX-512 CPU
  // without it (Skylake-X) runs the AVX2 kernels.
  bool has_avx512() const {
    return has_avx2() && avx512f && avx512bw && avx512vl && avx512dq && avx512_vnni && os_avx512;
  }
  bool has_amx() const { return has_avx512() && amx_tile && amx_int8 && amx_bf16 && os_amx; }
};

const CpuFeatures& cpu_features();

}  // namespace ktx
