// Sampling chain: repetition penalty -> greedy, or temperature -> top-k -> top-p -> draw.
#include "attnrag/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_set>

namespace attnrag {

Sampler::Sampler(const SamplerParams& params) : params_(params), rng_(params.seed) {}

TokenId Sampler::sample(std::span<const float> logits, std::span<const TokenId> history) {
    const auto n = static_cast<int32_t>(logits.size());
    work_.assign(logits.begin(), logits.end());

    if (params_.repeat_penalty != 1.0f && params_.repeat_last_n > 0) {
        // Each recent token is penalised once (CTRL-style: divide positive logits, multiply negative).
        size_t from = history.size() > static_cast<size_t>(params_.repeat_last_n)
                          ? history.size() - static_cast<size_t>(params_.repeat_last_n)
                          : 0;
        std::unordered_set<TokenId> seen(history.begin() + static_cast<std::ptrdiff_t>(from), history.end());
        for (TokenId t : seen) {
            if (t < 0 || t >= n) continue;
            float& l = work_[static_cast<size_t>(t)];
            l = l > 0 ? l / params_.repeat_penalty : l * params_.repeat_penalty;
        }
    }

    if (params_.temperature <= 0.0f) {
        return static_cast<TokenId>(std::max_element(work_.begin(), work_.end()) - work_.begin());
    }

    // Candidates sorted by logit, cut to top_k.
    idx_.resize(static_cast<size_t>(n));
    std::iota(idx_.begin(), idx_.end(), 0);
    int32_t k = params_.top_k > 0 ? std::min(params_.top_k, n) : n;
    auto by_logit = [this](int32_t a, int32_t b) { return work_[static_cast<size_t>(a)] > work_[static_cast<size_t>(b)]; };
    std::partial_sort(idx_.begin(), idx_.begin() + k, idx_.end(), by_logit);
    idx_.resize(static_cast<size_t>(k));

    // Softmax at temperature over the candidates.
    std::vector<double> p(static_cast<size_t>(k));
    const double top = work_[static_cast<size_t>(idx_[0])];
    double sum = 0;
    for (int32_t i = 0; i < k; ++i) {
        p[static_cast<size_t>(i)] = std::exp((work_[static_cast<size_t>(idx_[static_cast<size_t>(i)])] - top) / params_.temperature);
        sum += p[static_cast<size_t>(i)];
    }
    // Nucleus: smallest prefix whose mass reaches top_p.
    int32_t keep = k;
    if (params_.top_p < 1.0f) {
        double acc = 0;
        for (int32_t i = 0; i < k; ++i) {
            acc += p[static_cast<size_t>(i)] / sum;
            if (acc >= params_.top_p) {
                keep = i + 1;
                break;
            }
        }
    }
    std::discrete_distribution<int32_t> dist(p.begin(), p.begin() + keep);
    return idx_[static_cast<size_t>(dist(rng_))];
}

}  // namespace attnrag
