// Attention runtime on tiny random models against the naive double-precision reference: probes,
// block masks, position ids, APE merging, KV splicing and recompute.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>

#include "attnrag/context.hpp"
#include "attnrag/kernels/cpu.hpp"
#include "attnrag/model.hpp"
#include "test_support.hpp"
#include "tiny_loaded.hpp"
#include "tiny_model.hpp"

using namespace attnrag;

namespace {

using Tiny = test::LoadedTiny;

using test::load_tiny;

test::TinyModelSpec spec_llama() {
    test::TinyModelSpec spec;
    spec.n_layer = 3;
    spec.seed = 7;
    return spec;
}

using test::some_tokens;

std::vector<int32_t> iota_positions(size_t n, int32_t from = 0) {
    std::vector<int32_t> p(n);
    std::iota(p.begin(), p.end(), from);
    return p;
}

double max_abs_diff(std::span<const float> a, const std::vector<double>& b) {
    double m = 0;
    for (size_t i = 0; i < b.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
    return m;
}

double max_abs_diff(std::span<const float> a, std::span<const float> b) {
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
    return m;
}

// Prefix (Shared, block 0) + passages (Local, blocks 1..n) + question (Global): the
// Block-Attention layout, with its tags and the reference visibility rule.
struct Layout {
    std::vector<int32_t> tokens;
    std::vector<BlockTag> tags;
    std::vector<int32_t> positions;
};

Layout block_layout(int n_vocab, const std::vector<size_t>& lengths) {
    Layout L;
    int32_t block = 0;
    uint32_t seed = 11;
    for (size_t b = 0; b < lengths.size(); ++b) {
        auto toks = some_tokens(lengths[b], n_vocab, seed++);
        BlockKind kind = b == 0 ? BlockKind::Shared : (b + 1 == lengths.size() ? BlockKind::Global : BlockKind::Local);
        for (int32_t t : toks) {
            L.tokens.push_back(t);
            L.tags.push_back({block, kind});
        }
        ++block;
    }
    L.positions = iota_positions(L.tokens.size());
    return L;
}

std::function<bool(size_t, size_t)> visibility_of(const std::vector<BlockTag>& tags) {
    return [tags](size_t q, size_t k) { return block_visible(tags[q], tags[k]); };
}

}  // namespace

TEST_CASE("probe equals the softmax of a naively computed attention row", "[attention][probe]") {
    Tiny T = load_tiny(spec_llama());
    auto tokens = some_tokens(37, T.weights.n_vocab, 3);
    auto pos = iota_positions(tokens.size());
    std::vector<std::vector<std::vector<std::vector<double>>>> ref_probs;
    test::ReferenceOptions ro;
    ro.probs = &ref_probs;
    auto ref = test::reference_forward(T.spec, T.weights, tokens, pos, ro);

    auto ctx = Context::create(T.model, {.n_ctx = 64, .n_threads = 2, .n_batch = 16});
    REQUIRE(ctx.ok());
    ProbeRequest req;
    req.layers = {0, 2};
    req.rows = {0, 5, 16, 36};  // rows in the first, second and third micro-batch
    req.spans = {{0, 10}, {10, 30}, {30, 37}, {35, 100}};
    req.keep_probs = true;
    req.keep_logits = true;
    ProbeResult res;
    EvalOptions opt;
    opt.probe = &req;
    opt.probe_out = &res;
    REQUIRE(ctx->eval(tokens, opt).ok());
    REQUIRE(res.n_layers == 2);
    REQUIRE(res.n_heads == T.spec.n_head);
    REQUIRE(res.n_rows == 4);
    for (int32_t li = 0; li < res.n_layers; ++li) {
        for (int32_t hi = 0; hi < res.n_heads; ++hi) {
            for (int32_t ri = 0; ri < res.n_rows; ++ri) {
                const auto row = static_cast<size_t>(res.rows[static_cast<size_t>(ri)]);
                const auto& want = ref_probs[static_cast<size_t>(res.layers[static_cast<size_t>(li)])]
                                            [static_cast<size_t>(hi)][row];
                const auto& got = res.probs[res.index(li, hi, ri)];
                INFO("layer " << res.layers[static_cast<size_t>(li)] << " head " << hi << " row " << row);
                REQUIRE(got.size() == row + 1);
                CHECK(max_abs_diff(got, want) < 1e-5);
                double total = 0;
                for (float p : got) total += p;
                CHECK(total == Approx(1.0).margin(1e-5));
                for (int32_t s = 0; s < res.n_spans; ++s) {
                    const KeySpan sp = req.spans[static_cast<size_t>(s)];
                    double m = 0;
                    for (size_t j = static_cast<size_t>(sp.begin); j < std::min<size_t>(static_cast<size_t>(sp.end), row + 1); ++j) {
                        m += want[j];
                    }
                    CHECK(res.span_mass(li, hi, ri, s) == Approx(m).margin(1e-5));
                }
                // logits: exp(logit - lse) recovers the probabilities
                const auto& lg = res.logits[res.index(li, hi, ri)];
                double mx = *std::max_element(lg.begin(), lg.end()), sum = 0;
                for (float l : lg) sum += std::exp(l - mx);
                CHECK(std::exp(lg[0] - mx) / sum == Approx(want[0]).margin(1e-5));
            }
        }
    }
    // Mean over layers and heads.
    auto mean = res.mean_span_mass(3);
    double want0 = 0;
    for (int32_t li = 0; li < 2; ++li) {
        for (int32_t hi = 0; hi < res.n_heads; ++hi) want0 += res.span_mass(li, hi, 3, 0);
    }
    CHECK(mean[0] == Approx(want0 / (2.0 * res.n_heads)).margin(1e-6));
    // The probe does not change what the model computes.
    CHECK(max_abs_diff(ctx->logits(0), ref.back()) < 1e-4);
}

TEST_CASE("early exit after the probed layer gives the same probe and keeps the cache", "[attention][probe]") {
    Tiny T = load_tiny(spec_llama());
    auto tokens = some_tokens(20, T.weights.n_vocab, 5);
    auto ctx = Context::create(T.model, {.n_ctx = 64, .n_threads = 2});
    REQUIRE(ctx.ok());
    REQUIRE(ctx->eval(std::span(tokens).first(8)).ok());
    ProbeRequest req;
    req.layers = {1};
    req.heads = {2, 0};
    req.rows = {11};
    req.spans = {{0, 8}, {8, 20}};
    ProbeResult full, early;
    EvalOptions opt;
    opt.probe = &req;
    opt.probe_out = &full;
    auto rest = std::span(tokens).subspan(8);
    REQUIRE(ctx->eval(rest, opt).ok());
    CHECK(ctx->n_past() == 20);
    ctx->truncate(8);
    req.stop_after_last_layer = true;
    opt.probe_out = &early;
    REQUIRE(ctx->eval(rest, opt).ok());
    CHECK(ctx->n_past() == 8);  // the call's tokens are not kept
    CHECK(ctx->next_position() == 8);
    CHECK(ctx->n_logit_rows() == 0);
    REQUIRE(early.mass.size() == full.mass.size());
    for (size_t i = 0; i < full.mass.size(); ++i) CHECK(early.mass[i] == Approx(full.mass[i]).margin(1e-6));
    CHECK(early.heads == std::vector<int32_t>{2, 0});
}

TEST_CASE("probe requests are validated", "[attention][probe]") {
    Tiny T = load_tiny(spec_llama());
    auto tokens = some_tokens(6, T.weights.n_vocab, 5);
    auto ctx = Context::create(T.model, {.n_ctx = 16, .n_threads = 1});
    REQUIRE(ctx.ok());
    ProbeResult res;
    EvalOptions opt;
    opt.probe_out = &res;
    ProbeRequest bad_layer;
    bad_layer.layers = {3};
    opt.probe = &bad_layer;
    CHECK(ctx->eval(tokens, opt).error().code == Errc::InvalidArgument);
    ProbeRequest bad_row;
    bad_row.layers = {0};
    bad_row.rows = {6};
    opt.probe = &bad_row;
    CHECK(ctx->eval(tokens, opt).error().code == Errc::InvalidArgument);
    ProbeRequest bad_head;
    bad_head.layers = {0};
    bad_head.heads = {4};
    opt.probe = &bad_head;
    CHECK(ctx->eval(tokens, opt).error().code == Errc::InvalidArgument);
    CHECK(ctx->n_past() == 0);
}

TEST_CASE("block-masked attention equals the naive masked reference", "[attention][mask]") {
    for (const char* arch : {"llama", "qwen2"}) {
        test::TinyModelSpec spec = spec_llama();
        spec.arch = arch;
        Tiny T = load_tiny(spec);
        Layout L = block_layout(T.weights.n_vocab, {5, 7, 6, 8, 4});
        std::vector<std::vector<std::vector<std::vector<double>>>> ref_probs;
        test::ReferenceOptions ro;
        ro.visible = visibility_of(L.tags);
        ro.probs = &ref_probs;
        auto ref = test::reference_forward(T.spec, T.weights, L.tokens, L.positions, ro);

        auto ctx = Context::create(T.model, {.n_ctx = 64, .n_threads = 2, .n_batch = 8});
        REQUIRE(ctx.ok());
        EvalOptions opt;
        opt.blocks = L.tags;
        opt.logits = LogitsMode::All;
        ProbeRequest req;
        req.layers = {2};
        req.rows = {3, 14, 29};  // prefix, passage 2, question
        req.keep_probs = true;
        ProbeResult res;
        opt.probe = &req;
        opt.probe_out = &res;
        REQUIRE(ctx->eval(L.tokens, opt).ok());
        for (size_t t = 0; t < L.tokens.size(); ++t) {
            INFO(arch << " token " << t);
            CHECK(max_abs_diff(ctx->logits(static_cast<int32_t>(t)), ref[t]) < 1e-4);
        }
        for (int32_t hi = 0; hi < res.n_heads; ++hi) {
            for (int32_t ri = 0; ri < res.n_rows; ++ri) {
                const auto row = static_cast<size_t>(res.rows[static_cast<size_t>(ri)]);
                CHECK(max_abs_diff(res.probs[res.index(0, hi, ri)], ref_probs[2][static_cast<size_t>(hi)][row]) < 1e-5);
            }
        }
        // A passage row puts no mass on another passage.
        CHECK(res.probs[res.index(0, 0, 1)][6] == 0.0f);
        CHECK(ctx->slot_blocks()[14] == BlockTag{2, BlockKind::Local});
    }
}

TEST_CASE("BlockRank layout: documents share one position range and see only the instruction", "[attention][mask]") {
    Tiny T = load_tiny(spec_llama());
    // instruction (Shared) 6 tokens at 0..5; three documents of 5 tokens, each at positions 6..10;
    // a final Global block of 3 tokens at 11..13.
    Layout L;
    auto instr = some_tokens(6, T.weights.n_vocab, 1);
    for (size_t i = 0; i < instr.size(); ++i) {
        L.tokens.push_back(instr[i]);
        L.tags.push_back({0, BlockKind::Shared});
        L.positions.push_back(static_cast<int32_t>(i));
    }
    for (int32_t d = 1; d <= 3; ++d) {
        auto doc = some_tokens(5, T.weights.n_vocab, static_cast<uint32_t>(20 + d));
        for (size_t i = 0; i < doc.size(); ++i) {
            L.tokens.push_back(doc[i]);
            L.tags.push_back({d, BlockKind::Local});
            L.positions.push_back(6 + static_cast<int32_t>(i));
        }
    }
    auto fin = some_tokens(3, T.weights.n_vocab, 40);
    for (size_t i = 0; i < fin.size(); ++i) {
        L.tokens.push_back(fin[i]);
        L.tags.push_back({4, BlockKind::Global});
        L.positions.push_back(11 + static_cast<int32_t>(i));
    }
    test::ReferenceOptions ro;
    ro.visible = visibility_of(L.tags);
    auto ref = test::reference_forward(T.spec, T.weights, L.tokens, L.positions, ro);
    auto ctx = Context::create(T.model, {.n_ctx = 64, .n_threads = 2});
    REQUIRE(ctx.ok());
    EvalOptions opt;
    opt.blocks = L.tags;
    opt.positions = L.positions;
    opt.logits = LogitsMode::All;
    REQUIRE(ctx->eval(L.tokens, opt).ok());
    for (size_t t = 0; t < L.tokens.size(); ++t) {
        INFO("token " << t);
        CHECK(max_abs_diff(ctx->logits(static_cast<int32_t>(t)), ref[t]) < 1e-4);
    }
    CHECK(ctx->next_position() == 14);
    // Documents encoded alike give identical states whatever their slot: documents 1 and 2
    // as the same text would be the same; here the last token of each document only depends on
    // the instruction and itself, so re-evaluating document 2 alone after the instruction agrees.
    auto solo = Context::create(T.model, {.n_ctx = 64, .n_threads = 2});
    REQUIRE(solo.ok());
    REQUIRE(solo->eval(instr).ok());
    std::vector<int32_t> doc2(L.tokens.begin() + 11, L.tokens.begin() + 16);
    std::vector<int32_t> doc_pos = {6, 7, 8, 9, 10};
    EvalOptions o2;
    o2.positions = doc_pos;
    REQUIRE(solo->eval(doc2, o2).ok());
    CHECK(max_abs_diff(solo->logits(0), ctx->logits(15)) < 1e-4);
}

TEST_CASE("APE temperature and scale equal the exact LSE merge of the two partial attentions", "[attention][ape]") {
    Tiny T = load_tiny(spec_llama());
    Layout L = block_layout(T.weights.n_vocab, {4, 6, 6, 5});
    test::ReferenceOptions ro;
    ro.visible = visibility_of(L.tags);
    ro.ape_local = [tags = L.tags](size_t q, size_t k) {
        return tags[q].kind == BlockKind::Global && tags[k].kind == BlockKind::Local;
    };
    ro.ape_temperature = 0.9;
    ro.ape_scale = 0.9;
    auto ref = test::reference_forward(T.spec, T.weights, L.tokens, L.positions, ro);
    auto plain = test::reference_forward(T.spec, T.weights, L.tokens, L.positions, {.visible = ro.visible});

    auto ctx = Context::create(T.model, {.n_ctx = 64, .n_threads = 2});
    REQUIRE(ctx.ok());
    EvalOptions opt;
    opt.blocks = L.tags;
    opt.logits = LogitsMode::All;
    opt.ape = {0.9f, 0.9f};
    REQUIRE(ctx->eval(L.tokens, opt).ok());
    for (size_t t = 0; t < L.tokens.size(); ++t) {
        INFO("token " << t);
        CHECK(max_abs_diff(ctx->logits(static_cast<int32_t>(t)), ref[t]) < 1e-4);
    }
    // The repair changes the question rows (and only them).
    CHECK(max_abs_diff(ctx->logits(3), plain[3]) < 1e-4);
    CHECK(max_abs_diff(ctx->logits(20), plain[20]) > 1e-3);
}

TEST_CASE("LSE merge of two key sets equals attention over their union", "[attention][ape]") {
    const kernels::CpuKernels& kk = kernels::cpu_kernels();
    std::mt19937 rng(3);
    std::normal_distribution<float> nd(0.0f, 2.0f);
    const int64_t d = 24, n = 50, split = 17;
    std::vector<float> logits(n), values(static_cast<size_t>(n * d));
    for (auto& x : logits) x = nd(rng);
    for (auto& x : values) x = nd(rng);
    auto attend = [&](int64_t b, int64_t e, std::vector<float>& out) {
        std::vector<float> p(logits.begin() + b, logits.begin() + e);
        const float lse = kk.softmax(p.data(), e - b);
        out.assign(static_cast<size_t>(d), 0.0f);
        for (int64_t j = b; j < e; ++j) {
            for (int64_t i = 0; i < d; ++i) out[static_cast<size_t>(i)] += p[static_cast<size_t>(j - b)] * values[static_cast<size_t>(j * d + i)];
        }
        return lse;
    };
    std::vector<float> a, b, all, merged(static_cast<size_t>(d));
    const float lse_a = attend(0, split, a), lse_b = attend(split, n, b), lse_all = attend(0, n, all);
    const float lse = kernels::merge_attention(a.data(), lse_a, b.data(), lse_b, merged.data(), d);
    CHECK(lse == Approx(lse_all).margin(1e-5));
    CHECK(max_abs_diff(merged, all) < 1e-5);
    // An empty set contributes nothing.
    std::vector<float> zeros(static_cast<size_t>(d), 0.0f);
    kernels::merge_attention(zeros.data(), -INFINITY, all.data(), lse_all, merged.data(), d);
    CHECK(max_abs_diff(merged, all) == 0.0);
}

TEST_CASE("a spliced passage gives the same logits as encoding it in place", "[attention][splice]") {
    for (const char* arch : {"llama", "qwen2"}) {
        test::TinyModelSpec spec = spec_llama();
        spec.arch = arch;
        Tiny T = load_tiny(spec);
        auto prefix = some_tokens(7, T.weights.n_vocab, 1);
        auto passage = some_tokens(12, T.weights.n_vocab, 2);
        auto question = some_tokens(5, T.weights.n_vocab, 3);
        const int32_t P = 7, Lp = 12;

        // Direct: prefix + passage, then the question.
        auto direct = Context::create(T.model, {.n_ctx = 128, .n_threads = 2});
        REQUIRE(direct.ok());
        REQUIRE(direct->eval(prefix, {.logits = LogitsMode::None}).ok());
        REQUIRE(direct->eval(passage, {.logits = LogitsMode::None}).ok());
        REQUIRE(direct->eval(question, {.logits = LogitsMode::All}).ok());

        // Encode elsewhere, extract the passage, splice it after a fresh prefix.
        auto enc = Context::create(T.model, {.n_ctx = 128, .n_threads = 2});
        REQUIRE(enc.ok());
        std::vector<int32_t> both = prefix;
        both.insert(both.end(), passage.begin(), passage.end());
        REQUIRE(enc->eval(both, {.logits = LogitsMode::None}).ok());
        auto kv = enc->extract(P, P + Lp);
        REQUIRE(kv.ok());
        CHECK(kv->encoded_position == P);
        CHECK(kv->tokens == passage);

        auto spliced = Context::create(T.model, {.n_ctx = 128, .n_threads = 2});
        REQUIRE(spliced.ok());
        REQUIRE(spliced->eval(prefix, {.logits = LogitsMode::None}).ok());
        REQUIRE(spliced->splice(*kv, P).ok());
        CHECK(spliced->n_past() == P + Lp);
        CHECK(spliced->next_position() == P + Lp);
        REQUIRE(spliced->eval(question, {.logits = LogitsMode::All}).ok());
        for (int32_t t = 0; t < 5; ++t) {
            INFO(arch << " question token " << t);
            CHECK(max_abs_diff(spliced->logits(t), direct->logits(t)) < 1e-4);
        }

        // The whole prefix + passage state placed at offset s = 40 equals encoding it there.
        auto whole = enc->extract(0, P + Lp);
        REQUIRE(whole.ok());
        const int32_t s = 40;
        auto shifted = Context::create(T.model, {.n_ctx = 128, .n_threads = 2});
        REQUIRE(shifted.ok());
        REQUIRE(shifted->splice(*whole, s).ok());
        REQUIRE(shifted->eval(question, {.logits = LogitsMode::All}).ok());
        auto at_s = iota_positions(both.size() + question.size(), s);
        std::vector<int32_t> all = both;
        all.insert(all.end(), question.begin(), question.end());
        auto ref = test::reference_logits(T.spec, T.weights, all, at_s);
        for (int32_t t = 0; t < 5; ++t) {
            INFO(arch << " shifted question token " << t);
            CHECK(max_abs_diff(shifted->logits(t), ref[static_cast<size_t>(P + Lp + t)]) < 1e-4);
        }
    }
}

TEST_CASE("passages encoded apart and spliced equal block-masked attention", "[attention][splice]") {
    Tiny T = load_tiny(spec_llama());
    Layout L = block_layout(T.weights.n_vocab, {5, 7, 6, 4});
    // One shot with the mask.
    auto masked = Context::create(T.model, {.n_ctx = 64, .n_threads = 2});
    REQUIRE(masked.ok());
    REQUIRE(masked->eval(L.tokens, {.blocks = L.tags, .logits = LogitsMode::All}).ok());

    // Each passage encoded after the prefix on its own (at the positions it will take, so its
    // distance to the prefix is the same), then spliced in order.
    auto prefix = std::span(L.tokens).first(5);
    auto ctx = Context::create(T.model, {.n_ctx = 64, .n_threads = 2});
    REQUIRE(ctx.ok());
    REQUIRE(ctx->eval(prefix, {.logits = LogitsMode::None}).ok());
    int32_t at = 5;
    for (auto [b, e] : {std::pair{5, 12}, std::pair{12, 18}}) {
        auto enc = Context::create(T.model, {.n_ctx = 64, .n_threads = 1});
        REQUIRE(enc.ok());
        REQUIRE(enc->eval(prefix, {.logits = LogitsMode::None}).ok());
        auto pos = iota_positions(static_cast<size_t>(e - b), b);
        REQUIRE(enc->eval(std::span(L.tokens).subspan(static_cast<size_t>(b), static_cast<size_t>(e - b)),
                          {.positions = pos, .logits = LogitsMode::None})
                    .ok());
        auto kv = enc->extract(5, 5 + e - b);
        REQUIRE(kv.ok());
        REQUIRE(ctx->splice(*kv, at, L.tags[static_cast<size_t>(b)]).ok());
        at += e - b;
    }
    REQUIRE(ctx->eval(std::span(L.tokens).subspan(18), {.logits = LogitsMode::All}).ok());
    for (int32_t t = 0; t < 4; ++t) CHECK(max_abs_diff(ctx->logits(t), masked->logits(18 + t)) < 1e-4);
    CHECK(ctx->slot_blocks()[13] == BlockTag{2, BlockKind::Local});

    // Recomputing every spliced token with full visibility recovers ordinary causal attention.
    std::vector<int32_t> slots(13);
    std::iota(slots.begin(), slots.end(), 5);
    std::vector<float> drift;
    REQUIRE(ctx->recompute(slots, {.value_drift = &drift}).ok());
    REQUIRE(drift.size() == 13);
    // Passage 1 only saw the prefix and itself, as in causal order: nothing drifts there.
    for (size_t i = 0; i < 7; ++i) CHECK(drift[i] < 1e-8);
    CHECK(*std::max_element(drift.begin() + 7, drift.end()) > 1e-6);
    ctx->truncate(18);
    REQUIRE(ctx->eval(std::span(L.tokens).subspan(18), {.logits = LogitsMode::All}).ok());
    auto causal = test::reference_logits(T.spec, T.weights, L.tokens, L.positions);
    for (int32_t t = 0; t < 4; ++t) CHECK(max_abs_diff(ctx->logits(t), causal[static_cast<size_t>(18 + t)]) < 1e-4);
}

TEST_CASE("shared splices read passage states in place and equal copied splices", "[attention][splice]") {
    for (const char* arch : {"llama", "qwen2"}) {
        test::TinyModelSpec spec = spec_llama();
        spec.arch = arch;
        Tiny T = load_tiny(spec);
        Layout L = block_layout(T.weights.n_vocab, {5, 7, 6, 4});
        auto prefix = std::span(L.tokens).first(5);
        // Each passage encoded right after the prefix (position 5), so the second one is placed
        // 7 positions away from where it was encoded.
        std::vector<std::shared_ptr<const PassageKv>> states;
        for (auto [b, e] : {std::pair{5, 12}, std::pair{12, 18}}) {
            auto enc = Context::create(T.model, {.n_ctx = 64, .n_threads = 1});
            REQUIRE(enc.ok());
            REQUIRE(enc->eval(prefix, {.logits = LogitsMode::None}).ok());
            REQUIRE(enc->eval(std::span(L.tokens).subspan(static_cast<size_t>(b), static_cast<size_t>(e - b)),
                              {.logits = LogitsMode::None})
                        .ok());
            auto kv = enc->extract(5, 5 + e - b);
            REQUIRE(kv.ok());
            states.push_back(std::make_shared<const PassageKv>(std::move(kv).value()));
        }
        const PassageKv before = *states[1];
        auto prefix_kv = [&] {
            auto enc = Context::create(T.model, {.n_ctx = 64, .n_threads = 1});
            REQUIRE(enc.ok());
            REQUIRE(enc->eval(prefix, {.logits = LogitsMode::None}).ok());
            auto kv = enc->extract(0, 5);
            REQUIRE(kv.ok());
            return std::make_shared<const PassageKv>(std::move(kv).value());
        }();

        ProbeRequest req;
        req.layers = {1, 2};
        req.rows = {0, 3};
        req.spans = {{0, 5}, {5, 12}, {12, 18}};
        req.keep_probs = true;
        auto assemble = [&](bool share, ProbeResult& probe) {
            auto ctx = Context::create(T.model, {.n_ctx = 64, .n_threads = 2});
            REQUIRE(ctx.ok());
            if (share) {
                REQUIRE(ctx->splice(prefix_kv, 0, L.tags[0]).ok());
                REQUIRE(ctx->splice(states[0], 5, L.tags[5]).ok());
                REQUIRE(ctx->splice(states[1], 12, L.tags[12]).ok());
            } else {
                REQUIRE(ctx->splice(*prefix_kv, 0, L.tags[0]).ok());
                REQUIRE(ctx->splice(*states[0], 5, L.tags[5]).ok());
                REQUIRE(ctx->splice(*states[1], 12, L.tags[12]).ok());
            }
            REQUIRE(ctx->eval(std::span(L.tokens).subspan(18),
                              {.blocks = std::span(L.tags).subspan(18), .logits = LogitsMode::All, .probe = &req,
                               .probe_out = &probe})
                        .ok());
            return std::move(ctx).value();
        };
        ProbeResult p_copy, p_shared;
        Context copied = assemble(false, p_copy);
        Context shared = assemble(true, p_shared);
        CHECK(copied.n_shared_slots() == 0);
        CHECK(shared.n_shared_slots() == 18);
        CHECK(states[1].use_count() == 2);  // the context holds a reference, not a copy
        for (int32_t t = 0; t < 4; ++t) {
            INFO(arch << " question token " << t);
            CHECK(max_abs_diff(shared.logits(t), copied.logits(t)) < 1e-4);
        }
        for (size_t c = 0; c < p_copy.probs.size(); ++c) {
            CHECK(max_abs_diff(p_shared.probs[c], p_copy.probs[c]) < 1e-5);
        }
        // Decoding (one query row) reads the shared runs too.
        const std::vector<int32_t> next = {L.tokens[3]};
        REQUIRE(copied.eval(next, {.logits = LogitsMode::Last}).ok());
        REQUIRE(shared.eval(next, {.logits = LogitsMode::Last}).ok());
        CHECK(max_abs_diff(shared.logits(0), copied.logits(0)) < 1e-4);

        // extract() of shared slots gives keys rotated to their positions, as copied ones.
        auto x_copy = copied.extract(12, 18), x_shared = shared.extract(10, 18);
        REQUIRE(x_copy.ok());
        REQUIRE(x_shared.ok());
        auto x_mixed = copied.extract(10, 18);
        REQUIRE(x_mixed.ok());
        CHECK(x_shared->k == x_mixed->k);
        CHECK(x_shared->v == x_mixed->v);
        CHECK(x_shared->encoded_position == 10);

        // Recompute rewrites shared slots in the context's own copy; the state is untouched.
        std::vector<int32_t> slots(13);
        std::iota(slots.begin(), slots.end(), 5);
        copied.truncate(22);
        shared.truncate(22);
        REQUIRE(copied.recompute(slots).ok());
        REQUIRE(shared.recompute(slots).ok());
        CHECK(shared.n_shared_slots() == 5);  // only the prefix is still shared
        CHECK(states[1]->k == before.k);
        CHECK(states[1]->v == before.v);
        CHECK(states[1].use_count() == 1);
        REQUIRE(copied.eval(next, {.logits = LogitsMode::Last}).ok());
        REQUIRE(shared.eval(next, {.logits = LogitsMode::Last}).ok());
        CHECK(max_abs_diff(shared.logits(0), copied.logits(0)) < 1e-4);

        // Truncating into a shared run keeps its head; clear() releases every reference.
        shared.truncate(3);
        CHECK(shared.n_shared_slots() == 3);
        shared.clear();
        CHECK(shared.n_shared_slots() == 0);
        CHECK(prefix_kv.use_count() == 1);
        std::shared_ptr<const PassageKv> none;
        CHECK(shared.splice(none, 0).error().code == Errc::InvalidArgument);
    }
}

TEST_CASE("recompute of the first tokens of a spliced passage moves it toward full attention", "[attention][splice]") {
    Tiny T = load_tiny(spec_llama());
    Layout L = block_layout(T.weights.n_vocab, {5, 8, 8, 4});
    auto causal = test::reference_logits(T.spec, T.weights, L.tokens, L.positions);
    auto run = [&](std::span<const int32_t> recompute_slots, int32_t n_layers) {
        auto ctx = Context::create(T.model, {.n_ctx = 64, .n_threads = 2});
        REQUIRE(ctx.ok());
        REQUIRE(ctx->eval(std::span(L.tokens).first(21), {.blocks = std::span(L.tags).first(21),
                                                          .logits = LogitsMode::None})
                    .ok());
        REQUIRE(ctx->recompute(recompute_slots, {.n_layers = n_layers}).ok());
        REQUIRE(ctx->eval(std::span(L.tokens).subspan(21), {.logits = LogitsMode::Last}).ok());
        return max_abs_diff(ctx->logits(0), causal.back());
    };
    const double none = run({}, 0);
    std::vector<int32_t> second_passage(8);
    std::iota(second_passage.begin(), second_passage.end(), 13);
    const double all = run(second_passage, 0);
    CHECK(all < 1e-4);
    CHECK(none > 1e-3);
    // Layer 0's K and V do not depend on attention: recomputing it alone changes nothing beyond
    // float rounding (8 rows go through sgemm in other blocks than the first 21; some BLAS
    // kernels round differently by shape).
    CHECK(run(second_passage, 1) == Approx(none).epsilon(1e-5));
    // Layers 0 and 1: a partial repair.
    CHECK(run(second_passage, 2) < none);
    std::vector<int32_t> bad = {14, 13};
    auto ctx = Context::create(T.model, {.n_ctx = 64, .n_threads = 1});
    REQUIRE(ctx.ok());
    REQUIRE(ctx->eval(std::span(L.tokens).first(21)).ok());
    CHECK(ctx->recompute(bad).error().code == Errc::InvalidArgument);
    std::vector<int32_t> outside = {30};
    CHECK(ctx->recompute(outside).error().code == Errc::InvalidArgument);
}

TEST_CASE("splice rejects states of another shape and a full cache", "[attention][splice]") {
    Tiny T = load_tiny(spec_llama());
    auto ctx = Context::create(T.model, {.n_ctx = 16, .n_threads = 1});
    REQUIRE(ctx.ok());
    auto toks = some_tokens(10, T.weights.n_vocab, 9);
    REQUIRE(ctx->eval(toks).ok());
    auto kv = ctx->extract(0, 10);
    REQUIRE(kv.ok());
    CHECK(ctx->splice(*kv, 10).error().code == Errc::OutOfRange);
    CHECK(ctx->n_past() == 10);
    PassageKv other = *kv;
    other.kv_dim = 8;
    CHECK(ctx->splice(other, 0).error().code == Errc::InvalidArgument);
    other = *kv;
    other.k.pop_back();
    CHECK(ctx->splice(other, 0).error().code == Errc::InvalidArgument);
    CHECK(ctx->extract(5, 11).error().code == Errc::InvalidArgument);
    CHECK(ctx->extract(4, 4).error().code == Errc::InvalidArgument);
    ctx->truncate(2);
    auto part = ctx->extract(0, 2);
    REQUIRE(part.ok());
    CHECK(ctx->splice(*part, -1).error().code == Errc::InvalidArgument);
}
