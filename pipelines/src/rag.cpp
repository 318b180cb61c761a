// RAG QA: fit passages to the window, assemble (full or spliced), sort by attention, generate,
// cite by the answer's attention mass.
#include "attnrag/pipelines/rag.hpp"

#include <algorithm>
#include <chrono>
#include <map>
#include <numeric>

#include "attnrag/pipelines/prompts.hpp"

namespace attnrag::pipelines {

namespace {

// Mass per span averaged over the probed layers, heads and rows.
std::vector<float> mean_over_rows(const ProbeResult& att) {
    std::vector<float> out(static_cast<size_t>(att.n_spans), 0.0f);
    for (int32_t r = 0; r < att.n_rows; ++r) {
        const std::vector<float> m = att.mean_span_mass(r);
        for (size_t i = 0; i < out.size(); ++i) out[i] += m[i];
    }
    for (float& v : out) v /= static_cast<float>(std::max(1, att.n_rows));
    return out;
}

// User text, never parsed for special tokens (a document that contains "<|im_end|>" must not
// end the turn).
Status append(const Tokenizer& tok, std::vector<TokenId>& out, std::string_view text) {
    if (text.empty()) return {};
    auto ids = tok.encode(text, false);
    if (!ids) return ids.error();
    out.insert(out.end(), ids->begin(), ids->end());
    return {};
}

}  // namespace

std::vector<int32_t> upper_two_thirds(int32_t n_layer) {
    std::vector<int32_t> layers;
    for (int32_t l = n_layer / 3; l < n_layer; ++l) layers.push_back(l);
    return layers;
}

std::string passage_block_text(const RagPassage& p) {
    std::string s = "Document";
    if (!p.title.empty()) s += " (" + p.title + ")";
    s += ": ";
    s += p.text;
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    s += "\n\n";
    return s;
}

Result<RagPrompt> build_rag_prompt(const Tokenizer& tok, std::string_view instruction,
                                   std::span<const RagPassage> passages,
                                   std::string_view question) {
    auto chat = ChatFormat::detect(tok);
    if (!chat) return chat.error();
    RagPrompt p;
    auto prefix = chat->open_user_turn(instruction);  // the instruction is the system message
    if (!prefix) return prefix.error();
    p.prefix = std::move(prefix).value();
    for (const RagPassage& ps : passages) {
        std::vector<TokenId> ids;
        ATTNRAG_TRY(append(tok, ids, passage_block_text(ps)));
        if (ids.empty())
            return make_error(Errc::InvalidArgument, "passage '" + ps.id + "' is empty");
        p.passages.push_back(std::move(ids));
    }
    ATTNRAG_TRY(append(tok, p.question, "Question: "));
    ATTNRAG_TRY(append(tok, p.question, question));
    const auto& close = chat->close_user_turn();
    p.question.insert(p.question.end(), close.begin(), close.end());
    return p;
}

struct RagSession::Impl {
    const Model* model = nullptr;
    PassageKvStore* store = nullptr;
    int32_t n_threads = 0;
    Context ctx;
    std::map<std::string, PassageKvCache> caches;  // per instruction (= prefix)

    Impl(const Model& m, Context c) : model(&m), ctx(std::move(c)) {}

    Result<PassageKvCache*> cache_for(std::string_view instruction,
                                      std::span<const TokenId> prefix) {
        auto it = caches.find(std::string(instruction));
        if (it == caches.end()) {
            auto c = PassageKvCache::create(*model, prefix, store, n_threads);
            if (!c) return c.error();
            it = caches.emplace(std::string(instruction), std::move(c).value()).first;
        }
        return &it->second;
    }
};

RagSession::RagSession(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RagSession::RagSession(RagSession&&) noexcept = default;
RagSession& RagSession::operator=(RagSession&&) noexcept = default;
RagSession::~RagSession() = default;

Result<RagSession> RagSession::create(const Model& model, PassageKvStore* store, int32_t n_threads,
                                      int32_t n_ctx) {
    auto ctx = Context::create(model, {.n_ctx = n_ctx, .n_threads = n_threads});
    if (!ctx) return ctx.error();
    auto impl = std::make_unique<Impl>(model, std::move(ctx).value());
    impl->store = store;
    impl->n_threads = n_threads;
    return RagSession(std::move(impl));
}

Context& RagSession::context() {
    return impl_->ctx;
}

Result<int32_t> RagSession::precompute(std::span<const RagPassage> passages,
                                       std::string_view instruction) {
    auto prompt = build_rag_prompt(impl_->model->tokenizer(), instruction, passages, "");
    if (!prompt) return prompt.error();
    auto cache = impl_->cache_for(instruction, prompt->prefix);
    if (!cache) return cache.error();
    if (auto pre = (*cache)->prefix_state(); !pre) return pre.error();
    int32_t reused = 0;
    for (const auto& p : prompt->passages) {
        auto have = (*cache)->stored(p);
        if (!have) return have.error();
        if (*have) {
            ++reused;
            continue;
        }
        if (auto kv = (*cache)->passage_state(p); !kv) return kv.error();
    }
    return reused;
}

Result<RagAnswer> RagSession::answer(std::string_view question,
                                     std::span<const RagPassage> passages,
                                     const RagOptions& options) {
    using clock = std::chrono::steady_clock;
    Impl& s = *impl_;
    if (question.empty()) return make_error(Errc::InvalidArgument, "ask: empty question");
    if (options.max_answer_tokens < 1)
        return make_error(Errc::InvalidArgument, "ask: max_answer_tokens must be >= 1");
    auto prompt = build_rag_prompt(s.model->tokenizer(), options.instruction, passages, question);
    if (!prompt) return prompt.error();

    RagAnswer out;
    // Fit the window: drop the lowest-ranked passages (the end of the list) first.
    const int64_t budget = int64_t{s.ctx.n_ctx()} - options.max_answer_tokens;
    int64_t total = static_cast<int64_t>(prompt->prefix.size() + prompt->question.size());
    if (total > budget) {
        return make_error(Errc::OutOfRange,
                          "ask: the question alone (" + std::to_string(total) +
                              " tokens with the instruction) leaves no room in the " +
                              std::to_string(s.ctx.n_ctx()) + "-token window");
    }
    for (size_t i = 0; i < prompt->passages.size(); ++i) {
        const auto n = static_cast<int64_t>(prompt->passages[i].size());
        if (total + n <= budget && out.dropped.empty()) {
            total += n;
            out.order.push_back(i);
        } else {
            out.dropped.push_back(i);
        }
    }

    PassageKvCache* cache = nullptr;
    if (options.assembly.mode != Assembly::Full) {
        auto c = s.cache_for(options.instruction, prompt->prefix);
        if (!c) return c.error();
        cache = *c;
    }
    auto ordered = [&] {
        std::vector<std::vector<TokenId>> ps;
        for (size_t i : out.order) ps.push_back(prompt->passages[i]);
        return ps;
    };

    // The assembly settings the sorting passes probe with.
    const SortSignal& signal = options.sort;
    AssemblyOptions probed = options.assembly;
    probed.probe_question_rows = signal.question_rows;
    probed.probe_heads = signal.heads;
    probed.probe_layers = signal.layers;
    if (signal.all_layers)
        probed.probe_layers.clear();  // empty = every layer
    else if (signal.layers.empty())
        probed.probe_layers = upper_two_thirds(s.model->hparams().n_layer);
    std::vector<TokenId> neutral_question;
    if (options.sort_passes > 0 && signal.calibrated) {
        auto np = build_rag_prompt(s.model->tokenizer(), options.instruction, {},
                                   signal.neutral_question);
        if (!np) return np.error();
        neutral_question = std::move(np->question);
    }
    const auto t0 = clock::now();
    bool assembled = false;
    for (int32_t pass = 0; pass < options.sort_passes && out.order.size() > 1; ++pass) {
        ProbeResult att;
        auto r = assemble(s.ctx, prompt->prefix, ordered(), prompt->question, probed, cache, &att);
        if (!r) return r.error();
        out.assembled = *r;
        std::vector<float> mass = mean_over_rows(att);
        const KeySpan q = out.assembled.question;
        if (signal.calibrated) {
            // The same passages, the neutral question in place of the question block.
            ProbeRequest req;
            req.layers = att.layers;
            req.heads = att.heads;
            req.spans = out.assembled.passages;
            const auto nq = static_cast<int32_t>(neutral_question.size());
            for (int32_t row = signal.question_rows ? 0 : nq - 1; row < nq; ++row)
                req.rows.push_back(row);
            ProbeResult base;
            s.ctx.truncate(q.begin);
            ATTNRAG_TRY(s.ctx.eval(
                neutral_question, {.logits = LogitsMode::None, .probe = &req, .probe_out = &base}));
            const std::vector<float> b = mean_over_rows(base);
            for (size_t i = 0; i < mass.size(); ++i) mass[i] = mass[i] / std::max(b[i], 1e-9f);
        }
        std::vector<size_t> idx(out.order.size());
        std::iota(idx.begin(), idx.end(), size_t{0});
        std::stable_sort(idx.begin(), idx.end(),
                         [&](size_t a, size_t b) { return mass[a] < mass[b]; });
        std::vector<size_t> next;
        for (size_t k : idx) next.push_back(out.order[k]);
        assembled = next == out.order;  // unchanged: the context already holds this prompt ...
        if (assembled && signal.calibrated) {
            // ... up to the question block, which the neutral one replaced: put it back.
            s.ctx.truncate(q.begin);
            ATTNRAG_TRY(s.ctx.eval(prompt->question, {.logits = LogitsMode::Last}));
        }
        out.order = std::move(next);
    }
    if (!assembled) {
        auto r =
            assemble(s.ctx, prompt->prefix, ordered(), prompt->question, options.assembly, cache);
        if (!r) return r.error();
        out.assembled = *r;
    }
    out.ttft_ms = std::chrono::duration<double, std::milli>(clock::now() - t0).count();

    GenerateParams gp;
    gp.max_tokens = options.max_answer_tokens;
    gp.sampler = options.sampler;
    gp.on_text = options.on_text;
    auto gen = generate_from_context(s.ctx, gp);
    if (!gen) return gen.error();
    out.text = gen->text;
    out.stop_reason = gen->stop_reason;
    out.decode_ms = gen->decode_ms;
    out.n_answer_tokens = static_cast<int32_t>(gen->tokens.size());

    // Citations: re-read the answer tokens after the prompt, probing their attention over the
    // passage spans (mean over the chosen layers, heads and answer rows).
    std::vector<TokenId> answer_tokens = gen->tokens;
    const Tokenizer& tok = s.model->tokenizer();
    while (!answer_tokens.empty() && tok.is_end_of_generation(answer_tokens.back()))
        answer_tokens.pop_back();
    if (options.citations && !answer_tokens.empty() && !out.order.empty()) {
        ProbeRequest req;
        req.layers = options.citation_layers.empty() ? upper_two_thirds(s.model->hparams().n_layer)
                                                     : options.citation_layers;
        req.rows.resize(answer_tokens.size());
        std::iota(req.rows.begin(), req.rows.end(), 0);
        req.spans = out.assembled.passages;
        const bool peak = options.citation_score == RagOptions::CitationScore::Peak;
        req.keep_probs = peak;
        // Support per passage, averaged over the probed layers, heads and rows of `tokens`
        // evaluated right after the prompt.
        auto support = [&](std::span<const TokenId> tokens) -> Result<std::vector<double>> {
            s.ctx.truncate(out.assembled.question.end);
            req.rows.resize(tokens.size());
            std::iota(req.rows.begin(), req.rows.end(), 0);
            ProbeResult att;
            ATTNRAG_TRY(
                s.ctx.eval(tokens, {.logits = LogitsMode::None, .probe = &req, .probe_out = &att}));
            std::vector<double> m(out.order.size(), 0.0);
            for (int32_t li = 0; li < att.n_layers; ++li) {
                for (int32_t hi = 0; hi < att.n_heads; ++hi) {
                    for (int32_t r = 0; r < att.n_rows; ++r) {
                        for (size_t i = 0; i < m.size(); ++i) {
                            if (!peak) {
                                m[i] += att.span_mass(li, hi, r, static_cast<int32_t>(i));
                                continue;
                            }
                            const std::vector<float>& p = att.probs[att.index(li, hi, r)];
                            const KeySpan sp = out.assembled.passages[i];
                            m[i] += *std::max_element(p.begin() + sp.begin, p.begin() + sp.end);
                        }
                    }
                }
            }
            for (double& v : m) v /= static_cast<double>(att.n_layers * att.n_heads * att.n_rows);
            return m;
        };
        auto answer_support = support(answer_tokens);
        if (!answer_support) return answer_support.error();
        std::vector<double> mass = std::move(answer_support).value();
        if (options.citation_baseline) {
            // Calibration: each passage's support is divided by what a content-free
            // continuation gives it (position priors: the first and the last passages draw
            // attention whatever they say), leaving how much more the answer looked at it.
            std::vector<TokenId> neutral;
            if (auto st = append(tok, neutral, "The answer is"); !st) return st.error();
            auto base = support(neutral);
            if (!base) return base.error();
            for (size_t i = 0; i < mass.size(); ++i) mass[i] = mass[i] / std::max((*base)[i], 1e-9);
        }
        const double sum = std::accumulate(mass.begin(), mass.end(), 0.0);
        for (size_t k = 0; k < out.order.size(); ++k) {
            const RagPassage& p = passages[out.order[k]];
            out.citations.push_back({out.order[k], p.id, p.document_id, p.chunk_id, p.source,
                                     p.source_begin, p.source_end,
                                     sum > 0 ? static_cast<float>(mass[k] / sum) : 0.0f});
        }
        std::stable_sort(out.citations.begin(), out.citations.end(),
                         [](const Citation& a, const Citation& b) { return a.share > b.share; });
    }
    return out;
}

}  // namespace attnrag::pipelines
