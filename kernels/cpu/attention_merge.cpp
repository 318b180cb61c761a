// Exact merge of partial attentions through their log-sum-exps.
#include <cmath>
#include <limits>

#include "attnrag/kernels/cpu.hpp"

namespace attnrag::kernels {

float merge_attention(const float* out_a, float lse_a, const float* out_b, float lse_b, float* out,
                      int64_t d) {
    const double top = std::fmax(static_cast<double>(lse_a), static_cast<double>(lse_b));
    if (std::isinf(top) && top < 0) {
        // Neither set has a key: nothing to attend to.
        for (int64_t i = 0; i < d; ++i) out[i] = 0.0f;
        return -std::numeric_limits<float>::infinity();
    }
    const double wa = std::exp(static_cast<double>(lse_a) - top);
    const double wb = std::exp(static_cast<double>(lse_b) - top);
    const double inv = 1.0 / (wa + wb);
    for (int64_t i = 0; i < d; ++i) {
        out[i] = static_cast<float>((wa * out_a[i] + wb * out_b[i]) * inv);
    }
    return static_cast<float>(top + std::log(wa + wb));
}

}  // namespace attnrag::kernels
