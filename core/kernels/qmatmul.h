// Matrix products over GGUF-native weights on the persistent thread pool: the dense
// quantized linear (qmatmul) and the building blocks the MoE layer (moe.h) shares with it.
// Compiled for baseline x86-64; the arithmetic runs in the active ISA's kernel table.
#pragma once
#include <cstdint>
#include <vector>

#include "kernel_table.h"

namespace ktx {

class ThreadPool;

// `rows` rows of `cols` elements stored as GGUF blocks of `type`, row after row.
struct QMatrix {
  int type;
  const uint8_t* data;
  int64_t rows, cols;
  int64_t row_bytes() const;
  QMatrix expert(int64_t e) const { return {type, data + e * rows * row_bytes(), rows, cols}; }
};

// Throws std::invalid_argument unless the kernels can multiply this matrix (known type,
// cols a multiple of 32 and of the block size).
void check_matrix(const QMatrix& m, const char* what);

// Whether products with this type run on int8 activations (false: float32 activations).
bool uses_int8(const KernelTable& t, int type, bool exact);
// Whether its fused kernel wants activations in K-quant order.
bool wants_kq(const KernelTable& t, int type, bool exact);

// Activation rows in the form(s) the kernels of the weights at hand need.
struct Activations {
  int64_t cols = 0;
  const float* f = nullptr;  // float32 rows (when a float-path type is involved)
  std::vector<int8_t> q;     // int8 rows
  std::vector<float> d, s;   // per group of 16
  // The same rows with each run of 128 values reordered as 0-31, 64-95, 32-63, 96-127 (the
  // order of the 4-bit K-quants' nibbles), for the fused kernels.
  std::vector<int8_t> kq;
  std::vector<float> kd, ks;
  ActI8 int8() const { return {q.data(), d.data(), s.data(), cols}; }
  ActI8 int8_kq() const { return {kq.data(), kd.data(), ks.data(), cols}; }
  bool has_int8() const { return !q.empty(); }
  bool has_kq() const { return !kq.empty(); }
  // Keeps a pointer to x (rows of cols floats) and, if `int8`, quantizes it on the pool
  // (also in K-quant order if `kq_order` and cols % 128 == 0).
  void prepare(const KernelTable& t, const float* x, int64_t n, int64_t cols, bool int8, bool kq_order,
               ThreadPool& pool);
};

// Decodes rows [r0, r0 + nr) of m and writes their products with activation rows into `o`
// (row r0 of m is column 0 of o.y). Uses this thread's scratch buffers.
void tile_product(const KernelTable& t, const QMatrix& m, int64_t r0, int nr, const Activations& x,
                  bool int8, TileOut o);

// Rows of weights per task: ~64 KiB of weights when few activation rows meet each weight
// row (decode), more when many do, so the activations are streamed fewer times.
int rows_per_task(const QMatrix& m, int64_t n_act_rows, int n_threads);

// Batch invariance: while set to N > 0, products with at most N activation rows compute each
// row as it would be computed alone (fused kernels, or one row at a time; no panels or AMX
// tiles, whose summation order differs), so a row's result does not depend on the rows it is
// batched with. The server sets it: batched decode then gives a single request's tokens.
void set_batch_invariant_rows(int n);
int batch_invariant_rows();

// y[n][rows] = x[n][cols] @ W^T (float32). exact: float32 activations for every type.
void qmatmul(const QMatrix& w, const float* x, int64_t n, float* y, bool exact, int n_threads);

// One product of a linear_many call: y[i * y_stride + r] (+)= (x @ W^T)[i][r] + bias[r].
struct LinearOut {
  QMatrix w;
  float* y;
  int64_t y_stride;
  const float* bias;  // null: none
  bool accumulate;
};

// Several products of the same activation rows x[n][cols] (q, k and v; gate and up): the rows
// are quantized once and every matrix's tiles run as one job on the pool.
void linear_many(const LinearOut* outs, int count, const float* x, int64_t n, bool exact, int n_threads);

// Per-head products (MLA's absorbed projections): head h's matrix is rows [h * head_stride,
// h * head_stride + w.rows) of `w`'s data, and y[t][h][r] = <x[t][h], W_h[r]> for t < n
// (x [n][heads][w.cols], y [n][heads][w.rows], contiguous).
void linear_heads(const QMatrix& w, int heads, int64_t head_stride, const float* x, int64_t n, float* y, bool exact,
                  int n_threads);

// out[n][I] = act(x @ G^T) * (x @ U^T) for gate G and up U [I][cols] (act as in step.h's
// act_mul): each task multiplies the same rows of both and applies the activation at once.
void gated_linear(const QMatrix& gate, const QMatrix& up, const float* x, int64_t n, float* out, int act, bool exact,
                  int n_threads);

}  // namespace ktx
