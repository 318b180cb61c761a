// Plain user text -> a safe FTS5 query: quoted terms OR-joined (bag-of-words BM25).
#include "store/fts_query.h"

#include <algorithm>
#include <array>
#include <unordered_set>

namespace attnrag::detail {

namespace {

// Lucene's EnglishAnalyzer stop set, which Anserini's BM25 (the BEIR baseline) uses.
constexpr std::array<std::string_view, 33> kStopwords = {
    "a",   "an",    "and",  "are",   "as",    "at",   "be",   "but", "by",  "for",  "if",
    "in",  "into",  "is",   "it",    "no",    "not",  "of",   "on",  "or",  "such", "that",
    "the", "their", "then", "there", "these", "they", "this", "to",  "was", "will", "with"};

bool is_stopword(std::string_view term) {
    return std::find(kStopwords.begin(), kStopwords.end(), term) != kStopwords.end();
}

bool is_term_byte(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}

}  // namespace

std::vector<std::string> fts5_query_terms(std::string_view text) {
    std::vector<std::string> terms;
    std::unordered_set<std::string> seen;
    size_t i = 0;
    while (i < text.size() && terms.size() < kMaxQueryTerms) {
        while (i < text.size() && !is_term_byte(static_cast<unsigned char>(text[i]))) ++i;
        size_t j = i;
        while (j < text.size() && is_term_byte(static_cast<unsigned char>(text[j]))) ++j;
        if (j > i) {
            std::string term(text.substr(i, j - i));
            for (char& c : term)
                if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
            if (!is_stopword(term) && seen.insert(term).second) terms.push_back(std::move(term));
        }
        i = j;
    }
    return terms;
}

std::string fts5_or_query(std::string_view text) {
    std::string query;
    for (const std::string& term : fts5_query_terms(text)) {
        if (!query.empty()) query += " OR ";
        query += '"';
        // Terms hold no ASCII punctuation, so no '"' to double; non-ASCII bytes are inert inside
        // an FTS5 string.
        query += term;
        query += '"';
    }
    return query;
}

}  // namespace attnrag::detail
