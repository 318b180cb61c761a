// The real SmolLM2-135M-Instruct: greedy chat answer, perplexity, generation controls.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>

#include "attnrag/context.hpp"
#include "attnrag/generate.hpp"
#include "attnrag/model.hpp"
#include "attnrag/perplexity.hpp"
#include "real_model.hpp"
#include "test_support.hpp"

using namespace attnrag;
using test::real_model;

namespace {

std::vector<TokenId> chat(const std::string& user) {
    std::vector<ChatMessage> msgs = {{"user", user}};
    auto ids = real_model().tokenizer().encode_chat(msgs, true);
    REQUIRE(ids.ok());
    return *ids;
}

}  // namespace

TEST_CASE("SmolLM2 loads with the expected shape", "[smollm2]") {
    const ModelHParams& hp = real_model().hparams();
    CHECK(hp.arch == Arch::Llama);
    CHECK(hp.n_layer == 30);
    CHECK(hp.n_embd == 576);
    CHECK(hp.n_head == 9);
    CHECK(hp.n_head_kv == 3);
    CHECK(hp.n_ff == 1536);
    CHECK(hp.n_vocab == 49152);
    CHECK(hp.n_ctx_train == 8192);
    CHECK(hp.tied_embeddings);
    CHECK(real_model().fingerprint().size() == 16);
}

TEST_CASE("SmolLM2 greedy chat answer names Paris", "[smollm2]") {
    auto ctx = Context::create(real_model(), {.n_ctx = 512, .n_threads = 2});
    REQUIRE(ctx.ok());
    GenerateParams gp;
    gp.max_tokens = 32;
    std::string streamed;
    gp.on_text = [&](std::string_view s) {
        streamed += s;
        return true;
    };
    auto r = generate(*ctx, chat("What is the capital of France?"), gp);
    REQUIRE(r.ok());
    INFO("answer: " << r->text);
    CHECK(r->text.find("Paris") != std::string::npos);
    CHECK(streamed == r->text);
}

TEST_CASE("SmolLM2 perplexity of the first 2048 tokens of worked.txt is below 40", "[smollm2]") {
    auto file = test::shared_data_dir() / "niah/paul_graham_essays/PaulGrahamEssays/worked.txt";
    std::ifstream in(file);
    REQUIRE(in.good());
    std::stringstream ss;
    ss << in.rdbuf();
    auto tokens = real_model().tokenizer().encode(ss.str());
    REQUIRE(tokens.ok());
    REQUIRE(tokens->size() > 2048);
    auto ctx = Context::create(real_model(), {.n_ctx = 2048, .n_threads = 2});
    REQUIRE(ctx.ok());
    auto r = perplexity(*ctx, *tokens, 2048, 1);
    REQUIRE(r.ok());
    WARN("perplexity(worked.txt, first 2048 tokens) = " << r->perplexity);
    CHECK(r->n_scored == 2047);
    CHECK(std::isfinite(r->perplexity));
    CHECK(r->perplexity > 1.0);
    CHECK(r->perplexity < 40.0);
}

TEST_CASE("SmolLM2 generation controls: seed, stop string, cancel, context limit", "[smollm2]") {
    auto prompt = chat("List three colors.");
    auto run = [&](GenerateParams gp, int32_t n_ctx = 256) {
        auto ctx = Context::create(real_model(), {.n_ctx = n_ctx, .n_threads = 2});
        REQUIRE(ctx.ok());
        auto r = generate(*ctx, prompt, gp);
        REQUIRE(r.ok());
        return std::move(r).value();
    };
    GenerateParams sampled;
    sampled.max_tokens = 16;
    sampled.sampler.temperature = 0.9f;
    sampled.sampler.seed = 11;
    auto a = run(sampled), b = run(sampled);
    CHECK(a.tokens == b.tokens);  // same seed, same output

    GenerateParams greedy;
    greedy.max_tokens = 24;
    auto g = run(greedy);
    INFO("greedy answer: " << g.text);
    REQUIRE(g.text.find('\n') != std::string::npos);
    GenerateParams stopping = greedy;
    stopping.stop = {"\n"};
    auto s = run(stopping);
    CHECK(s.stop_reason == StopReason::StopString);
    CHECK(s.text == g.text.substr(0, g.text.find('\n')));

    GenerateParams cancel = greedy;
    int calls = 0;
    cancel.on_text = [&](std::string_view) { return ++calls < 2; };
    auto c = run(cancel);
    CHECK(c.stop_reason == StopReason::Cancelled);
    CHECK(calls == 2);

    auto full = run(greedy, static_cast<int32_t>(prompt.size()) + 3);
    CHECK(full.stop_reason == StopReason::ContextFull);
    CHECK(full.tokens.size() == 4);
}
