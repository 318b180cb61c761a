// InfiniRetri's token scoring: the phrase (box) filter over key positions and top-k selection.
#include "infiniretri_score.h"

#include <algorithm>
#include <numeric>

namespace attnrag::pipelines::detail {

std::vector<float> box_filter(std::span<const float> a, int32_t width) {
    const auto n = static_cast<int64_t>(a.size());
    const int64_t k = std::max<int32_t>(1, width);
    // prefix[m] = a[0] + ... + a[m-1], in double so long rows of tiny values add up exactly enough.
    std::vector<double> prefix(a.size() + 1, 0.0);
    for (size_t m = 0; m < a.size(); ++m) prefix[m + 1] = prefix[m] + static_cast<double>(a[m]);
    std::vector<float> out(a.size());
    for (int64_t j = 0; j < n; ++j) {
        const int64_t lo = std::clamp<int64_t>(j - k / 2, 0, n);
        const int64_t hi = std::clamp<int64_t>(j - k / 2 + k, 0, n);
        out[static_cast<size_t>(j)] =
            static_cast<float>(prefix[static_cast<size_t>(hi)] - prefix[static_cast<size_t>(lo)]);
    }
    return out;
}

std::vector<int32_t> top_k_indices(std::span<const float> s, int32_t k) {
    std::vector<int32_t> idx(s.size());
    std::iota(idx.begin(), idx.end(), 0);
    if (k < 0) k = 0;
    if (static_cast<size_t>(k) < idx.size()) {
        auto greater = [&](int32_t x, int32_t y) {
            const float a = s[static_cast<size_t>(x)], b = s[static_cast<size_t>(y)];
            return a > b || (a == b && x < y);
        };
        std::nth_element(idx.begin(), idx.begin() + k, idx.end(), greater);
        idx.resize(static_cast<size_t>(k));
    }
    std::sort(idx.begin(), idx.end());
    return idx;
}

std::vector<float> calibrated_scores(std::span<const float> asked, std::span<const float> neutral) {
    auto normalised = [](std::span<const float> v) {
        double sum = 0;
        for (float x : v) sum += x;
        std::vector<float> out(v.begin(), v.end());
        if (sum > 0) {
            for (float& x : out) x = static_cast<float>(x / sum);
        }
        return out;
    };
    std::vector<float> out = normalised(asked);
    const std::vector<float> base = normalised(neutral);
    const float floor = 1.0f / static_cast<float>(std::max<size_t>(1, base.size()));
    for (size_t j = 0; j < out.size(); ++j) out[j] /= base[j] + floor;
    return out;
}

}  // namespace attnrag::pipelines::detail
