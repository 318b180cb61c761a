#include "real_model.hpp"

#include <catch2/catch.hpp>

#include <optional>

#include "test_support.hpp"

namespace attnrag::test {

const Model& real_model() {
    static std::optional<Model> model;
    if (!model) {
        auto path = model_path();
        if (path.empty()) FAIL("the default model is missing: run ./scripts/setup.sh (or set ATTNRAG_MODEL)");
        auto m = Model::load(path.string());
        if (!m) FAIL(m.error().message);
        model.emplace(std::move(m).value());
    }
    return *model;
}

}  // namespace attnrag::test
