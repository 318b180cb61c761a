// The chunker: sentence-aligned pieces of text under a token budget, with optional overlap.
//
// Two levels share one greedy packer: a sentence over the budget is packed from its words (a
// word over the budget first cut at character boundaries) into sentence-sized units; the units
// are then packed into chunks. The packer estimates a chunk's size as the sum of its parts'
// counts (each part counted once, so counting stays linear in the text) and recounts the final
// chunk text, shrinking it by binary search in the rare case where tokens are not additive.
#include <algorithm>

#include "attnrag/text.hpp"
#include "text/segment.h"
#include "text/utf8.h"

namespace attnrag::text {
namespace {

using Counter = std::function<uint32_t(std::string_view)>;

struct Part {
    uint64_t begin = 0, end = 0;  // [begin, end) in the text, trimmed
    uint32_t n_tokens = 0;        // count of the part's own text
    bool para_start = false;      // a blank line separates it from the previous part
};

struct Packed {
    size_t first = 0, last = 0;  // parts [first, last)
    uint32_t n_tokens = 0;       // count of text [parts[first].begin, parts[last - 1].end)
};

class Packer {
 public:
    Packer(std::string_view text, uint32_t max_tokens, const Counter& count)
        : text_(text), max_(max_tokens), count_(count) {}

    uint32_t count(uint64_t b, uint64_t e) const {
        return count_(text_.substr(static_cast<size_t>(b), static_cast<size_t>(e - b)));
    }

    // Greedy packing of parts (each within the budget, or a single character) into runs.
    std::vector<Packed> pack(const std::vector<Part>& parts, uint32_t overlap_tokens,
                             bool prefer_paragraphs) const {
        std::vector<Packed> out;
        const size_t n = parts.size();
        auto span_count = [&](size_t first, size_t last) {
            return count(parts[first].begin, parts[last - 1].end);
        };
        size_t next = 0;  // first part not yet in any run
        size_t prev_first = npos;
        while (next < n) {
            size_t first = next;
            uint64_t est = 0;
            if (overlap_tokens > 0 && prev_first != npos) {
                // Trailing parts of the previous run (never its first: each run must advance).
                size_t k = next;
                while (k > prev_first + 1 && est + parts[k - 1].n_tokens <= overlap_tokens) {
                    est += parts[--k].n_tokens;
                }
                first = k;
                while (first < next && est + parts[next].n_tokens > max_) {
                    est -= parts[first++].n_tokens;
                }
            }
            size_t last = next + 1;  // at least one new part
            est += parts[next].n_tokens;
            while (last < n) {
                const Part& p = parts[last];
                if (est + p.n_tokens > max_) break;
                if (prefer_paragraphs && p.para_start && 2 * est >= max_) break;
                est += p.n_tokens;
                ++last;
            }
            uint32_t n_tokens = span_count(first, last);
            if (n_tokens > max_) {
                // Not additive here: the longest prefix that fits, keeping one new part.
                size_t lo = next + 1, hi = last - 1, best = 0;
                uint32_t best_tokens = 0;
                while (lo <= hi) {
                    const size_t mid = lo + (hi - lo) / 2;
                    const uint32_t t = span_count(first, mid);
                    if (t <= max_) {
                        best = mid;
                        best_tokens = t;
                        lo = mid + 1;
                    } else {
                        hi = mid - 1;
                    }
                }
                if (best != 0) {
                    last = best;
                    n_tokens = best_tokens;
                } else {
                    // One new part does not fit beside the overlap: drop overlap parts.
                    last = next + 1;
                    n_tokens = parts[next].n_tokens;
                    while (first < next) {
                        ++first;
                        n_tokens = span_count(first, last);
                        if (n_tokens <= max_) break;
                    }
                }
            }
            out.push_back(Packed{first, last, n_tokens});
            prev_first = first;
            next = last;
        }
        return out;
    }

    // Cuts [b, e) (one word over the budget) at character boundaries into parts within the
    // budget: gallop to a too-long prefix, then binary search, so counting stays ~linear.
    void split_chars(uint64_t b, uint64_t e, std::vector<Part>& out) const {
        const std::string_view s = text_.substr(0, static_cast<size_t>(e));
        size_t p = static_cast<size_t>(b);
        while (p < e) {
            size_t good = detail::next_char_boundary(s, p);
            uint32_t good_tokens = count(p, good);
            if (good_tokens <= max_) {
                size_t bad = npos;
                size_t step = 16;
                while (good < e) {
                    size_t cand = detail::floor_char_boundary(s, std::min<size_t>(e, good + step));
                    if (cand <= good) cand = detail::next_char_boundary(s, good);
                    const uint32_t t = count(p, cand);
                    if (t > max_) {
                        bad = cand;
                        break;
                    }
                    good = cand;
                    good_tokens = t;
                    step *= 2;
                }
                while (bad != npos) {
                    const size_t mid = detail::floor_char_boundary(s, good + (bad - good) / 2);
                    if (mid <= good) break;
                    const uint32_t t = count(p, mid);
                    if (t <= max_) {
                        good = mid;
                        good_tokens = t;
                    } else {
                        bad = mid;
                    }
                }
            }
            // A single character over the budget stays a part of its own.
            out.push_back(Part{p, good, good_tokens, false});
            p = good;
        }
    }

    // The parts of one sentence over the budget: its words packed into runs.
    void split_sentence(Span sentence, std::vector<Part>& out) const {
        const auto words = detail::split_words(text_.substr(static_cast<size_t>(sentence.begin),
                                                            static_cast<size_t>(sentence.size())));
        std::vector<Part> atoms;
        atoms.reserve(words.size());
        for (const Span& w : words) {
            const uint64_t b = sentence.begin + w.begin, e = sentence.begin + w.end;
            const uint32_t t = count(b, e);
            if (t <= max_) {
                atoms.push_back(Part{b, e, t, false});
            } else {
                split_chars(b, e, atoms);
            }
        }
        if (atoms.empty()) return;
        for (const Packed& r : pack(atoms, 0, false)) {
            out.push_back(Part{atoms[r.first].begin, atoms[r.last - 1].end, r.n_tokens, false});
        }
    }

 private:
    std::string_view text_;
    uint32_t max_;
    const Counter& count_;
};

// A blank line (two newlines in the white space between two parts) starts a paragraph.
bool has_blank_line(std::string_view gap) {
    return std::count(gap.begin(), gap.end(), '\n') >= 2;
}

}  // namespace

std::vector<Chunk> chunk_text(std::string_view text, const ChunkOptions& opts,
                              const std::function<uint32_t(std::string_view)>& count_tokens) {
    std::vector<Chunk> chunks;
    if (text.empty()) return chunks;
    const uint32_t max_tokens = std::max<uint32_t>(opts.max_tokens, 1);
    const Packer packer(text, max_tokens, count_tokens);

    std::vector<Part> units;
    uint64_t prev_end = 0;
    for (const Span& s : split_sentences(text)) {
        const bool para_start =
            !units.empty() && has_blank_line(text.substr(static_cast<size_t>(prev_end),
                                                         static_cast<size_t>(s.begin - prev_end)));
        prev_end = s.end;
        const uint32_t t = packer.count(s.begin, s.end);
        if (t <= max_tokens) {
            units.push_back(Part{s.begin, s.end, t, para_start});
            continue;
        }
        const size_t first_piece = units.size();
        packer.split_sentence(s, units);
        if (units.size() > first_piece) units[first_piece].para_start = para_start;
    }
    if (units.empty()) return chunks;

    for (const Packed& r : packer.pack(units, opts.overlap_tokens, true)) {
        Chunk c;
        c.ordinal = static_cast<uint32_t>(chunks.size());
        c.span = Span{units[r.first].begin, units[r.last - 1].end};
        c.n_tokens = r.n_tokens;
        chunks.push_back(c);
    }
    return chunks;
}

}  // namespace attnrag::text
