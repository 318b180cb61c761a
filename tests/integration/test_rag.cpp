// RAG QA on the real SmolLM2: an answer found in one passage and cited to it, attention sorting,
// window fitting.
#include <catch2/catch.hpp>

#include <algorithm>
#include <optional>

#include "attnrag/kv_store.hpp"
#include "attnrag/model.hpp"
#include "attnrag/pipelines/rag.hpp"
#include "real_model.hpp"
#include "test_support.hpp"

using namespace attnrag;
using test::real_model;
using namespace attnrag::pipelines;

namespace {

std::vector<RagPassage> passages() {
    std::vector<RagPassage> ps(4);
    ps[0] = {"p0", 1, 10, "alps.txt", "Alps", "The Alps are the highest mountain range in Europe, stretching across eight countries.", 0, 85};
    ps[1] = {"p1", 2, 20, "museum.txt", "City museum",
             "The city museum of Tallinn was founded in 1937. Its first director was Helmi Saar, a historian.", 0, 95};
    ps[2] = {"p2", 3, 30, "bread.txt", "Bread", "Bread is made from flour, water and yeast, and baked in an oven.", 0, 64};
    ps[3] = {"p3", 4, 40, "tea.txt", "Tea", "Tea is a drink made by pouring hot water over the dried leaves of the tea plant.", 0, 80};
    return ps;
}

}  // namespace

TEST_CASE("an answer found in one passage is answered and cited to it", "[smollm2][rag]") {
    const Model& model = real_model();
    auto store = PassageKvStore::open({});
    REQUIRE(store.ok());
    auto session = RagSession::create(model, &*store, 2, 2048);
    REQUIRE(session.ok());
    const auto ps = passages();
    for (Assembly mode : {Assembly::Full, Assembly::Blocks}) {
        RagOptions o;
        o.assembly.mode = mode;
        std::string streamed;
        o.on_text = [&](std::string_view t) {
            streamed += t;
            return true;
        };
        auto a = session->answer("Who was the first director of the city museum of Tallinn?", ps, o);
        REQUIRE(a.ok());
        INFO(to_string(mode) << ": " << a->text);
        CHECK(a->text.find("Helmi Saar") != std::string::npos);
        CHECK(streamed == a->text);
        REQUIRE(a->citations.size() == 4);
        CHECK(a->citations[0].id == "p1");
        CHECK(a->citations[0].source == "museum.txt");
        CHECK(a->citations[0].chunk_id == 20);
        CHECK(a->citations[0].share > a->citations[1].share);
        float total = 0;
        for (const auto& c : a->citations) total += c.share;
        CHECK(total == Approx(1.0f).margin(1e-4));
        CHECK(a->dropped.empty());
        CHECK(a->order == std::vector<size_t>{0, 1, 2, 3});
    }
}

TEST_CASE("attention sorting moves the passage the probe ranks highest next to the question", "[smollm2][rag]") {
    const Model& model = real_model();
    auto store = PassageKvStore::open({});
    REQUIRE(store.ok());
    auto session = RagSession::create(model, &*store, 2, 2048);
    REQUIRE(session.ok());
    const auto ps = passages();
    const std::string q = "Who was the first director of the city museum of Tallinn?";
    for (Assembly mode : {Assembly::Full, Assembly::Blocks}) {
        // What the probe says in the given order: the last prompt row's mass per passage.
        auto prompt = build_rag_prompt(model.tokenizer(), RagOptions{}.instruction, ps, q);
        REQUIRE(prompt.ok());
        auto cache = PassageKvCache::create(model, prompt->prefix, &*store, 2);
        REQUIRE(cache.ok());
        ProbeResult att;
        AssemblyOptions ao;
        ao.mode = mode;
        auto r = assemble(session->context(), prompt->prefix, prompt->passages, prompt->question, ao, &*cache, &att);
        REQUIRE(r.ok());
        const auto mass = att.mean_span_mass(0);
        const auto top = static_cast<size_t>(std::max_element(mass.begin(), mass.end()) - mass.begin());
        const auto low = static_cast<size_t>(std::min_element(mass.begin(), mass.end()) - mass.begin());

        RagOptions o;
        o.assembly.mode = mode;
        o.sort_passes = 1;
        o.max_answer_tokens = 8;
        auto a = session->answer(q, ps, o);
        REQUIRE(a.ok());
        INFO(to_string(mode) << " masses " << mass[0] << " " << mass[1] << " " << mass[2] << " " << mass[3]);
        CHECK(a->order.back() == top);
        CHECK(a->order.front() == low);
        std::vector<size_t> sorted = a->order;
        std::sort(sorted.begin(), sorted.end());
        CHECK(sorted == std::vector<size_t>{0, 1, 2, 3});
        if (mode == Assembly::Blocks) CHECK(a->assembled.n_passages_reused == 4);  // re-sorted without re-encoding
    }
}

TEST_CASE("passages that do not fit the window are dropped lowest ranked first", "[smollm2][rag]") {
    const Model& model = real_model();
    auto session = RagSession::create(model, nullptr, 2, 160);
    REQUIRE(session.ok());
    const auto ps = passages();
    RagOptions o;
    o.assembly.mode = Assembly::Full;
    o.max_answer_tokens = 16;
    auto a = session->answer("Who was the first director of the city museum of Tallinn?", ps, o);
    REQUIRE(a.ok());
    REQUIRE(!a->dropped.empty());
    CHECK(a->dropped.back() == 3);
    CHECK(a->order.size() + a->dropped.size() == 4);
    for (size_t i = 0; i < a->order.size(); ++i) CHECK(a->order[i] == i);  // the best ranked are kept

    auto tiny = RagSession::create(model, nullptr, 1, 40);
    REQUIRE(tiny.ok());
    auto none = tiny->answer("Who was the first director of the city museum of Tallinn?", ps, o);
    CHECK(none.error().code == Errc::OutOfRange);
    CHECK(session->answer("", ps, o).error().code == Errc::InvalidArgument);
}

