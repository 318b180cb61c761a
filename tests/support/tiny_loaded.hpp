// A tiny random model written and loaded for an engine test, and the small helpers such tests
// share: deterministic token ids and the relative error of logits against a reference.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <vector>

#include "attnrag/model.hpp"
#include "test_support.hpp"
#include "tiny_model.hpp"

namespace attnrag::test {

struct LoadedTiny {
    TinyModelSpec spec;
    TinyWeights weights;
    Model model;
};

// Writes `spec` as GGUF into a fresh temporary folder named after `tag` and loads it.
inline LoadedTiny load_tiny(const TinyModelSpec& spec, const std::string& tag = "tiny") {
    auto path = (make_temp_dir(tag) / "tiny.gguf").string();
    auto w = write_tiny_model(spec, path);
    auto m = Model::load(path);
    if (!m) FAIL(m.error().message);
    return LoadedTiny{spec, std::move(w), std::move(m).value()};
}

// n token ids in [0, n_vocab), the same for the same seed.
inline std::vector<int32_t> some_tokens(size_t n, int n_vocab, uint32_t seed) {
    std::vector<int32_t> t(n);
    for (size_t i = 0; i < n; ++i) {
        t[i] = static_cast<int32_t>((seed * 2654435761u + i * 40503u) % static_cast<uint32_t>(n_vocab));
    }
    return t;
}

// max |a - b| / max |b|
template <class B>
double rel_err(std::span<const float> a, const B& b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < b.size(); ++i) {
        num = std::max(num, std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
        den = std::max(den, std::fabs(static_cast<double>(b[i])));
    }
    return num / den;
}

}  // namespace attnrag::test
