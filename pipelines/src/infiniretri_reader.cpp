// InfiniRetri's tokenized sentence stream: each source sentence tokenized once (with its leading
// separator), sentences longer than a chunk split at spaces.
#include "infiniretri_reader.h"

#include <algorithm>

namespace attnrag::pipelines::detail {

namespace {

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

Result<std::vector<TokenId>> encode_with(const Tokenizer& tok, std::string_view sep,
                                         std::string_view text) {
    std::string s;
    s.reserve(sep.size() + text.size());
    s.append(sep);
    s.append(text);
    return tok.encode(s, false);
}

}  // namespace

std::string_view sentence_separator(const SourceSentence& s) {
    return s.paragraph_start ? "\n\n" : " ";
}

Result<std::optional<KeptSentence>> SentenceTokenReader::next() {
    while (queue_.empty()) {
        auto s = source_->next();
        if (!s) return s.error();
        if (!*s) return std::optional<KeptSentence>{};
        ++n_source_sentences_;
        auto ids = encode_with(*tok_, sentence_separator(**s), (*s)->text);
        if (!ids) return make_error(ids.error().code, source_->name() + ": " + ids.error().message);
        if (static_cast<int64_t>(ids->size()) <= max_tokens_) {
            queue_.push_back(
                {(*s)->begin, (*s)->end, std::move((*s)->text), std::move(ids).value(), 0.0f});
        } else {
            ATTNRAG_TRY(split_long(**s));
        }
    }
    KeptSentence k = std::move(queue_.front());
    queue_.pop_front();
    return std::optional<KeptSentence>{std::move(k)};
}

// Words (maximal runs without ASCII white space) are packed greedily by their token counts
// (byte-level BPE pre-tokenizes at spaces, so the counts nearly add up); each piece is then
// tokenized as a whole and shortened word by word in the rare case it is still too long. A word
// longer than the budget is cut at character boundaries (a token covers at least one byte).
Status SentenceTokenReader::split_long(const SourceSentence& s) {
    const std::string_view text = s.text;
    struct Word {
        size_t begin = 0, end = 0;
        int64_t n_tokens = 0;
    };
    std::vector<Word> words;
    const int64_t budget = std::max<int64_t>(1, max_tokens_ - 1);
    for (size_t i = 0; i < text.size();) {
        while (i < text.size() && is_space(text[i])) ++i;
        const size_t b = i;
        while (i < text.size() && !is_space(text[i])) ++i;
        if (b == i) break;
        auto ids = encode_with(*tok_, " ", text.substr(b, i - b));
        if (!ids) return ids.error();
        const auto n = static_cast<int64_t>(ids->size());
        if (n <= budget) {
            words.push_back({b, i, n});
            continue;
        }
        // Cut at character boundaries into pieces of at most budget - 1 bytes.
        const auto max_bytes = static_cast<size_t>(std::max<int64_t>(1, budget - 1));
        for (size_t p = b; p < i;) {
            size_t e = std::min(i, p + max_bytes);
            while (e > p + 1 && e < i && (static_cast<unsigned char>(text[e]) & 0xC0) == 0x80) --e;
            words.push_back({p, e, static_cast<int64_t>(e - p) + 1});
            p = e;
        }
    }
    size_t w = 0;
    bool first = true;
    while (w < words.size()) {
        size_t last = w;  // words [w, last] form the piece
        int64_t sum = words[w].n_tokens;
        while (last + 1 < words.size() && sum + words[last + 1].n_tokens <= budget)
            sum += words[++last].n_tokens;
        for (;;) {
            const std::string_view piece =
                text.substr(words[w].begin, words[last].end - words[w].begin);
            auto ids = encode_with(*tok_, first ? sentence_separator(s) : " ", piece);
            if (!ids) return ids.error();
            if (static_cast<int64_t>(ids->size()) <= max_tokens_ || last == w) {
                queue_.push_back({s.begin + words[w].begin, s.begin + words[last].end,
                                  std::string(piece), std::move(ids).value(), 0.0f});
                break;
            }
            --last;
        }
        first = false;
        w = last + 1;
    }
    return {};
}

}  // namespace attnrag::pipelines::detail
