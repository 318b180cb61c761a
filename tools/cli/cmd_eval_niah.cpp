// attnrag eval niah: needle-in-a-haystack over a grid of haystack lengths x needle depths
// (InfiniRetri or one full prompt), printed as a grid, as JSON, and as an SVG heatmap.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <tuple>

#include "args.h"
#include "attnrag/pipelines/infiniretri.hpp"
#include "attnrag/pipelines/qa_metrics.hpp"
#include "attnrag/text.hpp"
#include "common.h"
#include "infiniretri_args.h"
#include "progress.h"

namespace attnrag::cli {

namespace {

namespace fs = std::filesystem;
using pipelines::InfiniRetri;
using pipelines::SentenceSource;

struct Needle {
    std::string id, needle, question;
    std::vector<std::string> answers;
};

struct Cell {
    int64_t length = 0;
    int32_t depth = 0;
    std::string needle_id;
    bool hit = false, skipped = false;
    bool needle_kept = false;  // InfiniRetri: a kept sentence holds the needle (retrieval worked)
    bool needle_reserved = false;  // that sentence came from the reserve, not the last cache
    // Its rank among the kept sentences (1 = best; 0 = not kept): by relevance where computed
    // (--answer-context), else by score.
    int32_t needle_rank = 0;
    // Chunk passes (1-based) after which the needle was first in the cache and after which it
    // had left it again (0: never). A needle dropped was read and kept, then outscored.
    int32_t needle_cached_chunk = 0, needle_dropped_chunk = 0;
    double seconds = 0;
    int64_t tokens_read = 0;
    int64_t tokens_resumed = 0;  // of tokens_read, taken from a checkpoint of another depth
    int32_t n_chunks = 0, cache_tokens = 0;
    std::string prediction;
    // --compare-answer-context: the same reading answered with other answer contexts.
    struct Variant {
        int32_t answer_context = 0;
        bool hit = false;
        std::string prediction;
    };
    std::vector<Variant> variants;
    // The answers the reading chose among (--answer-alternatives), primary context first.
    struct Candidate {
        int32_t answer_context = 0;
        bool hit = false, chosen = false;
        float grounding = 0;
        std::string prediction;
    };
    std::vector<Candidate> candidates;
};

// (hits, n) of the k-th --compare-answer-context value over the cells that were answered.
std::pair<int, int> variant_hits(const std::vector<Cell>& cells, size_t k) {
    int hits = 0, n = 0;
    for (const auto& c : cells) {
        if (c.skipped || k >= c.variants.size()) continue;
        hits += c.variants[k].hit;
        ++n;
    }
    return {hits, n};
}

nlohmann::json cell_json(const Cell& c, bool with_variants) {
    nlohmann::json j = {{"length", c.length},
                        {"depth", c.depth},
                        {"needle", c.needle_id},
                        {"hit", c.hit},
                        {"skipped", c.skipped},
                        {"seconds", c.seconds},
                        {"tokens_read", c.tokens_read},
                        {"tokens_resumed", c.tokens_resumed},
                        {"chunks", c.n_chunks},
                        {"cache_tokens", c.cache_tokens},
                        {"needle_kept", c.needle_kept},
                        {"needle_rank", c.needle_rank},
                        {"needle_cached_chunk", c.needle_cached_chunk},
                        {"needle_dropped_chunk", c.needle_dropped_chunk},
                        {"prediction", c.prediction}};
    if (c.needle_reserved) j["needle_reserved"] = true;
    if (!c.candidates.empty()) {
        auto& cs = j["candidates"] = nlohmann::json::array();
        for (const auto& v : c.candidates) {
            cs.push_back({{"answer_context", v.answer_context},
                          {"hit", v.hit},
                          {"chosen", v.chosen},
                          {"grounding", v.grounding},
                          {"prediction", v.prediction}});
        }
    }
    if (with_variants) {
        auto& vs = j["compare"] = nlohmann::json::array();
        for (const auto& v : c.variants)
            vs.push_back({{"answer_context", v.answer_context}, {"hit", v.hit}, {"prediction", v.prediction}});
    }
    return j;
}

// A cell written by cell_json() (a --cells line); nullopt when `j` is not one.
std::optional<Cell> cell_from_json(const nlohmann::json& j) {
    if (!j.is_object()) return std::nullopt;
    try {
        Cell c;
        c.length = j.at("length").get<int64_t>();
        c.depth = j.at("depth").get<int32_t>();
        c.needle_id = j.at("needle").get<std::string>();
        c.hit = j.at("hit").get<bool>();
        c.skipped = j.value("skipped", false);
        c.seconds = j.value("seconds", 0.0);
        c.tokens_read = j.value("tokens_read", int64_t{0});
        c.tokens_resumed = j.value("tokens_resumed", int64_t{0});
        c.n_chunks = j.value("chunks", 0);
        c.cache_tokens = j.value("cache_tokens", 0);
        c.needle_kept = j.value("needle_kept", false);
        c.needle_rank = j.value("needle_rank", 0);
        c.needle_reserved = j.value("needle_reserved", false);
        c.needle_cached_chunk = j.value("needle_cached_chunk", 0);
        c.needle_dropped_chunk = j.value("needle_dropped_chunk", 0);
        c.prediction = j.value("prediction", std::string());
        for (const auto& v : j.value("candidates", nlohmann::json::array())) {
            c.candidates.push_back({v.at("answer_context").get<int32_t>(), v.at("hit").get<bool>(),
                                    v.value("chosen", false), v.value("grounding", 0.0f),
                                    v.value("prediction", std::string())});
        }
        for (const auto& v : j.value("compare", nlohmann::json::array())) {
            c.variants.push_back({v.at("answer_context").get<int32_t>(), v.at("hit").get<bool>(),
                                  v.value("prediction", std::string())});
        }
        if (c.length <= 0 || c.depth < 0 || c.depth > 100) return std::nullopt;
        return c;
    } catch (const nlohmann::json::exception&) {
        return std::nullopt;
    }
}

// Fills `cell` from an InfiniRetri (or full-prompt) answer: the hit, the candidates, the reading
// counters, where the needle is among the kept sentences, and the --compare-answer-context
// variants (answered again from the same kept sentences). The needle's cached/dropped chunks are
// the caller's (they come from the checkpoints of the reading).
Status score_cell(Cell& cell, const pipelines::InfiniRetriAnswer& a, const Needle& n, InfiniRetri& ir,
                  const pipelines::InfiniRetriOptions& opt, const std::vector<int32_t>& compare) {
    cell.hit = pipelines::contains_answer(a.text, n.answers);
    cell.prediction = a.text;
    cell.candidates.clear();
    for (size_t k = 0; k < a.candidates.size(); ++k) {
        const auto& c = a.candidates[k];
        cell.candidates.push_back({c.context_budget, pipelines::contains_answer(c.text, n.answers),
                                   static_cast<int32_t>(k) == a.chosen, c.grounding, c.text});
    }
    cell.tokens_read = a.n_tokens_read;
    cell.tokens_resumed = a.n_tokens_resumed;
    cell.n_chunks = a.n_chunks;
    cell.cache_tokens = a.n_cache_tokens;
    const auto holds = [&](const pipelines::KeptSentence& k) { return k.text.find(n.needle) != std::string::npos; };
    const auto needle_at = std::find_if(a.kept.begin(), a.kept.end(), holds);
    cell.needle_kept = needle_at != a.kept.end();
    cell.needle_reserved = cell.needle_kept && needle_at->reserved;
    cell.needle_rank = 0;
    if (cell.needle_kept) {
        cell.needle_rank = 1 + static_cast<int32_t>(std::count_if(
                                   a.kept.begin(), a.kept.end(), [&](const pipelines::KeptSentence& k) {
                                       return k.relevance > 0 ? k.relevance > needle_at->relevance
                                                              : k.score > needle_at->score;
                                   }));
    }
    cell.variants.clear();
    for (const int32_t budget : compare) {
        pipelines::InfiniRetriOptions ov = opt;
        ov.answer_context_tokens = budget;
        ov.answer_alternatives.clear();  // what this one context answers
        ov.on_text = nullptr;
        auto v = ir.answer_again(a, n.question, ov);
        if (!v) {
            return make_error(v.error().code,
                              "answer context " + std::to_string(budget) + ": " + v.error().message);
        }
        cell.variants.push_back({budget, pipelines::contains_answer(v->text, n.answers), v->text});
    }
    return {};
}

// --verbose: a cell's answer on stderr, with why the needle was not kept and the variants.
void print_cell(const std::string& where, const Cell& cell, bool infiniretri) {
    std::fprintf(stderr, "%s: %s %s\n", where.c_str(), cell.skipped ? "skipped" : (cell.hit ? "HIT " : "miss"),
                 json_string(cell.prediction).c_str());
    if (cell.needle_dropped_chunk > 0) {
        std::fprintf(stderr, "  the needle was kept after chunk %d and dropped after chunk %d of %d\n",
                     cell.needle_cached_chunk, cell.needle_dropped_chunk, cell.n_chunks);
    } else if (infiniretri && !cell.needle_kept) {
        std::fprintf(stderr, "  the needle was not kept by the chunk pass that read it\n");
    }
    for (const auto& c : cell.candidates) {
        std::fprintf(stderr, "  %s context %d (grounding %.2f): %s %s\n", c.chosen ? "chosen" : "      ",
                     c.answer_context, static_cast<double>(c.grounding), c.hit ? "HIT " : "miss",
                     json_string(c.prediction).c_str());
    }
    for (const auto& v : cell.variants) {
        std::fprintf(stderr, "  answer context %d: %s %s\n", v.answer_context, v.hit ? "HIT " : "miss",
                     json_string(v.prediction).c_str());
    }
}

// A cell's reading with its kept sentences (--save-kept): enough to answer it again with other
// answer settings (--answer-from-kept) without reading the haystack.
struct SavedReading {
    Cell cell;
    std::string question;
    pipelines::InfiniRetriAnswer read;  // the kept sentences and the reading counters
};

// A --save-kept line: the cell, the question it was read for, and the reading.
nlohmann::json saved_cell_json(const Cell& cell, const std::string& question, const pipelines::InfiniRetriAnswer& a) {
    nlohmann::json j = saved_reading_json(a);
    j["cell"] = cell_json(cell, false);
    j["question"] = question;
    return j;
}

// A line written by saved_cell_json(); nullopt when `j` is not one.
std::optional<SavedReading> saved_cell_from_json(const nlohmann::json& j) {
    if (!j.is_object() || !j.contains("cell") || !j.contains("question") || !j["question"].is_string())
        return std::nullopt;
    auto cell = cell_from_json(j["cell"]);
    auto read = saved_reading_from_json(j);
    if (!cell || !read || j["question"].get<std::string>().empty()) return std::nullopt;
    return SavedReading{std::move(*cell), j["question"].get<std::string>(), std::move(*read)};
}

// The records of a JSONL file of cells (--from-cells) or of saved readings (--answer-from-kept):
// blank lines are skipped, a line `parse` rejects is an error naming it ("FLAG FILE: line N is
// not WHAT"), and a later record for the same length, depth and needle replaces an earlier one,
// so the files of runs that each measured part of a grid can be concatenated.
template <class T, class Parse, class CellOf>
Result<std::vector<T>> read_records(const std::string& flag, const std::string& path, const std::string& what,
                                    Parse parse, CellOf cell_of) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return make_error(Errc::NotFound, flag + " " + path + ": cannot open");
    std::vector<T> records;
    std::map<std::tuple<int64_t, int32_t, std::string>, size_t> where;  // cell -> index in records
    size_t line_no = 0;
    for (std::string line; std::getline(in, line);) {
        ++line_no;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        std::optional<T> rec = parse(nlohmann::json::parse(line, nullptr, false));
        if (!rec) {
            return make_error(Errc::InvalidArgument,
                              flag + " " + path + ": line " + std::to_string(line_no) + " is not " + what);
        }
        const Cell& c = cell_of(*rec);
        const auto key = std::make_tuple(c.length, c.depth, c.needle_id);
        if (auto it = where.find(key); it != where.end()) {
            records[it->second] = std::move(*rec);
        } else {
            where.emplace(key, records.size());
            records.push_back(std::move(*rec));
        }
    }
    if (records.empty()) return make_error(Errc::InvalidArgument, flag + " " + path + ": no cells");
    return records;
}

// "4k" -> 4000, "1m" -> 1000000, "2500" -> 2500 (decimal multipliers, as NIH tables write them).
std::optional<int64_t> parse_length(std::string s) {
    if (s.empty()) return std::nullopt;
    int64_t mult = 1;
    const char last = static_cast<char>(std::tolower(static_cast<unsigned char>(s.back())));
    if (last == 'k') mult = 1000;
    if (last == 'm') mult = 1000000;
    if (mult != 1) s.pop_back();
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0' || v <= 0) return std::nullopt;
    return static_cast<int64_t>(std::llround(v * static_cast<double>(mult)));
}

std::string length_label(int64_t n) {
    if (n >= 1000000 && n % 1000000 == 0) return std::to_string(n / 1000000) + "M";
    if (n >= 1000 && n % 1000 == 0) return std::to_string(n / 1000) + "K";
    return std::to_string(n);
}

std::vector<std::string> split_list(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) {
        if (!item.empty()) out.push_back(item);
    }
    return out;
}

std::optional<std::vector<int32_t>> parse_ints(const std::string& s) {
    std::vector<int32_t> out;
    for (const auto& item : split_list(s)) {
        char* end = nullptr;
        const long v = std::strtol(item.c_str(), &end, 10);
        if (*end != '\0') return std::nullopt;
        out.push_back(static_cast<int32_t>(v));
    }
    return out;
}

Result<std::vector<Needle>> read_needles(const fs::path& path) {
    std::ifstream in(path);
    if (!in) return make_error(Errc::NotFound, path.string() + ": cannot open");
    std::vector<Needle> out;
    std::string line;
    int line_no = 0;
    while (std::getline(in, line)) {
        ++line_no;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_discarded() || !j.is_object() || !j.contains("needle") ||
            !j.contains("question") || !j.contains("answers")) {
            return make_error(Errc::InvalidArgument,
                              path.string() + ":" + std::to_string(line_no) +
                                  ": expected {\"id\", \"needle\", \"question\", \"answers\"}");
        }
        Needle n;
        n.id = j.value("id", "needle" + std::to_string(out.size()));
        n.needle = j["needle"].get<std::string>();
        n.question = j["question"].get<std::string>();
        n.answers = j["answers"].get<std::vector<std::string>>();
        out.push_back(std::move(n));
    }
    if (out.empty()) return make_error(Errc::InvalidArgument, path.string() + ": no needles");
    return out;
}

// ---- Haystack -------------------------------------------------------------------------------

// The haystack source text (the files joined by blank lines, repeated as needed) split once into
// sentences with the pipeline's token counts; a haystack of any length is a prefix of the cycle,
// built as text (never as token ids).
class Haystack {
 public:
    static Result<Haystack> load(const fs::path& path, const Tokenizer& tok) {
        auto files = pipelines::text_files(path);
        if (!files) return files.error();
        Haystack h;
        for (const auto& f : *files) {
            std::ifstream in(f, std::ios::binary);
            std::string body((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
            if (const size_t bad = text::find_invalid_utf8(body); bad != text::npos) {
                return make_error(
                    Errc::InvalidArgument,
                    f.string() + ": invalid UTF-8 at byte offset " + std::to_string(bad));
            }
            h.text_ += body;
            h.text_ += "\n\n";
        }
        auto src = SentenceSource::from_text(h.text_);
        for (;;) {
            auto s = src.next();
            if (!s) return s.error();
            if (!*s) break;
            auto ids =
                tok.encode((*s)->paragraph_start ? "\n\n" + (*s)->text : " " + (*s)->text, false);
            if (!ids) return ids.error();
            h.ends_.push_back((*s)->end);
            h.tokens_.push_back(static_cast<int64_t>(ids->size()));
        }
        if (h.ends_.empty()) return make_error(Errc::InvalidArgument, path.string() + ": no text");
        return h;
    }

    size_t n_files_text_bytes() const { return text_.size(); }

    // The first sentences of the cycle totalling at most n_tokens (at least one), and the
    // cumulative token count before each sentence boundary: boundaries[k] = tokens of sentences
    // [0, k), with byte offsets where those sentences end.
    struct Cut {
        std::string text;
        std::vector<uint64_t> end_bytes;  // [n_sentences] end of sentence k in `text`
        std::vector<int64_t> before;      // [n_sentences + 1] tokens before sentence k
    };
    Cut cut(int64_t n_tokens) const {
        Cut c;
        c.before.push_back(0);
        size_t k = 0;
        uint64_t cycle_base = 0;  // offset of the current cycle in c.text
        while (true) {
            const int64_t t = tokens_[k];
            if (!c.end_bytes.empty() && c.before.back() + t > n_tokens) break;
            c.end_bytes.push_back(cycle_base + ends_[k]);
            c.before.push_back(c.before.back() + t);
            if (++k == ends_.size()) {
                k = 0;
                c.text += text_;
                cycle_base += text_.size();
            }
        }
        const uint64_t end = c.end_bytes.back();
        if (end > c.text.size())
            c.text += std::string_view(text_).substr(0, static_cast<size_t>(end - cycle_base));
        c.text.resize(static_cast<size_t>(end));
        return c;
    }

 private:
    std::string text_;
    std::vector<uint64_t> ends_;   // sentence end offsets in text_
    std::vector<int64_t> tokens_;  // sentence token counts (with the leading separator)
};

// The haystack with the needle inserted at the sentence boundary nearest depth% of its tokens,
// and the byte offset where the needle went in (the text before it is the haystack's).
struct NeedleText {
    std::string text;
    uint64_t at = 0;
};
NeedleText with_needle(const Haystack::Cut& c, int32_t depth, const std::string& needle) {
    const double target = static_cast<double>(c.before.back()) * depth / 100.0;
    // Only boundaries with white space after them: where a sentence starts right after the one
    // before it (ICU ends "working.[" before "5] Several..."), a needle put there would run into
    // the next sentence and be read as part of it.
    const auto spaced = [&](size_t k) {
        if (k == 0 || k == c.end_bytes.size()) return true;
        const auto at = static_cast<size_t>(c.end_bytes[k - 1]);
        return at >= c.text.size() || std::isspace(static_cast<unsigned char>(c.text[at])) != 0;
    };
    size_t best = 0;
    for (size_t k = 0; k < c.before.size(); ++k) {
        if (spaced(k) && std::abs(static_cast<double>(c.before[k]) - target) <
                             std::abs(static_cast<double>(c.before[best]) - target)) {
            best = k;
        }
    }
    if (best == 0) return {needle + "\n\n" + c.text, 0};
    const auto pos = static_cast<size_t>(c.end_bytes[best - 1]);
    std::string out;
    out.reserve(c.text.size() + needle.size() + 1);
    out.append(c.text, 0, pos);
    out += ' ';
    out += needle;
    out.append(c.text, pos, std::string::npos);
    return {std::move(out), pos};
}

// A needle id as part of a file name: bytes other than ASCII letters, digits, '-' and '_' become '_'.
std::string file_safe(std::string id) {
    for (char& c : id) {
        const auto u = static_cast<unsigned char>(c);
        if (!(std::isalnum(u) && u < 0x80) && c != '-' && c != '_') c = '_';
    }
    return id;
}

// ---- SVG heatmap ----------------------------------------------------------------------------

// Red (0) -> amber (0.5) -> green (1).
std::string heat_colour(double v) {
    v = std::clamp(v, 0.0, 1.0);
    const double r0[3] = {215, 48, 39}, r1[3] = {254, 224, 139}, r2[3] = {26, 152, 80};
    const double* a = v < 0.5 ? r0 : r1;
    const double* b = v < 0.5 ? r1 : r2;
    const double t = v < 0.5 ? v / 0.5 : (v - 0.5) / 0.5;
    char buf[16];
    std::snprintf(buf, sizeof buf, "#%02x%02x%02x",
                  static_cast<int>(std::lround(a[0] + (b[0] - a[0]) * t)),
                  static_cast<int>(std::lround(a[1] + (b[1] - a[1]) * t)),
                  static_cast<int>(std::lround(a[2] + (b[2] - a[2]) * t)));
    return buf;
}

std::string xml_escape(std::string_view s) {
    std::string out;
    for (char c : s) {
        switch (c) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&quot;"; break;
            default: out += c;
        }
    }
    return out;
}

// Rows: lengths (shortest at the top); columns: depths. Each cell shows hits/needles.
std::string heatmap_svg(const std::string& title, const std::vector<int64_t>& lengths,
                        const std::vector<int32_t>& depths,
                        const std::map<std::pair<size_t, size_t>, std::pair<int, int>>& grid) {
    const int cell_w = 56, cell_h = 34, left = 110, top = 64, legend_w = 260;
    // Width: the grid, the legend or the title (~8 px per character at 15 px), whichever is widest.
    const int width = std::max({left + cell_w * static_cast<int>(depths.size()) + 40,
                                left + legend_w + 40, 40 + 8 * static_cast<int>(title.size())});
    const int height = top + cell_h * static_cast<int>(lengths.size()) + 110;
    std::ostringstream o;
    o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" font-family=\"Helvetica, Arial, sans-serif\">\n";
    o << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
    o << "<text x=\"20\" y=\"24\" font-size=\"15\" font-weight=\"bold\">" << xml_escape(title)
      << "</text>\n";
    o << "<text x=\"" << left + cell_w * static_cast<int>(depths.size()) / 2 << "\" y=\""
      << top - 26
      << "\" font-size=\"12\" text-anchor=\"middle\">Needle depth (% of the haystack)</text>\n";
    for (size_t c = 0; c < depths.size(); ++c) {
        o << "<text x=\"" << left + cell_w * static_cast<int>(c) + cell_w / 2 << "\" y=\""
          << top - 8 << "\" font-size=\"11\" text-anchor=\"middle\">" << depths[c] << "%</text>\n";
    }
    const int rows_mid = top + cell_h * static_cast<int>(lengths.size()) / 2;
    o << "<text x=\"18\" y=\"" << rows_mid
      << "\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 18 " << rows_mid
      << ")\">Haystack length (tokens)</text>\n";
    for (size_t r = 0; r < lengths.size(); ++r) {
        const int y = top + cell_h * static_cast<int>(r);
        o << "<text x=\"" << left - 8 << "\" y=\"" << y + cell_h / 2 + 4
          << "\" font-size=\"11\" text-anchor=\"end\">" << length_label(lengths[r]) << "</text>\n";
        for (size_t c = 0; c < depths.size(); ++c) {
            const int x = left + cell_w * static_cast<int>(c);
            auto it = grid.find({r, c});
            if (it == grid.end() || it->second.second == 0) {
                o << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << cell_w
                  << "\" height=\"" << cell_h << "\" fill=\"#dddddd\" stroke=\"white\"/>\n";
                o << "<text x=\"" << x + cell_w / 2 << "\" y=\"" << y + cell_h / 2 + 4
                  << "\" font-size=\"10\" text-anchor=\"middle\" fill=\"#666666\">n/a</text>\n";
                continue;
            }
            const auto [hits, n] = it->second;
            const double v = static_cast<double>(hits) / n;
            o << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << cell_w << "\" height=\""
              << cell_h << "\" fill=\"" << heat_colour(v) << "\" stroke=\"white\"><title>"
              << length_label(lengths[r]) << " tokens, depth " << depths[c] << "%: " << hits << "/"
              << n << "</title></rect>\n";
            o << "<text x=\"" << x + cell_w / 2 << "\" y=\"" << y + cell_h / 2 + 4
              << "\" font-size=\"11\" text-anchor=\"middle\" fill=\""
              << (v < 0.25 ? "white" : "black") << "\">" << hits << "/" << n << "</text>\n";
        }
    }
    // Legend: the colour scale from 0 to 1.
    const int ly = top + cell_h * static_cast<int>(lengths.size()) + 30;
    o << "<defs><linearGradient id=\"scale\">";
    for (int s = 0; s <= 4; ++s) {
        o << "<stop offset=\"" << s * 25 << "%\" stop-color=\"" << heat_colour(s / 4.0) << "\"/>";
    }
    o << "</linearGradient></defs>\n";
    o << "<text x=\"" << left << "\" y=\"" << ly - 6
      << "\" font-size=\"11\">Accuracy (needles found / needles)</text>\n";
    o << "<rect x=\"" << left << "\" y=\"" << ly << "\" width=\"" << legend_w - 60
      << "\" height=\"14\" fill=\"url(#scale)\"/>\n";
    o << "<text x=\"" << left << "\" y=\"" << ly + 28 << "\" font-size=\"10\">0</text>\n";
    o << "<text x=\"" << left + (legend_w - 60) / 2 << "\" y=\"" << ly + 28
      << "\" font-size=\"10\" text-anchor=\"middle\">0.5</text>\n";
    o << "<text x=\"" << left + legend_w - 60 << "\" y=\"" << ly + 28
      << "\" font-size=\"10\" text-anchor=\"end\">1</text>\n";
    o << "</svg>\n";
    return o.str();
}

// What a grid's summary shows besides its cells.
struct GridReport {
    std::string mode;        // infiniretri | full
    std::string source;      // in the plot title: the model file, or the cells file
    nlohmann::json info;     // --json keys describing the run (model, needles, settings, ...)
    std::string heads_read;  // the (layer, head) pairs read, when given
    std::vector<int64_t> lengths;
    std::vector<int32_t> depths;
    std::vector<int32_t> compare;  // --compare-answer-context values
    int32_t answer_context = 0;    // the main answer context (0: unknown)
    size_t n_needles = 0;
    double seconds = 0;            // wall time of the run (0: not measured here)
};

// Prints the grid (text or --json) and writes the heatmap; the exit status.
int print_report(const GridReport& r, const std::vector<Cell>& cells,
                 const std::optional<std::string>& plot_path, bool json) {
    struct LengthStats {
        int hits = 0, n = 0, skipped = 0;
        double seconds = 0;
        int64_t tokens = 0;  // read by the model (checkpointed ones not counted)
    };
    std::vector<LengthStats> per_length(r.lengths.size());
    std::map<std::pair<size_t, size_t>, std::pair<int, int>> grid;  // (length, depth) -> (hits, n)
    for (const Cell& cell : cells) {
        const auto li = static_cast<size_t>(std::find(r.lengths.begin(), r.lengths.end(), cell.length) -
                                            r.lengths.begin());
        const auto di = static_cast<size_t>(std::find(r.depths.begin(), r.depths.end(), cell.depth) -
                                            r.depths.begin());
        if (li == r.lengths.size() || di == r.depths.size()) continue;
        LengthStats& ls = per_length[li];
        if (cell.skipped) {
            ++ls.skipped;
            continue;
        }
        auto& g = grid[{li, di}];
        g.first += cell.hit;
        ++g.second;
        ls.hits += cell.hit;
        ++ls.n;
        ls.seconds += cell.seconds;
        ls.tokens += cell.tokens_read - cell.tokens_resumed;
    }
    const auto& lengths = r.lengths;
    const auto& depths = r.depths;
    const auto& compare = r.compare;
    const auto& mode = r.mode;
    const double total_s = r.seconds;
    int hits = 0, n = 0;
    for (const auto& ls : per_length) {
        hits += ls.hits;
        n += ls.n;
    }
    const double accuracy = n > 0 ? static_cast<double>(hits) / n : 0.0;
    const auto n_kept =
        std::count_if(cells.begin(), cells.end(), [](const Cell& c) { return c.needle_kept; });

    // A plot that cannot be written is reported after the results are printed: they are not lost.
    std::string plot_error;
    if (plot_path) {
        std::string title = "Needle in a haystack, ";
        title += mode == "full" ? "full prompt" : "InfiniRetri";
        title += " (";
        title += r.source;
        title += "): ";
        title += std::to_string(hits);
        title += "/";
        title += std::to_string(n);
        title += " found";
        if (auto st = write_file_replacing(*plot_path, heatmap_svg(title, lengths, depths, grid)); !st)
            plot_error = st.error().message;
    }
    auto finish = [&]() { return plot_error.empty() ? 0 : fail("eval", "--plot: " + plot_error); };

    if (json) {
        nlohmann::json j = r.info;
        j["mode"] = mode;
        j["accuracy"] = accuracy;
        j["hits"] = hits;
        j["n"] = n;
        j["seconds"] = total_s;
        if (mode != "full") j["needles_kept"] = n_kept;
        j["cells"] = nlohmann::json::array();
        for (const auto& c : cells) j["cells"].push_back(cell_json(c, !compare.empty()));
        if (!compare.empty()) {
            j["answer_context"] = r.answer_context;
            j["compare"] = nlohmann::json::array();
            for (size_t k = 0; k < compare.size(); ++k) {
                const auto [v_hits, v_n] = variant_hits(cells, k);
                j["compare"].push_back({{"answer_context", compare[k]},
                                        {"hits", v_hits},
                                        {"n", v_n},
                                        {"accuracy", v_n > 0 ? static_cast<double>(v_hits) / v_n : 0.0}});
            }
        }
        j["lengths"] = nlohmann::json::array();
        for (size_t li = 0; li < lengths.size(); ++li) {
            const auto& ls = per_length[li];
            j["lengths"].push_back(
                {{"length", lengths[li]},
                 {"accuracy", ls.n > 0 ? static_cast<double>(ls.hits) / ls.n : 0.0},
                 {"n", ls.n},
                 {"skipped", ls.skipped},
                 {"seconds", ls.seconds},
                 {"tokens_per_s",
                  ls.seconds > 0 ? static_cast<double>(ls.tokens) / ls.seconds : 0.0}});
        }
        std::printf("%s\n", j.dump().c_str());
        std::fflush(stdout);
        return finish();
    }

    std::printf("needle in a haystack: mode %s, %zu needles, %zu lengths x %zu depths\n",
                mode.c_str(), r.n_needles, lengths.size(), depths.size());
    if (mode != "full" && !r.heads_read.empty())
        std::printf("attention read from (layer:head) %s\n", r.heads_read.c_str());
    std::printf("\n");
    std::printf("%-10s", "length");
    for (int32_t d : depths) std::printf(" %6d%%", d);
    std::printf("\n");
    for (size_t li = 0; li < lengths.size(); ++li) {
        std::printf("%-10s", length_label(lengths[li]).c_str());
        for (size_t di = 0; di < depths.size(); ++di) {
            auto it = grid.find({li, di});
            if (it == grid.end()) {
                std::printf(" %7s", "skip");
            } else {
                const std::string s =
                    std::to_string(it->second.first) + "/" + std::to_string(it->second.second);
                std::printf(" %7s", s.c_str());
            }
        }
        std::printf("\n");
    }
    std::printf("\naccuracy %.3f (%d/%d)", accuracy, hits, n);
    if (mode != "full") std::printf(", needle kept in %ld", static_cast<long>(n_kept));
    const int n_skipped = static_cast<int>(
        std::count_if(cells.begin(), cells.end(), [](const Cell& c) { return c.skipped; }));
    if (n_skipped > 0) std::printf(", %d skipped (the prompt does not fit the window)", n_skipped);
    if (total_s > 0) std::printf(", %.1f s", total_s);
    std::printf("\n");
    for (size_t li = 0; li < lengths.size(); ++li) {
        const auto& ls = per_length[li];
        if (ls.n == 0) {
            std::printf("  %-8s skipped\n", length_label(lengths[li]).c_str());
            continue;
        }
        std::printf("  %-8s accuracy %.3f  %.1f s  %.0f tokens/s\n",
                    length_label(lengths[li]).c_str(), static_cast<double>(ls.hits) / ls.n,
                    ls.seconds, ls.seconds > 0 ? static_cast<double>(ls.tokens) / ls.seconds : 0.0);
    }
    for (size_t k = 0; k < compare.size(); ++k) {
        const auto [v_hits, v_n] = variant_hits(cells, k);
        const std::string instead = r.answer_context > 0 ? "instead of " + std::to_string(r.answer_context) : "alone";
        std::printf("  answer context %d %s: accuracy %.3f (%d/%d)\n", compare[k], instead.c_str(),
                    v_n > 0 ? static_cast<double>(v_hits) / v_n : 0.0, v_hits, v_n);
    }
    if (plot_path && plot_error.empty()) std::printf("heatmap: %s\n", plot_path->c_str());
    std::fflush(stdout);
    return finish();
}

// The grid a set of recorded cells covers: their lengths, depths and needles, the seconds they
// took (summed), and the compared answer contexts when every answered cell compared the same ones.
GridReport grid_of(const std::vector<Cell>& cells, const std::string& mode, const std::string& source) {
    GridReport r;
    r.mode = mode;
    r.source = source;
    std::set<std::string> needle_ids;
    for (const Cell& c : cells) {
        r.lengths.push_back(c.length);
        r.depths.push_back(c.depth);
        needle_ids.insert(c.needle_id);
        r.seconds += c.seconds;
    }
    std::sort(r.lengths.begin(), r.lengths.end());
    r.lengths.erase(std::unique(r.lengths.begin(), r.lengths.end()), r.lengths.end());
    std::sort(r.depths.begin(), r.depths.end());
    r.depths.erase(std::unique(r.depths.begin(), r.depths.end()), r.depths.end());
    r.n_needles = needle_ids.size();
    const auto contexts = [](const Cell& c) {
        std::vector<int32_t> v;
        for (const auto& x : c.variants) v.push_back(x.answer_context);
        return v;
    };
    std::optional<std::vector<int32_t>> same;
    for (const Cell& c : cells) {
        if (c.skipped) continue;
        if (!same) same = contexts(c);
        else if (*same != contexts(c)) same = std::vector<int32_t>{};
    }
    if (same) r.compare = *same;
    return r;
}

// --from-cells: the summary and heatmap of cells recorded by --cells (of one run or of several,
// concatenated: a later line for the same length, depth and needle replaces an earlier one).
int report_from_cells(const std::string& path, const std::string& mode,
                      const std::optional<std::string>& plot_path, bool json) {
    auto cells = read_records<Cell>(
        "--from-cells", path, "a cell (a JSON object with length, depth, needle and hit, as --cells writes them)",
        cell_from_json, [](const Cell& c) -> const Cell& { return c; });
    if (!cells) return fail("eval", cells.error().message);
    GridReport r = grid_of(*cells, mode, "cells of " + fs::path(path).filename().string());
    r.info = {{"cells_file", path}, {"needles", r.n_needles}};
    if (plot_path) {
        if (auto problem = output_path_problem(*plot_path); !problem.empty()) return fail("eval", "--plot " + problem);
    }
    return print_report(r, *cells, plot_path, json);
}

// --answer-from-kept: every cell of a --save-kept file answered again from its kept sentences
// with the answer settings given now (the reading settings are the saved run's), and scored
// against the needles file's answers. The seconds shown are the saved readings'.
int answer_from_kept(const std::string& path, const std::vector<Needle>& needles, const Model& model,
                     InfiniRetri& ir, const pipelines::InfiniRetriOptions& opt,
                     const std::vector<int32_t>& compare, const std::optional<std::string>& plot_path,
                     std::ofstream& cells_out, const std::string& cells_path, bool json, bool verbose) {
    auto saved = read_records<SavedReading>(
        "--answer-from-kept", path, "a saved reading (as --save-kept writes them)", saved_cell_from_json,
        [](const SavedReading& r) -> const Cell& { return r.cell; });
    if (!saved) return fail("eval", saved.error().message);
    if (plot_path) {
        if (auto problem = output_path_problem(*plot_path); !problem.empty()) return fail("eval", "--plot " + problem);
    }
    std::vector<Cell> cells;
    Progress bar(true);
    for (const SavedReading& s : *saved) {
        const auto n = std::find_if(needles.begin(), needles.end(), [&](const Needle& x) { return x.id == s.cell.needle_id; });
        if (n == needles.end())
            return fail("eval", "--answer-from-kept " + path + ": needle '" + s.cell.needle_id + "' is not in --needles");
        if (n->question != s.question) {
            return fail("eval", "--answer-from-kept " + path + ": needle '" + n->id +
                                    "' was read for another question than --needles asks");
        }
        const std::string where = length_label(s.cell.length) + " depth " + std::to_string(s.cell.depth) + "% " + n->id;
        bar.update("cell " + std::to_string(cells.size() + 1) + "/" + std::to_string(saved->size()) + " (" + where + ")");
        auto a = ir.answer_again(s.read, s.question, opt);
        if (!a) {
            bar.done();
            return fail("eval", where + ": " + a.error().message);
        }
        Cell cell = s.cell;
        if (auto st = score_cell(cell, *a, *n, ir, opt, compare); !st) {
            bar.done();
            return fail("eval", where + ": " + st.error().message);
        }
        if (cells_out.is_open()) {
            cells_out << cell_json(cell, !compare.empty()).dump() << '\n' << std::flush;
            if (!cells_out) {
                bar.done();
                return fail("eval", "--cells " + cells_path + ": write failed (disk full?)");
            }
        }
        if (verbose) {
            bar.done();
            print_cell(where, cell, true);
        }
        cells.push_back(std::move(cell));
    }
    bar.done();
    GridReport r = grid_of(cells, "infiniretri", fs::path(model.path()).filename().string() + ", kept sentences of " +
                                                     fs::path(path).filename().string());
    r.compare = compare;
    r.answer_context = opt.answer_context_tokens;
    r.info = {{"model", model.path()}, {"kept_file", path}, {"needles", r.n_needles},
              {"settings",
               {{"answer_context_tokens", opt.answer_context_tokens},
                {"answer_alternatives", opt.answer_alternatives},
                {"sentence_relevance", sentence_relevance_name(opt.sentence_relevance)},
                {"max_answer_tokens", opt.max_answer_tokens}}}};
    return print_report(r, cells, plot_path, json);
}

}  // namespace

int eval_niah(int argc, char** argv) {
    std::vector<OptionSpec> specs = {
        {"haystack", true, "haystack: a .txt file or a folder of .txt files (required)"},
        {"needles", true, "needles JSONL: {id, needle, question, answers} (required)"},
        {"lengths", true, "haystack lengths in tokens, e.g. 4k,16k,128k,1m (default 4k)"},
        {"depths", true, "needle depths in % (default 0,10,...,100)"},
        {"mode", true, "infiniretri | full (default infiniretri)"},
        {"limit-needles", true, "use only the first N needles"},
        {"max-answer-tokens", true, "answer length limit (default 32)"},
        {"json", false, "print one JSON object"},
        {"plot", true, "write an SVG heatmap (lengths x depths) to this file"},
        {"cells", true,
         "append each cell to this JSONL file as soon as it is measured (the --json cell "
         "objects), so a long run that stops keeps what it measured"},
        {"verbose", false, "print every cell's answer"},
        {"compare-answer-context", true,
         "also answer each cell from the same reading with these answer contexts, e.g. 64,128 "
         "(no re-reading; reported per cell and per value beside the main result)"},
        {"from-cells", true,
         "read nothing: print the grid (and --plot) of the cells in this --cells file; a later "
         "line for the same length, depth and needle replaces an earlier one, so the files of "
         "runs that each measured part of a grid can be concatenated"},
        {"save-haystacks", true,
         "write each cell's haystack (needle inserted) to this folder as "
         "LENGTH_dDEPTH_NEEDLE.txt, to read one again with attnrag ask --file"},
        {"save-only", false, "with --save-haystacks: write the haystacks and stop (nothing is read)"},
        {"save-kept", true,
         "append each cell's reading (its kept sentences, ranked) to this JSONL file, so the "
         "answer stage can be tried again on every cell with --answer-from-kept"},
        {"answer-from-kept", true,
         "read nothing: answer every cell of this --save-kept file again from its kept sentences "
         "with the answer settings given now (--answer-context, --answer-alternatives, "
         "--compare-answer-context) and print the grid; needs --needles"},
        {"no-resume", false,
         "read every haystack from its start (default: a needle's depths share the reading of "
         "the text before the needle; the results are the same)"},
    };
    for (auto& spec : infiniretri_option_specs()) specs.push_back(std::move(spec));
    add_model_options(specs);
    Args args(argc, argv, specs);
    if (args.flag("help")) {
        std::printf(
            "%s",
            usage_text("eval niah",
                       "--haystack PATH --needles FILE [--lengths 4k,16k] [--depths 0,50,100] "
                       "[--mode infiniretri|full] [--json] [--plot F.svg]",
                       specs)
                .c_str());
        return 0;
    }
    const auto limit = args.get_int("limit-needles", 0);
    const auto n_threads = static_cast<int32_t>(args.get_int("threads", 0));
    pipelines::InfiniRetriOptions opt;
    opt.max_answer_tokens = static_cast<int32_t>(args.get_int("max-answer-tokens", 32));
    if (!args.ok()) return fail_usage("eval", args.error());
    if (std::string err; !read_infiniretri_options(args, opt, err)) return fail_usage("eval", err);
    Backend backend = Backend::Cpu;
    if (std::string err; !read_backend(args, backend, err)) return fail_usage("eval", err);
    const std::string mode = args.get_or("mode", "infiniretri");
    if (mode != "infiniretri" && mode != "full")
        return fail_usage("eval", "--mode must be infiniretri or full");
    if (auto cells_path = args.get("from-cells"))
        return report_from_cells(*cells_path, mode, args.get("plot"), args.flag("json"));
    const auto haystack_path = args.get("haystack");
    const auto needles_path = args.get("needles");
    const auto from_kept = args.get("answer-from-kept");
    if (from_kept && mode != "infiniretri") return fail_usage("eval", "--answer-from-kept needs --mode infiniretri");
    if (from_kept && (args.get("save-haystacks") || args.get("save-kept")))
        return fail_usage("eval", "--answer-from-kept reads nothing: --save-haystacks and --save-kept do not apply");
    if (from_kept && opt.answer_context_tokens <= 0)
        return fail_usage("eval", "--answer-from-kept needs --answer-context > 0 (the ranking it picks from)");
    if (!needles_path || (!haystack_path && !from_kept))
        return fail_usage("eval", "--haystack and --needles are required");
    std::vector<int64_t> lengths;
    for (const auto& s : split_list(args.get_or("lengths", "4k"))) {
        auto v = parse_length(s);
        if (!v) return fail_usage("eval", "bad length '" + s + "' (examples: 4000, 4k, 1m)");
        lengths.push_back(*v);
    }
    auto depths = parse_ints(args.get_or("depths", "0,10,20,30,40,50,60,70,80,90,100"));
    if (!depths || depths->empty() || lengths.empty())
        return fail_usage("eval", "bad --depths or --lengths");
    for (int32_t d : *depths) {
        if (d < 0 || d > 100) return fail_usage("eval", "depths must be in [0, 100]");
    }
    const bool json = args.flag("json"), verbose = args.flag("verbose");
    const bool resume = !args.flag("no-resume") && mode == "infiniretri";
    std::vector<int32_t> compare;
    if (auto list = args.get("compare-answer-context")) {
        if (mode == "full") return fail_usage("eval", "--compare-answer-context needs --mode infiniretri");
        if (!parse_int_list(*list, compare) ||
            std::any_of(compare.begin(), compare.end(), [](int32_t v) { return v < 0; }))
            return fail_usage("eval", "--compare-answer-context: a list of token counts >= 0, e.g. 64,128");
        if (opt.answer_context_tokens <= 0)
            return fail_usage("eval", "--compare-answer-context needs --answer-context > 0 (the ranking it picks from)");
    }

    const std::optional<std::string> plot_path = args.get("plot");
    if (plot_path) {
        // Before the run, not after hours of it.
        if (auto problem = output_path_problem(*plot_path); !problem.empty())
            return fail("eval", "--plot " + problem);
    }

    const std::optional<std::string> save_dir = args.get("save-haystacks");
    if (save_dir) {
        std::error_code ec;
        std::filesystem::create_directories(*save_dir, ec);
        if (ec || !std::filesystem::is_directory(*save_dir))
            return fail("eval", "--save-haystacks " + *save_dir + ": cannot create the folder");
    }

    const bool save_only = args.flag("save-only");
    if (save_only && !save_dir) return fail_usage("eval", "--save-only needs --save-haystacks");
    if (args.get("save-kept") && mode != "infiniretri")
        return fail_usage("eval", "--save-kept needs --mode infiniretri");

    std::ofstream cells_out;
    if (auto path = args.get("cells")) {
        if (auto problem = output_path_problem(*path, true); !problem.empty()) return fail("eval", "--cells " + problem);
        cells_out.open(*path, std::ios::binary | std::ios::app);  // earlier lines are kept
        if (!cells_out) return fail("eval", "--cells " + *path + ": cannot open for appending");
    }
    std::ofstream kept_out;
    if (auto path = args.get("save-kept")) {
        if (auto problem = output_path_problem(*path, true); !problem.empty()) return fail("eval", "--save-kept " + problem);
        kept_out.open(*path, std::ios::binary | std::ios::app);
        if (!kept_out) return fail("eval", "--save-kept " + *path + ": cannot open for appending");
    }

    auto needles = read_needles(*needles_path);
    if (!needles) return fail("eval", needles.error().message);
    if (limit > 0 && static_cast<size_t>(limit) < needles->size())
        needles->resize(static_cast<size_t>(limit));
    auto model = load_model_from(args, "eval");
    if (!model) return 1;
    if (auto st = read_infiniretri_heads(args, *model, opt); !st) return fail("eval", st.error().message);
    if (from_kept) {
        auto ir = InfiniRetri::create(*model, n_threads, 0, backend);
        if (!ir) return fail("eval", ir.error().message);
        return answer_from_kept(*from_kept, *needles, *model, *ir, opt, compare, plot_path, cells_out,
                                args.get_or("cells", ""), json, verbose);
    }
    auto hay = Haystack::load(*haystack_path, model->tokenizer());
    if (!hay) return fail("eval", hay.error().message);
    auto ir = InfiniRetri::create(*model, n_threads, 0, backend);
    if (!ir) return fail("eval", ir.error().message);

    std::vector<Cell> cells;
    const size_t n_cells = lengths.size() * depths->size() * needles->size();
    Progress bar(true);
    const auto t_all = std::chrono::steady_clock::now();
    for (size_t li = 0; li < lengths.size(); ++li) {
        // The haystack holds the needle too: cut it to the length minus the longest needle.
        int64_t needle_tokens = 0;
        for (const auto& n : *needles) {
            auto ids = model->tokenizer().encode(" " + n.needle, false);
            if (ids) needle_tokens = std::max(needle_tokens, static_cast<int64_t>(ids->size()));
        }
        const Haystack::Cut cut = hay->cut(std::max<int64_t>(1, lengths[li] - needle_tokens));
        // Each needle's depths from the deepest: a haystack's text before its needle is the
        // text every deeper haystack has there too, so a cell resumes from the last checkpoint
        // (of any earlier cell of this needle) that lies wholly before its needle.
        std::vector<size_t> by_depth(depths->size());
        std::iota(by_depth.begin(), by_depth.end(), size_t{0});
        std::stable_sort(by_depth.begin(), by_depth.end(),
                         [&](size_t x, size_t y) { return (*depths)[x] > (*depths)[y]; });
        for (const auto& n : *needles) {
            std::vector<pipelines::InfiniRetriCheckpoint> checkpoints;  // [chunk - 1]
            for (const size_t di : by_depth) {
                Cell cell;
                cell.length = lengths[li];
                cell.depth = (*depths)[di];
                cell.needle_id = n.id;
                const NeedleText hay_text = with_needle(cut, cell.depth, n.needle);
                if (save_dir) {
                    const std::string file = (std::filesystem::path(*save_dir) /
                                              (length_label(cell.length) + "_d" + std::to_string(cell.depth) +
                                               "_" + file_safe(n.id) + ".txt"))
                                                 .string();
                    if (auto st = write_file_replacing(file, hay_text.text); !st)
                        return fail("eval", "--save-haystacks: " + st.error().message);
                    if (save_only) continue;
                }
                auto src = SentenceSource::from_text(hay_text.text, {}, "haystack");
                const auto t0 = std::chrono::steady_clock::now();
                const std::string where = length_label(cell.length) + " depth " +
                                          std::to_string(cell.depth) + "% " + n.id;
                pipelines::InfiniRetriOptions o = opt;
                if (resume) {
                    for (auto it = checkpoints.rbegin(); it != checkpoints.rend(); ++it) {
                        if (it->next_end < hay_text.at) {
                            o.resume = &*it;
                            break;
                        }
                    }
                }
                std::vector<pipelines::InfiniRetriCheckpoint> made;
                auto holds_needle = [&](const std::vector<pipelines::KeptSentence>& kept) {
                    return std::any_of(kept.begin(), kept.end(), [&](const pipelines::KeptSentence& k) {
                        return k.text.find(n.needle) != std::string::npos;
                    });
                };
                if (mode == "infiniretri") {
                    o.on_checkpoint = [&](const pipelines::InfiniRetriCheckpoint& c) {
                        const bool held = holds_needle(c.cache);
                        if (held && cell.needle_cached_chunk == 0) cell.needle_cached_chunk = c.n_chunks;
                        if (!held && cell.needle_cached_chunk != 0 && cell.needle_dropped_chunk == 0)
                            cell.needle_dropped_chunk = c.n_chunks;
                        if (resume) made.push_back(c);
                    };
                }
                o.on_progress = [&](const pipelines::InfiniRetriProgress& p) {
                    bar.update("cell " + std::to_string(cells.size() + 1) + "/" +
                               std::to_string(n_cells) + " (" + where +
                               "): " + std::to_string(p.n_tokens_read) + " tokens read, " +
                               std::to_string(static_cast<int64_t>(p.tokens_per_s)) +
                               " tokens/s, cache " + std::to_string(p.n_cache_tokens));
                    return true;
                };
                auto a = mode == "full" ? ir->answer_full(src, n.question, o)
                                        : ir->answer(src, n.question, o);
                if (!a && o.resume && a.error().code == Errc::InvalidArgument) {
                    // Not expected (the checkpoint lies before the needle); read it whole.
                    bar.done();
                    std::fprintf(stderr, "eval: %s: %s; reading from the start\n", where.c_str(),
                                 a.error().message.c_str());
                    made.clear();
                    cell.needle_cached_chunk = cell.needle_dropped_chunk = 0;
                    o.resume = nullptr;
                    src = SentenceSource::from_text(hay_text.text, {}, "haystack");
                    a = ir->answer(src, n.question, o);
                }
                cell.seconds =
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
                if (!a) {
                    if (mode == "full" && a.error().code == Errc::OutOfRange) {
                        cell.skipped = true;
                    } else {
                        bar.done();
                        return fail("eval", where + ": " + a.error().message);
                    }
                } else {
                    if (auto st = score_cell(cell, *a, n, *ir, opt, compare); !st) {
                        bar.done();
                        return fail("eval", where + ": " + st.error().message);
                    }
                    for (auto& c : made) {
                        const auto k = static_cast<size_t>(c.n_chunks);
                        if (checkpoints.size() < k) checkpoints.resize(k);
                        checkpoints[k - 1] = std::move(c);
                    }
                    // The last chunk makes no checkpoint.
                    const bool in_cache = cell.needle_kept && !cell.needle_reserved;
                    if (in_cache && cell.needle_cached_chunk == 0) cell.needle_cached_chunk = a->n_chunks;
                    if (mode == "infiniretri" && !in_cache && cell.needle_cached_chunk != 0 &&
                        cell.needle_dropped_chunk == 0)
                        cell.needle_dropped_chunk = a->n_chunks;
                    if (kept_out.is_open()) {
                        kept_out << saved_cell_json(cell, n.question, *a).dump() << '\n' << std::flush;
                        if (!kept_out) {
                            bar.done();
                            std::fprintf(stderr, "attnrag eval: --save-kept %s: write failed (disk full?); no more readings are saved\n",
                                         args.get("save-kept")->c_str());
                            kept_out.close();
                        }
                    }
                }
                if (cells_out.is_open()) {
                    cells_out << cell_json(cell, !compare.empty()).dump() << '\n' << std::flush;
                    if (!cells_out) {
                        // The run goes on; its results are still printed at the end.
                        bar.done();
                        std::fprintf(stderr, "attnrag eval: --cells %s: write failed (disk full?); no more cells are appended\n",
                                     args.get("cells")->c_str());
                        cells_out.close();
                    }
                }
                if (verbose) {
                    bar.done();
                    print_cell(where, cell, mode == "infiniretri");
                }
                cells.push_back(std::move(cell));
            }
        }
    }
    bar.done();
    if (save_only) {
        std::printf("wrote %zu haystacks to %s\n", n_cells, save_dir->c_str());
        return 0;
    }
    GridReport report;
    report.mode = mode;
    report.source = fs::path(model->path()).filename().string();
    report.info = {{"model", model->path()}, {"needles", needles->size()}, {"backend", ir->context().backend_description()}};
    if (mode != "full") {
        report.info["settings"] = infiniretri_settings_json(opt);
        // What the chunk passes read: the (layer, head) pairs, else the layers (all heads).
        if (!opt.layer_heads.empty()) {
            report.info["heads"] = pipelines::format_layer_heads(opt.layer_heads);
            report.heads_read = pipelines::format_layer_heads(opt.layer_heads);
        } else {
            report.info["layers"] = opt.layers.empty() ? std::vector<int32_t>{model->hparams().n_layer / 2}
                                                       : opt.layers;
        }
    }
    report.lengths = lengths;
    report.depths = *depths;
    report.compare = compare;
    report.answer_context = opt.answer_context_tokens;
    report.n_needles = needles->size();
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_all).count();
    return print_report(report, cells, plot_path, json);
}

}  // namespace attnrag::cli
