// AMX: the tile permission and a tile self-test. Compiled with the AMX flags; nothing here
// runs unless cpuid reported AMX and the permission was granted.
//
// The "amx" kernel table is AVX-512's with one change: tiles of at least kAmxMinRows activation
// rows (prefill) multiply on the tiles (amx_tile_impl.h).
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>

#include "amx_tile_impl.h"
#include "cpu_features.h"
#include "fp16.h"
#include "kernel_table.h"

namespace ktx {
namespace {

constexpr int kArchGetXcompPerm = 0x1022;
constexpr int kArchReqXcompPerm = 0x1023;
constexpr int kXfeatureXtiledata = 18;


// Tiles 0 (C: 16x16 float32/int32), 1 (A: 16 rows x 64 bytes), 2 (B: 16 rows x 64 bytes).
void configure_tiles() {
  amx_tiles::TileConfig cfg;
  std::memset(&cfg, 0, sizeof cfg);
  cfg.palette_id = 1;
  for (int t = 0; t < 3; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
}

// C[16x16] = A[16x32] * B[32x16] in bf16 (B in the tiles' pair-interleaved layout). Small
// integer values keep every sum exact, so the check is equality.
bool bf16_tile_product_matches() {
  alignas(64) uint16_t a[16][32], b_packed[16][32];
  alignas(64) float c[16][16];
  float A[16][32], B[32][16];
  for (int m = 0; m < 16; ++m)
    for (int k = 0; k < 32; ++k) A[m][k] = (float)((m * 7 + k * 3) % 5 - 2);
  for (int k = 0; k < 32; ++k)
    for (int n = 0; n < 16; ++n) B[k][n] = (float)((k * 5 + n * 11) % 7 - 3);
  for (int m = 0; m < 16; ++m)
    for (int k = 0; k < 32; ++k) a[m][k] = fp32_to_bf16(A[m][k]);
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < 16; ++n)
      for (int p = 0; p < 2; ++p) b_packed[k][2 * n + p] = fp32_to_bf16(B[2 * k + p][n]);
  configure_tiles();
  _tile_zero(0);
  _tile_loadd(1, a, 64);
  _tile_loadd(2, b_packed, 64);
  _tile_dpbf16ps(0, 1, 2);
  _tile_stored(0, c, 64);
  _tile_release();
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      float ref = 0;
      for (int k = 0; k < 32; ++k) ref += A[m][k] * B[k][n];
      if (c[m][n] != ref) return false;
    }
  return true;
}

// C[16x16] int32 = A[16x64] int8 * B[64x16] int8 (B packed in groups of four along k).
bool int8_tile_product_matches() {
  alignas(64) int8_t a[16][64], b_packed[16][64];
  alignas(64) int32_t c[16][16];
  int8_t B[64][16];
  for (int m = 0; m < 16; ++m)
    for (int k = 0; k < 64; ++k) a[m][k] = (int8_t)((m * 13 + k * 7) % 255 - 127);
  for (int k = 0; k < 64; ++k)
    for (int n = 0; n < 16; ++n) B[k][n] = (int8_t)((k * 29 + n * 3) % 255 - 127);
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < 16; ++n)
      for (int p = 0; p < 4; ++p) b_packed[k][4 * n + p] = B[4 * k + p][n];
  configure_tiles();
  _tile_zero(0);
  _tile_loadd(1, a, 64);
  _tile_loadd(2, b_packed, 64);
  _tile_dpbssd(0, 1, 2);
  _tile_stored(0, c, 64);
  _tile_release();
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      int32_t ref = 0;
      for (int k = 0; k < 64; ++k) ref += (int32_t)a[m][k] * (int32_t)B[k][n];
      if (c[m][n] != ref) return false;
    }
  return true;
}

}  // namespace

bool amx_request_permission() {
  unsigned long bitmask = 0;
  if (syscall(SYS_arch_prctl, kArchGetXcompPerm, &bitmask) == 0 && (bitmask & (1ul << kXfeatureXtiledata)))
    return true;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) return false;
  bitmask = 0;
  return syscall(SYS_arch_prctl, kArchGetXcompPerm, &bitmask) == 0 &&
         (bitmask & (1ul << kXfeatureXtiledata));
}

bool amx_usable() {
  static const bool ok = cpu_features().has_amx() && amx_request_permission();
  return ok;
}

bool amx_selftest() { return bf16_tile_product_matches() && int8_tile_product_matches(); }

namespace amx {
namespace {

// The tile policy of amx_tile_impl.h on the real instructions (tile numbers as there).
struct AmxTiles {
  void configure() {
    static const amx_tiles::TileConfig cfg = amx_tiles::group_config();
    _tile_loadconfig(&cfg);
  }
  void release() { _tile_release(); }
  void zero_c() { _tile_zero(0); }
  void load_a(const int8_t* p, int64_t stride) { _tile_loadd(1, p, stride); }
  void load_b(const int8_t* p) { _tile_loadd(2, p, 64); }
  void dot() { _tile_dpbssd(0, 1, 2); }
  void store_c(int32_t* p) { _tile_stored(0, p, 64); }
};

}  // namespace

const KernelTable& kernel_table() {
  static const KernelTable table = [] {
    KernelTable t = avx512::kernel_table();
    t.name = "amx";
    // The AMX instructions have not met a test on every machine they may run on, and a wrong
    // prefill must not pass silently: check once, and keep AVX-512's kernel on a mismatch.
    // Only where the instructions exist: building this table must never fault (an error
    // message naming the ISAs may build it on any CPU).
    if (!amx_usable()) return t;
    if (amx_tiles::agrees_with_avx512<AmxTiles>()) {
      t.dot_i8 = amx_tiles::dot_i8<AmxTiles>;
    } else {
      std::fprintf(stderr, "ktx: the AMX tile kernel disagrees with AVX-512 on its self-check; "
                           "prefill uses AVX-512 (please report this CPU)\n");
    }
    return t;
  }();
  return table;
}
}  // namespace amx

}  // namespace ktx
