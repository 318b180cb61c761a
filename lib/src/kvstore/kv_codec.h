// Passage KV file format internals shared by the codec and the store: limits, key checks, hex.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "attnrag/kv_store.hpp"
#include "attnrag/result.hpp"

namespace attnrag::detail {

// Bounds on header fields, far above any real model, so sizes are computed without overflow:
// n_layer * n_tokens * row bytes <= 2^12 * 2^24 * 2^22 < 2^64.
inline constexpr uint32_t kKvMaxModelBytes = 255;  // also a file name component: NAME_MAX
inline constexpr int32_t kKvMaxLayers = 1 << 12;
inline constexpr int32_t kKvMaxTokens = 1 << 24;
inline constexpr int32_t kKvMaxDim = 1 << 20;

// InvalidArgument unless kv is consistent, its sizes are within the bounds above and key.model
// is 1..kKvMaxModelBytes bytes: what encode_passage_kv requires.
Status check_encodable(const PassageKvKey& key, const PassageKv& kv);

// 16 lowercase hex digits.
std::string kv_hex16(uint64_t v);

}  // namespace attnrag::detail
