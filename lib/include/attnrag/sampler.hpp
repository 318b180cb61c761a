// Token sampling: greedy, temperature, top-k, top-p, repetition penalty, seeded.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "attnrag/tokenizer.hpp"

namespace attnrag {

struct SamplerParams {
    float temperature = 0.0f;     // <= 0: greedy (argmax)
    int32_t top_k = 40;           // <= 0: all tokens
    float top_p = 0.95f;          // >= 1: no nucleus cut
    float repeat_penalty = 1.0f;  // > 1 discourages tokens seen in the last repeat_last_n
    int32_t repeat_last_n = 64;
    uint64_t seed = 0x5EED;
};

// Stateful (its random engine); one per generation, single-threaded.
class Sampler {
   public:
    explicit Sampler(const SamplerParams& params);
    // Picks a token from logits [n_vocab]; `history` is the sequence so far (for the penalty).
    TokenId sample(std::span<const float> logits, std::span<const TokenId> history);

   private:
    SamplerParams params_;
    std::mt19937_64 rng_;
    std::vector<float> work_;
    std::vector<int32_t> idx_;
};

}  // namespace attnrag
