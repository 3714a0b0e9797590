// GGUF/ggml tensor types: ids as they appear in the file, and the byte layout of each block.
// Layouts follow ggml's block definitions; the element order inside a block is documented at
// each dequantizer (quants_impl.h), which is the executable description of the format.
#pragma once
#include <cstdint>
#include <cstring>

namespace ktx {

enum GGMLType : int {
  GGML_F32 = 0,
  GGML_F16 = 1,
  GGML_Q4_0 = 2,
  GGML_Q4_1 = 3,
  GGML_Q5_0 = 6,
  GGML_Q5_1 = 7,
  GGML_Q8_0 = 8,
  GGML_Q2_K = 10,
  GGML_Q3_K = 11,
  GGML_Q4_K = 12,
  GGML_Q5_K = 13,
  GGML_Q6_K = 14,
  GGML_IQ2_XXS = 16,
  GGML_IQ2_XS = 17,
  GGML_IQ3_XXS = 18,
  GGML_IQ1_S = 19,
  GGML_IQ4_NL = 20,
  GGML_IQ3_S = 21,
  GGML_IQ2_S = 22,
  GGML_IQ4_XS = 23,
  GGML_IQ1_M = 29,
  GGML_BF16 = 30,
  GGML_TQ1_0 = 34,
  GGML_TQ2_0 = 35,
  GGML_MXFP4 = 39,
  GGML_NVFP4 = 40,
  GGML_TYPE_SLOTS = 64,  // table size; ids above are what the kernels understand
};

constexpr int QK_K = 256;  // elements in a K-quant super-block

struct TypeSize {
  int block_size;  // elements per block
  int type_size;   // bytes per block
};

// Returns {0, 0} for a type the kernels do not handle.
inline constexpr TypeSize type_size(int t) {
  switch (t) {
    case GGML_F32: return {1, 4};
    case GGML_F16: return {1, 2};
    case GGML_BF16: return {1, 2};
    case GGML_Q4_0: return {32, 18};
    case GGML_Q4_1: return {32, 20};
    case GGML_Q5_0: return {32, 22};
    case GGML_Q5_1: return {32, 24};
    case GGML_Q8_0: return {32, 34};
    case GGML_Q2_K: return {QK_K, 84};
    case GGML_Q3_K: return {QK_K, 110};
    case GGML_Q4_K: return {QK_K, 144};
    case GGML_Q5_K: return {QK_K, 176};
    case GGML_Q6_K: return {QK_K, 210};
    case GGML_IQ4_NL: return {32, 18};
    case GGML_IQ4_XS: return {QK_K, 136};
    case GGML_MXFP4: return {32, 17};
    case GGML_NVFP4: return {64, 36};
    case GGML_IQ2_XXS: return {QK_K, 66};
    case GGML_IQ2_XS: return {QK_K, 74};
    case GGML_IQ2_S: return {QK_K, 82};
    case GGML_IQ3_XXS: return {QK_K, 98};
    case GGML_IQ3_S: return {QK_K, 110};
    case GGML_IQ1_S: return {QK_K, 50};
    case GGML_IQ1_M: return {QK_K, 56};
    case GGML_TQ1_0: return {QK_K, 54};
    case GGML_TQ2_0: return {QK_K, 66};
    default: return {0, 0};
  }
}

// Byte offsets of the fields inside each block (ggml's struct layouts, packed, little-endian).
namespace layout {
// Q4_0: f16 d | u8 qs[16]
// Q4_1: f16 d | f16 m | u8 qs[16]
// Q5_0: f16 d | u32 qh | u8 qs[16]
// Q5_1: f16 d | f16 m | u32 qh | u8 qs[16]
// Q8_0: f16 d | i8 qs[32]
// IQ4_NL: f16 d | u8 qs[16]
// MXFP4: u8 e (E8M0 exponent) | u8 qs[16], IQ4_NL's nibble order
constexpr int q2k_scales = 0, q2k_qs = 16, q2k_d = 80, q2k_dmin = 82;
constexpr int q3k_hmask = 0, q3k_qs = 32, q3k_scales = 96, q3k_d = 108;
constexpr int q4k_d = 0, q4k_dmin = 2, q4k_scales = 4, q4k_qs = 16;
constexpr int q5k_d = 0, q5k_dmin = 2, q5k_scales = 4, q5k_qh = 16, q5k_qs = 48;
constexpr int q6k_ql = 0, q6k_qh = 128, q6k_scales = 192, q6k_d = 208;
constexpr int iq4xs_d = 0, iq4xs_scales_h = 2, iq4xs_scales_l = 4, iq4xs_qs = 8;
// IQ2_XXS: f16 d | u32 pairs [8] (grid indices, then 4 x 7 sign bits + a 4-bit scale)
// IQ2_XS: f16 d | u16 qs[32] (9-bit grid index, 7 sign bits) | u8 scales[8]
constexpr int iq2xs_qs = 2, iq2xs_scales = 66;
// IQ2_S: f16 d | u8 qs[32] | u8 signs[32] | u8 qh[8] | u8 scales[8]
constexpr int iq2s_qs = 2, iq2s_signs = 34, iq2s_qh = 66, iq2s_scales = 74;
// IQ3_XXS: f16 d | u8 qs[64] | u32 scales_and_signs[8]
constexpr int iq3xxs_qs = 2, iq3xxs_ss = 66;
// IQ3_S: f16 d | u8 qs[64] | u8 qh[8] | u8 signs[32] | u8 scales[4]
constexpr int iq3s_qs = 2, iq3s_qh = 66, iq3s_signs = 74, iq3s_scales = 106;
// IQ1_S: f16 d | u8 qs[32] | u16 qh[8]
constexpr int iq1s_qs = 2, iq1s_qh = 34;
// IQ1_M: u8 qs[32] | u8 qh[16] | u16 scales[4] (their top nibbles hold the f16 d)
constexpr int iq1m_qh = 32, iq1m_scales = 48;
// TQ1_0: u8 qs[48] (five base-3 digits per byte) | u8 qh[4] (four) | f16 d; TQ2_0: u8 qs[64] | f16 d
constexpr int tq1_qh = 48, tq1_d = 52, tq2_d = 64;
}  // namespace layout

// The non-linear 4-bit code book of IQ4_NL and IQ4_XS.
constexpr int8_t kIQ4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                   1,    13,   25,  38,  53,  69,  89,  113};

// MXFP4 (OCP microscaling): E2M1 values doubled, so they are integers; the block scale is
// an E8M0 exponent halved to compensate (ggml's ggml_e8m0_to_fp32_half).
constexpr int8_t kMXFP4Values[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

// NVFP4: 4 sub-blocks of 16 values, each with an unsigned E4M3 scale (bias 7; 0 and 0x7F mean
// 0), halved as MXFP4's for the doubled book: u8 scales[4] | u8 qs[32], sub-block s's values
// j < 8 in the low nibbles of qs[8s + j], 8..15 in the high ones. Every scale is exact in float.
inline float ue4m3_half(uint8_t x) {
  if (x == 0 || x == 0x7F) return 0.0f;
  const uint32_t e = (x >> 3) & 0xF, m = x & 7;
  float f;
  if (e == 0) {
    f = (float)m * 0.001953125f;  // m * 2^-9
  } else {
    const uint32_t bits = (e - 7 + 127) << 23 | m << 20;  // (1 + m / 8) * 2^(e - 7)
    std::memcpy(&f, &bits, sizeof f);
  }
  return f * 0.5f;
}

// 2^(e - 128) as a float: subnormal for e < 2 (the bit pattern ggml builds), normal above.
constexpr float kIQ1Delta = 0.125f;  // IQ1_S / IQ1_M: a grid value +- this

inline float e8m0_half(uint8_t e) {
  const uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

}  // namespace ktx
