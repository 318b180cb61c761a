// BERT WordPiece: normalisation and splitting in one pass over the text, pieces from byte tries.
#include "attnrag/wordpiece.hpp"

#include "common/utf8.h"

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <map>
#include <utility>

namespace attnrag {

namespace {

// ---- Character properties ----

// What BERT's normaliser and pre-tokenizer need to know about a code point (bit flags).
constexpr uint8_t kDrop = 1;      // NUL, U+FFFD, or a control char (Cc Cf Cn Co Cs) but \t \n \r
constexpr uint8_t kSpace = 2;     // \t \n \r or White_Space
constexpr uint8_t kPunct = 4;     // ASCII symbol or Unicode P*
constexpr uint8_t kChinese = 8;   // CJK ideograph (the ranges of Hugging Face's BertNormalizer)
constexpr uint8_t kMark = 16;     // Mn: dropped by strip_accents
constexpr uint8_t kChanges = 32;  // NFD or full lowercase differs from the code point itself

bool is_chinese(char32_t c) {
    // Hugging Face tokenizers' ranges (bert.rs); note 0x2B920, not BERT's 0x2B820.
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

bool is_ascii_punct(char32_t c) {
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
           (c >= 123 && c <= 126);
}

const UNormalizer2* nfd() {
    static const UNormalizer2* n = [] {
        UErrorCode status = U_ZERO_ERROR;
        const UNormalizer2* p = unorm2_getNFDInstance(&status);
        return U_SUCCESS(status) ? p : nullptr;
    }();
    return n;
}

// Canonical decomposition of c into out; false when c has none.
bool decompose(char32_t c, std::u32string& out) {
    const UNormalizer2* n = nfd();
    if (n == nullptr) return false;
    UChar buf[32];
    UErrorCode status = U_ZERO_ERROR;
    int32_t len = unorm2_getDecomposition(n, static_cast<UChar32>(c), buf, 32, &status);
    if (U_FAILURE(status) || len < 0) return false;
    out.clear();
    for (int32_t i = 0; i < len;) {
        UChar32 u;
        U16_NEXT(buf, i, len, u);
        out.push_back(static_cast<char32_t>(u));
    }
    return true;
}

// Full lowercase mapping of one code point on its own (no context), appended to out.
void lowercase_into(char32_t c, std::u32string& out) {
    if (!u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_CHANGES_WHEN_LOWERCASED)) {
        out.push_back(c);
        return;
    }
    UChar src[2];
    int32_t src_len = 0;
    U16_APPEND_UNSAFE(src, src_len, static_cast<UChar32>(c));
    UChar dst[16];
    UErrorCode status = U_ZERO_ERROR;
    int32_t len = u_strToLower(dst, 16, src, src_len, "", &status);
    if (U_FAILURE(status) || len > 16) {
        out.push_back(static_cast<char32_t>(u_tolower(static_cast<UChar32>(c))));
        return;
    }
    for (int32_t i = 0; i < len;) {
        UChar32 u;
        U16_NEXT(dst, i, len, u);
        out.push_back(static_cast<char32_t>(u));
    }
}

uint8_t compute_props(char32_t c) {
    const auto u = static_cast<UChar32>(c);
    uint8_t p = 0;
    const bool tab_nl = c == '\t' || c == '\n' || c == '\r';
    const auto type = static_cast<UCharCategory>(u_charType(u));
    switch (type) {
        case U_CONTROL_CHAR:
        case U_FORMAT_CHAR:
        case U_UNASSIGNED:
        case U_PRIVATE_USE_CHAR:
        case U_SURROGATE:
            if (!tab_nl) p |= kDrop;
            break;
        case U_CONNECTOR_PUNCTUATION:
        case U_DASH_PUNCTUATION:
        case U_START_PUNCTUATION:
        case U_END_PUNCTUATION:
        case U_INITIAL_PUNCTUATION:
        case U_FINAL_PUNCTUATION:
        case U_OTHER_PUNCTUATION: p |= kPunct; break;
        case U_NON_SPACING_MARK: p |= kMark; break;
        default: break;
    }
    if (c == 0 || c == 0xFFFD) p |= kDrop;
    if (tab_nl || u_isUWhiteSpace(u)) p |= kSpace;
    if (is_ascii_punct(c)) p |= kPunct;
    if (is_chinese(c)) p |= kChinese;
    std::u32string tmp;
    if (decompose(c, tmp)) p |= kChanges;
    if (u_hasBinaryProperty(u, UCHAR_CHANGES_WHEN_LOWERCASED)) p |= kChanges;
    return p;
}

// The Basic Multilingual Plane from a table built once, the rest from ICU.
uint8_t props(char32_t c) {
    static const std::unique_ptr<std::array<uint8_t, 0x10000>> bmp = [] {
        auto t = std::make_unique<std::array<uint8_t, 0x10000>>();
        for (char32_t u = 0; u < 0x10000; ++u) (*t)[u] = compute_props(u);
        return t;
    }();
    return c < 0x10000 ? (*bmp)[c] : compute_props(c);
}

// ---- UTF-8 ----

constexpr char32_t kInvalid = 0xFFFFFFFF;

// Decodes one code point at s[i] (i < n); sets len. Strict: overlong forms, surrogates and
// values above U+10FFFF are invalid (kInvalid, len 1).
char32_t decode_utf8(const unsigned char* s, size_t n, size_t i, size_t& len) {
    unsigned char b = s[i];
    len = 1;
    auto cont = [&](size_t k) { return i + k < n && (s[i + k] & 0xC0) == 0x80; };
    if (b < 0x80) return b;
    if (b >= 0xC2 && b <= 0xDF) {
        if (!cont(1)) return kInvalid;
        len = 2;
        return static_cast<char32_t>(((b & 0x1F) << 6) | (s[i + 1] & 0x3F));
    }
    if (b >= 0xE0 && b <= 0xEF) {
        if (!cont(1) || !cont(2)) return kInvalid;
        char32_t c = static_cast<char32_t>(((b & 0x0F) << 12) | ((s[i + 1] & 0x3F) << 6) |
                                           (s[i + 2] & 0x3F));
        if (c < 0x800 || (c >= 0xD800 && c <= 0xDFFF)) return kInvalid;
        len = 3;
        return c;
    }
    if (b >= 0xF0 && b <= 0xF4) {
        if (!cont(1) || !cont(2) || !cont(3)) return kInvalid;
        char32_t c = static_cast<char32_t>(((b & 0x07) << 18) | ((s[i + 1] & 0x3F) << 12) |
                                           ((s[i + 2] & 0x3F) << 6) | (s[i + 3] & 0x3F));
        if (c < 0x10000 || c > 0x10FFFF) return kInvalid;
        len = 4;
        return c;
    }
    return kInvalid;
}

// Byte offset of the first invalid UTF-8 sequence, or npos.
size_t first_invalid_utf8(std::string_view text) {
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const size_t n = text.size();
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            ++i;
            continue;
        }
        size_t len = 0;
        if (decode_utf8(s, n, i, len) == kInvalid) return i;
        i += len;
    }
    return std::string_view::npos;
}

using detail::append_utf8;

// ---- Byte trie: longest vocabulary entry that prefixes a word ----

// A double-array trie (Aoe): the child of node n by byte b is slot base[n] + b when
// check[base[n] + b] == n, so a step costs two loads and no search (count_tokens walks it for
// every byte of every word).
class ByteTrie {
 public:
    // keys[i] -> ids[i]; for duplicate keys the last one wins (as a Python dict built from
    // vocab.txt line by line does). Empty keys are ignored.
    void build(std::vector<std::pair<std::string_view, int32_t>> entries) {
        std::stable_sort(entries.begin(), entries.end(),
                         [](const auto& a, const auto& b) { return a.first < b.first; });
        std::vector<std::pair<std::string_view, int32_t>> keys;
        keys.reserve(entries.size());
        for (const auto& e : entries) {
            if (e.first.empty()) continue;
            if (!keys.empty() && keys.back().first == e.first) {
                keys.back().second = e.second;
            } else {
                keys.push_back(e);
            }
        }
        slots_.assign(256, Slot{});
        slots_[0].check = kRootOwner;
        size_t first_free = 1;  // slots below are (nearly) all used
        // Breadth first: (slot, [lo, hi) of the sorted keys sharing the slot's prefix, depth).
        struct Item {
            int32_t slot;
            size_t lo, hi, depth;
        };
        std::vector<Item> queue{{0, 0, keys.size(), 0}};
        std::vector<std::pair<uint8_t, std::pair<size_t, size_t>>> children;
        for (size_t q = 0; q < queue.size(); ++q) {
            Item it = queue[q];
            if (it.lo < it.hi && keys[it.lo].first.size() == it.depth) {
                slots_[static_cast<size_t>(it.slot)].value = keys[it.lo].second;
                ++it.lo;
            }
            children.clear();
            for (size_t i = it.lo; i < it.hi;) {
                auto b = static_cast<uint8_t>(keys[i].first[it.depth]);
                size_t j = i + 1;
                while (j < it.hi && static_cast<uint8_t>(keys[j].first[it.depth]) == b) ++j;
                children.push_back({b, {i, j}});
                i = j;
            }
            if (children.empty()) continue;
            // A base whose slots for all children are free: try each free slot from first_free
            // on for the first child. Regions that are nearly full are skipped for good
            // (Darts' heuristic), which keeps the build linear in practice.
            const size_t c0 = children[0].first;
            size_t pos = std::max(first_free, c0 + 1);
            size_t n_used = 0;
            size_t base = 0;
            for (;; ++pos) {
                grow(pos + 257);
                if (slots_[pos].check != -1) {
                    ++n_used;
                    continue;
                }
                base = pos - c0;
                bool fits = true;
                for (const auto& c : children) {
                    if (slots_[base + c.first].check != -1) {
                        fits = false;
                        break;
                    }
                }
                if (fits) break;
            }
            if (pos > first_free && n_used * 20 >= (pos - first_free) * 19) first_free = pos;
            slots_[static_cast<size_t>(it.slot)].base = static_cast<int32_t>(base);
            for (const auto& c : children) {
                size_t slot = base + c.first;
                slots_[slot].check = it.slot;
                queue.push_back(
                    {static_cast<int32_t>(slot), c.second.first, c.second.second, it.depth + 1});
            }
        }
    }

    // Length and id of the longest key that is a prefix of s[0, n); {0, -1} when none.
    std::pair<size_t, int32_t> longest_prefix(const unsigned char* s, size_t n) const {
        std::pair<size_t, int32_t> best{0, -1};
        int32_t node = 0;
        const Slot* slots = slots_.data();
        for (size_t i = 0; i < n; ++i) {
            const int32_t base = slots[node].base;
            if (base == 0) break;  // a leaf
            // No bounds check: grow() keeps 257 slots past every base.
            const int32_t next = base + s[i];
            const Slot& sl = slots[next];
            if (sl.check != node) break;
            node = next;
            if (sl.value >= 0) best = {i + 1, sl.value};
        }
        return best;
    }

 private:
    static constexpr int32_t kRootOwner = -2;  // marks slot 0 (the root) as used

    void grow(size_t n) {
        if (n <= slots_.size()) return;
        slots_.resize(std::max(n, slots_.size() * 2), Slot{});
    }

    // One step reads one slot: the three fields share a cache line.
    struct Slot {
        int32_t base = 0;    // first child slot minus its byte; 0: no children
        int32_t check = -1;  // the parent slot; -1: free
        int32_t value = -1;  // token id of the key ending here, or -1
    };
    std::vector<Slot> slots_;
};

// What the tokenizer does with an ASCII byte.
enum class AsciiKind : uint8_t { Word, Space, Punct, Drop };

}  // namespace

struct WordPiece::Impl {
    std::string name;
    WordPieceConfig config;
    bool strip_accents = true;
    std::vector<std::string> tokens;
    std::map<std::string, int32_t, std::less<>> ids;
    ByteTrie word_starts;    // every token, matched at the start of a word
    ByteTrie continuations;  // tokens with the continuation prefix, the prefix removed
    int32_t unk = -1, cls = -1, sep = -1, pad = -1, mask = -1;
    std::vector<std::pair<std::string, int32_t>> specials;  // matched in raw text
    std::array<AsciiKind, 128> ascii_kind{};
    std::array<char, 128> ascii_lower{};

    // Reusable state of one pass; each call has its own.
    struct Pass {
        std::string word;  // normalised bytes of the current word
        uint32_t n_chars = 0;
        std::vector<int32_t> pieces;
        std::u32string tmp, out;
    };

    // Runs the word's pieces (or [UNK]) into sink; false when the sink asks to stop.
    template <class Sink>
    bool flush(Pass& p, Sink& sink) const {
        if (p.word.empty()) return true;
        bool go = true;
        const auto* s = reinterpret_cast<const unsigned char*>(p.word.data());
        const size_t n = p.word.size();
        if (p.n_chars > static_cast<uint32_t>(config.max_input_chars_per_word)) {
            go = sink(unk);
        } else {
            p.pieces.clear();
            size_t pos = 0;
            bool matched = true;
            while (pos < n) {
                const ByteTrie& trie = pos == 0 ? word_starts : continuations;
                auto [len, id] = trie.longest_prefix(s + pos, n - pos);
                if (id < 0) {
                    matched = false;
                    break;
                }
                p.pieces.push_back(id);
                pos += len;
            }
            if (!matched) {
                go = sink(unk);
            } else {
                for (int32_t id : p.pieces) {
                    if (!(go = sink(id))) break;
                }
            }
        }
        p.word.clear();
        p.n_chars = 0;
        return go;
    }

    // One normalised code point into the current word, or as a word of its own.
    template <class Sink>
    bool add_normalised(Pass& p, char32_t c, uint8_t pr, Sink& sink) const {
        if (pr & kSpace) return flush(p, sink);
        if (pr & kPunct) {
            if (!flush(p, sink)) return false;
            append_utf8(p.word, c);
            p.n_chars = 1;
            return flush(p, sink);
        }
        append_utf8(p.word, c);
        ++p.n_chars;
        return true;
    }

    // A non-ASCII code point: clean, CJK split, strip accents, lowercase, split.
    template <class Sink>
    bool add_code_point(Pass& p, char32_t c, Sink& sink) const {
        const uint8_t pr = props(c);
        if (config.clean_text && (pr & kDrop)) return true;
        if (pr & kSpace) return flush(p, sink);
        const bool cjk = config.tokenize_chinese_chars && (pr & kChinese);
        if (cjk && !flush(p, sink)) return false;
        const bool changes = (pr & kChanges) && (strip_accents || config.lowercase);
        if (!changes && !(strip_accents && (pr & kMark))) {
            if (!add_normalised(p, c, pr, sink)) return false;
        } else {
            p.out.clear();
            if (strip_accents) {
                if (!decompose(c, p.tmp)) p.tmp.assign(1, c);
            } else {
                p.tmp.assign(1, c);
            }
            for (char32_t d : p.tmp) {
                if (strip_accents && u_charType(static_cast<UChar32>(d)) == U_NON_SPACING_MARK) {
                    continue;
                }
                if (config.lowercase) {
                    lowercase_into(d, p.out);
                } else {
                    p.out.push_back(d);
                }
            }
            for (char32_t o : p.out) {
                if (!add_normalised(p, o, props(o), sink)) return false;
            }
        }
        if (cjk) return flush(p, sink);
        return true;
    }

    // Length of the special token starting at text[i] (text[i] == '['), with its id.
    std::pair<size_t, int32_t> special_at(std::string_view text, size_t i) const {
        std::pair<size_t, int32_t> best{0, -1};
        for (const auto& [s, id] : specials) {
            if (s.size() > best.first && text.compare(i, s.size(), s) == 0) best = {s.size(), id};
        }
        return best;
    }

    // The pieces of text into sink (bool(int32_t id): false stops). Invalid UTF-8 decodes to
    // U+FFFD (callers that must reject it check first).
    template <class Sink>
    void run(std::string_view text, Sink& sink) const {
        Pass p;
        p.word.reserve(64);
        const auto* s = reinterpret_cast<const unsigned char*>(text.data());
        const size_t n = text.size();
        const bool match_specials = !specials.empty();
        size_t i = 0;
        while (i < n) {
            const unsigned char b = s[i];
            if (b < 0x80) {
                if (b == '[' && match_specials) {
                    auto [len, id] = special_at(text, i);
                    if (len > 0) {
                        if (!flush(p, sink) || !sink(id)) return;
                        i += len;
                        continue;
                    }
                }
                switch (ascii_kind[b]) {
                    case AsciiKind::Word:
                        p.word.push_back(ascii_lower[b]);
                        ++p.n_chars;
                        break;
                    case AsciiKind::Space:
                        if (!flush(p, sink)) return;
                        break;
                    case AsciiKind::Punct:
                        if (!flush(p, sink)) return;
                        p.word.push_back(static_cast<char>(b));
                        p.n_chars = 1;
                        if (!flush(p, sink)) return;
                        break;
                    case AsciiKind::Drop: break;
                }
                ++i;
                continue;
            }
            size_t len = 0;
            char32_t c = decode_utf8(s, n, i, len);
            if (c == kInvalid) c = 0xFFFD;
            i += len;
            if (!add_code_point(p, c, sink)) return;
        }
        flush(p, sink);
    }

    Status init() {
        strip_accents = config.strip_accents.value_or(config.lowercase);
        if (tokens.empty()) return make_error(Errc::Corrupt, name + ": empty vocabulary");
        if (config.max_input_chars_per_word < 1) {
            return make_error(Errc::InvalidArgument,
                              name + ": max_input_chars_per_word must be positive");
        }
        std::vector<std::pair<std::string_view, int32_t>> starts, conts;
        starts.reserve(tokens.size());
        const std::string& prefix = config.continuing_subword_prefix;
        for (size_t i = 0; i < tokens.size(); ++i) {
            const std::string& t = tokens[i];
            auto bad = first_invalid_utf8(t);
            if (bad != std::string_view::npos) {
                return make_error(Errc::Corrupt, name + ": line " + std::to_string(i + 1) +
                                                     ": token is not valid UTF-8 (byte " +
                                                     std::to_string(bad) + ")");
            }
            auto id = static_cast<int32_t>(i);
            ids.insert_or_assign(t, id);
            starts.emplace_back(t, id);
            if (!prefix.empty() && t.size() > prefix.size() &&
                t.compare(0, prefix.size(), prefix) == 0) {
                conts.emplace_back(std::string_view(t).substr(prefix.size()), id);
            }
        }
        word_starts.build(std::move(starts));
        continuations.build(std::move(conts));
        auto find = [&](const std::string& t) {
            auto it = ids.find(t);
            return it == ids.end() ? -1 : it->second;
        };
        unk = find(config.unk_token);
        cls = find(config.cls_token);
        sep = find(config.sep_token);
        pad = find(config.pad_token);
        mask = find(config.mask_token);
        for (const auto& [tok, id] :
             {std::pair{config.unk_token, unk}, {config.cls_token, cls}, {config.sep_token, sep}}) {
            if (id < 0) {
                return make_error(Errc::Corrupt,
                                  name + ": the vocabulary has no '" + tok + "' token");
            }
        }
        if (config.match_special_tokens) {
            for (const auto& [tok, id] : {std::pair{config.unk_token, unk},
                                          {config.cls_token, cls},
                                          {config.sep_token, sep},
                                          {config.pad_token, pad},
                                          {config.mask_token, mask}}) {
                // The scan looks for these at '['; others would need a general matcher.
                if (id >= 0 && !tok.empty() && tok[0] == '[') specials.emplace_back(tok, id);
            }
        }
        for (int b = 0; b < 128; ++b) {
            auto c = static_cast<char32_t>(b);
            AsciiKind k = AsciiKind::Word;
            uint8_t pr = props(c);
            // Drop before space: \v and \f are White_Space but also Cc, and clean_text removes
            // them ("a\fb" is one word, as in Hugging Face).
            if (config.clean_text && (pr & kDrop)) {
                k = AsciiKind::Drop;
            } else if (pr & kSpace) {
                k = AsciiKind::Space;
            } else if (pr & kPunct) {
                k = AsciiKind::Punct;
            }
            ascii_kind[static_cast<size_t>(b)] = k;
            char ch = static_cast<char>(b);
            if (config.lowercase && b >= 'A' && b <= 'Z') ch = static_cast<char>(b - 'A' + 'a');
            ascii_lower[static_cast<size_t>(b)] = ch;
        }
        return {};
    }
};

WordPiece::WordPiece(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WordPiece::WordPiece(WordPiece&&) noexcept = default;
WordPiece& WordPiece::operator=(WordPiece&&) noexcept = default;
WordPiece::~WordPiece() = default;

Result<WordPiece> WordPiece::load(const std::filesystem::path& vocab_txt,
                                  const WordPieceConfig& config) {
    std::ifstream in(vocab_txt, std::ios::binary);
    if (!in) {
        std::error_code ec;
        bool exists = std::filesystem::exists(vocab_txt, ec);
        return make_error(exists ? Errc::Io : Errc::NotFound,
                          vocab_txt.string() + (exists ? ": cannot read" : ": not found"));
    }
    std::vector<std::string> tokens;
    std::string line;
    while (std::getline(in, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        tokens.push_back(line);
    }
    if (in.bad()) return make_error(Errc::Io, vocab_txt.string() + ": read error");
    return from_tokens(std::move(tokens), config, vocab_txt.string());
}

Result<WordPiece> WordPiece::from_tokens(std::vector<std::string> tokens,
                                         const WordPieceConfig& config, std::string name) {
    auto impl = std::make_unique<Impl>();
    impl->name = std::move(name);
    impl->config = config;
    impl->tokens = std::move(tokens);
    ATTNRAG_TRY(impl->init());
    return WordPiece(std::move(impl));
}

Result<std::vector<int32_t>> WordPiece::tokenize(std::string_view text, size_t max_pieces) const {
    size_t bad = first_invalid_utf8(text);
    if (bad != std::string_view::npos) {
        return make_error(Errc::InvalidArgument,
                          "WordPiece: invalid UTF-8 at byte " + std::to_string(bad));
    }
    std::vector<int32_t> out;
    auto sink = [&](int32_t id) {
        out.push_back(id);
        return max_pieces == 0 || out.size() < max_pieces;
    };
    impl_->run(text, sink);
    return out;
}

Result<std::vector<int32_t>> WordPiece::encode(std::string_view text, int32_t max_tokens) const {
    if (max_tokens != 0 && max_tokens < 2) {
        return make_error(Errc::InvalidArgument, "WordPiece::encode: max_tokens " +
                                                     std::to_string(max_tokens) +
                                                     " leaves no room for [CLS] and [SEP]");
    }
    size_t bad = first_invalid_utf8(text);
    if (bad != std::string_view::npos) {
        return make_error(Errc::InvalidArgument,
                          "WordPiece: invalid UTF-8 at byte " + std::to_string(bad));
    }
    std::vector<int32_t> out;
    out.push_back(impl_->cls);
    const size_t limit = max_tokens == 0 ? 0 : static_cast<size_t>(max_tokens) - 1;  // before SEP
    if (limit == 0 || out.size() < limit) {
        auto sink = [&](int32_t id) {
            out.push_back(id);
            return limit == 0 || out.size() < limit;
        };
        impl_->run(text, sink);
    }
    out.push_back(impl_->sep);
    return out;
}

uint32_t WordPiece::count_tokens(std::string_view text) const {
    uint32_t n = 0;
    auto sink = [&](int32_t) {
        ++n;
        return true;
    };
    impl_->run(text, sink);
    return n;
}

int32_t WordPiece::n_vocab() const {
    return static_cast<int32_t>(impl_->tokens.size());
}

int32_t WordPiece::token_id(std::string_view token) const {
    auto it = impl_->ids.find(token);
    return it == impl_->ids.end() ? -1 : it->second;
}

const std::string& WordPiece::token(int32_t id) const {
    static const std::string empty;
    if (id < 0 || id >= n_vocab()) return empty;
    return impl_->tokens[static_cast<size_t>(id)];
}

int32_t WordPiece::unk_id() const {
    return impl_->unk;
}
int32_t WordPiece::cls_id() const {
    return impl_->cls;
}
int32_t WordPiece::sep_id() const {
    return impl_->sep;
}
int32_t WordPiece::pad_id() const {
    return impl_->pad;
}
const WordPieceConfig& WordPiece::config() const {
    return impl_->config;
}

}  // namespace attnrag
