// matmul: quantized matvec for few rows; for many, the int8 GEMM where the active SIMD level has
// one for the type, else dequantized tiles + OpenBLAS sgemm. matmul_many: several matrices on
// one input, quantized once, in one fork-join.
#include "attnrag/kernels/gemm.hpp"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>

#include "attnrag/kernels/cpu.hpp"

namespace attnrag::kernels {
namespace {

// Weight rows dequantized per sgemm call: bounded so a tile (rows x n_cols f32) stays ~1 MiB,
// about the L2 of the target machine.
int64_t tile_rows(int64_t n_cols) {
    int64_t rows = (int64_t{1} << 18) / std::max<int64_t>(n_cols, 1);
    return std::clamp<int64_t>(rows / 16 * 16, 16, 4096);
}

// Float weights, few rows: a float matvec per token, rows split over the pool.
void matmul_vec_float(ThreadPool& pool, const WeightView& w, const float* x, int64_t m, int64_t ldx,
                      float* y, int64_t ldy) {
    const MatVecFn mv = cpu_kernels().matvec[kernel_type_index(w.type)];
    // Slices of 16 rows keep each thread's writes on separate cache lines.
    pool.parallel_for(w.n_rows, 16, [&](int64_t r0, int64_t r1) {
        const auto* wp =
            static_cast<const uint8_t*>(w.data) + static_cast<size_t>(r0) * w.row_bytes;
        for (int64_t i = 0; i < m; ++i)
            mv(w.n_cols, r1 - r0, wp, w.row_bytes, x + i * ldx, y + i * ldy + r0);
    });
}

// Rows [r0, r1) of thread idx of nt: contiguous slices in multiples of 16 rows (the int8 GEMM's
// panels; also keeps the threads' writes on separate cache lines).
void row_slice(int64_t n_rows, int idx, int nt, int64_t& r0, int64_t& r1) {
    const int64_t units = (n_rows + 15) / 16;
    r0 = std::min(units * idx / nt * 16, n_rows);
    r1 = std::min(units * (idx + 1) / nt * 16, n_rows);
}

// True where `k` has its own int8 GEMM for the type; the scalar table's entry is a reference
// matvec per token, slower than dequantize + sgemm.
bool has_simd_gemm_q8(const CpuKernels& k, int slot) {
    const GemmQ8Fn fn = k.gemm_q8[slot];
    return fn != nullptr && fn != cpu_kernels(SimdLevel::Scalar).gemm_q8[slot];
}

void matmul_gemm(ThreadPool& pool, GemmScratch& scratch, const WeightView& w, const float* x,
                 int64_t m, int64_t ldx, float* y, int64_t ldy) {
    blas_single_threaded();
    const CpuKernels& k = cpu_kernels();
    DequantFn dq = k.dequant[kernel_type_index(w.type)];
    const int64_t tr = tile_rows(w.n_cols);
    scratch.tiles.resize(static_cast<size_t>(pool.n_threads()));
    pool.run([&](int idx, int nt) {
        int64_t r0 = 0, r1 = 0;
        row_slice(w.n_rows, idx, nt, r0, r1);
        std::vector<float>& tile = scratch.tiles[static_cast<size_t>(idx)];
        for (int64_t t0 = r0; t0 < r1; t0 += tr) {
            int64_t n = std::min(tr, r1 - t0);
            if (w.type == DType::F32) {
                const auto* src = reinterpret_cast<const float*>(
                    static_cast<const uint8_t*>(w.data) + static_cast<size_t>(t0) * w.row_bytes);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m),
                            static_cast<int>(n), static_cast<int>(w.n_cols), 1.0f, x,
                            static_cast<int>(ldx), src, static_cast<int>(w.row_bytes / 4), 0.0f,
                            y + t0, static_cast<int>(ldy));
                continue;
            }
            tile.resize(static_cast<size_t>(n * w.n_cols));
            for (int64_t r = 0; r < n; ++r) {
                dq(static_cast<const uint8_t*>(w.data) + static_cast<size_t>(t0 + r) * w.row_bytes,
                   tile.data() + r * w.n_cols, w.n_cols);
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m),
                        static_cast<int>(n), static_cast<int>(w.n_cols), 1.0f, x,
                        static_cast<int>(ldx), tile.data(), static_cast<int>(w.n_cols), 0.0f,
                        y + t0, static_cast<int>(ldy));
        }
    });
}

// Quantizes rows [0, m) of x (stride ldx, n_cols each) to BlockQ8A in scratch.x_q8, over the
// pool when there are enough rows to share.
BlockQ8A* quantize_rows(ThreadPool& pool, GemmScratch& scratch, const float* x, int64_t m,
                        int64_t ldx, int64_t n_cols) {
    const CpuKernels& k = cpu_kernels();
    const int64_t n_blocks = n_cols / kQK;
    scratch.x_q8.resize(static_cast<size_t>(n_blocks * m));
    BlockQ8A* xq = scratch.x_q8.data();
    if (m < kGemmMinRows) {
        for (int64_t i = 0; i < m; ++i) k.quantize_q8a(x + i * ldx, xq + i * n_blocks, n_cols);
    } else {
        pool.parallel_for(m, 1, [&](int64_t i0, int64_t i1) {
            for (int64_t i = i0; i < i1; ++i)
                k.quantize_q8a(x + i * ldx, xq + i * n_blocks, n_cols);
        });
    }
    return xq;
}

// matmul_many's shared path: rows of all targets in one fork-join. Decode (m < kGemmMinRows):
// the targets' rows, in 16-row units, are laid end to end and cut into one contiguous share per
// thread (matvecs are memory-bound, so equal bytes make equal time). Prefill: each thread takes
// its slice of every target's rows (the GEMM's per-thread packing wants whole panels).
void matmul_many_q8(ThreadPool& pool, GemmScratch& scratch, std::span<const MatmulTarget> targets,
                    const float* x, int64_t m, int64_t ldx) {
    const CpuKernels& k = cpu_kernels();
    const int64_t n_cols = targets[0].w->n_cols;
    const int64_t n_blocks = n_cols / kQK;
    const BlockQ8A* xq = quantize_rows(pool, scratch, x, m, ldx, n_cols);
    if (m >= kGemmMinRows) {
        pool.run([&](int idx, int nt) {
            for (const MatmulTarget& t : targets) {
                int64_t r0 = 0, r1 = 0;
                row_slice(t.w->n_rows, idx, nt, r0, r1);
                if (r0 >= r1) continue;
                k.gemm_q8[kernel_type_index(t.w->type)](
                    n_cols, r1 - r0,
                    static_cast<const uint8_t*>(t.w->data) +
                        static_cast<size_t>(r0) * t.w->row_bytes,
                    t.w->row_bytes, m, xq, n_blocks, t.y + r0, t.ldy);
            }
        });
        return;
    }
    int64_t n_units = 0;
    for (const MatmulTarget& t : targets) n_units += (t.w->n_rows + 15) / 16;
    pool.run([&](int idx, int nt) {
        const int64_t u0 = n_units * idx / nt, u1 = n_units * (idx + 1) / nt;
        int64_t base = 0;  // first unit of the current target
        for (const MatmulTarget& t : targets) {
            const int64_t units = (t.w->n_rows + 15) / 16;
            const int64_t a = std::max(u0, base) - base, b = std::min(u1, base + units) - base;
            base += units;
            if (a >= b) continue;
            const int64_t r0 = a * 16, r1 = std::min(b * 16, t.w->n_rows);
            const MatVecFn mv = k.matvec[kernel_type_index(t.w->type)];
            const auto* wp =
                static_cast<const uint8_t*>(t.w->data) + static_cast<size_t>(r0) * t.w->row_bytes;
            for (int64_t i = 0; i < m; ++i)
                mv(n_cols, r1 - r0, wp, t.w->row_bytes, xq + i * n_blocks, t.y + i * t.ldy + r0);
        }
    });
}

}  // namespace

void matmul_many(ThreadPool& pool, GemmScratch& scratch, std::span<const MatmulTarget> targets,
                 const float* x, int64_t m, int64_t ldx) {
    if (m <= 0 || targets.empty()) return;
    const CpuKernels& k = cpu_kernels();
    bool shared = true;
    for (const MatmulTarget& t : targets) {
        const int slot = kernel_type_index(t.w->type);
        shared = shared && type_traits(t.w->type)->quantized &&
                 t.w->n_cols == targets[0].w->n_cols && t.w->n_rows > 0 &&
                 (m < kGemmMinRows || has_simd_gemm_q8(k, slot));
    }
    if (!shared) {
        for (const MatmulTarget& t : targets) matmul(pool, scratch, *t.w, x, m, ldx, t.y, t.ldy);
        return;
    }
    matmul_many_q8(pool, scratch, targets, x, m, ldx);
}

void blas_single_threaded() {
    static std::once_flag once;
    std::call_once(once, [] { openblas_set_num_threads(1); });
}

void matmul(ThreadPool& pool, GemmScratch& scratch, const WeightView& w, const float* x, int64_t m,
            int64_t ldx, float* y, int64_t ldy) {
    if (m <= 0 || w.n_rows <= 0) return;
    if (type_traits(w.type)->quantized &&
        (m < kGemmMinRows || has_simd_gemm_q8(cpu_kernels(), kernel_type_index(w.type)))) {
        const MatmulTarget t{&w, y, ldy};
        matmul_many_q8(pool, scratch, std::span<const MatmulTarget>(&t, 1), x, m, ldx);
    } else if (m < kGemmMinRows) {
        matmul_vec_float(pool, w, x, m, ldx, y, ldy);
    } else {
        matmul_gemm(pool, scratch, w, x, m, ldx, y, ldy);
    }
}

double measure_sgemm_gflops(ThreadPool& pool, int64_t n, int reps) {
    blas_single_threaded();
    std::vector<float> a(static_cast<size_t>(n * n), 0.5f), b(static_cast<size_t>(n * n), 0.25f),
        c(static_cast<size_t>(n * n));
    double best = 1e30;
    for (int r = 0; r < reps; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        pool.parallel_for(n, 64, [&](int64_t c0, int64_t c1) {
            // Each thread computes a block of columns: C[:, c0:c1] = A · B[:, c0:c1].
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(n),
                        static_cast<int>(c1 - c0), static_cast<int>(n), 1.0f, a.data(),
                        static_cast<int>(n), b.data() + c0, static_cast<int>(n), 0.0f,
                        c.data() + c0, static_cast<int>(n));
        });
        best = std::min(
            best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n) / best /
           1e9;
}

double measure_memcpy_gbs(ThreadPool& pool, size_t bytes, int reps) {
    int nt = pool.n_threads();
    std::vector<std::vector<char>> src(static_cast<size_t>(nt)), dst(static_cast<size_t>(nt));
    pool.run([&](int idx, int) {
        src[static_cast<size_t>(idx)].assign(bytes, 1);
        dst[static_cast<size_t>(idx)].assign(bytes, 0);
    });
    double best = 1e30;
    for (int r = 0; r < reps; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        pool.run([&](int idx, int) {
            std::memcpy(dst[static_cast<size_t>(idx)].data(), src[static_cast<size_t>(idx)].data(),
                        bytes);
        });
        best = std::min(
            best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return 2.0 * static_cast<double>(bytes) * nt / best / 1e9;
}

double measure_read_gbs(ThreadPool& pool, size_t bytes, int reps) {
    int nt = pool.n_threads();
    const size_t n = bytes / sizeof(uint64_t);
    std::vector<std::vector<uint64_t>> buf(static_cast<size_t>(nt));
    pool.run([&](int idx, int) {
        buf[static_cast<size_t>(idx)].assign(n, static_cast<uint64_t>(idx) + 1);
    });
    std::vector<uint64_t> sink(static_cast<size_t>(nt) * 8);
    double best = 1e30;
    for (int r = 0; r < reps; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        pool.run([&](int idx, int) {
            // Eight independent accumulators keep enough loads in flight to saturate memory.
            const uint64_t* p = buf[static_cast<size_t>(idx)].data();
            uint64_t a[8] = {};
            for (size_t i = 0; i + 8 <= n; i += 8) {
                for (int j = 0; j < 8; ++j) a[j] ^= p[i + static_cast<size_t>(j)];
            }
            for (int j = 0; j < 8; ++j)
                sink[static_cast<size_t>(idx) * 8 + static_cast<size_t>(j)] = a[j];
        });
        best = std::min(
            best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    volatile uint64_t keep = sink[0];
    (void)keep;
    return static_cast<double>(bytes) * nt / best / 1e9;
}

}  // namespace attnrag::kernels
