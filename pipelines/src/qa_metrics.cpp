// QA answer metrics: SQuAD normalisation, exact match, token F1, contains.
#include "attnrag/pipelines/qa_metrics.hpp"

#include <algorithm>
#include <cstdint>
#include <map>
#include <vector>

namespace attnrag::pipelines {

namespace {

// Decodes one UTF-8 code point at s[i]; returns its length (1 for an invalid byte, reported
// as cp = UINT32_MAX so the caller copies the byte through).
size_t decode_utf8(std::string_view s, size_t i, uint32_t& cp) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) {
        cp = b0;
        return 1;
    }
    size_t n = 0;
    uint32_t v = 0;
    if ((b0 & 0xE0) == 0xC0) {
        n = 2;
        v = b0 & 0x1Fu;
    } else if ((b0 & 0xF0) == 0xE0) {
        n = 3;
        v = b0 & 0x0Fu;
    } else if ((b0 & 0xF8) == 0xF0) {
        n = 4;
        v = b0 & 0x07u;
    } else {
        cp = UINT32_MAX;
        return 1;
    }
    if (i + n > s.size()) {
        cp = UINT32_MAX;
        return 1;
    }
    for (size_t k = 1; k < n; ++k) {
        const auto b = static_cast<unsigned char>(s[i + k]);
        if ((b & 0xC0) != 0x80) {
            cp = UINT32_MAX;
            return 1;
        }
        v = (v << 6) | (b & 0x3Fu);
    }
    // Overlong forms and surrogates are treated as invalid bytes.
    static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (v < kMin[n] || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
        cp = UINT32_MAX;
        return 1;
    }
    cp = v;
    return n;
}

void encode_utf8(uint32_t cp, std::string& out) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

uint32_t to_lower(uint32_t c) {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c < 0xC0) return c;
    if (c <= 0xDE && c != 0xD7) return c + 0x20;  // Latin-1 capitals (× excluded)
    if (c >= 0x100 && c <= 0x137) return c | 1u;  // Latin Extended-A: even capital, odd small
    if (c >= 0x139 && c <= 0x148) return (c & 1u) ? c + 1 : c;
    if (c >= 0x14A && c <= 0x177) return c | 1u;
    if (c == 0x178) return 0xFF;
    if (c >= 0x179 && c <= 0x17E) return (c & 1u) ? c + 1 : c;
    if (c >= 0x391 && c <= 0x3AB && c != 0x3A2) return c + 0x20;  // Greek
    if (c >= 0x410 && c <= 0x42F) return c + 0x20;                // Cyrillic
    if (c >= 0x400 && c <= 0x40F) return c + 0x50;
    return c;
}

bool is_space(uint32_t c) {
    return c == ' ' || (c >= '\t' && c <= '\r') || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// string.punctuation (the SQuAD script's set) plus common Unicode punctuation.
bool is_punct(uint32_t c) {
    if (c < 0x80) return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
                         (c >= 0x7B && c <= 0x7E);
    switch (c) {
        case 0xA1: case 0xA7: case 0xAB: case 0xB6: case 0xB7: case 0xBB: case 0xBF:  // ¡ § « ¶ · » ¿
        case 0x37E: case 0x387:                                                        // Greek ; and ·
        case 0x55A: case 0x55B: case 0x55C: case 0x55D: case 0x55E: case 0x55F: case 0x589:  // Armenian
        case 0x5BE: case 0x5C0: case 0x5C3: case 0x5C6: case 0x5F3: case 0x5F4:       // Hebrew
        case 0x60C: case 0x61B: case 0x61F: case 0x66A: case 0x66B: case 0x66C: case 0x66D: case 0x6D4:  // Arabic
        case 0x964: case 0x965:                                                        // Devanagari danda
            return true;
        default: break;
    }
    if (c >= 0x2010 && c <= 0x2027) return true;  // dashes, quotes, bullets, ellipsis
    if (c >= 0x2030 && c <= 0x205E) return true;  // per mille, primes, guillemets, ...
    if (c >= 0x2E00 && c <= 0x2E4F) return true;  // supplemental punctuation
    if (c >= 0x3001 && c <= 0x3003) return true;  // CJK comma, full stop, ditto
    if (c >= 0x3008 && c <= 0x3011) return true;  // CJK brackets
    if (c >= 0x3014 && c <= 0x301F) return true;
    if (c == 0x30FB) return true;  // katakana middle dot
    if (c >= 0xFF01 && c <= 0xFF65) {  // fullwidth forms: the ASCII punctuation set shifted
        const uint32_t a = c - 0xFEE0;
        if (c <= 0xFF5E) return is_punct(a);
        return c >= 0xFF5F;  // fullwidth/halfwidth brackets and CJK punctuation
    }
    return false;
}

std::vector<std::string> tokens_of(std::string_view normalized) {
    std::vector<std::string> out;
    size_t i = 0;
    while (i < normalized.size()) {
        size_t j = normalized.find(' ', i);
        if (j == std::string_view::npos) j = normalized.size();
        if (j > i) out.emplace_back(normalized.substr(i, j - i));
        i = j + 1;
    }
    return out;
}

// Normalised references: empty ones dropped; none left = the empty answer.
std::vector<std::string> normalized_references(std::span<const std::string> answers) {
    std::vector<std::string> out;
    for (const std::string& a : answers) {
        std::string n = normalize_answer(a);
        if (!n.empty()) out.push_back(std::move(n));
    }
    if (out.empty()) out.emplace_back();
    return out;
}

double token_f1(const std::vector<std::string>& pred, const std::vector<std::string>& gold) {
    if (pred.empty() || gold.empty()) return pred.empty() && gold.empty() ? 1.0 : 0.0;
    std::map<std::string_view, int> counts;
    for (const std::string& t : gold) ++counts[t];
    int n_same = 0;
    for (const std::string& t : pred) {
        auto it = counts.find(t);
        if (it != counts.end() && it->second > 0) {
            --it->second;
            ++n_same;
        }
    }
    if (n_same == 0) return 0.0;
    const double precision = n_same / static_cast<double>(pred.size());
    const double recall = n_same / static_cast<double>(gold.size());
    return 2 * precision * recall / (precision + recall);
}

}  // namespace

std::string normalize_answer(std::string_view s) {
    // Lowercase and drop punctuation; whitespace becomes a single separator.
    std::string text;
    text.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
        uint32_t cp = 0;
        const size_t n = decode_utf8(s, i, cp);
        if (cp == UINT32_MAX) {
            text += s[i];
        } else if (is_space(cp)) {
            text += ' ';
        } else if (!is_punct(cp)) {
            encode_utf8(to_lower(cp), text);
        }
        i += n;
    }
    // Drop articles and collapse spaces.
    std::string out;
    out.reserve(text.size());
    for (const std::string& t : tokens_of(text)) {
        if (t == "a" || t == "an" || t == "the") continue;
        if (!out.empty()) out += ' ';
        out += t;
    }
    return out;
}

bool exact_match(std::string_view prediction, std::span<const std::string> answers) {
    const std::string pred = normalize_answer(prediction);
    const auto refs = normalized_references(answers);
    return std::find(refs.begin(), refs.end(), pred) != refs.end();
}

double f1_score(std::string_view prediction, std::span<const std::string> answers) {
    const auto pred = tokens_of(normalize_answer(prediction));
    double best = 0.0;
    for (const std::string& r : normalized_references(answers)) best = std::max(best, token_f1(pred, tokens_of(r)));
    return best;
}

bool contains_answer(std::string_view prediction, std::span<const std::string> answers) {
    const std::string pred = normalize_answer(prediction);
    for (const std::string& a : answers) {
        const std::string r = normalize_answer(a);
        if (!r.empty() && pred.find(r) != std::string::npos) return true;
    }
    return false;
}

}  // namespace attnrag::pipelines
