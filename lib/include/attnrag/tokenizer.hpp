// Byte-level BPE tokenizer built from GGUF metadata, with special tokens and the chat template.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attnrag/gguf.hpp"
#include "attnrag/result.hpp"

namespace attnrag {

using TokenId = int32_t;

struct ChatMessage {
    std::string role;  // "system", "user", "assistant"
    std::string content;
};

// What a Tokenizer is built from: the tokenizer.* GGUF keys, for callers (tools, tests) that
// have a vocabulary without a GGUF file. Errors from from_vocab name the matching GGUF key.
struct TokenizerVocab {
    std::string model = "gpt2";        // tokenizer.ggml.model; only "gpt2" is supported
    std::string pre = "default";       // tokenizer.ggml.pre
    std::vector<std::string> tokens;   // tokenizer.ggml.tokens, in the byte-level alphabet
    std::vector<int32_t> token_types;  // tokenizer.ggml.token_type; empty: all normal (1)
    std::vector<std::string> merges;   // tokenizer.ggml.merges: "left right", by rank
    TokenId bos_id = -1;               // tokenizer.ggml.bos_token_id; -1: none
    TokenId eos_id = -1;               // tokenizer.ggml.eos_token_id
    TokenId unknown_id = -1;           // tokenizer.ggml.unknown_token_id
    TokenId padding_id = -1;           // tokenizer.ggml.padding_token_id
    std::string chat_template;         // tokenizer.chat_template; may be empty
    // Names the model in messages: general.name, else the file name (from_gguf); may be empty.
    std::string model_name;
};

// Immutable after construction; safe to share between threads.
class Tokenizer {
 public:
    // Reads tokenizer.ggml.{model,pre,tokens,token_type,merges,*_token_id}. Supports model
    // "gpt2" (byte-level BPE) with the pre-tokenizers of the llama/qwen2 families
    // (smollm, gpt2, llama-bpe, qwen2, ...); anything else is Unsupported.
    static Result<Tokenizer> from_gguf(const GgufFile& file);
    // The same from a vocabulary in memory (from_gguf reads the keys and calls this).
    static Result<Tokenizer> from_vocab(const TokenizerVocab& vocab);

    Tokenizer(Tokenizer&&) noexcept;
    Tokenizer& operator=(Tokenizer&&) noexcept;
    ~Tokenizer();

    // Text -> ids. Invalid UTF-8 is an InvalidArgument error giving the byte offset.
    // parse_special=false treats "<|im_start|>" etc. as plain text (so decode(encode(s)) == s);
    // true turns the special tokens' texts into their ids.
    Result<std::vector<TokenId>> encode(std::string_view text, bool parse_special = false) const;

    // Ids -> bytes (concatenated pieces; special tokens render as their text).
    std::string decode(std::span<const TokenId> ids) const;
    // The raw bytes of one token (may be an incomplete UTF-8 sequence).
    std::string piece(TokenId id) const;

    int32_t n_vocab() const;
    TokenId bos_id() const;  // -1 if none
    TokenId eos_id() const;
    // End of generation: eos and the chat template's end-of-turn token (<|im_end|>).
    bool is_end_of_generation(TokenId id) const;
    // Control tokens (GGUF token type 3: <|im_start|>, <|endoftext|>, ...).
    bool is_special(TokenId id) const;
    // Id of a token whose piece() is exactly these bytes (" the", "<|im_end|>"), or -1; the
    // lowest id when several are.
    TokenId find_token(std::string_view text) const;

    // tokenizer.chat_template as stored (a Jinja template; empty when the GGUF has none).
    // The tokenizer does not run Jinja; callers recognise the template's family from it.
    const std::string& chat_template() const;
    // The system turn the template inserts when a conversation does not start with a system
    // message, as rendered text with its special tokens ("<|im_start|>system\nYou are ...
    // <|im_end|>\n"); empty when the template has none that attnrag can read.
    const std::string& default_system_turn() const;
    // What messages call the model (TokenizerVocab::model_name); may be empty.
    const std::string& model_name() const;

    // ChatML: <|im_start|>role\ncontent<|im_end|>\n ... and, when add_generation_prompt,
    // <|im_start|>assistant\n, whatever family the model's template is (a caller that must follow
    // the model's own template checks chat_template() first). Message contents are encoded as
    // plain text (never special).
    // template_default_system: when the first message is not a system message, insert
    // default_system_turn() (SmolLM2: "You are a helpful AI assistant named SmolLM, ..."), as
    // Hugging Face's apply_chat_template does. Off by default, as in llama.cpp's built-in
    // ChatML: on SmolLM2-135M the injected persona makes short factual answers less reliable
    // and costs 19 tokens of every prompt.
    Result<std::vector<TokenId>> encode_chat(std::span<const ChatMessage> messages,
                                             bool add_generation_prompt = true,
                                             bool template_default_system = false) const;

 private:
    struct Impl;
    explicit Tokenizer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace attnrag
