// Retrieval-head rankings on disk: one JSON file per model fingerprint, written atomically,
// validated in full when read (a cache file may be stale, truncated or edited by hand).
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <type_traits>

#include "attnrag/pipelines/retrieval_heads.hpp"

namespace attnrag::pipelines {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

namespace {

constexpr const char* kFormat = "attnrag.retrieval_heads";
constexpr int kVersion = 1;

// Fingerprints become file names: hex digests in practice; anything else is refused.
bool safe_file_stem(std::string_view s) {
    if (s.empty() || s.size() > 128) return false;
    for (char c : s) {
        const bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                        (c >= 'A' && c <= 'Z') || c == '-' || c == '_';
        if (!ok) return false;
    }
    return true;
}

bool ranking_order(const std::vector<HeadScore>& heads) {
    std::vector<HeadScore> sorted = heads;
    sort_head_scores(sorted);
    return sorted == heads;
}

// The invariants every stored ranking keeps; an empty string when they hold.
std::string consistency_problem(const HeadRanking& r) {
    if (r.n_layer < 1 || r.n_head < 1) return "n_layer and n_head must be >= 1";
    const auto n = static_cast<size_t>(r.n_layer) * static_cast<size_t>(r.n_head);
    if (r.heads.size() != n) {
        return "holds " + std::to_string(r.heads.size()) +
               " heads, expected n_layer x n_head = " + std::to_string(n);
    }
    std::vector<char> seen(n, 0);
    for (const HeadScore& h : r.heads) {
        const LayerHead lh = h.head;
        const std::string name = std::to_string(lh.layer) + ":" + std::to_string(lh.head);
        if (lh.layer < 0 || lh.layer >= r.n_layer || lh.head < 0 || lh.head >= r.n_head)
            return "head " + name + " out of range";
        const size_t at = static_cast<size_t>(lh.layer) * static_cast<size_t>(r.n_head) +
                          static_cast<size_t>(lh.head);
        if (seen[at]) return "head " + name + " listed twice";
        seen[at] = 1;
        for (double v : {h.score, h.score_correct}) {
            if (!std::isfinite(v) || v < 0.0 || v > 1.0)
                return "head " + name + " has a score outside [0, 1]";
        }
    }
    if (!ranking_order(r.heads)) return "heads are not in ranking order";
    if (r.n_trials < 0 || r.n_rows < 0 || r.n_rows_correct < 0 || r.n_rows_correct > r.n_rows)
        return "bad trial or row counts";
    return {};
}

Json to_json(const HeadRanking& r) {
    Json heads = Json::array();
    for (const HeadScore& h : r.heads) {
        heads.push_back({{"layer", h.head.layer},
                         {"head", h.head.head},
                         {"score", h.score},
                         {"score_correct", h.score_correct}});
    }
    return Json{{"format", kFormat},
                {"version", kVersion},
                {"fingerprint", r.fingerprint},
                {"model", r.model_name},
                {"n_layer", r.n_layer},
                {"n_head", r.n_head},
                {"task",
                 "teacher-forced copy of random-word needles; hit = the head's most attended key "
                 "is the needle token being copied (attnrag/pipelines/retrieval_heads.hpp)"},
                {"setup",
                 {{"haystack", r.setup.haystack},
                  {"lengths", r.setup.lengths},
                  {"depths", r.setup.depths},
                  {"trials", r.setup.n_trials},
                  {"words", r.setup.n_words},
                  {"seed", r.setup.seed}}},
                {"n_trials", r.n_trials},
                {"n_rows", r.n_rows},
                {"n_rows_correct", r.n_rows_correct},
                {"seconds", r.seconds},
                {"heads", std::move(heads)}};
}

// Typed field access that reports the first missing or mistyped field instead of throwing.
class Reader {
 public:
    const std::string& problem() const { return problem_; }

    const Json* field(const Json& obj, const char* key) {
        if (!problem_.empty()) return nullptr;
        if (!obj.is_object() || !obj.contains(key)) {
            problem_ = std::string("missing field '") + key + "'";
            return nullptr;
        }
        return &obj.at(key);
    }
    std::string str(const Json& obj, const char* key) {
        const Json* v = field(obj, key);
        if (!v) return {};
        if (!v->is_string()) return fail<std::string>(key, "a string");
        return v->get<std::string>();
    }
    template <class Int>
    Int integer(const Json& obj, const char* key) {
        const Json* v = field(obj, key);
        if (!v) return 0;
        if (!v->is_number_integer()) return fail<Int>(key, "an integer");
        if constexpr (std::is_unsigned_v<Int>) {
            if (v->is_number_unsigned()) return v->get<Int>();
            if (v->get<int64_t>() < 0) return fail<Int>(key, "a non-negative integer");
            return static_cast<Int>(v->get<int64_t>());
        } else {
            const auto x = v->get<int64_t>();
            if (x < std::numeric_limits<Int>::min() || x > std::numeric_limits<Int>::max())
                return fail<Int>(key, "an integer in range");
            return static_cast<Int>(x);
        }
    }
    double number(const Json& obj, const char* key) {
        const Json* v = field(obj, key);
        if (!v) return 0;
        if (!v->is_number()) return fail<double>(key, "a number");
        return v->get<double>();
    }
    std::vector<int32_t> ints(const Json& obj, const char* key) {
        const Json* v = field(obj, key);
        if (!v) return {};
        if (!v->is_array()) return fail<std::vector<int32_t>>(key, "an array of integers");
        std::vector<int32_t> out;
        for (const Json& e : *v) {
            if (!e.is_number_integer())
                return fail<std::vector<int32_t>>(key, "an array of integers");
            const auto x = e.get<int64_t>();
            if (x < std::numeric_limits<int32_t>::min() || x > std::numeric_limits<int32_t>::max())
                return fail<std::vector<int32_t>>(key, "an array of 32-bit integers");
            out.push_back(static_cast<int32_t>(x));
        }
        return out;
    }

 private:
    template <class T>
    T fail(const char* key, const char* what) {
        if (problem_.empty()) problem_ = std::string("field '") + key + "' is not " + what;
        return T{};
    }
    std::string problem_;
};

Result<HeadRanking> from_json(const Json& j, const std::string& where) {
    auto corrupt = [&](const std::string& m) {
        return make_error(Errc::Corrupt, where + ": " + m);
    };
    if (!j.is_object()) return corrupt("not a JSON object");
    Reader rd;
    const std::string format = rd.str(j, "format");
    if (!rd.problem().empty()) return corrupt(rd.problem());
    if (format != kFormat) return corrupt("not a retrieval-head ranking (format '" + format + "')");
    const int version = rd.integer<int>(j, "version");
    if (rd.problem().empty() && version != kVersion) {
        return make_error(Errc::Unsupported, where + ": format version " + std::to_string(version) +
                                                 " (this build reads " + std::to_string(kVersion) +
                                                 ")");
    }
    HeadRanking r;
    r.fingerprint = rd.str(j, "fingerprint");
    r.model_name = rd.str(j, "model");
    r.n_layer = rd.integer<int32_t>(j, "n_layer");
    r.n_head = rd.integer<int32_t>(j, "n_head");
    if (const Json* s = rd.field(j, "setup")) {
        r.setup.haystack = rd.str(*s, "haystack");
        r.setup.lengths = rd.ints(*s, "lengths");
        r.setup.depths = rd.ints(*s, "depths");
        r.setup.n_trials = rd.integer<int32_t>(*s, "trials");
        r.setup.n_words = rd.integer<int32_t>(*s, "words");
        r.setup.seed = rd.integer<uint64_t>(*s, "seed");
    }
    r.n_trials = rd.integer<int32_t>(j, "n_trials");
    r.n_rows = rd.integer<int64_t>(j, "n_rows");
    r.n_rows_correct = rd.integer<int64_t>(j, "n_rows_correct");
    r.seconds = rd.number(j, "seconds");
    if (const Json* hs = rd.field(j, "heads")) {
        if (!hs->is_array()) return corrupt("field 'heads' is not an array");
        for (const Json& h : *hs) {
            HeadScore s;
            s.head.layer = rd.integer<int32_t>(h, "layer");
            s.head.head = rd.integer<int32_t>(h, "head");
            s.score = rd.number(h, "score");
            s.score_correct = rd.number(h, "score_correct");
            if (!rd.problem().empty()) break;
            r.heads.push_back(s);
        }
    }
    if (!rd.problem().empty()) return corrupt(rd.problem());
    if (!safe_file_stem(r.fingerprint)) return corrupt("bad fingerprint '" + r.fingerprint + "'");
    if (const std::string p = consistency_problem(r); !p.empty()) return corrupt(p);
    return r;
}

}  // namespace

Result<fs::path> default_heads_dir() {
    auto env = [](const char* name) -> std::string {
        const char* v = std::getenv(name);
        return v ? v : "";
    };
    if (const std::string d = env("ATTNRAG_HEADS_DIR"); !d.empty()) return fs::path(d);
    if (const std::string d = env("XDG_CACHE_HOME"); !d.empty())
        return fs::path(d) / "attnrag" / "heads";
    if (const std::string d = env("HOME"); !d.empty())
        return fs::path(d) / ".cache" / "attnrag" / "heads";
    return make_error(Errc::NotFound,
                      "no directory for retrieval-head rankings: set ATTNRAG_HEADS_DIR, "
                      "XDG_CACHE_HOME or HOME");
}

fs::path head_ranking_path(const fs::path& dir, std::string_view fingerprint) {
    return dir / (std::string(fingerprint) + ".json");
}

Result<fs::path> save_head_ranking(const HeadRanking& ranking, const fs::path& dir) {
    if (!safe_file_stem(ranking.fingerprint)) {
        return make_error(Errc::InvalidArgument, "save_head_ranking: fingerprint '" +
                                                     ranking.fingerprint +
                                                     "' is not a plain file name");
    }
    if (const std::string p = consistency_problem(ranking); !p.empty())
        return make_error(Errc::InvalidArgument, "save_head_ranking: the ranking " + p);
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return make_error(Errc::Io, dir.string() + ": cannot create: " + ec.message());
    const fs::path path = head_ranking_path(dir, ranking.fingerprint);
    // The temporary lives beside the target (same file system, so rename is atomic) and carries
    // the process id, so two writers never share one.
    const fs::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
    const std::string text = to_json(ranking).dump(1) + "\n";
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) return make_error(Errc::Io, tmp.string() + ": cannot create");
    bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
    ok = std::fflush(f) == 0 && ok;
    ok = ::fsync(::fileno(f)) == 0 && ok;
    ok = std::fclose(f) == 0 && ok;
    if (ok) fs::rename(tmp, path, ec);
    if (!ok || ec) {
        fs::remove(tmp, ec);
        return make_error(Errc::Io, path.string() + ": cannot write");
    }
    return path;
}

Result<HeadRanking> load_head_ranking_file(const fs::path& file) {
    std::error_code ec;
    if (!fs::exists(file, ec)) return make_error(Errc::NotFound, file.string() + ": no such file");
    if (!fs::is_regular_file(file, ec)) return make_error(Errc::Io, file.string() + ": not a file");
    std::ifstream in(file, std::ios::binary);
    if (!in) return make_error(Errc::Io, file.string() + ": cannot open");
    std::ostringstream buf;
    buf << in.rdbuf();
    if (in.bad()) return make_error(Errc::Io, file.string() + ": read error");
    const Json j = Json::parse(buf.str(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded())
        return make_error(Errc::Corrupt, file.string() + ": not valid JSON (truncated?)");
    try {
        return from_json(j, file.string());
    } catch (const std::exception& e) {  // the checks above should leave nothing to throw
        return make_error(Errc::Corrupt, file.string() + ": " + e.what());
    }
}

Result<HeadRanking> load_head_ranking(const fs::path& dir, std::string_view fingerprint) {
    const fs::path path = head_ranking_path(dir, fingerprint);
    auto r = load_head_ranking_file(path);
    if (!r) {
        if (r.error().code == Errc::NotFound) {
            return make_error(Errc::NotFound,
                              path.string() + ": no retrieval-head ranking for model fingerprint " +
                                  std::string(fingerprint) + " (run 'attnrag heads' to make one)");
        }
        return r.error();
    }
    if (r->fingerprint != fingerprint) {
        return make_error(Errc::Corrupt, path.string() + ": holds the ranking of fingerprint " +
                                             r->fingerprint + ", not " + std::string(fingerprint));
    }
    return r;
}

Result<HeadRanking> load_head_ranking(const fs::path& dir, const Model& model) {
    auto r = load_head_ranking(dir, model.fingerprint());
    if (!r) return r;
    const ModelHParams& hp = model.hparams();
    if (r->n_layer != hp.n_layer || r->n_head != hp.n_head) {
        return make_error(Errc::Corrupt, head_ranking_path(dir, model.fingerprint()).string() +
                                             ": ranks " + std::to_string(r->n_layer) + " x " +
                                             std::to_string(r->n_head) + " heads, the model has " +
                                             std::to_string(hp.n_layer) + " x " +
                                             std::to_string(hp.n_head));
    }
    return r;
}

Result<std::vector<LayerHead>> top_retrieval_heads(const fs::path& dir, const Model& model,
                                                   int32_t n) {
    if (n < 1) {
        return make_error(Errc::InvalidArgument,
                          "top_retrieval_heads: n must be >= 1 (got " + std::to_string(n) + ")");
    }
    auto r = load_head_ranking(dir, model);
    if (!r) return r.error();
    return r->top(n);
}

}  // namespace attnrag::pipelines
