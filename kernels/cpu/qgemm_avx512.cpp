// AVX-512 VNNI quantized GEMM (prefill): int8 activations x Q4_0/Q4_1/Q8_0/Q4_K/Q5_K/Q6_K
// weights, weight panels repacked per call so that one dpbusd serves 16 weight rows.
// GCC 12's AVX-512 headers trip -Wuninitialized where inlined (GCC PR105593), as in avx512.cpp.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstring>
#include <type_traits>

#include "kernels_impl.h"

namespace attnrag::kernels::avx512 {
// Internal linkage throughout, for the reason given in avx512.cpp.
namespace {

// How the micro-kernel works. A panel is 16 consecutive weight rows; int32/float lane r of every
// vector belongs to row r of the panel, so results need no horizontal sums: a token's 16 outputs
// are one store. Per 32-element block the panel holds eight 64-byte vectors; vector j, lane r =
// the four quants of row r at elements [4j, 4j+4), as unsigned bytes (Q4: the nibble values;
// Q8_0: q + 128). A token's activation bytes [4j, 4j+4) are broadcast to all lanes, so
// dpbusd(vector j, broadcast j) adds those four products for 16 rows at once; eight of them make
// the block's integer dot. Each block's int32 sums are then scaled in float:
//   acc += float(isum) * (d_w * d_x)          (lanes: rows, one accumulator per token)
// The format corrections are those of the reference matvec, folded in where they are free:
//   Q4_0: isum starts at -8 * s_x (the nibbles' +8 bias), exact in int32;
//   Q8_0: isum starts at -128 * s_x (undoes the +128 that makes the weights unsigned);
//   Q4_1: acc += m_w * (d_x * s_x) after the scale FMA.
// The K-quants are unpacked into the same panels, one 32-element block at a time:
//   Q4_K/Q5_K: each 32-element sub-block j is a Q4_1 block with d_w = d * sc[j] and
//   m_w = -dmin * m[j] (quants 0..15 or 0..31), so they run Q4_1's kernel;
//   Q6_K: a 32-element block spans two 16-element sub-blocks with their own scales; quants
//   0..63 with the +32 bias, so each half keeps its own int32 sum, started at -32 * (the half's
//   s_x), and acc += d_x * (float(isum_lo) * d_lo + float(isum_hi) * d_hi).
// The micro-kernel holds G panels x T tokens of accumulators (and as many int32 sums); every
// weight vector load serves T tokens and every activation broadcast G panels.
//
// Repacking costs a few gathers per block and panel, and the panel is reused by every token of
// the call; the weights themselves stay a read-only mapping.

enum class Fmt { Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K };

// How a packed block's integer sums become floats (see above): an int32 offset at the start of
// the sum (Q4_0, Q8_0), a float min term (Q4_1, Q4_K, Q5_K), or two scaled halves (Q6_K).
enum class Math { Offset, Min, Halves };

template <Fmt F>
struct FmtInfo;
template <>
struct FmtInfo<Fmt::Q4_0> {
    static constexpr int64_t kSrcBytes = sizeof(BlockQ4_0);
    static constexpr int64_t kBlockElems = kQK;
    static constexpr int64_t kQsOff = 2;
    static constexpr int32_t kCorr = -8;
    static constexpr Math kMath = Math::Offset;
};
template <>
struct FmtInfo<Fmt::Q4_1> {
    static constexpr int64_t kSrcBytes = sizeof(BlockQ4_1);
    static constexpr int64_t kBlockElems = kQK;
    static constexpr int64_t kQsOff = 4;
    static constexpr int32_t kCorr = 0;
    static constexpr Math kMath = Math::Min;
};
template <>
struct FmtInfo<Fmt::Q8_0> {
    static constexpr int64_t kSrcBytes = sizeof(BlockQ8_0);
    static constexpr int64_t kBlockElems = kQK;
    static constexpr int64_t kQsOff = 2;
    static constexpr int32_t kCorr = -128;
    static constexpr Math kMath = Math::Offset;
};
template <>
struct FmtInfo<Fmt::Q4_K> {
    static constexpr int64_t kSrcBytes = sizeof(BlockQ4_K);
    static constexpr int64_t kBlockElems = kQKK;
    static constexpr Math kMath = Math::Min;
};
template <>
struct FmtInfo<Fmt::Q5_K> {
    static constexpr int64_t kSrcBytes = sizeof(BlockQ5_K);
    static constexpr int64_t kBlockElems = kQKK;
    static constexpr Math kMath = Math::Min;
};
template <>
struct FmtInfo<Fmt::Q6_K> {
    static constexpr int64_t kSrcBytes = sizeof(BlockQ6_K);
    static constexpr int64_t kBlockElems = kQKK;
    static constexpr Math kMath = Math::Halves;
};

template <Fmt F>
constexpr bool kIsK = FmtInfo<F>::kBlockElems == kQKK;

constexpr int kPanelRows = 16;
// Packed block of a panel: quants [8][64] bytes, then d_w [16] f32, then (Min) m_w [16] f32 or
// (Halves) d_w of the second half [16] f32.
constexpr int64_t kQuantBytes = 512;
template <Fmt F>
constexpr int64_t kPackedBytes =
    FmtInfo<F>::kMath == Math::Offset ? kQuantBytes + 64 : kQuantBytes + 128;

// Micro-kernel shape: panels x tokens. Per block, each (panel, token) pair costs 8 dpbusd and
// 3-4 float ops (cvt, mul, fma, Q4_1's min fma), all in the 512-bit vector pipes, which bound the
// kernel (~330 GFLOP/s-equivalent per Zen 4 core, Q4_1; 8 independent dpbusd chains hide their
// latency). 2 x 4, 2 x 6, 1 x 8 and 3 x 4 measured alike (bench_qgemm and prefill); 2 x 4 uses
// the fewest registers (8 float accumulators, 8 int32 sums, 2 weight vectors, 1 broadcast).
constexpr int kG = 2;
constexpr int kT = 4;
// Weight panels packed at a time: a chunk is revisited by every token group, so it should stay
// in L2 (1 MiB per core on the target) next to the activations.
constexpr int64_t kChunkBytes = 256 * 1024;

// Local min/max rather than std::min/std::max: an instance of those emitted out of line here
// (as at -O0) would be compiled for AVX-512 and could be the copy the linker keeps.
int64_t min64(int64_t a, int64_t b) {
    return a < b ? a : b;
}
int64_t max64(int64_t a, int64_t b) {
    return a > b ? a : b;
}

int32_t load_i32(const void* p) {
    int32_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

void prefetch(const uint8_t* p) {
    _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0);
}

// Prefetches [p, p + bytes).
void prefetch_range(const uint8_t* p, int64_t bytes) {
    for (int64_t off = 0; off < bytes; off += 64) prefetch(p + off);
}

// Rows [0, n_valid) of the panel starting at w (row stride `stride`) -> out [nb][kPackedBytes].
// Lanes of absent rows get zero scales (and zero quants), so they add nothing.
// The weights come from DRAM (a layer's matrices are read once per call) and the gathers touch
// 16 rows at once, which the hardware prefetchers do not follow; so while packing this panel,
// the next one's bytes [next, next + next_bytes) are prefetched, a share per block.
template <Fmt F>
void pack_panel(const uint8_t* w, size_t stride, int64_t n_valid, int64_t nb, uint8_t* out,
                const uint8_t* next, int64_t next_bytes) {
    const int64_t pf_share = (next_bytes + nb - 1) / nb;
    using Info = FmtInfo<F>;
    const auto valid =
        static_cast<__mmask16>(n_valid >= kPanelRows ? 0xffffu : (1u << n_valid) - 1u);
    const __m512i idx =
        _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_epi32(static_cast<int>(stride)));
    const __m512i zero = _mm512_setzero_si512();
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* src = w + b * Info::kSrcBytes;
        uint8_t* dst = out + b * kPackedBytes<F>;
        if (next != nullptr) prefetch_range(next + b * pf_share, pf_share);
        // Dword 0 of each row's block: d (Q4_1: d, m) as f16; Q4_0/Q8_0's upper half is quants.
        const __m512i head = _mm512_mask_i32gather_epi32(zero, valid, idx, src, 1);
        _mm512_store_ps(dst + kQuantBytes, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(head)));
        if constexpr (F == Fmt::Q4_1) {
            _mm512_store_ps(dst + kQuantBytes + 64,
                            _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(head, 16))));
        }
        if constexpr (F == Fmt::Q8_0) {
            const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
            for (int j = 0; j < 8; ++j) {
                const __m512i g =
                    _mm512_mask_i32gather_epi32(zero, valid, idx, src + Info::kQsOff + 4 * j, 1);
                _mm512_store_si512(dst + 64 * j, _mm512_xor_si512(g, flip));
            }
        } else {
            // Byte i holds element i (low nibble) and element i + 16 (high nibble).
            for (int j = 0; j < 4; ++j) {
                const __m512i g =
                    _mm512_mask_i32gather_epi32(zero, valid, idx, src + Info::kQsOff + 4 * j, 1);
                _mm512_store_si512(dst + 64 * j, _mm512_and_si512(g, m4));
                _mm512_store_si512(dst + 64 * (j + 4),
                                   _mm512_and_si512(_mm512_srli_epi16(g, 4), m4));
            }
        }
    }
}

// One K-quant super-block -> its 256 quants as unsigned bytes in element order (Q4_K 0..15,
// Q5_K 0..31, Q6_K 0..63 before its -32 bias) and, per 32-element block j, the two floats the
// packed block holds for this row: Q4_K/Q5_K {d * sc[j], -dmin * m[j]}; Q6_K {d * sc[2j],
// d * sc[2j + 1]}. The bit layouts are those of the reference decoders (ref.cpp).
template <Fmt F>
void unpack_k(const uint8_t* src, uint8_t* u, float* f0, float* f1) {
    if constexpr (F == Fmt::Q6_K) {
        BlockQ6_K b;
        std::memcpy(&b, src, sizeof b);
        for (int h = 0; h < 2; ++h) {
            const uint8_t* ql = b.ql + 64 * h;
            const uint8_t* qh = b.qh + 32 * h;
            uint8_t* out = u + 128 * h;
            for (int l = 0; l < 32; ++l) {
                out[l] = static_cast<uint8_t>((ql[l] & 0x0f) | ((qh[l] & 3) << 4));
                out[l + 32] = static_cast<uint8_t>((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4));
                out[l + 64] = static_cast<uint8_t>((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
                out[l + 96] = static_cast<uint8_t>((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
            }
        }
        const float d = f16_to_f32(b.d);
        for (int j = 0; j < 8; ++j) {
            f0[j] = d * static_cast<float>(b.scales[2 * j]);
            f1[j] = d * static_cast<float>(b.scales[2 * j + 1]);
        }
    } else {
        using Block = std::conditional_t<F == Fmt::Q4_K, BlockQ4_K, BlockQ5_K>;
        Block b;
        std::memcpy(&b, src, sizeof b);
        for (int c = 0; c < 4; ++c) {
            for (int l = 0; l < 32; ++l) {
                u[64 * c + l] = b.qs[32 * c + l] & 0x0f;
                u[64 * c + 32 + l] = static_cast<uint8_t>(b.qs[32 * c + l] >> 4);
            }
        }
        if constexpr (F == Fmt::Q5_K) {
            for (int j = 0; j < 8; ++j) {
                for (int l = 0; l < 32; ++l)
                    u[32 * j + l] =
                        static_cast<uint8_t>(u[32 * j + l] | (((b.qh[l] >> j) & 1) << 4));
            }
        }
        uint8_t scm[16];
        unpack_scales_k4(b.scales, scm);
        const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
        for (int j = 0; j < 8; ++j) {
            f0[j] = d * static_cast<float>(scm[j]);
            f1[j] = -(dmin * static_cast<float>(scm[8 + j]));
        }
    }
}

// pack_panel for the K-quants: rows are unpacked one super-block at a time (their bit layouts
// do not gather) and their dwords scattered to the row's lane. The next panel's rows are
// prefetched row by row as this panel's are read.
template <Fmt F>
void pack_panel_k(const uint8_t* w, size_t stride, int64_t n_valid, int64_t nb, uint8_t* out,
                  const uint8_t* next, int64_t row_data_bytes) {
    constexpr int64_t kPB = kPackedBytes<F>;
    const int64_t nsb = nb / 8;
    const int64_t n = min64(n_valid, kPanelRows);
    if (n < kPanelRows) std::memset(out, 0, static_cast<size_t>(nb * kPB));
    alignas(64) uint8_t u[kQKK];
    float f0[8], f1[8];
    for (int64_t r = 0; r < n; ++r) {
        const uint8_t* row = w + static_cast<size_t>(r) * stride;
        if (next != nullptr) prefetch_range(next + static_cast<size_t>(r) * stride, row_data_bytes);
        for (int64_t sb = 0; sb < nsb; ++sb) {
            unpack_k<F>(row + sb * FmtInfo<F>::kSrcBytes, u, f0, f1);
            for (int j = 0; j < 8; ++j) {
                uint8_t* dst = out + (8 * sb + j) * kPB;
                for (int i = 0; i < 8; ++i)
                    std::memcpy(dst + 64 * i + 4 * r, u + 32 * j + 4 * i, 4);
                std::memcpy(dst + kQuantBytes + 4 * r, &f0[j], 4);
                std::memcpy(dst + kQuantBytes + 64 + 4 * r, &f1[j], 4);
            }
        }
    }
}

// Per token and block, the activation term the micro-kernel cannot read from BlockQ8A directly:
// the int32 start of the dot (Offset), d_x * s_x (Min), or the int32 starts of both halves
// (Halves: -32 times the sum of each half's quants).
struct HalfStarts {
    int32_t lo, hi;
};
template <Fmt F>
using Aux =
    std::conditional_t<FmtInfo<F>::kMath == Math::Min, float,
                       std::conditional_t<FmtInfo<F>::kMath == Math::Halves, HalfStarts, int32_t>>;

template <Fmt F>
Aux<F> aux_of(const BlockQ8A& xb) {
    if constexpr (FmtInfo<F>::kMath == Math::Min) {
        return xb.d * static_cast<float>(xb.s);
    } else if constexpr (FmtInfo<F>::kMath == Math::Halves) {
        int32_t lo = 0, hi = 0;
        for (int i = 0; i < kQK / 2; ++i) {
            lo += xb.qs[i];
            hi += xb.qs[kQK / 2 + i];
        }
        return HalfStarts{-32 * lo, -32 * hi};
    } else {
        return FmtInfo<F>::kCorr * xb.s;
    }
}

// isum[g][t] += the dot products of packed vectors [j0, j1) of block b (G panels, panel_bytes
// apart) with token t's activation bytes [4 j0, 4 j1): one dpbusd per panel, token and vector.
template <int G, int T>
inline void dot_steps(const uint8_t* pb, int64_t panel_bytes, const BlockQ8A* const* xt, int64_t b,
                      int j0, int j1, __m512i (&isum)[G][T]) {
    for (int j = j0; j < j1; ++j) {
        __m512i wv[G];
        for (int g = 0; g < G; ++g) wv[g] = _mm512_load_si512(pb + g * panel_bytes + 64 * j);
        for (int t = 0; t < T; ++t) {
            const __m512i xv = _mm512_set1_epi32(load_i32(xt[t][b].qs + 4 * j));
            for (int g = 0; g < G; ++g) isum[g][t] = _mm512_dpbusd_epi32(isum[g][t], wv[g], xv);
        }
    }
}

// One packed Q6_K block into acc: each half's four dpbusd per (panel, token), then
// acc += d_x * (float(isum_lo) * d_lo + float(isum_hi) * d_hi).
template <int G, int T>
inline void halves_block(const uint8_t* pb, int64_t panel_bytes, const BlockQ8A* const* xt,
                         int64_t b, const HalfStarts* ab, __m512 (&acc)[G][T]) {
    __m512 part[G][T];
    for (int h = 0; h < 2; ++h) {
        __m512i isum[G][T];
        for (int t = 0; t < T; ++t) {
            const __m512i start = _mm512_set1_epi32(h == 0 ? ab[t].lo : ab[t].hi);
            for (int g = 0; g < G; ++g) isum[g][t] = start;
        }
        dot_steps<G, T>(pb, panel_bytes, xt, b, 4 * h, 4 * h + 4, isum);
        for (int g = 0; g < G; ++g) {
            const __m512 dw = _mm512_load_ps(pb + g * panel_bytes + kQuantBytes + 64 * h);
            for (int t = 0; t < T; ++t) {
                const __m512 f = _mm512_cvtepi32_ps(isum[g][t]);
                part[g][t] = h == 0 ? _mm512_mul_ps(f, dw) : _mm512_fmadd_ps(f, dw, part[g][t]);
            }
        }
    }
    for (int t = 0; t < T; ++t) {
        const __m512 dx = _mm512_set1_ps(xt[t][b].d);
        for (int g = 0; g < G; ++g) acc[g][t] = _mm512_fmadd_ps(part[g][t], dx, acc[g][t]);
    }
}

// y[t*ldy + 16g + r] for the G panels at `pw` (panel_bytes apart) and the T tokens xt[t]
// (n_tok of them stored; the rest repeat a valid token). aux: [nb][T]. keep[g]: rows to store.
template <Fmt F, int G, int T>
void micro_kernel(const uint8_t* pw, int64_t panel_bytes, int64_t nb, const BlockQ8A* const* xt,
                  const Aux<F>* aux, float* y, int64_t ldy, const __mmask16* keep, int n_tok) {
    __m512 acc[G][T];
    for (int g = 0; g < G; ++g)
        for (int t = 0; t < T; ++t) acc[g][t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* pb = pw + b * kPackedBytes<F>;
        const Aux<F>* ab = aux + b * T;
        if constexpr (FmtInfo<F>::kMath == Math::Halves) {
            halves_block<G, T>(pb, panel_bytes, xt, b, ab, acc);
            continue;
        }
        __m512i isum[G][T];
        for (int t = 0; t < T; ++t) {
            __m512i start = _mm512_setzero_si512();
            if constexpr (FmtInfo<F>::kMath == Math::Offset) start = _mm512_set1_epi32(ab[t]);
            for (int g = 0; g < G; ++g) isum[g][t] = start;
        }
        dot_steps<G, T>(pb, panel_bytes, xt, b, 0, 8, isum);
        for (int g = 0; g < G; ++g) {
            const __m512 dw = _mm512_load_ps(pb + g * panel_bytes + kQuantBytes);
            for (int t = 0; t < T; ++t) {
                const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(xt[t][b].d));
                acc[g][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[g][t]), scale, acc[g][t]);
            }
            if constexpr (FmtInfo<F>::kMath == Math::Min) {
                const __m512 mw = _mm512_load_ps(pb + g * panel_bytes + kQuantBytes + 64);
                for (int t = 0; t < T; ++t)
                    acc[g][t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(ab[t]), acc[g][t]);
            }
        }
    }
    for (int t = 0; t < T; ++t) {
        if (t >= n_tok) break;
        for (int g = 0; g < G; ++g)
            _mm512_mask_storeu_ps(y + t * ldy + kPanelRows * g, keep[g], acc[g][t]);
    }
}

__mmask16 rows_mask(int64_t n) {
    if (n <= 0) return 0;
    return static_cast<__mmask16>(n >= kPanelRows ? 0xffffu : (1u << n) - 1u);
}

template <Fmt F>
void gemm_ref(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, int64_t m,
              const BlockQ8A* x, int64_t x_row_blocks, float* y, int64_t ldy) {
    if constexpr (F == Fmt::Q4_0) {
        ref::gemm_q8_q4_0(n_cols, n_rows, w, w_row_bytes, m, x, x_row_blocks, y, ldy);
    } else if constexpr (F == Fmt::Q4_1) {
        ref::gemm_q8_q4_1(n_cols, n_rows, w, w_row_bytes, m, x, x_row_blocks, y, ldy);
    } else if constexpr (F == Fmt::Q8_0) {
        ref::gemm_q8_q8_0(n_cols, n_rows, w, w_row_bytes, m, x, x_row_blocks, y, ldy);
    } else if constexpr (F == Fmt::Q4_K) {
        ref::gemm_q8_q4_k(n_cols, n_rows, w, w_row_bytes, m, x, x_row_blocks, y, ldy);
    } else if constexpr (F == Fmt::Q5_K) {
        ref::gemm_q8_q5_k(n_cols, n_rows, w, w_row_bytes, m, x, x_row_blocks, y, ldy);
    } else {
        ref::gemm_q8_q6_k(n_cols, n_rows, w, w_row_bytes, m, x, x_row_blocks, y, ldy);
    }
}

template <Fmt F>
void gemm(int64_t n_cols, int64_t n_rows, const void* w, size_t w_row_bytes, int64_t m,
          const BlockQ8A* x, int64_t x_row_blocks, float* y, int64_t ldy) {
    if (m <= 0 || n_rows <= 0) return;
    const int64_t nb = n_cols / kQK;
    // Bytes of one row's blocks (a row's padding, if any, excluded).
    const int64_t row_data_bytes = n_cols / FmtInfo<F>::kBlockElems * FmtInfo<F>::kSrcBytes;
    const int64_t n_panels = (n_rows + kPanelRows - 1) / kPanelRows;
    const int64_t panel_bytes = nb * kPackedBytes<F>;
    const int64_t chunk = min64(n_panels, max64(kG, kChunkBytes / max64(panel_bytes, 1)));
    const int64_t n_groups = (m + kT - 1) / kT;
    const size_t w_bytes = static_cast<size_t>(chunk * panel_bytes);
    const size_t aux_bytes = static_cast<size_t>(n_groups * nb * kT) * sizeof(Aux<F>);
    auto* base = static_cast<uint8_t*>(detail::thread_scratch(w_bytes + aux_bytes));
    // The gathers index rows with int32 offsets.
    if (base == nullptr || nb == 0 || w_row_bytes > static_cast<size_t>(INT32_MAX / kPanelRows)) {
        return gemm_ref<F>(n_cols, n_rows, w, w_row_bytes, m, x, x_row_blocks, y, ldy);
    }
    uint8_t* packed = base;
    auto* aux = reinterpret_cast<Aux<F>*>(base + w_bytes);
    // Tokens past m repeat the last one (computed, never stored).
    auto token = [&](int64_t grp, int t) { return min64(grp * kT + t, m - 1); };
    for (int64_t grp = 0; grp < n_groups; ++grp) {
        for (int t = 0; t < kT; ++t) {
            const BlockQ8A* xr = x + token(grp, t) * x_row_blocks;
            Aux<F>* a = aux + grp * nb * kT + t;
            for (int64_t b = 0; b < nb; ++b) a[b * kT] = aux_of<F>(xr[b]);
        }
    }
    const auto* wb = static_cast<const uint8_t*>(w);
    // A panel's source: rows [r, r + 16) from their first byte to the end of the last row's data
    // (its padding excluded: the matrix may end there).
    struct Span {
        const uint8_t* p;
        int64_t bytes;
    };
    auto panel_src = [&](int64_t panel) {
        const int64_t r = panel * kPanelRows;
        const int64_t n = min64(kPanelRows, n_rows - r);
        return Span{wb + static_cast<size_t>(r) * w_row_bytes,
                    (n - 1) * static_cast<int64_t>(w_row_bytes) + row_data_bytes};
    };
    prefetch_range(panel_src(0).p, panel_src(0).bytes);
    for (int64_t p0 = 0; p0 < n_panels; p0 += chunk) {
        const int64_t np = min64(chunk, n_panels - p0);
        for (int64_t p = 0; p < np; ++p) {
            const int64_t panel = p0 + p;
            const Span next = panel + 1 < n_panels ? panel_src(panel + 1) : Span{nullptr, 0};
            if constexpr (kIsK<F>) {
                pack_panel_k<F>(panel_src(panel).p, w_row_bytes, n_rows - panel * kPanelRows, nb,
                                packed + p * panel_bytes, next.p, row_data_bytes);
            } else {
                pack_panel<F>(panel_src(panel).p, w_row_bytes, n_rows - panel * kPanelRows, nb,
                              packed + p * panel_bytes, next.p, next.bytes);
            }
        }
        for (int64_t grp = 0; grp < n_groups; ++grp) {
            const BlockQ8A* xt[kT];
            for (int t = 0; t < kT; ++t) xt[t] = x + token(grp, t) * x_row_blocks;
            const int n_tok = static_cast<int>(min64(kT, m - grp * kT));
            const Aux<F>* ag = aux + grp * nb * kT;
            float* yg = y + grp * kT * ldy;
            int64_t p = 0;
            for (; p + kG <= np; p += kG) {
                const int64_t r = (p0 + p) * kPanelRows;
                __mmask16 keep[kG];
                for (int g = 0; g < kG; ++g) keep[g] = rows_mask(n_rows - r - kPanelRows * g);
                micro_kernel<F, kG, kT>(packed + p * panel_bytes, panel_bytes, nb, xt, ag, yg + r,
                                        ldy, keep, n_tok);
            }
            for (; p < np; ++p) {
                const int64_t r = (p0 + p) * kPanelRows;
                const __mmask16 keep[1] = {rows_mask(n_rows - r)};
                micro_kernel<F, 1, kT>(packed + p * panel_bytes, panel_bytes, nb, xt, ag, yg + r,
                                       ldy, keep, n_tok);
            }
        }
    }
}

}  // namespace

void fill_gemm_table(CpuKernels& k) {
    // gemm<F> has GemmQ8Fn's signature.
    k.gemm_q8[kSlotQ4_0] = gemm<Fmt::Q4_0>;
    k.gemm_q8[kSlotQ4_1] = gemm<Fmt::Q4_1>;
    k.gemm_q8[kSlotQ8_0] = gemm<Fmt::Q8_0>;
    k.gemm_q8[kSlotQ4_K] = gemm<Fmt::Q4_K>;
    k.gemm_q8[kSlotQ5_K] = gemm<Fmt::Q5_K>;
    k.gemm_q8[kSlotQ6_K] = gemm<Fmt::Q6_K>;
}

}  // namespace attnrag::kernels::avx512
