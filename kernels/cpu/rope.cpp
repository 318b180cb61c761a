// Rotary position embedding (interleaved and NEOX pairings), angles in double precision.
#include <cmath>
#include <vector>

#include "attnrag/kernels/cpu.hpp"

namespace attnrag::kernels {

void rope_angles(float pos, int64_t n_rot, float base, double* cs) {
    // Double keeps large positions (pos * freq ~ 1e5 rad) accurate enough that KV splicing by
    // re-rotation composes to float precision.
    const int64_t n_pairs = n_rot / 2;
    for (int64_t i = 0; i < n_pairs; ++i) {
        const double freq = std::pow(static_cast<double>(base),
                                     -2.0 * static_cast<double>(i) / static_cast<double>(n_rot));
        const double theta = static_cast<double>(pos) * freq;
        cs[2 * i] = std::cos(theta);
        cs[2 * i + 1] = std::sin(theta);
    }
}

void rope_apply(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, const double* cs,
                RopeStyle style) {
    if (n_rot > head_dim) n_rot = head_dim;
    const int64_t n_pairs = n_rot / 2;
    // Interleaved pairs (2i, 2i+1); NEOX pairs (i, i + n_rot/2), as ggml's rope_neox (equal to
    // head_dim/2 when the whole head rotates).
    const int64_t stride = style == RopeStyle::Interleaved ? 2 : 1;
    const int64_t offset = style == RopeStyle::Interleaved ? 1 : n_pairs;
    for (int64_t h = 0; h < n_heads; ++h) {
        float* xh = x + h * head_dim;
        for (int64_t i = 0; i < n_pairs; ++i) {
            const double c = cs[2 * i], s = cs[2 * i + 1];
            float* a = xh + i * stride;
            float* b = a + offset;
            const double x0 = *a, x1 = *b;
            *a = static_cast<float>(x0 * c - x1 * s);
            *b = static_cast<float>(x0 * s + x1 * c);
        }
    }
}

void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, float pos, float base,
          RopeStyle style) {
    if (n_rot > head_dim) n_rot = head_dim;
    if (n_rot / 2 <= 0) return;
    thread_local std::vector<double> cs;
    cs.resize(static_cast<size_t>(2 * (n_rot / 2)));
    rope_angles(pos, n_rot, base, cs.data());
    rope_apply(x, n_heads, head_dim, n_rot, cs.data(), style);
}

}  // namespace attnrag::kernels
