// The quality model, Qwen2.5-Coder-1.5B-Instruct Q4_K_M (every test here uses it): shape, greedy
// answers (general knowledge and grounded in a passage), stability across runs and thread
// counts, perplexity. Skipped with a message when the model is not installed.
#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>

#include "attnrag/context.hpp"
#include "attnrag/generate.hpp"
#include "attnrag/model.hpp"
#include "attnrag/model_catalog.hpp"
#include "attnrag/perplexity.hpp"
#include "test_support.hpp"

using namespace attnrag;

namespace {

// The model, loaded once; nullptr (with a warning naming the set-up command) when absent.
const Model* quality_model() {
    static std::optional<Model> model;
    static bool tried = false;
    if (!tried) {
        tried = true;
        const auto path = test::source_dir() / "models" / std::string(known_models()[0].file);
        if (!std::filesystem::exists(path)) return nullptr;
        auto m = Model::load(path.string());
        if (!m) FAIL(m.error().message);
        model.emplace(std::move(m).value());
    }
    return model ? &*model : nullptr;
}

#define REQUIRE_QUALITY_MODEL()                                                    \
    const Model* qm = quality_model();                                             \
    if (qm == nullptr) {                                                           \
        WARN(                                                                      \
            "skipped: qwen2.5-1.5b is not installed (ATTNRAG_MODELS=qwen2.5-1.5b " \
            "./scripts/setup.sh)");                                                \
        return;                                                                    \
    }

std::string greedy_answer(const Model& m, const std::string& user, int n_threads = 2,
                          int32_t max_tokens = 32) {
    std::vector<ChatMessage> msgs = {{"user", user}};
    auto ids = m.tokenizer().encode_chat(msgs, true);
    REQUIRE(ids.ok());
    auto ctx = Context::create(m, {.n_ctx = 1024, .n_threads = n_threads});
    REQUIRE(ctx.ok());
    GenerateParams gp;
    gp.max_tokens = max_tokens;
    auto r = generate(*ctx, *ids, gp);
    REQUIRE(r.ok());
    return r->text;
}

const char* const kPassageQuestion =
    "Answer the question from the passage, in a few words.\n\n"
    "Passage: The Zephyr Observatory was built in 1921 on the slopes of Mount Aster, funded by "
    "the shipping merchant Tomas Brandt. Its first director was the astronomer Ingrid "
    "Halvorsen, who led it for twenty years and catalogued more than four thousand variable "
    "stars. In 1958 the observatory's main telescope was moved to a new site.\n\n"
    "Question: Who was the first director of the Zephyr Observatory?";

}  // namespace

TEST_CASE("qwen2.5-1.5b loads with the expected shape", "[qwen]") {
    REQUIRE_QUALITY_MODEL();
    const ModelHParams& hp = qm->hparams();
    CHECK(hp.arch == Arch::Qwen2);
    CHECK(hp.n_layer == 28);
    CHECK(hp.n_embd == 1536);
    CHECK(hp.n_head == 12);
    CHECK(hp.n_head_kv == 2);
    CHECK(hp.n_ff == 8960);
    CHECK(hp.n_vocab == 151936);
    CHECK(hp.rope_style == kernels::RopeStyle::Neox);
    CHECK_FALSE(hp.tied_embeddings);
    CHECK(qm->layer(0).wq.type == kernels::DType::Q4_K);
}

TEST_CASE("qwen2.5-1.5b greedy chat answer names Paris", "[qwen]") {
    REQUIRE_QUALITY_MODEL();
    const std::string a = greedy_answer(*qm, "What is the capital of France?");
    INFO("answer: " << a);
    CHECK(a.find("Paris") != std::string::npos);
}

TEST_CASE("qwen2.5-1.5b answers from a passage with the person it names", "[qwen]") {
    REQUIRE_QUALITY_MODEL();
    const std::string a = greedy_answer(*qm, kPassageQuestion);
    INFO("answer: " << a);
    CHECK(a.find("Ingrid Halvorsen") != std::string::npos);
    CHECK(a.find("Brandt") == std::string::npos);  // the funder is not the director
}

TEST_CASE("qwen2.5-1.5b greedy answers are the same run to run and at 1 or 2 threads", "[qwen]") {
    // Threads split a matrix's rows, never a dot product, so the numbers and hence the greedy
    // tokens do not depend on the thread count.
    REQUIRE_QUALITY_MODEL();
    const std::string q = "Name three primary colours.";
    const std::string a1 = greedy_answer(*qm, q, 2, 24);
    const std::string a2 = greedy_answer(*qm, q, 2, 24);
    const std::string a3 = greedy_answer(*qm, q, 1, 24);
    INFO("answer: " << a1);
    CHECK(a1 == a2);
    CHECK(a1 == a3);
    CHECK_FALSE(a1.empty());
}

TEST_CASE("qwen2.5-1.5b perplexity of the first 512 tokens of the GPL-3 text", "[qwen]") {
    REQUIRE_QUALITY_MODEL();
    std::ifstream in("/usr/share/common-licenses/GPL-3");
    if (!in.good()) {
        WARN("skipped: /usr/share/common-licenses/GPL-3 is absent");
        return;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    auto tokens = qm->tokenizer().encode(ss.str());
    REQUIRE(tokens.ok());
    REQUIRE(tokens->size() > 512);
    auto ctx = Context::create(*qm, {.n_ctx = 512, .n_threads = 2});
    REQUIRE(ctx.ok());
    auto r = perplexity(*ctx, *tokens, 512, 1);
    REQUIRE(r.ok());
    WARN("qwen2.5-1.5b perplexity(GPL-3, first 512 tokens) = " << r->perplexity);
    CHECK(r->n_scored == 511);
    // A licence text a code model has seen many times: far below SmolLM2's ~20 on it.
    CHECK(r->perplexity > 1.0);
    CHECK(r->perplexity < 6.0);
}
