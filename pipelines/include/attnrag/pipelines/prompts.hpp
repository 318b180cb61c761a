// Chat prompts in the model family's own format, ChatML (SmolLM2, Qwen2.5) or Llama 3 headers,
// recognised from the GGUF's tokenizer.chat_template: the pieces the pipelines put around their
// texts, and whole conversations.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attnrag/result.hpp"
#include "attnrag/tokenizer.hpp"

namespace attnrag::pipelines {

enum class ChatFamily {
    ChatML,  // <|im_start|>role\ncontent<|im_end|>\n ... <|im_start|>assistant\n
    Llama3,  // <|begin_of_text|><|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
};

// How one model writes its chat prompts. Template texts are rendered with their special tokens;
// every text a caller passes (system message, message contents) is encoded as plain text, so a
// document holding "<|im_end|>" cannot end a turn. Borrows the tokenizer, which must outlive it;
// immutable, safe to share between threads.
class ChatFormat {
 public:
    // ChatML when the template holds <|im_start|>, or is empty while the vocabulary has
    // <|im_start|> and <|im_end|>; Llama3 when it holds <|start_header_id|>. Any other template,
    // or one whose special tokens the vocabulary lacks: Unsupported, naming the model.
    static Result<ChatFormat> detect(const Tokenizer& tok);

    ChatFamily family() const { return family_; }
    // The system turn (rendered text) that a conversation without a system message gets; empty:
    // none. It is the template's default system turn (Tokenizer::default_system_turn) except
    // SmolLM2's persona, which is left out (see prompts.cpp for why).
    const std::string& default_system() const { return default_system_; }

    // The start of a prompt up to where the user's text goes: a system turn holding `system`
    // (even an empty one) or, without it, default_system() if any; then the opening of the user
    // turn. Llama3 starts with <|begin_of_text|> when the vocabulary has it.
    Result<std::vector<TokenId>> open_user_turn(
        std::optional<std::string_view> system = std::nullopt) const;
    // The end of the user turn and the assistant's generation prompt: the answer's first token
    // comes next.
    const std::vector<TokenId>& close_user_turn() const { return close_user_; }
    // A whole conversation, default_system() first when messages[0] is not a system message,
    // and the generation prompt when add_generation_prompt. Llama3 trims each content's
    // surrounding whitespace, as its template does.
    Result<std::vector<TokenId>> encode_chat(std::span<const ChatMessage> messages,
                                             bool add_generation_prompt = true) const;

 private:
    struct Marks {                // special token ids of the family; -1 where the family has none
        TokenId begin = -1;       // <|begin_of_text|> (Llama3, where the vocabulary has it)
        TokenId turn_start = -1;  // <|im_start|> / <|start_header_id|>
        TokenId role_end = -1;    // <|end_header_id|> (Llama3)
        TokenId turn_end = -1;    // <|im_end|> / <|eot_id|>
    };
    class Writer;  // prompts.cpp
    ChatFormat(const Tokenizer& tok, ChatFamily family, Marks marks);
    void begin(Writer& w) const;
    void open_turn(Writer& w, std::string_view role) const;
    void content(Writer& w, std::string_view text) const;
    void close_turn(Writer& w) const;

    const Tokenizer* tok_;
    ChatFamily family_;
    Marks marks_;
    std::string default_system_;
    std::vector<TokenId> close_user_;
};

}  // namespace attnrag::pipelines
