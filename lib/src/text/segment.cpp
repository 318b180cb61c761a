// Sentence, word and paragraph segmentation: ICU BreakIterators run over the UTF-8 via UText.
#include "text/segment.h"

#include <unicode/brkiter.h>
#include <unicode/locid.h>
#include <unicode/utext.h>

#include <climits>
#include <memory>

#include "text/utf8.h"

namespace attnrag::text {
namespace {

enum class BreakKind { Sentence, Word };

// BreakIterator positions are int32_t, so longer texts are walked in windows ending at a line
// break (a sentence boundary under UAX #29) or, failing that, at a character boundary.
constexpr size_t kMaxWindowBytes = size_t{1} << 30;

size_t window_end(std::string_view text, size_t begin) {
    if (text.size() - begin <= kMaxWindowBytes) return text.size();
    const size_t limit = begin + kMaxWindowBytes;
    const size_t nl = text.rfind('\n', limit - 1);
    if (nl != std::string_view::npos && nl >= begin + kMaxWindowBytes / 2) return nl + 1;
    return detail::floor_char_boundary(text, limit);
}

// Calls on_piece(begin, end) for each piece between consecutive boundaries of text (absolute
// offsets). Returns false if ICU could not build the iterator (nothing was reported).
template <class F>
bool for_each_break(std::string_view text, BreakKind kind, const char* locale, F&& on_piece) {
    UErrorCode status = U_ZERO_ERROR;
    const icu::Locale loc(locale != nullptr ? locale : "");
    std::unique_ptr<icu::BreakIterator> bi(
        kind == BreakKind::Sentence ? icu::BreakIterator::createSentenceInstance(loc, status)
                                    : icu::BreakIterator::createWordInstance(loc, status));
    if (U_FAILURE(status) || !bi) return false;
    size_t base = 0;
    while (base < text.size()) {
        const size_t end = window_end(text, base);
        status = U_ZERO_ERROR;
        UText* ut =
            utext_openUTF8(nullptr, text.data() + base, static_cast<int64_t>(end - base), &status);
        if (U_FAILURE(status)) return false;
        bi->setText(ut, status);
        if (U_FAILURE(status)) {
            utext_close(ut);
            return false;
        }
        int32_t prev = bi->first();
        for (int32_t p = bi->next(); p != icu::BreakIterator::DONE; prev = p, p = bi->next()) {
            on_piece(base + static_cast<size_t>(prev), base + static_cast<size_t>(p));
        }
        // Detach the iterator from ut before closing it.
        bi->setText(icu::UnicodeString());
        utext_close(ut);
        base = end;
    }
    return true;
}

}  // namespace

std::vector<Span> split_sentences(std::string_view text, const char* locale) {
    std::vector<Span> out;
    if (text.empty()) return out;
    const bool ok = for_each_break(text, BreakKind::Sentence, locale, [&](size_t b, size_t e) {
        const Span s = detail::trim_space(text, Span{b, e});
        if (s.begin < s.end) out.push_back(s);
    });
    if (!ok) {  // no ICU data: the whole text is one sentence
        out.clear();
        const Span s = detail::trim_space(text, Span{0, text.size()});
        if (s.begin < s.end) out.push_back(s);
    }
    return out;
}

std::vector<Span> split_paragraphs(std::string_view text) {
    std::vector<Span> out;
    size_t pos = 0;
    size_t para_begin = npos, para_end = 0;
    auto flush = [&] {
        if (para_begin == npos) return;
        const Span s = detail::trim_space(text, Span{para_begin, para_end});
        if (s.begin < s.end) out.push_back(s);
        para_begin = npos;
    };
    while (pos < text.size()) {
        const size_t nl = text.find('\n', pos);
        const size_t line_end = nl == npos ? text.size() : nl;
        bool blank = true;
        for (size_t i = pos; i < line_end && blank; ++i) blank = detail::is_ascii_space(text[i]);
        if (!blank) {
            if (para_begin == npos) para_begin = pos;
            para_end = line_end;
        } else {
            flush();
        }
        pos = nl == npos ? text.size() : nl + 1;
    }
    flush();
    return out;
}

namespace detail {

std::vector<Span> split_words(std::string_view text, const char* locale) {
    std::vector<Span> out;
    if (text.empty()) return out;
    const bool ok = for_each_break(text, BreakKind::Word, locale, [&](size_t b, size_t e) {
        const Span s = trim_space(text, Span{b, e});
        if (s.begin < s.end) out.push_back(s);
    });
    if (ok) return out;
    out.clear();
    size_t i = 0;
    while (i < text.size()) {
        while (i < text.size() && is_ascii_space(text[i])) ++i;
        const size_t b = i;
        while (i < text.size() && !is_ascii_space(text[i])) ++i;
        if (b < i) out.push_back(Span{b, i});
    }
    return out;
}

}  // namespace detail
}  // namespace attnrag::text
