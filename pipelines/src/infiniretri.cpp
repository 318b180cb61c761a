// InfiniRetri (algorithms.md §1): chunk passes that keep the sentences the question's attention
// points at, then the answer from the kept sentences; and the full-prompt baseline.
#include "attnrag/pipelines/infiniretri.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <optional>

#include "attnrag/pipelines/prompts.hpp"
#include "infiniretri_reader.h"
#include "infiniretri_score.h"

namespace attnrag::pipelines {

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

void append_ids(std::vector<TokenId>& out, std::span<const TokenId> ids) {
    out.reserve(out.size() + ids.size());
    for (TokenId t : ids) out.push_back(t);
}

// User text, never parsed for special tokens (a document or question that contains
// "<|im_end|>" must not end the turn).
Status append_text(const Tokenizer& tok, std::vector<TokenId>& out, std::string_view text) {
    if (text.empty()) return {};
    auto ids = tok.encode(text, false);
    if (!ids) return ids.error();
    append_ids(out, *ids);
    return {};
}

int32_t size_i32(size_t n) {
    return static_cast<int32_t>(n);
}

int32_t n_tokens_of(std::span<const KeptSentence> ss) {
    int64_t n = 0;
    for (const auto& s : ss) n += static_cast<int64_t>(s.ids.size());
    return static_cast<int32_t>(n);
}

// The most relevant sentences whose tokens fit `budget` (at least the best one), in document
// order.
std::vector<KeptSentence> best_sentences(std::span<const KeptSentence> kept, int32_t budget) {
    std::vector<size_t> order(kept.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t x, size_t y) { return kept[x].relevance > kept[y].relevance; });
    std::vector<char> pick(kept.size(), 0);
    int64_t used = 0;
    for (size_t k : order) {
        const auto len = static_cast<int64_t>(kept[k].ids.size());
        if (used > 0 && used + len > budget) continue;
        pick[k] = 1;
        used += len;
    }
    std::vector<KeptSentence> out;
    for (size_t k = 0; k < kept.size(); ++k) {
        if (pick[k]) out.push_back(kept[k]);
    }
    return out;
}

bool same_sentences(std::span<const KeptSentence> a, std::span<const KeptSentence> b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                      [](const KeptSentence& x, const KeptSentence& y) {
                          return x.begin == y.begin && x.end == y.end;
                      });
}

// FNV-1a over the byte ranges and token ids of the sentences read into chunks: what a checkpoint
// is compared with on resume.
constexpr uint64_t kDigestSeed = 14695981039346656037ull;

void digest_bytes(uint64_t& h, const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
}

template <typename T>
void digest_value(uint64_t& h, const T& v) {
    digest_bytes(h, &v, sizeof v);
}

void digest_sentence(uint64_t& h, const KeptSentence& s) {
    digest_bytes(h, &s.begin, sizeof s.begin);
    digest_bytes(h, &s.end, sizeof s.end);
    digest_bytes(h, s.ids.data(), s.ids.size() * sizeof(TokenId));
}

}  // namespace

Result<InfiniRetriPrompt> build_infiniretri_prompt(const Tokenizer& tok,
                                                   std::string_view instruction,
                                                   std::string_view question) {
    auto chat = ChatFormat::detect(tok);
    if (!chat) return chat.error();
    InfiniRetriPrompt p;
    // No system message: the model's default system turn, if its format gives one.
    auto prefix = chat->open_user_turn();
    if (!prefix) return prefix.error();
    p.prefix = std::move(prefix).value();
    ATTNRAG_TRY(append_text(tok, p.prefix, instruction));
    ATTNRAG_TRY(append_text(tok, p.prefix, "\n\n"));
    // Each piece tokenized alone, so "Question:" starts at a token boundary (the span finder of
    // the reference relies on the same thing).
    ATTNRAG_TRY(append_text(tok, p.question, "\n\n"));
    p.question_offset = size_i32(p.question.size());
    ATTNRAG_TRY(append_text(tok, p.question, "Question: "));
    p.content_offset = size_i32(p.question.size());
    ATTNRAG_TRY(append_text(tok, p.question, question));
    ATTNRAG_TRY(append_text(tok, p.question, "\n\n"));
    ATTNRAG_TRY(append_text(tok, p.question, "Answer:"));
    append_ids(p.question, chat->close_user_turn());
    return p;
}

struct InfiniRetri::Impl {
    const Model* model = nullptr;
    Context ctx;

    Impl(const Model& m, Context c) : model(&m), ctx(std::move(c)) {}

    // State of one answer() call.
    struct Run {
        const InfiniRetriOptions* opt = nullptr;
        InfiniRetriPrompt prompt;
        ProbeRequest probe;
        // [probe layer][probe head]: 1 where the pair is summed (all of them unless
        // options.layer_heads picks some of the probed layer x head grid).
        std::vector<char> pair_used;
        int32_t cache_limit = 0;
        int32_t reserve_limit = 0;  // tokens the reserve may hold
        std::vector<float> w2;      // squared question weight per query row (frozen after chunk 1)
        std::vector<KeptSentence> cache;
        std::vector<KeptSentence> reserve;  // options.relevance_reserve, in document order
        std::string question;
        InfiniRetriAnswer out;
    };

    Status check_options(const InfiniRetriOptions& o, std::string_view question) const {
        const auto& hp = model->hparams();
        if (question.empty())
            return make_error(Errc::InvalidArgument, "infiniretri: empty question");
        if (o.chunk_tokens < 1)
            return make_error(Errc::InvalidArgument, "infiniretri: chunk_tokens must be >= 1");
        if (o.top_k < 1)
            return make_error(Errc::InvalidArgument, "infiniretri: top_k must be >= 1");
        if (o.phrase_tokens < 1)
            return make_error(Errc::InvalidArgument, "infiniretri: phrase_tokens must be >= 1");
        if (o.relevance_reserve < 0)
            return make_error(Errc::InvalidArgument, "infiniretri: relevance_reserve must be >= 0");
        if (!(o.score_memory >= 0.0f && o.score_memory < 1.0f))
            return make_error(Errc::InvalidArgument, "infiniretri: score_memory must be in [0, 1)");
        if (o.cache_tokens < 0)
            return make_error(Errc::InvalidArgument, "infiniretri: cache_tokens must be >= 0");
        if (o.answer_context_tokens < 0)
            return make_error(Errc::InvalidArgument,
                              "infiniretri: answer_context_tokens must be >= 0");
        for (int32_t budget : o.answer_alternatives) {
            if (budget < 0)
                return make_error(Errc::InvalidArgument,
                                  "infiniretri: answer_alternatives must be >= 0");
        }
        if (o.answer_context_tokens > 0 && o.neutral_question.empty())
            return make_error(Errc::InvalidArgument, "infiniretri: empty neutral_question");
        if (o.max_answer_tokens < 1) {
            return make_error(Errc::InvalidArgument, "infiniretri: max_answer_tokens must be >= 1");
        }
        for (int32_t l : o.layers) {
            if (l < 0 || l >= hp.n_layer) {
                return make_error(Errc::InvalidArgument, "infiniretri: layer " + std::to_string(l) +
                                                             " out of range [0, " +
                                                             std::to_string(hp.n_layer) + ")");
            }
        }
        for (int32_t h : o.heads) {
            if (h < 0 || h >= hp.n_head) {
                return make_error(Errc::InvalidArgument, "infiniretri: head " + std::to_string(h) +
                                                             " out of range [0, " +
                                                             std::to_string(hp.n_head) + ")");
            }
        }
        return check_layer_heads(o.layer_heads, hp.n_layer, hp.n_head, "infiniretri");
    }

    // The probed layers and heads, and which of their pairs are summed. With layer_heads the
    // probe reads the union of their layers and heads (one probe call) and the mask keeps just
    // the chosen pairs.
    void set_probe_heads(Run& run, const InfiniRetriOptions& o) const {
        const int32_t n_head = model->hparams().n_head;
        if (o.layer_heads.empty()) {
            run.probe.layers =
                o.layers.empty() ? std::vector<int32_t>{model->hparams().n_layer / 2} : o.layers;
            run.probe.heads = o.heads;
            const size_t n_heads = o.heads.empty() ? static_cast<size_t>(n_head) : o.heads.size();
            run.pair_used.assign(run.probe.layers.size() * n_heads, 1);
            return;
        }
        std::vector<int32_t> layers, heads;
        for (const LayerHead& lh : o.layer_heads) {
            layers.push_back(lh.layer);
            heads.push_back(lh.head);
        }
        for (auto* v : {&layers, &heads}) {
            std::sort(v->begin(), v->end());
            v->erase(std::unique(v->begin(), v->end()), v->end());
        }
        run.pair_used.assign(layers.size() * heads.size(), 0);
        for (const LayerHead& lh : o.layer_heads) {
            const auto li =
                std::lower_bound(layers.begin(), layers.end(), lh.layer) - layers.begin();
            const auto hi = std::lower_bound(heads.begin(), heads.end(), lh.head) - heads.begin();
            run.pair_used[static_cast<size_t>(li) * heads.size() + static_cast<size_t>(hi)] = 1;
        }
        run.probe.layers = std::move(layers);
        run.probe.heads = std::move(heads);
    }

    // What a checkpoint's reading depends on besides the text and the question.
    static uint64_t settings_digest(const Run& run) {
        const InfiniRetriOptions& o = *run.opt;
        uint64_t h = kDigestSeed;
        for (int32_t v : {o.chunk_tokens, o.top_k, o.phrase_tokens, run.cache_limit})
            digest_value(h, v);
        digest_value(h, o.score_memory);
        if (o.relevance_reserve > 0)
            digest_value(h, o.relevance_reserve);  // older checkpoints stay valid
        digest_value(h, o.question_weight);
        digest_bytes(h, o.instruction.data(), o.instruction.size());
        for (const auto* v : {&run.probe.layers, &run.probe.heads}) {
            digest_value(h, v->size());
            digest_bytes(h, v->data(), v->size() * sizeof(int32_t));
        }
        digest_bytes(h, run.pair_used.data(), run.pair_used.size());
        return h;
    }

    static size_t pair_index(const ProbeResult& att, int32_t li, int32_t hi) {
        return static_cast<size_t>(li) * static_cast<size_t>(att.n_heads) + static_cast<size_t>(hi);
    }

    // Smoothed token scores of one pass over prefix + sentences + `question` block: a_j = sum_i
    // w_i^2 A[i, j] over the question rows i and the context columns j, then the phrase filter.
    // `w2` holds the squared question weights (each row's mass on the question span); computed by
    // this pass when empty, else reused (the rows must be the same).
    struct PassScores {
        std::vector<float> score;         // per context token
        std::vector<int32_t> sent_begin;  // per sentence: its first token's index in `score`
        // With `neutral_rows`: the same filter over the summed attention of the question block's
        // rows before the question's own words ("\n\nQuestion: "), which cannot depend on it.
        std::vector<float> neutral = {};
    };
    Result<PassScores> score_pass(Run& run, std::span<KeptSentence* const> sents,
                                  const InfiniRetriPrompt& question, std::vector<float>& w2,
                                  bool neutral_rows = false) {
        const InfiniRetriOptions& o = *run.opt;
        PassScores out;
        std::vector<TokenId> tokens = run.prompt.prefix;
        const int32_t ctx_begin = size_i32(tokens.size());
        for (const KeptSentence* s : sents) {
            out.sent_begin.push_back(size_i32(tokens.size()) - ctx_begin);
            append_ids(tokens, s->ids);
        }
        const int32_t ctx_end = size_i32(tokens.size());
        const int32_t q_begin = ctx_end + question.question_offset;
        append_ids(tokens, question.question);
        const int32_t n = size_i32(tokens.size());
        run.out.max_prompt_tokens = std::max(run.out.max_prompt_tokens, n);

        // Probed rows: the question rows [q_begin, n), preceded with neutral_rows by the block's
        // first rows [ctx_end, q_begin); question rows are indexed from q_row0.
        const int32_t row_begin = neutral_rows ? ctx_end : q_begin;
        const int32_t q_row0 = q_begin - row_begin;
        const int32_t neutral_end =
            neutral_rows ? ctx_end + question.content_offset - row_begin : 0;
        run.probe.rows.resize(static_cast<size_t>(n - row_begin));
        std::iota(run.probe.rows.begin(), run.probe.rows.end(), row_begin);
        ProbeResult att;
        ctx.clear();
        ATTNRAG_TRY(
            ctx.eval(tokens, {.logits = LogitsMode::None, .probe = &run.probe, .probe_out = &att}));
        ctx.clear();

        // Question weights: the mass each row puts on the question span [q_begin, row], summed
        // over the read layers and heads.
        if (w2.empty()) {
            w2.assign(static_cast<size_t>(att.n_rows - q_row0), 1.0f);
            if (o.question_weight) {
                for (int32_t ri = 0; ri < att.n_rows - q_row0; ++ri) {
                    double w = 0;
                    for (int32_t li = 0; li < att.n_layers; ++li) {
                        for (int32_t hi = 0; hi < att.n_heads; ++hi) {
                            if (!run.pair_used[pair_index(att, li, hi)]) continue;
                            const auto& p = att.probs[att.index(li, hi, q_row0 + ri)];
                            for (size_t j = static_cast<size_t>(q_begin); j < p.size(); ++j)
                                w += p[j];
                        }
                    }
                    w2[static_cast<size_t>(ri)] = static_cast<float>(w * w);
                }
            }
        }
        if (w2.size() != static_cast<size_t>(att.n_rows - q_row0)) {
            return make_error(Errc::Internal, "infiniretri: query rows changed between passes");
        }

        std::vector<float> a(static_cast<size_t>(ctx_end - ctx_begin), 0.0f);
        std::vector<float> b(neutral_rows ? a.size() : 0, 0.0f);
        for (int32_t li = 0; li < att.n_layers; ++li) {
            for (int32_t hi = 0; hi < att.n_heads; ++hi) {
                if (!run.pair_used[pair_index(att, li, hi)]) continue;
                for (int32_t ri = 0; ri < att.n_rows - q_row0; ++ri) {
                    const auto& p = att.probs[att.index(li, hi, q_row0 + ri)];
                    const float wi = w2[static_cast<size_t>(ri)];
                    for (int32_t j = ctx_begin; j < ctx_end; ++j) {
                        a[static_cast<size_t>(j - ctx_begin)] += wi * p[static_cast<size_t>(j)];
                    }
                }
                for (int32_t ri = 0; ri < neutral_end; ++ri) {
                    const auto& p = att.probs[att.index(li, hi, ri)];
                    for (int32_t j = ctx_begin; j < ctx_end; ++j) {
                        b[static_cast<size_t>(j - ctx_begin)] += p[static_cast<size_t>(j)];
                    }
                }
            }
        }
        out.score = detail::box_filter(a, o.phrase_tokens);
        if (neutral_rows) out.neutral = detail::box_filter(b, o.phrase_tokens);
        return out;
    }

    // Per sentence, its best token value (0 for none above it).
    static std::vector<float> sentence_best(std::span<const float> v,
                                            std::span<KeptSentence* const> sents,
                                            std::span<const int32_t> sent_begin) {
        std::vector<float> best(sents.size(), 0.0f);
        for (size_t k = 0; k < sents.size(); ++k) {
            const auto b = static_cast<size_t>(sent_begin[k]);
            for (size_t j = b; j < b + sents[k]->ids.size(); ++j) best[k] = std::max(best[k], v[j]);
        }
        return best;
    }

    // One chunk pass: prompt over cache + chunk, probe the question rows (weights frozen after
    // the first chunk), keep the sentences of the top-k smoothed token scores and the cached ones
    // whose remembered score (options.score_memory) reaches the k-th; capped, they become the new
    // cache. The others may go to the reserve (options.relevance_reserve).
    Status chunk_pass(Run& run, std::vector<KeptSentence>& chunk) {
        const InfiniRetriOptions& o = *run.opt;
        std::vector<KeptSentence*> sents;
        for (auto& s : run.cache) sents.push_back(&s);
        for (auto& s : chunk) sents.push_back(&s);
        auto pass = score_pass(run, sents, run.prompt, run.w2, o.relevance_reserve > 0);
        if (!pass) return pass.error();
        const std::vector<float>& score = pass->score;
        const std::vector<int32_t>& sent_begin = pass->sent_begin;
        const std::vector<int32_t> top = detail::top_k_indices(score, o.top_k);

        // Sentences holding a top-k token, with their best token score.
        std::vector<char> keep(sents.size(), 0);
        size_t si = 0;
        for (int32_t t : top) {
            while (si + 1 < sents.size() && sent_begin[si + 1] <= t) ++si;
            keep[si] = 1;
        }
        const size_t n_cached = run.cache.size();  // sents[0, n_cached) come from the cache
        const std::vector<float> best = sentence_best(score, sents, sent_begin);
        for (size_t k = 0; k < sents.size(); ++k) {
            sents[k]->score =
                k < n_cached ? std::max(best[k], o.score_memory * sents[k]->score) : best[k];
        }
        // A cached sentence whose remembered score reaches the k-th best token score stays.
        if (o.score_memory > 0.0f && !top.empty()) {
            float kth = score[static_cast<size_t>(top.front())];
            for (int32_t t : top) kth = std::min(kth, score[static_cast<size_t>(t)]);
            for (size_t k = 0; k < n_cached; ++k) {
                if (sents[k]->score >= kth) keep[k] = 1;
            }
        }
        // Relevance in this pass: a sentence's best token's question-row score over the neutral
        // rows' score, both normalised to sum 1 (plus the mean); it keeps its best.
        if (o.relevance_reserve > 0) {
            const std::vector<float> rel =
                sentence_best(detail::calibrated_scores(score, pass->neutral), sents, sent_begin);
            for (size_t k = 0; k < sents.size(); ++k) {
                sents[k]->peak_relevance = std::max(sents[k]->peak_relevance, rel[k]);
            }
        }
        // Cap: the best-scoring kept sentences that fit, back in document order.
        int64_t kept_tokens = 0;
        for (size_t k = 0; k < sents.size(); ++k) {
            if (keep[k]) kept_tokens += static_cast<int64_t>(sents[k]->ids.size());
        }
        if (kept_tokens > run.cache_limit) {
            std::vector<size_t> order;
            for (size_t k = 0; k < sents.size(); ++k) {
                if (keep[k]) order.push_back(k);
            }
            std::stable_sort(order.begin(), order.end(),
                             [&](size_t x, size_t y) { return sents[x]->score > sents[y]->score; });
            std::fill(keep.begin(), keep.end(), 0);
            int64_t used = 0;
            for (size_t k : order) {
                const auto len = static_cast<int64_t>(sents[k]->ids.size());
                if (used + len <= run.cache_limit) {
                    keep[k] = 1;
                    used += len;
                }
            }
        }
        std::vector<KeptSentence> next, dropped;
        for (size_t k = 0; k < sents.size(); ++k) {
            if (keep[k]) {
                next.push_back(std::move(*sents[k]));
            } else if (o.relevance_reserve > 0) {
                dropped.push_back(std::move(*sents[k]));
            }
        }
        run.cache = std::move(next);
        if (o.relevance_reserve > 0) update_reserve(run, std::move(dropped));
        return {};
    }

    // The reserve becomes the relevance_reserve most relevant of itself and `dropped` (the
    // earlier of equals) that fit reserve_limit, in document order.
    static void update_reserve(Run& run, std::vector<KeptSentence> dropped) {
        std::vector<KeptSentence>& pool = dropped;
        for (auto& s : run.reserve) pool.push_back(std::move(s));
        std::sort(pool.begin(), pool.end(), [](const KeptSentence& x, const KeptSentence& y) {
            return x.peak_relevance > y.peak_relevance ||
                   (x.peak_relevance == y.peak_relevance && x.begin < y.begin);
        });
        run.reserve.clear();
        int64_t used = 0;
        for (auto& s : pool) {
            if (run.reserve.size() == static_cast<size_t>(run.opt->relevance_reserve)) break;
            const auto len = static_cast<int64_t>(s.ids.size());
            if (used + len > run.reserve_limit) continue;
            used += len;
            run.reserve.push_back(std::move(s));
        }
        std::sort(run.reserve.begin(), run.reserve.end(),
                  [](const KeptSentence& x, const KeptSentence& y) { return x.begin < y.begin; });
    }

    // KeptSentence::relevance of the final cache: two passes over it, with the question and with
    // the neutral question; per token, the question's score (normalised to sum 1) over the
    // neutral one's plus its mean; per sentence, the best token.
    Status rank_kept(Run& run) {
        const InfiniRetriOptions& o = *run.opt;
        std::vector<KeptSentence*> sents;
        for (auto& s : run.out.kept) sents.push_back(&s);
        const bool root_sum =
            o.sentence_relevance == InfiniRetriOptions::SentenceRelevance::BestTimesRootSum;
        std::vector<float> own_w2;  // BestTimesRootSum: this pass's own question-row weights
        auto asked = score_pass(run, sents, run.prompt, root_sum ? own_w2 : run.w2);
        if (!asked) return asked.error();
        auto neutral_prompt =
            build_infiniretri_prompt(model->tokenizer(), o.instruction, o.neutral_question);
        if (!neutral_prompt) return neutral_prompt.error();
        std::vector<float> neutral_w2;
        auto neutral = score_pass(run, sents, *neutral_prompt, neutral_w2);
        if (!neutral) return neutral.error();
        const std::vector<float> cal = detail::calibrated_scores(asked->score, neutral->score);
        const std::vector<float> best = sentence_best(cal, sents, asked->sent_begin);
        run.out.relevance_by = o.sentence_relevance;
        for (size_t k = 0; k < sents.size(); ++k) {
            if (!root_sum) {
                sents[k]->relevance = best[k];
                continue;
            }
            const auto b = static_cast<size_t>(asked->sent_begin[k]);
            double excess = 0.0;
            for (size_t j = b; j < b + sents[k]->ids.size(); ++j)
                excess += std::max(0.0f, cal[j] - 1.0f);
            sents[k]->relevance = static_cast<float>(best[k] * std::sqrt(excess) + 0.001 * best[k]);
        }
        return {};
    }

    // Generates an answer from `context` in a fresh window; `stream` passes options.on_text on.
    Result<GenerateResult> generate_answer(Run& run, std::span<const KeptSentence> context,
                                           bool stream) {
        const InfiniRetriOptions& o = *run.opt;
        std::vector<TokenId> tokens = run.prompt.prefix;
        for (const auto& s : context) append_ids(tokens, s.ids);
        append_ids(tokens, run.prompt.question);
        GenerateParams gp;
        gp.max_tokens = o.max_answer_tokens;
        gp.sampler = o.sampler;
        if (stream) gp.on_text = o.on_text;
        ctx.clear();
        auto gen = generate(ctx, tokens, gp);
        if (!gen) return gen.error();
        if (gen->stop_reason == StopReason::Cancelled)
            return make_error(Errc::Cancelled, "infiniretri: cancelled");
        return gen;
    }

    Result<InfiniRetriAnswer> final_answer(Run& run, std::span<const KeptSentence> context,
                                           Clock::time_point t0) {
        auto gen = generate_answer(run, context, true);
        if (!gen) return gen.error();
        InfiniRetriAnswer& out = run.out;
        out.n_context_tokens = n_tokens_of(context);
        out.text = gen->text;
        out.stop_reason = gen->stop_reason;
        out.n_answer_tokens = size_i32(gen->tokens.size());
        out.prefill_ms = gen->prefill_ms;
        out.decode_ms = gen->decode_ms;
        out.total_ms = ms_since(t0);
        return std::move(out);
    }

    // Answers from ranked kept sentences (`kept`, relevance computed): from the
    // answer_context_tokens most relevant tokens, and, with answer_alternatives, from each other
    // budget too, keeping the candidate best grounded in the top-ranked sentence.
    Result<InfiniRetriAnswer> ranked_answer(Run& run, std::span<const KeptSentence> kept,
                                            Clock::time_point t0) {
        const InfiniRetriOptions& o = *run.opt;
        const int32_t n_cache = n_tokens_of(kept);
        auto context_for = [&](int32_t budget) {
            if (budget <= 0 || n_cache <= budget)
                return std::vector<KeptSentence>(kept.begin(), kept.end());
            return best_sentences(kept, budget);
        };
        if (o.answer_alternatives.empty())
            return final_answer(run, context_for(o.answer_context_tokens), t0);

        std::vector<int32_t> budgets = {o.answer_context_tokens};
        budgets.insert(budgets.end(), o.answer_alternatives.begin(), o.answer_alternatives.end());

        InfiniRetriAnswer& out = run.out;
        out.prefill_ms = out.decode_ms = 0;
        std::vector<std::vector<KeptSentence>> contexts;
        std::vector<GenerateResult> results;
        for (int32_t budget : budgets) {
            std::vector<KeptSentence> context = context_for(budget);
            // Two budgets that pick the same sentences give the same prompt: answer it once.
            size_t same = 0;
            while (same < contexts.size() && !same_sentences(contexts[same], context)) ++same;
            if (same < contexts.size()) {
                GenerateResult copy = results[same];
                results.push_back(std::move(copy));
            } else {
                auto gen = generate_answer(run, context, false);
                if (!gen) return gen.error();
                out.prefill_ms += gen->prefill_ms;
                out.decode_ms += gen->decode_ms;
                results.push_back(std::move(gen).value());
            }
            out.candidates.push_back({budget, n_tokens_of(context), results.back().text,
                                      answer_grounding(kept, run.question, results.back().text)});
            contexts.push_back(std::move(context));
        }
        const size_t best = choose_answer(out.candidates);
        const GenerateResult& chosen = results[best];
        out.chosen = static_cast<int32_t>(best);
        out.n_context_tokens = out.candidates[best].n_context_tokens;
        out.text = chosen.text;
        out.stop_reason = chosen.stop_reason;
        out.n_answer_tokens = size_i32(chosen.tokens.size());
        if (o.on_text && !out.text.empty() && !o.on_text(out.text))
            return make_error(Errc::Cancelled, "infiniretri: cancelled");
        out.total_ms = ms_since(t0);
        return std::move(out);
    }

    // Restores the state of options.resume: reads (tokenizes) the source's sentences up to the
    // checkpoint, checks them against it, and returns the first sentence after it.
    Result<KeptSentence> resume_from(Run& run, detail::SentenceTokenReader& reader,
                                     std::string_view question, uint64_t& digest) {
        const InfiniRetriOptions& o = *run.opt;
        const InfiniRetriCheckpoint& cp = *o.resume;
        const std::string where = reader.source_name() + ": ";
        if (cp.question != question) {
            return make_error(Errc::InvalidArgument,
                              where + "the checkpoint was made for another question");
        }
        if (cp.chunk_fill < 1 || cp.n_chunks < 1 || cp.question_weights.empty()) {
            return make_error(Errc::InvalidArgument, where + "empty checkpoint");
        }
        if (cp.settings_digest != settings_digest(run)) {
            return make_error(Errc::InvalidArgument,
                              where +
                                  "the checkpoint was made with other reading options (chunk, "
                                  "top-k, filter, score memory, cache cap, instruction, layers "
                                  "or heads)");
        }
        for (;;) {
            auto s = reader.next();
            if (!s) return s.error();
            if (!*s) {
                return make_error(Errc::InvalidArgument,
                                  where + "the source ends before the checkpoint (byte " +
                                      std::to_string(cp.offset) + ")");
            }
            if ((*s)->end <= cp.offset) {
                digest_sentence(digest, **s);
                continue;
            }
            // A fresh read would have ended its chunk here too: the same sentences before, and
            // a next sentence that does not fit.
            if (digest != cp.digest || (*s)->end != cp.next_end ||
                cp.chunk_fill + size_i32((*s)->ids.size()) <= o.chunk_tokens) {
                return make_error(Errc::InvalidArgument,
                                  where +
                                      "the source differs from the checkpointed one before byte " +
                                      std::to_string(cp.next_end));
            }
            run.cache = cp.cache;
            run.reserve = cp.reserve;
            run.w2 = cp.question_weights;
            run.out.n_tokens_read = cp.n_tokens_read;
            run.out.n_tokens_resumed = cp.n_tokens_read;
            run.out.n_chunks = cp.n_chunks;
            run.out.max_prompt_tokens = cp.max_prompt_tokens;
            return std::move(**s);
        }
    }

    Result<InfiniRetriAnswer> answer(SentenceSource& source, std::string_view question,
                                     const InfiniRetriOptions& o) {
        const auto t0 = Clock::now();
        ATTNRAG_TRY(check_options(o, question));
        const Tokenizer& tok = model->tokenizer();
        Run run;
        run.opt = &o;
        run.question = std::string(question);
        auto prompt = build_infiniretri_prompt(tok, o.instruction, question);
        if (!prompt) return prompt.error();
        run.prompt = std::move(prompt).value();
        const int32_t fixed = size_i32(run.prompt.prefix.size() + run.prompt.question.size());
        const int32_t room = ctx.n_ctx() - fixed - std::max(o.chunk_tokens, o.max_answer_tokens);
        if (room < 0) {
            return make_error(Errc::OutOfRange, "infiniretri: instruction, question and a " +
                                                    std::to_string(o.chunk_tokens) +
                                                    "-token chunk do not fit the " +
                                                    std::to_string(ctx.n_ctx()) + "-token window");
        }
        run.cache_limit = std::min(o.cache_tokens, room);
        run.out.cache_limit = run.cache_limit;
        // The final ranking and a whole-cache answer read the reserve beside a full cache.
        run.reserve_limit = ctx.n_ctx() - fixed - o.max_answer_tokens - run.cache_limit;
        set_probe_heads(run, o);
        run.probe.keep_probs = true;
        run.probe.stop_after_last_layer = true;

        detail::SentenceTokenReader reader(source, tok, o.chunk_tokens);
        uint64_t digest = kDigestSeed;
        std::optional<KeptSentence> pending;  // read while checking a checkpoint, not yet chunked
        if (o.resume) {
            auto first = resume_from(run, reader, question, digest);
            if (!first) return first.error();
            pending = std::move(first).value();
        }
        std::vector<KeptSentence> chunk;
        int32_t chunk_n = 0;
        // `next`: the sentence that did not fit (nullptr at the end of the source).
        auto flush = [&](const KeptSentence* next) -> Status {
            const uint64_t consumed = chunk.back().end;  // source bytes read into chunks so far
            for (const auto& s : chunk) digest_sentence(digest, s);
            ATTNRAG_TRY(chunk_pass(run, chunk));  // moves the kept sentences out of `chunk`
            ++run.out.n_chunks;
            if (next && o.on_checkpoint) {
                o.on_checkpoint(
                    InfiniRetriCheckpoint{.question = std::string(question),
                                          .offset = consumed,
                                          .next_end = next->end,
                                          .chunk_fill = chunk_n,
                                          .digest = digest,
                                          .settings_digest = settings_digest(run),
                                          .n_tokens_read = run.out.n_tokens_read,
                                          .n_chunks = run.out.n_chunks,
                                          .max_prompt_tokens = run.out.max_prompt_tokens,
                                          .question_weights = run.w2,
                                          .cache = run.cache,
                                          .reserve = run.reserve});
            }
            chunk.clear();
            chunk_n = 0;
            if (o.on_progress) {
                const double s = std::max(1e-9, ms_since(t0) / 1000.0);
                const auto fresh = run.out.n_tokens_read - run.out.n_tokens_resumed;
                const InfiniRetriProgress pr{
                    run.out.n_tokens_read,  consumed,
                    source.size_bytes(),    run.out.n_chunks,
                    n_tokens_of(run.cache), static_cast<double>(fresh) / s};
                if (!o.on_progress(pr))
                    return make_error(Errc::Cancelled, "infiniretri: cancelled");
            }
            return {};
        };
        for (;;) {
            std::optional<KeptSentence> s;
            if (pending) {
                s = std::move(pending);
                pending.reset();
            } else {
                auto r = reader.next();
                if (!r) return r.error();
                s = std::move(r).value();
            }
            if (!s) break;
            const auto len = size_i32(s->ids.size());
            if (!chunk.empty() && chunk_n + len > o.chunk_tokens) ATTNRAG_TRY(flush(&*s));
            run.out.n_tokens_read += len;
            chunk_n += len;
            chunk.push_back(std::move(*s));
        }
        if (!chunk.empty()) ATTNRAG_TRY(flush(nullptr));
        run.out.n_sentences = reader.n_source_sentences();
        if (run.out.n_chunks == 0)
            return make_error(Errc::InvalidArgument, source.name() + ": no text to read");
        run.out.read_ms = ms_since(t0);
        run.out.kept = std::move(run.cache);
        for (auto& s : run.reserve) {
            s.reserved = true;
            run.out.kept.push_back(std::move(s));
        }
        std::stable_sort(
            run.out.kept.begin(), run.out.kept.end(),
            [](const KeptSentence& x, const KeptSentence& y) { return x.begin < y.begin; });
        run.out.n_cache_tokens = n_tokens_of(run.out.kept);
        if (o.answer_context_tokens <= 0) return final_answer(run, run.out.kept, t0);
        // Ranked even when the whole cache fits, so that answer_again() can pick a smaller
        // context and callers can show the ranking.
        ATTNRAG_TRY(rank_kept(run));
        return ranked_answer(run, run.out.kept, t0);  // reads `kept`, sets the answer fields
    }

    Result<InfiniRetriAnswer> answer_again(const InfiniRetriAnswer& read, std::string_view question,
                                           const InfiniRetriOptions& o) {
        const auto t0 = Clock::now();
        ATTNRAG_TRY(check_options(o, question));
        if (read.kept.empty())
            return make_error(Errc::InvalidArgument,
                              "infiniretri: answer_again: no kept sentences");
        Run run;
        run.opt = &o;
        auto prompt = build_infiniretri_prompt(model->tokenizer(), o.instruction, question);
        if (!prompt) return prompt.error();
        run.prompt = std::move(prompt).value();
        run.question = std::string(question);
        run.out = read;
        run.out.candidates.clear();
        run.out.chosen = 0;
        if (o.answer_context_tokens <= 0) return final_answer(run, read.kept, t0);
        const bool ranked = std::any_of(read.kept.begin(), read.kept.end(),
                                        [](const KeptSentence& s) { return s.relevance > 0; });
        if (o.sentence_relevance != InfiniRetriOptions::SentenceRelevance::BestToken ||
            (ranked && read.relevance_by != o.sentence_relevance)) {
            // Ranked again, with this ranking and the layers/heads of `o`; the reading's
            // first-chunk weights are not saved (BestTimesRootSum does not use them; BestToken
            // then takes the ranking pass's own).
            set_probe_heads(run, o);
            run.probe.keep_probs = true;
            run.probe.stop_after_last_layer = true;
            ATTNRAG_TRY(rank_kept(run));
            return ranked_answer(run, run.out.kept, t0);
        }
        if (!ranked) {
            if (read.n_cache_tokens <= o.answer_context_tokens && o.answer_alternatives.empty())
                return final_answer(run, read.kept, t0);
            return make_error(
                Errc::InvalidArgument,
                "infiniretri: answer_again: the kept sentences were not ranked (read "
                "with answer_context_tokens = 0); read with answer_context_tokens > 0");
        }
        return ranked_answer(run, read.kept, t0);
    }

    Result<InfiniRetriAnswer> answer_full(SentenceSource& source, std::string_view question,
                                          const InfiniRetriOptions& o) {
        const auto t0 = Clock::now();
        ATTNRAG_TRY(check_options(o, question));
        const Tokenizer& tok = model->tokenizer();
        Run run;
        run.opt = &o;
        auto prompt = build_infiniretri_prompt(tok, o.instruction, question);
        if (!prompt) return prompt.error();
        run.prompt = std::move(prompt).value();
        const int64_t budget =
            int64_t{ctx.n_ctx()} - o.max_answer_tokens -
            static_cast<int64_t>(run.prompt.prefix.size() + run.prompt.question.size());
        detail::SentenceTokenReader reader(source, tok, std::max(1, ctx.n_ctx()));
        std::vector<KeptSentence> doc;
        for (;;) {
            auto s = reader.next();
            if (!s) return s.error();
            if (!*s) break;
            if (run.out.n_tokens_read + static_cast<int64_t>((*s)->ids.size()) > budget &&
                o.truncate_full) {
                run.out.truncated = true;  // keep the beginning that fits; stop reading
                break;
            }
            run.out.n_tokens_read += static_cast<int64_t>((*s)->ids.size());
            if (run.out.n_tokens_read > budget) {
                return make_error(Errc::OutOfRange,
                                  source.name() + ": the document does not fit the " +
                                      std::to_string(ctx.n_ctx()) +
                                      "-token window with the prompt and " +
                                      std::to_string(o.max_answer_tokens) + " answer tokens");
            }
            doc.push_back(std::move(**s));
        }
        run.out.n_sentences = reader.n_source_sentences();
        if (doc.empty() && run.out.truncated) {
            return make_error(Errc::OutOfRange, source.name() +
                                                    ": the first sentence alone does not fit the " +
                                                    std::to_string(ctx.n_ctx()) + "-token window");
        }
        if (doc.empty())
            return make_error(Errc::InvalidArgument, source.name() + ": no text to read");
        run.out.read_ms = ms_since(t0);
        run.out.n_chunks = 1;
        run.out.max_prompt_tokens =
            size_i32(run.prompt.prefix.size() + run.prompt.question.size()) +
            static_cast<int32_t>(run.out.n_tokens_read);
        return final_answer(run, doc, t0);
    }
};

InfiniRetri::InfiniRetri(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
InfiniRetri::InfiniRetri(InfiniRetri&&) noexcept = default;
InfiniRetri& InfiniRetri::operator=(InfiniRetri&&) noexcept = default;
InfiniRetri::~InfiniRetri() = default;

Result<InfiniRetri> InfiniRetri::create(const Model& model, int32_t n_threads, int32_t n_ctx,
                                        Backend backend) {
    auto ctx = Context::create(model, {.n_ctx = n_ctx, .n_threads = n_threads, .backend = backend});
    if (!ctx) return ctx.error();
    return InfiniRetri(std::make_unique<Impl>(model, std::move(ctx).value()));
}

Result<InfiniRetriAnswer> InfiniRetri::answer(SentenceSource& source, std::string_view question,
                                              const InfiniRetriOptions& options) {
    return impl_->answer(source, question, options);
}

Result<InfiniRetriAnswer> InfiniRetri::answer_again(const InfiniRetriAnswer& read,
                                                    std::string_view question,
                                                    const InfiniRetriOptions& options) {
    return impl_->answer_again(read, question, options);
}

Result<InfiniRetriAnswer> InfiniRetri::answer_full(SentenceSource& source,
                                                   std::string_view question,
                                                   const InfiniRetriOptions& options) {
    return impl_->answer_full(source, question, options);
}

Context& InfiniRetri::context() {
    return impl_->ctx;
}

}  // namespace attnrag::pipelines
