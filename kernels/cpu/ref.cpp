// Scalar reference of every CPU op: plain loops, written to be obviously right; the test oracle.
#include <cmath>
#include <limits>

#include "kernels_impl.h"

namespace attnrag::kernels::ref {
namespace {

const uint8_t* row_ptr(const void* w, size_t w_row_bytes, int64_t r) {
    return static_cast<const uint8_t*>(w) + static_cast<size_t>(r) * w_row_bytes;
}

// Integer quant values of one block, in element order. These decoders are the single statement
// of each bit layout; dequant and matvec both build on them.

// Q4_0/Q4_1: byte i holds element i (low nibble) and element i + 16 (high nibble). q in [0, 16).
void q4_values(const uint8_t* qs, int q[kQK]) {
    for (int i = 0; i < kQK / 2; ++i) {
        q[i] = qs[i] & 0x0f;
        q[i + kQK / 2] = qs[i] >> 4;
    }
}

// Q4_K: 4 chunks of 64 elements; chunk c uses qs[32c, 32c+32): elements [64c, 64c+32) are the
// low nibbles, [64c+32, 64c+64) the high nibbles. q in [0, 16).
void k_values(const BlockQ4_K& b, int q[kQKK]) {
    for (int c = 0; c < 4; ++c) {
        for (int l = 0; l < 32; ++l) {
            q[64 * c + l] = b.qs[32 * c + l] & 0x0f;
            q[64 * c + 32 + l] = b.qs[32 * c + l] >> 4;
        }
    }
}

// Q5_K: Q4_K's nibbles plus a fifth bit: element e = 32*j + l takes bit j of qh[l]. q in [0, 32).
void k_values(const BlockQ5_K& b, int q[kQKK]) {
    for (int c = 0; c < 4; ++c) {
        for (int l = 0; l < 32; ++l) {
            q[64 * c + l] = b.qs[32 * c + l] & 0x0f;
            q[64 * c + 32 + l] = b.qs[32 * c + l] >> 4;
        }
    }
    for (int j = 0; j < 8; ++j) {
        for (int l = 0; l < 32; ++l) q[32 * j + l] += ((b.qh[l] >> j) & 1) << 4;
    }
}

// Q6_K: two halves of 128 elements; half h uses ql[64h, 64h+64) and qh[32h, 32h+32). Within a
// half, for l < 32: element l    = ql[l]    low nibble  | qh[l] bits 0-1 << 4,
//                   element l+32 = ql[l+32] low nibble  | qh[l] bits 2-3 << 4,
//                   element l+64 = ql[l]    high nibble | qh[l] bits 4-5 << 4,
//                   element l+96 = ql[l+32] high nibble | qh[l] bits 6-7 << 4.
// Returned q is signed, in [-32, 32).
void q6k_values(const BlockQ6_K& b, int q[kQKK]) {
    for (int h = 0; h < 2; ++h) {
        const uint8_t* ql = b.ql + 64 * h;
        const uint8_t* qh = b.qh + 32 * h;
        int* out = q + 128 * h;
        for (int l = 0; l < 32; ++l) {
            out[l] = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
            out[l + 32] = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
            out[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            out[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        }
    }
}

int32_t int_dot(const int* q, const int8_t* x, int n) {
    int32_t s = 0;
    for (int i = 0; i < n; ++i) s += q[i] * x[i];
    return s;
}

}  // namespace

// ---- float matvec -------------------------------------------------------------------------

void matvec_f32(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                float* y) {
    const auto* xf = static_cast<const float*>(x);
    for (int64_t r = 0; r < n_rows; ++r) {
        const auto* wr = reinterpret_cast<const float*>(row_ptr(w, w_row_bytes, r));
        double acc = 0.0;
        for (int64_t i = 0; i < n_cols; ++i) acc += static_cast<double>(wr[i]) * xf[i];
        y[r] = static_cast<float>(acc);
    }
}

void matvec_f16(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                float* y) {
    const auto* xf = static_cast<const float*>(x);
    for (int64_t r = 0; r < n_rows; ++r) {
        const uint8_t* wr = row_ptr(w, w_row_bytes, r);
        double acc = 0.0;
        for (int64_t i = 0; i < n_cols; ++i) {
            acc += static_cast<double>(f16_to_f32(load_u16(wr + 2 * i))) * xf[i];
        }
        y[r] = static_cast<float>(acc);
    }
}

void matvec_bf16(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y) {
    const auto* xf = static_cast<const float*>(x);
    for (int64_t r = 0; r < n_rows; ++r) {
        const uint8_t* wr = row_ptr(w, w_row_bytes, r);
        double acc = 0.0;
        for (int64_t i = 0; i < n_cols; ++i) {
            acc += static_cast<double>(bf16_to_f32(load_u16(wr + 2 * i))) * xf[i];
        }
        y[r] = static_cast<float>(acc);
    }
}

// ---- quantized matvec: integer dot per 32-element block, float scales ----------------------

void matvec_q4_0(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y) {
    const auto* xb = static_cast<const BlockQ8A*>(x);
    const int64_t nb = n_cols / kQK;
    for (int64_t r = 0; r < n_rows; ++r) {
        const auto* wb = reinterpret_cast<const BlockQ4_0*>(row_ptr(w, w_row_bytes, r));
        double acc = 0.0;
        for (int64_t b = 0; b < nb; ++b) {
            int q[kQK];
            q4_values(wb[b].qs, q);
            // sum((q - 8) * x) = sum(q * x) - 8 * sum(x)
            const int32_t isum = int_dot(q, xb[b].qs, kQK) - 8 * xb[b].s;
            acc += static_cast<double>(f16_to_f32(wb[b].d) * xb[b].d) * isum;
        }
        y[r] = static_cast<float>(acc);
    }
}

void matvec_q4_1(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y) {
    const auto* xb = static_cast<const BlockQ8A*>(x);
    const int64_t nb = n_cols / kQK;
    for (int64_t r = 0; r < n_rows; ++r) {
        const auto* wb = reinterpret_cast<const BlockQ4_1*>(row_ptr(w, w_row_bytes, r));
        double acc = 0.0;
        for (int64_t b = 0; b < nb; ++b) {
            int q[kQK];
            q4_values(wb[b].qs, q);
            // sum((d*q + m) * dx*qx) = d*dx*sum(q*qx) + m*dx*sum(qx)
            const int32_t isum = int_dot(q, xb[b].qs, kQK);
            acc += static_cast<double>(f16_to_f32(wb[b].d) * xb[b].d) * isum;
            acc += static_cast<double>(f16_to_f32(wb[b].m) * xb[b].d) * xb[b].s;
        }
        y[r] = static_cast<float>(acc);
    }
}

void matvec_q8_0(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y) {
    const auto* xb = static_cast<const BlockQ8A*>(x);
    const int64_t nb = n_cols / kQK;
    for (int64_t r = 0; r < n_rows; ++r) {
        const auto* wb = reinterpret_cast<const BlockQ8_0*>(row_ptr(w, w_row_bytes, r));
        double acc = 0.0;
        for (int64_t b = 0; b < nb; ++b) {
            int32_t isum = 0;
            for (int i = 0; i < kQK; ++i) isum += wb[b].qs[i] * xb[b].qs[i];
            acc += static_cast<double>(f16_to_f32(wb[b].d) * xb[b].d) * isum;
        }
        y[r] = static_cast<float>(acc);
    }
}

// Q4_K and Q5_K share their scale/min layout; they differ only in how quants are stored.
template <class Block>
void matvec_k4(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
               float* y) {
    const auto* xb = static_cast<const BlockQ8A*>(x);
    const int64_t nsb = n_cols / kQKK;
    for (int64_t r = 0; r < n_rows; ++r) {
        const auto* wb = reinterpret_cast<const Block*>(row_ptr(w, w_row_bytes, r));
        double acc = 0.0;
        for (int64_t s = 0; s < nsb; ++s) {
            int q[kQKK];
            uint8_t scm[16];
            k_values(wb[s], q);
            unpack_scales_k4(wb[s].scales, scm);
            const float d = f16_to_f32(wb[s].d), dmin = f16_to_f32(wb[s].dmin);
            for (int j = 0; j < 8; ++j) {
                const BlockQ8A& xa = xb[s * 8 + j];
                // w = d*sc*q - dmin*m  =>  dot = d*sc*dx*sum(q*qx) - dmin*m*dx*sum(qx)
                const int32_t isum = int_dot(q + 32 * j, xa.qs, kQK);
                acc += static_cast<double>(d * static_cast<float>(scm[j]) * xa.d) * isum;
                acc -= static_cast<double>(dmin * static_cast<float>(scm[8 + j]) * xa.d) * xa.s;
            }
        }
        y[r] = static_cast<float>(acc);
    }
}

void matvec_q4_k(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y) {
    matvec_k4<BlockQ4_K>(n_cols, n_rows, w, w_row_bytes, x, y);
}

void matvec_q5_k(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y) {
    matvec_k4<BlockQ5_K>(n_cols, n_rows, w, w_row_bytes, x, y);
}

void matvec_q6_k(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y) {
    const auto* xb = static_cast<const BlockQ8A*>(x);
    const int64_t nsb = n_cols / kQKK;
    for (int64_t r = 0; r < n_rows; ++r) {
        const auto* wb = reinterpret_cast<const BlockQ6_K*>(row_ptr(w, w_row_bytes, r));
        double acc = 0.0;
        for (int64_t s = 0; s < nsb; ++s) {
            int q[kQKK];
            q6k_values(wb[s], q);
            const float d = f16_to_f32(wb[s].d);
            for (int j = 0; j < 8; ++j) {
                const BlockQ8A& xa = xb[s * 8 + j];
                // Each 32-element activation block spans two 16-element sub-blocks with their
                // own int8 scales; their integer dots are scaled before adding.
                const int32_t isum =
                    wb[s].scales[2 * j] * int_dot(q + 32 * j, xa.qs, 16) +
                    wb[s].scales[2 * j + 1] * int_dot(q + 32 * j + 16, xa.qs + 16, 16);
                acc += static_cast<double>(d * xa.d) * isum;
            }
        }
        y[r] = static_cast<float>(acc);
    }
}

// ---- quantized GEMM: a reference matvec per token ----------------------------------------

namespace {

template <MatVecFn kMatVec>
void gemm_q8_by_token(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, int64_t m,
                      const BlockQ8A* x, int64_t x_row_blocks, float* y, int64_t ldy) {
    for (int64_t i = 0; i < m; ++i) {
        kMatVec(n_cols, n_rows, w, w_row_bytes, x + i * x_row_blocks, y + i * ldy);
    }
}

}  // namespace

void gemm_q8_q4_0(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, int64_t m,
                  const BlockQ8A* x, int64_t x_row_blocks, float* y, int64_t ldy) {
    gemm_q8_by_token<matvec_q4_0>(n_cols, n_rows, w, w_row_bytes, m, x, x_row_blocks, y, ldy);
}
void gemm_q8_q4_1(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, int64_t m,
                  const BlockQ8A* x, int64_t x_row_blocks, float* y, int64_t ldy) {
    gemm_q8_by_token<matvec_q4_1>(n_cols, n_rows, w, w_row_bytes, m, x, x_row_blocks, y, ldy);
}
void gemm_q8_q8_0(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, int64_t m,
                  const BlockQ8A* x, int64_t x_row_blocks, float* y, int64_t ldy) {
    gemm_q8_by_token<matvec_q8_0>(n_cols, n_rows, w, w_row_bytes, m, x, x_row_blocks, y, ldy);
}
void gemm_q8_q4_k(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, int64_t m,
                  const BlockQ8A* x, int64_t x_row_blocks, float* y, int64_t ldy) {
    gemm_q8_by_token<matvec_q4_k>(n_cols, n_rows, w, w_row_bytes, m, x, x_row_blocks, y, ldy);
}
void gemm_q8_q5_k(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, int64_t m,
                  const BlockQ8A* x, int64_t x_row_blocks, float* y, int64_t ldy) {
    gemm_q8_by_token<matvec_q5_k>(n_cols, n_rows, w, w_row_bytes, m, x, x_row_blocks, y, ldy);
}
void gemm_q8_q6_k(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, int64_t m,
                  const BlockQ8A* x, int64_t x_row_blocks, float* y, int64_t ldy) {
    gemm_q8_by_token<matvec_q6_k>(n_cols, n_rows, w, w_row_bytes, m, x, x_row_blocks, y, ldy);
}

// ---- dequant ------------------------------------------------------------------------------

void dequant_f32(const void* src, float* dst, int64_t n) {
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}

void dequant_f16(const void* src, float* dst, int64_t n) {
    const auto* p = static_cast<const uint8_t*>(src);
    for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(load_u16(p + 2 * i));
}

void dequant_bf16(const void* src, float* dst, int64_t n) {
    const auto* p = static_cast<const uint8_t*>(src);
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load_u16(p + 2 * i));
}

void dequant_q4_0(const void* src, float* dst, int64_t n) {
    const auto* b = static_cast<const BlockQ4_0*>(src);
    for (int64_t i = 0; i < n / kQK; ++i) {
        int q[kQK];
        q4_values(b[i].qs, q);
        const float d = f16_to_f32(b[i].d);
        for (int j = 0; j < kQK; ++j) dst[i * kQK + j] = d * static_cast<float>(q[j] - 8);
    }
}

void dequant_q4_1(const void* src, float* dst, int64_t n) {
    const auto* b = static_cast<const BlockQ4_1*>(src);
    for (int64_t i = 0; i < n / kQK; ++i) {
        int q[kQK];
        q4_values(b[i].qs, q);
        const float d = f16_to_f32(b[i].d), m = f16_to_f32(b[i].m);
        for (int j = 0; j < kQK; ++j)
            dst[i * kQK + j] = no_contract(d * static_cast<float>(q[j])) + m;
    }
}

void dequant_q8_0(const void* src, float* dst, int64_t n) {
    const auto* b = static_cast<const BlockQ8_0*>(src);
    for (int64_t i = 0; i < n / kQK; ++i) {
        const float d = f16_to_f32(b[i].d);
        for (int j = 0; j < kQK; ++j) dst[i * kQK + j] = d * static_cast<float>(b[i].qs[j]);
    }
}

template <class Block>
void dequant_k4(const void* src, float* dst, int64_t n) {
    const auto* b = static_cast<const Block*>(src);
    for (int64_t i = 0; i < n / kQKK; ++i) {
        int q[kQKK];
        uint8_t scm[16];
        k_values(b[i], q);
        unpack_scales_k4(b[i].scales, scm);
        const float d = f16_to_f32(b[i].d), dmin = f16_to_f32(b[i].dmin);
        for (int e = 0; e < kQKK; ++e) {
            const float d1 = d * static_cast<float>(scm[e / 32]);
            const float m1 = dmin * static_cast<float>(scm[8 + e / 32]);
            dst[i * kQKK + e] = no_contract(d1 * static_cast<float>(q[e])) - m1;
        }
    }
}

void dequant_q4_k(const void* src, float* dst, int64_t n) { dequant_k4<BlockQ4_K>(src, dst, n); }
void dequant_q5_k(const void* src, float* dst, int64_t n) { dequant_k4<BlockQ5_K>(src, dst, n); }

void dequant_q6_k(const void* src, float* dst, int64_t n) {
    const auto* b = static_cast<const BlockQ6_K*>(src);
    for (int64_t i = 0; i < n / kQKK; ++i) {
        int q[kQKK];
        q6k_values(b[i], q);
        const float d = f16_to_f32(b[i].d);
        for (int e = 0; e < kQKK; ++e) {
            const float d1 = d * static_cast<float>(b[i].scales[e / 16]);
            dst[i * kQKK + e] = d1 * static_cast<float>(q[e]);
        }
    }
}

// ---- activation quantization and vector ops ----------------------------------------------

void quantize_q8a(const float* x, BlockQ8A* y, int64_t n) {
    for (int64_t b = 0; b < n / kQK; ++b) {
        const float* xb = x + b * kQK;
        float amax = 0.0f;
        for (int i = 0; i < kQK; ++i) amax = std::fmax(amax, std::fabs(xb[i]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        int32_t s = 0;
        for (int i = 0; i < kQK; ++i) {
            // Round half to even (the SIMD conversions' default mode), so all levels agree bit for
            // bit.
            const auto q = static_cast<int32_t>(std::nearbyint(xb[i] * id));
            y[b].qs[i] = static_cast<int8_t>(q);
            s += q;
        }
        y[b].d = d;
        y[b].s = s;
    }
}

float dot_f32(const float* a, const float* b, int64_t n) {
    double acc = 0.0;
    for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(a[i]) * b[i];
    return static_cast<float>(acc);
}

void axpy_f32(float a, const float* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void rmsnorm(const float* x, const float* w, float eps, float* y, int64_t n) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
    const auto scale = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale * w[i];
}

void silu_mul(float* g, const float* u, int64_t n) {
    for (int64_t i = 0; i < n; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

float softmax(float* x, int64_t n) {
    if (n <= 0) return -std::numeric_limits<float>::infinity();
    float mx = x[0];
    for (int64_t i = 1; i < n; ++i) mx = std::fmax(mx, x[i]);
    if (std::isinf(mx) && mx < 0) {
        // Every input is -inf: no mass anywhere; keep the output finite (uniform) and say so.
        for (int64_t i = 0; i < n; ++i) x[i] = 1.0f / static_cast<float>(n);
        return mx;
    }
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        x[i] = std::exp(x[i] - mx);
        sum += x[i];
    }
    const auto inv = static_cast<float>(1.0 / sum);
    for (int64_t i = 0; i < n; ++i) x[i] *= inv;
    return mx + static_cast<float>(std::log(sum));
}

void fill_table(CpuKernels& k) {
    k.level = SimdLevel::Scalar;
    k.matvec[kSlotF32] = matvec_f32;
    k.matvec[kSlotF16] = matvec_f16;
    k.matvec[kSlotBF16] = matvec_bf16;
    k.matvec[kSlotQ4_0] = matvec_q4_0;
    k.matvec[kSlotQ4_1] = matvec_q4_1;
    k.matvec[kSlotQ8_0] = matvec_q8_0;
    k.matvec[kSlotQ4_K] = matvec_q4_k;
    k.matvec[kSlotQ5_K] = matvec_q5_k;
    k.matvec[kSlotQ6_K] = matvec_q6_k;
    k.dequant[kSlotF32] = dequant_f32;
    k.dequant[kSlotF16] = dequant_f16;
    k.dequant[kSlotBF16] = dequant_bf16;
    k.dequant[kSlotQ4_0] = dequant_q4_0;
    k.dequant[kSlotQ4_1] = dequant_q4_1;
    k.dequant[kSlotQ8_0] = dequant_q8_0;
    k.dequant[kSlotQ4_K] = dequant_q4_k;
    k.dequant[kSlotQ5_K] = dequant_q5_k;
    k.dequant[kSlotQ6_K] = dequant_q6_k;
    k.gemm_q8[kSlotF32] = nullptr;
    k.gemm_q8[kSlotF16] = nullptr;
    k.gemm_q8[kSlotBF16] = nullptr;
    k.gemm_q8[kSlotQ4_0] = gemm_q8_q4_0;
    k.gemm_q8[kSlotQ4_1] = gemm_q8_q4_1;
    k.gemm_q8[kSlotQ8_0] = gemm_q8_q8_0;
    k.gemm_q8[kSlotQ4_K] = gemm_q8_q4_k;
    k.gemm_q8[kSlotQ5_K] = gemm_q8_q5_k;
    k.gemm_q8[kSlotQ6_K] = gemm_q8_q6_k;
    k.quantize_q8a = quantize_q8a;
    k.dot_f32 = dot_f32;
    k.axpy_f32 = axpy_f32;
    k.rmsnorm = rmsnorm;
    k.silu_mul = silu_mul;
    k.softmax = softmax;
}

}  // namespace attnrag::kernels::ref
