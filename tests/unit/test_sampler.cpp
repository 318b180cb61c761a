// Sampler: greedy, temperature, top-k, top-p, repetition penalty and seeding on fixed logits.
#include <catch2/catch.hpp>

#include <map>
#include <set>

#include "attnrag/sampler.hpp"

using namespace attnrag;

namespace {

std::map<TokenId, int> histogram(SamplerParams p, const std::vector<float>& logits, int n,
                                 const std::vector<TokenId>& history = {}) {
    Sampler s(p);
    std::map<TokenId, int> h;
    for (int i = 0; i < n; ++i) h[s.sample(logits, history)]++;
    return h;
}

}  // namespace

TEST_CASE("greedy picks the largest logit", "[sampler]") {
    Sampler s(SamplerParams{});
    std::vector<float> logits = {0.1f, 3.0f, -1.0f, 2.9f};
    CHECK(s.sample(logits, {}) == 1);
}

TEST_CASE("repetition penalty demotes recent tokens", "[sampler]") {
    SamplerParams p;
    p.repeat_penalty = 1.5f;
    Sampler s(p);
    std::vector<float> logits = {0.1f, 3.0f, -1.0f, 2.9f};
    std::vector<TokenId> history = {1};
    CHECK(s.sample(logits, history) == 3);  // 3.0 / 1.5 = 2.0 < 2.9
    std::vector<TokenId> old = {1, 0, 0, 0};
    p.repeat_last_n = 2;  // token 1 is outside the window
    Sampler s2(p);
    CHECK(s2.sample(logits, old) == 1);
}

TEST_CASE("top-k keeps only the k best tokens", "[sampler]") {
    SamplerParams p;
    p.temperature = 1.0f;
    p.top_k = 2;
    p.top_p = 1.0f;
    std::vector<float> logits = {1.0f, 1.1f, 0.9f, 1.05f};
    auto h = histogram(p, logits, 2000);
    std::set<TokenId> seen;
    for (auto& [t, c] : h) seen.insert(t);
    CHECK(seen == std::set<TokenId>{1, 3});
    CHECK(h[1] > 800);
    CHECK(h[3] > 800);
}

TEST_CASE("top-p keeps the smallest nucleus reaching p", "[sampler]") {
    SamplerParams p;
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 0.5f;
    // Probabilities ~ 0.64, 0.24, 0.09, 0.03: the nucleus for p = 0.5 is token 0 alone.
    std::vector<float> logits = {3.0f, 2.0f, 1.0f, 0.0f};
    auto h = histogram(p, logits, 500);
    CHECK(h.size() == 1);
    CHECK(h[0] == 500);
    p.top_p = 0.8f;  // tokens 0 and 1
    auto h2 = histogram(p, logits, 2000);
    CHECK(h2.size() == 2);
    CHECK(h2[0] > h2[1]);
}

TEST_CASE("temperature sharpens and flattens; seeds reproduce", "[sampler]") {
    std::vector<float> logits = {1.0f, 0.0f};
    SamplerParams cold;
    cold.temperature = 0.1f;
    cold.top_p = 1.0f;
    SamplerParams hot = cold;
    hot.temperature = 10.0f;
    auto hc = histogram(cold, logits, 2000);
    auto hh = histogram(hot, logits, 2000);
    CHECK(hc[0] > 1990);            // p(0) = 1/(1+e^-10)
    CHECK(hh[0] > 900);             // p(0) = 1/(1+e^-0.1) ~ 0.52
    CHECK(hh[0] < 1200);
    SamplerParams a = hot, b = hot;
    a.seed = b.seed = 1234;
    Sampler sa(a), sb(b);
    for (int i = 0; i < 100; ++i) CHECK(sa.sample(logits, {}) == sb.sample(logits, {}));
}
