// Generation loop: UTF-8-safe streaming with stop strings held back until they cannot match.
#include "attnrag/generate.hpp"

#include <chrono>

namespace attnrag {

const char* stop_reason_name(StopReason reason) {
    switch (reason) {
        case StopReason::EndOfGeneration: return "eos";
        case StopReason::StopString: return "stop";
        case StopReason::MaxTokens: return "length";
        case StopReason::ContextFull: return "context_full";
        case StopReason::Cancelled: return "cancelled";
    }
    return "unknown";
}

namespace {

// Length of the longest prefix of `s` that is a complete UTF-8 sequence run.
size_t complete_utf8_prefix(std::string_view s) {
    size_t i = s.size();
    // Look back at most 3 bytes for the lead byte of a possibly incomplete character.
    for (size_t back = 1; back <= 4 && back <= s.size(); ++back) {
        auto c = static_cast<unsigned char>(s[s.size() - back]);
        if ((c & 0xC0) == 0x80) continue;  // continuation byte
        size_t need = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
        if (need > back) i = s.size() - back;
        break;
    }
    return i;
}

// Bytes at the end of `s` that could be the start of a stop string (must be held back).
size_t stop_holdback(std::string_view s, const std::vector<std::string>& stops) {
    size_t hold = 0;
    for (const auto& stop : stops) {
        for (size_t len = std::min(stop.size() - 1, s.size()); len > hold; --len) {
            if (s.substr(s.size() - len) == std::string_view(stop).substr(0, len)) {
                hold = len;
                break;
            }
        }
    }
    return hold;
}

}  // namespace

Result<GenerateResult> generate(Context& ctx, std::span<const TokenId> prompt, const GenerateParams& params) {
    using clock = std::chrono::steady_clock;
    if (prompt.empty()) return make_error(Errc::InvalidArgument, "generate: empty prompt");
    for (const auto& s : params.stop) {
        if (s.empty()) return make_error(Errc::InvalidArgument, "generate: empty stop string");
    }
    auto t0 = clock::now();
    ATTNRAG_TRY(ctx.eval(prompt));
    const double prefill_ms = std::chrono::duration<double, std::milli>(clock::now() - t0).count();
    auto out = generate_from_context(ctx, params);
    if (!out) return out.error();
    out->n_prompt = static_cast<int32_t>(prompt.size());
    out->prefill_ms = prefill_ms;
    return out;
}

Result<GenerateResult> generate_from_context(Context& ctx, const GenerateParams& params) {
    using clock = std::chrono::steady_clock;
    GenerateResult out;
    if (ctx.n_past() == 0 || ctx.n_logit_rows() == 0) {
        return make_error(Errc::InvalidArgument, "generate: the context has no prompt logits to continue from");
    }
    for (const auto& s : params.stop) {
        if (s.empty()) return make_error(Errc::InvalidArgument, "generate: empty stop string");
    }
    const Tokenizer& tok = ctx.model().tokenizer();
    Sampler sampler(params.sampler);
    auto t1 = clock::now();

    std::vector<TokenId> history(ctx.slot_tokens().begin(), ctx.slot_tokens().end());
    std::string pending;  // decoded bytes not yet streamed
    size_t streamed = 0;  // bytes of out.text already passed to on_text
    bool cancelled = false;
    auto emit = [&](size_t upto) {
        if (upto > streamed && params.on_text && !cancelled) {
            if (!params.on_text(std::string_view(out.text).substr(streamed, upto - streamed))) cancelled = true;
        }
        streamed = std::max(streamed, upto);
    };

    out.stop_reason = StopReason::MaxTokens;
    for (int32_t i = 0; i < params.max_tokens; ++i) {
        TokenId next = sampler.sample(ctx.logits(ctx.n_logit_rows() - 1), history);
        out.tokens.push_back(next);
        history.push_back(next);
        if (tok.is_end_of_generation(next)) {
            out.stop_reason = StopReason::EndOfGeneration;
            break;
        }
        out.text += tok.piece(next);
        // Stop strings: cut at the first occurrence anywhere in the new text.
        bool stopped = false;
        for (const auto& s : params.stop) {
            size_t from = streamed > s.size() ? streamed - s.size() : 0;
            size_t at = out.text.find(s, from);
            if (at != std::string::npos) {
                out.text.resize(at);
                stopped = true;
            }
        }
        if (stopped) {
            out.stop_reason = StopReason::StopString;
            break;
        }
        size_t safe = complete_utf8_prefix(out.text);
        safe -= std::min(safe - std::min(safe, streamed), stop_holdback(std::string_view(out.text).substr(0, safe), params.stop));
        emit(safe);
        if (cancelled) {
            out.stop_reason = StopReason::Cancelled;
            break;
        }
        if (ctx.n_past() >= ctx.n_ctx()) {
            out.stop_reason = StopReason::ContextFull;
            break;
        }
        if (i + 1 == params.max_tokens) break;
        const TokenId one[1] = {next};
        ATTNRAG_TRY(ctx.eval(one));
    }
    if (out.stop_reason != StopReason::Cancelled) emit(out.text.size());
    out.decode_ms = std::chrono::duration<double, std::milli>(clock::now() - t1).count();
    return out;
}

}  // namespace attnrag
