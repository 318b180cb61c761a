// Type traits of the tensor formats, fp16/bf16 conversion, kernel slot and SIMD level names.
#include "attnrag/kernels/types.hpp"

#include <cstring>

#include "attnrag/kernels/cpu.hpp"
#include "kernels_impl.h"

namespace attnrag::kernels {
namespace {

constexpr TypeTraits kF32{"f32", 1, 4, false};
constexpr TypeTraits kF16{"f16", 1, 2, false};
constexpr TypeTraits kBF16{"bf16", 1, 2, false};
constexpr TypeTraits kQ4_0{"q4_0", kQK, sizeof(BlockQ4_0), true};
constexpr TypeTraits kQ4_1{"q4_1", kQK, sizeof(BlockQ4_1), true};
constexpr TypeTraits kQ8_0{"q8_0", kQK, sizeof(BlockQ8_0), true};
constexpr TypeTraits kQ4_K{"q4_K", kQKK, sizeof(BlockQ4_K), true};
constexpr TypeTraits kQ5_K{"q5_K", kQKK, sizeof(BlockQ5_K), true};
constexpr TypeTraits kQ6_K{"q6_K", kQKK, sizeof(BlockQ6_K), true};

uint32_t bits_of(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

float float_of(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

}  // namespace

const TypeTraits* type_traits(DType type) {
    switch (type) {
        case DType::F32: return &kF32;
        case DType::F16: return &kF16;
        case DType::BF16: return &kBF16;
        case DType::Q4_0: return &kQ4_0;
        case DType::Q4_1: return &kQ4_1;
        case DType::Q8_0: return &kQ8_0;
        case DType::Q4_K: return &kQ4_K;
        case DType::Q5_K: return &kQ5_K;
        case DType::Q6_K: return &kQ6_K;
    }
    return nullptr;
}

const TypeTraits* type_traits(uint32_t raw_type_id) {
    // Only ids named by DType are supported; anything else (other ggml types) is not.
    switch (raw_type_id) {
        case 0:
        case 1:
        case 2:
        case 3:
        case 8:
        case 12:
        case 13:
        case 14:
        case 30: return type_traits(static_cast<DType>(raw_type_id));
        default: return nullptr;
    }
}

size_t row_bytes(DType type, int64_t n_elems) {
    const TypeTraits* t = type_traits(type);
    if (t == nullptr || n_elems < 0) return 0;
    return static_cast<size_t>(n_elems / t->block_elems) * t->block_bytes;
}

int kernel_type_index(DType type) {
    switch (type) {
        case DType::F32: return kSlotF32;
        case DType::F16: return kSlotF16;
        case DType::BF16: return kSlotBF16;
        case DType::Q4_0: return kSlotQ4_0;
        case DType::Q4_1: return kSlotQ4_1;
        case DType::Q8_0: return kSlotQ8_0;
        case DType::Q4_K: return kSlotQ4_K;
        case DType::Q5_K: return kSlotQ5_K;
        case DType::Q6_K: return kSlotQ6_K;
    }
    return -1;
}

std::string_view simd_level_name(SimdLevel level) {
    switch (level) {
        case SimdLevel::Scalar: return "scalar";
        case SimdLevel::Avx2: return "avx2";
        case SimdLevel::Avx512: return "avx512";
    }
    return "unknown";
}

float f16_to_f32(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    const uint32_t mant = h & 0x3ffu;
    if (exp == 0x1f) return float_of(sign | 0x7f800000u | (mant << 13));  // inf, nan (payload kept)
    if (exp == 0) {
        // Zero or subnormal: mant * 2^-24 is exact in float.
        const float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
        return float_of(sign | bits_of(v));
    }
    return float_of(sign | ((exp + 112u) << 23) | (mant << 13));
}

uint16_t f32_to_f16(float f) {
    const uint32_t x = bits_of(f);
    const auto sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) {
        // inf stays inf; nan stays a (quiet) nan with the top payload bits.
        if (ax == 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u);
        return static_cast<uint16_t>(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    }
    // 65520 is halfway between the largest half (65504) and 2^16; the tie rounds to the even
    // neighbour, 2^16, which overflows to inf.
    if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
    if (ax >= 0x38800000u) {
        // Normal half: rebias the exponent (127 -> 15) and round the 13 dropped bits to even;
        // a mantissa carry correctly bumps the exponent.
        const uint32_t r = ax - 0x38000000u;
        const uint32_t rounded = r + 0xfffu + ((r >> 13) & 1u);
        return static_cast<uint16_t>(sign | (rounded >> 13));
    }
    const uint32_t e = ax >> 23;
    if (e < 102) return sign;  // below 2^-25: rounds to zero (2^-25 itself is a tie to 0)
    // Subnormal half: value = m * 2^-24 with m = M >> (126 - e), M the 24-bit significand.
    const uint32_t big_m = (ax & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;  // in [14, 24]
    uint32_t m = big_m >> shift;
    const uint32_t rem = big_m & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (m & 1u) != 0)) ++m;  // may carry into the smallest normal
    return static_cast<uint16_t>(sign | m);
}

uint16_t f32_to_bf16(float f) {
    const uint32_t x = bits_of(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet nan
    return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

}  // namespace attnrag::kernels
