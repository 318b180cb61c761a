// libFuzzer target for the GGUF reader: any input must parse or fail cleanly, never crash.
// Build: cmake -DCMAKE_CXX_COMPILER=clang++ -DATTNRAG_FUZZ=ON "-DATTNRAG_SANITIZE=address;undefined",
// or by hand from the repository root:
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -Ilib/include
//     -Ikernels/include tests/fuzz/fuzz_gguf.cpp lib/src/model/gguf_reader.cpp
//     lib/src/common/result.cpp kernels/cpu/types.cpp -o fuzz_gguf
//   ./fuzz_gguf -max_len=4096 corpus/
// Seed corpus: files from GgufWriter::to_bytes() (see tests/unit/test_gguf.cpp).
#include <cstddef>
#include <cstdint>
#include <span>

#include "attnrag/gguf.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    auto r = attnrag::GgufFile::from_bytes(std::span<const uint8_t>(data, size), "fuzz.gguf");
    if (!r.ok()) return 0;
    const attnrag::GgufFile& f = *r;
    // Everything open() accepted must be readable without faults.
    for (const std::string& key : f.keys()) {
        (void)f.value_to_string(key, 16);
        (void)f.get_int(key);
        (void)f.get_float(key);
        (void)f.get_string(key);
        (void)f.get_string_array(key);
        (void)f.get_int_array(key);
        (void)f.get_float_array(key);
    }
    volatile uint8_t sink = 0;
    for (const auto& t : f.tensors()) {
        const uint8_t* p = f.tensor_data(t);
        sink = static_cast<uint8_t>(sink ^ p[0] ^ p[t.n_bytes - 1]);
    }
    (void)sink;
    return 0;
}
