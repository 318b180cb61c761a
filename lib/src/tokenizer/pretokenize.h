// Pre-tokenizers: split valid UTF-8 text into the words that byte-level BPE encodes one by one.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

#include "attnrag/result.hpp"

namespace attnrag::detail {

// The split rules of a model family (the GGUF key tokenizer.ggml.pre names them).
enum class PreTokenizer {
    // GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
    Gpt2,
    // SmolLM2 / StarCoder: every \p{N} code point is its own word, then Gpt2 on the rest.
    SmolLM,
    // Llama 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
    //          ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
    Llama3,
    // Qwen2: as Llama3 but \p{N} one code point at a time.
    Qwen2,
};

// Maps a tokenizer.ggml.pre value to its rules; "default" is Gpt2. Unknown names: Unsupported.
Result<PreTokenizer> pre_tokenizer_from_name(std::string_view name);

// Appends to word_ends the end byte offset of every word of text, in order; words are
// contiguous and cover text ([0, word_ends[0]), [word_ends[0], word_ends[1]), ...), so the
// last end is text.size() (nothing is appended for empty text). text must be valid UTF-8.
void pre_tokenize(PreTokenizer kind, std::string_view text, std::vector<size_t>& word_ends);

}  // namespace attnrag::detail
