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
// Whether its int8 activations have one scale per run of 256 values (the K-quants: their
// sub-block scales are integers, so a run's products sum in integers, as llama.cpp's Q8_K
// scheme does); else one per group of 16.
bool act_per_256(int type);

// Activation rows quantized one way: int8 q with, per group of 16, the scale d and d * sum(q);
// and the same rows with each run of 128 values reordered as 0-31, 64-95, 32-63, 96-127 (the
// order of the 4-bit K-quants' nibbles) for the fused kernels that want it.
struct QuantizedRows {
  std::vector<int8_t> q, kq;
  std::vector<float> d, s, kd, ks;
  bool ready = false, has_kq = false;
};

// The forms a set of matrices needs.
struct ActNeeds {
  bool g16 = false, g16_kq = false, g256 = false, g256_kq = false;
  void add(const KernelTable& t, int type, bool exact);
  bool int8() const { return g16 || g256; }
};

// Activation rows in the form(s) the kernels of the weights at hand need.
struct Activations {
  int64_t cols = 0;
  const float* f = nullptr;  // float32 rows (when a float-path type is involved)
  QuantizedRows g16;         // a scale per group of 16
  QuantizedRows g256;        // a scale per run of 256 (act_per_256 types)
  // The int8 rows the products with weights of `type` read (in K-quant order if kq).
  ActI8 int8(int type, bool kq) const;
  bool has_kq(int type) const { return (act_per_256(type) ? g256 : g16).has_kq; }
  // Keeps a pointer to x (rows of cols floats) and quantizes it on the pool in the forms
  // `needs` asks for (the K-quant order only if cols % 128 == 0).
  void prepare(const KernelTable& t, const float* x, int64_t n, int64_t cols, const ActNeeds& needs,
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
