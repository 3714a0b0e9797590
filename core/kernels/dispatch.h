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
void quantize(int type, const float* src, int64_t n, uint8_t* dst, int64_t dst_nbytes, int n_threads);

}  // namespace ktx
