// Tensor element types and their block layouts (the GGUF/ggml on-disk formats), fp16/bf16 helpers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace attnrag::kernels {

// Values are the ggml type ids stored in GGUF tensor headers.
enum class DType : uint32_t {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q8_0 = 8,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    BF16 = 30,
};

inline constexpr int kQK = 32;    // elements per block of the 32-element formats
inline constexpr int kQKK = 256;  // elements per super-block of the K-quants

// Q4_0: w = d * (q - 8); qs[i] low nibble = element i, high nibble = element i + 16.
struct BlockQ4_0 {
    uint16_t d;  // f16
    uint8_t qs[kQK / 2];
};
// Q4_1: w = d * q + m; nibble order as Q4_0.
struct BlockQ4_1 {
    uint16_t d;  // f16
    uint16_t m;  // f16
    uint8_t qs[kQK / 2];
};
// Q8_0: w = d * q.
struct BlockQ8_0 {
    uint16_t d;  // f16
    int8_t qs[kQK];
};
// Q4_K: 8 sub-blocks of 32; 6-bit scales and mins packed in `scales`;
// w = d * sc[j] * q - dmin * m[j].
struct BlockQ4_K {
    uint16_t d;     // f16, super-block scale for the scales
    uint16_t dmin;  // f16, super-block scale for the mins
    uint8_t scales[12];
    uint8_t qs[kQKK / 2];
};
// Q5_K: as Q4_K plus one high bit per element in qh.
struct BlockQ5_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qh[kQKK / 8];
    uint8_t qs[kQKK / 2];
};
// Q6_K: 16 sub-blocks of 16; w = d * scales[j] * (q - 32), q 6-bit (4 low bits in ql, 2 high in qh).
struct BlockQ6_K {
    uint8_t ql[kQKK / 2];
    uint8_t qh[kQKK / 4];
    int8_t scales[kQKK / 16];
    uint16_t d;  // f16
};

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);

// Activation block for quantized dot products (decode and quantized GEMM): 32 int8 values,
// their scale and the sum of the quantized values (for the min/offset terms of Q4_1/K-quants).
struct BlockQ8A {
    float d;    // scale: x[i] ~= d * qs[i]
    int32_t s;  // sum of qs[i]
    int8_t qs[kQK];
};
static_assert(sizeof(BlockQ8A) == 40);

struct TypeTraits {
    std::string_view name;
    int64_t block_elems;  // elements per block
    size_t block_bytes;   // bytes per block
    bool quantized;       // true: decode uses BlockQ8A activations
};

// Traits of a type; nullptr for an id attnrag does not support.
const TypeTraits* type_traits(DType type);
const TypeTraits* type_traits(uint32_t raw_type_id);

// Bytes of a row of n elements (n must be a multiple of the block size).
size_t row_bytes(DType type, int64_t n_elems);

// IEEE half <-> float, round to nearest even.
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
inline float bf16_to_f32(uint16_t h) {
    uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}
uint16_t f32_to_bf16(float f);

}  // namespace attnrag::kernels
