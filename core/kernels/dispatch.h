// Chooses the kernel table once (best ISA the CPU offers, or KTX_ISA) and runs whole-tensor
// conversions over threads. Compiled for baseline x86-64.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernel_table.h"

namespace ktx {

std::vector<std::string> supported_isas();  // best last
std::string best_isa();
// Selects an ISA by name; throws std::invalid_argument naming the supported ones.
void set_isa(const std::string& name);
// The active table; throws std::runtime_error if KTX_ISA asked for something unusable.
const KernelTable& active_table();

// src holds whole blocks of `type`; dst receives n floats (or n bfloat16 if out_bf16).
void dequantize(int type, const uint8_t* src, int64_t src_nbytes, void* dst, int64_t n, bool out_bf16,
                int n_threads);
// y[n_tok][rows] = x[n_tok][cols] W^T, W = s * q - o: q int8 [rows][cols], s and o (nullable)
// float [rows][cols / group], group 16 or 32.
void gemv_i8(const int8_t* q, const float* s, const float* o, int group, int64_t rows, int64_t cols, const float* x,
             int64_t n_tok, float* y, int n_threads);
void quantize(int type, const float* src, int64_t n, uint8_t* dst, int64_t dst_nbytes, int n_threads);

}  // namespace ktx
