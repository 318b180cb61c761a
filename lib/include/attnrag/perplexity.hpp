// Perplexity of a model on a token sequence, in independent windows of n_ctx tokens.
#pragma once

#include <functional>
#include <span>

#include "attnrag/context.hpp"

namespace attnrag {

struct PerplexityResult {
    double perplexity = 0;  // exp(mean negative log-likelihood)
    double mean_nll = 0;    // nats per scored token
    int64_t n_scored = 0;   // tokens predicted (each window's first token is not scored)
    int32_t n_windows = 0;
};

// Splits `tokens` into windows of n_ctx tokens (at most max_windows; 0 = all), each evaluated
// from an empty cache, and scores the predictions made at window positions >= score_from: with
// 0, every token after the first of its window; with n_ctx / 2, the second half of each window
// as llama.cpp's llama-perplexity scores it (which also skips a last, partial window).
// on_window(i, n) is called after each window; return false to cancel.
Result<PerplexityResult> perplexity(Context& ctx, std::span<const TokenId> tokens, int32_t n_ctx,
                                    int32_t max_windows = 0,
                                    const std::function<bool(int32_t, int32_t)>& on_window = {},
                                    int32_t score_from = 0);

}  // namespace attnrag
