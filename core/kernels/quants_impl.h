// The kernel table of one ISA. A translation unit defines KTX_ISA_NS / KTX_ISA_NAME, is
// compiled with that ISA's flags, and includes this file.
#pragma once
#ifndef KTX_ISA_NS
#error "define KTX_ISA_NS before including quants_impl.h"
#endif

#include "dequant_impl.h"
#include "kernel_table.h"
#include "qdot_impl.h"
#include "quant_impl.h"
#include "step_impl.h"

namespace ktx {
namespace KTX_ISA_NS {

#if defined(__AVX2__)
// The low-bit types' fused kernels (qdot_impl.h's Decoded, in this ISA's registers).
static void set_decoded_fused(KernelTable& t) {
  t.fused[GGML_IQ2_XXS] = fused_rows<Decoded<dec_iq2_xxs, 66>::K>;
  t.fused[GGML_IQ2_XS] = fused_rows<Decoded<dec_iq2_xs, 74>::K>;
  t.fused[GGML_IQ2_S] = fused_rows<Decoded<dec_iq2_s, 82>::K>;
  t.fused[GGML_IQ3_XXS] = fused_rows<Decoded<dec_iq3_xxs, 98>::K>;
  t.fused[GGML_IQ3_S] = fused_rows<Decoded<dec_iq3_s, 110>::K>;
  t.fused[GGML_IQ1_S] = fused_rows<Decoded<dec_iq1_s, 50>::K>;
  t.fused[GGML_IQ1_M] = fused_rows<Decoded<dec_iq1_m, 56>::K>;
  t.fused[GGML_TQ1_0] = fused_rows<Decoded<dec_tq1_0, 54>::K>;
  t.fused[GGML_TQ2_0] = fused_rows<Decoded<dec_tq2_0, 66>::K>;
}
#endif

static KernelTable make_table() {
  KernelTable t{};
  t.name = KTX_ISA_NAME;
  t.dequant[GGML_F32] = dq_f32;
  t.dequant[GGML_F16] = dq_f16;
  t.dequant[GGML_BF16] = dq_bf16;
  t.dequant[GGML_Q4_0] = dq_q4_0;
  t.dequant[GGML_Q4_1] = dq_q4_1;
  t.dequant[GGML_Q5_0] = dq_q5_0;
  t.dequant[GGML_Q5_1] = dq_q5_1;
  t.dequant[GGML_Q8_0] = dq_q8_0;
  t.dequant[GGML_Q2_K] = dq_q2_k;
  t.dequant[GGML_Q3_K] = dq_q3_k;
  t.dequant[GGML_Q4_K] = dq_q4_k;
  t.dequant[GGML_Q5_K] = dq_q5_k;
  t.dequant[GGML_Q6_K] = dq_q6_k;
  t.dequant[GGML_IQ4_NL] = dq_iq4_nl;
  t.dequant[GGML_IQ4_XS] = dq_iq4_xs;
  t.dequant[GGML_MXFP4] = dq_mxfp4;
  t.dequant[GGML_NVFP4] = dq_nvfp4;
  t.dequant[GGML_IQ2_XXS] = dq_iq2_xxs;
  t.dequant[GGML_IQ2_XS] = dq_iq2_xs;
  t.dequant[GGML_IQ2_S] = dq_iq2_s;
  t.dequant[GGML_IQ3_XXS] = dq_iq3_xxs;
  t.dequant[GGML_IQ3_S] = dq_iq3_s;
  t.dequant[GGML_IQ1_S] = dq_iq1_s;
  t.dequant[GGML_IQ1_M] = dq_iq1_m;
  t.dequant[GGML_TQ1_0] = dq_tq1_0;
  t.dequant[GGML_TQ2_0] = dq_tq2_0;
  t.quant[GGML_BF16] = q_bf16;
  t.quant[GGML_Q8_0] = q_q8_0;
  t.quant[GGML_Q4_0] = q_q4_0;
  t.quant[GGML_Q4_K] = q_q4_k;
  t.quant[GGML_Q5_K] = q_q5_k;
  t.quant[GGML_Q6_K] = q_q6_k;
  t.quant[GGML_MXFP4] = q_mxfp4;
  t.to_bf16 = f32_to_bf16;
  t.quant_act = quantize_act;
  t.quant_act_256 = quantize_act_256;
  t.decode_i8[GGML_Q8_0] = dec_q8_0;
  t.decode_i8[GGML_Q4_0] = dec_q4_0;
  t.decode_i8[GGML_Q4_1] = dec_q4_1;
  t.decode_i8[GGML_Q5_0] = dec_q5_0;
  t.decode_i8[GGML_Q5_1] = dec_q5_1;
  t.decode_i8[GGML_IQ4_NL] = dec_iq4_nl;
  t.decode_i8[GGML_Q4_K] = dec_kq<false>;
  t.decode_i8[GGML_Q5_K] = dec_kq<true>;
  t.decode_i8[GGML_Q6_K] = dec_q6_k;
  t.decode_i8[GGML_IQ4_XS] = dec_iq4_xs;
  t.decode_i8[GGML_MXFP4] = dec_mxfp4;
  t.decode_i8[GGML_NVFP4] = dec_nvfp4;
  t.decode_i8[GGML_IQ2_XXS] = dec_iq2_xxs;
  t.decode_i8[GGML_IQ2_XS] = dec_iq2_xs;
  t.decode_i8[GGML_IQ2_S] = dec_iq2_s;
  t.decode_i8[GGML_IQ3_XXS] = dec_iq3_xxs;
  t.decode_i8[GGML_IQ3_S] = dec_iq3_s;
  t.decode_i8[GGML_IQ1_S] = dec_iq1_s;
  t.decode_i8[GGML_IQ1_M] = dec_iq1_m;
  t.decode_i8[GGML_TQ1_0] = dec_tq1_0;
  t.decode_i8[GGML_TQ2_0] = dec_tq2_0;
  t.dot_i8 = dot_tile_i8;
  t.dot_f32 = dot_tile_f32;
  t.rms_norm = rms_norm_row;
  t.act_mul = act_mul;
  t.rope = rope_row;
  t.attn_part = attn_part;
  t.delta_head = delta_head;
#if defined(__AVX512F__)
  t.fused[GGML_Q4_K] = fused_rows<Q4K>;
  t.fused[GGML_Q5_K] = fused_rows<Q5K>;
  t.fused[GGML_Q6_K] = fused_rows<Q6K>;
  t.fused_kq_order[GGML_Q4_K] = t.fused_kq_order[GGML_Q5_K] = true;
  t.fused[GGML_Q8_0] = fused_rows<Q80>;
  t.fused[GGML_Q5_0] = fused_rows<Q50>;
  t.fused[GGML_Q4_0] = fused_rows<Q40>;
  t.fused[GGML_IQ4_XS] = fused_rows<IQ4XS>;
  t.fused[GGML_MXFP4] = fused_rows<MXFP4>;
  set_decoded_fused(t);
  t.fused_f32[GGML_BF16] = fused_bf16;
#elif defined(__AVX2__)
  t.fused[GGML_Q4_K] = fused_rows<Q4K>;
  t.fused[GGML_Q6_K] = fused_rows<Q6K>;
  t.fused[GGML_Q8_0] = fused_rows<Q80>;
  t.fused[GGML_Q5_0] = fused_rows<Q50>;
  t.fused[GGML_Q4_0] = fused_rows<Q40>;
  t.fused[GGML_Q5_K] = fused_rows<Q5K>;
  t.fused[GGML_IQ4_XS] = fused_rows<IQ4XS>;
  t.fused[GGML_MXFP4] = fused_rows<MXFP4>;
  set_decoded_fused(t);
#endif
  return t;
}

const KernelTable& kernel_table() {
  static const KernelTable table = make_table();
  return table;
}

}  // namespace KTX_ISA_NS
}  // namespace ktx
