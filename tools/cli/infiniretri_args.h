// InfiniRetri settings on the command line, shared by `ask --file`, `eval niah` and `eval longqa`.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "args.h"
#include "attnrag/pipelines/infiniretri.hpp"

namespace attnrag::cli {

// --chunk-tokens, --top-k, --score-memory, --relevance-reserve, --cache-tokens, --answer-context,
// --answer-alternatives, --layers, --heads, --heads-dir.
std::vector<OptionSpec> infiniretri_option_specs();

// Reads those options into `options` (unset ones keep its values); false with `error` set on a
// malformed or out-of-range value. --heads top:N needs the model: see read_infiniretri_heads.
bool read_infiniretri_options(Args& args, pipelines::InfiniRetriOptions& options,
                              std::string& error);

// --backend cpu|cuda: where the reading's forward passes run (Backend::Cpu when absent); false
// with `error` set on another value.
bool read_backend(Args& args, Backend& backend, std::string& error);

// --heads for `model` into options.layer_heads: "top:N" (the N best heads of the ranking that
// `attnrag heads` stored for the model, in --heads-dir or the default directory) or "L:H,L:H".
// Nothing to do without --heads.
Status read_infiniretri_heads(const Args& args, const Model& model, pipelines::InfiniRetriOptions& options);

// "1,2,5" or "12-15" or a mix -> the integers; false on anything else.
bool parse_int_list(const std::string& text, std::vector<int32_t>& out);

// "best" or "best-root-sum" (--sentence-relevance).
const char* sentence_relevance_name(pipelines::InfiniRetriOptions::SentenceRelevance r);

// The reading settings a result was measured with, for JSON output: chunk_tokens, top_k,
// phrase_tokens, score_memory, relevance_reserve, sentence_relevance, cache_tokens,
// answer_context_tokens, answer_alternatives.
nlohmann::json infiniretri_settings_json(const pipelines::InfiniRetriOptions& options);

// A reading saved for answering again without reading (`eval niah|longqa --save-kept`): the
// reading counters, the ranking its relevances come from (sentence_relevance) and the kept sentences
// (byte range, text, token ids, score, relevance, reserved) of an InfiniRetri answer; the answer
// itself is not saved.
nlohmann::json saved_reading_json(const pipelines::InfiniRetriAnswer& a);
// A reading written by saved_reading_json(), for InfiniRetri::answer_again; nullopt when `j` is
// not one (or holds no kept sentence).
std::optional<pipelines::InfiniRetriAnswer> saved_reading_from_json(const nlohmann::json& j);

// One progress line: a bar over the bytes read, tokens read, reading speed and cache size.
std::string infiniretri_progress_line(const pipelines::InfiniRetriProgress& p);

}  // namespace attnrag::cli
