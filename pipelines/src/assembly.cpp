// Context assembly: full prefill, or cached passage states spliced after a shared prefix.
#include "attnrag/pipelines/assembly.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

namespace attnrag::pipelines {

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

std::string_view to_string(Assembly a) {
    switch (a) {
        case Assembly::Full: return "full";
        case Assembly::Blocks: return "blocks";
        case Assembly::BlocksApe: return "blocks-ape";
        case Assembly::BlocksRecompute: return "blocks-recompute";
    }
    return "?";
}

Result<Assembly> parse_assembly(std::string_view name) {
    for (Assembly a : {Assembly::Full, Assembly::Blocks, Assembly::BlocksApe, Assembly::BlocksRecompute}) {
        if (name == to_string(a)) return a;
    }
    return make_error(Errc::InvalidArgument, "unknown assembly '" + std::string(name) +
                                                 "' (expected full, blocks, blocks-ape or blocks-recompute)");
}

struct PassageKvCache::Impl {
    const Model* model = nullptr;
    std::vector<TokenId> prefix;
    uint64_t prefix_hash = 0;
    PassageKvStore* store = nullptr;
    Context scratch;  // holds the prefix; passages are encoded after it and cut off again
    bool prefix_in_scratch = false;
    std::shared_ptr<const PassageKv> prefix_kv;

    Impl(const Model& m, Context ctx) : model(&m), scratch(std::move(ctx)) {}

    Status ensure_prefix() {
        if (prefix_in_scratch) return {};
        scratch.clear();
        if (!prefix.empty()) ATTNRAG_TRY(scratch.eval(prefix, {.logits = LogitsMode::None}));
        prefix_in_scratch = true;
        return {};
    }
};

PassageKvCache::PassageKvCache(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PassageKvCache::PassageKvCache(PassageKvCache&&) noexcept = default;
PassageKvCache& PassageKvCache::operator=(PassageKvCache&&) noexcept = default;
PassageKvCache::~PassageKvCache() = default;

Result<PassageKvCache> PassageKvCache::create(const Model& model, std::span<const TokenId> prefix,
                                              PassageKvStore* store, int32_t n_threads) {
    auto ctx = Context::create(model, {.n_ctx = 0, .n_threads = n_threads});
    if (!ctx) return ctx.error();
    auto impl = std::make_unique<Impl>(model, std::move(ctx).value());
    impl->prefix.assign(prefix.begin(), prefix.end());
    impl->prefix_hash = hash_tokens(prefix);
    impl->store = store;
    return PassageKvCache(std::move(impl));
}

std::span<const TokenId> PassageKvCache::prefix() const { return impl_->prefix; }
uint64_t PassageKvCache::prefix_hash() const { return impl_->prefix_hash; }

PassageKvKey PassageKvCache::key_of(std::span<const TokenId> passage) const {
    return {impl_->model->fingerprint(), impl_->prefix_hash, hash_tokens(passage)};
}

Result<bool> PassageKvCache::stored(std::span<const TokenId> passage) {
    if (!impl_->store) return false;
    return impl_->store->contains(key_of(passage));
}

Result<std::shared_ptr<const PassageKv>> PassageKvCache::prefix_state() {
    Impl& s = *impl_;
    if (s.prefix_kv) return s.prefix_kv;
    if (s.prefix.empty()) return make_error(Errc::InvalidArgument, "PassageKvCache: the prefix is empty");
    // The prefix is stored as a passage encoded after nothing.
    const PassageKvKey key{s.model->fingerprint(), hash_tokens({}), s.prefix_hash};
    if (s.store) {
        auto got = s.store->get(key);
        if (!got) return got.error();
        if (*got && (*got)->tokens == s.prefix && (*got)->encoded_position == 0) {
            s.prefix_kv = *got;
            return s.prefix_kv;
        }
    }
    ATTNRAG_TRY(s.ensure_prefix());
    auto kv = s.scratch.extract(0, static_cast<int32_t>(s.prefix.size()));
    if (!kv) return kv.error();
    s.prefix_kv = std::make_shared<const PassageKv>(std::move(kv).value());
    if (s.store) ATTNRAG_TRY(s.store->put(key, s.prefix_kv));
    return s.prefix_kv;
}

Result<std::shared_ptr<const PassageKv>> PassageKvCache::passage_state(std::span<const TokenId> passage,
                                                                       bool* reused) {
    Impl& s = *impl_;
    if (reused) *reused = false;
    if (passage.empty()) return make_error(Errc::InvalidArgument, "PassageKvCache: empty passage");
    const PassageKvKey key = key_of(passage);
    const auto P = static_cast<int32_t>(s.prefix.size());
    if (s.store) {
        auto got = s.store->get(key);
        if (!got) return got.error();
        // The hash names the passage; the stored tokens must confirm it.
        if (*got && std::equal((*got)->tokens.begin(), (*got)->tokens.end(), passage.begin(), passage.end()) &&
            (*got)->encoded_position == P) {
            if (reused) *reused = true;
            return *got;
        }
    }
    ATTNRAG_TRY(s.ensure_prefix());
    s.scratch.truncate(P);
    if (auto st = s.scratch.eval(passage, {.logits = LogitsMode::None}); !st) return st.error();
    auto kv = s.scratch.extract(P, P + static_cast<int32_t>(passage.size()));
    s.scratch.truncate(P);
    if (!kv) return kv.error();
    auto shared = std::make_shared<const PassageKv>(std::move(kv).value());
    if (s.store) ATTNRAG_TRY(s.store->put(key, shared));
    return shared;
}

Result<AssembledPrompt> assemble(Context& ctx, std::span<const TokenId> prefix,
                                 std::span<const std::vector<TokenId>> passages, std::span<const TokenId> question,
                                 const AssemblyOptions& options, PassageKvCache* cache,
                                 ProbeResult* passage_attention) {
    using clock = std::chrono::steady_clock;
    if (question.empty()) return make_error(Errc::InvalidArgument, "assemble: empty question block");
    int64_t total = static_cast<int64_t>(prefix.size() + question.size());
    for (const auto& p : passages) total += static_cast<int64_t>(p.size());
    if (total > ctx.n_ctx()) {
        return make_error(Errc::OutOfRange, "assemble: the prompt has " + std::to_string(total) +
                                                " tokens; the context holds " + std::to_string(ctx.n_ctx()));
    }
    const bool blocks = options.mode != Assembly::Full;
    if (blocks && (!cache || !std::equal(prefix.begin(), prefix.end(), cache->prefix().begin(), cache->prefix().end()))) {
        return make_error(Errc::InvalidArgument, "assemble: block modes need a passage cache built for this prefix");
    }

    AssembledPrompt out;
    const auto P = static_cast<int32_t>(prefix.size());
    out.prefix = {0, P};
    int32_t at = P;
    for (const auto& p : passages) {
        out.passages.push_back({at, at + static_cast<int32_t>(p.size())});
        at += static_cast<int32_t>(p.size());
    }
    out.question = {at, at + static_cast<int32_t>(question.size())};

    ctx.clear();
    ATTNRAG_TRY(ctx.set_default_ape({}));
    // The probed rows of an eval call whose question block starts at row `first`.
    auto question_rows = [&](int32_t first) {
        const auto n = static_cast<int32_t>(question.size());
        std::vector<int32_t> rows;
        for (int32_t r = options.probe_question_rows ? 0 : n - 1; r < n; ++r) rows.push_back(first + r);
        return rows;
    };
    ProbeRequest probe;
    if (passage_attention) {
        probe.layers = options.probe_layers;
        if (probe.layers.empty()) {
            probe.layers.resize(static_cast<size_t>(ctx.model().hparams().n_layer));
            std::iota(probe.layers.begin(), probe.layers.end(), 0);
        }
        probe.heads = options.probe_heads;
        probe.spans = out.passages;
    }

    if (!blocks) {
        std::vector<TokenId> all(prefix.begin(), prefix.end());
        for (const auto& p : passages) all.insert(all.end(), p.begin(), p.end());
        all.insert(all.end(), question.begin(), question.end());
        if (passage_attention) probe.rows = question_rows(static_cast<int32_t>(all.size() - question.size()));
        const auto t0 = clock::now();
        ATTNRAG_TRY(ctx.eval(all, {.logits = LogitsMode::Last,
                                   .probe = passage_attention ? &probe : nullptr,
                                   .probe_out = passage_attention}));
        out.question_ms = ms_since(t0);
        out.n_passages_encoded = static_cast<int32_t>(passages.size());
        return out;
    }

    auto t0 = clock::now();
    if (P > 0) {
        auto pre = cache->prefix_state();
        if (!pre) return pre.error();
        ATTNRAG_TRY(ctx.splice(*pre, 0, {0, BlockKind::Shared}));  // shared, not copied
    }
    for (size_t i = 0; i < passages.size(); ++i) {
        const auto t_enc = clock::now();
        bool reused = false;
        auto kv = cache->passage_state(passages[i], &reused);
        if (!kv) return kv.error();
        if (reused) {
            ++out.n_passages_reused;
        } else {
            ++out.n_passages_encoded;
            out.encode_ms += ms_since(t_enc);
        }
        ATTNRAG_TRY(ctx.splice(*kv, out.passages[i].begin, {static_cast<int32_t>(i) + 1, BlockKind::Local}));
    }
    out.splice_ms = ms_since(t0) - out.encode_ms;

    if (options.mode == Assembly::BlocksRecompute) {
        t0 = clock::now();
        std::vector<int32_t> slots;
        if (options.recompute_ratio > 0.0f) {
            std::vector<int32_t> all_slots;
            for (const KeySpan& sp : out.passages) {
                for (int32_t j = sp.begin; j < sp.end; ++j) all_slots.push_back(j);
            }
            std::vector<float> drift;
            const int32_t check = std::clamp(options.drift_layer, 0, ctx.model().hparams().n_layer - 1);
            ATTNRAG_TRY(ctx.recompute(all_slots, {.n_layers = check + 1, .value_drift = &drift}));
            const auto keep = std::min(all_slots.size(), static_cast<size_t>(std::ceil(
                                                             options.recompute_ratio * static_cast<float>(all_slots.size()))));
            std::vector<size_t> order(all_slots.size());
            std::iota(order.begin(), order.end(), size_t{0});
            std::partial_sort(order.begin(), order.begin() + static_cast<ptrdiff_t>(keep), order.end(),
                              [&](size_t a, size_t b) { return drift[a] > drift[b]; });
            for (size_t i = 0; i < keep; ++i) slots.push_back(all_slots[order[i]]);
            std::sort(slots.begin(), slots.end());
        } else {
            for (const KeySpan& sp : out.passages) {
                for (int32_t j = sp.begin; j < std::min(sp.end, sp.begin + options.recompute_first); ++j) slots.push_back(j);
            }
        }
        ATTNRAG_TRY(ctx.recompute(slots));
        out.n_recomputed = static_cast<int32_t>(slots.size());
        out.recompute_ms = ms_since(t0);
    }
    if (options.mode == Assembly::BlocksApe) ATTNRAG_TRY(ctx.set_default_ape(options.ape));

    if (passage_attention) probe.rows = question_rows(0);
    t0 = clock::now();
    ATTNRAG_TRY(ctx.eval(question, {.logits = LogitsMode::Last,
                                    .probe = passage_attention ? &probe : nullptr,
                                    .probe_out = passage_attention}));
    out.question_ms = ms_since(t0);
    return out;
}

}  // namespace attnrag::pipelines
