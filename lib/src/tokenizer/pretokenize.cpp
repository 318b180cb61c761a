// Pre-tokenizers: the GPT-2 / SmolLM2 / Llama 3 / Qwen2 split regexes as hand-written matchers
// over code points (std::regex has no \p{L} and is far too slow); categories come from ICU.
#include "tokenizer/pretokenize.h"

#include <unicode/uchar.h>

#include <algorithm>
#include <array>
#include <memory>
#include <string>

namespace attnrag::detail {
namespace {

// The character classes the regexes use. \s is Unicode White_Space (what Oniguruma, used by
// Hugging Face tokenizers, matches); \p{L} = Lu|Ll|Lt|Lm|Lo; \p{N} = Nd|Nl|No.
enum Cat : uint8_t { kLetter, kNumber, kSpace, kOther };

uint8_t icu_category(char32_t c) {
    const auto uc = static_cast<UChar32>(c);
    if (u_isUWhiteSpace(uc)) return kSpace;
    switch (u_charType(uc)) {
        case U_UPPERCASE_LETTER:
        case U_LOWERCASE_LETTER:
        case U_TITLECASE_LETTER:
        case U_MODIFIER_LETTER:
        case U_OTHER_LETTER: return kLetter;
        case U_DECIMAL_DIGIT_NUMBER:
        case U_LETTER_NUMBER:
        case U_OTHER_NUMBER: return kNumber;
        default: return kOther;
    }
}

// The Basic Multilingual Plane from a table (most text never leaves it), the rest from ICU.
uint8_t category(char32_t c) {
    static const std::unique_ptr<std::array<uint8_t, 0x10000>> bmp = [] {
        auto t = std::make_unique<std::array<uint8_t, 0x10000>>();
        for (char32_t u = 0; u < 0x10000; ++u) (*t)[u] = icu_category(u);
        return t;
    }();
    return c < 0x10000 ? (*bmp)[c] : icu_category(c);
}

// A block of text decoded: code point i starts at byte off[i] of the whole text; off[n] is
// where the block ends.
struct CodePoints {
    std::vector<char32_t> cp;
    std::vector<uint8_t> cat;
    std::vector<size_t> off;

    size_t size() const { return cp.size(); }
};

// Decodes at most max_cps code points of text from byte begin.
void decode(std::string_view text, size_t begin, size_t max_cps, CodePoints& out) {
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const size_t n = text.size();
    out.cp.clear();
    out.cat.clear();
    out.off.clear();
    size_t i = begin;
    while (i < n && out.cp.size() < max_cps) {
        out.off.push_back(i);
        const unsigned char b = s[i];
        char32_t c;
        // Input is valid UTF-8 (the tokenizer checks it first), so lengths follow the lead byte.
        if (b < 0x80) {
            c = b;
            i += 1;
        } else if (b < 0xE0) {
            c = (char32_t{b & 0x1Fu} << 6) | (s[i + 1] & 0x3Fu);
            i += 2;
        } else if (b < 0xF0) {
            c = (char32_t{b & 0x0Fu} << 12) | (char32_t{s[i + 1] & 0x3Fu} << 6) |
                (s[i + 2] & 0x3Fu);
            i += 3;
        } else {
            c = (char32_t{b & 0x07u} << 18) | (char32_t{s[i + 1] & 0x3Fu} << 12) |
                (char32_t{s[i + 2] & 0x3Fu} << 6) | (s[i + 3] & 0x3Fu);
            i += 4;
        }
        out.cp.push_back(c);
        out.cat.push_back(category(c));
    }
    out.off.push_back(i);
}

// All matchers take the code point range [i, e) (e acts as the end of the text: the
// regexes run on each piece separately) and return the end of the match starting at i.

size_t run_of(const CodePoints& t, size_t i, size_t e, uint8_t cat) {
    while (i < e && t.cat[i] == cat) ++i;
    return i;
}

bool is_cr_lf(char32_t c) {
    return c == U'\r' || c == U'\n';
}

// Case folding as far as the contractions need it: ASCII, and U+017F (long s) folds to 's'.
char32_t fold(char32_t c) {
    if (c >= U'A' && c <= U'Z') return c + 32;
    return c == U'\u017F' ? U's' : c;
}

// 's|'t|'re|'ve|'m|'ll|'d (case-insensitive when fold_case); returns i when no match.
size_t match_contraction(const CodePoints& t, size_t i, size_t e, bool fold_case) {
    if (t.cp[i] != U'\'' || i + 1 >= e) return i;
    auto at = [&](size_t k) { return fold_case ? fold(t.cp[k]) : t.cp[k]; };
    const char32_t a = at(i + 1);
    if (a == U's' || a == U't' || a == U'm' || a == U'd') return i + 2;
    if (i + 2 < e) {
        const char32_t b = at(i + 2);
        if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') || (a == U'l' && b == U'l')) {
            return i + 3;
        }
    }
    return i;
}

// \s+(?!\S)|\s+ at a whitespace code point: a run followed by text leaves its last code
// point to start the next word (so " word" keeps its space).
size_t match_trailing_space(const CodePoints& t, size_t i, size_t e) {
    const size_t r = run_of(t, i, e, kSpace);
    if (r == e) return e;
    return r - i >= 2 ? r - 1 : i + 1;
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
size_t match_gpt2(const CodePoints& t, size_t i, size_t e) {
    if (size_t k = match_contraction(t, i, e, false); k != i) return k;
    size_t k = i;
    if (t.cp[i] == U' ' && i + 1 < e && t.cat[i + 1] != kSpace) k = i + 1;  // " ?"
    if (t.cat[k] != kSpace) return run_of(t, k, e, t.cat[k]);
    return match_trailing_space(t, i, e);
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
//  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
size_t match_llama3(const CodePoints& t, size_t i, size_t e, size_t max_digits) {
    if (size_t k = match_contraction(t, i, e, true); k != i) return k;
    const uint8_t cat = t.cat[i];
    if (cat == kLetter) return run_of(t, i, e, kLetter);
    if (cat != kNumber && !is_cr_lf(t.cp[i]) && i + 1 < e && t.cat[i + 1] == kLetter) {
        return run_of(t, i + 1, e, kLetter);
    }
    if (cat == kNumber) return run_of(t, i, std::min(e, i + max_digits), kNumber);
    size_t k = i;
    if (t.cp[i] == U' ' && i + 1 < e && t.cat[i + 1] == kOther) k = i + 1;  // " ?"
    if (t.cat[k] == kOther) {
        size_t end = run_of(t, k, e, kOther);
        while (end < e && is_cr_lf(t.cp[end])) ++end;
        return end;
    }
    // A whitespace run: up to its last \r or \n if it has one (\s*[\r\n]+).
    const size_t r = run_of(t, i, e, kSpace);
    for (size_t m = r; m > i; --m) {
        if (is_cr_lf(t.cp[m - 1])) return m;
    }
    return match_trailing_space(t, i, e);
}

// Where a block is not the end of the text, a word is only taken when its match cannot depend
// on code points past the block: the matchers look at most two code points beyond a match's
// end, except \s*[\r\n]+, which looks to the end of its whitespace run.
constexpr size_t kMargin = 4;

// Splits [b, e) into words; e is the real end of the piece when final. Returns where it
// stopped: e, or the start of the first word left to the next block.
template <class Match>
size_t split(const CodePoints& t, size_t b, size_t e, bool final, Match match,
             std::vector<size_t>& ends) {
    while (b < e) {
        if (!final && t.cat[b] == kSpace && run_of(t, b, e, kSpace) + kMargin > e) return b;
        const size_t j = match(b, e);
        if (!final && j + kMargin > e) return b;
        ends.push_back(t.off[j]);
        b = j;
    }
    return e;
}

// Splits one block; last: the block reaches the end of the text. Returns the number of code
// points whose words are complete.
size_t split_block(PreTokenizer kind, const CodePoints& t, bool last, std::vector<size_t>& ends) {
    const size_t n = t.size();
    switch (kind) {
        case PreTokenizer::Gpt2:
            return split(
                t, 0, n, last, [&](size_t i, size_t e) { return match_gpt2(t, i, e); }, ends);
        case PreTokenizer::SmolLM: {
            // Digits(individual_digits=true) first: each \p{N} is a word and the pieces between
            // them go through the GPT-2 regex on their own.
            size_t b = 0;
            while (b < n) {
                if (t.cat[b] == kNumber) {
                    ends.push_back(t.off[++b]);
                    continue;
                }
                size_t e = b;
                while (e < n && t.cat[e] != kNumber) ++e;
                const size_t stop = split(
                    t, b, e, last || e < n,
                    [&](size_t i, size_t end) { return match_gpt2(t, i, end); }, ends);
                if (stop < e) return stop;
                b = e;
            }
            return n;
        }
        case PreTokenizer::Llama3:
            return split(
                t, 0, n, last, [&](size_t i, size_t e) { return match_llama3(t, i, e, 3); }, ends);
        case PreTokenizer::Qwen2:
            return split(
                t, 0, n, last, [&](size_t i, size_t e) { return match_llama3(t, i, e, 1); }, ends);
    }
    return n;
}

}  // namespace

Result<PreTokenizer> pre_tokenizer_from_name(std::string_view name) {
    if (name == "default" || name == "gpt2") return PreTokenizer::Gpt2;
    // Families whose tokenizer.json is Digits(individual) + the GPT-2 ByteLevel regex.
    if (name == "smollm" || name == "starcoder" || name == "refact" || name == "codeshell") {
        return PreTokenizer::SmolLM;
    }
    if (name == "llama-bpe" || name == "llama3" || name == "dbrx" || name == "smaug-bpe") {
        return PreTokenizer::Llama3;
    }
    if (name == "qwen2" || name == "stablelm2") return PreTokenizer::Qwen2;
    return make_error(Errc::Unsupported,
                      "tokenizer.ggml.pre: unsupported pre-tokenizer '" + std::string(name) + "'");
}

void pre_tokenize(PreTokenizer kind, std::string_view text, std::vector<size_t>& word_ends) {
    // Text is decoded a block at a time so that memory stays bounded for large inputs; a block
    // grows only when a single word does not fit in it.
    CodePoints t;
    size_t max_cps = size_t{1} << 16;
    size_t begin = 0;
    while (begin < text.size()) {
        decode(text, begin, max_cps, t);
        const bool last = t.off.back() == text.size();
        const size_t done = split_block(kind, t, last, word_ends);
        if (done == 0) {
            max_cps *= 2;
            continue;
        }
        begin = t.off[done];
    }
}

}  // namespace attnrag::detail
