// Private segmentation helpers shared by the chunker.
#pragma once

#include <string_view>
#include <vector>

#include "attnrag/text.hpp"

namespace attnrag::text::detail {

// Words per ICU's word BreakIterator: the non-white-space segments between word boundaries
// (words, numbers, punctuation, CJK words), as spans relative to text. Falls back to splitting
// at ASCII white space if ICU cannot build the iterator.
std::vector<Span> split_words(std::string_view text, const char* locale = "en");

}  // namespace attnrag::text::detail
