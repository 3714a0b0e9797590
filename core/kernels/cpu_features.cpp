#include "cpu_features.h"

#include <cpuid.h>

#include <cstdint>
#include <cstring>

namespace ktx {
namespace {

struct Regs {
  unsigned a = 0, b = 0, c = 0, d = 0;
};

Regs cpuid(unsigned leaf, unsigned sub = 0) {
  Regs r;
  __cpuid_count(leaf, sub, r.a, r.b, r.c, r.d);
  return r;
}

uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((uint64_t)hi << 32) | lo;
}

bool bit(unsigned v, int i) { return (v >> i) & 1u; }

CpuFeatures detect() {
  CpuFeatures f;
  const unsigned max_leaf = __get_cpuid_max(0, nullptr);
  Regs r0 = cpuid(0);
  char vendor[13] = {};
  std::memcpy(vendor, &r0.b, 4);
  std::memcpy(vendor + 4, &r0.d, 4);
  std::memcpy(vendor + 8, &r0.c, 4);
  f.vendor = vendor;

  if (__get_cpuid_max(0x80000000, nullptr) >= 0x80000004) {
    char brand[49] = {};
    for (unsigned i = 0; i < 3; ++i) {
      Regs r = cpuid(0x80000002 + i);
      std::memcpy(brand + 16 * i, &r, 16);
    }
    f.brand = brand;
    const auto first = f.brand.find_first_not_of(' ');
    f.brand = first == std::string::npos ? "" : f.brand.substr(first);
  }

  if (max_leaf < 1) return f;
  Regs r1 = cpuid(1);
  f.sse41 = bit(r1.c, 19);
  f.fma = bit(r1.c, 12);
  f.f16c = bit(r1.c, 29);
  f.avx = bit(r1.c, 28);
  const bool osxsave = bit(r1.c, 27);
  if (osxsave) {
    const uint64_t xcr0 = xgetbv0();
    f.os_avx = (xcr0 & 0x6) == 0x6;                 // SSE + AVX state
    f.os_avx512 = f.os_avx && (xcr0 & 0xe0) == 0xe0;  // opmask + ZMM state
    f.os_amx = (xcr0 & 0x60000) == 0x60000;          // TILECFG + TILEDATA
  }
  if (max_leaf < 7) return f;
  Regs r7 = cpuid(7, 0);
  f.avx2 = bit(r7.b, 5);
  f.bmi2 = bit(r7.b, 8);
  f.avx512f = bit(r7.b, 16);
  f.avx512dq = bit(r7.b, 17);
  f.avx512bw = bit(r7.b, 30);
  f.avx512vl = bit(r7.b, 31);
  f.avx512_vnni = bit(r7.c, 11);
  f.amx_bf16 = bit(r7.d, 22);
  f.amx_tile = bit(r7.d, 24);
  f.amx_int8 = bit(r7.d, 25);
  Regs r71 = cpuid(7, 1);
  f.avx_vnni = bit(r71.a, 4);
  f.avx512_bf16 = bit(r71.a, 5);
  return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

}  // namespace ktx
