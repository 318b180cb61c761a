// libFuzzer target for the tokenizer: any bytes must encode or fail cleanly; text that encodes
// without unknown tokens must decode back to itself.
// Build: cmake -DCMAKE_CXX_COMPILER=clang++ -DATTNRAG_FUZZ=ON, then
//   ATTNRAG_MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf build/bin/fuzz_tokenizer -max_len=512
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string_view>

#include "attnrag/gguf.hpp"
#include "attnrag/tokenizer.hpp"

namespace {
std::optional<attnrag::Tokenizer> g_tokenizer;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    const char* path = std::getenv("ATTNRAG_MODEL");
    auto file = attnrag::GgufFile::open(path ? path : "models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if (!file) {
        std::fprintf(stderr, "fuzz_tokenizer: %s\n", file.error().message.c_str());
        std::abort();
    }
    auto tok = attnrag::Tokenizer::from_gguf(*file);
    if (!tok) std::abort();
    g_tokenizer.emplace(std::move(tok).value());
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    const attnrag::Tokenizer& tk = *g_tokenizer;
    auto special = tk.encode(text, true);
    auto plain = tk.encode(text, false);
    if (special.ok() != plain.ok()) std::abort();  // validity does not depend on special parsing
    if (!plain.ok()) return 0;
    for (attnrag::TokenId id : *plain) {
        if (id < 0 || id >= tk.n_vocab()) std::abort();
        if (id == 0) return 0;  // a byte the vocabulary cannot express: no round trip
    }
    if (tk.decode(*plain) != text) std::abort();
    return 0;
}
