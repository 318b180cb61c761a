// InfiniRetri command-line options and progress line.
#include "infiniretri_args.h"

#include "attnrag/pipelines/retrieval_heads.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

namespace attnrag::cli {

namespace {

bool parse_int(const std::string& s, int32_t& out) {
    if (s.empty()) return false;
    char* end = nullptr;
    const long v = std::strtol(s.c_str(), &end, 10);
    if (*end != '\0' || v < INT32_MIN || v > INT32_MAX) return false;
    out = static_cast<int32_t>(v);
    return true;
}

// 1234567 -> "1,234,567".
std::string grouped(long long v) {
    std::string digits = std::to_string(v < 0 ? -v : v), out;
    if (v < 0) out += '-';
    for (size_t i = 0; i < digits.size(); ++i) {
        if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
        out += digits[i];
    }
    return out;
}

using SentenceRelevance = pipelines::InfiniRetriOptions::SentenceRelevance;

std::optional<SentenceRelevance> parse_sentence_relevance(const std::string& name) {
    if (name == "best") return SentenceRelevance::BestToken;
    if (name == "best-root-sum") return SentenceRelevance::BestTimesRootSum;
    return std::nullopt;
}

std::string join_ints(const std::vector<int32_t>& v) {
    std::string out;
    for (int32_t x : v) {
        if (!out.empty()) out += ',';
        out += std::to_string(x);
    }
    return out.empty() ? "none" : out;
}

std::string shortest(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
}

}  // namespace

bool parse_int_list(const std::string& text, std::vector<int32_t>& out) {
    out.clear();
    size_t start = 0;
    while (start <= text.size()) {
        const size_t comma = text.find(',', start);
        const std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        const size_t dash = item.find('-', 1);  // a leading '-' is a sign
        int32_t a = 0, b = 0;
        if (dash == std::string::npos) {
            if (!parse_int(item, a)) return false;
            out.push_back(a);
        } else {
            if (!parse_int(item.substr(0, dash), a) || !parse_int(item.substr(dash + 1), b) || b < a) return false;
            for (int32_t v = a; v <= b; ++v) out.push_back(v);
        }
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    return !out.empty();
}

bool read_backend(Args& args, Backend& backend, std::string& error) {
    const std::string v = args.get_or("backend", "cpu");
    if (v == "cpu") {
        backend = Backend::Cpu;
    } else if (v == "cuda") {
        backend = Backend::Cuda;
    } else {
        error = "--backend must be cpu or cuda, not '" + v + "'";
        return false;
    }
    return true;
}

const char* sentence_relevance_name(SentenceRelevance r) {
    return r == SentenceRelevance::BestToken ? "best" : "best-root-sum";
}

std::vector<OptionSpec> infiniretri_option_specs() {
    const pipelines::InfiniRetriOptions d;
    return {
        {"backend", true, "cpu | cuda: where the forward passes run (default cpu; cuda needs a build with "
                          "-DATTNRAG_CUDA=ON and a CUDA device)"},
        {"chunk-tokens", true, "InfiniRetri: document tokens per chunk (default " + std::to_string(d.chunk_tokens) + ")"},
        {"top-k", true, "InfiniRetri: top tokens whose sentences are kept per chunk (default " +
                            std::to_string(d.top_k) + ")"},
        {"score-memory", true,
         "InfiniRetri: a cached sentence competes with the larger of its score and this fraction of its score in "
         "the pass before, so one pass that looks elsewhere does not drop it (default " + shortest(d.score_memory) +
             "; 0: the reference, kept sentences compete again like new ones)"},
        {"relevance-reserve", true,
         "InfiniRetri: hold outside the prompts the N dropped sentences the question attended to most beyond "
         "what the rows before its words did, and rank them with the cache for the answer (default " +
             std::to_string(d.relevance_reserve) + "; 0: off)"},
        {"cache-tokens", true, "InfiniRetri: cap on the kept sentences (default " + std::to_string(d.cache_tokens) + ")"},
        {"sentence-relevance", true,
         "InfiniRetri: the final ranking's sentence relevance: best-root-sum (its best token's calibrated score x "
         "the square root of its tokens' summed score above 1; default) or best (its best token's score; before "
         "session 21); --answer-from-kept ranks again with either"},
        {"answer-context", true,
         "InfiniRetri: the answer reads the kept sentences most relevant to the question, up to this many tokens "
         "(default " + std::to_string(d.answer_context_tokens) + "; 0: all of them)"},
        {"answer-alternatives", true,
         "InfiniRetri: also answer from these answer contexts (token counts, 0: all) and keep the answer best "
         "grounded in the most relevant kept sentence (default " + join_ints(d.answer_alternatives) +
             "; none: one answer, streamed as it is generated)"},
        {"layers", true, "InfiniRetri: layers whose attention is read, e.g. 29 or 12-15 (default: the middle layer)"},
        {"heads", true,
         "InfiniRetri: read only these (layer, head) pairs, summed: top:N (the N best stored retrieval heads, "
         "see attnrag heads) or L:H,L:H (overrides --layers)"},
        {"heads-dir", true, "where retrieval-head rankings are stored (default as attnrag heads)"},
    };
}

bool read_infiniretri_options(Args& args, pipelines::InfiniRetriOptions& o, std::string& error) {
    const long long chunk = args.get_int("chunk-tokens", o.chunk_tokens);
    const long long top_k = args.get_int("top-k", o.top_k);
    const long long cache = args.get_int("cache-tokens", o.cache_tokens);
    const long long answer_context = args.get_int("answer-context", o.answer_context_tokens);
    const long long reserve = args.get_int("relevance-reserve", o.relevance_reserve);
    if (!args.ok()) {
        error = args.error();
        return false;
    }
    if (chunk < 1 || chunk > INT32_MAX || top_k < 1 || top_k > INT32_MAX || cache < 0 || cache > INT32_MAX ||
        answer_context < 0 || answer_context > INT32_MAX || reserve < 0 || reserve > INT32_MAX) {
        error = "--chunk-tokens and --top-k must be >= 1, --cache-tokens, --answer-context and --relevance-reserve >= 0";
        return false;
    }
    const double memory = args.get_double("score-memory", o.score_memory);
    if (!args.ok()) {
        error = args.error();
        return false;
    }
    if (!(memory >= 0.0 && memory < 1.0)) {
        error = "--score-memory must be in [0, 1)";
        return false;
    }
    if (auto list = args.get("answer-alternatives")) {
        std::vector<int32_t> budgets;
        if (*list != "none" && (!parse_int_list(*list, budgets) ||
                                std::any_of(budgets.begin(), budgets.end(), [](int32_t b) { return b < 0; }))) {
            error = "--answer-alternatives: a list of token counts >= 0 (e.g. 128,256) or none";
            return false;
        }
        o.answer_alternatives = std::move(budgets);
    }
    o.score_memory = static_cast<float>(memory);
    o.answer_context_tokens = static_cast<int32_t>(answer_context);
    o.chunk_tokens = static_cast<int32_t>(chunk);
    o.top_k = static_cast<int32_t>(top_k);
    o.relevance_reserve = static_cast<int32_t>(reserve);
    o.cache_tokens = static_cast<int32_t>(cache);
    if (auto r = args.get("sentence-relevance")) {
        const auto by = parse_sentence_relevance(*r);
        if (!by) {
            error = "--sentence-relevance must be best or best-root-sum, not '" + *r + "'";
            return false;
        }
        o.sentence_relevance = *by;
    }
    if (auto l = args.get("layers")) {
        if (!parse_int_list(*l, o.layers)) {
            error = "bad --layers '" + *l + "' (examples: 15, 12-15, 10,20)";
            return false;
        }
    }
    return true;
}

nlohmann::json infiniretri_settings_json(const pipelines::InfiniRetriOptions& o) {
    return {{"chunk_tokens", o.chunk_tokens},   {"top_k", o.top_k},
            {"phrase_tokens", o.phrase_tokens}, {"score_memory", o.score_memory},
            {"relevance_reserve", o.relevance_reserve},
            {"sentence_relevance", sentence_relevance_name(o.sentence_relevance)},
            {"cache_tokens", o.cache_tokens},   {"answer_context_tokens", o.answer_context_tokens},
            {"answer_alternatives", o.answer_alternatives}};
}

nlohmann::json saved_reading_json(const pipelines::InfiniRetriAnswer& a) {
    nlohmann::json j = {{"tokens_read", a.n_tokens_read},
                        {"tokens_resumed", a.n_tokens_resumed},
                        {"sentences", a.n_sentences},
                        {"chunks", a.n_chunks},
                        {"cache_limit", a.cache_limit},
                        {"max_prompt_tokens", a.max_prompt_tokens},
                        {"read_ms", a.read_ms},
                        {"sentence_relevance", sentence_relevance_name(a.relevance_by)}};
    auto& kept = j["kept"] = nlohmann::json::array();
    for (const auto& k : a.kept) {
        kept.push_back({{"begin", k.begin},
                        {"end", k.end},
                        {"text", k.text},
                        {"ids", k.ids},
                        {"score", k.score},
                        {"relevance", k.relevance}});
        if (k.reserved) kept.back()["reserved"] = true;
    }
    return j;
}

std::optional<pipelines::InfiniRetriAnswer> saved_reading_from_json(const nlohmann::json& j) {
    if (!j.is_object() || !j.contains("kept")) return std::nullopt;
    try {
        pipelines::InfiniRetriAnswer a;
        a.n_tokens_read = j.value("tokens_read", int64_t{0});
        a.n_tokens_resumed = j.value("tokens_resumed", int64_t{0});
        a.n_sentences = j.value("sentences", int64_t{0});
        a.n_chunks = j.value("chunks", 0);
        a.cache_limit = j.value("cache_limit", 0);
        a.max_prompt_tokens = j.value("max_prompt_tokens", 0);
        a.read_ms = j.value("read_ms", 0.0);
        // Readings saved before session 21 do not say: they were ranked with "best" unless read
        // with --sentence-relevance best-root-sum.
        const auto by = parse_sentence_relevance(j.value("sentence_relevance", std::string("best")));
        if (!by) return std::nullopt;
        a.relevance_by = *by;
        for (const auto& k : j.at("kept")) {
            pipelines::KeptSentence ks;
            ks.begin = k.at("begin").get<uint64_t>();
            ks.end = k.at("end").get<uint64_t>();
            ks.text = k.at("text").get<std::string>();
            ks.ids = k.at("ids").get<std::vector<TokenId>>();
            ks.score = k.value("score", 0.0f);
            ks.relevance = k.value("relevance", 0.0f);
            ks.reserved = k.value("reserved", false);
            if (ks.ids.empty() || ks.end < ks.begin) return std::nullopt;
            a.n_cache_tokens += static_cast<int32_t>(ks.ids.size());
            a.kept.push_back(std::move(ks));
        }
        if (a.kept.empty()) return std::nullopt;
        return a;
    } catch (const nlohmann::json::exception&) {
        return std::nullopt;
    }
}

Status read_infiniretri_heads(const Args& args, const Model& model, pipelines::InfiniRetriOptions& options) {
    const auto value = args.get("heads");
    if (!value) return {};
    Result<std::vector<pipelines::LayerHead>> heads = std::vector<pipelines::LayerHead>{};
    if (value->rfind("top:", 0) != 0) {
        heads = pipelines::parse_layer_heads(*value);
    } else {
        const std::string n_text = value->substr(4);
        char* end = nullptr;
        const long n = std::strtol(n_text.c_str(), &end, 10);
        if (n_text.empty() || *end != '\0' || n < 1 || n > 100000) {
            return make_error(Errc::InvalidArgument, "bad --heads '" + *value + "' (example: top:8)");
        }
        std::filesystem::path dir;
        if (auto d = args.get("heads-dir")) {
            dir = *d;
        } else {
            auto def = pipelines::default_heads_dir();
            if (!def) return def.error();
            dir = *def;
        }
        heads = pipelines::top_retrieval_heads(dir, model, static_cast<int32_t>(n));
    }
    if (!heads) return heads.error();
    const auto& hp = model.hparams();
    ATTNRAG_TRY(pipelines::check_layer_heads(*heads, hp.n_layer, hp.n_head, "--heads"));
    options.layer_heads = std::move(heads).value();
    return {};
}

std::string infiniretri_progress_line(const pipelines::InfiniRetriProgress& p) {
    constexpr int kWidth = 24;
    const double frac = p.n_bytes_total > 0
                            ? std::min(1.0, static_cast<double>(p.n_bytes_read) / static_cast<double>(p.n_bytes_total))
                            : 0.0;
    const int filled = static_cast<int>(frac * kWidth);
    std::string line(1, '[');
    line.append(static_cast<size_t>(filled), '#');
    line.append(static_cast<size_t>(kWidth - filled), '.');
    char pct[16];
    std::snprintf(pct, sizeof pct, "] %3.0f%%  ", 100.0 * frac);
    line += pct;
    return line + grouped(p.n_tokens_read) + " tokens read, " +
           grouped(static_cast<long long>(p.tokens_per_s)) + " tokens/s, chunk " + std::to_string(p.n_chunks) +
           ", cache " + grouped(p.n_cache_tokens) + " tokens";
}

}  // namespace attnrag::cli
