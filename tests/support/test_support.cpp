// Shared helpers for tests: paths to the real model and the shared data, temp dirs.
#include "test_support.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <vector>

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

std::string essays_text(size_t min_bytes) {
    const auto dir = shared_data_dir() / "niah" / "paul_graham_essays" / "PaulGrahamEssays";
    std::vector<std::filesystem::path> files;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
        if (e.path().extension() == ".txt") files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    std::string text;
    for (const auto& f : files) {
        if (min_bytes > 0 && text.size() >= min_bytes) break;
        if (!text.empty()) text += "\n\n";
        std::ifstream in(f, std::ios::binary);
        text.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    REQUIRE(text.size() >= min_bytes);
    return text;
}

std::filesystem::path cli_path() {
    return std::filesystem::read_symlink("/proc/self/exe").parent_path() / "attnrag";
}

CliRun run_cli(const std::string& args, bool with_stderr) {
    // The CLI runs on the tests' model (SmolLM2 unless $ATTNRAG_MODEL says otherwise), not on the
    // CLI's default, which is the quality model where it is installed; --model in args wins.
    const std::string model = model_path().string();
    const std::string env = model.empty() ? "" : "ATTNRAG_MODEL='" + model + "' ";
    const std::string cmd =
        env + cli_path().string() + " " + args + (with_stderr ? " 2>&1" : " 2>/dev/null");
    CliRun r;
    FILE* p = ::popen(cmd.c_str(), "r");
    REQUIRE(p != nullptr);
    std::array<char, 4096> buf{};
    size_t n = 0;
    while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
    const int status = ::pclose(p);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

}  // namespace attnrag::test
