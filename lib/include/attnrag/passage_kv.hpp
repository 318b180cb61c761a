// One passage's KV state, taken out of a Context to be spliced into others (DESIGN.md §3 "KV
// splice"). Keys are kept as encoded, rotated for positions encoded_position + i; splicing at
// another position rotates them by the difference (RoPE angles add), and splicing where they were
// encoded copies them bit for bit. (Rotating back to "no rotation" and forward again would cost
// a second rounding, which a quantized model's int8 activations can amplify.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "attnrag/tokenizer.hpp"

namespace attnrag {

struct PassageKv {
    int32_t n_layer = 0;
    int32_t n_tokens = 0;
    int32_t kv_dim = 0;            // n_head_kv * head_dim
    int32_t encoded_position = 0;  // position id of the first token when it was encoded
    std::vector<TokenId> tokens;   // [n_tokens]
    // [n_layer][n_tokens][kv_dim] f32: keys after RoPE at their encoded positions; values.
    std::vector<float> k, v;

    size_t layer_floats() const { return static_cast<size_t>(n_tokens) * static_cast<size_t>(kv_dim); }
    std::span<float> k_layer(int32_t layer) { return {k.data() + static_cast<size_t>(layer) * layer_floats(), layer_floats()}; }
    std::span<float> v_layer(int32_t layer) { return {v.data() + static_cast<size_t>(layer) * layer_floats(), layer_floats()}; }
    std::span<const float> k_layer(int32_t layer) const {
        return {k.data() + static_cast<size_t>(layer) * layer_floats(), layer_floats()};
    }
    std::span<const float> v_layer(int32_t layer) const {
        return {v.data() + static_cast<size_t>(layer) * layer_floats(), layer_floats()};
    }
    // Resident size of this object (tokens + keys + values), what a memory budget counts.
    size_t bytes() const { return tokens.size() * sizeof(TokenId) + (k.size() + v.size()) * sizeof(float); }
    // True when the sizes agree with each other (a loaded or deserialised state must).
    bool consistent() const {
        const size_t n = static_cast<size_t>(n_layer) * layer_floats();
        return n_layer > 0 && n_tokens > 0 && kv_dim > 0 && tokens.size() == static_cast<size_t>(n_tokens) &&
               k.size() == n && v.size() == n;
    }
};

// 64-bit FNV-1a over token ids (little-endian bytes): the passage and prefix parts of a store key.
uint64_t hash_tokens(std::span<const TokenId> tokens);

}  // namespace attnrag
