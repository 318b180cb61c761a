// Private UTF-8 helpers for the text component: character boundaries and white-space trimming.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "attnrag/text.hpp"

namespace attnrag::text::detail {

inline bool is_continuation(unsigned char c) {
    return (c & 0xC0) == 0x80;
}

// The next character boundary after pos (< s.size()): skips up to 3 continuation bytes, so a
// valid character is never split and invalid bytes advance one at a time.
inline size_t next_char_boundary(std::string_view s, size_t pos) {
    size_t p = pos + 1;
    for (int i = 0; i < 3 && p < s.size() && is_continuation(static_cast<unsigned char>(s[p]));
         ++i) {
        ++p;
    }
    return p;
}

// The largest character boundary <= pos (pos <= s.size()).
inline size_t floor_char_boundary(std::string_view s, size_t pos) {
    size_t p = pos;
    for (int i = 0;
         i < 3 && p > 0 && p < s.size() && is_continuation(static_cast<unsigned char>(s[p])); ++i) {
        --p;
    }
    return p;
}

inline bool is_ascii_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// [begin, end) shrunk past leading and trailing Unicode White_Space characters.
Span trim_space(std::string_view s, Span span);

// True when [begin, end) holds only Unicode White_Space (or is empty).
bool is_all_space(std::string_view s, Span span);

// s with every invalid UTF-8 sequence replaced by U+FFFD and NUL bytes dropped.
std::string sanitize_utf8(std::string_view s);

}  // namespace attnrag::text::detail
