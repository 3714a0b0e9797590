#include "qmatmul.h"
#include "iq_grids.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>

#include "dispatch.h"
#include "thread_pool.h"

namespace ktx {

int64_t QMatrix::row_bytes() const {
  const TypeSize ts = type_size(type);
  return ts.block_size ? cols / ts.block_size * ts.type_size : 0;
}

void check_matrix(const QMatrix& m, const char* what) {
  const TypeSize ts = type_size(m.type);
  const std::string name(what);
  if (ts.block_size == 0 || !active_table().dequant[m.type])
    throw std::invalid_argument(name + ": no kernel for ggml type " + std::to_string(m.type));
  require_iq_grids(m.type);
  if (m.rows <= 0 || m.cols <= 0 || m.cols % 32 != 0 || m.cols % ts.block_size != 0)
    throw std::invalid_argument(name + ": " + std::to_string(m.rows) + " x " + std::to_string(m.cols) +
                                " cannot be multiplied (columns must be a positive multiple of 32 and of the "
                                "type's block size " +
                                std::to_string(ts.block_size) + ")");
  if (!m.data) throw std::invalid_argument(name + ": null weights");
}

bool uses_int8(const KernelTable& t, int type, bool exact) { return !exact && t.decode_i8[type] != nullptr; }

bool wants_kq(const KernelTable& t, int type, bool exact) {
  return uses_int8(t, type, exact) && t.fused[type] && t.fused_kq_order[type];
}

bool act_per_256(int type) {
  return type == GGML_Q4_K || type == GGML_Q5_K;
}

void ActNeeds::add(const KernelTable& t, int type, bool exact) {
  if (!uses_int8(t, type, exact)) return;
  const bool kq = wants_kq(t, type, exact);
  if (act_per_256(type)) {
    g256 = true;
    g256_kq = g256_kq || kq;
  } else {
    g16 = true;
    g16_kq = g16_kq || kq;
  }
}

ActI8 Activations::int8(int type, bool kq) const {
  const QuantizedRows& r = act_per_256(type) ? g256 : g16;
  return kq ? ActI8{r.kq.data(), r.kd.data(), r.ks.data(), cols} : ActI8{r.q.data(), r.d.data(), r.s.data(), cols};
}

namespace {
void quantize_rows(QuantActFn quant, const float* x, int64_t n, int64_t c, bool kq_order, ThreadPool& pool,
                   QuantizedRows& r) {
  const int64_t ng = c / 16;
  r.q.resize(std::max<int64_t>(n * c, 1));
  r.d.resize(std::max<int64_t>(n * ng, 1));
  r.s.resize(std::max<int64_t>(n * ng, 1));
  const int64_t per_task = std::max<int64_t>(1, (64 << 10) / c);
  pool.run((n + per_task - 1) / per_task, [&](int64_t task) {
    for (int64_t i = task * per_task; i < std::min(n, (task + 1) * per_task); ++i)
      quant(x + i * c, c, r.q.data() + i * c, r.d.data() + i * ng, r.s.data() + i * ng);
  });
  r.ready = true;
  r.has_kq = kq_order && c % 128 == 0;
  if (!r.has_kq) return;
  r.kq.resize(r.q.size());
  r.kd.resize(r.d.size());
  r.ks.resize(r.s.size());
  static const int kGroupOrder[8] = {0, 1, 4, 5, 2, 3, 6, 7};
  for (int64_t run = 0; run < n * c / 128; ++run) {
    const int8_t* src = r.q.data() + run * 128;
    int8_t* dst = r.kq.data() + run * 128;
    std::memcpy(dst, src, 32);
    std::memcpy(dst + 32, src + 64, 32);
    std::memcpy(dst + 64, src + 32, 32);
    std::memcpy(dst + 96, src + 96, 32);
    for (int g = 0; g < 8; ++g) {
      r.kd[run * 8 + g] = r.d[run * 8 + kGroupOrder[g]];
      r.ks[run * 8 + g] = r.s[run * 8 + kGroupOrder[g]];
    }
  }
}
}  // namespace

void Activations::prepare(const KernelTable& t, const float* x, int64_t n, int64_t c, const ActNeeds& needs,
                          ThreadPool& pool) {
  cols = c;
  f = x;
  g16.ready = g16.has_kq = g256.ready = g256.has_kq = false;
  if (needs.g16) quantize_rows(t.quant_act, x, n, c, needs.g16_kq, pool, g16);
  if (needs.g256) quantize_rows(t.quant_act_256, x, n, c, needs.g256_kq, pool, g256);
}

namespace {

struct Scratch {
  std::vector<int8_t> q;
  std::vector<float> a, b, f, v;
};

// Asks for a weight row 64 KiB ahead of the one being decoded, into L2 (not L1, whose few
// fill buffers the loads need). On the noisy 2-core Zen 5 VM this measured within noise of
// no prefetch for an MoE layer and ~10% better for a large Q4_K matrix (A/B runs interleaved).
inline void prefetch_row(const uint8_t* p, int64_t bytes) {
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 1);  // prefetcht2: L2
}

Scratch& thread_scratch() {
  static thread_local Scratch s;
  return s;
}

}  // namespace

namespace {
std::atomic<int> g_invariant_rows{0};
}

void set_batch_invariant_rows(int n) { g_invariant_rows.store(n < 0 ? 0 : n); }
int batch_invariant_rows() { return g_invariant_rows.load(std::memory_order_relaxed); }

void tile_product(const KernelTable& t, const QMatrix& m, int64_t r0, int nr, const Activations& x, bool int8,
                  TileOut o) {
  if (o.n <= 0 || nr <= 0) return;
  const bool invariant = o.n <= batch_invariant_rows();
  const TypeSize ts = type_size(m.type);
  const int64_t nb = m.cols / ts.block_size, rb = m.row_bytes(), ng = m.cols / 16;
  const uint8_t* src = m.data + r0 * rb;
  Scratch& s = thread_scratch();
  const int64_t ahead = std::max<int64_t>(2 * rb, kPrefetchBytes);
  // Not past the matrix: for an expert that would fetch another expert's rows for nothing.
  const uint8_t* end = m.data + m.rows * rb;
  auto prefetch_ahead = [&](int r) {
    const uint8_t* p = src + r * rb + ahead;
    if (p + rb <= end) prefetch_row(p, rb);
  };
  // Fused kernels: up to kFusedRows activation rows per pass over a weight row.
  const bool fused_i8 = int8 && t.fused[m.type] && (!t.fused_kq_order[m.type] || x.has_kq(m.type));
  const bool fused_f = !int8 && t.fused_f32[m.type];
  if ((o.n <= kFusedMaxRows || invariant) && (fused_i8 || fused_f)) {
    const ActI8 a = x.int8(m.type, fused_i8 && t.fused_kq_order[m.type]);
    const int8_t* q[kFusedRows];
    const float *d[kFusedRows], *sc[kFusedRows], *f[kFusedRows];
    if ((int64_t)s.v.size() < (int64_t)nr * kFusedRows) s.v.resize((size_t)nr * kFusedRows);
    for (int i0 = 0; i0 < o.n; i0 += kFusedRows) {
      const int n = o.n - i0 < kFusedRows ? o.n - i0 : kFusedRows;
      for (int k = 0; k < n; ++k) {
        const int64_t row = o.x_row(i0 + k);
        if (fused_i8) q[k] = a.q + row * m.cols, d[k] = a.d + row * ng, sc[k] = a.s + row * ng;
        else f[k] = x.f + row * m.cols;
      }
      float* v = s.v.data();  // [nr][n]
      if (fused_i8) {
        t.fused[m.type](src, rb, nr, nb, q, d, sc, n, v, end);
      } else {
        for (int r = 0; r < nr; ++r) {
          prefetch_ahead(r);
          t.fused_f32[m.type](src + r * rb, nb, f, n, v + r * n);
        }
      }
      for (int r = 0; r < nr; ++r)
        for (int k = 0; k < n; ++k) o.put(i0 + k, r, v[r * n + k]);
    }
    return;
  }
  // Few activation rows: decode a row and use it at once, while it is in L1. Many: decode
  // the tile, then pass the activations over it block by block (each stays in L2).
  const bool row_at_a_time = o.n < kPanelMinRows || invariant;
  const int held = row_at_a_time ? 1 : nr;
  if (int8) {
    if ((int64_t)s.q.size() < held * m.cols) s.q.resize(held * m.cols);
    if ((int64_t)s.a.size() < held * ng) s.a.resize(held * ng), s.b.resize(held * ng);
  } else if ((int64_t)s.f.size() < held * m.cols) {
    s.f.resize(held * m.cols);
  }
  // Weight row r into slot h of the scratch; the first `rows` slots against the activations.
  auto decode = [&](int r, int64_t h) {
    if (int8)
      t.decode_i8[m.type](src + r * rb, nb, s.q.data() + h * m.cols, s.a.data() + h * ng, s.b.data() + h * ng);
    else
      t.dequant[m.type](src + r * rb, s.f.data() + h * m.cols, nb);
  };
  auto multiply = [&](int rows, const TileOut& out) {
    if (int8)
      t.dot_i8({s.q.data(), s.a.data(), s.b.data(), m.cols, rows}, x.int8(m.type, false), out);
    else
      t.dot_f32({s.f.data(), m.cols, rows}, x.f, out);
  };
  for (int r = 0; r < nr; ++r) {
    prefetch_ahead(r);
    decode(r, row_at_a_time ? 0 : r);
    if (row_at_a_time) {
      TileOut one = o;
      one.y = o.y + r;
      if (!invariant || o.n < kPanelMinRows) {
        multiply(1, one);
        continue;
      }
      // each activation row alone, as a call with that one row would compute it
      for (int i = 0; i < o.n; ++i) {
        const int32_t self = i;
        TileOut single = one;
        single.n = 1;
        single.xrow = o.xrow ? o.xrow + i : &self;
        single.yrow = o.yrow ? o.yrow + i : &self;
        single.yscale = o.yscale ? o.yscale + i : nullptr;
        multiply(1, single);
      }
    }
  }
  if (!row_at_a_time) multiply(nr, o);
}

int rows_per_task(const QMatrix& m, int64_t n_act_rows, int n_threads) {
  const int64_t rb = std::max<int64_t>(m.row_bytes(), 1);
  int64_t rows = std::max<int64_t>(4, ((int64_t)64 << 10) / rb);
  if (n_act_rows >= kPanelMinRows) rows *= 4;  // the tile kernels pack the activations once per task
  // Enough tasks for every thread to take several, so uneven ones balance out.
  const int64_t fair = m.rows / std::max<int64_t>(1, 4 * (int64_t)n_threads);
  rows = std::min(rows, std::max<int64_t>(4, fair));
  return (int)std::min<int64_t>(rows, m.rows);
}

void qmatmul(const QMatrix& w, const float* x, int64_t n, float* y, bool exact, int n_threads) {
  const LinearOut out{w, y, w.rows, nullptr, false};
  linear_many(&out, 1, x, n, exact, n_threads);
}

namespace {
// The activation forms the matrices at hand need, prepared once.
void prepare_for(const KernelTable& t, const QMatrix* const* ms, int count, const float* x, int64_t n, bool exact,
                 ThreadPool& pool, Activations& acts) {
  ActNeeds needs;
  for (int i = 0; i < count; ++i) needs.add(t, ms[i]->type, exact);
  acts.prepare(t, x, n, ms[0]->cols, needs, pool);
}

Activations& thread_acts() {
  static thread_local Activations a;  // reused: its buffers keep their capacity between calls
  return a;
}
}  // namespace

void linear_many(const LinearOut* outs, int count, const float* x, int64_t n, bool exact, int n_threads) {
  if (count <= 0 || n <= 0) return;
  std::vector<const QMatrix*> ms(count);
  for (int i = 0; i < count; ++i) {
    check_matrix(outs[i].w, "linear");
    if (outs[i].w.cols != outs[0].w.cols) throw std::invalid_argument("linear_many: matrices of different widths");
    ms[i] = &outs[i].w;
  }
  const KernelTable& t = active_table();
  ThreadPool& pool = thread_pool(n_threads);
  Activations& acts = thread_acts();
  prepare_for(t, ms.data(), count, x, n, exact, pool, acts);
  // Tasks of every matrix in one list: (matrix, first row).
  std::vector<std::pair<int, int64_t>> tasks;
  std::vector<int> rows_of(count);
  for (int i = 0; i < count; ++i) {
    rows_of[i] = rows_per_task(outs[i].w, n, pool.size());
    for (int64_t r0 = 0; r0 < outs[i].w.rows; r0 += rows_of[i]) tasks.emplace_back(i, r0);
  }
  pool.run((int64_t)tasks.size(), [&](int64_t task) {
    const auto [i, r0] = tasks[task];
    const LinearOut& o = outs[i];
    const int nr = (int)std::min<int64_t>(rows_of[i], o.w.rows - r0);
    tile_product(t, o.w, r0, nr, acts, uses_int8(t, o.w.type, exact),
                 {nullptr, nullptr, nullptr, (int)n, o.y + r0, o.y_stride, o.accumulate});
    if (o.bias)
      for (int64_t k = 0; k < n; ++k)
        for (int r = 0; r < nr; ++r) o.y[k * o.y_stride + r0 + r] += o.bias[r0 + r];
  });
}

void linear_heads(const QMatrix& w, int heads, int64_t head_stride, const float* x, int64_t n, float* y, bool exact,
                  int n_threads) {
  check_matrix(w, "linear_heads");
  if (heads <= 0 || head_stride < w.rows) throw std::invalid_argument("linear_heads: heads overlap or none");
  if (n <= 0) return;
  const KernelTable& t = active_table();
  ThreadPool& pool = thread_pool(n_threads);
  Activations& acts = thread_acts();
  const QMatrix* ms[1] = {&w};
  prepare_for(t, ms, 1, x, n * heads, exact, pool, acts);  // row t * heads + h
  std::vector<int32_t> xrow((size_t)heads * n);
  for (int h = 0; h < heads; ++h)
    for (int64_t k = 0; k < n; ++k) xrow[(size_t)h * n + k] = (int32_t)(k * heads + h);
  // the heads' rows as one matrix for the split (a head's matrix alone is small: split by its
  // own size, tasks would be a few microseconds each)
  const QMatrix all{w.type, w.data, w.rows * heads, w.cols};
  const int rows = (int)std::min<int64_t>(rows_per_task(all, n, pool.size()), w.rows);
  const int64_t tiles = (w.rows + rows - 1) / rows;
  const bool int8 = uses_int8(t, w.type, exact);
  pool.run(heads * tiles, [&](int64_t task) {
    const int h = (int)(task / tiles);
    const int64_t r0 = (task % tiles) * rows;
    const int nr = (int)std::min<int64_t>(rows, w.rows - r0);
    const QMatrix head{w.type, w.data + h * head_stride * w.row_bytes(), w.rows, w.cols};
    tile_product(t, head, r0, nr, acts, int8,
                 {xrow.data() + (size_t)h * n, nullptr, nullptr, (int)n, y + h * w.rows + r0, heads * w.rows, false});
  });
}

void gated_linear(const QMatrix& gate, const QMatrix& up, const float* x, int64_t n, float* out, int act, bool exact,
                  int n_threads) {
  check_matrix(gate, "gate");
  check_matrix(up, "up");
  if (gate.rows != up.rows || gate.cols != up.cols) throw std::invalid_argument("gated_linear: gate and up differ in shape");
  if (act != 0 && act != 1) throw std::invalid_argument("gated_linear: act must be 0 (SiLU) or 1 (GELU tanh)");
  if (n <= 0) return;
  const KernelTable& t = active_table();
  ThreadPool& pool = thread_pool(n_threads);
  Activations& acts = thread_acts();
  const QMatrix* ms[2] = {&gate, &up};
  prepare_for(t, ms, 2, x, n, exact, pool, acts);
  const int64_t I = gate.rows;
  // each task reads the rows of two matrices: half as many rows as one would take
  const int rows = std::max(1, rows_per_task(gate, n, pool.size()) / 2);
  const bool g8 = uses_int8(t, gate.type, exact), u8 = uses_int8(t, up.type, exact);
  pool.run((I + rows - 1) / rows, [&](int64_t task) {
    static thread_local std::vector<float> u;
    const int64_t r0 = task * rows;
    const int nr = (int)std::min<int64_t>(rows, I - r0);
    u.resize((size_t)n * nr);
    tile_product(t, gate, r0, nr, acts, g8, {nullptr, nullptr, nullptr, (int)n, out + r0, I, false});
    tile_product(t, up, r0, nr, acts, u8, {nullptr, nullptr, nullptr, (int)n, u.data(), nr, false});
    for (int64_t k = 0; k < n; ++k) t.act_mul(out + k * I + r0, u.data() + k * nr, nr, act);
  });
}

}  // namespace ktx
