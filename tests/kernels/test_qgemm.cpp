// Quantized GEMM (gemm_q8) at every available SIMD level against the reference GEMM and the
// per-token matvec: odd shapes, padded strides, guard pages; and matmul's int8 path end to end.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "attnrag/kernels/cpu.hpp"
#include "attnrag/kernels/gemm.hpp"
#include "attnrag/kernels/thread_pool.hpp"
#include "attnrag/kernels/types.hpp"
#include "guarded_buffer.hpp"
#include "random_k_quant.hpp"

using namespace attnrag::kernels;

namespace {

constexpr DType kGemmTypes[] = {DType::Q4_0, DType::Q4_1, DType::Q8_0,
                                DType::Q4_K, DType::Q5_K, DType::Q6_K};

bool is_k_quant(DType t) {
    return t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K;
}

// Column counts to test: odd numbers of blocks, the models' widths (SmolLM2 576, Qwen2.5 1536).
std::vector<int64_t> cols_for(DType t) {
    if (is_k_quant(t)) return {256, 256 * 3, 1536};
    return {32, 32 * 7, 576, 1536};
}

// A K-quant row: random bits everywhere, finite positive f16 super-block scales.
void random_k_row(DType t, int64_t n, uint8_t* out, std::mt19937& rng) {
    attnrag::test::random_k_quant_row(t, n, out, rng, 0.001f, 0.05f);
}

// Q4_K/Q5_K: dmin * m[j] of the eight 32-element sub-blocks of a super-block (the 6-bit mins as
// ggml packs them).
void k4_mins(const uint8_t* blk, double mins[8]) {
    uint16_t h;
    std::memcpy(&h, blk + 2, 2);
    const double dmin = f16_to_f32(h);
    const uint8_t* q = blk + 4;
    for (int j = 0; j < 8; ++j) {
        const int m = j < 4 ? q[j + 4] & 63 : (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        mins[j] = dmin * m;
    }
}

std::vector<SimdLevel> available_levels() {
    std::vector<SimdLevel> out;
    for (int l = 0; l <= static_cast<int>(detected_simd_level()); ++l)
        out.push_back(static_cast<SimdLevel>(l));
    return out;
}

const CpuKernels& scalar() {
    return cpu_kernels(SimdLevel::Scalar);
}

std::string name_of(SimdLevel l, DType t) {
    std::ostringstream s;
    s << simd_level_name(l) << "/" << type_traits(t)->name;
    return s.str();
}

using attnrag::test::GuardedBuffer;

std::vector<float> random_floats(int64_t n, std::mt19937& rng, float scale = 1.0f) {
    std::normal_distribution<float> nd(0.0f, scale);
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& f : v) f = nd(rng);
    return v;
}

// Test-side quantizers (simple, not ggml's search, just valid blocks), as in test_kernels.cpp.
void quantize_row(DType t, const float* x, int64_t n, uint8_t* out) {
    for (int64_t b = 0; b < n / 32; ++b) {
        const float* xb = x + 32 * b;
        if (t == DType::Q4_0) {
            BlockQ4_0 blk{};
            float mx = 0.0f;
            for (int i = 0; i < 32; ++i)
                if (std::fabs(xb[i]) > std::fabs(mx)) mx = xb[i];
            const float d = mx / -8.0f;
            const float id = d != 0.0f ? 1.0f / d : 0.0f;
            for (int i = 0; i < 16; ++i) {
                const int q0 = std::clamp(static_cast<int>(std::lround(xb[i] * id)) + 8, 0, 15);
                const int q1 =
                    std::clamp(static_cast<int>(std::lround(xb[i + 16] * id)) + 8, 0, 15);
                blk.qs[i] = static_cast<uint8_t>(q0 | (q1 << 4));
            }
            blk.d = f32_to_f16(d);
            std::memcpy(out + b * sizeof blk, &blk, sizeof blk);
        } else if (t == DType::Q4_1) {
            BlockQ4_1 blk{};
            const float lo = *std::min_element(xb, xb + 32), hi = *std::max_element(xb, xb + 32);
            const float d = (hi - lo) / 15.0f;
            const float id = d != 0.0f ? 1.0f / d : 0.0f;
            for (int i = 0; i < 16; ++i) {
                const int q0 = std::clamp(static_cast<int>(std::lround((xb[i] - lo) * id)), 0, 15);
                const int q1 =
                    std::clamp(static_cast<int>(std::lround((xb[i + 16] - lo) * id)), 0, 15);
                blk.qs[i] = static_cast<uint8_t>(q0 | (q1 << 4));
            }
            blk.d = f32_to_f16(d);
            blk.m = f32_to_f16(lo);
            std::memcpy(out + b * sizeof blk, &blk, sizeof blk);
        } else {
            BlockQ8_0 blk{};
            float amax = 0.0f;
            for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(xb[i]));
            const float d = amax / 127.0f;
            const float id = d != 0.0f ? 1.0f / d : 0.0f;
            for (int i = 0; i < 32; ++i) blk.qs[i] = static_cast<int8_t>(std::lround(xb[i] * id));
            // The extremes: -128 is valid in the format (never made by ggml), 127 the largest.
            if (b % 5 == 3) blk.qs[b % 32] = -128;
            if (b % 7 == 2) blk.qs[(b + 5) % 32] = 127;
            blk.d = f32_to_f16(d);
            std::memcpy(out + b * sizeof blk, &blk, sizeof blk);
        }
    }
}

// n_rows rows of `t`, row_bytes + pad apart, the padding filled with junk. The buffer ends where
// the last row's data ends (no trailing padding), right at a guard page.
struct GuardedMatrix {
    GuardedBuffer buf;
    size_t stride;
    GuardedMatrix(DType t, int64_t n_rows, int64_t n_cols, size_t pad, std::mt19937& rng)
        : buf(row_bytes(t, n_cols) +
              (row_bytes(t, n_cols) + pad) * static_cast<size_t>(n_rows - 1)),
          stride(row_bytes(t, n_cols) + pad) {
        const size_t total = row_bytes(t, n_cols) + stride * static_cast<size_t>(n_rows - 1);
        std::memset(buf.data(), 0xcd, total);
        for (int64_t r = 0; r < n_rows; ++r) {
            std::vector<float> w = random_floats(n_cols, rng);
            if (r % 11 == 5) std::fill(w.begin(), w.begin() + 32, 0.0f);  // a zero block
            uint8_t* row = buf.data() + stride * static_cast<size_t>(r);
            if (is_k_quant(t)) {
                random_k_row(t, n_cols, row, rng);
            } else {
                quantize_row(t, w.data(), n_cols, row);
            }
        }
    }
    const uint8_t* data() { return buf.data(); }
};

// m activation rows of n_cols/32 blocks, x_row_blocks apart, ending at a guard page.
struct GuardedActivations {
    GuardedBuffer buf;
    int64_t row_blocks;
    GuardedActivations(int64_t m, int64_t n_cols, int64_t row_blocks_, std::mt19937& rng)
        : buf(static_cast<size_t>((m - 1) * row_blocks_ + n_cols / 32) * sizeof(BlockQ8A)),
          row_blocks(row_blocks_) {
        for (int64_t i = 0; i < m; ++i) {
            std::vector<float> x = random_floats(n_cols, rng, i % 3 == 1 ? 30.0f : 1.0f);
            if (i % 4 == 2) std::fill(x.begin(), x.begin() + 32, 0.0f);  // d = 0
            if (i % 5 == 3) x[static_cast<size_t>(n_cols - 1)] = 1e4f;   // a block of 0 and +-127
            scalar().quantize_q8a(x.data(), rows() + i * row_blocks, n_cols);
        }
    }
    BlockQ8A* rows() { return reinterpret_cast<BlockQ8A*>(buf.data()); }
};

// mag[i][r] = sum_c |w[r][c] * x[i][c]| with x the dequantized activation: the scale of the
// float rounding a result may carry.
// With `split_terms`, each block's terms count apart: |d_w d_x| (sum |q_w q_x| + |c s_x|) with
// c = 8 (Q4_0) or 128 (Q8_0's unsigned offset), and |m_w d_x s_x| for Q4_1. A kernel that sums
// those in float rather than int32 (the matvecs' Q4_0/Q8_0 correction lanes, every Q4_1 body,
// the reference's too) rounds relative to these, which exceed mag when the terms cancel (an
// outlier activation). Q4_K/Q5_K split like Q4_1: |w + dmin m| |x| per element plus
// |dmin m d_x s_x| per block. Q6_K: see below.
std::vector<double> magnitudes(DType t, const uint8_t* w, size_t stride, int64_t n_rows,
                               int64_t n_cols, const BlockQ8A* x, int64_t x_row_blocks, int64_t m,
                               bool split_terms = false) {
    // The K-quants sum a term per super-block: term(row, dequantized row, super-block, the
    // activation row's blocks).
    auto per_super_block = [&](auto term) {
        std::vector<float> wf(static_cast<size_t>(n_cols));
        std::vector<double> mag(static_cast<size_t>(m * n_rows));
        for (int64_t r = 0; r < n_rows; ++r) {
            const uint8_t* row = w + stride * static_cast<size_t>(r);
            scalar().dequant[kernel_type_index(t)](row, wf.data(), n_cols);
            for (int64_t i = 0; i < m; ++i) {
                double s = 0;
                for (int64_t sb = 0; sb < n_cols / 256; ++sb)
                    s += term(row, wf.data() + sb * 256, sb, x + i * x_row_blocks + sb * 8);
                mag[static_cast<size_t>(i * n_rows + r)] = s;
            }
        }
        return mag;
    };
    if (split_terms && (t == DType::Q4_K || t == DType::Q5_K)) {
        const size_t bb = type_traits(t)->block_bytes;
        return per_super_block(
            [&](const uint8_t* row, const float* wf, int64_t sb, const BlockQ8A* xs) {
                double mins[8];
                k4_mins(row + static_cast<size_t>(sb) * bb, mins);
                double s = 0;
                for (int j = 0; j < 8; ++j) {
                    for (int e = 0; e < 32; ++e) {
                        s += std::fabs(wf[32 * j + e] + mins[j]) *
                             std::fabs(double{xs[j].d} * xs[j].qs[e]);
                    }
                    s += std::fabs(mins[j] * xs[j].d * xs[j].s);
                }
                return s;
            });
    }
    if (split_terms && t == DType::Q6_K) {
        // Bodies that add the -32 bias as a lane of its own (the matvec) round relative to
        // |d sc d_x| (sum |q_w q_x| + 32 |s|) per 16-element half, q_w in [0, 64); bounded here
        // by sum |w x| + 64 |d sc d_x| sum |q_x|.
        return per_super_block(
            [&](const uint8_t* row, const float* wf, int64_t sb, const BlockQ8A* xs) {
                const uint8_t* blk = row + static_cast<size_t>(sb) * sizeof(BlockQ6_K);
                uint16_t h;
                std::memcpy(&h, blk + 208, 2);
                const double d = f16_to_f32(h);
                double s = 0;
                for (int k = 0; k < 16; ++k) {
                    const BlockQ8A& xb = xs[k / 2];
                    const double sc = static_cast<int8_t>(blk[192 + k]);
                    double sum_qx = 0;
                    for (int e = 0; e < 16; ++e) {
                        const int q = xb.qs[16 * (k % 2) + e];
                        s += std::fabs(wf[16 * k + e] * double{xb.d} * q);
                        sum_qx += std::abs(q);
                    }
                    s += 64.0 * std::fabs(d * sc * xb.d) * sum_qx;
                }
                return s;
            });
    }
    if (split_terms) {
        const int64_t nb = n_cols / 32;
        std::vector<double> mag(static_cast<size_t>(m * n_rows));
        for (int64_t r = 0; r < n_rows; ++r) {
            const uint8_t* row = w + stride * static_cast<size_t>(r);
            for (int64_t i = 0; i < m; ++i) {
                double s = 0;
                for (int64_t b = 0; b < nb; ++b) {
                    const BlockQ8A& xb = x[i * x_row_blocks + b];
                    int q[32];
                    double dw = 0, corr = 0;
                    if (t == DType::Q8_0) {
                        BlockQ8_0 blk;
                        std::memcpy(&blk, row + b * sizeof blk, sizeof blk);
                        for (int e = 0; e < 32; ++e) q[e] = blk.qs[e];
                        dw = f16_to_f32(blk.d);
                        corr = 128.0 * std::fabs(dw * xb.d * xb.s);
                    } else {
                        const size_t bytes =
                            t == DType::Q4_0 ? sizeof(BlockQ4_0) : sizeof(BlockQ4_1);
                        const uint8_t* blk = row + static_cast<size_t>(b) * bytes;
                        uint16_t h[2];
                        std::memcpy(h, blk, 4);
                        const uint8_t* qs = blk + (t == DType::Q4_0 ? 2 : 4);
                        for (int e = 0; e < 16; ++e) {
                            q[e] = qs[e] & 15;
                            q[e + 16] = qs[e] >> 4;
                        }
                        dw = f16_to_f32(h[0]);
                        const double mw = f16_to_f32(h[1]);
                        corr = std::fabs((t == DType::Q4_0 ? 8.0 * dw : mw) * xb.d * xb.s);
                    }
                    double qq = 0;
                    for (int e = 0; e < 32; ++e) qq += std::abs(q[e] * xb.qs[e]);
                    s += std::fabs(dw * xb.d) * qq + corr;
                }
                mag[static_cast<size_t>(i * n_rows + r)] = s;
            }
        }
        return mag;
    }
    std::vector<float> wf(static_cast<size_t>(n_rows * n_cols));
    for (int64_t r = 0; r < n_rows; ++r) {
        scalar().dequant[kernel_type_index(t)](w + stride * static_cast<size_t>(r),
                                               wf.data() + r * n_cols, n_cols);
    }
    std::vector<double> mag(static_cast<size_t>(m * n_rows));
    std::vector<double> xf(static_cast<size_t>(n_cols));
    for (int64_t i = 0; i < m; ++i) {
        for (int64_t c = 0; c < n_cols; ++c) {
            const BlockQ8A& b = x[i * x_row_blocks + c / 32];
            xf[static_cast<size_t>(c)] = std::fabs(static_cast<double>(b.d) * b.qs[c % 32]);
        }
        for (int64_t r = 0; r < n_rows; ++r) {
            double s = 0;
            for (int64_t c = 0; c < n_cols; ++c)
                s +=
                    std::fabs(wf[static_cast<size_t>(r * n_cols + c)]) * xf[static_cast<size_t>(c)];
            mag[static_cast<size_t>(i * n_rows + r)] = s;
        }
    }
    return mag;
}

// bound[i][r] = sum_c |w[r][c]| * d_x / 2: how far a float product can be from the one with the
// 8-bit activation (rounding moves each x by at most half a step).
std::vector<double> quantization_bounds(DType t, const uint8_t* w, size_t stride, int64_t n_rows,
                                        int64_t n_cols, const BlockQ8A* x, int64_t m) {
    std::vector<float> wf(static_cast<size_t>(n_cols));
    std::vector<double> bound(static_cast<size_t>(m * n_rows));
    for (int64_t r = 0; r < n_rows; ++r) {
        scalar().dequant[kernel_type_index(t)](w + stride * static_cast<size_t>(r), wf.data(),
                                               n_cols);
        for (int64_t i = 0; i < m; ++i) {
            double s = 0;
            for (int64_t c = 0; c < n_cols; ++c) {
                s += std::fabs(static_cast<double>(wf[static_cast<size_t>(c)])) * 0.5 *
                     x[i * (n_cols / 32) + c / 32].d;
            }
            bound[static_cast<size_t>(i * n_rows + r)] = s;
        }
    }
    return bound;
}

}  // namespace

TEST_CASE("gemm_q8 table: quantized types only, SIMD bodies where expected") {
    for (SimdLevel l : available_levels()) {
        INFO(simd_level_name(l));
        const CpuKernels& k = cpu_kernels(l);
        for (DType t : {DType::F32, DType::F16, DType::BF16})
            CHECK(k.gemm_q8[kernel_type_index(t)] == nullptr);
        for (DType t :
             {DType::Q4_0, DType::Q4_1, DType::Q8_0, DType::Q4_K, DType::Q5_K, DType::Q6_K})
            CHECK(k.gemm_q8[kernel_type_index(t)] != nullptr);
    }
    if (detected_simd_level() == SimdLevel::Avx512) {
        for (DType t : kGemmTypes) {
            CHECK(cpu_kernels(SimdLevel::Avx512).gemm_q8[kernel_type_index(t)] !=
                  scalar().gemm_q8[kernel_type_index(t)]);
        }
    }
}

TEST_CASE("gemm_q8: every level against the reference GEMM and per-token matvec") {
    std::mt19937 rng(21);
    for (SimdLevel l : available_levels()) {
        const CpuKernels& k = cpu_kernels(l);
        for (DType t : kGemmTypes) {
            const int slot = kernel_type_index(t);
            for (int64_t n_cols : cols_for(t)) {
                const int64_t nb = n_cols / 32;
                for (int64_t n_rows : {1, 3, 7, 37, 100}) {
                    for (int64_t m : {1, 5, 8, 13, 64}) {
                        // Odd cases get padded strides: weight rows 24 bytes apart beyond their
                        // data, activation rows one block, output rows three floats.
                        const bool pad = (n_rows + m) % 2 == 0;
                        INFO(name_of(l, t) << " cols " << n_cols << " rows " << n_rows << " m " << m
                                           << (pad ? " padded" : ""));
                        GuardedMatrix w(t, n_rows, n_cols, pad ? 24 : 0, rng);
                        GuardedActivations x(m, n_cols, pad ? nb + 1 : nb, rng);
                        const int64_t ldy = n_rows + (pad ? 3 : 0);
                        const size_t y_size = static_cast<size_t>(m * ldy);
                        std::vector<float> want(y_size, -7.0f), got(y_size + 16, 9.0f),
                            per_token(y_size, -5.0f);
                        scalar().gemm_q8[slot](n_cols, n_rows, w.data(), w.stride, m, x.rows(),
                                               x.row_blocks, want.data(), ldy);
                        k.gemm_q8[slot](n_cols, n_rows, w.data(), w.stride, m, x.rows(),
                                        x.row_blocks, got.data(), ldy);
                        for (int64_t i = 0; i < m; ++i) {
                            k.matvec[slot](n_cols, n_rows, w.data(), w.stride,
                                           x.rows() + i * x.row_blocks, per_token.data() + i * ldy);
                        }
                        const std::vector<double> mag = magnitudes(
                            t, w.data(), w.stride, n_rows, n_cols, x.rows(), x.row_blocks, m);
                        const std::vector<double> split = magnitudes(
                            t, w.data(), w.stride, n_rows, n_cols, x.rows(), x.row_blocks, m, true);
                        int bad = 0;
                        for (int64_t i = 0; i < m; ++i) {
                            for (int64_t r = 0; r < ldy; ++r) {
                                const auto at = static_cast<size_t>(i * ldy + r);
                                if (r >= n_rows) {  // the padding of y is left alone
                                    if (got[at] != 9.0f) ++bad;
                                    continue;
                                }
                                // Q4_0/Q8_0: integer math per block, so only the float
                                // scaling rounds. Q4_1's min term is a float product in every
                                // implementation, the reference's too (see magnitudes()); so are
                                // the AVX2 matvec's Q4_0 offsets.
                                const auto e = static_cast<size_t>(i * n_rows + r);
                                const bool min_term =
                                    t == DType::Q4_1 || t == DType::Q4_K || t == DType::Q5_K;
                                const double tol = 2e-5 * (min_term ? split[e] : mag[e]) + 1e-6;
                                const double tol_mv = 2e-5 * split[e] + 1e-6;
                                if (!(std::fabs(got[at] - want[at]) <= tol) ||
                                    !(std::fabs(got[at] - per_token[at]) <= tol_mv)) {
                                    if (bad++ < 3) {
                                        UNSCOPED_INFO("token " << i << " row " << r << ": "
                                                               << got[at] << " ref " << want[at]
                                                               << " matvec " << per_token[at]
                                                               << " tol " << tol << "/" << tol_mv);
                                    }
                                }
                            }
                        }
                        for (size_t e = y_size; e < got.size(); ++e) {
                            if (got[e] != 9.0f) ++bad;  // nothing written past the last row
                        }
                        REQUIRE(bad == 0);
                    }
                }
            }
        }
    }
}

TEST_CASE("gemm_q8: many panels (several packed chunks, an odd tail)") {
    // 300 rows x 1536 columns: 19 panels of 16 rows, more than one packed chunk.
    std::mt19937 rng(22);
    for (SimdLevel l : available_levels()) {
        const CpuKernels& k = cpu_kernels(l);
        for (DType t : kGemmTypes) {
            INFO(name_of(l, t));
            const int slot = kernel_type_index(t);
            const int64_t n_cols = 1536, n_rows = 300, m = 20;
            GuardedMatrix w(t, n_rows, n_cols, 0, rng);
            GuardedActivations x(m, n_cols, n_cols / 32, rng);
            std::vector<float> want(static_cast<size_t>(m * n_rows)), got(want.size());
            scalar().gemm_q8[slot](n_cols, n_rows, w.data(), w.stride, m, x.rows(), x.row_blocks,
                                   want.data(), n_rows);
            k.gemm_q8[slot](n_cols, n_rows, w.data(), w.stride, m, x.rows(), x.row_blocks,
                            got.data(), n_rows);
            const std::vector<double> mag =
                magnitudes(t, w.data(), w.stride, n_rows, n_cols, x.rows(), x.row_blocks, m,
                           t == DType::Q4_1 || t == DType::Q4_K || t == DType::Q5_K);
            int bad = 0;
            for (size_t e = 0; e < want.size(); ++e) {
                if (!(std::fabs(got[e] - want[e]) <= 2e-5 * mag[e] + 1e-6)) ++bad;
            }
            CHECK(bad == 0);
        }
    }
}

TEST_CASE("matmul: the batched path equals a quantized matvec per token, all thread counts") {
    // For m >= kGemmMinRows a quantized weight multiplies int8 activations (int8 GEMM) or float
    // activations (dequantize + sgemm), depending on the level; either way each row of y is within
    // the activation's quantization error of the exact product and, on the int8 path, equal to
    // decode's matvec up to float rounding.
    std::mt19937 rng(23);
    const SimdLevel saved = active_simd_level();
    for (SimdLevel l : available_levels()) {
        set_simd_level(l);
        const CpuKernels& k = cpu_kernels(l);
        for (DType t : kGemmTypes) {
            const int slot = kernel_type_index(t);
            const bool int8 = k.gemm_q8[slot] != scalar().gemm_q8[slot];
            for (int n_threads : {1, 2, 3}) {
                for (int64_t m : {kGemmMinRows, int64_t{13}, int64_t{70}}) {
                    const int64_t n_cols = is_k_quant(t) ? 768 : 576, n_rows = 200;
                    INFO(name_of(l, t) << " threads " << n_threads << " m " << m);
                    ThreadPool pool(n_threads);
                    GemmScratch scratch;
                    GuardedMatrix w(t, n_rows, n_cols, 0, rng);
                    const WeightView wv{w.data(), t, n_cols, n_rows, w.stride};
                    const std::vector<float> x = random_floats(m * n_cols, rng);
                    std::vector<float> y(static_cast<size_t>(m * n_rows), 9.0f);
                    matmul(pool, scratch, wv, x.data(), m, n_cols, y.data(), n_rows);
                    std::vector<BlockQ8A> xq(static_cast<size_t>(m * n_cols / 32));
                    for (int64_t i = 0; i < m; ++i)
                        scalar().quantize_q8a(x.data() + i * n_cols, xq.data() + i * n_cols / 32,
                                              n_cols);
                    const std::vector<double> mag = magnitudes(
                        t, w.data(), w.stride, n_rows, n_cols, xq.data(), n_cols / 32, m, true);
                    const std::vector<double> qerr =
                        quantization_bounds(t, w.data(), w.stride, n_rows, n_cols, xq.data(), m);
                    std::vector<float> row(static_cast<size_t>(n_rows));
                    int bad = 0;
                    for (int64_t i = 0; i < m; ++i) {
                        scalar().matvec[slot](n_cols, n_rows, w.data(), w.stride,
                                              xq.data() + i * n_cols / 32, row.data());
                        for (int64_t r = 0; r < n_rows; ++r) {
                            const double got = y[static_cast<size_t>(i * n_rows + r)];
                            const double want = row[static_cast<size_t>(r)];
                            const auto at = static_cast<size_t>(i * n_rows + r);
                            // int8 path: float rounding only; sgemm path: plus the activation's
                            // 8-bit rounding.
                            const double tol =
                                2e-5 * mag[at] + 1e-6 + (int8 ? 0.0 : 1.0001 * qerr[at]);
                            if (!(std::fabs(got - want) <= tol)) ++bad;
                        }
                    }
                    CHECK(bad == 0);
                }
            }
        }
    }
    set_simd_level(saved);
}

TEST_CASE("matmul_many: each target equals its own matmul, bit for bit") {
    // q/k/v-like targets of different types and heights on one input; decode (m < 8) and
    // prefill sizes; thread counts that split the targets' rows unevenly. A float target makes
    // the call fall back to one matmul per target.
    std::mt19937 rng(24);
    const int64_t n_cols = 512;
    struct Spec {
        DType type;
        int64_t n_rows;
    };
    const std::vector<std::vector<Spec>> groups = {
        {{DType::Q4_K, 200}, {DType::Q4_K, 40}, {DType::Q6_K, 40}},
        {{DType::Q4_1, 96}, {DType::Q8_0, 33}},
        {{DType::Q4_K, 64}, {DType::F32, 17}},
    };
    for (const auto& group : groups) {
        std::vector<std::unique_ptr<GuardedMatrix>> mats;
        std::vector<WeightView> views;
        for (const Spec& sp : group) {
            mats.push_back(std::make_unique<GuardedMatrix>(sp.type, sp.n_rows, n_cols, 0, rng));
            GuardedMatrix& g = *mats.back();
            if (sp.type == DType::F32) {
                // GuardedMatrix quantizes; an F32 matrix is written here directly.
                const std::vector<float> f = random_floats(sp.n_rows * n_cols, rng, 0.1f);
                std::memcpy(g.buf.data(), f.data(), f.size() * sizeof(float));
            }
            views.push_back({g.data(), sp.type, n_cols, sp.n_rows, g.stride});
        }
        for (int n_threads : {1, 2, 3}) {
            for (int64_t m : {int64_t{1}, int64_t{3}, kGemmMinRows, int64_t{37}}) {
                INFO("group of " << group.size() << ", first " << type_traits(group[0].type)->name
                                 << ", threads " << n_threads << ", m " << m);
                ThreadPool pool(n_threads);
                GemmScratch scratch;
                const std::vector<float> x = random_floats(m * n_cols, rng);
                std::vector<std::vector<float>> got(group.size()), want(group.size());
                std::vector<MatmulTarget> targets;
                for (size_t j = 0; j < group.size(); ++j) {
                    const int64_t ldy = group[j].n_rows + 3;
                    got[j].assign(static_cast<size_t>(m * ldy), 9.0f);
                    want[j].assign(static_cast<size_t>(m * ldy), 9.0f);
                    targets.push_back({&views[j], got[j].data(), ldy});
                    matmul(pool, scratch, views[j], x.data(), m, n_cols, want[j].data(), ldy);
                }
                matmul_many(pool, scratch, targets, x.data(), m, n_cols);
                for (size_t j = 0; j < group.size(); ++j) CHECK(got[j] == want[j]);
            }
        }
    }
}
