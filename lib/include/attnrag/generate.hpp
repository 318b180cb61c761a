// Text generation over a Context: prefill the prompt, sample, stream, stop on EOS/stop strings.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attnrag/context.hpp"
#include "attnrag/sampler.hpp"

namespace attnrag {

enum class StopReason { EndOfGeneration, StopString, MaxTokens, ContextFull, Cancelled };
const char* stop_reason_name(StopReason reason);

struct GenerateParams {
    int32_t max_tokens = 256;
    SamplerParams sampler;
    std::vector<std::string> stop;  // generation ends before the first occurrence of any of these
    // Called with each new piece of text (whole UTF-8 characters, never part of a stop string);
    // return false to cancel.
    std::function<bool(std::string_view)> on_text;
};

struct GenerateResult {
    std::string text;             // the answer (stop string and end-of-turn token excluded)
    std::vector<TokenId> tokens;  // generated ids (including a final end-of-generation token)
    StopReason stop_reason = StopReason::MaxTokens;
    int32_t n_prompt = 0;
    double prefill_ms = 0;  // prompt forward pass (time to first token, without sampling)
    double decode_ms = 0;   // all later forward passes and sampling
};

// Appends `prompt` to ctx (which may already hold a prefix) and generates.
Result<GenerateResult> generate(Context& ctx, std::span<const TokenId> prompt, const GenerateParams& params);

// Generates from a context whose prompt is already evaluated (its last eval left logits, e.g.
// after pipelines::assemble). prefill_ms and n_prompt are left 0.
Result<GenerateResult> generate_from_context(Context& ctx, const GenerateParams& params);

}  // namespace attnrag
