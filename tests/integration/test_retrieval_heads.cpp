// Retrieval heads on the real SmolLM2: scoring copy trials, the stored ranking, and InfiniRetri
// reading chosen (layer, head) pairs.
#include <algorithm>
#include <catch2/catch.hpp>
#include <fstream>
#include <optional>

#include "attnrag/pipelines/infiniretri.hpp"
#include "attnrag/pipelines/retrieval_heads.hpp"
#include "real_model.hpp"
#include "test_support.hpp"

using namespace attnrag;
using namespace attnrag::pipelines;
namespace fs = std::filesystem;

namespace {

fs::path essays_dir() {
    return test::shared_data_dir() / "niah" / "paul_graham_essays";
}

// A small scoring run (6 trials of at most 1000 tokens), computed once per test program.
const HeadRanking& small_ranking() {
    static std::optional<HeadRanking> ranking;
    if (!ranking) {
        RetrievalHeadsOptions o;
        o.haystack = essays_dir();
        o.lengths = {500, 1000};
        o.depths = {0, 50, 100};
        o.n_trials = 1;
        o.n_threads = 2;
        o.max_haystack_tokens = 20000;
        auto r = score_retrieval_heads(test::real_model(), o);
        if (!r) FAIL(r.error().to_string());
        ranking.emplace(std::move(r).value());
    }
    return *ranking;
}

std::string essays_text(size_t n_bytes) {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(essays_dir() / "PaulGrahamEssays")) {
        if (e.path().extension() == ".txt") files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    std::string text;
    for (const auto& f : files) {
        std::ifstream in(f, std::ios::binary);
        if (!text.empty()) text += "\n\n";
        text += std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
        if (text.size() >= n_bytes) break;
    }
    return text.substr(0, n_bytes);
}

}  // namespace

TEST_CASE("every head gets a score in [0 1] and the ranking is sorted", "[smollm2][heads]") {
    const Model& model = test::real_model();
    const HeadRanking& r = small_ranking();
    const auto& hp = model.hparams();
    CHECK(r.fingerprint == model.fingerprint());
    CHECK(r.n_layer == hp.n_layer);
    CHECK(r.n_head == hp.n_head);
    CHECK(r.n_trials == 6);
    CHECK(r.n_rows > 6 * 5);  // a 6-word needle gives well over 5 copied tokens per trial
    CHECK(r.n_rows_correct <= r.n_rows);
    REQUIRE(r.heads.size() == static_cast<size_t>(hp.n_layer * hp.n_head));
    std::vector<char> seen(r.heads.size(), 0);
    for (const HeadScore& h : r.heads) {
        REQUIRE(h.head.layer >= 0);
        REQUIRE(h.head.layer < hp.n_layer);
        REQUIRE(h.head.head >= 0);
        REQUIRE(h.head.head < hp.n_head);
        char& s = seen[static_cast<size_t>(h.head.layer * hp.n_head + h.head.head)];
        CHECK(s == 0);
        s = 1;
        CHECK(h.score >= 0.0);
        CHECK(h.score <= 1.0);
        CHECK(h.score_correct >= 0.0);
        CHECK(h.score_correct <= 1.0);
    }
    for (size_t i = 1; i < r.heads.size(); ++i) CHECK(r.heads[i - 1].score >= r.heads[i].score);
    CHECK(r.top(5).size() == 5);
    CHECK(r.top(5).front() == r.heads.front().head);
}

TEST_CASE("copying heads exist and are sparse", "[smollm2][heads]") {
    const HeadRanking& r = small_ranking();
    const double mean = r.mean_score();
    INFO("best " << r.heads.front().head.layer << ":" << r.heads.front().head.head << " score "
                 << r.heads.front().score << ", mean " << mean);
    // Retrieval heads: a few heads point at the copied token most of the time, most never do.
    CHECK(r.heads.front().score > 0.4);
    CHECK(r.heads.front().score > 5 * mean);
    const auto n_strong = std::count_if(r.heads.begin(), r.heads.end(),
                                        [](const HeadScore& h) { return h.score > 0.1; });
    CHECK(n_strong >= 1);
    CHECK(n_strong < static_cast<long>(r.heads.size() / 5));
}

TEST_CASE("the scoring run reports progress and can be cancelled", "[smollm2][heads]") {
    RetrievalHeadsOptions o;
    o.haystack = essays_dir();
    o.lengths = {300};
    o.depths = {0, 100};
    o.n_trials = 2;
    o.n_threads = 2;
    o.max_haystack_tokens = 5000;
    int calls = 0;
    o.on_progress = [&](const RetrievalHeadsProgress& p) {
        ++calls;
        CHECK(p.n_trials == 4);
        CHECK(p.n_trials_done == calls);
        return calls < 2;
    };
    auto r = score_retrieval_heads(test::real_model(), o);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::Cancelled);
    CHECK(calls == 2);

    // Bad options fail before any work.
    o.on_progress = {};
    o.depths = {101};
    auto bad = score_retrieval_heads(test::real_model(), o);
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.error().code == Errc::InvalidArgument);
    o.depths = {50};
    o.haystack = essays_dir() / "no_such_file.txt";
    auto missing = score_retrieval_heads(test::real_model(), o);
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.error().code == Errc::NotFound);
}

TEST_CASE("a scored ranking survives a save and load round trip", "[smollm2][heads]") {
    const Model& model = test::real_model();
    const HeadRanking& r = small_ranking();
    const fs::path dir = test::make_temp_dir("heads_roundtrip") / "nested" / "heads";
    auto path = save_head_ranking(r, dir);
    REQUIRE(path.ok());
    CHECK(*path == dir / (model.fingerprint() + ".json"));
    auto back = load_head_ranking(dir, model);
    REQUIRE(back.ok());
    CHECK(back->heads == r.heads);
    CHECK(back->n_rows == r.n_rows);
    CHECK(back->n_rows_correct == r.n_rows_correct);
    CHECK(back->setup.lengths == r.setup.lengths);
    CHECK(back->setup.depths == r.setup.depths);
    CHECK(back->model_name == r.model_name);
    auto top = top_retrieval_heads(dir, model, 4);
    REQUIRE(top.ok());
    CHECK(*top == r.top(4));
    // Only the ranking is left in the directory (the temporary was renamed).
    CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);

    auto zero = top_retrieval_heads(dir, model, 0);
    REQUIRE_FALSE(zero.ok());
    CHECK(zero.error().code == Errc::InvalidArgument);
}

TEST_CASE("stored rankings that do not fit the model are rejected", "[smollm2][heads]") {
    const Model& model = test::real_model();
    const fs::path dir = test::make_temp_dir("heads_mismatch");

    auto none = top_retrieval_heads(dir, model, 4);
    REQUIRE_FALSE(none.ok());
    CHECK(none.error().code == Errc::NotFound);
    CHECK(none.error().message.find("attnrag heads") != std::string::npos);

    // Right fingerprint, wrong shape.
    HeadRanking small;
    small.fingerprint = model.fingerprint();
    small.n_layer = 2;
    small.n_head = 2;
    for (int32_t l = 0; l < 2; ++l) {
        for (int32_t h = 0; h < 2; ++h) small.heads.push_back({{l, h}, 0.1 * (l + h), 0.0});
    }
    sort_head_scores(small.heads);
    REQUIRE(save_head_ranking(small, dir).ok());
    auto shape = load_head_ranking(dir, model);
    REQUIRE_FALSE(shape.ok());
    CHECK(shape.error().code == Errc::Corrupt);

    // Another model's ranking (of the same shape) under this model's file name.
    HeadRanking other;
    other.fingerprint = "0123456789abcdef";
    other.n_layer = model.hparams().n_layer;
    other.n_head = model.hparams().n_head;
    for (int32_t l = 0; l < other.n_layer; ++l) {
        for (int32_t h = 0; h < other.n_head; ++h) other.heads.push_back({{l, h}, 0.0, 0.0});
    }
    sort_head_scores(other.heads);
    REQUIRE(save_head_ranking(other, dir).ok());
    fs::rename(dir / "0123456789abcdef.json", dir / (model.fingerprint() + ".json"));
    auto wrong = load_head_ranking(dir, model);
    REQUIRE_FALSE(wrong.ok());
    CHECK(wrong.error().code == Errc::Corrupt);
    CHECK(wrong.error().message.find("0123456789abcdef") != std::string::npos);
}

TEST_CASE("InfiniRetri reading all heads of layer 15 as pairs keeps the same sentences",
          "[smollm2][heads][infiniretri]") {
    const Model& model = test::real_model();
    const std::string text = essays_text(9000);
    auto ir = InfiniRetri::create(model, 2);
    REQUIRE(ir.ok());
    const std::string question = "What do startups need most?";
    InfiniRetriOptions by_layer;
    by_layer.chunk_tokens = 512;
    by_layer.top_k = 60;
    by_layer.max_answer_tokens = 4;
    by_layer.layers = {15};
    InfiniRetriOptions by_pairs = by_layer;
    by_pairs.layers = {3};  // ignored: layer_heads overrides layers and heads
    by_pairs.heads = {0};
    for (int32_t h = model.hparams().n_head - 1; h >= 0; --h)
        by_pairs.layer_heads.push_back({15, h});

    auto src_a = SentenceSource::from_text(text);
    auto a = ir->answer(src_a, question, by_layer);
    REQUIRE(a.ok());
    auto src_b = SentenceSource::from_text(text);
    auto b = ir->answer(src_b, question, by_pairs);
    REQUIRE(b.ok());
    CHECK(a->n_chunks >= 3);
    REQUIRE(a->kept.size() == b->kept.size());
    for (size_t i = 0; i < a->kept.size(); ++i) {
        CHECK(a->kept[i].begin == b->kept[i].begin);
        CHECK(a->kept[i].end == b->kept[i].end);
        CHECK(a->kept[i].score == b->kept[i].score);
    }
    CHECK(a->text == b->text);

    // A few heads of one layer keep other sentences than the whole layer; pairs across layers
    // run too.
    InfiniRetriOptions few = by_layer;
    few.layer_heads = {{15, 0}, {15, 4}, {20, 6}};
    auto src_c = SentenceSource::from_text(text);
    auto c = ir->answer(src_c, question, few);
    REQUIRE(c.ok());
    CHECK(c->n_chunks == a->n_chunks);
    bool same = c->kept.size() == a->kept.size();
    for (size_t i = 0; same && i < c->kept.size(); ++i) same = c->kept[i].score == a->kept[i].score;
    CHECK_FALSE(same);
}

TEST_CASE("InfiniRetri rejects invalid layer_heads", "[smollm2][heads][infiniretri]") {
    const Model& model = test::real_model();
    auto ir = InfiniRetri::create(model, 2);
    REQUIRE(ir.ok());
    const int32_t n_layer = model.hparams().n_layer, n_head = model.hparams().n_head;
    const std::vector<std::vector<LayerHead>> bad = {
        {{n_layer, 0}}, {{0, n_head}}, {{-1, 0}}, {{3, -2}}, {{15, 1}, {16, 2}, {15, 1}}};
    for (const auto& lh : bad) {
        INFO(format_layer_heads(lh));
        auto src = SentenceSource::from_text("A short text. It has two sentences.");
        InfiniRetriOptions o;
        o.layer_heads = lh;
        auto a = ir->answer(src, "What is this?", o);
        REQUIRE_FALSE(a.ok());
        CHECK(a.error().code == Errc::InvalidArgument);
        CHECK(a.error().message.find("infiniretri") != std::string::npos);
    }
}
