// Retrieval-head scoring: teacher-forced copy trials over a haystack, read with the attention
// probe, and the ranking of (layer, head) pairs they give (see retrieval_heads.hpp).
#include "attnrag/pipelines/retrieval_heads.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <iterator>
#include <optional>
#include <random>
#include <set>

#include "attnrag/context.hpp"
#include "attnrag/pipelines/infiniretri.hpp"
#include "infiniretri_reader.h"

namespace attnrag::pipelines {

namespace fs = std::filesystem;

// ---- (layer, head) lists ------------------------------------------------------------------------

namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    return s;
}

// A non-negative decimal integer that fits int32; nullopt otherwise.
std::optional<int32_t> parse_index(std::string_view s) {
    if (s.empty() || s.size() > 9) return std::nullopt;
    int32_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return std::nullopt;
        v = v * 10 + (c - '0');
    }
    return v;
}

}  // namespace

Result<std::vector<LayerHead>> parse_layer_heads(std::string_view text) {
    std::vector<LayerHead> out;
    size_t at = 0;
    while (at <= text.size()) {
        const size_t comma = std::min(text.find(',', at), text.size());
        const std::string_view item = trim(text.substr(at, comma - at));
        const size_t colon = item.find(':');
        std::optional<int32_t> layer, head;
        if (colon != std::string_view::npos) {
            layer = parse_index(trim(item.substr(0, colon)));
            head = parse_index(trim(item.substr(colon + 1)));
        }
        if (!layer || !head) {
            return make_error(Errc::InvalidArgument, "bad (layer, head) pair '" +
                                                         std::string(item) +
                                                         "': expected LAYER:HEAD, e.g. 15:3");
        }
        out.push_back({*layer, *head});
        at = comma + 1;
    }
    return out;
}

std::string format_layer_heads(const std::vector<LayerHead>& heads) {
    std::string out;
    for (const LayerHead& lh : heads) {
        if (!out.empty()) out += ',';
        out += std::to_string(lh.layer) + ":" + std::to_string(lh.head);
    }
    return out;
}

Status check_layer_heads(const std::vector<LayerHead>& heads, int32_t n_layer, int32_t n_head,
                         std::string_view what) {
    const std::string who(what);
    for (size_t i = 0; i < heads.size(); ++i) {
        const LayerHead lh = heads[i];
        const std::string name = std::to_string(lh.layer) + ":" + std::to_string(lh.head);
        if (lh.layer < 0 || lh.layer >= n_layer || lh.head < 0 || lh.head >= n_head) {
            return make_error(Errc::InvalidArgument, who + ": (layer, head) " + name +
                                                         " out of range: layers [0, " +
                                                         std::to_string(n_layer) + "), heads [0, " +
                                                         std::to_string(n_head) + ")");
        }
        if (std::find(heads.begin(), heads.begin() + static_cast<std::ptrdiff_t>(i), lh) !=
            heads.begin() + static_cast<std::ptrdiff_t>(i)) {
            return make_error(Errc::InvalidArgument,
                              who + ": (layer, head) " + name + " listed twice");
        }
    }
    return {};
}

// ---- Ranking ----------------------------------------------------------------------------------

void sort_head_scores(std::vector<HeadScore>& heads) {
    std::sort(heads.begin(), heads.end(), [](const HeadScore& a, const HeadScore& b) {
        if (a.score != b.score) return a.score > b.score;
        if (a.score_correct != b.score_correct) return a.score_correct > b.score_correct;
        if (a.head.layer != b.head.layer) return a.head.layer < b.head.layer;
        return a.head.head < b.head.head;
    });
}

std::vector<LayerHead> HeadRanking::top(int32_t n) const {
    std::vector<LayerHead> out;
    for (const HeadScore& h : heads) {
        if (static_cast<int64_t>(out.size()) >= n) break;
        out.push_back(h.head);
    }
    return out;
}

double HeadRanking::mean_score() const {
    if (heads.empty()) return 0;
    double sum = 0;
    for (const HeadScore& h : heads) sum += h.score;
    return sum / static_cast<double>(heads.size());
}

// ---- Copy trials ------------------------------------------------------------------------------

namespace {

using Clock = std::chrono::steady_clock;

// Needle subjects with their question. Deliberately unlike the project's eval needles (no codes,
// colours, cities or names), so that ranking heads never looks at the eval's test data.
struct NeedleTemplate {
    const char* subject;
    const char* question;
};
constexpr NeedleTemplate kTemplates[] = {
    {"The words written on the blue envelope are:", "What words are written on the blue envelope?"},
    {"The words painted on the old boat are:", "What words are painted on the old boat?"},
    {"The items on the shopping list are:", "What items are on the shopping list?"},
    {"The words carved into the garden bench are:", "What words are carved into the garden bench?"},
};

// The haystack read once: its sentences' token ids (each with its leading separator, as the
// InfiniRetri pipeline tokenizes them) and the vocabulary the needle words are drawn from.
struct Haystack {
    std::vector<std::vector<TokenId>> sentences;
    std::vector<std::string> words;  // distinct lowercase words of 4..10 letters, sorted
    int64_t n_tokens = 0;
};

// Lowercase ASCII words of 4..10 letters that appear in lowercase in the text (no names).
void collect_words(std::string_view text, std::set<std::string>& words) {
    size_t i = 0;
    while (i < text.size()) {
        if (!std::isalpha(static_cast<unsigned char>(text[i]))) {
            ++i;
            continue;
        }
        size_t j = i;
        bool lower = true;
        while (j < text.size() && std::isalpha(static_cast<unsigned char>(text[j]))) {
            lower = lower && std::islower(static_cast<unsigned char>(text[j]));
            ++j;
        }
        // Skip word pieces glued to digits, apostrophes or other marks ("don't", "x86").
        const bool clean_left = i == 0 || std::isspace(static_cast<unsigned char>(text[i - 1]));
        const bool clean_right = j == text.size() ||
                                 std::isspace(static_cast<unsigned char>(text[j])) ||
                                 text[j] == ',' || text[j] == '.';
        if (lower && clean_left && clean_right && j - i >= 4 && j - i <= 10)
            words.emplace(text.substr(i, j - i));
        i = j;
    }
}

Result<Haystack> read_haystack(const fs::path& path, const Tokenizer& tok, int64_t max_tokens) {
    auto files = text_files(path);
    if (!files) return files.error();
    Haystack h;
    std::set<std::string> words;
    for (const fs::path& f : *files) {
        if (h.n_tokens >= max_tokens) break;
        auto src = SentenceSource::open(f);
        if (!src) return src.error();
        // Sentences longer than 256 tokens are split (keeps insertion points frequent).
        detail::SentenceTokenReader reader(*src, tok, 256);
        while (h.n_tokens < max_tokens) {
            auto s = reader.next();
            if (!s) return s.error();
            if (!*s) break;
            collect_words((*s)->text, words);
            h.n_tokens += static_cast<int64_t>((*s)->ids.size());
            h.sentences.push_back(std::move((*s)->ids));
        }
    }
    h.words.assign(words.begin(), words.end());
    return h;
}

// One trial's tokens: `context` ends with the last prompt token; `answer` follows it.
struct Trial {
    int32_t length = 0, depth = 0;
    std::vector<TokenId> context;  // prefix + haystack with needle + question
    std::vector<TokenId> answer;   // the needle sentence as the assistant would write it
    int32_t needle_begin = 0, needle_end = 0;  // slots of the inserted needle in `context`
};

Result<Trial> make_trial(const Haystack& hay, const Tokenizer& tok, std::mt19937_64& rng,
                         int32_t length, int32_t depth, int32_t n_words,
                         const std::string& instruction) {
    Trial t;
    t.length = length;
    t.depth = depth;
    const NeedleTemplate& tpl =
        kTemplates[std::uniform_int_distribution<size_t>(0, std::size(kTemplates) - 1)(rng)];
    // Distinct words, in random order.
    std::vector<std::string> picked;
    while (static_cast<int32_t>(picked.size()) < n_words) {
        const std::string& w =
            hay.words[std::uniform_int_distribution<size_t>(0, hay.words.size() - 1)(rng)];
        if (std::find(picked.begin(), picked.end(), w) == picked.end()) picked.push_back(w);
    }
    std::string needle = tpl.subject;
    for (const std::string& w : picked) needle += " " + w;
    needle += ".";

    auto prompt = build_infiniretri_prompt(tok, instruction, tpl.question);
    if (!prompt) return prompt.error();
    auto needle_ids = tok.encode(" " + needle, false);  // as a sentence inside the haystack
    if (!needle_ids) return needle_ids.error();
    auto answer_ids = tok.encode(needle, false);  // right after the generation prompt
    if (!answer_ids) return answer_ids.error();
    t.answer = std::move(answer_ids).value();

    // Haystack sentences from a random start (cyclic) totalling at most length - needle tokens.
    const int64_t budget =
        std::max<int64_t>(1, int64_t{length} - static_cast<int64_t>(needle_ids->size()));
    size_t k = std::uniform_int_distribution<size_t>(0, hay.sentences.size() - 1)(rng);
    std::vector<const std::vector<TokenId>*> cut;
    std::vector<int64_t> before{0};  // tokens before sentence i of the cut
    while (true) {
        const auto& s = hay.sentences[k];
        const auto n = static_cast<int64_t>(s.size());
        if (!cut.empty() && before.back() + n > budget) break;
        cut.push_back(&s);
        before.push_back(before.back() + n);
        k = (k + 1) % hay.sentences.size();
    }
    // The sentence boundary nearest depth% of the haystack's tokens.
    const double target = static_cast<double>(before.back()) * depth / 100.0;
    size_t at = 0;
    for (size_t b = 0; b < before.size(); ++b) {
        if (std::abs(static_cast<double>(before[b]) - target) <
            std::abs(static_cast<double>(before[at]) - target)) {
            at = b;
        }
    }
    t.context = prompt->prefix;
    for (size_t i = 0; i < cut.size(); ++i) {
        if (i == at) {
            t.needle_begin = static_cast<int32_t>(t.context.size());
            t.context.insert(t.context.end(), needle_ids->begin(), needle_ids->end());
            t.needle_end = static_cast<int32_t>(t.context.size());
        }
        t.context.insert(t.context.end(), cut[i]->begin(), cut[i]->end());
    }
    if (at == cut.size()) {
        t.needle_begin = static_cast<int32_t>(t.context.size());
        t.context.insert(t.context.end(), needle_ids->begin(), needle_ids->end());
        t.needle_end = static_cast<int32_t>(t.context.size());
    }
    t.context.insert(t.context.end(), prompt->question.begin(), prompt->question.end());
    return t;
}

Status check_options(const RetrievalHeadsOptions& o, const ModelHParams& hp) {
    auto bad = [](const std::string& m) {
        return make_error(Errc::InvalidArgument, "retrieval heads: " + m);
    };
    if (o.haystack.empty()) return bad("no haystack given");
    if (o.lengths.empty() || o.depths.empty()) return bad("lengths and depths must not be empty");
    for (int32_t l : o.lengths) {
        // A trial also holds the prompt (~50 tokens) and the answer (~30).
        if (l < 64 || l > hp.n_ctx_train - 256) {
            return bad("length " + std::to_string(l) + " outside [64, " +
                       std::to_string(hp.n_ctx_train - 256) +
                       "] (the model's training context less room for the prompt)");
        }
    }
    for (int32_t d : o.depths) {
        if (d < 0 || d > 100) return bad("depth " + std::to_string(d) + " outside [0, 100]");
    }
    if (o.n_trials < 1) return bad("n_trials must be >= 1");
    if (o.n_words < 1 || o.n_words > 64) return bad("n_words must be in [1, 64]");
    if (o.max_haystack_tokens < 1) return bad("max_haystack_tokens must be >= 1");
    return {};
}

std::string model_name(const Model& model) {
    auto name = model.file().get_string("general.name");
    if (name && !name->empty()) return *name;
    return fs::path(model.path()).filename().string();
}

}  // namespace

Result<HeadRanking> score_retrieval_heads(const Model& model, const RetrievalHeadsOptions& o) {
    const auto t0 = Clock::now();
    const ModelHParams& hp = model.hparams();
    ATTNRAG_TRY(check_options(o, hp));
    const Tokenizer& tok = model.tokenizer();
    auto hay = read_haystack(o.haystack, tok, o.max_haystack_tokens);
    if (!hay) return hay.error();
    if (hay->sentences.size() < 2 || hay->words.size() < static_cast<size_t>(2 * o.n_words)) {
        return make_error(Errc::InvalidArgument,
                          "retrieval heads: " + o.haystack.string() +
                              ": too little text (need at least 2 sentences and " +
                              std::to_string(2 * o.n_words) + " distinct lowercase words)");
    }

    // All trials up front (token ids only), so the context is sized once.
    std::mt19937_64 rng(o.seed);
    const std::string instruction = InfiniRetriOptions{}.instruction;
    std::vector<Trial> trials;
    size_t n_ctx = 0;
    for (int32_t length : o.lengths) {
        for (int32_t depth : o.depths) {
            for (int32_t k = 0; k < o.n_trials; ++k) {
                auto t = make_trial(*hay, tok, rng, length, depth, o.n_words, instruction);
                if (!t) return t.error();
                n_ctx = std::max(n_ctx, t->context.size() + t->answer.size());
                trials.push_back(std::move(t).value());
            }
        }
    }
    auto ctx =
        Context::create(model, {.n_ctx = static_cast<int32_t>(n_ctx), .n_threads = o.n_threads});
    if (!ctx) return ctx.error();

    const size_t n_pairs = static_cast<size_t>(hp.n_layer) * static_cast<size_t>(hp.n_head);
    std::vector<int64_t> hits(n_pairs, 0), hits_correct(n_pairs, 0);
    HeadRanking out;
    int64_t n_tokens = 0;
    for (size_t ti = 0; ti < trials.size(); ++ti) {
        const Trial& t = trials[ti];
        // Rows: the last context token, then the answer but its last token; row r predicts
        // answer[r]. Only rows whose target occurs in the needle are probed.
        std::vector<TokenId> tail{t.context.back()};
        tail.insert(tail.end(), t.answer.begin(), t.answer.end() - 1);
        const std::span<const TokenId> needle(t.context.data() + t.needle_begin,
                                              static_cast<size_t>(t.needle_end - t.needle_begin));
        ProbeRequest req;
        for (size_t r = 0; r < t.answer.size(); ++r) {
            if (std::find(needle.begin(), needle.end(), t.answer[r]) != needle.end())
                req.rows.push_back(static_cast<int32_t>(r));
        }
        ctx->clear();
        const std::span<const TokenId> head_part(t.context.data(), t.context.size() - 1);
        ATTNRAG_TRY(ctx->eval(head_part, {.logits = LogitsMode::None}));
        n_tokens += static_cast<int64_t>(t.context.size() + tail.size());
        if (!req.rows.empty()) {
            const int32_t n_keep = ctx->n_past();
            req.keep_probs = true;
            // Layers per pass, so that the kept probabilities stay under max_probe_bytes.
            const size_t per_layer = static_cast<size_t>(hp.n_head) * req.rows.size() *
                                     (t.context.size() + tail.size()) * sizeof(float);
            const auto group = static_cast<int32_t>(
                std::clamp<size_t>(o.max_probe_bytes / std::max<size_t>(1, per_layer), 1,
                                   static_cast<size_t>(hp.n_layer)));
            std::vector<char> correct(req.rows.size(), 0);
            for (int32_t l0 = 0; l0 < hp.n_layer; l0 += group) {
                req.layers.clear();
                for (int32_t l = l0; l < std::min(hp.n_layer, l0 + group); ++l)
                    req.layers.push_back(l);
                ProbeResult res;
                const bool first = l0 == 0;
                ATTNRAG_TRY(ctx->eval(tail, {.logits = first ? LogitsMode::All : LogitsMode::None,
                                             .probe = &req,
                                             .probe_out = &res}));
                if (first) {
                    // The model's own greedy prediction on each probed row.
                    for (size_t ri = 0; ri < req.rows.size(); ++ri) {
                        const auto lg = ctx->logits(req.rows[ri]);
                        const auto best = std::max_element(lg.begin(), lg.end()) - lg.begin();
                        correct[ri] = best == t.answer[static_cast<size_t>(req.rows[ri])];
                    }
                }
                for (int32_t li = 0; li < res.n_layers; ++li) {
                    for (int32_t hi = 0; hi < res.n_heads; ++hi) {
                        const size_t pair =
                            static_cast<size_t>(res.layers[static_cast<size_t>(li)]) *
                                static_cast<size_t>(hp.n_head) +
                            static_cast<size_t>(res.heads[static_cast<size_t>(hi)]);
                        for (int32_t ri = 0; ri < res.n_rows; ++ri) {
                            const auto& p = res.probs[res.index(li, hi, ri)];
                            const auto j = static_cast<int32_t>(
                                std::max_element(p.begin(), p.end()) - p.begin());
                            const TokenId target = t.answer[static_cast<size_t>(req.rows[ri])];
                            const bool hit = j >= t.needle_begin && j < t.needle_end &&
                                             t.context[static_cast<size_t>(j)] == target;
                            hits[pair] += hit;
                            hits_correct[pair] += hit && correct[static_cast<size_t>(ri)];
                        }
                    }
                }
                ctx->truncate(n_keep);
            }
            out.n_rows += static_cast<int64_t>(req.rows.size());
            for (char c : correct) out.n_rows_correct += c;
        }
        if (o.on_progress) {
            const RetrievalHeadsProgress p{
                static_cast<int32_t>(ti + 1),
                static_cast<int32_t>(trials.size()),
                t.length,
                t.depth,
                n_tokens,
                std::chrono::duration<double>(Clock::now() - t0).count()};
            if (!o.on_progress(p)) return make_error(Errc::Cancelled, "retrieval heads: cancelled");
        }
    }
    ctx->clear();
    if (out.n_rows == 0) {
        return make_error(Errc::Internal,
                          "retrieval heads: no answer token occurs in its needle (tokenizer?)");
    }

    out.fingerprint = model.fingerprint();
    out.model_name = model_name(model);
    out.n_layer = hp.n_layer;
    out.n_head = hp.n_head;
    out.setup = {o.haystack.string(), o.lengths, o.depths, o.n_trials, o.n_words, o.seed};
    out.n_trials = static_cast<int32_t>(trials.size());
    for (int32_t l = 0; l < hp.n_layer; ++l) {
        for (int32_t h = 0; h < hp.n_head; ++h) {
            const size_t pair =
                static_cast<size_t>(l) * static_cast<size_t>(hp.n_head) + static_cast<size_t>(h);
            HeadScore s;
            s.head = {l, h};
            s.score = static_cast<double>(hits[pair]) / static_cast<double>(out.n_rows);
            s.score_correct = out.n_rows_correct > 0 ? static_cast<double>(hits_correct[pair]) /
                                                           static_cast<double>(out.n_rows_correct)
                                                     : 0.0;
            out.heads.push_back(s);
        }
    }
    sort_head_scores(out.heads);
    out.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    return out;
}

}  // namespace attnrag::pipelines
