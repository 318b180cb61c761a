// Prefill matrix products on the model's shapes: int8 GEMM (gemm_q8) vs dequantize + sgemm, in
// GFLOP/s-equivalent (2 * m * n_rows * n_cols / s), 1 and 2 threads.
//
// Usage: bench_qgemm [seconds_per_case=0.5] [m=512] [type name, e.g. q4_1]
// "int8": matmul() on its int8 path (activation quantization included), split over the pool as
// in the forward pass. "sgemm": the dequantize + OpenBLAS sgemm path (matmul's fallback),
// reproduced here. Both read the weights cold, as the forward pass does (a layer's matrices are
// read once per call and the model does not fit in L3): each call takes the next of as many
// copies of the matrix as fill 128 MiB.
// "kern hot": gemm_q8 alone on one thread, activations already quantized, weights hot (in
// cache): the compute bound. At a level without an int8 GEMM for the type (ATTNRAG_SIMD=avx2)
// "int8" is matmul's fallback and "kern hot" reads 0.
// Figures are the best call, each call timed alone (the machine may be shared).
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "attnrag/kernels/cpu.hpp"
#include "attnrag/kernels/gemm.hpp"
#include "attnrag/kernels/thread_pool.hpp"
#include "attnrag/kernels/types.hpp"

using namespace attnrag::kernels;

namespace {

double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// Best time of fn() over `budget` seconds (at least 3 calls, after one warm-up call).
template <class F>
double best_seconds(double budget, F&& fn) {
    fn();
    double best = 1e30;
    const double start = now();
    int calls = 0;
    do {
        const double t0 = now();
        fn();
        best = std::min(best, now() - t0);
        ++calls;
    } while (now() - start < budget || calls < 3);
    return best;
}

// Valid random rows: random quant bytes, small positive f16 scales (no denormal slow paths).
std::vector<uint8_t> random_rows(DType type, int64_t n_rows, int64_t n_cols, std::mt19937& rng) {
    const TypeTraits* tt = type_traits(type);
    std::vector<uint8_t> out(row_bytes(type, n_cols) * static_cast<size_t>(n_rows));
    std::uniform_int_distribution<int> byte(0, 255);
    for (auto& b : out) b = static_cast<uint8_t>(byte(rng));
    std::uniform_real_distribution<float> scale(0.001f, 0.01f);
    for (size_t off = 0; off < out.size(); off += tt->block_bytes) {
        const uint16_t d = f32_to_f16(scale(rng));
        // Q6_K keeps its f16 scale at the end of the block; the others at the start.
        std::memcpy(out.data() + off + (type == DType::Q6_K ? 208 : 0), &d, 2);
        if (type == DType::Q4_1 || type == DType::Q4_K || type == DType::Q5_K) {
            const uint16_t mn = f32_to_f16(-8.0f * scale(rng));
            std::memcpy(out.data() + off + 2, &mn, 2);
        }
    }
    return out;
}

// matmul's fallback for m >= kGemmMinRows: per thread, dequantized tiles of its rows + sgemm.
void dequant_sgemm(ThreadPool& pool, std::vector<std::vector<float>>& tiles, const WeightView& w,
                   const float* x, int64_t m, float* y) {
    const DequantFn dq = cpu_kernels().dequant[kernel_type_index(w.type)];
    const int64_t tr = std::clamp<int64_t>((int64_t{1} << 18) / w.n_cols / 16 * 16, 16, 4096);
    tiles.resize(static_cast<size_t>(pool.n_threads()));
    pool.run([&](int idx, int nt) {
        const int64_t units = (w.n_rows + 15) / 16;
        const int64_t r0 = std::min(units * idx / nt * 16, w.n_rows);
        const int64_t r1 = std::min(units * (idx + 1) / nt * 16, w.n_rows);
        std::vector<float>& tile = tiles[static_cast<size_t>(idx)];
        for (int64_t t0 = r0; t0 < r1; t0 += tr) {
            const int64_t n = std::min(tr, r1 - t0);
            tile.resize(static_cast<size_t>(n * w.n_cols));
            for (int64_t r = 0; r < n; ++r) {
                dq(static_cast<const uint8_t*>(w.data) + static_cast<size_t>(t0 + r) * w.row_bytes,
                   tile.data() + r * w.n_cols, w.n_cols);
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m),
                        static_cast<int>(n), static_cast<int>(w.n_cols), 1.0f, x,
                        static_cast<int>(w.n_cols), tile.data(), static_cast<int>(w.n_cols), 0.0f,
                        y + t0, static_cast<int>(w.n_rows));
        }
    });
}

struct Shape {
    int64_t n_cols, n_rows;  // ggml order: rows of n_cols elements
    const char* name;
};

}  // namespace

int main(int argc, char** argv) {
    const double budget = argc > 1 ? std::atof(argv[1]) : 0.5;
    const int64_t m = argc > 2 ? std::atoll(argv[2]) : 512;
    const std::string only_type = argc > 3 ? argv[3] : "";
    // SmolLM2-135M's matrices for the 32-element formats, Qwen2.5-1.5B's for the K-quants.
    const std::vector<Shape> shapes_small = {
        {576, 576, "wq/wo"}, {576, 192, "wk/wv"}, {576, 1536, "gate/up"}, {1536, 576, "down"}};
    const std::vector<Shape> shapes_k = {
        {1536, 1536, "wq/wo"}, {1536, 256, "wk/wv"}, {1536, 8960, "gate/up"}, {8960, 1536, "down"}};
    const DType types[] = {DType::Q4_1, DType::Q4_0, DType::Q8_0,
                           DType::Q4_K, DType::Q5_K, DType::Q6_K};
    blas_single_threaded();
    std::mt19937 rng(42);
    const CpuKernels& k = cpu_kernels();
    std::printf(
        "attnrag bench_qgemm: m = %lld tokens, SIMD level %s; GFLOP/s = 2*m*rows*cols/s "
        "(best call)\n",
        static_cast<long long>(m), std::string(simd_level_name(k.level)).c_str());
    std::printf("%-5s %-8s %-10s %8s | %8s %8s | %8s %8s | %8s\n", "type", "matrix", "cols x rows",
                "MFLOP", "int8 1t", "int8 2t", "sgemm 1t", "sgemm 2t", "kern hot");
    for (DType t : types) {
        const TypeTraits* tt = type_traits(t);
        if (!only_type.empty() && only_type != tt->name) continue;
        const int slot = kernel_type_index(t);
        const bool k_quant = tt->block_elems == kQKK;
        for (const Shape& sh : k_quant ? shapes_k : shapes_small) {
            const std::vector<uint8_t> wdata = random_rows(t, sh.n_rows, sh.n_cols, rng);
            const size_t rb = row_bytes(t, sh.n_cols);
            const size_t n_copies = (size_t{128} << 20) / wdata.size() + 1;
            std::vector<uint8_t> copies(wdata.size() * n_copies);
            for (size_t c = 0; c < n_copies; ++c)
                std::memcpy(copies.data() + c * wdata.size(), wdata.data(), wdata.size());
            size_t next_copy = 0;
            auto cold = [&] {
                const uint8_t* p = copies.data() + next_copy * wdata.size();
                next_copy = (next_copy + 1) % n_copies;
                return WeightView{p, t, sh.n_cols, sh.n_rows, rb};
            };
            std::vector<float> x(static_cast<size_t>(m * sh.n_cols));
            std::normal_distribution<float> nd(0.0f, 1.0f);
            for (auto& v : x) v = nd(rng);
            std::vector<float> y(static_cast<size_t>(m * sh.n_rows));
            const double flop = 2.0 * static_cast<double>(m) * static_cast<double>(sh.n_rows) *
                                static_cast<double>(sh.n_cols);
            double int8[2], sg[2];
            for (int nt = 1; nt <= 2; ++nt) {
                ThreadPool pool(nt);
                GemmScratch scratch;
                std::vector<std::vector<float>> tiles;
                auto run_int8 = [&] {
                    matmul(pool, scratch, cold(), x.data(), m, sh.n_cols, y.data(), sh.n_rows);
                };
                auto run_sgemm = [&] { dequant_sgemm(pool, tiles, cold(), x.data(), m, y.data()); };
                int8[nt - 1] = flop / best_seconds(budget, run_int8) / 1e9;
                sg[nt - 1] = flop / best_seconds(budget, run_sgemm) / 1e9;
            }
            // The kernel alone, one thread, activations quantized beforehand.
            const int64_t nb = sh.n_cols / kQK;
            std::vector<BlockQ8A> xq(static_cast<size_t>(m * nb));
            for (int64_t i = 0; i < m; ++i)
                k.quantize_q8a(x.data() + i * sh.n_cols, xq.data() + i * nb, sh.n_cols);
            auto run_kernel = [&] {
                k.gemm_q8[slot](sh.n_cols, sh.n_rows, wdata.data(), rb, m, xq.data(), nb, y.data(),
                                sh.n_rows);
            };
            // The scalar reference (a matvec per token) is not worth timing.
            const bool simd = k.gemm_q8[slot] != cpu_kernels(SimdLevel::Scalar).gemm_q8[slot];
            const double kern = simd ? flop / best_seconds(budget, run_kernel) / 1e9 : 0.0;
            char dims[32];
            std::snprintf(dims, sizeof dims, "%lldx%lld", static_cast<long long>(sh.n_cols),
                          static_cast<long long>(sh.n_rows));
            std::printf("%-5s %-8s %-10s %8.1f | %8.1f %8.1f | %8.1f %8.1f | %8.1f\n",
                        std::string(tt->name).c_str(), sh.name, dims, flop / 1e6, int8[0], int8[1],
                        sg[0], sg[1], kern);
            std::fflush(stdout);
        }
    }
    return 0;
}
