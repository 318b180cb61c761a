// CPU kernels: every op x type x odd shape at every available SIMD level against the scalar
// reference.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <complex>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "attnrag/kernels/cpu.hpp"
#include "attnrag/kernels/types.hpp"
#include "guarded_buffer.hpp"
#include "random_k_quant.hpp"

using namespace attnrag::kernels;

namespace {

constexpr DType kAllTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q4_0, DType::Q4_1,
                               DType::Q8_0, DType::Q4_K, DType::Q5_K, DType::Q6_K};

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

uint32_t bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
float from_bits(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

void put_u16(uint8_t* p, uint16_t v) {
    std::memcpy(p, &v, 2);
}

// ---- test-side quantizers: simple, not ggml's search, just valid blocks ------------------

void quantize_row(DType t, const float* x, int64_t n, uint8_t* out, std::mt19937& rng) {
    switch (t) {
        case DType::F32: std::memcpy(out, x, static_cast<size_t>(n) * 4); return;
        case DType::F16:
            for (int64_t i = 0; i < n; ++i) put_u16(out + 2 * i, f32_to_f16(x[i]));
            return;
        case DType::BF16:
            for (int64_t i = 0; i < n; ++i) put_u16(out + 2 * i, f32_to_bf16(x[i]));
            return;
        case DType::Q4_0:
            for (int64_t b = 0; b < n / 32; ++b) {
                BlockQ4_0 blk{};
                const float* xb = x + 32 * b;
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
            }
            return;
        case DType::Q4_1:
            for (int64_t b = 0; b < n / 32; ++b) {
                BlockQ4_1 blk{};
                const float* xb = x + 32 * b;
                const float lo = *std::min_element(xb, xb + 32),
                            hi = *std::max_element(xb, xb + 32);
                const float d = (hi - lo) / 15.0f;
                const float id = d != 0.0f ? 1.0f / d : 0.0f;
                for (int i = 0; i < 16; ++i) {
                    const int q0 =
                        std::clamp(static_cast<int>(std::lround((xb[i] - lo) * id)), 0, 15);
                    const int q1 =
                        std::clamp(static_cast<int>(std::lround((xb[i + 16] - lo) * id)), 0, 15);
                    blk.qs[i] = static_cast<uint8_t>(q0 | (q1 << 4));
                }
                blk.d = f32_to_f16(d);
                blk.m = f32_to_f16(lo);
                std::memcpy(out + b * sizeof blk, &blk, sizeof blk);
            }
            return;
        case DType::Q8_0:
            for (int64_t b = 0; b < n / 32; ++b) {
                BlockQ8_0 blk{};
                const float* xb = x + 32 * b;
                float amax = 0.0f;
                for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(xb[i]));
                const float d = amax / 127.0f;
                const float id = d != 0.0f ? 1.0f / d : 0.0f;
                for (int i = 0; i < 32; ++i)
                    blk.qs[i] = static_cast<int8_t>(std::lround(xb[i] * id));
                // Exercise the extreme -128 too (valid in the format, never made by ggml).
                if (b % 5 == 3) blk.qs[b % 32] = -128;
                blk.d = f32_to_f16(d);
                std::memcpy(out + b * sizeof blk, &blk, sizeof blk);
            }
            return;
        case DType::Q4_K:
        case DType::Q5_K:
        case DType::Q6_K: {
            // Random bits everywhere, finite positive scales: exercises every decode path.
            attnrag::test::random_k_quant_row(t, n, out, rng, 0.001f, 0.02f);
            return;
        }
    }
}

std::vector<float> random_floats(int64_t n, std::mt19937& rng, float scale = 1.0f) {
    std::normal_distribution<float> nd(0.0f, scale);
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& f : v) f = nd(rng);
    return v;
}

struct Matrix {
    std::vector<uint8_t> data;
    size_t stride = 0;
};

Matrix make_matrix(DType t, int64_t n_rows, int64_t n_cols, size_t pad, std::mt19937& rng) {
    Matrix m;
    m.stride = row_bytes(t, n_cols) + pad;
    m.data.assign(m.stride * static_cast<size_t>(n_rows) + 64, 0xcd);
    for (int64_t r = 0; r < n_rows; ++r) {
        const std::vector<float> x = random_floats(n_cols, rng);
        quantize_row(t, x.data(), n_cols, m.data.data() + m.stride * static_cast<size_t>(r), rng);
    }
    return m;
}

// ---- test-side K-quant decoders, written after ggml's dequantize_row_q*_K loop structure
// (independent of the library's reference, which decodes differently) --------------------

void scale_min_k4(int j, const uint8_t* q, int& d, int& m) {
    if (j < 4) {
        d = q[j] & 63;
        m = q[j + 4] & 63;
    } else {
        d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

void ggml_style_q4_k(const BlockQ4_K& b, double* y) {
    const double d = f16_to_f32(b.d), mn = f16_to_f32(b.dmin);
    const uint8_t* q = b.qs;
    int is = 0;
    for (int j = 0; j < 256; j += 64) {
        int sc, m;
        scale_min_k4(is, b.scales, sc, m);
        const double d1 = d * sc, m1 = mn * m;
        scale_min_k4(is + 1, b.scales, sc, m);
        const double d2 = d * sc, m2 = mn * m;
        for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
        for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
        q += 32;
        is += 2;
    }
}

void ggml_style_q5_k(const BlockQ5_K& b, double* y) {
    const double d = f16_to_f32(b.d), mn = f16_to_f32(b.dmin);
    const uint8_t* ql = b.qs;
    int is = 0;
    unsigned u1 = 1, u2 = 2;
    for (int j = 0; j < 256; j += 64) {
        int sc, m;
        scale_min_k4(is, b.scales, sc, m);
        const double d1 = d * sc, m1 = mn * m;
        scale_min_k4(is + 1, b.scales, sc, m);
        const double d2 = d * sc, m2 = mn * m;
        for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0xF) + ((b.qh[l] & u1) ? 16 : 0)) - m1;
        for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + ((b.qh[l] & u2) ? 16 : 0)) - m2;
        ql += 32;
        is += 2;
        u1 <<= 2;
        u2 <<= 2;
    }
}

void ggml_style_q6_k(const BlockQ6_K& b, double* y) {
    const double d = f16_to_f32(b.d);
    const uint8_t* ql = b.ql;
    const uint8_t* qh = b.qh;
    const int8_t* sc = b.scales;
    for (int n = 0; n < 256; n += 128) {
        for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * sc[is] * q1;
            y[l + 32] = d * sc[is + 2] * q2;
            y[l + 64] = d * sc[is + 4] * q3;
            y[l + 96] = d * sc[is + 6] * q4;
        }
        y += 128;
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

std::vector<int64_t> col_sizes(DType t) {
    const int64_t be = type_traits(t)->block_elems;
    if (be == 256) return {256, 512, 256 * 3, 256 * 7};
    if (be == 32) return {32, 64, 32 * 7, 32 * 18, 32 * 33};
    return {1, 7, 33, 64, 577};
}

}  // namespace

TEST_CASE("type traits, slots and row sizes") {
    for (DType t : kAllTypes) {
        const TypeTraits* tt = type_traits(t);
        REQUIRE(tt != nullptr);
        CHECK(type_traits(static_cast<uint32_t>(t)) == tt);
        CHECK(kernel_type_index(t) >= 0);
        CHECK(kernel_type_index(t) < 9);
        CHECK(row_bytes(t, tt->block_elems * 3) == 3 * tt->block_bytes);
    }
    CHECK(kernel_type_index(DType::F32) == 0);
    CHECK(kernel_type_index(DType::F16) == 1);
    CHECK(kernel_type_index(DType::BF16) == 2);
    CHECK(kernel_type_index(DType::Q4_0) == 3);
    CHECK(kernel_type_index(DType::Q4_1) == 4);
    CHECK(kernel_type_index(DType::Q8_0) == 5);
    CHECK(kernel_type_index(DType::Q4_K) == 6);
    CHECK(kernel_type_index(DType::Q5_K) == 7);
    CHECK(kernel_type_index(DType::Q6_K) == 8);
    CHECK(type_traits(uint32_t{6}) == nullptr);   // Q5_0: not supported
    CHECK(type_traits(uint32_t{10}) == nullptr);  // Q2_K
    CHECK(type_traits(uint32_t{999}) == nullptr);
    CHECK(row_bytes(DType::Q4_1, 576) == 18 * 20);
    CHECK(row_bytes(DType::Q6_K, 512) == 2 * 210);
    CHECK(row_bytes(DType::BF16, 7) == 14);
    CHECK(type_traits(DType::Q4_K)->quantized);
    CHECK_FALSE(type_traits(DType::BF16)->quantized);
}

TEST_CASE("simd level selection and tables") {
    const SimdLevel det = detected_simd_level();
    INFO("detected " << simd_level_name(det));
    set_simd_level(SimdLevel::Avx512);
    CHECK(active_simd_level() == det);
    for (SimdLevel l : available_levels()) {
        set_simd_level(l);
        CHECK(active_simd_level() == l);
        CHECK(cpu_kernels().level == l);
        CHECK(cpu_kernels(l).level == l);
        const CpuKernels& k = cpu_kernels(l);
        for (int i = 0; i < 9; ++i) {
            CHECK(k.matvec[i] != nullptr);
            CHECK(k.dequant[i] != nullptr);
        }
        CHECK(k.quantize_q8a != nullptr);
        CHECK(k.softmax != nullptr);
    }
    // Above the detected level one gets the detected level.
    CHECK(static_cast<int>(cpu_kernels(SimdLevel::Avx512).level) <= static_cast<int>(det));
    set_simd_level(det);
    CHECK(simd_level_name(SimdLevel::Avx2) == "avx2");
}

TEST_CASE("f16 conversion: special values and rounding") {
    CHECK(f32_to_f16(0.0f) == 0x0000);
    CHECK(f32_to_f16(-0.0f) == 0x8000);
    CHECK(f32_to_f16(1.0f) == 0x3c00);
    CHECK(f32_to_f16(-2.0f) == 0xc000);
    CHECK(f32_to_f16(65504.0f) == 0x7bff);
    CHECK(f32_to_f16(65519.0f) == 0x7bff);  // below the halfway point
    CHECK(f32_to_f16(65520.0f) == 0x7c00);  // tie, rounds to even = overflow
    CHECK(f32_to_f16(1e10f) == 0x7c00);
    CHECK(f32_to_f16(std::numeric_limits<float>::infinity()) == 0x7c00);
    CHECK(f32_to_f16(-std::numeric_limits<float>::infinity()) == 0xfc00);
    const uint16_t hn = f32_to_f16(std::numeric_limits<float>::quiet_NaN());
    CHECK((hn & 0x7c00) == 0x7c00);
    CHECK((hn & 0x03ff) != 0);
    CHECK(std::isnan(f16_to_f32(hn)));
    CHECK(std::isnan(f16_to_f32(0x7d00)));  // signalling pattern is still a nan
    CHECK(f16_to_f32(0x7c00) == std::numeric_limits<float>::infinity());
    CHECK(f16_to_f32(0xfc00) == -std::numeric_limits<float>::infinity());
    // Subnormals: 2^-24 is the smallest, 2^-14 the smallest normal.
    CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24));
    CHECK(f16_to_f32(0x03ff) == std::ldexp(1023.0f, -24));
    CHECK(f16_to_f32(0x0400) == std::ldexp(1.0f, -14));
    CHECK(f16_to_f32(0x8001) == -std::ldexp(1.0f, -24));
    CHECK(f32_to_f16(std::ldexp(1.0f, -24)) == 0x0001);
    CHECK(f32_to_f16(std::ldexp(1.0f, -25)) == 0x0000);  // tie -> even (0)
    CHECK(f32_to_f16(std::ldexp(1.5f, -25)) == 0x0001);  // above the tie
    CHECK(f32_to_f16(std::ldexp(3.0f, -25)) == 0x0002);  // 1.5 ulp tie -> even (2)
    CHECK(f32_to_f16(std::ldexp(1.0f, -26)) == 0x0000);
    CHECK(f32_to_f16(-std::ldexp(1.0f, -30)) == 0x8000);
    CHECK(f32_to_f16(std::ldexp(1023.5f, -24)) == 0x0400);      // rounds up into the normals
    CHECK(f32_to_f16(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);  // tie -> even
    CHECK(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);
    CHECK(f32_to_f16(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)) == 0x3c01);

    // Every non-nan half survives the round trip.
    for (uint32_t h = 0; h < 65536; ++h) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0) continue;
        const auto hh = static_cast<uint16_t>(h);
        if (f32_to_f16(f16_to_f32(hh)) != hh) FAIL("round trip of " << h);
    }

    // Random floats in the half range round to the nearest half, ties to even.
    std::mt19937 rng(7);
    std::uniform_int_distribution<uint32_t> u(0x33000000u, 0x477fffffu);
    int bad = 0;
    for (int i = 0; i < 200000; ++i) {
        const float f = from_bits(u(rng)) * ((i & 1) ? -1.0f : 1.0f);
        const uint16_t h = f32_to_f16(f);
        if ((h & 0x7fff) == 0x7c00) {  // overflow: IEEE rounding gives inf from 65520 up
            if (std::fabs(f) < 65520.0f) ++bad;
            continue;
        }
        const double v = f16_to_f32(h);
        const double e = std::fabs(v - f);
        for (int delta : {-1, 1}) {
            const int nb = (h & 0x7fff) + delta;
            if (nb < 0 || nb > 0x7bff) continue;
            const auto other = static_cast<uint16_t>((h & 0x8000) | nb);
            const double eo = std::fabs(static_cast<double>(f16_to_f32(other)) - f);
            if (eo < e || (eo == e && (h & 1) != 0)) ++bad;
        }
    }
    CHECK(bad == 0);
}

TEST_CASE("bf16 conversion: special values and rounding") {
    CHECK(f32_to_bf16(1.0f) == 0x3f80);
    CHECK(f32_to_bf16(-0.0f) == 0x8000);
    CHECK(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3f80);      // tie -> even
    CHECK(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3f82);  // tie -> even
    CHECK(f32_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)) == 0x3f81);
    CHECK(f32_to_bf16(std::numeric_limits<float>::infinity()) == 0x7f80);
    CHECK(f32_to_bf16(std::numeric_limits<float>::max()) ==
          0x7f80);  // above the last bf16 + half ulp
    CHECK(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
    // A nan whose payload lives only in the low bits must not become inf.
    CHECK(std::isnan(bf16_to_f32(f32_to_bf16(from_bits(0x7f800001u)))));
    CHECK(bf16_to_f32(0x0001) == std::ldexp(1.0f, -133));  // subnormals are plain truncations
    for (uint32_t h = 0; h < 65536; ++h) {
        if ((h & 0x7f80) == 0x7f80 && (h & 0x7f) != 0) continue;
        const auto hh = static_cast<uint16_t>(h);
        if (f32_to_bf16(bf16_to_f32(hh)) != hh) FAIL("round trip of " << h);
    }
}

TEST_CASE("K-quant reference decode matches ggml's loop structure") {
    std::mt19937 rng(11);
    for (DType t : {DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
        INFO(type_traits(t)->name);
        const Matrix m = make_matrix(t, 4, 512, 0, rng);
        std::vector<float> got(4 * 512);
        scalar().dequant[kernel_type_index(t)](m.data.data(), got.data(), 4 * 512);
        std::vector<double> want(4 * 512);
        const size_t bb = type_traits(t)->block_bytes;
        for (int b = 0; b < 8; ++b) {
            const uint8_t* p = m.data.data() + b * bb;
            if (t == DType::Q4_K) {
                BlockQ4_K blk;
                std::memcpy(&blk, p, bb);
                ggml_style_q4_k(blk, want.data() + 256 * b);
            } else if (t == DType::Q5_K) {
                BlockQ5_K blk;
                std::memcpy(&blk, p, bb);
                ggml_style_q5_k(blk, want.data() + 256 * b);
            } else {
                BlockQ6_K blk;
                std::memcpy(&blk, p, bb);
                ggml_style_q6_k(blk, want.data() + 256 * b);
            }
        }
        for (size_t i = 0; i < got.size(); ++i) {
            if (std::fabs(got[i] - want[i]) > 1e-6 * (1.0 + std::fabs(want[i]))) {
                FAIL("element " << i << ": " << got[i] << " vs " << want[i]);
            }
        }
    }
}

TEST_CASE("Q4_0/Q4_1/Q8_0 decode of hand-made blocks") {
    BlockQ4_0 a{};
    a.d = f32_to_f16(0.5f);
    a.qs[0] = 0x3f;   // element 0 = 15, element 16 = 3
    a.qs[15] = 0x80;  // element 15 = 0, element 31 = 8
    BlockQ4_1 b{};
    b.d = f32_to_f16(2.0f);
    b.m = f32_to_f16(-1.0f);
    b.qs[1] = 0x51;  // element 1 = 1, element 17 = 5
    BlockQ8_0 c{};
    c.d = f32_to_f16(0.25f);
    c.qs[31] = -128;
    c.qs[2] = 7;
    for (SimdLevel l : available_levels()) {
        INFO(simd_level_name(l));
        const CpuKernels& k = cpu_kernels(l);
        float y[32];
        k.dequant[kernel_type_index(DType::Q4_0)](&a, y, 32);
        CHECK(y[0] == 3.5f);
        CHECK(y[16] == -2.5f);
        CHECK(y[15] == -4.0f);
        CHECK(y[31] == 0.0f);
        CHECK(y[5] == -4.0f);
        k.dequant[kernel_type_index(DType::Q4_1)](&b, y, 32);
        CHECK(y[1] == 1.0f);
        CHECK(y[17] == 9.0f);
        CHECK(y[0] == -1.0f);
        k.dequant[kernel_type_index(DType::Q8_0)](&c, y, 32);
        CHECK(y[31] == -32.0f);
        CHECK(y[2] == 1.75f);
        CHECK(y[3] == 0.0f);
    }
}

TEST_CASE("dequant: every level equals the scalar reference bit for bit") {
    std::mt19937 rng(1);
    for (SimdLevel l : available_levels()) {
        const CpuKernels& k = cpu_kernels(l);
        for (DType t : kAllTypes) {
            INFO(name_of(l, t));
            for (int64_t n : col_sizes(t)) {
                CAPTURE(n);
                const Matrix m = make_matrix(t, 3, n, 0, rng);
                const int64_t total = 3 * n;
                std::vector<float> want(static_cast<size_t>(total)),
                    got(static_cast<size_t>(total) + 1, 7.0f);
                scalar().dequant[kernel_type_index(t)](m.data.data(), want.data(), total);
                k.dequant[kernel_type_index(t)](m.data.data(), got.data(), total);
                REQUIRE(std::memcmp(want.data(), got.data(), want.size() * 4) == 0);
                CHECK(got.back() == 7.0f);  // nothing written past the end
            }
        }
        // f16/bf16 over every bit pattern (nan payloads, infinities, subnormals).
        std::vector<uint16_t> all(65536);
        for (uint32_t i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
        for (DType t : {DType::F16, DType::BF16}) {
            INFO(name_of(l, t));
            std::vector<float> want(65536), got(65536);
            scalar().dequant[kernel_type_index(t)](all.data(), want.data(), 65536);
            k.dequant[kernel_type_index(t)](all.data(), got.data(), 65536);
            int bad = 0;
            for (size_t i = 0; i < all.size(); ++i) {
                if (std::isnan(want[i]) ? !std::isnan(got[i]) : bits(want[i]) != bits(got[i]))
                    ++bad;
            }
            CHECK(bad == 0);
        }
    }
}

TEST_CASE("quantize_q8a: every level equals the scalar reference") {
    std::mt19937 rng(2);
    const BlockQ8A zero{};
    for (SimdLevel l : available_levels()) {
        INFO(simd_level_name(l));
        for (int64_t n : {32, 64, 32 * 7, 576, 1536}) {
            std::vector<float> x = random_floats(n, rng, 3.0f);
            if (n >= 64) std::fill(x.begin() + 32, x.begin() + 64, 0.0f);  // an all-zero block
            x[0] = 1e-30f;
            std::vector<BlockQ8A> want(static_cast<size_t>(n / 32)),
                got(static_cast<size_t>(n / 32));
            scalar().quantize_q8a(x.data(), want.data(), n);
            cpu_kernels(l).quantize_q8a(x.data(), got.data(), n);
            for (size_t b = 0; b < want.size(); ++b) {
                CAPTURE(n, b);
                REQUIRE(bits(want[b].d) == bits(got[b].d));
                REQUIRE(want[b].s == got[b].s);
                REQUIRE(std::memcmp(want[b].qs, got[b].qs, 32) == 0);
                int32_t s = 0;
                for (int8_t q : want[b].qs) s += q;
                CHECK(s == want[b].s);
                // The reconstruction is within half a step of the input.
                for (int i = 0; i < 32; ++i) {
                    CHECK(std::fabs(want[b].d * want[b].qs[i] - x[b * 32 + i]) <=
                          0.5001f * want[b].d + 1e-30f);
                }
            }
            if (n >= 64) {
                CHECK(want[1].d == 0.0f);
                CHECK(std::memcmp(want[1].qs, zero.qs, 32) == 0);
            }
        }
    }
}

TEST_CASE("matvec: every level and type against the reference and the float dot") {
    std::mt19937 rng(3);
    for (SimdLevel l : available_levels()) {
        const CpuKernels& k = cpu_kernels(l);
        for (DType t : kAllTypes) {
            const int slot = kernel_type_index(t);
            const bool quant = type_traits(t)->quantized;
            for (int64_t n_cols : col_sizes(t)) {
                for (int64_t n_rows : {1, 3, 7, 37}) {
                    INFO(name_of(l, t) << " " << n_rows << "x" << n_cols);
                    const size_t pad = n_rows == 7 ? 24 : 0;  // a row stride wider than the row
                    const Matrix m = make_matrix(t, n_rows, n_cols, pad, rng);
                    std::vector<float> x = random_floats(n_cols, rng);
                    if (n_cols >= 64 && quant) std::fill(x.begin(), x.begin() + 32, 0.0f);
                    std::vector<BlockQ8A> xq(static_cast<size_t>(n_cols / 32 + 1));
                    if (quant) scalar().quantize_q8a(x.data(), xq.data(), n_cols);
                    const void* xa = quant ? static_cast<const void*>(xq.data()) : x.data();

                    std::vector<float> want(static_cast<size_t>(n_rows)),
                        got(static_cast<size_t>(n_rows) + 1, 7.0f);
                    scalar().matvec[slot](n_cols, n_rows, m.data.data(), m.stride, xa, want.data());
                    k.matvec[slot](n_cols, n_rows, m.data.data(), m.stride, xa, got.data());
                    CHECK(got.back() == 7.0f);

                    std::vector<float> wrow(static_cast<size_t>(n_cols));
                    for (int64_t r = 0; r < n_rows; ++r) {
                        scalar().dequant[slot](m.data.data() + m.stride * static_cast<size_t>(r),
                                               wrow.data(), n_cols);
                        double mag = 0, fdot = 0, wn = 0, xn = 0;
                        for (int64_t i = 0; i < n_cols; ++i) {
                            mag += std::fabs(static_cast<double>(wrow[static_cast<size_t>(i)]) *
                                             x[static_cast<size_t>(i)]);
                            fdot += static_cast<double>(wrow[static_cast<size_t>(i)]) *
                                    x[static_cast<size_t>(i)];
                            wn += static_cast<double>(wrow[static_cast<size_t>(i)]) *
                                  wrow[static_cast<size_t>(i)];
                            xn += static_cast<double>(x[static_cast<size_t>(i)]) *
                                  x[static_cast<size_t>(i)];
                        }
                        CAPTURE(r, want[static_cast<size_t>(r)], got[static_cast<size_t>(r)], fdot,
                                mag);
                        // SIMD vs scalar: same integer math, float rounding only.
                        REQUIRE(std::fabs(got[static_cast<size_t>(r)] -
                                          want[static_cast<size_t>(r)]) <= 2e-5 * mag + 1e-6);
                        // Reference vs the float dot: only the activation's 8-bit rounding.
                        const double tol = quant ? 2e-2 * std::sqrt(wn * xn) : 1e-5 * mag + 1e-6;
                        REQUIRE(std::fabs(want[static_cast<size_t>(r)] - fdot) <= tol);
                    }
                }
            }
        }
    }
}

TEST_CASE("matvec on the model's shapes (576/1536 columns) at the active level") {
    std::mt19937 rng(4);
    const CpuKernels& k = cpu_kernels(detected_simd_level());
    for (DType t : {DType::Q4_1, DType::Q8_0, DType::Q4_0}) {
        for (int64_t n_cols : {576, 1536}) {
            INFO(type_traits(t)->name << " cols " << n_cols);
            const int64_t n_rows = 64;
            const Matrix m = make_matrix(t, n_rows, n_cols, 0, rng);
            std::vector<float> x = random_floats(n_cols, rng, 0.1f);
            std::vector<BlockQ8A> xq(static_cast<size_t>(n_cols / 32));
            k.quantize_q8a(x.data(), xq.data(), n_cols);
            std::vector<float> want(n_rows), got(n_rows);
            scalar().matvec[kernel_type_index(t)](n_cols, n_rows, m.data.data(), m.stride,
                                                  xq.data(), want.data());
            k.matvec[kernel_type_index(t)](n_cols, n_rows, m.data.data(), m.stride, xq.data(),
                                           got.data());
            for (int64_t r = 0; r < n_rows; ++r) {
                CHECK(std::fabs(got[static_cast<size_t>(r)] - want[static_cast<size_t>(r)]) <=
                      1e-4 * (1.0 + std::fabs(want[static_cast<size_t>(r)])));
            }
        }
    }
}

TEST_CASE("vector ops: every level against the reference, odd lengths") {
    std::mt19937 rng(5);
    for (SimdLevel l : available_levels()) {
        const CpuKernels& k = cpu_kernels(l);
        for (int64_t n : {1, 7, 8, 15, 16, 33, 577}) {
            INFO(simd_level_name(l) << " n=" << n);
            const std::vector<float> a = random_floats(n, rng), b = random_floats(n, rng);
            double mag = 0;
            for (int64_t i = 0; i < n; ++i)
                mag += std::fabs(static_cast<double>(a[static_cast<size_t>(i)]) *
                                 b[static_cast<size_t>(i)]);
            CHECK(std::fabs(k.dot_f32(a.data(), b.data(), n) -
                            scalar().dot_f32(a.data(), b.data(), n)) <= 1e-5 * mag + 1e-7);

            {
                std::vector<float> y1 = b, y2 = b;
                y1.push_back(9.0f);
                scalar().axpy_f32(0.37f, a.data(), y2.data(), n);
                k.axpy_f32(0.37f, a.data(), y1.data(), n);
                for (int64_t i = 0; i < n; ++i) {
                    CHECK(std::fabs(y1[static_cast<size_t>(i)] - y2[static_cast<size_t>(i)]) <=
                          1e-6 * (1 + std::fabs(y2[static_cast<size_t>(i)])));
                }
                CHECK(y1.back() == 9.0f);
            }
            {
                std::vector<float> y1(static_cast<size_t>(n) + 1, 9.0f), y2(static_cast<size_t>(n));
                scalar().rmsnorm(a.data(), b.data(), 1e-5f, y2.data(), n);
                k.rmsnorm(a.data(), b.data(), 1e-5f, y1.data(), n);
                for (int64_t i = 0; i < n; ++i) {
                    CHECK(std::fabs(y1[static_cast<size_t>(i)] - y2[static_cast<size_t>(i)]) <=
                          1e-5 * (1 + std::fabs(y2[static_cast<size_t>(i)])));
                }
                CHECK(y1.back() == 9.0f);
                // rms of the output with unit weights is 1 (up to eps)
                std::vector<float> ones(static_cast<size_t>(n), 1.0f);
                k.rmsnorm(a.data(), ones.data(), 0.0f, y1.data(), n);
                double ss = 0;
                for (int64_t i = 0; i < n; ++i)
                    ss += static_cast<double>(y1[static_cast<size_t>(i)]) *
                          y1[static_cast<size_t>(i)];
                CHECK(std::sqrt(ss / static_cast<double>(n)) == Approx(1.0).epsilon(1e-5));
            }
            {
                std::vector<float> g1 = random_floats(n, rng, 4.0f);
                if (n > 3) {
                    g1[0] = -100.0f;
                    g1[1] = 100.0f;
                    g1[2] = 0.0f;
                }
                std::vector<float> g2 = g1;
                g1.push_back(9.0f);
                scalar().silu_mul(g2.data(), b.data(), n);
                k.silu_mul(g1.data(), b.data(), n);
                for (int64_t i = 0; i < n; ++i) {
                    CHECK(std::fabs(g1[static_cast<size_t>(i)] - g2[static_cast<size_t>(i)]) <=
                          2e-6 * (1 + std::fabs(g2[static_cast<size_t>(i)])));
                }
                CHECK(g1.back() == 9.0f);
            }
            {
                std::vector<float> s1 = random_floats(n, rng, 5.0f);
                if (n > 5) {
                    s1[3] = -std::numeric_limits<float>::infinity();  // a masked key
                    s1[4] = 60.0f;
                }
                std::vector<float> s2 = s1, orig = s1;
                s1.push_back(9.0f);
                const float lse2 = scalar().softmax(s2.data(), n);
                const float lse1 = k.softmax(s1.data(), n);
                CHECK(std::fabs(lse1 - lse2) <= 1e-5 * (1 + std::fabs(lse2)));
                double sum = 0, lse_direct = 0;
                for (float v : orig) lse_direct += std::exp(static_cast<double>(v));
                lse_direct = std::log(lse_direct);
                CHECK(std::fabs(lse2 - lse_direct) <= 1e-5 * (1 + std::fabs(lse_direct)));
                for (int64_t i = 0; i < n; ++i) {
                    CHECK(std::fabs(s1[static_cast<size_t>(i)] - s2[static_cast<size_t>(i)]) <=
                          2e-6 * s2[static_cast<size_t>(i)] + 1e-30);
                    sum += s1[static_cast<size_t>(i)];
                }
                CHECK(sum == Approx(1.0).epsilon(1e-5));
                if (n > 5) CHECK(s1[3] == 0.0f);
                CHECK(s1.back() == 9.0f);
            }
        }
    }
}

TEST_CASE("softmax of all -inf stays finite and reports -inf") {
    for (SimdLevel l : available_levels()) {
        INFO(simd_level_name(l));
        std::vector<float> x(19, -std::numeric_limits<float>::infinity());
        const float lse = cpu_kernels(l).softmax(x.data(), 19);
        CHECK(std::isinf(lse));
        CHECK(lse < 0);
        for (float v : x) CHECK(std::isfinite(v));
    }
}

namespace {

// Direct statement of RoPE: pair (a, b) is the complex number a + ib, multiplied by e^{i*theta}.
std::vector<float> rope_direct(const std::vector<float>& x, int64_t n_heads, int64_t head_dim,
                               int64_t n_rot, double pos, double base, RopeStyle style) {
    std::vector<float> y = x;
    for (int64_t h = 0; h < n_heads; ++h) {
        for (int64_t i = 0; i < n_rot / 2; ++i) {
            const double theta =
                pos * std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(n_rot));
            const int64_t ia = h * head_dim + (style == RopeStyle::Interleaved ? 2 * i : i);
            const int64_t ib = ia + (style == RopeStyle::Interleaved ? 1 : n_rot / 2);
            const std::complex<double> z(x[static_cast<size_t>(ia)], x[static_cast<size_t>(ib)]);
            const std::complex<double> r = z * std::polar(1.0, theta);
            y[static_cast<size_t>(ia)] = static_cast<float>(r.real());
            y[static_cast<size_t>(ib)] = static_cast<float>(r.imag());
        }
    }
    return y;
}

}  // namespace

TEST_CASE("rope: both styles against the complex rotation; rotations compose") {
    std::mt19937 rng(6);
    for (RopeStyle style : {RopeStyle::Interleaved, RopeStyle::Neox}) {
        for (int64_t n_rot : {64, 32}) {
            INFO("style " << static_cast<int>(style) << " n_rot " << n_rot);
            const int64_t n_heads = 3, head_dim = 64;
            const std::vector<float> x = random_floats(n_heads * head_dim, rng);
            for (float pos : {0.0f, 1.0f, 17.0f, 1234.0f, 30000.0f}) {
                std::vector<float> y = x;
                rope(y.data(), n_heads, head_dim, n_rot, pos, 10000.0f, style);
                const std::vector<float> want =
                    rope_direct(x, n_heads, head_dim, n_rot, pos, 10000.0, style);
                for (size_t i = 0; i < y.size(); ++i) REQUIRE(std::fabs(y[i] - want[i]) <= 1e-5);
                if (pos == 0.0f) CHECK(y == x);
            }
            // Untouched tail when n_rot < head_dim (NEOX pairs are (i, i + n_rot/2)).
            std::vector<float> y = x;
            rope(y.data(), n_heads, head_dim, n_rot, 5.0f, 10000.0f, style);
            for (int64_t h = 0; h < n_heads; ++h) {
                for (int64_t d = n_rot; d < head_dim; ++d) {
                    CHECK(y[static_cast<size_t>(h * head_dim + d)] ==
                          x[static_cast<size_t>(h * head_dim + d)]);
                }
            }
            // a then b == a + b; and rotating by -a undoes a (the KV splice relies on this).
            for (auto [a, b] : {std::pair{100.0f, 23.0f}, std::pair{4000.0f, -1500.0f},
                                std::pair{7.0f, 2048.0f}}) {
                std::vector<float> ab = x, once = x;
                rope(ab.data(), n_heads, head_dim, n_rot, a, 500000.0f, style);
                rope(ab.data(), n_heads, head_dim, n_rot, b, 500000.0f, style);
                rope(once.data(), n_heads, head_dim, n_rot, a + b, 500000.0f, style);
                for (size_t i = 0; i < ab.size(); ++i) REQUIRE(std::fabs(ab[i] - once[i]) <= 1e-5);
                std::vector<float> back = x;
                rope(back.data(), n_heads, head_dim, n_rot, a, 10000.0f, style);
                rope(back.data(), n_heads, head_dim, n_rot, -a, 10000.0f, style);
                for (size_t i = 0; i < back.size(); ++i) REQUIRE(std::fabs(back[i] - x[i]) <= 1e-5);
            }
        }
    }
}

namespace {

using attnrag::test::GuardedBuffer;

}  // namespace

TEST_CASE("kernels never read past the end of the weights or the activation") {
    // GGUF tensors are memory-mapped: the last row of the last tensor may end at the end of the
    // mapping. A guard page right after the data turns any over-read into a crash.
    std::mt19937 rng(8);
    for (SimdLevel l : available_levels()) {
        const CpuKernels& k = cpu_kernels(l);
        for (DType t : kAllTypes) {
            const bool quant = type_traits(t)->quantized;
            const int slot = kernel_type_index(t);
            std::vector<int64_t> sizes = col_sizes(t);
            if (type_traits(t)->block_elems == 32)
                sizes.insert(sizes.end(), {32 * 5, 32 * 6, 32 * 9});
            for (int64_t n_cols : sizes) {
                for (int64_t n_rows : {1, 2, 5}) {
                    INFO(name_of(l, t) << " " << n_rows << "x" << n_cols);
                    const Matrix m = make_matrix(t, n_rows, n_cols, 0, rng);
                    const size_t w_bytes = m.stride * static_cast<size_t>(n_rows);
                    GuardedBuffer wbuf(w_bytes);
                    std::memcpy(wbuf.data(), m.data.data(), w_bytes);
                    const std::vector<float> xf = random_floats(n_cols, rng);
                    const size_t x_bytes = quant
                                               ? static_cast<size_t>(n_cols / 32) * sizeof(BlockQ8A)
                                               : static_cast<size_t>(n_cols) * sizeof(float);
                    GuardedBuffer xbuf(x_bytes);
                    if (quant) {
                        scalar().quantize_q8a(xf.data(), reinterpret_cast<BlockQ8A*>(xbuf.data()),
                                              n_cols);
                    } else {
                        std::memcpy(xbuf.data(), xf.data(), x_bytes);
                    }
                    std::vector<float> want(static_cast<size_t>(n_rows)),
                        got(static_cast<size_t>(n_rows));
                    scalar().matvec[slot](n_cols, n_rows, m.data.data(), m.stride, xbuf.data(),
                                          want.data());
                    k.matvec[slot](n_cols, n_rows, wbuf.data(), m.stride, xbuf.data(), got.data());
                    for (size_t r = 0; r < want.size(); ++r)
                        CHECK(got[r] == Approx(want[r]).epsilon(1e-4).margin(1e-4));
                    std::vector<float> deq(static_cast<size_t>(n_cols));
                    k.dequant[slot](wbuf.data() + m.stride * static_cast<size_t>(n_rows - 1),
                                    deq.data(), n_cols);
                    // and the activation quantizer on an input that ends at the guard
                    GuardedBuffer fbuf(static_cast<size_t>(n_cols / 32 * 32) * sizeof(float));
                    std::memcpy(fbuf.data(), xf.data(),
                                static_cast<size_t>(n_cols / 32 * 32) * sizeof(float));
                    std::vector<BlockQ8A> xq(static_cast<size_t>(n_cols / 32 + 1));
                    k.quantize_q8a(reinterpret_cast<const float*>(fbuf.data()), xq.data(),
                                   n_cols / 32 * 32);
                }
            }
        }
        // vector ops at the guard
        for (int64_t n : {1, 7, 33}) {
            GuardedBuffer a(static_cast<size_t>(n) * 4), b(static_cast<size_t>(n) * 4),
                c(static_cast<size_t>(n) * 4);
            auto* fa = reinterpret_cast<float*>(a.data());
            auto* fb = reinterpret_cast<float*>(b.data());
            auto* fc = reinterpret_cast<float*>(c.data());
            for (int64_t i = 0; i < n; ++i) fa[i] = fb[i] = fc[i] = 0.5f;
            CHECK(k.dot_f32(fa, fb, n) == Approx(0.25 * static_cast<double>(n)));
            k.axpy_f32(2.0f, fa, fb, n);
            k.rmsnorm(fa, fb, 1e-5f, fc, n);
            k.silu_mul(fc, fa, n);
            k.softmax(fc, n);
        }
    }
}
