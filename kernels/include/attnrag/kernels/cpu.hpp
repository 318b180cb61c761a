// CPU kernel table: every op has a scalar reference; SIMD levels are chosen at run time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "attnrag/kernels/types.hpp"

namespace attnrag::kernels {

enum class SimdLevel { Scalar = 0, Avx2 = 1, Avx512 = 2 };

std::string_view simd_level_name(SimdLevel level);

// Highest level this CPU supports (cpuid + OS state).
SimdLevel detected_simd_level();

// The level in use: detected, lowered by ATTNRAG_SIMD=scalar|avx2|avx512 (read once), or by
// set_simd_level (tests). Asking for a level above the detected one yields the detected one.
SimdLevel active_simd_level();
void set_simd_level(SimdLevel level);

// y[r] = dot(W[r, :], x) for r in [0, n_rows).
// W rows are n_cols elements of `type`, w_row_bytes apart.
// x: for quantized types (traits.quantized), n_cols/32 BlockQ8A blocks (see quantize_q8a);
//    for F32/F16/BF16, n_cols floats.
using MatVecFn = void (*)(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes,
                          const void* x, float* y);

// dst[0, n) = dequantized src row of n elements.
using DequantFn = void (*)(const void* src, float* dst, int64_t n);

// y[i*ldy + r] = dot(W[r, :], x row i) for i in [0, m), r in [0, n_rows): a matvec per token,
// with weight rows read once per call instead of once per token (prefill).
// W as for MatVecFn; x: m rows of n_cols/32 BlockQ8A blocks, row i at x + i*x_row_blocks.
using GemmQ8Fn = void (*)(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes,
                          int64_t m, const BlockQ8A* x, int64_t x_row_blocks, float* y,
                          int64_t ldy);

struct CpuKernels {
    SimdLevel level;
    // Indexed by kernel_type_index(type); nullptr where the type is unsupported.
    MatVecFn matvec[9];
    DequantFn dequant[9];

    // x[0, n) -> n/32 BlockQ8A blocks (n a multiple of 32).
    void (*quantize_q8a)(const float* x, BlockQ8A* y, int64_t n);

    // Dot product of two float vectors.
    float (*dot_f32)(const float* a, const float* b, int64_t n);
    // y[i] += a * x[i]
    void (*axpy_f32)(float a, const float* x, float* y, int64_t n);
    // y[i] = x[i] / rms(x) * w[i]; rms = sqrt(mean(x^2) + eps)
    void (*rmsnorm)(const float* x, const float* w, float eps, float* y, int64_t n);
    // g[i] = silu(g[i]) * u[i]
    void (*silu_mul)(float* g, const float* u, int64_t n);
    // x[i] = exp(x[i] - max) / sum; returns log-sum-exp of the input.
    float (*softmax)(float* x, int64_t n);

    // Indexed as matvec; nullptr for the float formats. The scalar table holds the reference (a
    // matvec per token) for every quantized type; a SIMD level overrides the types it has a
    // GEMM body for (AVX-512 VNNI: all six) and keeps the reference for the others, so an
    // entry equal to the scalar table's means "no fast GEMM here".
    GemmQ8Fn gemm_q8[9];
};

// Index of a type in CpuKernels::matvec/dequant; -1 when unsupported.
int kernel_type_index(DType type);

// The table for the active level (or an explicit one).
const CpuKernels& cpu_kernels();
const CpuKernels& cpu_kernels(SimdLevel level);

// Rotary position embedding applied in place to x [n_heads][head_dim] at position `pos`.
// Interleaved (llama.cpp "normal"): pairs (2i, 2i+1). Neox (Qwen2): pairs (i, i + n_rot/2), as
// ggml's rope_neox (the same as i + head_dim/2 when the whole head rotates).
// theta_i = pos * base^(-2i / n_rot) for pair i < n_rot/2; dims >= n_rot are untouched.
enum class RopeStyle { Interleaved = 0, Neox = 1 };
void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, float pos, float base,
          RopeStyle style);
// The same in two steps, for applying one position's rotation to many vectors (all layers of a
// token): rope_angles fills cs[2 * (n_rot / 2)] with (cos, sin) of each pair's angle in double;
// rope_apply rotates x by them. rope(x, ...) == rope_angles + rope_apply, bit for bit.
void rope_angles(float pos, int64_t n_rot, float base, double* cs);
void rope_apply(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, const double* cs,
                RopeStyle style);

// Exact merge of two partial attentions of one query over disjoint key sets A and B (each the
// softmax-weighted sum of its values, with its log-sum-exp): out = (e^lse_a out_a + e^lse_b
// out_b) / (e^lse_a + e^lse_b), which is attention over A ∪ B. Returns the merged log-sum-exp.
// An empty set has lse = -inf. out may alias out_a or out_b.
float merge_attention(const float* out_a, float lse_a, const float* out_b, float lse_b, float* out,
                      int64_t d);

}  // namespace attnrag::kernels
