// AVX-512 (F/BW/VL/DQ + VNNI) bodies of the CPU ops; used only when cpuid reports all of them.
// GCC 12's AVX-512 headers build undefined vectors as `__m512 __Y = __Y;`, which trips
// -Wuninitialized wherever they are inlined (GCC PR105593); the warning is about the header.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "kernels_impl.h"

namespace attnrag::kernels::avx512 {
// Everything here has internal linkage so no AVX-512-compiled copy can stand in for a generic one.
// For the same reason this file calls no inline function of other headers that might be emitted
// out of line (as at -O0), e.g. std::isinf(float).
namespace {

using detail::Prep;
using detail::prep_k;
using detail::prep_quads;
using detail::QuadKind;

const uint8_t* row_ptr(const void* w, size_t w_row_bytes, int64_t r) {
    return static_cast<const uint8_t*>(w) + static_cast<size_t>(r) * w_row_bytes;
}

__m512i load512(const void* p) {
    return _mm512_loadu_si512(p);
}
__m256i load256(const void* p) {
    return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}
__m128i load128(const void* p) {
    return _mm_loadu_si128(static_cast<const __m128i*>(p));
}

uint32_t load_u32(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

void prefetch(const uint8_t* p) {
    _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0);
}

__m512 pin(__m512 v) {
    __asm__("" : "+v"(v));
    return v;
}

__mmask64 first_bytes(int64_t n) {
    if (n <= 0) return 0;
    return n >= 64 ? ~__mmask64{0} : (__mmask64{1} << n) - 1;
}

// Permute indices that broadcast floats of a small vector: lanes_of to four groups of four
// lanes, lanes8 to two groups of eight.
__m512i lanes_of(int a, int b, int c, int d) {
    return _mm512_setr_epi32(a, a, a, a, b, b, b, b, c, c, c, c, d, d, d, d);
}

__m512i lanes8(int a, int b) {
    return _mm512_setr_epi32(a, a, a, a, a, a, a, a, b, b, b, b, b, b, b, b);
}

// ---- float matvec -------------------------------------------------------------------------

float dot_row_f32(const float* w, const float* x, int64_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 32), _mm512_loadu_ps(x + i + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 48), _mm512_loadu_ps(x + i + 48), a3);
    }
    for (; i + 16 <= n; i += 16)
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
    if (i < n) {
        const auto m = static_cast<__mmask16>((1u << (n - i)) - 1u);
        a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + i), _mm512_maskz_loadu_ps(m, x + i), a1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

template <bool kBf16>
__m512 load16_half(const uint8_t* p, __mmask16 m) {
    const __m256i h = _mm256_maskz_loadu_epi16(m, p);
    if (kBf16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

template <bool kBf16>
float dot_row_half(const uint8_t* w, const float* x, int64_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm512_fmadd_ps(load16_half<kBf16>(w + 2 * i, 0xffff), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(load16_half<kBf16>(w + 2 * i + 32, 0xffff),
                             _mm512_loadu_ps(x + i + 16), a1);
    }
    for (; i < n; i += 16) {
        const auto m = static_cast<__mmask16>(n - i >= 16 ? 0xffffu : (1u << (n - i)) - 1u);
        a0 = _mm512_fmadd_ps(load16_half<kBf16>(w + 2 * i, m), _mm512_maskz_loadu_ps(m, x + i), a0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

void matvec_f32(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                float* y) {
    for (int64_t r = 0; r < n_rows; ++r) {
        y[r] = dot_row_f32(reinterpret_cast<const float*>(row_ptr(w, w_row_bytes, r)),
                           static_cast<const float*>(x), n_cols);
    }
}

void matvec_f16(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                float* y) {
    for (int64_t r = 0; r < n_rows; ++r) {
        y[r] =
            dot_row_half<false>(row_ptr(w, w_row_bytes, r), static_cast<const float*>(x), n_cols);
    }
}

void matvec_bf16(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y) {
    for (int64_t r = 0; r < n_rows; ++r) {
        y[r] = dot_row_half<true>(row_ptr(w, w_row_bytes, r), static_cast<const float*>(x), n_cols);
    }
}

// ---- 32-element formats: four blocks per step, VNNI dot -----------------------------------

// Row blocking: R rows advance together so the activation loads, loop overhead and the final
// reductions are shared, and R accumulator chains run independently. More rows means more
// interleaved memory streams, which costs DRAM throughput for the formats with larger groups;
// these counts were chosen with bench_kernels on the target machine (Zen 4, 2 cores): hot
// (cached) speed improves with rows, cold (DRAM) speed must not drop.
constexpr int kRowsQ4 = 4;
constexpr int kRowsQ8 = 2;
constexpr int kRowsK45 = 2;
constexpr int kRowsQ6K = 1;

// The R rows are R interleaved streams, which the hardware prefetchers follow poorly; instead
// the block of R rows, [w, w + R*stride), is treated as one linear region consumed evenly over
// the steps, and each step prefetches its share kPrefetchBytes ahead (prefetches past the end
// of the matrix are harmless).
constexpr int64_t kPrefetchBytes = 4096;

struct LinearPrefetch {
    const uint8_t* base;
    int64_t per_step;  // bytes
    LinearPrefetch(const uint8_t* w, int64_t region_bytes, int64_t n_steps)
        : base(w + kPrefetchBytes), per_step((region_bytes + n_steps - 1) / n_steps) {}
    void at(int64_t t) const {
        const uint8_t* p = base + t * per_step;
        for (int64_t off = 0; off < per_step; off += 64) prefetch(p + off);
    }
};

// y[r] = sum of the lanes of acc[r].
template <int R>
void store_sums(const __m512 (&acc)[R], float* y) {
    if constexpr (R == 4) {
        __m256 h[4];
        for (int r = 0; r < 4; ++r) {
            h[r] = _mm256_add_ps(_mm512_castps512_ps256(acc[r]), _mm512_extractf32x8_ps(acc[r], 1));
        }
        const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(h[0], h[1]), _mm256_hadd_ps(h[2], h[3]));
        _mm_storeu_ps(y, _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)));
    } else {
        for (int r = 0; r < R; ++r) y[r] = _mm512_reduce_add_ps(acc[r]);
    }
}

// Q4_1 (20-byte blocks): four blocks are 80 bytes = 20 dwords; block k's quants are dwords
// [5k+1, 5k+5) and its {d, m} f16 pair is dword 5k. Two overlapping loads (bytes [0,64) and
// [16,80)) and one two-source dword permute gather the 64 quant bytes.
// Q4_0 (18-byte blocks): 72 bytes = 36 words; block k's quants are words [9k+1, 9k+9), its d is
// word 9k; loads of bytes [0,64) and [8,72) and a word permute.
// The nibbles then split into {b0..b3}[0:16] (low) and {b0..b3}[16:32] (high), the prepared
// activation order; dpbusd lanes [4k, 4k+4) belong to block k.
template <bool kQ41, int R>
void rows_q4(const uint8_t* w, size_t stride, int64_t nb, const Prep& px, float* y) {
    constexpr int64_t kGroup = kQ41 ? 80 : 72;
    constexpr int64_t kOff1 = kQ41 ? 16 : 8;  // second load's offset
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    // (_mm512_set_epi16 lists word 31 first.)
    const __m512i gather_q =
        kQ41 ? _mm512_setr_epi32(1, 2, 3, 4, 6, 7, 8, 9, 11, 12, 13, 14, 28, 29, 30, 31)
             : _mm512_set_epi16(63, 62, 61, 60, 31, 30, 29, 28, 26, 25, 24, 23, 22, 21, 20, 19, 17,
                                16, 15, 14, 13, 12, 11, 10, 8, 7, 6, 5, 4, 3, 2, 1);
    // {d,m} dwords (Q4_1) or d words placed at even word slots beside zero (Q4_0), so both
    // convert to {d0, m0|0, d1, m1|0, ...}.
    const __m512i gather_d =
        kQ41 ? _mm512_setr_epi32(0, 5, 10, 15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
             : _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                0, 0, 27, 0, 18, 0, 9, 0, 0);
    const __m512i bcast = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6);
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    auto step = [&](int64_t t, const __m512i(&l0)[R], const __m512i(&l1)[R]) {
        const __m512i xlo = _mm512_load_si512(px.qs + 128 * t);
        const __m512i xhi = _mm512_load_si512(px.qs + 128 * t + 64);
        const __m512i start = kQ41 ? _mm512_setzero_si512() : _mm512_load_si512(px.init + 32 * t);
        const __m256 xs = _mm256_load_ps(px.scales + 8 * t);
        for (int r = 0; r < R; ++r) {
            __m512i q, dm;
            if (kQ41) {
                q = _mm512_permutex2var_epi32(l0[r], gather_q, l1[r]);
                dm = _mm512_permutexvar_epi32(gather_d, l0[r]);
            } else {
                q = _mm512_permutex2var_epi16(l0[r], gather_q, l1[r]);
                dm = _mm512_maskz_permutexvar_epi16(0x55, gather_d, l0[r]);
            }
            const __m512i lo = _mm512_and_si512(q, m4);
            const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
            const __m512i isum = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(start, lo, xlo), hi, xhi);
            // {d_k*dx_k, m_k*dx_k*s_k} pairs; the m terms (odd lanes) add straight into acc.
            const __m512 prod = _mm512_castps256_ps512(
                _mm256_mul_ps(_mm256_cvtph_ps(_mm512_castsi512_si128(dm)), xs));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_permutexvar_ps(bcast, prod),
                                     acc[r]);
            if (kQ41) acc[r] = _mm512_mask_add_ps(acc[r], 0x00aa, acc[r], prod);
        }
    };
    const int64_t n_full = nb / 4;
    const LinearPrefetch pf(w, R * static_cast<int64_t>(stride), (nb + 3) / 4);
    __m512i l0[R], l1[R];
    for (int64_t t = 0; t < n_full; ++t) {
        pf.at(t);
        for (int r = 0; r < R; ++r) {
            const uint8_t* g = w + r * stride + t * kGroup;
            l0[r] = load512(g);
            l1[r] = load512(g + kOff1);
        }
        step(t, l0, l1);
    }
    if (nb % 4) {
        // Partial group: masked loads read only this row's bytes; absent blocks load as zeros
        // (d = 0), and their activation slots are zero too.
        const int64_t bytes = (nb % 4) * (kGroup / 4);
        const __mmask64 k0 = first_bytes(bytes), k1 = first_bytes(bytes - kOff1);
        pf.at(n_full);
        for (int r = 0; r < R; ++r) {
            const uint8_t* g = w + r * stride + n_full * kGroup;
            l0[r] = _mm512_maskz_loadu_epi8(k0, g);
            l1[r] = _mm512_maskz_loadu_epi8(k1, g + kOff1);
        }
        step(n_full, l0, l1);
    }
    store_sums<R>(acc, y);
}

template <bool kQ41>
void matvec_q4(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
               float* y) {
    const int64_t nb = n_cols / kQK;
    Prep px{};
    if (!prep_quads(static_cast<const BlockQ8A*>(x), nb, kQ41 ? QuadKind::Q4_1 : QuadKind::Q4_0,
                    px)) {
        if (kQ41) return ref::matvec_q4_1(n_cols, n_rows, w, w_row_bytes, x, y);
        return ref::matvec_q4_0(n_cols, n_rows, w, w_row_bytes, x, y);
    }
    int64_t r = 0;
    for (; r + kRowsQ4 <= n_rows; r += kRowsQ4)
        rows_q4<kQ41, kRowsQ4>(row_ptr(w, w_row_bytes, r), w_row_bytes, nb, px, y + r);
    for (; r < n_rows; ++r)
        rows_q4<kQ41, 1>(row_ptr(w, w_row_bytes, r), w_row_bytes, nb, px, y + r);
}

void matvec_q4_0(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y) {
    matvec_q4<false>(n_cols, n_rows, w, w_row_bytes, x, y);
}

void matvec_q4_1(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y) {
    matvec_q4<true>(n_cols, n_rows, w, w_row_bytes, x, y);
}

// Q8_0 (34-byte blocks): signed x signed. dpbusd wants unsigned weights, so w + 128 (w ^ 0x80)
// is used and the extra 128*sum(x) is cancelled by the init lanes. The four f16 d's are
// gathered with scalar loads: the integer pipes are idle while the vector pipes are the limit.
template <int R>
void rows_q8_0(const uint8_t* w, size_t stride, int64_t nb, const Prep& px, float* y) {
    constexpr int64_t kBytes = sizeof(BlockQ8_0);
    constexpr int64_t kGroup = 4 * kBytes;
    const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
    const __m512i b01 = lanes8(0, 1);
    const __m512i b23 = lanes8(2, 3);
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    // w01/w23: the 2 x 2 blocks' quants; h: the four d's.
    auto step = [&](int64_t t, const __m512i(&w01)[R], const __m512i(&w23)[R],
                    const uint64_t(&h)[R]) {
        const __m512i x01 = _mm512_load_si512(px.qs + 128 * t),
                      x23 = _mm512_load_si512(px.qs + 128 * t + 64);
        const __m512i s01 = _mm512_load_si512(px.init + 32 * t),
                      s23 = _mm512_load_si512(px.init + 32 * t + 16);
        const __m128 xs = _mm_load_ps(px.scales + 8 * t);
        for (int r = 0; r < R; ++r) {
            const __m128 d = _mm_cvtph_ps(_mm_cvtsi64_si128(static_cast<long long>(h[r])));
            const __m512 sc = _mm512_castps128_ps512(_mm_mul_ps(d, xs));
            const __m512i i01 = _mm512_dpbusd_epi32(s01, _mm512_xor_si512(w01[r], flip), x01);
            const __m512i i23 = _mm512_dpbusd_epi32(s23, _mm512_xor_si512(w23[r], flip), x23);
            acc[r] =
                _mm512_fmadd_ps(_mm512_cvtepi32_ps(i01), _mm512_permutexvar_ps(b01, sc), acc[r]);
            acc[r] =
                _mm512_fmadd_ps(_mm512_cvtepi32_ps(i23), _mm512_permutexvar_ps(b23, sc), acc[r]);
        }
    };
    auto pair = [](const uint8_t* p0, const uint8_t* p1) {
        return _mm512_inserti64x4(_mm512_castsi256_si512(load256(p0)), load256(p1), 1);
    };
    auto d_at = [](const uint8_t* g, int k) {
        return static_cast<uint64_t>(load_u16(g + k * kBytes)) << (16 * k);
    };
    const int64_t n_full = nb / 4;
    const LinearPrefetch pf(w, R * static_cast<int64_t>(stride), (nb + 3) / 4);
    __m512i w01[R], w23[R];
    uint64_t h[R];
    for (int64_t t = 0; t < n_full; ++t) {
        pf.at(t);
        for (int r = 0; r < R; ++r) {
            const uint8_t* g = w + r * stride + t * kGroup;
            w01[r] = pair(g + 2, g + 2 + kBytes);
            w23[r] = pair(g + 2 + 2 * kBytes, g + 2 + 3 * kBytes);
            h[r] = d_at(g, 0) | d_at(g, 1) | d_at(g, 2) | d_at(g, 3);
        }
        step(t, w01, w23, h);
    }
    if (nb % 4) {
        // Partial group: masked loads stay inside the row; absent blocks read as zero, and
        // their activation slots and init lanes are zero too.
        const int rem = static_cast<int>(nb % 4);
        pf.at(n_full);
        for (int r = 0; r < R; ++r) {
            const uint8_t* g = w + r * stride + n_full * kGroup;
            auto blk = [&](int k) {
                return _mm256_maskz_loadu_epi8(k < rem ? ~__mmask32{0} : __mmask32{0},
                                               g + 2 + k * kBytes);
            };
            w01[r] = _mm512_inserti64x4(_mm512_castsi256_si512(blk(0)), blk(1), 1);
            w23[r] = _mm512_inserti64x4(_mm512_castsi256_si512(blk(2)), blk(3), 1);
            h[r] = 0;
            for (int k = 0; k < rem; ++k) h[r] |= d_at(g, k);
        }
        step(n_full, w01, w23, h);
    }
    store_sums<R>(acc, y);
}

void matvec_q8_0(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y) {
    const int64_t nb = n_cols / kQK;
    Prep px{};
    if (!prep_quads(static_cast<const BlockQ8A*>(x), nb, QuadKind::Q8_0, px)) {
        return ref::matvec_q8_0(n_cols, n_rows, w, w_row_bytes, x, y);
    }
    int64_t r = 0;
    for (; r + kRowsQ8 <= n_rows; r += kRowsQ8)
        rows_q8_0<kRowsQ8>(row_ptr(w, w_row_bytes, r), w_row_bytes, nb, px, y + r);
    for (; r < n_rows; ++r) rows_q8_0<1>(row_ptr(w, w_row_bytes, r), w_row_bytes, nb, px, y + r);
}

// ---- K-quants ---------------------------------------------------------------------------

// The 12 packed scale bytes of Q4_K/Q5_K -> 16 bytes {sc[0:8], m[0:8]} (see unpack_scales_k4):
// sc[j<4] = q[j] & 63, sc[j>=4] = (q[j+4] & 15) | (q[j-4] >> 6) << 4,
// m[j<4] = q[j+4] & 63, m[j>=4] = (q[j+4] >> 4) | (q[j] >> 6) << 4.
__m128i unpack_scales_k4_vec(const uint8_t* q12) {
    // 12 bytes via an 8-byte and a 4-byte load (a 16-byte load could run past the row).
    const __m128i q = _mm_insert_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q12)),
                                       static_cast<int>(load_u32(q12 + 8)), 2);
    const __m128i a =
        _mm_shuffle_epi8(q, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
    const __m128i b =
        _mm_shuffle_epi8(q, _mm_setr_epi8(0, 0, 0, 0, 0, 1, 2, 3, 0, 0, 0, 0, 4, 5, 6, 7));
    // the mins of sub-blocks 4..7 take the high nibble of q[8..11]
    const __m128i a2 = _mm_mask_blend_epi8(0xf000, a, _mm_srli_epi16(a, 4));
    const __m128i low = _mm_and_si128(
        a2, _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 15, 15, 15, 15));
    const __m128i top =
        _mm_and_si128(_mm_srli_epi16(b, 2),
                      _mm_setr_epi8(0, 0, 0, 0, 48, 48, 48, 48, 0, 0, 0, 0, 48, 48, 48, 48));
    return _mm_or_si128(low, top);
}

// Q4_K/Q5_K: half h of a super-block's quants is a 64-byte load of qs[64h, 64h+64); its low
// nibbles are sub-blocks 4h (bytes [0,32)) and 4h+2 ([32,64)), its high nibbles 4h+1 and 4h+3.
// Q5_K's fifth bit of sub-block j is bit j of qh[l].
template <bool kQ5, int R>
void rows_q45_k(const uint8_t* w, size_t stride, int64_t nsb, const Prep& px, float* y) {
    constexpr int64_t kBytes = kQ5 ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K);
    constexpr int kQsOff = kQ5 ? 48 : 16;
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m512i sixteen = _mm512_set1_epi8(16);
    auto bits = [](int lo, int hi) {
        return _mm512_inserti64x4(_mm512_set1_epi8(static_cast<char>(1 << lo)),
                                  _mm256_set1_epi8(static_cast<char>(1 << hi)), 1);
    };
    const __m512i pick[2][2] = {{bits(0, 2), bits(1, 3)}, {bits(4, 6), bits(5, 7)}};  // [h][lo/hi]
    const __m512i sel[2][2] = {{lanes8(0, 2), lanes8(1, 3)}, {lanes8(4, 6), lanes8(5, 7)}};
    const __m512i dsel = lanes8(0, 1);  // {d x8, dmin x8}
    __m512 acc[R], acc_m[R];
    for (int r = 0; r < R; ++r) acc[r] = acc_m[r] = _mm512_setzero_ps();
    const LinearPrefetch pf(w, R * static_cast<int64_t>(stride), nsb);
    for (int64_t s = 0; s < nsb; ++s) {
        pf.at(s);
        const __m512 xsc = _mm512_load_ps(px.scales + 16 * s);
        const __m512i x0 = _mm512_load_si512(px.qs + 256 * s),
                      x1 = _mm512_load_si512(px.qs + 256 * s + 64);
        const __m512i x2 = _mm512_load_si512(px.qs + 256 * s + 128),
                      x3 = _mm512_load_si512(px.qs + 256 * s + 192);
        for (int r = 0; r < R; ++r) {
            const uint8_t* blk = w + r * stride + s * kBytes;
            const __m512 scm =
                _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(unpack_scales_k4_vec(blk + 4)));
            const __m512 dd = _mm512_permutexvar_ps(
                dsel, _mm512_castps128_ps512(
                          _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(load_u32(blk))))));
            // lanes [0,8): d*sc[j]*dx[j]; lanes [8,16): dmin*m[j]*dx[j]*s[j]
            const __m512 f = _mm512_mul_ps(_mm512_mul_ps(scm, dd), xsc);
            acc_m[r] = _mm512_mask_add_ps(acc_m[r], 0xff00, acc_m[r], f);
            __m512i qh = _mm512_setzero_si512();
            if (kQ5) qh = _mm512_broadcast_i64x4(load256(blk + 16));
            for (int h = 0; h < 2; ++h) {
                const __m512i q = load512(blk + kQsOff + 64 * h);
                __m512i lo = _mm512_and_si512(q, m4);
                __m512i hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
                if (kQ5) {
                    lo = _mm512_mask_add_epi8(lo, _mm512_test_epi8_mask(qh, pick[h][0]), lo,
                                              sixteen);
                    hi = _mm512_mask_add_epi8(hi, _mm512_test_epi8_mask(qh, pick[h][1]), hi,
                                              sixteen);
                }
                const __m512i il =
                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, h == 0 ? x0 : x2);
                const __m512i ih =
                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi, h == 0 ? x1 : x3);
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(il),
                                         _mm512_permutexvar_ps(sel[h][0], f), acc[r]);
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ih),
                                         _mm512_permutexvar_ps(sel[h][1], f), acc[r]);
            }
        }
    }
    for (int r = 0; r < R; ++r) acc[r] = _mm512_sub_ps(acc[r], acc_m[r]);
    store_sums<R>(acc, y);
}

// Q6_K: half h of a super-block is ql[64h, 64h+64) + qh[32h, 32h+32). Its low nibbles are
// elements [128h, 128h+64), high nibbles [128h+64, 128h+128), both in natural order; the two
// high bits of byte l sit in qh[l] at 2k (k = group of 32 within the half).
template <int R>
void rows_q6_k(const uint8_t* w, size_t stride, int64_t nsb, const Prep& px, float* y) {
    constexpr int64_t kBytes = sizeof(BlockQ6_K);
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m512i m30 = _mm512_set1_epi8(0x30);
    // 16-bit lane shift counts: bytes [0,32) take bits 0-1 (low) / 4-5 (high) of qh,
    // bytes [32,64) bits 2-3 / 6-7; all moved to bits 4-5.
    const __m512i shl_lo = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
    const __m512i shr_hi = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(2), 1);
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    const LinearPrefetch pf(w, R * static_cast<int64_t>(stride), nsb);
    for (int64_t s = 0; s < nsb; ++s) {
        pf.at(s);
        const __m512 xsc = _mm512_load_ps(px.scales + 16 * s);
        for (int r = 0; r < R; ++r) {
            const uint8_t* blk = w + r * stride + s * kBytes;
            const float d = _cvtsh_ss(load_u16(blk + 208));
            // per 16-element sub-block: d * scale * dx
            const __m512 scf = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(load128(blk + 192)));
            const __m512 f = _mm512_mul_ps(_mm512_mul_ps(scf, _mm512_set1_ps(d)), xsc);
            for (int h = 0; h < 2; ++h) {
                const __m512i ql = load512(blk + 64 * h);
                const __m512i qh = _mm512_broadcast_i64x4(load256(blk + 128 + 32 * h));
                const __m512i lo = _mm512_or_si512(
                    _mm512_and_si512(ql, m4), _mm512_and_si512(_mm512_sllv_epi16(qh, shl_lo), m30));
                const __m512i hi =
                    _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                    _mm512_and_si512(_mm512_srlv_epi16(qh, shr_hi), m30));
                const int c0 = 2 * h, c1 = 2 * h + 1;  // 64-element steps within the super-block
                const __m512i i0 =
                    _mm512_dpbusd_epi32(_mm512_load_si512(px.init + 64 * s + 16 * c0), lo,
                                        _mm512_load_si512(px.qs + 256 * s + 64 * c0));
                const __m512i i1 =
                    _mm512_dpbusd_epi32(_mm512_load_si512(px.init + 64 * s + 16 * c1), hi,
                                        _mm512_load_si512(px.qs + 256 * s + 64 * c1));
                acc[r] = _mm512_fmadd_ps(
                    _mm512_cvtepi32_ps(i0),
                    _mm512_permutexvar_ps(lanes_of(4 * c0, 4 * c0 + 1, 4 * c0 + 2, 4 * c0 + 3), f),
                    acc[r]);
                acc[r] = _mm512_fmadd_ps(
                    _mm512_cvtepi32_ps(i1),
                    _mm512_permutexvar_ps(lanes_of(4 * c1, 4 * c1 + 1, 4 * c1 + 2, 4 * c1 + 3), f),
                    acc[r]);
            }
        }
    }
    store_sums<R>(acc, y);
}

template <int kKind>  // 4, 5, 6
void matvec_k(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
              float* y) {
    const int64_t nsb = n_cols / kQKK;
    Prep px{};
    if (!prep_k(static_cast<const BlockQ8A*>(x), nsb, kKind == 6, px)) {
        if (kKind == 4) return ref::matvec_q4_k(n_cols, n_rows, w, w_row_bytes, x, y);
        if (kKind == 5) return ref::matvec_q5_k(n_cols, n_rows, w, w_row_bytes, x, y);
        return ref::matvec_q6_k(n_cols, n_rows, w, w_row_bytes, x, y);
    }
    auto run = [&](auto rows_tag, int64_t r) {
        constexpr int R = decltype(rows_tag)::value;
        const uint8_t* wr = row_ptr(w, w_row_bytes, r);
        if constexpr (kKind == 6) {
            rows_q6_k<R>(wr, w_row_bytes, nsb, px, y + r);
        } else {
            rows_q45_k<kKind == 5, R>(wr, w_row_bytes, nsb, px, y + r);
        }
    };
    constexpr int kRowsK = kKind == 6 ? kRowsQ6K : kRowsK45;
    int64_t r = 0;
    for (; r + kRowsK <= n_rows; r += kRowsK) run(std::integral_constant<int, kRowsK>{}, r);
    for (; r < n_rows; ++r) run(std::integral_constant<int, 1>{}, r);
}

void matvec_q4_k(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y) {
    matvec_k<4>(n_cols, n_rows, w, w_row_bytes, x, y);
}
void matvec_q5_k(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y) {
    matvec_k<5>(n_cols, n_rows, w, w_row_bytes, x, y);
}
void matvec_q6_k(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y) {
    matvec_k<6>(n_cols, n_rows, w, w_row_bytes, x, y);
}

// ---- dequant (the 32-element formats; K-quants use the AVX2 bodies) ------------------------

void dequant_f16(const void* src, float* dst, int64_t n) {
    const auto* p = static_cast<const uint8_t*>(src);
    for (int64_t i = 0; i < n; i += 16) {
        const auto m = static_cast<__mmask16>(n - i >= 16 ? 0xffffu : (1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(dst + i, m, load16_half<false>(p + 2 * i, m));
    }
}

void dequant_bf16(const void* src, float* dst, int64_t n) {
    const auto* p = static_cast<const uint8_t*>(src);
    for (int64_t i = 0; i < n; i += 16) {
        const auto m = static_cast<__mmask16>(n - i >= 16 ? 0xffffu : (1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(dst + i, m, load16_half<true>(p + 2 * i, m));
    }
}

// Q4 block -> 32 floats: nibble bytes in element order (low nibbles first), scaled.
template <bool kQ41>
void dequant_q4(const void* src, float* dst, int64_t n) {
    const auto* p = static_cast<const uint8_t*>(src);
    constexpr int64_t kBytes = kQ41 ? sizeof(BlockQ4_1) : sizeof(BlockQ4_0);
    for (int64_t b = 0; b < n / kQK; ++b) {
        const uint8_t* blk = p + b * kBytes;
        const __m128i q = load128(blk + (kQ41 ? 4 : 2));
        const __m128i m4 = _mm_set1_epi8(0x0f);
        const __m128i lo = _mm_and_si128(q, m4), hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
        const __m512 d = _mm512_set1_ps(_cvtsh_ss(load_u16(blk)));
        __m512 f0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo));
        __m512 f1 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi));
        if (kQ41) {
            const __m512 m = _mm512_set1_ps(_cvtsh_ss(load_u16(blk + 2)));
            f0 = _mm512_add_ps(pin(_mm512_mul_ps(d, f0)), m);
            f1 = _mm512_add_ps(pin(_mm512_mul_ps(d, f1)), m);
        } else {
            const __m512 eight = _mm512_set1_ps(8.0f);
            f0 = _mm512_mul_ps(d, _mm512_sub_ps(f0, eight));  // q - 8 is exact in float
            f1 = _mm512_mul_ps(d, _mm512_sub_ps(f1, eight));
        }
        _mm512_storeu_ps(dst + b * kQK, f0);
        _mm512_storeu_ps(dst + b * kQK + 16, f1);
    }
}

void dequant_q4_0(const void* src, float* dst, int64_t n) {
    dequant_q4<false>(src, dst, n);
}
void dequant_q4_1(const void* src, float* dst, int64_t n) {
    dequant_q4<true>(src, dst, n);
}

void dequant_q8_0(const void* src, float* dst, int64_t n) {
    const auto* p = static_cast<const uint8_t*>(src);
    for (int64_t b = 0; b < n / kQK; ++b) {
        const uint8_t* blk = p + b * static_cast<int64_t>(sizeof(BlockQ8_0));
        const __m512 d = _mm512_set1_ps(_cvtsh_ss(load_u16(blk)));
        _mm512_storeu_ps(
            dst + b * kQK,
            _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(load128(blk + 2)))));
        _mm512_storeu_ps(
            dst + b * kQK + 16,
            _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(load128(blk + 18)))));
    }
}

// ---- activation quantization and vector ops ----------------------------------------------

// e^x: scalef does the 2^n scaling, so results underflow gradually to 0 (masked -inf logits
// give exactly 0) and overflow to inf like expf. Cephes expf polynomial, ~1 ulp.
__m512 exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(89.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

__mmask16 tail_mask(int64_t left) {
    return static_cast<__mmask16>(left >= 16 ? 0xffffu : (1u << left) - 1u);
}

void quantize_q8a(const float* x, BlockQ8A* y, int64_t n) {
    for (int64_t b = 0; b < n / kQK; ++b) {
        const float* xb = x + b * kQK;
        const __m512 v0 = _mm512_loadu_ps(xb), v1 = _mm512_loadu_ps(xb + 16);
        const float am = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        const float d = am / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const __m512 vid = _mm512_set1_ps(id);
        // cvtps rounds half to even under the default MXCSR mode, like the reference's nearbyint.
        const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, vid));
        const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, vid));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(y[b].qs), _mm512_cvtsepi32_epi8(q0));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(y[b].qs + 16), _mm512_cvtsepi32_epi8(q1));
        y[b].s = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        y[b].d = d;
    }
}

float dot_f32(const float* a, const float* b, int64_t n) {
    return dot_row_f32(a, b, n);
}

void axpy_f32(float a, const float* x, float* y, int64_t n) {
    const __m512 va = _mm512_set1_ps(a);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(
            y + i, m,
            _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
    }
}

void rmsnorm(const float* x, const float* w, float eps, float* y, int64_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m512 v0 = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + 16);
        a0 = _mm512_fmadd_ps(v0, v0, a0);
        a1 = _mm512_fmadd_ps(v1, v1, a1);
    }
    for (; i < n; i += 16) {
        const __m512 v = _mm512_maskz_loadu_ps(tail_mask(n - i), x + i);
        a0 = _mm512_fmadd_ps(v, v, a0);
    }
    const double ss = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    const auto scale = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
    const __m512 vs = _mm512_set1_ps(scale);
    for (i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, m,
                              _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vs),
                                            _mm512_maskz_loadu_ps(m, w + i)));
    }
}

void silu_mul(float* g, const float* u, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        const __m512 v = _mm512_maskz_loadu_ps(m, g + i);
        const __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), v));
        const __m512 s = _mm512_div_ps(v, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(g + i, m, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(m, u + i)));
    }
}

float softmax(float* x, int64_t n) {
    if (n <= 0) return ref::softmax(x, n);
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < n; i += 16) {
        vmax = _mm512_mask_max_ps(vmax, tail_mask(n - i), vmax,
                                  _mm512_maskz_loadu_ps(tail_mask(n - i), x + i));
    }
    const float mx = _mm512_reduce_max_ps(vmax);
    if (mx == -INFINITY) return ref::softmax(x, n);  // all -inf: the reference's rule
    const __m512 vm = _mm512_set1_ps(mx);
    __m512 vsum = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        const __m512 e =
            _mm512_maskz_mov_ps(m, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vm)));
        _mm512_mask_storeu_ps(x + i, m, e);
        vsum = _mm512_add_ps(vsum, e);
    }
    const double sum = _mm512_reduce_add_ps(vsum);
    const __m512 vi = _mm512_set1_ps(static_cast<float>(1.0 / sum));
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vi));
    }
    return mx + static_cast<float>(std::log(sum));
}

}  // namespace

void fill_table(CpuKernels& k) {
    k.matvec[kSlotF32] = matvec_f32;
    k.matvec[kSlotF16] = matvec_f16;
    k.matvec[kSlotBF16] = matvec_bf16;
    k.matvec[kSlotQ4_0] = matvec_q4_0;
    k.matvec[kSlotQ4_1] = matvec_q4_1;
    k.matvec[kSlotQ8_0] = matvec_q8_0;
    k.matvec[kSlotQ4_K] = matvec_q4_k;
    k.matvec[kSlotQ5_K] = matvec_q5_k;
    k.matvec[kSlotQ6_K] = matvec_q6_k;
    k.dequant[kSlotF16] = dequant_f16;
    k.dequant[kSlotBF16] = dequant_bf16;
    k.dequant[kSlotQ4_0] = dequant_q4_0;
    k.dequant[kSlotQ4_1] = dequant_q4_1;
    k.dequant[kSlotQ8_0] = dequant_q8_0;
    k.quantize_q8a = quantize_q8a;
    k.dot_f32 = dot_f32;
    k.axpy_f32 = axpy_f32;
    k.rmsnorm = rmsnorm;
    k.silu_mul = silu_mul;
    k.softmax = softmax;
}

}  // namespace attnrag::kernels::avx512
