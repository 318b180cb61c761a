// InfiniRetri's tokenized sentence stream: each source sentence tokenized once (with its leading
// separator), sentences longer than a chunk split at spaces.
#pragma once

#include <deque>
#include <optional>

#include "attnrag/pipelines/infiniretri.hpp"

namespace attnrag::pipelines::detail {

// The text a sentence is tokenized with in the prompt: one separator, then the sentence.
std::string_view sentence_separator(const SourceSentence& s);

// Borrows the source and the tokenizer. Single-threaded.
class SentenceTokenReader {
 public:
    SentenceTokenReader(SentenceSource& source, const Tokenizer& tok, int32_t max_tokens)
        : source_(&source), tok_(&tok), max_tokens_(max_tokens) {}

    // The next sentence (ids.size() <= max_tokens), or nullopt at the end of the source.
    Result<std::optional<KeptSentence>> next();

    int64_t n_source_sentences() const { return n_source_sentences_; }
    const std::string& source_name() const { return source_->name(); }

 private:
    Status split_long(const SourceSentence& s);

    SentenceSource* source_;
    const Tokenizer* tok_;
    int32_t max_tokens_;
    std::deque<KeptSentence> queue_;
    int64_t n_source_sentences_ = 0;
};

}  // namespace attnrag::pipelines::detail
