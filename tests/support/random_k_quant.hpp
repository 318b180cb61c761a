// Random K-quant rows for kernel tests: random bits in every quant, scale, min and high bit, with
// finite positive f16 super-block scales drawn from [scale_lo, scale_hi).
#pragma once

#include <cstdint>
#include <cstring>
#include <random>

#include "attnrag/kernels/types.hpp"

namespace attnrag::test {

inline void random_k_quant_row(kernels::DType t, int64_t n, uint8_t* out, std::mt19937& rng,
                               float scale_lo, float scale_hi) {
    std::uniform_int_distribution<int> byte(0, 255);
    std::uniform_real_distribution<float> scale(scale_lo, scale_hi);
    const size_t bytes = kernels::row_bytes(t, n);
    for (size_t i = 0; i < bytes; ++i) out[i] = static_cast<uint8_t>(byte(rng));
    const size_t bb = kernels::type_traits(t)->block_bytes;
    auto put = [](uint8_t* p, float f) {
        const uint16_t h = kernels::f32_to_f16(f);
        std::memcpy(p, &h, sizeof h);
    };
    for (int64_t b = 0; b < n / kernels::kQKK; ++b) {
        uint8_t* blk = out + static_cast<size_t>(b) * bb;
        if (t == kernels::DType::Q6_K) {
            put(blk + 208, scale(rng));  // d sits after ql, qh and the scales
        } else {
            put(blk, scale(rng));      // d
            put(blk + 2, scale(rng));  // dmin
        }
    }
}

}  // namespace attnrag::test
