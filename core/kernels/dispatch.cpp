#include "dispatch.h"
#include "iq_grids.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <stdexcept>

#include "cpu_features.h"
#include "parallel.h"

namespace ktx {
namespace {

// Every ISA a table is built for, worst first (what supported_isas() may list).
const std::vector<std::string> kIsas = {"scalar", "avx2", "avx512", "amx"};
// The AMX table with emulated tile instructions: for tests, selectable only by name.
const char* const kAmxEmulated = "amx-emulated";

// Elements per thread below which another thread costs more than it saves.
constexpr int64_t kGrainElements = 1 << 16;
// Chunk of floats a thread dequantizes before converting them to bfloat16 (fits in L1/L2).
constexpr int64_t kBf16Chunk = 4096;

const KernelTable* table_for(const std::string& name) {
  if (name == "scalar") return &scalar::kernel_table();
  if (name == "avx2") return &avx2::kernel_table();
  if (name == "avx512") return &avx512::kernel_table();
  if (name == "amx") return &amx::kernel_table();
  if (name == kAmxEmulated) return &amx_emulated::kernel_table();
  return nullptr;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

struct State {
  std::atomic<const KernelTable*> table{nullptr};
  std::string error;  // why KTX_ISA could not be honoured

  State() {
    const char* env = std::getenv("KTX_ISA");
    try {
      set(env && *env ? std::string(env) : best_isa());
    } catch (const std::invalid_argument& e) {
      error = std::string("KTX_ISA=") + env + ": " + e.what();
    }
  }
  void set(const std::string& name) {
    if (name == kAmxEmulated && cpu_features().has_avx512()) {  // never chosen by itself
      table.store(table_for(name));
      error.clear();
      return;
    }
    const auto ok = supported_isas();
    for (const auto& s : ok)
      if (s == name) {
        table.store(table_for(name));
        error.clear();
        return;
      }
    if (std::find(kIsas.begin(), kIsas.end(), name) == kIsas.end())
      throw std::invalid_argument("unknown ISA '" + name + "'; choose one of: " + join(kIsas) +
                                  " (or " + kAmxEmulated + ", for tests)");
    throw std::invalid_argument("this CPU cannot run the '" + name + "' kernels; it supports: " + join(ok));
  }
};

State& state() {
  static State s;
  return s;
}

}  // namespace

std::vector<std::string> supported_isas() {
  const CpuFeatures& f = cpu_features();
  std::vector<std::string> v{"scalar"};
  if (f.has_avx2()) v.push_back("avx2");
  if (f.has_avx512()) v.push_back("avx512");
  if (f.has_avx512() && amx_usable()) v.push_back("amx");
  return v;
}

std::string best_isa() { return supported_isas().back(); }

void set_isa(const std::string& name) { state().set(name); }

const KernelTable& active_table() {
  State& s = state();
  const KernelTable* t = s.table.load();
  if (!t) throw std::runtime_error(s.error + " (unset KTX_ISA to use the best available)");
  return *t;
}

void dequantize(int type, const uint8_t* src, int64_t src_nbytes, void* dst, int64_t n, bool out_bf16,
                int n_threads) {
  const TypeSize ts = type_size(type);
  const KernelTable& t = active_table();
  if (ts.block_size == 0 || !t.dequant[type])
    throw std::invalid_argument("no dequantizer for ggml type " + std::to_string(type));
  require_iq_grids(type);
  if (n < 0 || n % ts.block_size != 0)
    throw std::invalid_argument(std::to_string(n) + " elements do not fill whole blocks of " +
                                std::to_string(ts.block_size));
  const int64_t nb = n / ts.block_size;
  if (src_nbytes != nb * ts.type_size)
    throw std::invalid_argument("source holds " + std::to_string(src_nbytes) + " bytes, expected " +
                                std::to_string(nb * ts.type_size));
  const DequantFn fn = t.dequant[type];
  const int64_t grain = (kGrainElements + ts.block_size - 1) / ts.block_size;
  if (!out_bf16) {
    float* y = static_cast<float*>(dst);
    parallel_for(nb, n_threads, grain, [&](int64_t b, int64_t e) {
      fn(src + b * ts.type_size, y + b * ts.block_size, e - b);
    });
    return;
  }
  uint16_t* y = static_cast<uint16_t*>(dst);
  const int64_t chunk_blocks = kBf16Chunk / ts.block_size > 0 ? kBf16Chunk / ts.block_size : 1;
  parallel_for(nb, n_threads, grain, [&](int64_t b, int64_t e) {
    alignas(64) float buf[kBf16Chunk > QK_K ? kBf16Chunk : QK_K];
    for (int64_t i = b; i < e; i += chunk_blocks) {
      const int64_t m = (e - i < chunk_blocks) ? e - i : chunk_blocks;
      fn(src + i * ts.type_size, buf, m);
      t.to_bf16(buf, y + i * ts.block_size, m * ts.block_size);
    }
  });
}

void quantize(int type, const float* src, int64_t n, uint8_t* dst, int64_t dst_nbytes, int n_threads) {
  const TypeSize ts = type_size(type);
  const KernelTable& t = active_table();
  if (ts.block_size == 0 || !t.quant[type])
    throw std::invalid_argument("no quantizer for ggml type " + std::to_string(type));
  if (n < 0 || n % ts.block_size != 0)
    throw std::invalid_argument(std::to_string(n) + " elements do not fill whole blocks of " +
                                std::to_string(ts.block_size));
  const int64_t nb = n / ts.block_size;
  if (dst_nbytes != nb * ts.type_size)
    throw std::invalid_argument("destination holds " + std::to_string(dst_nbytes) + " bytes, expected " +
                                std::to_string(nb * ts.type_size));
  const QuantFn fn = t.quant[type];
  // K-quant fitting costs far more per element than dequantizing: split finer.
  const int64_t grain = ts.block_size == 1 ? kGrainElements : 16;
  parallel_for(nb, n_threads, grain, [&](int64_t b, int64_t e) {
    fn(src + b * ts.block_size, dst + b * ts.type_size, e - b);
  });
}

}  // namespace ktx
