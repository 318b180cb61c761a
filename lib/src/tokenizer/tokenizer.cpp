// Byte-level BPE tokenizer (GPT-2 family) from GGUF metadata: special tokens, decoding, ChatML.
#include "attnrag/tokenizer.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <string>
#include <unordered_map>
#include <utility>

#include "common/utf8.h"
#include "tokenizer/pretokenize.h"

namespace attnrag {
namespace {

// GGUF token types (llama.cpp's llama_token_type).
constexpr int32_t kTypeNormal = 1;
constexpr int32_t kTypeUnknown = 2;
constexpr int32_t kTypeControl = 3;
constexpr int32_t kTypeUserDefined = 4;
constexpr int32_t kTypeMax = 6;  // 5 unused, 6 byte

constexpr int32_t kNoRank = std::numeric_limits<int32_t>::max();

// Words longer than this (in bytes) are merged with a heap (O(n log n)); shorter ones with a
// linear scan per merge, which is faster for the few symbols of ordinary words.
constexpr size_t kHeapMinSymbols = 64;

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes stand for themselves, the other 68 bytes
// for U+0100.. in byte order, so every byte is a visible code point in the vocabulary's text.
struct ByteAlphabet {
    std::array<char32_t, 256> byte_to_cp{};
    std::array<int16_t, 512> cp_to_byte{};  // -1: not in the alphabet

    ByteAlphabet() {
        cp_to_byte.fill(-1);
        char32_t next = 256;
        for (int b = 0; b < 256; ++b) {
            const bool printable =
                (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            byte_to_cp[b] = printable ? static_cast<char32_t>(b) : next++;
            cp_to_byte[byte_to_cp[b]] = static_cast<int16_t>(b);
        }
    }
};

const ByteAlphabet& byte_alphabet() {
    static const ByteAlphabet alphabet;
    return alphabet;
}

using detail::append_utf8;

// A token's text in the byte-level alphabet -> the bytes it stands for. Code points outside the
// alphabet (and malformed UTF-8, which a GGUF string may hold) are kept as they are.
std::string unmap_bytes(std::string_view text) {
    const auto& alphabet = byte_alphabet();
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const size_t n = text.size();
    std::string out;
    out.reserve(n);
    size_t i = 0;
    while (i < n) {
        const unsigned char b = s[i];
        size_t len = b < 0x80 ? 1 : b < 0xC0 ? 0 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : b < 0xF8 ? 4 : 0;
        if (len == 0 || i + len > n) {
            out.push_back(static_cast<char>(b));
            ++i;
            continue;
        }
        char32_t c = len == 1 ? b : (b & (0x7Fu >> len));
        for (size_t k = 1; k < len; ++k) c = (c << 6) | (s[i + k] & 0x3Fu);
        if (c < alphabet.cp_to_byte.size() && alphabet.cp_to_byte[c] >= 0) {
            out.push_back(static_cast<char>(alphabet.cp_to_byte[c]));
        } else {
            out.append(text.substr(i, len));
        }
        i += len;
    }
    return out;
}

// Strict UTF-8 check (no overlongs, surrogates, code points above U+10FFFF or truncated
// sequences). Returns the offset of the first bad sequence, or npos, and why in *reason.
size_t find_invalid_utf8(std::string_view text, const char** reason) {
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const size_t n = text.size();
    auto is_cont = [&](size_t k) { return k < n && (s[k] & 0xC0) == 0x80; };
    size_t i = 0;
    while (i < n) {
        // ASCII fast path, eight bytes at a time.
        if (i + 8 <= n) {
            uint64_t w;
            std::memcpy(&w, s + i, 8);
            if ((w & 0x8080808080808080ull) == 0) {
                i += 8;
                continue;
            }
        }
        const unsigned char b = s[i];
        if (b < 0x80) {
            ++i;
            continue;
        }
        size_t len = 0;
        unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
        if (b >= 0xC2 && b <= 0xDF) {
            len = 2;
        } else if (b >= 0xE0 && b <= 0xEF) {
            len = 3;
            if (b == 0xE0) lo = 0xA0;  // overlong
            if (b == 0xED) hi = 0x9F;  // surrogates U+D800..U+DFFF
        } else if (b >= 0xF0 && b <= 0xF4) {
            len = 4;
            if (b == 0xF0) lo = 0x90;  // overlong
            if (b == 0xF4) hi = 0x8F;  // above U+10FFFF
        } else {
            *reason = (b & 0xC0) == 0x80 ? "unexpected continuation byte"
                      : b <= 0xC1        ? "overlong encoding"
                                         : "byte never valid in UTF-8";
            return i;
        }
        if (i + 1 >= n || !is_cont(i + 1)) {
            *reason = "truncated sequence";
            return i;
        }
        if (s[i + 1] < lo || s[i + 1] > hi) {
            *reason = b == 0xED   ? "surrogate code point"
                      : b == 0xF4 ? "code point above U+10FFFF"
                                  : "overlong encoding";
            return i;
        }
        for (size_t k = 2; k < len; ++k) {
            if (!is_cont(i + k)) {
                *reason = "truncated sequence";
                return i;
            }
        }
        i += len;
    }
    return std::string_view::npos;
}

// Merge ranks keyed by the pair of token ids: open addressing with linear probing, because
// lookups are the inner loop of encoding.
class MergeTable {
 public:
    struct Entry {
        int32_t rank = kNoRank;
        TokenId result = -1;
    };

    void reserve(size_t n_merges) {
        size_t cap = 16;
        int bits = 4;
        while (cap < 2 * n_merges) {
            cap <<= 1;
            ++bits;
        }
        slots_.assign(cap, Slot{});
        mask_ = cap - 1;
        shift_ = 64 - bits;
    }

    // Keeps the lowest rank when a pair repeats.
    void insert(TokenId left, TokenId right, int32_t rank, TokenId result) {
        const uint64_t key = make_key(left, right);
        for (size_t i = slot_of(key);; i = (i + 1) & mask_) {
            Slot& s = slots_[i];
            if (s.key == kEmpty) {
                s = Slot{key, Entry{rank, result}};
                return;
            }
            if (s.key == key) return;
        }
    }

    Entry find(TokenId left, TokenId right) const {
        const uint64_t key = make_key(left, right);
        for (size_t i = slot_of(key);; i = (i + 1) & mask_) {
            const Slot& s = slots_[i];
            if (s.key == key) return s.entry;
            if (s.key == kEmpty) return Entry{};
        }
    }

 private:
    static constexpr uint64_t kEmpty = ~uint64_t{0};  // ids are non-negative int32
    struct Slot {
        uint64_t key = kEmpty;
        Entry entry;
    };
    static uint64_t make_key(TokenId left, TokenId right) {
        return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
               static_cast<uint32_t>(right);
    }
    size_t slot_of(uint64_t key) const {
        return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_);
    }

    std::vector<Slot> slots_;
    size_t mask_ = 0;
    int shift_ = 64;
};

// Reusable buffers of one encode call.
struct Workspace {
    std::vector<size_t> word_ends;
    std::vector<TokenId> ids;
    std::vector<int32_t> ranks;
    std::vector<TokenId> results;
    struct Symbol {
        TokenId id;
        int32_t prev, next;
    };
    struct Candidate {
        int32_t rank, pos;
        TokenId left, right;
    };
    std::vector<Symbol> symbols;
    std::vector<Candidate> heap;
};

// A piece of text to encode: either a special token or plain text.
struct Segment {
    TokenId special = -1;  // >= 0: this token
    std::string text;      // else: plain text
};

// The string literal that is the whole of the {{ }} expression opening at `open`, unescaped;
// empty when that expression is anything else (a variable, a concatenation, ...).
std::string lone_literal(std::string_view tmpl, size_t open) {
    size_t i = open + 2;
    while (i < tmpl.size() && (tmpl[i] == ' ' || tmpl[i] == '-')) ++i;
    if (i >= tmpl.size() || (tmpl[i] != '\'' && tmpl[i] != '"')) return {};
    const char quote = tmpl[i++];
    std::string out;
    for (; i < tmpl.size() && tmpl[i] != quote; ++i) {
        if (tmpl[i] == '\\' && i + 1 < tmpl.size()) {
            const char e = tmpl[++i];
            out.push_back(e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e);
        } else {
            out.push_back(tmpl[i]);
        }
    }
    if (i >= tmpl.size()) return {};
    ++i;
    while (i < tmpl.size() && (tmpl[i] == ' ' || tmpl[i] == '-')) ++i;
    return tmpl.compare(i, 2, "}}") == 0 ? out : std::string{};
}

// The default system turn a template adds when the conversation does not start with one: the
// lone string literal of the first {{ }} in the branch taken for that case, unescaped.
//   SmolLM2: {% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n...
//   Qwen2.5: {%- if messages[0]['role'] == 'system' %}...{%- else %}{{- '<|im_start|>system\n...
// Only a whole ChatML system turn counts, so a branch that writes part of one (Qwen's tool
// prompt, whose else-branch literal is the bare message) is passed over. Empty when none.
std::string find_default_system_turn(std::string_view tmpl) {
    static constexpr std::string_view kNotSystem[] = {
        "messages[0]['role'] != 'system'",
        "messages[0][\"role\"] != \"system\"",
        "messages[0].role != 'system'",
    };
    static constexpr std::string_view kSystem[] = {
        "messages[0]['role'] == 'system'",
        "messages[0][\"role\"] == \"system\"",
        "messages[0].role == 'system'",
    };
    constexpr std::string_view kTurnStart = "<|im_start|>system";
    constexpr size_t npos = std::string_view::npos;
    // The turn written first in the branch that starts at `branch` (before its else or endif).
    auto literal_in_branch = [&](size_t branch) -> std::string {
        const size_t open = tmpl.find("{{", branch);
        const size_t stop = std::min(tmpl.find("endif", branch), tmpl.find("else", branch));
        if (open == npos || (stop != npos && stop < open)) return {};
        std::string turn = lone_literal(tmpl, open);
        return turn.starts_with(kTurnStart) ? turn : std::string{};
    };
    for (auto test : kNotSystem) {
        for (size_t pos = tmpl.find(test); pos != npos; pos = tmpl.find(test, pos + 1)) {
            if (auto turn = literal_in_branch(pos + test.size()); !turn.empty()) return turn;
        }
    }
    for (auto test : kSystem) {
        for (size_t pos = tmpl.find(test); pos != npos; pos = tmpl.find(test, pos + 1)) {
            // The else of this if: the first one after the test, before its endif.
            const size_t else_pos = tmpl.find("else", pos);
            const size_t endif_pos = tmpl.find("endif", pos);
            if (else_pos == npos || (endif_pos != npos && endif_pos < else_pos)) continue;
            if (auto turn = literal_in_branch(else_pos + 4); !turn.empty()) return turn;
        }
    }
    return {};
}

// InvalidArgument naming what was checked and the offset of the first bad sequence.
Status check_utf8(std::string_view text, const std::string& what) {
    const char* reason = "";
    const size_t bad = find_invalid_utf8(text, &reason);
    if (bad == std::string_view::npos) return {};
    return make_error(Errc::InvalidArgument, "tokenizer: " + what +
                                                 ": invalid UTF-8 at byte offset " +
                                                 std::to_string(bad) + " (" + reason + ")");
}

Error vocab_error(Errc code, std::string message) {
    return make_error(code, "tokenizer: " + std::move(message));
}

}  // namespace

struct Tokenizer::Impl {
    detail::PreTokenizer pre = detail::PreTokenizer::Gpt2;
    std::vector<int32_t> types;       // [n_vocab]
    std::vector<std::string> pieces;  // [n_vocab] bytes each token stands for
    std::unordered_map<std::string_view, TokenId> piece_to_id;  // views into pieces
    std::array<TokenId, 256> byte_ids{};  // token of each single byte, -1 if none
    MergeTable merges;
    // Special (control and user-defined) tokens by the first byte of their text, longest first.
    std::array<std::vector<std::pair<std::string_view, TokenId>>, 256> specials;
    bool has_specials = false;
    TokenId bos = -1, eos = -1, unk = -1, pad = -1;
    std::vector<TokenId> eog;            // end-of-generation ids
    TokenId im_start = -1, im_end = -1;  // ChatML markers, -1 if absent
    std::string default_system;          // template's default system turn; empty: none
    std::string chat_template;           // tokenizer.chat_template
    std::string model_name;

    void split_special(std::string_view text, std::vector<Segment>& out) const;
    void encode_plain(std::string_view text, Workspace& ws, std::vector<TokenId>& out) const;
    void encode_word(const unsigned char* p, size_t n, Workspace& ws,
                     std::vector<TokenId>& out) const;
    void merge_linear(Workspace& ws) const;
    void merge_heap(Workspace& ws) const;
};

// Leftmost-longest match of special token texts; the rest becomes plain segments.
void Tokenizer::Impl::split_special(std::string_view text, std::vector<Segment>& out) const {
    size_t plain_begin = 0;
    size_t i = 0;
    while (i < text.size()) {
        const auto& candidates = specials[static_cast<unsigned char>(text[i])];
        TokenId hit = -1;
        size_t hit_len = 0;
        for (const auto& [s, id] : candidates) {
            if (text.compare(i, s.size(), s) == 0) {
                hit = id;
                hit_len = s.size();
                break;
            }
        }
        if (hit < 0) {
            ++i;
            continue;
        }
        if (i > plain_begin)
            out.push_back({-1, std::string(text.substr(plain_begin, i - plain_begin))});
        out.push_back({hit, {}});
        i += hit_len;
        plain_begin = i;
    }
    if (plain_begin < text.size()) out.push_back({-1, std::string(text.substr(plain_begin))});
}

void Tokenizer::Impl::encode_plain(std::string_view text, Workspace& ws,
                                   std::vector<TokenId>& out) const {
    ws.word_ends.clear();
    detail::pre_tokenize(pre, text, ws.word_ends);
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    size_t begin = 0;
    for (size_t end : ws.word_ends) {
        encode_word(p + begin, end - begin, ws, out);
        begin = end;
    }
}

void Tokenizer::Impl::encode_word(const unsigned char* p, size_t n, Workspace& ws,
                                  std::vector<TokenId>& out) const {
    // Start from one symbol per byte. A byte with no token becomes the unknown token (which no
    // merge involves) or, without one, is dropped (as Hugging Face's BPE does).
    ws.ids.clear();
    for (size_t i = 0; i < n; ++i) {
        const TokenId id = byte_ids[p[i]] >= 0 ? byte_ids[p[i]] : unk;
        if (id >= 0) ws.ids.push_back(id);
    }
    if (ws.ids.size() >= kHeapMinSymbols) {
        merge_heap(ws);
    } else if (ws.ids.size() > 1) {
        merge_linear(ws);
    }
    out.insert(out.end(), ws.ids.begin(), ws.ids.end());
}

// Repeatedly merges the adjacent pair of lowest rank (leftmost on ties) until none is left:
// ranks[k] is the rank of the pair (ids[k], ids[k+1]).
void Tokenizer::Impl::merge_linear(Workspace& ws) const {
    auto& ids = ws.ids;
    auto& ranks = ws.ranks;
    auto& results = ws.results;
    size_t m = ids.size();
    ranks.resize(m - 1);
    results.resize(m - 1);
    for (size_t k = 0; k + 1 < m; ++k) {
        const auto e = merges.find(ids[k], ids[k + 1]);
        ranks[k] = e.rank;
        results[k] = e.result;
    }
    while (m > 1) {
        size_t best = 0;
        for (size_t k = 1; k + 1 < m; ++k) {
            if (ranks[k] < ranks[best]) best = k;
        }
        if (ranks[best] == kNoRank) break;
        ids[best] = results[best];
        std::copy(ids.begin() + best + 2, ids.begin() + m, ids.begin() + best + 1);
        std::copy(ranks.begin() + best + 1, ranks.begin() + (m - 1), ranks.begin() + best);
        std::copy(results.begin() + best + 1, results.begin() + (m - 1), results.begin() + best);
        --m;
        if (best > 0) {
            const auto e = merges.find(ids[best - 1], ids[best]);
            ranks[best - 1] = e.rank;
            results[best - 1] = e.result;
        }
        if (best + 1 < m) {
            const auto e = merges.find(ids[best], ids[best + 1]);
            ranks[best] = e.rank;
            results[best] = e.result;
        }
    }
    ids.resize(m);
}

// The same merge order for long words: symbols in a linked list, candidate pairs in a min-heap
// by (rank, position). A candidate is stale when either side has changed since it was pushed;
// a symbol's id only changes by growing, so comparing ids detects that.
void Tokenizer::Impl::merge_heap(Workspace& ws) const {
    auto& syms = ws.symbols;
    auto& heap = ws.heap;
    const auto n = static_cast<int32_t>(ws.ids.size());
    syms.resize(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i) syms[i] = {ws.ids[i], i - 1, i + 1 < n ? i + 1 : -1};
    heap.clear();
    auto later = [](const Workspace::Candidate& a, const Workspace::Candidate& b) {
        return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
    };
    auto push = [&](int32_t pos) {
        if (pos < 0 || syms[pos].next < 0) return;
        const TokenId left = syms[pos].id, right = syms[syms[pos].next].id;
        const auto e = merges.find(left, right);
        if (e.rank == kNoRank) return;
        heap.push_back({e.rank, pos, left, right});
        std::push_heap(heap.begin(), heap.end(), later);
    };
    for (int32_t i = 0; i + 1 < n; ++i) push(i);
    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), later);
        const auto c = heap.back();
        heap.pop_back();
        auto& left = syms[c.pos];
        if (left.id != c.left || left.next < 0 || syms[left.next].id != c.right) continue;
        const auto right = syms[left.next];
        syms[left.next].id = -1;  // dead
        left.id = merges.find(c.left, c.right).result;
        left.next = right.next;
        if (right.next >= 0) syms[right.next].prev = c.pos;
        push(left.prev);
        push(c.pos);
    }
    ws.ids.clear();
    for (int32_t i = 0; i >= 0 && i < n; i = syms[i].next) ws.ids.push_back(syms[i].id);
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Result<Tokenizer> Tokenizer::from_vocab(const TokenizerVocab& vocab) {
    if (vocab.model != "gpt2") {
        return vocab_error(Errc::Unsupported, "tokenizer.ggml.model: unsupported model '" +
                                                  vocab.model + "' (only gpt2 byte-level BPE)");
    }
    auto pre = detail::pre_tokenizer_from_name(vocab.pre);
    if (!pre) return vocab_error(pre.error().code, pre.error().message);

    auto impl = std::make_unique<Impl>();
    impl->pre = *pre;
    const size_t n_vocab = vocab.tokens.size();
    if (n_vocab == 0) return vocab_error(Errc::Corrupt, "tokenizer.ggml.tokens: empty vocabulary");
    if (n_vocab > static_cast<size_t>(std::numeric_limits<TokenId>::max())) {
        return vocab_error(Errc::Corrupt, "tokenizer.ggml.tokens: too many tokens");
    }
    if (!vocab.token_types.empty() && vocab.token_types.size() != n_vocab) {
        return vocab_error(
            Errc::Corrupt,
            "tokenizer.ggml.token_type: " + std::to_string(vocab.token_types.size()) +
                " entries for " + std::to_string(n_vocab) + " tokens");
    }
    impl->types =
        vocab.token_types.empty() ? std::vector<int32_t>(n_vocab, kTypeNormal) : vocab.token_types;
    for (size_t i = 0; i < n_vocab; ++i) {
        if (impl->types[i] < 0 || impl->types[i] > kTypeMax) {
            return vocab_error(Errc::Corrupt, "tokenizer.ggml.token_type[" + std::to_string(i) +
                                                  "]: invalid type " +
                                                  std::to_string(impl->types[i]));
        }
    }

    const std::pair<const char*, TokenId> ids[] = {
        {"tokenizer.ggml.bos_token_id", vocab.bos_id},
        {"tokenizer.ggml.eos_token_id", vocab.eos_id},
        {"tokenizer.ggml.unknown_token_id", vocab.unknown_id},
        {"tokenizer.ggml.padding_token_id", vocab.padding_id},
    };
    for (const auto& [key, id] : ids) {
        if (id < -1 || id >= static_cast<TokenId>(n_vocab)) {
            return vocab_error(Errc::Corrupt, std::string(key) + ": id " + std::to_string(id) +
                                                  " outside the vocabulary [0, " +
                                                  std::to_string(n_vocab) + ")");
        }
    }
    impl->bos = vocab.bos_id;
    impl->eos = vocab.eos_id;
    impl->unk = vocab.unknown_id;
    impl->pad = vocab.padding_id;

    // Token texts (byte-level alphabet) -> ids, first id winning on duplicates.
    std::unordered_map<std::string_view, TokenId> text_to_id;
    text_to_id.reserve(n_vocab);
    for (size_t i = 0; i < n_vocab; ++i)
        text_to_id.emplace(vocab.tokens[i], static_cast<TokenId>(i));

    const auto& alphabet = byte_alphabet();
    for (int b = 0; b < 256; ++b) {
        std::string text;
        append_utf8(text, alphabet.byte_to_cp[b]);
        auto it = text_to_id.find(text);
        impl->byte_ids[b] = it == text_to_id.end() ? -1 : it->second;
    }

    impl->merges.reserve(vocab.merges.size());
    for (size_t r = 0; r < vocab.merges.size(); ++r) {
        const std::string_view merge = vocab.merges[r];
        const size_t space = merge.find(' ', 1);
        auto where = [&] {
            return "tokenizer.ggml.merges[" + std::to_string(r) + "] '" + std::string(merge) +
                   "': ";
        };
        if (space == std::string_view::npos || space + 1 >= merge.size()) {
            return vocab_error(Errc::Corrupt, where() + "not of the form \"left right\"");
        }
        const std::string_view left = merge.substr(0, space), right = merge.substr(space + 1);
        const auto l = text_to_id.find(left), rt = text_to_id.find(right);
        const auto joined = text_to_id.find(std::string(left) + std::string(right));
        if (l == text_to_id.end() || rt == text_to_id.end() || joined == text_to_id.end()) {
            return vocab_error(
                Errc::Corrupt,
                where() + "a side or the merged token is not in tokenizer.ggml.tokens");
        }
        impl->merges.insert(l->second, rt->second, static_cast<int32_t>(r), joined->second);
    }

    impl->pieces.resize(n_vocab);
    for (size_t i = 0; i < n_vocab; ++i) {
        const int32_t type = impl->types[i];
        const bool literal =
            type == kTypeControl || type == kTypeUserDefined || type == kTypeUnknown;
        impl->pieces[i] = literal ? vocab.tokens[i] : unmap_bytes(vocab.tokens[i]);
    }
    impl->piece_to_id.reserve(n_vocab);
    for (size_t i = 0; i < n_vocab; ++i) {
        impl->piece_to_id.emplace(impl->pieces[i], static_cast<TokenId>(i));
        const int32_t type = impl->types[i];
        if ((type == kTypeControl || type == kTypeUserDefined) && !impl->pieces[i].empty()) {
            const std::string_view text = impl->pieces[i];
            impl->specials[static_cast<unsigned char>(text[0])].emplace_back(
                text, static_cast<TokenId>(i));
            impl->has_specials = true;
        }
    }
    for (auto& list : impl->specials) {
        std::stable_sort(list.begin(), list.end(), [](const auto& a, const auto& b) {
            return a.first.size() > b.first.size();
        });
    }

    auto special_id = [&](std::string_view text) -> TokenId {
        auto it = impl->piece_to_id.find(text);
        return it != impl->piece_to_id.end() && impl->types[it->second] == kTypeControl ? it->second
                                                                                        : -1;
    };
    impl->im_start = special_id("<|im_start|>");
    impl->im_end = special_id("<|im_end|>");
    for (TokenId id :
         {impl->eos, impl->im_end, special_id("<|endoftext|>"), special_id("<|eot_id|>")}) {
        if (id >= 0 && std::find(impl->eog.begin(), impl->eog.end(), id) == impl->eog.end()) {
            impl->eog.push_back(id);
        }
    }
    impl->default_system = find_default_system_turn(vocab.chat_template);
    impl->chat_template = vocab.chat_template;
    impl->model_name = vocab.model_name;
    return Tokenizer(std::move(impl));
}

Result<Tokenizer> Tokenizer::from_gguf(const GgufFile& file) {
    TokenizerVocab vocab;
    {
        auto model = file.get_string("tokenizer.ggml.model");
        if (!model) return model.error();
        vocab.model = std::move(*model);
    }
    if (vocab.model != "gpt2") {
        return vocab_error(Errc::Unsupported, "tokenizer.ggml.model: unsupported model '" +
                                                  vocab.model + "' (only gpt2 byte-level BPE)");
    }
    if (file.has("tokenizer.ggml.pre")) {
        auto pre = file.get_string("tokenizer.ggml.pre");
        if (!pre) return pre.error();
        vocab.pre = std::move(*pre);
    }
    {
        auto tokens = file.get_string_array("tokenizer.ggml.tokens");
        if (!tokens) return tokens.error();
        vocab.tokens = std::move(*tokens);
    }
    if (file.has("tokenizer.ggml.token_type")) {
        auto types = file.get_int_array("tokenizer.ggml.token_type");
        if (!types) return types.error();
        vocab.token_types.reserve(types->size());
        for (size_t i = 0; i < types->size(); ++i) {
            const int64_t t = (*types)[i];
            if (t < 0 || t > kTypeMax) {
                return vocab_error(Errc::Corrupt, "tokenizer.ggml.token_type[" + std::to_string(i) +
                                                      "]: invalid type " + std::to_string(t));
            }
            vocab.token_types.push_back(static_cast<int32_t>(t));
        }
    }
    {
        auto merges = file.get_string_array("tokenizer.ggml.merges");
        if (!merges) return merges.error();
        vocab.merges = std::move(*merges);
    }
    const std::pair<const char*, TokenId*> id_keys[] = {
        {"tokenizer.ggml.bos_token_id", &vocab.bos_id},
        {"tokenizer.ggml.eos_token_id", &vocab.eos_id},
        {"tokenizer.ggml.unknown_token_id", &vocab.unknown_id},
        {"tokenizer.ggml.padding_token_id", &vocab.padding_id},
    };
    for (const auto& [key, dst] : id_keys) {
        if (!file.has(key)) continue;
        auto v = file.get_int(key);
        if (!v) return v.error();
        if (*v < 0 || *v >= static_cast<int64_t>(vocab.tokens.size())) {
            return vocab_error(Errc::Corrupt, std::string(key) + ": id " + std::to_string(*v) +
                                                  " outside the vocabulary [0, " +
                                                  std::to_string(vocab.tokens.size()) + ")");
        }
        *dst = static_cast<TokenId>(*v);
    }
    if (file.has("tokenizer.chat_template")) {
        auto tmpl = file.get_string("tokenizer.chat_template");
        if (!tmpl) return tmpl.error();
        vocab.chat_template = std::move(*tmpl);
    }
    // Only for messages: a general.name that is not a string is passed over, not an error.
    if (file.has("general.name")) {
        if (auto name = file.get_string("general.name")) vocab.model_name = std::move(*name);
    }
    if (vocab.model_name.empty()) {
        const std::string& path = file.path();
        vocab.model_name = path.substr(path.find_last_of('/') + 1);
    }
    return from_vocab(vocab);
}

Result<std::vector<TokenId>> Tokenizer::encode(std::string_view text, bool parse_special) const {
    ATTNRAG_TRY(check_utf8(text, "input"));
    std::vector<TokenId> out;
    out.reserve(text.size() / 3 + 1);
    Workspace ws;
    if (!parse_special || !impl_->has_specials) {
        impl_->encode_plain(text, ws, out);
        return out;
    }
    std::vector<Segment> segments;
    impl_->split_special(text, segments);
    for (const auto& s : segments) {
        if (s.special >= 0) {
            out.push_back(s.special);
        } else {
            impl_->encode_plain(s.text, ws, out);
        }
    }
    return out;
}

std::string Tokenizer::decode(std::span<const TokenId> ids) const {
    std::string out;
    for (TokenId id : ids) {
        if (id >= 0 && id < n_vocab()) out += impl_->pieces[id];
    }
    return out;
}

std::string Tokenizer::piece(TokenId id) const {
    return id >= 0 && id < n_vocab() ? impl_->pieces[id] : std::string{};
}

int32_t Tokenizer::n_vocab() const {
    return static_cast<int32_t>(impl_->pieces.size());
}
TokenId Tokenizer::bos_id() const {
    return impl_->bos;
}
TokenId Tokenizer::eos_id() const {
    return impl_->eos;
}

bool Tokenizer::is_end_of_generation(TokenId id) const {
    return id >= 0 && std::find(impl_->eog.begin(), impl_->eog.end(), id) != impl_->eog.end();
}

bool Tokenizer::is_special(TokenId id) const {
    return id >= 0 && id < n_vocab() && impl_->types[id] == kTypeControl;
}

const std::string& Tokenizer::chat_template() const {
    return impl_->chat_template;
}
const std::string& Tokenizer::default_system_turn() const {
    return impl_->default_system;
}
const std::string& Tokenizer::model_name() const {
    return impl_->model_name;
}

TokenId Tokenizer::find_token(std::string_view text) const {
    auto it = impl_->piece_to_id.find(text);
    return it == impl_->piece_to_id.end() ? -1 : it->second;
}

Result<std::vector<TokenId>> Tokenizer::encode_chat(std::span<const ChatMessage> messages,
                                                    bool add_generation_prompt,
                                                    bool template_default_system) const {
    const Impl& im = *impl_;
    if (im.im_start < 0 || im.im_end < 0) {
        return make_error(Errc::Unsupported,
                          "tokenizer: encode_chat needs the ChatML tokens <|im_start|> and "
                          "<|im_end|>, which this vocabulary lacks");
    }
    // The rendered conversation as special tokens and plain text; adjacent plain text is joined
    // so that it is pre-tokenized exactly as the template's rendered string would be.
    std::vector<Segment> segments;
    auto add_special = [&](TokenId id) { segments.push_back({id, {}}); };
    auto add_text = [&](std::string_view text) {
        if (text.empty()) return;
        if (segments.empty() || segments.back().special >= 0) segments.push_back({-1, {}});
        segments.back().text += text;
    };
    for (size_t i = 0; i < messages.size(); ++i) {
        const ChatMessage& m = messages[i];
        ATTNRAG_TRY(check_utf8(m.role, "message " + std::to_string(i) + " role"));
        ATTNRAG_TRY(check_utf8(m.content, "message " + std::to_string(i) + " content"));
        if (template_default_system && i == 0 && m.role != "system" && !im.default_system.empty()) {
            std::vector<Segment> parts;
            im.split_special(im.default_system, parts);
            for (auto& p : parts) {
                if (p.special >= 0) {
                    add_special(p.special);
                } else {
                    add_text(p.text);
                }
            }
        }
        add_special(im.im_start);
        add_text(m.role);
        add_text("\n");
        add_text(m.content);
        add_special(im.im_end);
        add_text("\n");
    }
    if (add_generation_prompt) {
        add_special(im.im_start);
        add_text("assistant\n");
    }
    std::vector<TokenId> out;
    Workspace ws;
    for (const auto& s : segments) {
        if (s.special >= 0) {
            out.push_back(s.special);
        } else {
            im.encode_plain(s.text, ws, out);
        }
    }
    return out;
}

}  // namespace attnrag
