// Python bindings for ktx.core._kernels. Thin on purpose: pointers come in as integers
// (numpy's .ctypes.data, torch's .data_ptr()), the Python wrappers check shapes and dtypes.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <vector>

#include "bandwidth.h"
#include "blocks.h"
#include "routing.h"
#include "cpu_features.h"
#include "dispatch.h"
#include "iq_grids.h"
#include "kernel_table.h"
#include "moe.h"
#include "qmatmul.h"
#include "step.h"
#include "thread_pool.h"

namespace py = pybind11;
using namespace ktx;

namespace {
// The i-quants' code books come from gguf-py at first use (iq_grids.h): loaded here, with the
// GIL held, before a kernel of such a type is built or called.
void ensure_iq_grids(int type) {
  if (!ktx::uses_iq_grids(type) || ktx::iq_grids_ready()) return;
  py::module_::import("ktx.core.gguf.iq_grids").attr("load")();
  ktx::require_iq_grids(type);
}
}  // namespace

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "ktx CPU kernels (C++17): GGUF dequantization and quantization, ISA dispatch.";

  m.def("cpu_features", [] {
    const CpuFeatures& f = cpu_features();
    py::dict d;
    d["vendor"] = f.vendor;
    d["brand"] = f.brand;
    d["avx2"] = f.avx2;
    d["fma"] = f.fma;
    d["f16c"] = f.f16c;
    d["bmi2"] = f.bmi2;
    d["avx512f"] = f.avx512f;
    d["avx512bw"] = f.avx512bw;
    d["avx512vl"] = f.avx512vl;
    d["avx512dq"] = f.avx512dq;
    d["avx512_vnni"] = f.avx512_vnni;
    d["avx512_bf16"] = f.avx512_bf16;
    d["avx_vnni"] = f.avx_vnni;
    d["amx_tile"] = f.amx_tile;
    d["amx_int8"] = f.amx_int8;
    d["amx_bf16"] = f.amx_bf16;
    d["os_avx"] = f.os_avx;
    d["os_avx512"] = f.os_avx512;
    d["os_amx"] = f.os_amx;
    return d;
  });
  m.def("supported_isas", &supported_isas, "ISAs this CPU can run, best last.");
  m.def("best_isa", &best_isa);
  m.def("isa", [] { return std::string(active_table().name); }, "The ISA whose kernels run now.");
  m.def("set_isa", &set_isa, py::arg("name"), "Select the kernels of one ISA (scalar|avx2|avx512|amx).");
  m.def(
      "amx_selftest",
      [] {
        if (!cpu_features().has_amx()) throw std::runtime_error("this CPU (or its OS) offers no AMX");
        if (!amx_request_permission())
          throw std::runtime_error("Linux refused the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM)");
        return amx_selftest();
      },
      "Run a bf16 and an int8 tile product; True if both equal scalar loops. RuntimeError without AMX.");

  m.def(
      "amx_emulated_selfcheck",
      [] {
        if (!cpu_features().has_avx512()) throw std::runtime_error("the AMX emulation runs on AVX-512 CPUs only");
        return amx_emulated::selfcheck();
      },
      "The start-up check of the AMX tile kernel against AVX-512's, run on emulated tiles.");
  m.def(
      "set_iq_grid",
      [](const std::string& name, uintptr_t values, int64_t n) {
        return set_iq_grid(name.c_str(), reinterpret_cast<const int8_t*>(values), n);
      },
      py::arg("name"), py::arg("values"), py::arg("n"),
      "Copies an i-quant code book (int8 values) into the kernels' table (iq_grids.h).");
  m.def("iq_grids_ready", &iq_grids_ready, "Whether every i-quant code book was loaded.");
  m.def(
      "dequantize",
      [](int type, uintptr_t src, int64_t src_nbytes, uintptr_t dst, int64_t n, bool out_bf16, int threads) {
        ensure_iq_grids(type);
        py::gil_scoped_release release;
        dequantize(type, reinterpret_cast<const uint8_t*>(src), src_nbytes, reinterpret_cast<void*>(dst), n,
                   out_bf16, threads);
      },
      py::arg("type"), py::arg("src"), py::arg("src_nbytes"), py::arg("dst"), py::arg("n"),
      py::arg("out_bf16"), py::arg("threads"));
  m.def(
      "quantize",
      [](int type, uintptr_t src, int64_t n, uintptr_t dst, int64_t dst_nbytes, int threads) {
        py::gil_scoped_release release;
        quantize(type, reinterpret_cast<const float*>(src), n, reinterpret_cast<uint8_t*>(dst), dst_nbytes,
                 threads);
      },
      py::arg("type"), py::arg("src"), py::arg("n"), py::arg("dst"), py::arg("dst_nbytes"), py::arg("threads"));

  m.def(
      "qmatmul",
      [](int type, uintptr_t w, int64_t rows, int64_t cols, uintptr_t x, int64_t n, uintptr_t y, bool exact,
         int threads) {
        ensure_iq_grids(type);
        py::gil_scoped_release release;
        qmatmul({type, reinterpret_cast<const uint8_t*>(w), rows, cols}, reinterpret_cast<const float*>(x), n,
                reinterpret_cast<float*>(y), exact, threads);
      },
      py::arg("type"), py::arg("w"), py::arg("rows"), py::arg("cols"), py::arg("x"), py::arg("n"), py::arg("y"),
      py::arg("exact"), py::arg("threads"),
      "y[n, rows] = x[n, cols] @ W.T for W in GGUF blocks of `type` (float32 x, y). exact: float32 "
      "activations for every type; else int8 activations where the type has an int8 form.");
  py::class_<QMatrix>(m, "QMatrix", "A matrix of GGUF blocks the kernels multiply (rows x cols of `type`).")
      .def(py::init([](int type, uintptr_t data, int64_t rows, int64_t cols) {
             ensure_iq_grids(type);
             QMatrix q{type, reinterpret_cast<const uint8_t*>(data), rows, cols};
             check_matrix(q, "QMatrix");
             return q;
           }),
           py::arg("type"), py::arg("data"), py::arg("rows"), py::arg("cols"))
      .def_readonly("type", &QMatrix::type)
      .def_readonly("rows", &QMatrix::rows)
      .def_readonly("cols", &QMatrix::cols);
  m.def(
      "linear",
      [](const std::vector<QMatrix>& ws, uintptr_t x, int64_t n, const std::vector<uintptr_t>& ys,
         const std::vector<uintptr_t>& biases, bool accumulate, bool exact, int threads) {
        if (ws.size() != ys.size() || (!biases.empty() && biases.size() != ws.size()))
          throw std::invalid_argument("linear: one output (and bias, if any) per matrix");
        std::vector<LinearOut> outs;
        for (size_t i = 0; i < ws.size(); ++i)
          outs.push_back({ws[i], reinterpret_cast<float*>(ys[i]), ws[i].rows,
                          biases.empty() ? nullptr : reinterpret_cast<const float*>(biases[i]), accumulate});
        py::gil_scoped_release release;
        linear_many(outs.data(), (int)outs.size(), reinterpret_cast<const float*>(x), n, exact, threads);
      },
      py::arg("ws"), py::arg("x"), py::arg("n"), py::arg("ys"), py::arg("biases"), py::arg("accumulate"),
      py::arg("exact"), py::arg("threads"),
      "ys[i][n, rows_i] (+)= x[n, cols] @ W_i.T (+ bias_i, 0 = none) for matrices of one width: x quantized once, "
      "one job on the pool.");
  m.def(
      "linear1",
      [](const QMatrix& w, uintptr_t x, int64_t n, uintptr_t y, uintptr_t bias, bool accumulate, bool exact,
         int threads) {
        const LinearOut out{w, reinterpret_cast<float*>(y), w.rows, reinterpret_cast<const float*>(bias), accumulate};
        py::gil_scoped_release release;
        linear_many(&out, 1, reinterpret_cast<const float*>(x), n, exact, threads);
      },
      py::arg("w"), py::arg("x"), py::arg("n"), py::arg("y"), py::arg("bias"), py::arg("accumulate"),
      py::arg("exact"), py::arg("threads"), "linear with one matrix (no lists to convert: the decode hot path).");
  m.def(
      "linear_heads",
      [](const QMatrix& w, int heads, int64_t head_stride, uintptr_t x, int64_t n, uintptr_t y, bool exact,
         int threads) {
        py::gil_scoped_release release;
        linear_heads(w, heads, head_stride, reinterpret_cast<const float*>(x), n, reinterpret_cast<float*>(y), exact,
                     threads);
      },
      py::arg("w"), py::arg("heads"), py::arg("head_stride"), py::arg("x"), py::arg("n"), py::arg("y"),
      py::arg("exact"), py::arg("threads"),
      "y[n, heads, rows] = per head h: x[:, h] @ W_h.T, W_h = rows h * head_stride .. of w (see qmatmul.h).");
  m.def(
      "gated_linear",
      [](const QMatrix& gate, const QMatrix& up, uintptr_t x, int64_t n, uintptr_t out, int act, bool exact,
         int threads) {
        py::gil_scoped_release release;
        gated_linear(gate, up, reinterpret_cast<const float*>(x), n, reinterpret_cast<float*>(out), act, exact,
                     threads);
      },
      py::arg("gate"), py::arg("up"), py::arg("x"), py::arg("n"), py::arg("out"), py::arg("act"), py::arg("exact"),
      py::arg("threads"), "out[n, I] = act(x @ gate.T) * (x @ up.T); act 0: SiLU, 1: GELU (tanh).");
  m.def(
      "deltanet_step",
      [](uintptr_t mixed, uintptr_t conv_state, uintptr_t conv_w, uintptr_t b, uintptr_t a, uintptr_t a_neg,
         uintptr_t dt_bias, uintptr_t S, uintptr_t z, uintptr_t norm_w, float eps, int nk, int dk, int nv, int dv,
         int K, bool tiled, uintptr_t out, int threads) {
        const DeltaStep s{reinterpret_cast<const float*>(mixed), reinterpret_cast<float*>(conv_state),
                          reinterpret_cast<const float*>(conv_w), reinterpret_cast<const float*>(b),
                          reinterpret_cast<const float*>(a), reinterpret_cast<const float*>(a_neg),
                          reinterpret_cast<const float*>(dt_bias), reinterpret_cast<float*>(S),
                          reinterpret_cast<const float*>(z), reinterpret_cast<const float*>(norm_w), eps, nk, dk, nv,
                          dv, K, tiled, reinterpret_cast<float*>(out)};
        py::gil_scoped_release release;
        deltanet_step(s, threads);
      },
      py::arg("mixed"), py::arg("conv_state"), py::arg("conv_w"), py::arg("b"), py::arg("a"), py::arg("a_neg"),
      py::arg("dt_bias"), py::arg("S"),
      py::arg("z"), py::arg("norm_w"), py::arg("eps"), py::arg("nk"), py::arg("dk"), py::arg("nv"), py::arg("dv"),
      py::arg("K"), py::arg("tiled"), py::arg("out"), py::arg("threads"),
      "One token of one sequence through a gated DeltaNet after its projections (see step.h).");
  m.def(
      "rms_norm",
      [](uintptr_t x, int64_t rows, int64_t cols, int64_t x_stride, uintptr_t w, float eps, uintptr_t out,
         int64_t out_stride, bool accumulate) {
        rms_norm(reinterpret_cast<const float*>(x), rows, cols, x_stride, reinterpret_cast<const float*>(w), eps,
                 reinterpret_cast<float*>(out), out_stride, accumulate);
      },
      py::arg("x"), py::arg("rows"), py::arg("cols"), py::arg("x_stride"), py::arg("w"), py::arg("eps"),
      py::arg("out"), py::arg("out_stride"), py::arg("accumulate"), "out[r] (+)= rms_norm(x[r]) * w, float32 rows.");
  m.def(
      "act_mul",
      [](uintptr_t g, uintptr_t u, int64_t n, int act) {
        act_mul(reinterpret_cast<float*>(g), reinterpret_cast<const float*>(u), n, act);
      },
      py::arg("g"), py::arg("u"), py::arg("n"), py::arg("act"), "g = act(g) * u (act 0: SiLU, 1: GELU tanh).");
  m.def(
      "rope",
      [](uintptr_t x, int64_t rows, int heads, int64_t row_stride, int64_t head_stride, int dim, uintptr_t pos,
         uintptr_t freq, float scale, bool interleaved) {
        rope(reinterpret_cast<float*>(x), rows, heads, row_stride, head_stride, dim,
             reinterpret_cast<const int64_t*>(pos), reinterpret_cast<const float*>(freq), scale, interleaved);
      },
      py::arg("x"), py::arg("rows"), py::arg("heads"), py::arg("row_stride"), py::arg("head_stride"), py::arg("dim"),
      py::arg("pos"), py::arg("freq"), py::arg("scale"), py::arg("interleaved"), "RoPE in place (see step.h).");
  m.def(
      "kv_write",
      [](uintptr_t store, int64_t store_stride, uintptr_t src, int64_t src_stride, int64_t width, int64_t rows,
         uintptr_t table, int64_t table_width, int block_size, uintptr_t seq, uintptr_t pos) {
        kv_write(reinterpret_cast<float*>(store), store_stride, reinterpret_cast<const float*>(src), src_stride, width,
                 rows, {reinterpret_cast<const int32_t*>(table), table_width, block_size},
                 reinterpret_cast<const int32_t*>(seq), reinterpret_cast<const int64_t*>(pos));
      },
      py::arg("store"), py::arg("store_stride"), py::arg("src"), py::arg("src_stride"), py::arg("width"),
      py::arg("rows"), py::arg("table"), py::arg("table_width"), py::arg("block_size"), py::arg("seq"),
      py::arg("pos"), "Rows of src into their positions' rows of a paged float32 cache.");
  m.def(
      "paged_attention",
      [](uintptr_t q, int64_t q_stride, int64_t rows, int heads, int kv_heads, int dk, int dv, uintptr_t k,
         int64_t k_stride, uintptr_t v, int64_t v_stride, uintptr_t table, int64_t table_width, int block_size,
         uintptr_t seq, uintptr_t pos, float scale, int64_t window, float softcap, uintptr_t out, int threads,
         uintptr_t sinks) {
        py::gil_scoped_release release;
        paged_attention(reinterpret_cast<const float*>(q), q_stride, rows, heads, kv_heads, dk, dv,
                        reinterpret_cast<const float*>(k), k_stride, reinterpret_cast<const float*>(v), v_stride,
                        {reinterpret_cast<const int32_t*>(table), table_width, block_size},
                        reinterpret_cast<const int32_t*>(seq), reinterpret_cast<const int64_t*>(pos), scale, window,
                        softcap, reinterpret_cast<float*>(out), threads, reinterpret_cast<const float*>(sinks));
      },
      py::arg("q"), py::arg("q_stride"), py::arg("rows"), py::arg("heads"), py::arg("kv_heads"), py::arg("dk"),
      py::arg("dv"), py::arg("k"), py::arg("k_stride"), py::arg("v"), py::arg("v_stride"), py::arg("table"),
      py::arg("table_width"), py::arg("block_size"), py::arg("seq"), py::arg("pos"), py::arg("scale"),
      py::arg("window"), py::arg("softcap"), py::arg("out"), py::arg("threads"), py::arg("sinks") = 0,
      "Causal attention of query rows over a paged float32 cache (see step.h).");
  auto fptr = [](uintptr_t p) { return reinterpret_cast<const float*>(p); };
  py::class_<AttnBlock>(m, "AttnBlock", "A layer's attention half as one call (see blocks.h).")
      .def(py::init([fptr](int64_t hidden, uintptr_t norm, float norm_eps, uintptr_t post_norm, float post_eps,
                           const QMatrix& q, const QMatrix& k, const QMatrix& v, const QMatrix& o, uintptr_t q_bias,
                           uintptr_t k_bias, uintptr_t v_bias, uintptr_t o_bias, uintptr_t q_norm, uintptr_t k_norm,
                           float qk_eps, int heads, int kv_heads, int head_dim, uintptr_t rope_freqs, float rope_scale,
                           bool rope_interleaved, float scale, int64_t window, float softcap, bool exact, int threads,
                           uintptr_t sinks, int rope_dim, bool qk_norm_full) {
             AttnBlockSpec s;
             s.qk_norm_full = qk_norm_full;
             s.sinks = fptr(sinks);
             s.rope_dim = rope_dim;
             s.hidden = hidden;
             s.norm = {fptr(norm), norm_eps};
             s.post_norm = {fptr(post_norm), post_eps};
             s.q = q, s.k = k, s.v = v, s.o = o;
             s.q_bias = fptr(q_bias), s.k_bias = fptr(k_bias), s.v_bias = fptr(v_bias), s.o_bias = fptr(o_bias);
             s.q_norm = {fptr(q_norm), qk_eps};
             s.k_norm = {fptr(k_norm), qk_eps};
             s.heads = heads, s.kv_heads = kv_heads, s.head_dim = head_dim;
             s.rope_freqs = fptr(rope_freqs), s.rope_scale = rope_scale, s.rope_interleaved = rope_interleaved;
             s.scale = scale, s.window = window, s.softcap = softcap, s.exact = exact, s.threads = threads;
             return new AttnBlock(s);
           }),
           py::arg("hidden"), py::arg("norm"), py::arg("norm_eps"), py::arg("post_norm"), py::arg("post_eps"),
           py::arg("q"), py::arg("k"), py::arg("v"), py::arg("o"), py::arg("q_bias"), py::arg("k_bias"),
           py::arg("v_bias"), py::arg("o_bias"), py::arg("q_norm"), py::arg("k_norm"), py::arg("qk_eps"),
           py::arg("heads"), py::arg("kv_heads"), py::arg("head_dim"), py::arg("rope_freqs"), py::arg("rope_scale"),
           py::arg("rope_interleaved"), py::arg("scale"), py::arg("window"), py::arg("softcap"), py::arg("exact"),
           py::arg("threads"), py::arg("sinks") = 0, py::arg("rope_dim") = 0,
           py::arg("qk_norm_full") = false)
      .def(
          "forward",
          [](AttnBlock& b, uintptr_t x, int64_t n, uintptr_t k_store, uintptr_t v_store, uintptr_t table,
             int64_t width, int block_size, uintptr_t seq, uintptr_t pos) {
            py::gil_scoped_release release;
            b.forward(reinterpret_cast<float*>(x), n, reinterpret_cast<float*>(k_store),
                      reinterpret_cast<float*>(v_store), {reinterpret_cast<const int32_t*>(table), width, block_size},
                      reinterpret_cast<const int32_t*>(seq), reinterpret_cast<const int64_t*>(pos));
          },
          py::arg("x"), py::arg("n"), py::arg("k_store"), py::arg("v_store"), py::arg("table"), py::arg("width"),
          py::arg("block_size"), py::arg("seq"), py::arg("pos"));
  py::class_<MlaBlock>(m, "MlaBlock", "A layer's multi-head latent attention half as one call (see blocks.h).")
      .def(py::init([fptr](int64_t hidden, uintptr_t norm, float norm_eps, const QMatrix& q, const QMatrix* q_a,
                           uintptr_t q_a_norm, float q_a_eps, const QMatrix& kv_a, uintptr_t kv_norm, float kv_eps,
                           const QMatrix& k_b, int64_t k_b_stride, const QMatrix& v_b, int64_t v_b_stride,
                           const QMatrix& o, int heads, int nope, int rope_dim, int rank, int v_dim,
                           uintptr_t rope_freqs, float rope_scale, float scale, bool exact, int threads) {
             MlaBlockSpec s;
             s.hidden = hidden;
             s.norm = {fptr(norm), norm_eps};
             s.q = q;
             if (q_a) s.q_a = *q_a;
             s.q_a_norm = {fptr(q_a_norm), q_a_eps};
             s.kv_a = kv_a;
             s.kv_norm = {fptr(kv_norm), kv_eps};
             s.k_b = k_b, s.k_b_stride = k_b_stride, s.v_b = v_b, s.v_b_stride = v_b_stride, s.o = o;
             s.heads = heads, s.nope = nope, s.rope_dim = rope_dim, s.rank = rank, s.v_dim = v_dim;
             s.rope_freqs = fptr(rope_freqs), s.rope_scale = rope_scale, s.scale = scale;
             s.exact = exact, s.threads = threads;
             return new MlaBlock(s);
           }),
           py::arg("hidden"), py::arg("norm"), py::arg("norm_eps"), py::arg("q"), py::arg("q_a"), py::arg("q_a_norm"),
           py::arg("q_a_eps"), py::arg("kv_a"), py::arg("kv_norm"), py::arg("kv_eps"), py::arg("k_b"),
           py::arg("k_b_stride"), py::arg("v_b"), py::arg("v_b_stride"), py::arg("o"), py::arg("heads"),
           py::arg("nope"), py::arg("rope_dim"), py::arg("rank"), py::arg("v_dim"), py::arg("rope_freqs"),
           py::arg("rope_scale"), py::arg("scale"), py::arg("exact"), py::arg("threads"))
      .def(
          "forward",
          [](MlaBlock& b, uintptr_t x, int64_t n, uintptr_t store, uintptr_t table, int64_t width, int block_size,
             uintptr_t seq, uintptr_t pos) {
            py::gil_scoped_release release;
            b.forward(reinterpret_cast<float*>(x), n, reinterpret_cast<float*>(store),
                      {reinterpret_cast<const int32_t*>(table), width, block_size},
                      reinterpret_cast<const int32_t*>(seq), reinterpret_cast<const int64_t*>(pos));
          },
          py::arg("x"), py::arg("n"), py::arg("store"), py::arg("table"), py::arg("width"), py::arg("block_size"),
          py::arg("seq"), py::arg("pos"));
  py::class_<RouteSpec>(m, "Router", "A MoE router on the CPU (see routing.h).")
      .def(py::init([fptr](const QMatrix& gate, uintptr_t bias, int top_k, int scoring, int group, int n_group,
                           int topk_group, bool norm, float scale, int threads, uintptr_t logit_bias) {
             RouteSpec s;
             s.gate = gate, s.bias = fptr(bias), s.top_k = top_k, s.scoring = scoring, s.group = group;
             s.logit_bias = fptr(logit_bias);
             s.n_group = n_group, s.topk_group = topk_group, s.norm = norm, s.scale = scale, s.threads = threads;
             route(s, nullptr, 0, nullptr, nullptr);  // checks the spec
             return new RouteSpec(s);
           }),
           py::arg("gate"), py::arg("bias"), py::arg("top_k"), py::arg("scoring"), py::arg("group"),
           py::arg("n_group"), py::arg("topk_group"), py::arg("norm"), py::arg("scale"), py::arg("threads"),
           py::arg("logit_bias") = 0)
      .def(
          "forward",
          [](const RouteSpec& s, uintptr_t x, int64_t n, uintptr_t ids, uintptr_t weights) {
            py::gil_scoped_release release;
            route(s, reinterpret_cast<const float*>(x), n, reinterpret_cast<int64_t*>(ids),
                  reinterpret_cast<float*>(weights));
          },
          py::arg("x"), py::arg("n"), py::arg("ids"), py::arg("weights"),
          "ids [n][top_k] int64 and weights [n][top_k] float32 for x [n][hidden] float32.");
  py::class_<MoeBlock>(m, "MoeBlock", "A MoE layer's MLP half as one call (see blocks.h).")
      .def(py::init([fptr](int64_t hidden, uintptr_t norm, float norm_eps, uintptr_t post_norm, float post_eps,
                           const RouteSpec& router, MoeLayer& experts, const QMatrix* shared_gate,
                           const QMatrix* shared_up, const QMatrix* shared_down, int act, bool exact, int threads) {
             MoeBlockSpec s;
             s.hidden = hidden;
             s.norm = {fptr(norm), norm_eps};
             s.post_norm = {fptr(post_norm), post_eps};
             s.route = router;
             s.experts = &experts;
             if (shared_gate && shared_up && shared_down)
               s.shared_gate = *shared_gate, s.shared_up = *shared_up, s.shared_down = *shared_down;
             s.act = act, s.exact = exact, s.threads = threads;
             return new MoeBlock(s);
           }),
           py::arg("hidden"), py::arg("norm"), py::arg("norm_eps"), py::arg("post_norm"), py::arg("post_eps"),
           py::arg("router"), py::arg("experts"), py::arg("shared_gate"), py::arg("shared_up"),
           py::arg("shared_down"), py::arg("act"), py::arg("exact"), py::arg("threads"))
      .def(
          "forward",
          [](MoeBlock& b, uintptr_t x, int64_t n) {
            py::gil_scoped_release release;
            b.forward(reinterpret_cast<float*>(x), n);
          },
          py::arg("x"), py::arg("n"));
  m.def("block_clock", &block_clock, "ns in the decoder blocks by kind: norms, rope (+q/k norms), linear, attention, experts, routing.");
  m.def("reset_block_clock", &reset_block_clock);
  py::class_<MlpBlock>(m, "MlpBlock", "A layer's gated-MLP half as one call (see blocks.h).")
      .def(py::init([fptr](int64_t hidden, int64_t inter, uintptr_t norm, float norm_eps, uintptr_t post_norm,
                           float post_eps, const QMatrix& gate, const QMatrix& up, const QMatrix& down, int act,
                           bool exact, int threads) {
             MlpBlockSpec s;
             s.hidden = hidden, s.inter = inter;
             s.norm = {fptr(norm), norm_eps};
             s.post_norm = {fptr(post_norm), post_eps};
             s.gate = gate, s.up = up, s.down = down;
             s.act = act, s.exact = exact, s.threads = threads;
             return new MlpBlock(s);
           }),
           py::arg("hidden"), py::arg("inter"), py::arg("norm"), py::arg("norm_eps"), py::arg("post_norm"),
           py::arg("post_eps"), py::arg("gate"), py::arg("up"), py::arg("down"), py::arg("act"), py::arg("exact"),
           py::arg("threads"))
      .def(
          "forward",
          [](MlpBlock& b, uintptr_t x, int64_t n) {
            py::gil_scoped_release release;
            b.forward(reinterpret_cast<float*>(x), n);
          },
          py::arg("x"), py::arg("n"));
  m.def(
      "quantize_act",
      [](uintptr_t x, int64_t n, int64_t cols, uintptr_t q, uintptr_t d, uintptr_t s, int group) {
        if (group != 16 && group != 256) throw std::invalid_argument("quantize_act: group must be 16 or 256");
        if (cols <= 0 || cols % group) throw std::invalid_argument("quantize_act: cols must be a multiple of group");
        const KernelTable& t = active_table();
        const QuantActFn quant = group == 16 ? t.quant_act : t.quant_act_256;
        for (int64_t r = 0; r < n; ++r)
          quant(reinterpret_cast<const float*>(x) + r * cols, cols, reinterpret_cast<int8_t*>(q) + r * cols,
                reinterpret_cast<float*>(d) + r * (cols / 16), reinterpret_cast<float*>(s) + r * (cols / 16));
      },
      py::arg("x"), py::arg("n"), py::arg("cols"), py::arg("q"), py::arg("d"), py::arg("s"), py::arg("group") = 16,
      "Activation rows -> int8 q with one scale per run of `group` (16, or 256 for the K-quants); per 16 values "
      "the run's scale d and d * sum(q) (as the int8 kernels see them).");
  m.def(
      "decode_i8",
      [](int type, uintptr_t src, int64_t n_blocks, uintptr_t q, uintptr_t a, uintptr_t b) {
        const KernelTable& t = active_table();
        if (type < 0 || type >= GGML_TYPE_SLOTS || !t.decode_i8[type])
          throw std::invalid_argument("no int8 form for ggml type " + std::to_string(type));
        ensure_iq_grids(type);
        t.decode_i8[type](reinterpret_cast<const uint8_t*>(src), n_blocks, reinterpret_cast<int8_t*>(q),
                          reinterpret_cast<float*>(a), reinterpret_cast<float*>(b));
      },
      py::arg("type"), py::arg("src"), py::arg("n_blocks"), py::arg("q"), py::arg("a"), py::arg("b"),
      "GGUF blocks -> int8 q and per 16 values a, b with w = a * q + b.");
  m.def("int8_types", [] {
    std::vector<int> v;
    const KernelTable& t = active_table();
    for (int i = 0; i < GGML_TYPE_SLOTS; ++i)
      if (t.decode_i8[i]) v.push_back(i);
    return v;
  });

  auto call = [](int64_t n, int k, uintptr_t ids, uintptr_t weights, uintptr_t x, bool x_bf16, uintptr_t out,
                 bool out_bf16) {
    return MoeCall{n, k, reinterpret_cast<const int64_t*>(ids), reinterpret_cast<const float*>(weights),
                   reinterpret_cast<const void*>(x), x_bf16, reinterpret_cast<void*>(out), out_bf16};
  };
  py::class_<MoeLayer>(m, "MoeLayer", "One layer's routed experts on the CPU kernels (see moe.h).")
      .def(py::init([](int64_t n_experts, int64_t hidden, int64_t inter, int gate_type, uintptr_t gate, int up_type,
                       uintptr_t up, int down_type, uintptr_t down, int threads, bool exact) {
             auto p = [](uintptr_t v) { return reinterpret_cast<const uint8_t*>(v); };
             for (int type : {gate_type, up_type, down_type}) ensure_iq_grids(type);
             return new MoeLayer(n_experts, hidden, inter, {gate_type, p(gate), inter, hidden},
                                 {up_type, p(up), inter, hidden}, {down_type, p(down), hidden, inter}, threads, exact);
           }),
           py::arg("n_experts"), py::arg("hidden"), py::arg("inter"), py::arg("gate_type"), py::arg("gate"),
           py::arg("up_type"), py::arg("up"), py::arg("down_type"), py::arg("down"), py::arg("threads"),
           py::arg("exact") = false)
      .def(
          "forward",
          [call](MoeLayer& self, int64_t n, int k, uintptr_t ids, uintptr_t weights, uintptr_t x, bool x_bf16,
                 uintptr_t out, bool out_bf16) {
            py::gil_scoped_release release;
            self.forward(call(n, k, ids, weights, x, x_bf16, out, out_bf16));
          },
          py::arg("n"), py::arg("k"), py::arg("ids"), py::arg("weights"), py::arg("x"), py::arg("x_bf16"),
          py::arg("out"), py::arg("out_bf16"))
      .def(
          "submit",
          [call](MoeLayer& self, int64_t n, int k, uintptr_t ids, uintptr_t weights, uintptr_t x, bool x_bf16,
                 uintptr_t out, bool out_bf16) { self.submit(call(n, k, ids, weights, x, x_bf16, out, out_bf16)); },
          py::arg("n"), py::arg("k"), py::arg("ids"), py::arg("weights"), py::arg("x"), py::arg("x_bf16"),
          py::arg("out"), py::arg("out_bf16"))
      .def(
          "sync",
          [](MoeLayer& self) {
            py::gil_scoped_release release;
            self.sync();
          })
      .def(
          "set_extras",
          [](MoeLayer& self, uintptr_t gate_bias, uintptr_t up_bias, uintptr_t down_bias, int act, float alpha,
             float limit) {
            auto f = [](uintptr_t p) { return reinterpret_cast<const float*>(p); };
            self.set_extras(f(gate_bias), f(up_bias), f(down_bias), act, alpha, limit);
          },
          py::arg("gate_bias"), py::arg("up_bias"), py::arg("down_bias"), py::arg("act"), py::arg("alpha"),
          py::arg("limit"), "Per-expert biases (0: none) and the activation (0 SiLU, 1 clamped SwiGLU).")
      .def_property_readonly("busy_ns", &MoeLayer::busy_ns)
      .def_property_readonly("n_experts", &MoeLayer::n_experts)
      .def_property_readonly("hidden", &MoeLayer::hidden)
      .def_property_readonly("inter", &MoeLayer::inter);

  py::class_<MoeHostTask>(m, "MoeHostTask",
                          "A MoeLayer call with fixed buffers, started and awaited by host callbacks "
                          "(moe_host_submit / moe_host_sync take its `address`).")
      .def(py::init([call](MoeLayer& layer, int64_t n, int k, uintptr_t ids, uintptr_t weights, uintptr_t x,
                           bool x_bf16, uintptr_t out, bool out_bf16) {
             auto* task = new MoeHostTask();
             task->layer = &layer;
             task->call = call(n, k, ids, weights, x, x_bf16, out, out_bf16);
             return task;
           }),
           py::arg("layer"), py::arg("n"), py::arg("k"), py::arg("ids"), py::arg("weights"), py::arg("x"),
           py::arg("x_bf16"), py::arg("out"), py::arg("out_bf16"), py::keep_alive<1, 2>())
      .def_property_readonly("address", [](MoeHostTask& t) { return reinterpret_cast<uintptr_t>(&t); })
      .def("take_error", &MoeHostTask::take_error, "The first error of a callback since the last call ('' if none).");
  m.def("set_batch_invariant_rows", &set_batch_invariant_rows, py::arg("n"),
        "Products of at most n activation rows compute each row as alone (0: off; see qmatmul.h).");
  m.def("batch_invariant_rows", &batch_invariant_rows);
  m.attr("moe_host_submit") = reinterpret_cast<uintptr_t>(&ktx_moe_host_submit);
  m.attr("moe_host_sync") = reinterpret_cast<uintptr_t>(&ktx_moe_host_sync);

  m.def(
      "pool_run_sum",
      [](int threads, int64_t n_tasks) {
        py::gil_scoped_release release;
        std::vector<int64_t> hits(n_tasks, 0);
        thread_pool(threads).run(n_tasks, [&](int64_t t) { hits[t] += t + 1; });
        int64_t total = 0;
        for (int64_t h : hits) total += h;
        return total;
      },
      py::arg("threads"), py::arg("n_tasks"), "Runs n_tasks on the pool; returns the sum of (task + 1) (a test).");
  m.def(
      "pool_wake_seconds",
      [](int threads, int repeats) {
        py::gil_scoped_release release;
        ThreadPool& pool = thread_pool(threads);
        std::vector<double> times;
        for (int i = 0; i < repeats; ++i) {
          const auto t0 = std::chrono::steady_clock::now();
          pool.run(pool.size(), [](int64_t) {});
          times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }
        std::sort(times.begin(), times.end());
        return times.empty() ? 0.0 : times[times.size() / 2];
      },
      py::arg("threads"), py::arg("repeats") = 1000,
      "Median seconds for one empty job on all threads of the pool: wake-all plus join.");
  m.def(
      "memory_read",
      [](uintptr_t p, int64_t nbytes, int threads) {
        py::gil_scoped_release release;
        return memory_read(reinterpret_cast<const void*>(p), nbytes, threads);
      },
      py::arg("ptr"), py::arg("nbytes"), py::arg("threads"), "Read nbytes (bandwidth probe); returns a checksum.");
  m.def(
      "memory_fill",
      [](uintptr_t p, int64_t nbytes, int value, int threads) {
        py::gil_scoped_release release;
        memory_fill(reinterpret_cast<void*>(p), nbytes, value, threads);
      },
      py::arg("ptr"), py::arg("nbytes"), py::arg("value"), py::arg("threads"), "Fill nbytes (bandwidth probe).");
}
