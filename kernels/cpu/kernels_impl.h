// Private declarations shared by the CPU kernel files: scalar reference ops and per-ISA table
// fillers.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "attnrag/kernels/cpu.hpp"
#include "attnrag/kernels/types.hpp"

namespace attnrag::kernels {

// Helpers below are `static inline`: the per-ISA files include this header too, and an inline
// function with external linkage compiled there with -mavx512f could be the copy the linker keeps
// for every caller, including on CPUs without AVX-512.

// Slots of CpuKernels::matvec/dequant (kernel_type_index).
enum KernelSlot : int {
    kSlotF32 = 0,
    kSlotF16 = 1,
    kSlotBF16 = 2,
    kSlotQ4_0 = 3,
    kSlotQ4_1 = 4,
    kSlotQ8_0 = 5,
    kSlotQ4_K = 6,
    kSlotQ5_K = 7,
    kSlotQ6_K = 8,
};

// The 12 packed bytes of a Q4_K/Q5_K super-block hold eight 6-bit scales and eight 6-bit mins
// (ggml's get_scale_min_k4): for j < 4, sc = q[j] & 63 and m = q[j+4] & 63; for j >= 4 the low
// four bits sit in q[j+4] (scale: low nibble, min: high nibble) and the top two bits in the
// spare top bits of q[j-4] (scale) and q[j] (min). Unpacks to out[0, 8) = scales,
// out[8, 16) = mins, all in [0, 64).
static inline void unpack_scales_k4(const uint8_t* q, uint8_t* out) {
    uint32_t w[3];
    std::memcpy(w, q, 12);
    constexpr uint32_t kLow6 = 0x3f3f3f3fu, kLow4 = 0x0f0f0f0fu, kLow2 = 0x03030303u;
    const uint32_t sc_lo = w[0] & kLow6;
    const uint32_t sc_hi = (w[2] & kLow4) | (((w[0] >> 6) & kLow2) << 4);
    const uint32_t m_lo = w[1] & kLow6;
    const uint32_t m_hi = ((w[2] >> 4) & kLow4) | (((w[1] >> 6) & kLow2) << 4);
    const uint32_t r[4] = {sc_lo, sc_hi, m_lo, m_hi};
    std::memcpy(out, r, 16);
}

static inline uint16_t load_u16(const void* p) {
    uint16_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

// Keeps a product from being fused into a following add (FMA contraction), so that dequant of
// d*q + m rounds identically at every SIMD level and under any -march.
static inline float no_contract(float v) {
#if defined(__GNUC__) && defined(__SSE2__)
    __asm__("" : "+x"(v));
#endif
    return v;
}

namespace detail {
// An unnamed namespace: types and functions here get a separate internal copy in every file
// (each compiled with its own ISA flags), never one shared by the linker.
namespace {

// ---- activation preparation for the SIMD matvecs --------------------------------------------
//
// Every row of a matvec meets the same activation, so the SIMD levels rearrange its blocks once
// per call into the order their row loops want: quant bytes contiguous, the integer corrections
// of each format pre-placed in accumulator lanes, and float scales side by side. A call covers
// many rows (the thread pool hands out row ranges), so this costs little. The layouts suit both
// the AVX-512 (64-byte) and the AVX2 (32-byte) loops.

// Per-thread, 64-byte aligned buffer of at least `bytes`, valid until the next call on the same
// thread; nullptr when out of memory (callers then fall back to the scalar reference).
struct ScratchBuffer {
    void* p = nullptr;
    size_t cap = 0;
    ScratchBuffer() = default;
    ScratchBuffer(const ScratchBuffer&) = delete;
    ScratchBuffer& operator=(const ScratchBuffer&) = delete;
    ~ScratchBuffer() { std::free(p); }
};

inline void* thread_scratch(size_t bytes) {
    static thread_local ScratchBuffer buf;
    if (bytes > buf.cap) {
        std::free(buf.p);
        buf.cap = (bytes + 4095) / 4096 * 4096;
        buf.p = std::aligned_alloc(64, buf.cap);
        if (buf.p == nullptr) buf.cap = 0;
    }
    return buf.p;
}

struct Prep {
    const int8_t* qs;     // activation quants in kernel order
    const int32_t* init;  // integer start values of the dot accumulators (format corrections)
    const float* scales;  // per step (32-element formats) or per super-block (K-quants)
};

// The 32-element formats are handled four blocks (128 elements) per step; the last step is
// padded with zero blocks. Per step:
//   qs: 128 bytes. Q4: {x0..x3}[0:16] then {x0..x3}[16:32] (low then high nibbles of four
//       weight blocks); Q8: x0, x1, x2, x3 back to back.
//   init: 32 int32 (int32 lane i of a dot holds elements [4i, 4i+4) of its 64 quants). Q4_0:
//       lane 4k = -8*s_k, undoing the +8 bias of the nibbles; Q8_0: lane 8k = -128*s_k, undoing
//       the +128 that makes the signed weights unsigned for dpbusd.
//   scales: 8 floats {dx0, dx0*s0, dx1, dx1*s1, ...} (Q4) or {dx0, dx1, dx2, dx3, 0...} (Q8).
enum class QuadKind { Q4_0, Q4_1, Q8_0 };

constexpr BlockQ8A kZeroBlock{};

inline bool prep_quads(const BlockQ8A* x, int64_t nb, QuadKind kind, Prep& out) {
    const int64_t n_steps = (nb + 3) / 4;
    auto* base =
        static_cast<uint8_t*>(thread_scratch(static_cast<size_t>(n_steps) * (128 + 128 + 32)));
    if (base == nullptr) return false;
    auto* qs = reinterpret_cast<int8_t*>(base);
    auto* init = reinterpret_cast<int32_t*>(base + n_steps * 128);
    auto* sc = reinterpret_cast<float*>(base + n_steps * 256);
    for (int64_t t = 0; t < n_steps; ++t) {
        int8_t* q = qs + 128 * t;
        int32_t* in = init + 32 * t;
        float* s = sc + 8 * t;
        std::memset(in, 0, 128);
        std::memset(s, 0, 32);
        for (int k = 0; k < 4; ++k) {
            const BlockQ8A& xb = 4 * t + k < nb ? x[4 * t + k] : kZeroBlock;
            if (kind == QuadKind::Q8_0) {
                std::memcpy(q + 32 * k, xb.qs, 32);
                in[8 * k] = -128 * xb.s;
                s[k] = xb.d;
            } else {
                std::memcpy(q + 16 * k, xb.qs, 16);
                std::memcpy(q + 64 + 16 * k, xb.qs + 16, 16);
                if (kind == QuadKind::Q4_0) in[4 * k] = -8 * xb.s;
                s[2 * k] = xb.d;
                s[2 * k + 1] = xb.d * static_cast<float>(xb.s);
            }
        }
    }
    out = {qs, init, sc};
    return true;
}

// For the K-quants, per super-block (8 activation blocks): 256 quant bytes, 64 int32 init
// lanes, 16 floats.
// Q4_K/Q5_K: quants in sub-block order 0,2,1,3,4,6,5,7: a 64-byte load of the weights' nibbles
// covers sub-blocks (4h, 4h+2) in its low nibbles and (4h+1, 4h+3) in its high nibbles.
// scales = {dx[0:8], (dx*s)[0:8]}; no init.
// Q6_K: quants in natural order; scales = dx of each 16-element sub-block; init = -32 * (sum of
// the 16 quants) at lanes 0, 4, 8, 12 of each 64-element step (dpbusd lane i sums elements
// [4i, 4i+4)), undoing Q6_K's +32 bias.
inline bool prep_k(const BlockQ8A* x, int64_t nsb, bool q6, Prep& out) {
    auto* base = static_cast<uint8_t*>(thread_scratch(static_cast<size_t>(nsb) * (256 + 256 + 64)));
    if (base == nullptr) return false;
    auto* qs = reinterpret_cast<int8_t*>(base);
    auto* init = reinterpret_cast<int32_t*>(base + nsb * 256);
    auto* sc = reinterpret_cast<float*>(base + nsb * 512);
    static constexpr int kQ45Slot[8] = {0, 2, 1, 3, 4, 6, 5, 7};  // where sub-block j goes
    for (int64_t b = 0; b < nsb * 8; ++b) {
        const int64_t sb = b / 8, j = b % 8;
        const int64_t slot = q6 ? j : kQ45Slot[j];
        std::memcpy(qs + 256 * sb + 32 * slot, x[b].qs, 32);
        int32_t* in = init + 8 * b;
        std::memset(in, 0, 32);
        float* s = sc + 16 * sb;
        if (q6) {
            int32_t s0 = 0, s1 = 0;
            for (int i = 0; i < 16; ++i) {
                s0 += x[b].qs[i];
                s1 += x[b].qs[16 + i];
            }
            in[0] = -32 * s0;
            in[4] = -32 * s1;
            s[2 * j] = x[b].d;
            s[2 * j + 1] = x[b].d;
        } else {
            s[j] = x[b].d;
            s[8 + j] = x[b].d * static_cast<float>(x[b].s);
        }
    }
    out = {qs, init, sc};
    return true;
}

}  // namespace
}  // namespace detail

namespace ref {

void matvec_f32(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                float* y);
void matvec_f16(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                float* y);
void matvec_bf16(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y);
void matvec_q4_0(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y);
void matvec_q4_1(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y);
void matvec_q8_0(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y);
void matvec_q4_k(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y);
void matvec_q5_k(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y);
void matvec_q6_k(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y);

void gemm_q8_q4_0(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, int64_t m,
                  const BlockQ8A* x, int64_t x_row_blocks, float* y, int64_t ldy);
void gemm_q8_q4_1(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, int64_t m,
                  const BlockQ8A* x, int64_t x_row_blocks, float* y, int64_t ldy);
void gemm_q8_q8_0(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, int64_t m,
                  const BlockQ8A* x, int64_t x_row_blocks, float* y, int64_t ldy);
void gemm_q8_q4_k(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, int64_t m,
                  const BlockQ8A* x, int64_t x_row_blocks, float* y, int64_t ldy);
void gemm_q8_q5_k(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, int64_t m,
                  const BlockQ8A* x, int64_t x_row_blocks, float* y, int64_t ldy);
void gemm_q8_q6_k(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, int64_t m,
                  const BlockQ8A* x, int64_t x_row_blocks, float* y, int64_t ldy);

void dequant_f32(const void* src, float* dst, int64_t n);
void dequant_f16(const void* src, float* dst, int64_t n);
void dequant_bf16(const void* src, float* dst, int64_t n);
void dequant_q4_0(const void* src, float* dst, int64_t n);
void dequant_q4_1(const void* src, float* dst, int64_t n);
void dequant_q8_0(const void* src, float* dst, int64_t n);
void dequant_q4_k(const void* src, float* dst, int64_t n);
void dequant_q5_k(const void* src, float* dst, int64_t n);
void dequant_q6_k(const void* src, float* dst, int64_t n);

void quantize_q8a(const float* x, BlockQ8A* y, int64_t n);
float dot_f32(const float* a, const float* b, int64_t n);
void axpy_f32(float a, const float* x, float* y, int64_t n);
void rmsnorm(const float* x, const float* w, float eps, float* y, int64_t n);
void silu_mul(float* g, const float* u, int64_t n);
float softmax(float* x, int64_t n);

// Fills every slot with the scalar reference.
void fill_table(CpuKernels& k);

}  // namespace ref

// Each overrides the slots it has SIMD bodies for; call after ref::fill_table.
namespace avx2 {
void fill_table(CpuKernels& k);
}
namespace avx512 {
void fill_table(CpuKernels& k);
// The quantized GEMM bodies (qgemm_avx512.cpp).
void fill_gemm_table(CpuKernels& k);
}  // namespace avx512

}  // namespace attnrag::kernels
