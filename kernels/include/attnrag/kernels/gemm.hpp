// Matrix products of activations with (quantized) weight matrices, threaded over a ThreadPool.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "attnrag/kernels/thread_pool.hpp"
#include "attnrag/kernels/types.hpp"

namespace attnrag::kernels {

// A weight matrix: n_rows rows of n_cols elements of `type`, row_bytes apart (GGUF layout:
// ne0 = n_cols is contiguous, ne1 = n_rows).
struct WeightView {
    const void* data = nullptr;
    DType type = DType::F32;
    int64_t n_cols = 0;
    int64_t n_rows = 0;
    size_t row_bytes = 0;
};

// Per-thread scratch reused across calls (dequantized weight tiles, quantized activations).
struct GemmScratch {
    std::vector<std::vector<float>> tiles;  // [n_threads], f32 weight tiles
    std::vector<BlockQ8A> x_q8;             // quantized activations [m][n_cols/32]
};

// y[i][r] = sum_c x[i][c] * W[r][c] for i in [0, m), r in [0, W.n_rows).
// x: [m][W.n_cols] f32, row stride ldx; y: [m][ldy] f32 (only the first W.n_rows columns written).
// Small m uses quantized dot products (matvec). Larger m, for a quantized type whose int8 GEMM
// the active SIMD level implements (CpuKernels::gemm_q8: Q4_0, Q4_1, Q8_0 and the K-quants
// with AVX-512 VNNI),
// quantizes x to BlockQ8A as decode does (so results carry the same ~1% activation rounding) and
// multiplies each thread's slice of weight rows with all m rows of x. Other types and levels
// dequantize weight tiles into scratch and call single-threaded OpenBLAS sgemm on each thread's
// slice of rows.
void matmul(ThreadPool& pool, GemmScratch& scratch, const WeightView& w, const float* x, int64_t m,
            int64_t ldx, float* y, int64_t ldy);

// One product of matmul_many: y = x · W^T, y [m][ldy].
struct MatmulTarget {
    const WeightView* w = nullptr;
    float* y = nullptr;
    int64_t ldy = 0;
};

// matmul for several weight matrices that read the same input x [m][n_cols] (q/k/v, gate/up):
// every target's result equals matmul(pool, scratch, *t.w, x, m, ldx, t.y, t.ldy), but where
// all targets take an int8 path (quantized types: matvec for m < kGemmMinRows, the int8 GEMM
// above) x is quantized once for all of them and the pool forks and joins once, not once per
// matrix. The targets must share n_cols; any other mix falls back to one matmul per target.
void matmul_many(ThreadPool& pool, GemmScratch& scratch, std::span<const MatmulTarget> targets,
                 const float* x, int64_t m, int64_t ldx);

// Rows at or above which matmul switches from matvec to a GEMM (int8 or dequantize + sgemm).
inline constexpr int64_t kGemmMinRows = 8;

// Measure this machine's limits, used by `attnrag bench` to put figures in context.
// sgemm: C[n][n] = A·B (f32) split over the pool's threads, best of `reps`; returns GFLOP/s.
double measure_sgemm_gflops(ThreadPool& pool, int64_t n, int reps);
// memcpy of `bytes` per thread, best of `reps`; returns GB/s counting bytes read + written.
double measure_memcpy_gbs(ThreadPool& pool, size_t bytes, int reps);

// Streaming read of `bytes` per thread (decode's access pattern: weights read once), best of
// `reps`; returns GB/s read.
double measure_read_gbs(ThreadPool& pool, size_t bytes, int reps);

// Make OpenBLAS single-threaded (attnrag threads around it); idempotent.
void blas_single_threaded();

}  // namespace attnrag::kernels
