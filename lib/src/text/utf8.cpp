// UTF-8 validation, sanitizing and white-space trimming on UTF-8 byte spans.
#include "text/utf8.h"

#include <unicode/uchar.h>
#include <unicode/utf8.h>

#include <cstring>

namespace attnrag::text {

size_t find_invalid_utf8(std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const size_t n = s.size();
    size_t i = 0;
    while (i < n) {
        // ASCII fast path, 8 bytes at a time.
        if (i + 8 <= n) {
            uint64_t w;
            std::memcpy(&w, p + i, 8);
            if ((w & 0x8080808080808080ull) == 0) {
                i += 8;
                continue;
            }
        }
        const unsigned char c = p[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        size_t len = 0;
        unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;  // overlong
            if (c == 0xED) hi = 0x9F;  // surrogates U+D800..DFFF
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;  // overlong
            if (c == 0xF4) hi = 0x8F;  // > U+10FFFF
        } else {
            return i;  // continuation byte, C0/C1 overlong lead, or F5..FF
        }
        if (i + len > n) return i;
        if (p[i + 1] < lo || p[i + 1] > hi) return i;
        for (size_t k = 2; k < len; ++k) {
            if (!detail::is_continuation(p[i + k])) return i;
        }
        i += len;
    }
    return npos;
}

namespace detail {

namespace {

// The code point starting at byte i (advancing i), or U+FFFD for an invalid sequence.
UChar32 next_code_point(std::string_view s, size_t& i) {
    UChar32 c;
    int32_t pos = 0;
    const auto* p = reinterpret_cast<const uint8_t*>(s.data() + i);
    const auto avail = static_cast<int32_t>(std::min<size_t>(s.size() - i, 4));
    U8_NEXT(p, pos, avail, c);
    i += static_cast<size_t>(pos);
    return c < 0 ? 0xFFFD : c;
}

bool is_space_cp(UChar32 c) {
    if (c < 0x80) return is_ascii_space(static_cast<char>(c));
    return u_isUWhiteSpace(c) != 0;
}

}  // namespace

Span trim_space(std::string_view s, Span span) {
    size_t b = span.begin, e = span.end;
    while (b < e) {
        size_t i = b;
        if (!is_space_cp(next_code_point(s.substr(0, e), i))) break;
        b = i;
    }
    while (e > b) {
        size_t start = e - 1;
        while (start > b && e - start < 4 &&
               is_continuation(static_cast<unsigned char>(s[start]))) {
            --start;
        }
        size_t i = start;
        const UChar32 c = next_code_point(s.substr(0, e), i);
        if (i != e || !is_space_cp(c)) break;  // an invalid tail is not space
        e = start;
    }
    return Span{b, e};
}

bool is_all_space(std::string_view s, Span span) {
    const Span t = trim_space(s, span);
    return t.begin == t.end;
}

std::string sanitize_utf8(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    size_t i = 0;
    while (i < s.size()) {
        const size_t bad = find_invalid_utf8(s.substr(i));
        const size_t good_end = bad == npos ? s.size() : i + bad;
        for (size_t k = i; k < good_end; ++k) {
            if (s[k] != '\0') out.push_back(s[k]);
        }
        if (bad == npos) break;
        out += "\xEF\xBF\xBD";
        i = next_char_boundary(s, good_end);
        // Skip the rest of a truncated sequence (bytes that cannot start a character).
        while (i < s.size() && is_continuation(static_cast<unsigned char>(s[i]))) ++i;
    }
    return out;
}

}  // namespace detail
}  // namespace attnrag::text
