// Chat prompts in the model family's own format (ChatML or Llama 3 headers), recognised from
// tokenizer.chat_template and rendered as token ids.
#include "attnrag/pipelines/prompts.hpp"

#include <initializer_list>
#include <utility>

namespace attnrag::pipelines {

namespace {

constexpr std::string_view kWhitespace = " \t\n\r\f\v";

std::string_view trim(std::string_view s) {
    const size_t b = s.find_first_not_of(kWhitespace);
    if (b == std::string_view::npos) return {};
    return s.substr(b, s.find_last_not_of(kWhitespace) + 1 - b);
}

// Id of a control token with exactly this text, or -1.
TokenId special_id(const Tokenizer& tok, std::string_view text) {
    const TokenId id = tok.find_token(text);
    return id >= 0 && tok.is_special(id) ? id : -1;
}

std::string model_label(const Tokenizer& tok) {
    return tok.model_name().empty() ? std::string("(unnamed)") : tok.model_name();
}

// Whether a conversation without a system message gets the template's default system turn.
// Yes, as Hugging Face's apply_chat_template renders it (Qwen2.5 is tuned with its "You are
// Qwen, created by Alibaba Cloud. ..." turn), except SmolLM's persona ("You are a helpful AI
// assistant named SmolLM, ..."): on SmolLM2-135M it made short factual answers less reliable
// and costs 19 tokens of every prompt, and the pipelines' recorded results are without it.
bool use_default_system(std::string_view turn) {
    return !turn.empty() && turn.find("SmolLM") == std::string_view::npos;
}

}  // namespace

// Token ids of a prompt being written. Plain text between two special tokens is encoded as one
// piece, so that it splits into words exactly as the template's rendered string would. The first
// encoding error is kept and returned by finish().
class ChatFormat::Writer {
 public:
    explicit Writer(const Tokenizer& tok) : tok_(tok) {}

    void special(TokenId id) {
        flush();
        ids_.push_back(id);
    }
    void text(std::string_view s) { pending_ += s; }
    // Template text holding special tokens' texts (a default system turn).
    void template_text(std::string_view s) {
        flush();
        append(tok_.encode(s, true));
    }
    Result<std::vector<TokenId>> finish() {
        flush();
        if (!status_) return status_.error();
        return std::move(ids_);
    }

 private:
    void flush() {
        if (pending_.empty()) return;
        append(tok_.encode(pending_, false));
        pending_.clear();
    }
    void append(Result<std::vector<TokenId>> r) {
        if (!status_) return;
        if (!r) {
            status_ = make_error(r.error().code, "chat prompt: " + r.error().message);
            return;
        }
        ids_.insert(ids_.end(), r->begin(), r->end());
    }

    const Tokenizer& tok_;
    std::vector<TokenId> ids_;
    std::string pending_;
    Status status_;
};

ChatFormat::ChatFormat(const Tokenizer& tok, ChatFamily family, Marks marks)
    : tok_(&tok), family_(family), marks_(marks) {}

Result<ChatFormat> ChatFormat::detect(const Tokenizer& tok) {
    const std::string& tmpl = tok.chat_template();
    const std::string where = "model " + model_label(tok) + ": ";
    // The family's special tokens, all of which the vocabulary must have.
    auto require =
        [&](std::string_view family,
            std::initializer_list<std::pair<std::string_view, TokenId*>> marks) -> Status {
        for (const auto& [text, id] : marks) {
            *id = special_id(tok, text);
            if (*id < 0) {
                return make_error(Errc::Unsupported,
                                  where + "the chat template is " + std::string(family) +
                                      " but the vocabulary has no special token " +
                                      std::string(text));
            }
        }
        return {};
    };
    Marks m;
    ChatFamily family = ChatFamily::ChatML;
    const bool chatml_vocab =
        special_id(tok, "<|im_start|>") >= 0 && special_id(tok, "<|im_end|>") >= 0;
    if (tmpl.find("<|im_start|>") != std::string::npos || (tmpl.empty() && chatml_vocab)) {
        ATTNRAG_TRY(
            require("ChatML", {{"<|im_start|>", &m.turn_start}, {"<|im_end|>", &m.turn_end}}));
    } else if (tmpl.find("<|start_header_id|>") != std::string::npos) {
        family = ChatFamily::Llama3;
        ATTNRAG_TRY(require("Llama-3", {{"<|start_header_id|>", &m.turn_start},
                                        {"<|end_header_id|>", &m.role_end},
                                        {"<|eot_id|>", &m.turn_end}}));
        m.begin = special_id(tok, "<|begin_of_text|>");
    } else {
        return make_error(
            Errc::Unsupported,
            where + "chat template not recognised (neither ChatML nor Llama-3 headers); " +
                (tmpl.empty() ? "the GGUF has no tokenizer.chat_template and the vocabulary no "
                                "<|im_start|>/<|im_end|> tokens"
                              : "attnrag writes chat prompts only in these two formats"));
    }

    ChatFormat f(tok, family, m);
    // Llama 3 templates have no fixed default system turn (3.1's is dated at render time), and
    // the tokenizer reads only ChatML ones.
    if (family == ChatFamily::ChatML && use_default_system(tok.default_system_turn())) {
        f.default_system_ = tok.default_system_turn();
    }
    Writer w(tok);
    f.close_turn(w);
    f.open_turn(w, "assistant");
    auto close = w.finish();
    if (!close) return close.error();
    f.close_user_ = std::move(close).value();
    return f;
}

void ChatFormat::begin(Writer& w) const {
    if (marks_.begin >= 0) w.special(marks_.begin);
}

void ChatFormat::open_turn(Writer& w, std::string_view role) const {
    w.special(marks_.turn_start);
    w.text(role);
    if (family_ == ChatFamily::Llama3) {
        w.special(marks_.role_end);
        w.text("\n\n");
    } else {
        w.text("\n");
    }
}

void ChatFormat::content(Writer& w, std::string_view text) const {
    w.text(family_ == ChatFamily::Llama3 ? trim(text) : text);
}

void ChatFormat::close_turn(Writer& w) const {
    w.special(marks_.turn_end);
    if (family_ == ChatFamily::ChatML) w.text("\n");
}

Result<std::vector<TokenId>> ChatFormat::open_user_turn(
    std::optional<std::string_view> system) const {
    Writer w(*tok_);
    begin(w);
    if (system) {
        open_turn(w, "system");
        content(w, *system);
        close_turn(w);
    } else if (!default_system_.empty()) {
        w.template_text(default_system_);
    }
    open_turn(w, "user");
    return w.finish();
}

Result<std::vector<TokenId>> ChatFormat::encode_chat(std::span<const ChatMessage> messages,
                                                     bool add_generation_prompt) const {
    Writer w(*tok_);
    begin(w);
    for (size_t i = 0; i < messages.size(); ++i) {
        const ChatMessage& m = messages[i];
        if (i == 0 && m.role != "system" && !default_system_.empty()) {
            w.template_text(default_system_);
        }
        open_turn(w, m.role);
        content(w, m.content);
        close_turn(w);
    }
    if (add_generation_prompt) open_turn(w, "assistant");
    return w.finish();
}

}  // namespace attnrag::pipelines
