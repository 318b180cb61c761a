// Shared helpers for tests: paths to the real model and the shared data, temp dirs.
#include "test_support.hpp"

#include <atomic>
#include <cstdlib>
#include <random>

#include <unistd.h>

namespace attnrag::test {

std::filesystem::path source_dir() {
    if (const char* env = std::getenv("ATTNRAG_SOURCE_DIR")) return env;
    return ATTNRAG_SOURCE_DIR;
}

std::filesystem::path model_path() {
    if (const char* env = std::getenv("ATTNRAG_MODEL")) return env;
    auto p = source_dir() / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf";
    return std::filesystem::exists(p) ? p : std::filesystem::path{};
}

std::filesystem::path shared_data_dir() {
    if (const char* env = std::getenv("ATTNRAG_SHARED_DATA")) return env;
    return source_dir().parent_path() / "shared" / "data";
}

std::filesystem::path make_temp_dir(const std::string& tag) {
    static std::atomic<int> counter{0};
    std::random_device rd;
    auto dir = std::filesystem::temp_directory_path() /
               ("attnrag_" + tag + "_" + std::to_string(::getpid()) + "_" +
                std::to_string(counter++) + "_" + std::to_string(rd() % 100000));
    std::filesystem::create_directories(dir);
    return dir;
}

}  // namespace attnrag::test
