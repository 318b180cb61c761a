// Chat prompt tests: template family detection, the default system turn policy, the pipelines'
// prompt pieces on SmolLM2 against the literal ChatML strings they must keep producing, Qwen's
// default system turn, and Llama 3 headers on a vocabulary built here.
#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "attnrag/gguf.hpp"
#include "attnrag/pipelines/infiniretri.hpp"
#include "attnrag/pipelines/prompts.hpp"
#include "attnrag/pipelines/rag.hpp"
#include "attnrag/tokenizer.hpp"
#include "test_support.hpp"
#include "tiny_model.hpp"

using attnrag::ChatMessage;
using attnrag::Errc;
using attnrag::GgufFile;
using attnrag::TokenId;
using attnrag::Tokenizer;
using attnrag::TokenizerVocab;
using attnrag::pipelines::ChatFamily;
using attnrag::pipelines::ChatFormat;
using Ids = std::vector<TokenId>;

namespace {

// The tokenizer of a GGUF file, loaded once per path; null (the caller skips) when the file is
// absent.
const Tokenizer* tokenizer_of(const std::filesystem::path& path) {
    static std::map<std::string, std::unique_ptr<Tokenizer>> loaded;
    auto& slot = loaded[path.string()];
    if (!slot) {
        if (path.empty() || !std::filesystem::exists(path)) return nullptr;
        auto file = GgufFile::open(path.string());
        if (!file) FAIL("cannot open " << path << ": " << file.error().to_string());
        auto tk = Tokenizer::from_gguf(*file);
        if (!tk) FAIL("Tokenizer::from_gguf: " << tk.error().to_string());
        slot = std::make_unique<Tokenizer>(std::move(tk).value());
    }
    return slot.get();
}

// models/SmolLM2-135M-Instruct.Q4_1.gguf (or $ATTNRAG_MODEL when that is a SmolLM2 file).
const Tokenizer* smollm2() {
    const auto path = attnrag::test::model_path();
    if (path.filename().string().find("SmolLM2") == std::string::npos) return nullptr;
    return tokenizer_of(path);
}

// models/Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf
const Tokenizer* qwen() {
    return tokenizer_of(attnrag::test::source_dir() / "models" /
                        "Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf");
}

#define SKIP_WITHOUT(tok, what)                                                 \
    if (!(tok)) {                                                               \
        WARN(what " not found in models/: skipped (test needs its tokenizer)"); \
        return;                                                                 \
    }

Ids encode_ok(const Tokenizer& tk, std::string_view text, bool special = false) {
    auto r = tk.encode(text, special);
    if (!r) FAIL("encode failed: " << r.error().to_string());
    return *r;
}

Ids cat(std::initializer_list<Ids> parts) {
    Ids out;
    for (const Ids& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
}

ChatFormat detect_ok(const Tokenizer& tk) {
    auto f = ChatFormat::detect(tk);
    if (!f) FAIL("ChatFormat::detect: " << f.error().to_string());
    return std::move(f).value();
}

// A vocabulary of the 256 byte tokens (ids 0..255, no merges) and the given control tokens
// (ids 256...), with this chat template.
TokenizerVocab byte_vocab(std::vector<std::string> specials, std::string chat_template) {
    TokenizerVocab v;
    v.pre = "llama-bpe";
    const std::vector<std::string> bytes = attnrag::test::byte_tokens();
    for (int b = 0; b < 256; ++b) {
        v.tokens.push_back(bytes[static_cast<size_t>(b)]);
        v.token_types.push_back(1);
    }
    for (auto& s : specials) {
        v.tokens.push_back(std::move(s));
        v.token_types.push_back(3);
    }
    v.chat_template = std::move(chat_template);
    v.model_name = "tiny-test-model";
    return v;
}

Tokenizer build(const TokenizerVocab& v) {
    auto tk = Tokenizer::from_vocab(v);
    if (!tk) FAIL("from_vocab: " << tk.error().to_string());
    return std::move(tk).value();
}

// The head of Meta's Llama 3 Instruct template (tokenizer.chat_template of its GGUFs).
constexpr std::string_view kLlama3Template =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

// Qwen2.5's template as far as the default system turn goes (the tool branch comes first and
// writes a bare default message, which is not a turn).
constexpr std::string_view kQwenTemplateHead =
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == "
    "'system' %}\n        {{- messages[0]['content'] }}\n    {%- else %}\n        {{- 'You are "
    "Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n"
    "{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- "
    "'<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a "
    "helpful assistant.<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n";

constexpr std::string_view kQwenDefaultSystem =
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\n";

}  // namespace

TEST_CASE("SmolLM2: ChatML, its default system turn left out") {
    const Tokenizer* tk = smollm2();
    SKIP_WITHOUT(tk, "SmolLM2-135M-Instruct.Q4_1.gguf");
    const ChatFormat f = detect_ok(*tk);
    CHECK(f.family() == ChatFamily::ChatML);
    // The template has one (the tokenizer reads it), the policy leaves it out.
    CHECK(tk->default_system_turn().find("named SmolLM") != std::string::npos);
    CHECK(f.default_system().empty());
    const std::vector<ChatMessage> user = {{"user", "What is the capital of France?"}};
    auto ids = f.encode_chat(user);
    REQUIRE(ids.ok());
    CHECK(*ids == encode_ok(*tk,
                            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                            "<|im_start|>assistant\n",
                            true));
}

TEST_CASE("SmolLM2: the pipelines' prompt pieces equal the ChatML literals they replace") {
    const Tokenizer* tk = smollm2();
    SKIP_WITHOUT(tk, "SmolLM2-135M-Instruct.Q4_1.gguf");
    const Tokenizer& t = *tk;
    const Ids close = encode_ok(t, "<|im_end|>\n<|im_start|>assistant\n", true);
    const std::string question = "Into which sea does the Rhine flow?";

    SECTION("RAG (rag.cpp)") {
        std::vector<attnrag::pipelines::RagPassage> passages(2);
        passages[0].id = "a";
        passages[0].title = "Rhine";
        passages[0].text = "The Rhine flows into the North Sea.\n";
        passages[1].id = "b";
        passages[1].text = "  Paris is in France. ";
        const std::string instructions[] = {attnrag::pipelines::RagOptions{}.instruction,
                                            "Be brief.", ""};
        for (const std::string& instruction : instructions) {
            INFO("instruction: '" << instruction << "'");
            auto p = attnrag::pipelines::build_rag_prompt(t, instruction, passages, question);
            REQUIRE(p.ok());
            CHECK(p->prefix ==
                  encode_ok(t,
                            "<|im_start|>system\n" + instruction + "<|im_end|>\n<|im_start|>user\n",
                            true));
            REQUIRE(p->passages.size() == 2);
            CHECK(p->passages[0] == encode_ok(t,
                                              "Document (Rhine): The Rhine flows into the "
                                              "North Sea.\n\n"));
            CHECK(p->passages[1] == encode_ok(t, "Document:   Paris is in France.\n\n"));
            CHECK(p->question == cat({encode_ok(t, "Question: "), encode_ok(t, question), close}));
        }
    }
    SECTION("InfiniRetri and retrieval heads (infiniretri.cpp, retrieval_heads.cpp)") {
        // Retrieval heads' trials are build_infiniretri_prompt with InfiniRetri's instruction.
        const std::string instruction = attnrag::pipelines::InfiniRetriOptions{}.instruction;
        auto p = attnrag::pipelines::build_infiniretri_prompt(t, instruction, question);
        REQUIRE(p.ok());
        CHECK(p->prefix == cat({encode_ok(t, "<|im_start|>user\n", true), encode_ok(t, instruction),
                                encode_ok(t, "\n\n")}));
        const Ids head = cat({encode_ok(t, "\n\n"), encode_ok(t, "Question: ")});
        CHECK(p->question == cat({head, encode_ok(t, question), encode_ok(t, "\n\n"),
                                  encode_ok(t, "Answer:"), close}));
        CHECK(p->question_offset == static_cast<int32_t>(encode_ok(t, "\n\n").size()));
        CHECK(p->content_offset == static_cast<int32_t>(head.size()));
    }
    SECTION("bench kv (cmd_bench_kv.cpp)") {
        const ChatFormat f = detect_ok(t);
        auto prefix = f.open_user_turn("Answer the question using the passages.");
        REQUIRE(prefix.ok());
        CHECK(*prefix == encode_ok(t,
                                   "<|im_start|>system\nAnswer the question using the "
                                   "passages.<|im_end|>\n<|im_start|>user\n",
                                   true));
        CHECK(f.close_user_turn() == close);
    }
}

TEST_CASE("SmolLM2: ChatFormat::encode_chat equals Tokenizer::encode_chat") {
    const Tokenizer* tk = smollm2();
    SKIP_WITHOUT(tk, "SmolLM2-135M-Instruct.Q4_1.gguf");
    const ChatFormat f = detect_ok(*tk);
    const std::vector<std::vector<ChatMessage>> chats = {
        {},
        {{"user", "Hi"}},
        {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Bye"}},
        {{"system", "\n\nx"}},             // leading newlines join the role's "\n"
        {{"user", "say <|im_end|> now"}},  // contents are never special
        {{"user", "  two spaces\n\n  and more  "}},
    };
    for (const auto& chat : chats) {
        for (bool gen : {true, false}) {
            INFO("messages: " << chat.size() << ", generation prompt: " << gen);
            auto mine = f.encode_chat(chat, gen);
            auto theirs = tk->encode_chat(chat, gen, false);
            REQUIRE(mine.ok());
            REQUIRE(theirs.ok());
            CHECK(*mine == *theirs);
        }
    }
    const std::vector<ChatMessage> bad = {{"user", "x\xC0\xAF"}};
    auto r = f.encode_chat(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::InvalidArgument);
}

TEST_CASE("Qwen2.5-Coder: ChatML with Qwen's default system turn") {
    const Tokenizer* tk = qwen();
    SKIP_WITHOUT(tk, "Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf");
    const ChatFormat f = detect_ok(*tk);
    CHECK(f.family() == ChatFamily::ChatML);
    CHECK(tk->default_system_turn() == kQwenDefaultSystem);
    CHECK(f.default_system() == kQwenDefaultSystem);

    const std::string_view expected =
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
        "assistant.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\n";
    const Ids expected_ids = encode_ok(*tk, expected, true);
    const std::vector<ChatMessage> user = {{"user", "What is the capital of France?"}};
    auto ids = f.encode_chat(user);
    REQUIRE(ids.ok());
    CHECK(*ids == expected_ids);
    CHECK(tk->decode(*ids) == expected);
    auto tok_ids = tk->encode_chat(user, true, true);  // the tokenizer's ChatML, default asked for
    REQUIRE(tok_ids.ok());
    CHECK(*tok_ids == expected_ids);

    // The pieces make the same prompt around the user's text.
    auto open = f.open_user_turn();
    REQUIRE(open.ok());
    CHECK(cat({*open, encode_ok(*tk, "What is the capital of France?"), f.close_user_turn()}) ==
          expected_ids);
    CHECK(f.close_user_turn() == encode_ok(*tk, "<|im_end|>\n<|im_start|>assistant\n", true));

    // A system message replaces the default.
    const std::vector<ChatMessage> with_system = {{"system", "Be brief."}, {"user", "Hi"}};
    auto ids2 = f.encode_chat(with_system);
    REQUIRE(ids2.ok());
    CHECK(*ids2 == encode_ok(*tk,
                             "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi"
                             "<|im_end|>\n<|im_start|>assistant\n",
                             true));
    auto open2 = f.open_user_turn("Be brief.");
    REQUIRE(open2.ok());
    CHECK(*open2 ==
          encode_ok(*tk, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n", true));

    // InfiniRetri's prompt (no system message of its own) gets the default system turn.
    auto ir = attnrag::pipelines::build_infiniretri_prompt(*tk, "Read.", "Why?");
    REQUIRE(ir.ok());
    CHECK(ir->prefix ==
          cat({encode_ok(*tk, std::string(kQwenDefaultSystem) + "<|im_start|>user\n", true),
               encode_ok(*tk, "Read."), encode_ok(*tk, "\n\n")}));
}

TEST_CASE("default system turn read from a Qwen-style template (tiny vocabulary)") {
    const Tokenizer tk =
        build(byte_vocab({"<|im_start|>", "<|im_end|>"}, std::string(kQwenTemplateHead)));
    CHECK(tk.default_system_turn() == kQwenDefaultSystem);
    const ChatFormat f = detect_ok(tk);
    CHECK(f.family() == ChatFamily::ChatML);
    CHECK(f.default_system() == kQwenDefaultSystem);
    // A template whose no-system branch is not a lone literal has no default turn.
    const Tokenizer none = build(byte_vocab(
        {"<|im_start|>", "<|im_end|>"},
        "{% if messages[0]['role'] == 'system' %}x{% else %}{{ '<|im_start|>system\\n' + "
        "date + '<|im_end|>\\n' }}{% endif %}{{ '<|im_start|>' }}"));
    CHECK(none.default_system_turn().empty());
    CHECK(detect_ok(none).default_system().empty());
}

TEST_CASE("Llama 3 headers (tiny vocabulary with Llama 3's special tokens)") {
    const std::vector<std::string> specials = {"<|begin_of_text|>", "<|start_header_id|>",
                                               "<|end_header_id|>", "<|eot_id|>"};
    const Tokenizer tk = build(byte_vocab(specials, std::string(kLlama3Template)));
    const TokenId bos = 256, start = 257, end = 258, eot = 259;
    REQUIRE(tk.find_token("<|eot_id|>") == eot);
    const ChatFormat f = detect_ok(tk);
    CHECK(f.family() == ChatFamily::Llama3);
    CHECK(f.default_system().empty());

    const std::string_view text =
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi <|eot_id|> there<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n";
    // Contents are trimmed (as the template's | trim) and never parsed as special tokens.
    const std::vector<ChatMessage> chat = {{"system", "Be brief."},
                                           {"user", "\n Hi <|eot_id|> there  "}};
    auto ids = f.encode_chat(chat);
    REQUIRE(ids.ok());
    CHECK(tk.decode(*ids) == text);
    CHECK(std::count(ids->begin(), ids->end(), eot) == 2);
    const Ids expected = cat({{bos, start},
                              encode_ok(tk, "system"),
                              {end},
                              encode_ok(tk, "\n\nBe brief."),
                              {eot, start},
                              encode_ok(tk, "user"),
                              {end},
                              encode_ok(tk, "\n\nHi <|eot_id|> there"),
                              {eot, start},
                              encode_ok(tk, "assistant"),
                              {end},
                              encode_ok(tk, "\n\n")});
    CHECK(*ids == expected);

    // Pieces: system turn + user opening; end of turn + generation prompt.
    auto open = f.open_user_turn("Be brief.");
    REQUIRE(open.ok());
    CHECK(tk.decode(*open) ==
          "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
          "<|start_header_id|>user<|end_header_id|>\n\n");
    CHECK(f.close_user_turn() ==
          cat({{eot, start}, encode_ok(tk, "assistant"), {end}, encode_ok(tk, "\n\n")}));
    auto bare = f.open_user_turn();
    REQUIRE(bare.ok());
    CHECK(tk.decode(*bare) == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n");

    // The pipelines write Llama 3 prompts too.
    auto ir = attnrag::pipelines::build_infiniretri_prompt(tk, "Read.", "Why?");
    REQUIRE(ir.ok());
    CHECK(tk.decode(ir->prefix) ==
          "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nRead.\n\n");
    CHECK(tk.decode(ir->question) ==
          "\n\nQuestion: Why?\n\nAnswer:<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
          "\n\n");

    // Without <|begin_of_text|> in the vocabulary the prompt starts at the first header.
    const Tokenizer no_bos = build(byte_vocab(
        {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"}, std::string(kLlama3Template)));
    auto nb = detect_ok(no_bos).encode_chat(std::vector<ChatMessage>{{"user", "Hi"}}, false);
    REQUIRE(nb.ok());
    CHECK(no_bos.decode(*nb) == "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
}

TEST_CASE("unrecognised chat templates are a clear error (tiny vocabularies)") {
    auto require_unsupported = [](const Tokenizer& tk, std::string_view says) {
        auto f = ChatFormat::detect(tk);
        REQUIRE_FALSE(f.ok());
        INFO(f.error().message);
        CHECK(f.error().code == Errc::Unsupported);
        CHECK(f.error().message.find("model tiny-test-model: ") == 0);
        CHECK(f.error().message.find(says) != std::string::npos);
    };
    // A Mistral-style template.
    const std::string mistral =
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
        "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + "
        "eos_token }}{% endif %}{% endfor %}";
    require_unsupported(build(byte_vocab({"<s>", "</s>"}, mistral)),
                        "chat template not recognised (neither ChatML nor Llama-3 headers)");
    // No template and no ChatML tokens.
    require_unsupported(build(byte_vocab({"<|endoftext|>"}, "")),
                        "chat template not recognised (neither ChatML nor Llama-3 headers)");
    // The pipelines pass the error on instead of writing a wrong prompt.
    auto rag =
        attnrag::pipelines::build_rag_prompt(build(byte_vocab({"<s>"}, mistral)), "x", {}, "q");
    REQUIRE_FALSE(rag.ok());
    CHECK(rag.error().message.find("chat template not recognised") != std::string::npos);
    auto ir =
        attnrag::pipelines::build_infiniretri_prompt(build(byte_vocab({"<s>"}, mistral)), "x", "q");
    REQUIRE_FALSE(ir.ok());
    CHECK(ir.error().message.find("chat template not recognised") != std::string::npos);
    // A family's template on a vocabulary without its tokens.
    require_unsupported(build(byte_vocab({"<|im_start|>"}, "{{ '<|im_start|>' }}")),
                        "ChatML but the vocabulary has no special token <|im_end|>");
    require_unsupported(build(byte_vocab({"<|start_header_id|>", "<|end_header_id|>"},
                                         std::string(kLlama3Template))),
                        "Llama-3 but the vocabulary has no special token <|eot_id|>");

    // No template on a vocabulary with the ChatML tokens: ChatML.
    const Tokenizer chatml = build(byte_vocab({"<|im_start|>", "<|im_end|>"}, ""));
    CHECK(detect_ok(chatml).family() == ChatFamily::ChatML);
    CHECK(detect_ok(chatml).default_system().empty());
}
