// "amx-emulated": the AMX kernel table with the tile instructions done in scalar C++
// (amx_tile_impl.h's EmulatedTiles), compiled with the AVX-512 flags. Tests select it to run
// the AMX path's packing and scaling on machines without AMX; nothing picks it by itself.
#include "amx_tile_impl.h"
#include "kernel_table.h"

namespace ktx {
namespace amx_emulated {

bool selfcheck() { return amx_tiles::agrees_with_avx512<amx_tiles::EmulatedTiles>(); }

const KernelTable& kernel_table() {
  static const KernelTable table = [] {
    KernelTable t = avx512::kernel_table();
    t.name = "amx-emulated";
    t.dot_i8 = amx_tiles::dot_i8<amx_tiles::EmulatedTiles>;
    return t;
  }();
  return table;
}

}  // namespace amx_emulated
}  // namespace ktx
