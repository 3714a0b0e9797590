// Scalar half and bfloat16 conversions, exact and portable (no F16C needed).
// Everything here is `static inline`: this header is compiled into every ISA's translation
// unit, and internal linkage keeps the linker from merging an AVX-512 copy into baseline code.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace ktx {

static inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

static inline float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

static inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

static inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

static inline void store_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

// IEEE half -> float, exact for every one of the 65,536 inputs (NaN payloads kept).
static inline float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13));
  if (exp != 0) return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
  // Zero or subnormal: man * 2^-24 is exact in float.
  const float v = (float)man * 5.9604644775390625e-08f;
  return sign ? -v : v;
}

static inline float fp16_to_fp32(const uint8_t* p) { return fp16_to_fp32(load_u16(p)); }

// float -> IEEE half, round to nearest even (as numpy's astype(float16) and F16C do).
static inline uint16_t fp32_to_fp16(float f) {
  const uint32_t x = f32_bits(f);
  const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return sign | 0x7e00u | (uint16_t)((ax >> 13) & 0x3ffu);  // NaN
  if (ax >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to infinity
  if (ax >= 0x38800000u) {                         // normal half
    uint32_t r = ax - 0x38000000u;                 // re-bias the exponent (127 - 15) << 23
    r += 0xfffu + ((r >> 13) & 1u);
    return sign | (uint16_t)(r >> 13);
  }
  // Subnormal half (or zero): count units of 2^-24, rounding to nearest even; 1024 lands
  // exactly on the smallest normal's encoding.
  const float units = bits_f32(ax) * 16777216.0f;
  return sign | (uint16_t)nearbyintf(units);
}

static inline float bf16_to_fp32(uint16_t b) { return bits_f32((uint32_t)b << 16); }

// float -> bfloat16, round to nearest even; NaN becomes a quiet NaN of the same sign.
// This is ggml's rule (ggml_compute_fp32_to_bf16), which gguf-py reproduces.
static inline uint16_t fp32_to_bf16(float f) {
  const uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 64u);
  return (uint16_t)((x + (0x7fffu + ((x >> 16) & 1u))) >> 16);
}

}  // namespace ktx
