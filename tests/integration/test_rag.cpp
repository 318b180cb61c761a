// RAG QA on the real SmolLM2: an answer found in one passage and cited to it, attention sorting,
// window fitting.
#include <catch2/catch.hpp>

#include <algorithm>
#include <memory>
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

const std::string kMuseumQuestion = "Who was the first director of the city museum of Tallinn?";

// An in-memory passage store and a 2,048-token session over it (the store stays put when this
// is moved: the session points at it).
struct MemorySession {
    std::unique_ptr<PassageKvStore> store;
    std::optional<RagSession> session;
};

MemorySession memory_session() {
    auto store = PassageKvStore::open({});
    REQUIRE(store.ok());
    MemorySession m{std::make_unique<PassageKvStore>(std::move(store).value()), std::nullopt};
    auto session = RagSession::create(real_model(), m.store.get(), 2, 2048);
    REQUIRE(session.ok());
    m.session.emplace(std::move(session).value());
    return m;
}

}  // namespace

TEST_CASE("an answer found in one passage is answered and cited to it", "[smollm2][rag]") {
    auto ms = memory_session();
    const auto ps = passages();
    for (Assembly mode : {Assembly::Full, Assembly::Blocks}) {
        RagOptions o;
        o.assembly.mode = mode;
        std::string streamed;
        o.on_text = [&](std::string_view t) {
            streamed += t;
            return true;
        };
        auto a = ms.session->answer(kMuseumQuestion, ps, o);
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
    auto ms = memory_session();
    const auto ps = passages();
    for (Assembly mode : {Assembly::Full, Assembly::Blocks}) {
        // What the method's probe says in the given order: the last prompt row's mass per passage,
        // all layers and heads.
        auto prompt = build_rag_prompt(model.tokenizer(), RagOptions{}.instruction, ps, kMuseumQuestion);
        REQUIRE(prompt.ok());
        auto cache = PassageKvCache::create(model, prompt->prefix, ms.store.get(), 2);
        REQUIRE(cache.ok());
        ProbeResult att;
        AssemblyOptions ao;
        ao.mode = mode;
        auto r = assemble(ms.session->context(), prompt->prefix, prompt->passages, prompt->question, ao, &*cache, &att);
        REQUIRE(r.ok());
        const auto mass = att.mean_span_mass(0);
        const auto top = static_cast<size_t>(std::max_element(mass.begin(), mass.end()) - mass.begin());
        const auto low = static_cast<size_t>(std::min_element(mass.begin(), mass.end()) - mass.begin());

        RagOptions o;
        o.assembly.mode = mode;
        o.sort_passes = 1;
        o.sort = SortSignal::method();
        o.max_answer_tokens = 8;
        auto a = ms.session->answer(kMuseumQuestion, ps, o);
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

namespace {

// Mass per passage averaged over the probed rows.
std::vector<float> mean_mass(const ProbeResult& att) {
    std::vector<float> out(static_cast<size_t>(att.n_spans), 0.0f);
    for (int32_t r = 0; r < att.n_rows; ++r) {
        const auto m = att.mean_span_mass(r);
        for (size_t i = 0; i < out.size(); ++i) out[i] += m[i] / static_cast<float>(att.n_rows);
    }
    return out;
}

}  // namespace

TEST_CASE("calibrated sorting divides by a neutral question's attention and leaves the prompt ready",
          "[smollm2][rag]") {
    const Model& model = real_model();
    auto ms = memory_session();
    const auto ps = passages();
    // The default signal (every question row, layers 10-29 of SmolLM2's 30, calibrated) and the
    // last row alone at three layers, calibrated.
    const SortSignal last_row = {.question_rows = false, .layers = {10, 20, 29}};
    for (const SortSignal& signal : {SortSignal{}, last_row}) {
        RagOptions o;
        o.sort_passes = 1;
        o.sort = signal;
        o.max_answer_tokens = 12;
        AssemblyOptions probe;
        probe.probe_question_rows = signal.question_rows;
        probe.probe_layers = signal.layers.empty() ? upper_two_thirds(model.hparams().n_layer) : signal.layers;
        for (Assembly mode : {Assembly::Full, Assembly::Blocks}) {
            o.assembly.mode = probe.mode = mode;
            // The mass per passage asked the question, over the mass asked the neutral one.
            auto prompt = build_rag_prompt(model.tokenizer(), o.instruction, ps, kMuseumQuestion);
            auto neutral = build_rag_prompt(model.tokenizer(), o.instruction, ps, signal.neutral_question);
            REQUIRE(prompt.ok());
            REQUIRE(neutral.ok());
            auto cache = PassageKvCache::create(model, prompt->prefix, ms.store.get(), 2);
            REQUIRE(cache.ok());
            std::vector<float> ratio;
            for (const auto* question : {&prompt->question, &neutral->question}) {
                ProbeResult att;
                auto r = assemble(ms.session->context(), prompt->prefix, prompt->passages, *question, probe, &*cache, &att);
                REQUIRE(r.ok());
                REQUIRE(att.n_rows == (signal.question_rows ? static_cast<int32_t>(question->size()) : 1));
                const auto m = mean_mass(att);
                if (ratio.empty()) {
                    ratio = m;
                } else {
                    for (size_t i = 0; i < m.size(); ++i) ratio[i] /= m[i];
                }
            }
            auto a = ms.session->answer(kMuseumQuestion, ps, o);
            REQUIRE(a.ok());
            INFO(to_string(mode) << (signal.question_rows ? " question rows" : " last row") << " ratios " << ratio[0]
                                 << " " << ratio[1] << " " << ratio[2] << " " << ratio[3]);
            CHECK(a->order.back() == static_cast<size_t>(std::max_element(ratio.begin(), ratio.end()) - ratio.begin()));
            CHECK(a->order.front() == static_cast<size_t>(std::min_element(ratio.begin(), ratio.end()) - ratio.begin()));
            // The default signal draws the museum question to the museum passage.
            if (signal.question_rows) CHECK(a->order.back() == 1);

            // The answer comes from the context the sorting pass left (passages re-rotated to
            // their sorted places, the question block evaluated again after the neutral one): the
            // same answer as assembling the sorted order afresh without sorting. (Spliced passages
            // do not see each other, so moving them changes nothing else; in full mode moved
            // passages would need encoding again.)
            if (mode == Assembly::Full) continue;
            std::vector<RagPassage> in;
            for (size_t i : a->order) in.push_back(ps[i]);
            auto again = ms.session->answer(kMuseumQuestion, in, o);
            REQUIRE(again.ok());
            std::vector<RagPassage> settled;
            for (size_t i : again->order) settled.push_back(in[i]);
            RagOptions plain = o;
            plain.sort_passes = 0;
            auto unsorted = ms.session->answer(kMuseumQuestion, settled, plain);
            REQUIRE(unsorted.ok());
            CHECK_FALSE(again->text.empty());
            CHECK(again->text == unsorted->text);
        }
    }
}

TEST_CASE("probing every question row gives the last row as probing it alone", "[smollm2][rag]") {
    const Model& model = real_model();
    auto ms = memory_session();
    const auto ps = passages();
    auto prompt = build_rag_prompt(model.tokenizer(), RagOptions{}.instruction, ps, kMuseumQuestion);
    REQUIRE(prompt.ok());
    auto cache = PassageKvCache::create(model, prompt->prefix, ms.store.get(), 2);
    REQUIRE(cache.ok());
    AssemblyOptions last;
    last.probe_layers = {10, 20, 29};
    AssemblyOptions rows = last;
    rows.probe_question_rows = true;
    ProbeResult all, one;
    REQUIRE(assemble(ms.session->context(), prompt->prefix, prompt->passages, prompt->question, rows, &*cache, &all).ok());
    REQUIRE(assemble(ms.session->context(), prompt->prefix, prompt->passages, prompt->question, last, &*cache, &one).ok());
    REQUIRE(all.n_rows == static_cast<int32_t>(prompt->question.size()));
    REQUIRE(one.n_rows == 1);
    const auto m_all = all.mean_span_mass(all.n_rows - 1), m_last = one.mean_span_mass(0);
    for (size_t i = 0; i < m_all.size(); ++i) CHECK(m_all[i] == Approx(m_last[i]).margin(1e-5));
}

TEST_CASE("passages that do not fit the window are dropped lowest ranked first", "[smollm2][rag]") {
    const Model& model = real_model();
    auto session = RagSession::create(model, nullptr, 2, 160);
    REQUIRE(session.ok());
    const auto ps = passages();
    RagOptions o;
    o.assembly.mode = Assembly::Full;
    o.max_answer_tokens = 16;
    auto a = session->answer(kMuseumQuestion, ps, o);
    REQUIRE(a.ok());
    REQUIRE(!a->dropped.empty());
    CHECK(a->dropped.back() == 3);
    CHECK(a->order.size() + a->dropped.size() == 4);
    for (size_t i = 0; i < a->order.size(); ++i) CHECK(a->order[i] == i);  // the best ranked are kept

    auto tiny = RagSession::create(model, nullptr, 1, 40);
    REQUIRE(tiny.ok());
    auto none = tiny->answer(kMuseumQuestion, ps, o);
    CHECK(none.error().code == Errc::OutOfRange);
    CHECK(session->answer("", ps, o).error().code == Errc::InvalidArgument);
}

