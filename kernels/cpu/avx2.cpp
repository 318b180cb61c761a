// AVX2+FMA+F16C bodies of the CPU ops (compiled with -mavx2 -mfma -mf16c; used only when cpuid
// agrees). GCC 12's AVX-512 headers build undefined vectors as `__m512 __Y = __Y;`, which trips
// -Wuninitialized wherever they are inlined (GCC PR105593); the warning is about the header.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cmath>
#include <cstring>

#include "kernels_impl.h"

namespace attnrag::kernels::avx2 {
namespace {

// Everything here has internal linkage so no AVX2-compiled copy can stand in for a generic one.
// For the same reason this file calls no inline function of other headers that might be emitted
// out of line (as at -O0): bf16_to_f32, std::exp(float), std::isinf... have local stand-ins.

float bf16_bits(uint16_t h) {
    const uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

const uint8_t* row_ptr(const void* w, size_t w_row_bytes, int64_t r) {
    return static_cast<const uint8_t*>(w) + static_cast<size_t>(r) * w_row_bytes;
}

float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

float hmax(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

// Opaque to the optimiser: stops a multiply from being fused with the following add, so
// dequant rounds exactly like the scalar reference.
__m256 pin(__m256 v) {
    __asm__("" : "+x"(v));
    return v;
}

float half(const uint8_t* p) {
    return _cvtsh_ss(load_u16(p));
}

// 16 bytes of packed nibbles -> 32 bytes in element order: low nibbles are elements [0, 16),
// high nibbles [16, 32) (the Q4_0/Q4_1 layout).
__m256i nibbles32(const uint8_t* p) {
    const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m256i both =
        _mm256_inserti128_si256(_mm256_castsi128_si256(t), _mm_srli_epi16(t, 4), 1);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}

__m256i load256(const void* p) {
    return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}

// sum over pairs of u8*s8 -> 8 int32 lanes (each lane: 4 consecutive bytes).
// maddubs saturates at int16, safe here: |u| <= 128 and |s| <= 127 give at most 2*128*127.
__m256i dot_u8s8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

// e^x for x in float range; 0 below -87.3 (so masked -inf logits give exactly 0), and capped
// at e^88.3 above. Cephes expf polynomial, ~1 ulp.
__m256 exp256(__m256 x) {
    const __m256 too_small = _mm256_cmp_ps(x, _mm256_set1_ps(-87.33f), _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.33f)), _mm256_set1_ps(88.3f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(too_small, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

// ---- float matvec -------------------------------------------------------------------------

float dot_row_f32(const float* w, const float* x, int64_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8)
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; ++i) s += w[i] * x[i];
    return s;
}

// f16/bf16 rows: 8 elements at a time widened to float.
__m256 load8_f16(const uint8_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
__m256 load8_bf16(const uint8_t* p) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

template <bool kBf16>
float dot_row_half(const uint8_t* w, const float* x, int64_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256 w0 = kBf16 ? load8_bf16(w + 2 * i) : load8_f16(w + 2 * i);
        const __m256 w1 = kBf16 ? load8_bf16(w + 2 * i + 16) : load8_f16(w + 2 * i + 16);
        a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), a1);
    }
    float s = hsum(_mm256_add_ps(a0, a1));
    for (; i < n; ++i) {
        const uint16_t h = load_u16(w + 2 * i);
        s += (kBf16 ? bf16_bits(h) : _cvtsh_ss(h)) * x[i];
    }
    return s;
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

// ---- quantized matvec, 32-element formats: four blocks per step ----------------------------
//
// The activation is prepared once per call (detail::prep_quads): per step of four blocks, the
// quants ordered as the weights unpack, and {dx, dx*s} side by side, so that the four blocks'
// f16 scales convert and multiply in one go.

using detail::Prep;
using detail::prep_quads;
using detail::QuadKind;

uint32_t load_u32(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

// Rows are walked one at a time, the next rows prefetched as one linear stream.
constexpr int64_t kPrefetchBytes = 2048;

// Q4_0 / Q4_1. A pair of blocks loads as [b0 quants | b1 quants] (16 bytes each); its low
// nibbles are elements [0,16) of both blocks, the high nibbles [16,32): the prepared order.
// After maddubs + madd, int32 lanes [0,4) belong to b0 and [4,8) to b1.
// Q4_0: w = d*(q - 8); the -8*sum(x) of each block is in the init lanes.
// Q4_1: w = d*q + m; m*dx*s sits in the odd lanes of the per-step scale product.
template <bool kQ41>
float row_q4(const uint8_t* wr, int64_t nb, const Prep& px) {
    constexpr int64_t kBytes = kQ41 ? sizeof(BlockQ4_1) : sizeof(BlockQ4_0);
    constexpr int kQsOff = kQ41 ? 4 : 2;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i bcast[2] = {_mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2),
                              _mm256_setr_epi32(4, 4, 4, 4, 6, 6, 6, 6)};
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc_m = acc0;
    // n_blk < 4 only for the last step; absent blocks read as zero (their d too).
    auto step = [&](int64_t t, int n_blk) {
        const uint8_t* g = wr + 4 * t * kBytes;
        _mm_prefetch(reinterpret_cast<const char*>(g) + kPrefetchBytes, _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(g) + kPrefetchBytes + 64, _MM_HINT_T0);
        uint32_t h[4] = {0, 0, 0, 0};
        for (int k = 0; k < n_blk; ++k)
            h[k] = kQ41 ? load_u32(g + k * kBytes) : load_u16(g + k * kBytes);
        const __m128i dm = _mm_setr_epi32(static_cast<int>(h[0]), static_cast<int>(h[1]),
                                          static_cast<int>(h[2]), static_cast<int>(h[3]));
        const __m256 prod = _mm256_mul_ps(_mm256_cvtph_ps(dm), _mm256_load_ps(px.scales + 8 * t));
        if (kQ41) acc_m = _mm256_add_ps(acc_m, prod);
        for (int p = 0; p < 2; ++p) {
            const uint8_t* b0 = g + 2 * p * kBytes;
            const __m128i q0 = 2 * p < n_blk
                                   ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(b0 + kQsOff))
                                   : _mm_setzero_si128();
            const __m128i q1 =
                2 * p + 1 < n_blk
                    ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(b0 + kBytes + kQsOff))
                    : _mm_setzero_si128();
            const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(q0), q1, 1);
            const __m256i lo = _mm256_and_si256(v, m4);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            // int16 pair sums: at most 2 * 15 * 127 each, 7620 for low + high: no overflow.
            const __m256i s16 =
                _mm256_add_epi16(_mm256_maddubs_epi16(lo, load256(px.qs + 128 * t + 32 * p)),
                                 _mm256_maddubs_epi16(hi, load256(px.qs + 128 * t + 64 + 32 * p)));
            __m256i i32 = _mm256_madd_epi16(s16, ones);
            if (!kQ41) i32 = _mm256_add_epi32(i32, load256(px.init + 32 * t + 8 * p));
            const __m256 sc = _mm256_permutevar8x32_ps(prod, bcast[p]);
            if (p == 0)
                acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i32), sc, acc0);
            else
                acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i32), sc, acc1);
        }
    };
    const int64_t n_full = nb / 4;
    for (int64_t t = 0; t < n_full; ++t) step(t, 4);
    if (nb % 4) step(n_full, static_cast<int>(nb % 4));
    float y = hsum(_mm256_add_ps(acc0, acc1));
    if (kQ41) {
        // m*dx*s terms: odd lanes
        y += hsum(_mm256_and_ps(
            acc_m, _mm256_castsi256_ps(_mm256_setr_epi32(0, -1, 0, -1, 0, -1, 0, -1))));
    }
    return y;
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
    for (int64_t r = 0; r < n_rows; ++r) y[r] = row_q4<kQ41>(row_ptr(w, w_row_bytes, r), nb, px);
}

void matvec_q4_0(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y) {
    matvec_q4<false>(n_cols, n_rows, w, w_row_bytes, x, y);
}

void matvec_q4_1(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y) {
    matvec_q4<true>(n_cols, n_rows, w, w_row_bytes, x, y);
}

// Q8_0: signed x signed; maddubs takes |w| (unsigned; at most 128) against x carrying w's sign.
float row_q8_0(const uint8_t* wr, int64_t nb, const Prep& px) {
    constexpr int64_t kBytes = sizeof(BlockQ8_0);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
    auto step = [&](int64_t t, int n_blk) {
        const uint8_t* g = wr + 4 * t * kBytes;
        _mm_prefetch(reinterpret_cast<const char*>(g) + kPrefetchBytes, _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(g) + kPrefetchBytes + 64, _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(g) + kPrefetchBytes + 128, _MM_HINT_T0);
        uint64_t h = 0;
        for (int k = 0; k < n_blk; ++k)
            h |= static_cast<uint64_t>(load_u16(g + k * kBytes)) << (16 * k);
        const __m128 sc = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi64_si128(static_cast<long long>(h))),
                                     _mm_load_ps(px.scales + 8 * t));
        const __m256 sc256 = _mm256_castps128_ps256(sc);
        for (int k = 0; k < n_blk; ++k) {
            const __m256i q = load256(g + k * kBytes + 2);
            const __m256i xq = load256(px.qs + 128 * t + 32 * k);
            const __m256i p = _mm256_madd_epi16(
                _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(xq, q)), ones);
            const __m256 s = _mm256_permutevar8x32_ps(sc256, _mm256_set1_epi32(k));
            if (k % 2 == 0)
                acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), s, acc0);
            else
                acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), s, acc1);
        }
    };
    const int64_t n_full = nb / 4;
    for (int64_t t = 0; t < n_full; ++t) step(t, 4);
    if (nb % 4) step(n_full, static_cast<int>(nb % 4));
    return hsum(_mm256_add_ps(acc0, acc1));
}

void matvec_q8_0(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y) {
    const int64_t nb = n_cols / kQK;
    Prep px{};
    if (!prep_quads(static_cast<const BlockQ8A*>(x), nb, QuadKind::Q8_0, px)) {
        return ref::matvec_q8_0(n_cols, n_rows, w, w_row_bytes, x, y);
    }
    for (int64_t r = 0; r < n_rows; ++r) y[r] = row_q8_0(row_ptr(w, w_row_bytes, r), nb, px);
}

// Q4_K/Q5_K: per super-block, 8 sub-blocks of 32 meet 8 activation blocks one to one.
template <bool kQ5>
void matvec_q45_k(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                  float* y) {
    const auto* xb = static_cast<const BlockQ8A*>(x);
    const int64_t nsb = n_cols / kQKK;
    constexpr int64_t kBytes = kQ5 ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K);
    constexpr int kQsOff = kQ5 ? 48 : 16;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int64_t r = 0; r < n_rows; ++r) {
        const uint8_t* wr = row_ptr(w, w_row_bytes, r);
        __m256 acc = _mm256_setzero_ps();
        float acc_m = 0.0f;
        for (int64_t s = 0; s < nsb; ++s) {
            const uint8_t* blk = wr + s * kBytes;
            _mm_prefetch(reinterpret_cast<const char*>(blk) + kBytes * 2, _MM_HINT_T0);
            _mm_prefetch(reinterpret_cast<const char*>(blk) + kBytes * 2 + 64, _MM_HINT_T0);
            _mm_prefetch(reinterpret_cast<const char*>(blk) + kBytes * 2 + 128, _MM_HINT_T0);
            uint8_t scm[16];
            unpack_scales_k4(blk + 4, scm);
            const float d = half(blk), dmin = half(blk + 2);
            const BlockQ8A* xs = xb + s * 8;
            __m256i qh = kQ5 ? load256(blk + 16) : _mm256_setzero_si256();
            for (int c = 0; c < 4; ++c) {
                const __m256i q = load256(blk + kQsOff + 32 * c);
                __m256i lo = _mm256_and_si256(q, m4);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                if (kQ5) {
                    // Fifth bit of sub-block j is bit j of qh[l]; shift qh so that bit lands on
                    // bit 4 of each byte (bits moved across bytes by the 16-bit shift are masked).
                    const __m256i b16 = _mm256_set1_epi8(0x10);
                    lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(qh, 4), b16));
                    hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16(qh, 3), b16));
                    qh = _mm256_srli_epi16(qh, 2);
                }
                const int j0 = 2 * c, j1 = 2 * c + 1;
                const __m256i p0 = dot_u8s8(lo, load256(xs[j0].qs));
                const __m256i p1 = dot_u8s8(hi, load256(xs[j1].qs));
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d * static_cast<float>(scm[j0]) * xs[j0].d),
                                      _mm256_cvtepi32_ps(p0), acc);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d * static_cast<float>(scm[j1]) * xs[j1].d),
                                      _mm256_cvtepi32_ps(p1), acc);
            }
            float mins = 0.0f;
            for (int j = 0; j < 8; ++j)
                mins += static_cast<float>(scm[8 + j]) * xs[j].d * static_cast<float>(xs[j].s);
            acc_m += dmin * mins;
        }
        y[r] = hsum(acc) - acc_m;
    }
}

void matvec_q4_k(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y) {
    matvec_q45_k<false>(n_cols, n_rows, w, w_row_bytes, x, y);
}
void matvec_q5_k(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y) {
    matvec_q45_k<true>(n_cols, n_rows, w, w_row_bytes, x, y);
}

void matvec_q6_k(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, const void* x,
                 float* y) {
    const auto* xb = static_cast<const BlockQ8A*>(x);
    const int64_t nsb = n_cols / kQKK;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const __m256i m30 = _mm256_set1_epi8(0x30);
    const __m256i k32 = _mm256_set1_epi8(32);
    for (int64_t r = 0; r < n_rows; ++r) {
        const uint8_t* wr = row_ptr(w, w_row_bytes, r);
        __m256 acc = _mm256_setzero_ps();
        for (int64_t s = 0; s < nsb; ++s) {
            const uint8_t* blk = wr + s * static_cast<int64_t>(sizeof(BlockQ6_K));
            for (int pf = 0; pf < 4; ++pf) {
                _mm_prefetch(reinterpret_cast<const char*>(blk) + 420 + 64 * pf, _MM_HINT_T0);
            }
            const auto* sc = reinterpret_cast<const int8_t*>(blk + 192);
            const float d = half(blk + 208);
            const BlockQ8A* xs = xb + s * 8;
            for (int h = 0; h < 2; ++h) {
                const __m256i a = load256(blk + 64 * h);
                const __m256i b = load256(blk + 64 * h + 32);
                const __m256i qh = load256(blk + 128 + 32 * h);
                // The four 32-element groups of this half (see ref q6k_values); the two high
                // bits are moved to bits 4-5 of each byte.
                const __m256i q[4] = {
                    _mm256_or_si256(_mm256_and_si256(a, m4),
                                    _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30)),
                    _mm256_or_si256(_mm256_and_si256(b, m4),
                                    _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30)),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), m4),
                                    _mm256_and_si256(qh, m30)),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b, 4), m4),
                                    _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30)),
                };
                for (int k = 0; k < 4; ++k) {
                    const int j = 4 * h + k;  // activation block == 32-element group
                    const __m256i xq = load256(xs[j].qs);
                    // sum((q - 32) * x) per pair of elements, in int16 (|.| <= 2*32*127).
                    const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(q[k], xq),
                                                       _mm256_maddubs_epi16(k32, xq));
                    // int16 lanes [0, 8) hold elements [0, 16): the first sub-block's scale.
                    const __m256i scales =
                        _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16(sc[2 * j])),
                                                _mm_set1_epi16(sc[2 * j + 1]), 1);
                    const __m256i isum = _mm256_madd_epi16(p, scales);
                    acc =
                        _mm256_fmadd_ps(_mm256_set1_ps(d * xs[j].d), _mm256_cvtepi32_ps(isum), acc);
                }
            }
        }
        y[r] = hsum(acc);
    }
}

// ---- dequant ------------------------------------------------------------------------------

void dequant_f16(const void* src, float* dst, int64_t n) {
    const auto* p = static_cast<const uint8_t*>(src);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8_f16(p + 2 * i));
    for (; i < n; ++i) dst[i] = _cvtsh_ss(load_u16(p + 2 * i));
}

void dequant_bf16(const void* src, float* dst, int64_t n) {
    const auto* p = static_cast<const uint8_t*>(src);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8_bf16(p + 2 * i));
    for (; i < n; ++i) dst[i] = bf16_bits(load_u16(p + 2 * i));
}

// 32 bytes -> 4 x 8 floats.
template <bool kSigned>
void store_bytes_as_float(__m256i v, __m256 scale, __m256 offset, bool add_offset, float* dst) {
    for (int k = 0; k < 4; ++k) {
        const __m128i part = k < 2 ? _mm256_castsi256_si128(v) : _mm256_extracti128_si256(v, 1);
        const __m128i eight = (k & 1) ? _mm_srli_si128(part, 8) : part;
        const __m256i wide = kSigned ? _mm256_cvtepi8_epi32(eight) : _mm256_cvtepu8_epi32(eight);
        __m256 f = _mm256_mul_ps(scale, _mm256_cvtepi32_ps(wide));
        if (add_offset) f = _mm256_add_ps(pin(f), offset);
        _mm256_storeu_ps(dst + 8 * k, f);
    }
}

void dequant_q4_0(const void* src, float* dst, int64_t n) {
    const auto* p = static_cast<const uint8_t*>(src);
    for (int64_t b = 0; b < n / kQK; ++b) {
        const uint8_t* blk = p + b * static_cast<int64_t>(sizeof(BlockQ4_0));
        const __m256i q = _mm256_sub_epi8(nibbles32(blk + 2), _mm256_set1_epi8(8));
        store_bytes_as_float<true>(q, _mm256_set1_ps(half(blk)), _mm256_setzero_ps(), false,
                                   dst + b * kQK);
    }
}

void dequant_q4_1(const void* src, float* dst, int64_t n) {
    const auto* p = static_cast<const uint8_t*>(src);
    for (int64_t b = 0; b < n / kQK; ++b) {
        const uint8_t* blk = p + b * static_cast<int64_t>(sizeof(BlockQ4_1));
        store_bytes_as_float<false>(nibbles32(blk + 4), _mm256_set1_ps(half(blk)),
                                    _mm256_set1_ps(half(blk + 2)), true, dst + b * kQK);
    }
}

void dequant_q8_0(const void* src, float* dst, int64_t n) {
    const auto* p = static_cast<const uint8_t*>(src);
    for (int64_t b = 0; b < n / kQK; ++b) {
        const uint8_t* blk = p + b * static_cast<int64_t>(sizeof(BlockQ8_0));
        store_bytes_as_float<true>(load256(blk + 2), _mm256_set1_ps(half(blk)), _mm256_setzero_ps(),
                                   false, dst + b * kQK);
    }
}

template <bool kQ5>
void dequant_q45_k(const void* src, float* dst, int64_t n) {
    const auto* p = static_cast<const uint8_t*>(src);
    constexpr int64_t kBytes = kQ5 ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K);
    constexpr int kQsOff = kQ5 ? 48 : 16;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const __m256i b16 = _mm256_set1_epi8(0x10);
    for (int64_t s = 0; s < n / kQKK; ++s) {
        const uint8_t* blk = p + s * kBytes;
        uint8_t scm[16];
        unpack_scales_k4(blk + 4, scm);
        const float d = half(blk), dmin = half(blk + 2);
        __m256i qh = kQ5 ? load256(blk + 16) : _mm256_setzero_si256();
        float* out = dst + s * kQKK;
        for (int c = 0; c < 4; ++c) {
            const __m256i q = load256(blk + kQsOff + 32 * c);
            __m256i lo = _mm256_and_si256(q, m4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            if (kQ5) {
                lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(qh, 4), b16));
                hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16(qh, 3), b16));
                qh = _mm256_srli_epi16(qh, 2);
            }
            const int j0 = 2 * c, j1 = 2 * c + 1;
            // Same rounding as the reference: (d*sc) * q, then minus (dmin*m).
            store_bytes_as_float<false>(lo, _mm256_set1_ps(d * static_cast<float>(scm[j0])),
                                        _mm256_set1_ps(-(dmin * static_cast<float>(scm[8 + j0]))),
                                        true, out + 32 * j0);
            store_bytes_as_float<false>(hi, _mm256_set1_ps(d * static_cast<float>(scm[j1])),
                                        _mm256_set1_ps(-(dmin * static_cast<float>(scm[8 + j1]))),
                                        true, out + 32 * j1);
        }
    }
}

void dequant_q4_k(const void* src, float* dst, int64_t n) {
    dequant_q45_k<false>(src, dst, n);
}
void dequant_q5_k(const void* src, float* dst, int64_t n) {
    dequant_q45_k<true>(src, dst, n);
}

void dequant_q6_k(const void* src, float* dst, int64_t n) {
    const auto* p = static_cast<const uint8_t*>(src);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const __m256i m30 = _mm256_set1_epi8(0x30);
    const __m256i k32 = _mm256_set1_epi8(32);
    for (int64_t s = 0; s < n / kQKK; ++s) {
        const uint8_t* blk = p + s * static_cast<int64_t>(sizeof(BlockQ6_K));
        const auto* sc = reinterpret_cast<const int8_t*>(blk + 192);
        const float d = half(blk + 208);
        for (int h = 0; h < 2; ++h) {
            const __m256i a = load256(blk + 64 * h);
            const __m256i b = load256(blk + 64 * h + 32);
            const __m256i qh = load256(blk + 128 + 32 * h);
            const __m256i q[4] = {
                _mm256_or_si256(_mm256_and_si256(a, m4),
                                _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30)),
                _mm256_or_si256(_mm256_and_si256(b, m4),
                                _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), m4),
                                _mm256_and_si256(qh, m30)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b, 4), m4),
                                _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30)),
            };
            for (int k = 0; k < 4; ++k) {
                const int j = 4 * h + k;
                const __m256i v = _mm256_sub_epi8(q[k], k32);
                float* out = dst + s * kQKK + 32 * j;
                // 16-element sub-blocks 2j and 2j+1 have their own scales.
                const __m256 s0 = _mm256_set1_ps(d * static_cast<float>(sc[2 * j]));
                const __m256 s1 = _mm256_set1_ps(d * static_cast<float>(sc[2 * j + 1]));
                const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
                _mm256_storeu_ps(out,
                                 _mm256_mul_ps(s0, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo))));
                _mm256_storeu_ps(out + 8, _mm256_mul_ps(s0, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                                                                _mm_srli_si128(lo, 8)))));
                _mm256_storeu_ps(out + 16,
                                 _mm256_mul_ps(s1, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi))));
                _mm256_storeu_ps(
                    out + 24, _mm256_mul_ps(s1, _mm256_cvtepi32_ps(
                                                    _mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)))));
            }
        }
    }
}

// ---- activation quantization and vector ops ----------------------------------------------

void quantize_q8a(const float* x, BlockQ8A* y, int64_t n) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < n / kQK; ++b) {
        const float* xb = x + b * kQK;
        __m256 v[4];
        __m256 amax = _mm256_setzero_ps();
        for (int k = 0; k < 4; ++k) {
            v[k] = _mm256_loadu_ps(xb + 8 * k);
            amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[k]));
        }
        const float am = hmax(amax);
        const float d = am / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const __m256 vid = _mm256_set1_ps(id);
        __m256i q[4];
        // cvtps rounds half to even under the default MXCSR mode, like the reference's nearbyint.
        for (int k = 0; k < 4; ++k) q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], vid));
        y[b].s = hsum_epi32(
            _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
        const __m256i p =
            _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        // The packs interleave 128-bit lanes: dwords come out as q0[0:4] q1[0:4] q2[0:4] q3[0:4]
        // q0[4:8] ...; put them back in element order.
        _mm256_storeu_si256(
            reinterpret_cast<__m256i*>(y[b].qs),
            _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
        y[b].d = d;
    }
}

float dot_f32(const float* a, const float* b, int64_t n) {
    return dot_row_f32(a, b, n);
}

void axpy_f32(float a, const float* x, float* y, int64_t n) {
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(y + i,
                         _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    }
    for (; i < n; ++i) y[i] += a * x[i];
}

void rmsnorm(const float* x, const float* w, float eps, float* y, int64_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
        a0 = _mm256_fmadd_ps(v0, v0, a0);
        a1 = _mm256_fmadd_ps(v1, v1, a1);
    }
    double ss = hsum(_mm256_add_ps(a0, a1));
    for (; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
    const auto scale = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
    const __m256 vs = _mm256_set1_ps(scale);
    i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs),
                                              _mm256_loadu_ps(w + i)));
    }
    for (; i < n; ++i) y[i] = x[i] * scale * w[i];
}

void silu_mul(float* g, const float* u, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(g + i);
        const __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), v));
        const __m256 s = _mm256_div_ps(v, _mm256_add_ps(one, e));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
    }
    for (; i < n; ++i) g[i] = g[i] / (1.0f + ::expf(-g[i])) * u[i];
}

float softmax(float* x, int64_t n) {
    if (n < 8) return ref::softmax(x, n);
    __m256 vmax = _mm256_loadu_ps(x);
    int64_t i = 8;
    for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
    float mx = hmax(vmax);
    for (; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
    if (mx == -INFINITY) return ref::softmax(x, n);  // all -inf: the reference's rule
    const __m256 vm = _mm256_set1_ps(mx);
    __m256 vsum = _mm256_setzero_ps();
    i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(x + i, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    double sum = hsum(vsum);
    for (; i < n; ++i) {
        x[i] = ::expf(x[i] - mx);
        sum += x[i];
    }
    const auto inv = static_cast<float>(1.0 / sum);
    const __m256 vi = _mm256_set1_ps(inv);
    i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vi));
    for (; i < n; ++i) x[i] *= inv;
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
    k.dequant[kSlotQ4_K] = dequant_q4_k;
    k.dequant[kSlotQ5_K] = dequant_q5_k;
    k.dequant[kSlotQ6_K] = dequant_q6_k;
    k.quantize_q8a = quantize_q8a;
    k.dot_f32 = dot_f32;
    k.axpy_f32 = axpy_f32;
    k.rmsnorm = rmsnorm;
    k.silu_mul = silu_mul;
    k.softmax = softmax;
}

}  // namespace attnrag::kernels::avx2
