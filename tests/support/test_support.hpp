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
// Paul Graham's essays from the shared data (sorted by file name, joined by blank lines); with
// `min_bytes` > 0, only the first essays that make at least that many bytes.
std::string essays_text(size_t min_bytes = 0);
// A fresh empty directory under the system temp dir, unique per call.
std::filesystem::path make_temp_dir(const std::string& tag);

// The attnrag command-line binary, which sits beside the test programs (build/bin).
std::filesystem::path cli_path();

struct CliRun {
    int code = -1;    // exit status (-1: did not exit normally)
    std::string out;  // stdout, and stderr too when asked for
};
// Runs `attnrag ARGS` through the shell (ARGS is quoted by the caller) with ATTNRAG_MODEL set to
// model_path(); stderr is captured (interleaved with stdout) when `with_stderr`, else discarded.
CliRun run_cli(const std::string& args, bool with_stderr = false);

}  // namespace attnrag::test
