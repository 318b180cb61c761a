// Shared helpers for tests: paths to the real model and the shared data, temp dirs.
#pragma once

#include <filesystem>
#include <string>

namespace attnrag::test {

// Repository root.
std::filesystem::path source_dir();
// The default model: $ATTNRAG_MODEL or <repo>/models/SmolLM2-135M-Instruct.Q4_1.gguf.
// Empty when absent (tests needing it then fail with a clear message).
std::filesystem::path model_path();
// ../shared/data beside the repository (or $ATTNRAG_SHARED_DATA).
std::filesystem::path shared_data_dir();
// A fresh empty directory under the system temp dir, unique per call.
std::filesystem::path make_temp_dir(const std::string& tag);

}  // namespace attnrag::test
