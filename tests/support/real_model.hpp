// The real default model (SmolLM2-135M-Instruct), loaded once per test program.
#pragma once

#include "attnrag/model.hpp"

namespace attnrag::test {

// Fails the current test when the model file is missing (run ./scripts/setup.sh).
const Model& real_model();

}  // namespace attnrag::test
