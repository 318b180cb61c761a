// Passage KV helpers shared by the runtime and the passage KV store.
#include "attnrag/passage_kv.hpp"

namespace attnrag {

uint64_t hash_tokens(std::span<const TokenId> tokens) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (TokenId t : tokens) {
        auto u = static_cast<uint32_t>(t);
        for (int b = 0; b < 4; ++b) {
            h ^= (u >> (8 * b)) & 0xffu;
            h *= 0x100000001b3ull;
        }
    }
    return h;
}

}  // namespace attnrag
