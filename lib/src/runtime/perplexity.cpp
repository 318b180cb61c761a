// Perplexity over windows: logits are produced in slices so memory stays O(slice x vocab).
#include "attnrag/perplexity.hpp"

#include <algorithm>
#include <cmath>

namespace attnrag {

Result<PerplexityResult> perplexity(Context& ctx, std::span<const TokenId> tokens, int32_t n_ctx,
                                    int32_t max_windows,
                                    const std::function<bool(int32_t, int32_t)>& on_window,
                                    int32_t score_from) {
    if (n_ctx < 2) return make_error(Errc::InvalidArgument, "perplexity: n_ctx must be at least 2");
    if (score_from < 0 || score_from > n_ctx - 2) {
        return make_error(Errc::InvalidArgument,
                          "perplexity: score_from must be in [0, n_ctx - 2]");
    }
    if (n_ctx > ctx.n_ctx()) {
        return make_error(Errc::InvalidArgument, "perplexity: window of " + std::to_string(n_ctx) +
                                                     " tokens exceeds the context size " +
                                                     std::to_string(ctx.n_ctx()));
    }
    if (tokens.size() < 2)
        return make_error(Errc::InvalidArgument, "perplexity: need at least 2 tokens");
    auto n_windows = static_cast<int32_t>((tokens.size() + static_cast<size_t>(n_ctx) - 1) /
                                          static_cast<size_t>(n_ctx));
    if (max_windows > 0) n_windows = std::min(n_windows, max_windows);

    // Slice of tokens whose logits are computed at once (bounds memory to slice x n_vocab floats).
    constexpr size_t kSlice = 128;
    PerplexityResult r;
    double nll = 0;
    for (int32_t w = 0; w < n_windows; ++w) {
        size_t begin = static_cast<size_t>(w) * static_cast<size_t>(n_ctx);
        size_t end = std::min(tokens.size(), begin + static_cast<size_t>(n_ctx));
        if (end - begin < 2) break;
        // Scoring the second half only, as llama-perplexity does, compares full windows only.
        if (score_from > 0 && end - begin < static_cast<size_t>(n_ctx)) break;
        ctx.clear();
        for (size_t s = begin; s < end; s += kSlice) {
            size_t e = std::min(end, s + kSlice);
            EvalOptions opt;
            opt.logits = LogitsMode::All;
            ATTNRAG_TRY(ctx.eval(tokens.subspan(s, e - s), opt));
            for (size_t i = s; i < e; ++i) {
                if (i + 1 >= end) break;  // the window's last token predicts nothing inside it
                if (i - begin < static_cast<size_t>(score_from)) continue;
                std::span<const float> l = ctx.logits(static_cast<int32_t>(i - s));
                float mx = *std::max_element(l.begin(), l.end());
                double sum = 0;
                for (float v : l) sum += std::exp(static_cast<double>(v - mx));
                double logp =
                    static_cast<double>(l[static_cast<size_t>(tokens[i + 1])] - mx) - std::log(sum);
                nll -= logp;
                ++r.n_scored;
            }
        }
        ++r.n_windows;
        if (on_window && !on_window(w, n_windows))
            return make_error(Errc::Cancelled, "perplexity: cancelled");
    }
    if (r.n_scored == 0) return make_error(Errc::InvalidArgument, "perplexity: nothing to score");
    r.mean_nll = nll / static_cast<double>(r.n_scored);
    r.perplexity = std::exp(r.mean_nll);
    return r;
}

}  // namespace attnrag
