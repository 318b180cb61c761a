// BERT WordPiece tokenizer: BERT text normalisation, whitespace/punctuation split, greedy pieces.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "attnrag/result.hpp"

namespace attnrag {

// The settings of Hugging Face's BertNormalizer / BertPreTokenizer / WordPiece model (the fields
// of tokenizer.json and tokenizer_config.json of the same names).
struct WordPieceConfig {
    bool clean_text = true;                // drop NUL, U+FFFD and control chars (Cc Cf Cn Co)
    bool tokenize_chinese_chars = true;    // every CJK ideograph is a word of its own
    bool lowercase = true;                 // do_lower_case
    std::optional<bool> strip_accents;     // NFD, then drop Mn; unset: follows `lowercase`
    int32_t max_input_chars_per_word = 100;  // longer words become [UNK]
    std::string continuing_subword_prefix = "##";
    std::string unk_token = "[UNK]";
    std::string cls_token = "[CLS]";
    std::string sep_token = "[SEP]";
    std::string pad_token = "[PAD]";
    std::string mask_token = "[MASK]";
    // The five special tokens' texts in the input become their ids (as Hugging Face's added
    // tokens do: "[SEP]" in a document is the separator, not '[' 'sep' ']').
    bool match_special_tokens = true;
};

// Text -> token ids the way Hugging Face `tokenizers` does for BERT (checked against it in
// tests/unit/test_wordpiece.cpp):
//   1. the special tokens' texts are cut out of the input as their ids;
//   2. clean_text: NUL, U+FFFD and control characters (Unicode Cc, Cf, Cn, Co except \t \n \r)
//      are dropped; tokenize_chinese_chars: CJK ideographs are split out;
//   3. strip_accents: canonical decomposition (NFD) with nonspacing marks (Mn) dropped;
//      lowercase: each code point's full lowercase mapping (no context: Σ -> σ always);
//   4. words are split at White_Space and around each punctuation character (ASCII symbols
//      !-/ :-@ [-` {-~ and Unicode P*);
//   5. each word becomes its longest-match-first pieces ("##" marks a continuation); a word
//      with an unmatched rest, or longer than max_input_chars_per_word, is one [UNK].
// Immutable after construction; safe to share between threads.
class WordPiece {
   public:
    // vocab.txt: one token a line, the line index is the id. The vocabulary must hold the unk,
    // cls and sep tokens; pad and mask are optional (their ids are then -1).
    static Result<WordPiece> load(const std::filesystem::path& vocab_txt,
                                  const WordPieceConfig& config = {});
    // The same from tokens in memory; `name` stands for the file in messages.
    static Result<WordPiece> from_tokens(std::vector<std::string> tokens,
                                         const WordPieceConfig& config = {},
                                         std::string name = "<memory>");

    WordPiece(WordPiece&&) noexcept;
    WordPiece& operator=(WordPiece&&) noexcept;
    ~WordPiece();

    // [CLS] pieces [SEP]. max_tokens > 0 bounds the length including the two specials (the
    // pieces are cut after max_tokens - 2, as `truncation=True, max_length=...` does); it must
    // then be at least 2. 0: no limit. Invalid UTF-8 anywhere in the text: InvalidArgument with
    // the byte offset.
    Result<std::vector<int32_t>> encode(std::string_view text, int32_t max_tokens = 0) const;
    // The pieces alone (no [CLS]/[SEP]), at most max_pieces of them (0: all).
    Result<std::vector<int32_t>> tokenize(std::string_view text, size_t max_pieces = 0) const;
    // tokenize(text).size() without building the list: for budgets (the chunker calls it on
    // every candidate chunk). Never fails: invalid UTF-8 bytes count as U+FFFD, which
    // clean_text drops.
    uint32_t count_tokens(std::string_view text) const;

    int32_t n_vocab() const;
    // Id of a token ("##ing", "[CLS]"), or -1.
    int32_t token_id(std::string_view token) const;
    // The token of an id in [0, n_vocab()); "" outside.
    const std::string& token(int32_t id) const;
    int32_t unk_id() const;
    int32_t cls_id() const;
    int32_t sep_id() const;
    int32_t pad_id() const;  // -1 when the vocabulary has no pad token
    const WordPieceConfig& config() const;

   private:
    struct Impl;
    explicit WordPiece(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace attnrag
