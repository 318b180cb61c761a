// Plain user text -> a safe FTS5 query: quoted terms OR-joined (bag-of-words BM25).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace attnrag::detail {

// The query's terms: runs of ASCII letters/digits and non-ASCII bytes (the FTS5 tokenizer splits
// those further), ASCII-lowercased, deduplicated in first-seen order, Lucene's English stopwords
// dropped. At most kMaxQueryTerms.
inline constexpr size_t kMaxQueryTerms = 256;
std::vector<std::string> fts5_query_terms(std::string_view text);

// "t1" OR "t2" OR ...; "" when there are no terms. Never an FTS5 syntax error: each term is an
// FTS5 string holding no ASCII punctuation, so operators, quotes, parentheses and * are inert.
std::string fts5_or_query(std::string_view text);

}  // namespace attnrag::detail
