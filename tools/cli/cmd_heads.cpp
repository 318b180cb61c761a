// attnrag heads: score every (layer, head) of the model on copy trials, store the ranking under
// the model's fingerprint, and print the best heads (or, with --show, print a stored ranking).
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "args.h"
#include "attnrag/pipelines/retrieval_heads.hpp"
#include "commands.h"
#include "common.h"
#include "progress.h"

namespace attnrag::cli {

namespace {

namespace fs = std::filesystem;
using pipelines::HeadRanking;

// "2k" -> 2000, "1500" -> 1500 (decimal multiplier, as NIH tables write lengths).
std::optional<int32_t> parse_tokens(std::string s) {
    int64_t mult = 1;
    if (!s.empty() && std::tolower(static_cast<unsigned char>(s.back())) == 'k') {
        mult = 1000;
        s.pop_back();
    }
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0' || !(v > 0) || v * static_cast<double>(mult) > 1e9)
        return std::nullopt;
    return static_cast<int32_t>(std::llround(v * static_cast<double>(mult)));
}

// Comma-separated items parsed by `one`; nullopt on any bad or missing item.
template <class F>
auto parse_list(const std::string& s, F one) -> std::optional<std::vector<int32_t>> {
    std::vector<int32_t> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) {
        auto v = one(item);
        if (!v) return std::nullopt;
        out.push_back(*v);
    }
    if (out.empty()) return std::nullopt;
    return out;
}

std::optional<int32_t> parse_int(const std::string& s) {
    char* end = nullptr;
    const long v = std::strtol(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0' || v < 0 || v > 1000000) return std::nullopt;
    return static_cast<int32_t>(v);
}

// --haystack default: the project's shared essays ($ATTNRAG_SHARED_DATA or ../shared/data).
fs::path default_haystack() {
    const char* env = std::getenv("ATTNRAG_SHARED_DATA");
    const fs::path data = env ? fs::path(env) : fs::path("..") / "shared" / "data";
    return data / "niah" / "paul_graham_essays";
}

std::string join(const std::vector<int32_t>& v) {
    std::string out;
    for (int32_t x : v) {
        if (!out.empty()) out += ',';
        out += std::to_string(x);
    }
    return out;
}

void print_ranking(const HeadRanking& r, const fs::path& path, int32_t top, bool json) {
    const auto n = std::min<size_t>(static_cast<size_t>(std::max(0, top)), r.heads.size());
    if (json) {
        nlohmann::ordered_json j = {{"path", path.string()},    {"fingerprint", r.fingerprint},
                                    {"model", r.model_name},    {"n_layer", r.n_layer},
                                    {"n_head", r.n_head},       {"lengths", r.setup.lengths},
                                    {"depths", r.setup.depths}, {"trials", r.n_trials},
                                    {"rows", r.n_rows},         {"rows_correct", r.n_rows_correct},
                                    {"seconds", r.seconds},     {"mean_score", r.mean_score()}};
        j["top"] = nlohmann::ordered_json::array();
        for (size_t i = 0; i < n; ++i) {
            const auto& h = r.heads[i];
            j["top"].push_back({{"layer", h.head.layer},
                                {"head", h.head.head},
                                {"score", h.score},
                                {"score_correct", h.score_correct}});
        }
        std::printf("%s\n", j.dump().c_str());
        return;
    }
    std::printf("retrieval heads of %s (fingerprint %s), %d x %d heads\n", r.model_name.c_str(),
                r.fingerprint.c_str(), r.n_layer, r.n_head);
    std::printf(
        "trials: %d (lengths %s x depths %s x %d needles of %d words), %lld scored rows "
        "(%lld predicted right by the model), %.1f s\n",
        r.n_trials, join(r.setup.lengths).c_str(), join(r.setup.depths).c_str(), r.setup.n_trials,
        r.setup.n_words, static_cast<long long>(r.n_rows), static_cast<long long>(r.n_rows_correct),
        r.seconds);
    std::printf("mean score %.4f; stored in %s\n\n", r.mean_score(), path.string().c_str());
    std::printf("%5s %6s %5s %8s %14s\n", "rank", "layer", "head", "score", "score_correct");
    for (size_t i = 0; i < n; ++i) {
        const auto& h = r.heads[i];
        std::printf("%5zu %6d %5d %8.4f %14.4f\n", i + 1, h.head.layer, h.head.head, h.score,
                    h.score_correct);
    }
    std::printf("\ntop %zu as --heads: %s\n", n,
                pipelines::format_layer_heads(r.top(static_cast<int32_t>(n))).c_str());
}

}  // namespace

int cmd_heads(int argc, char** argv) {
    const std::vector<OptionSpec> specs = {
        {"haystack", true,
         "a .txt file or folder of .txt files (default $ATTNRAG_SHARED_DATA or ../shared/data, "
         "niah/paul_graham_essays)"},
        {"lengths", true, "context tokens per trial, e.g. 1k,2k,4k (default 1k,2k,4k)"},
        {"depths", true, "needle depths in % (default 0,25,50,75,100)"},
        {"trials", true, "needles per (length, depth) (default 2)"},
        {"words", true, "random words per needle (default 6)"},
        {"seed", true, "random seed of needles and haystack offsets (default 1)"},
        {"top", true, "heads to print (default 20)"},
        {"heads-dir", true,
         "where rankings are stored (default $ATTNRAG_HEADS_DIR, else "
         "$XDG_CACHE_HOME/attnrag/heads, "
         "else ~/.cache/attnrag/heads)"},
        {"show", false, "print the stored ranking of the model; do not score"},
        {"json", false, "print one JSON object"},
        kModelOption,
        kThreadsOption,
        {"help", false, "show this help"},
    };
    Args args(argc, argv, specs);
    if (args.flag("help")) {
        std::printf("%s", usage_text("heads",
                                     "[--haystack PATH] [--lengths 1k,2k,4k] [--depths "
                                     "0,25,50,75,100] [--trials N] [--top 20] [--heads-dir DIR] "
                                     "[--json] [--show]",
                                     specs)
                              .c_str());
        return 0;
    }
    pipelines::RetrievalHeadsOptions opt;
    opt.n_threads = static_cast<int32_t>(args.get_int("threads", 0));
    opt.n_trials = static_cast<int32_t>(args.get_int("trials", opt.n_trials));
    opt.n_words = static_cast<int32_t>(args.get_int("words", opt.n_words));
    opt.seed = static_cast<uint64_t>(args.get_int("seed", 1));
    const auto top = static_cast<int32_t>(args.get_int("top", 20));
    if (!args.ok()) return fail_usage("heads", args.error());
    if (auto s = args.get("lengths")) {
        auto v = parse_list(*s, parse_tokens);
        if (!v) return fail_usage("heads", "bad --lengths '" + *s + "' (example: 1k,2k,4k)");
        opt.lengths = *v;
    }
    if (auto s = args.get("depths")) {
        auto v = parse_list(*s, parse_int);
        if (!v) return fail_usage("heads", "bad --depths '" + *s + "' (example: 0,50,100)");
        opt.depths = *v;
    }
    opt.haystack = args.get_or("haystack", default_haystack().string());
    fs::path dir;
    if (auto d = args.get("heads-dir")) {
        dir = *d;
    } else {
        auto def = pipelines::default_heads_dir();
        if (!def) return fail("heads", def.error().message);
        dir = *def;
    }
    const bool json = args.flag("json");

    auto model = load_model_from(args, "heads");
    if (!model) return 1;
    if (args.flag("show")) {
        auto r = pipelines::load_head_ranking(dir, *model);
        if (!r) return fail("heads", r.error().message);
        print_ranking(*r, pipelines::head_ranking_path(dir, model->fingerprint()), top, json);
        return 0;
    }

    Progress bar(true);
    opt.on_progress = [&](const pipelines::RetrievalHeadsProgress& p) {
        bar.update("trial " + std::to_string(p.n_trials_done) + "/" + std::to_string(p.n_trials) +
                   " (" + std::to_string(p.length) + " tokens, depth " + std::to_string(p.depth) +
                   "%): " + std::to_string(p.n_tokens) + " tokens, " +
                   std::to_string(static_cast<int64_t>(p.seconds)) + " s");
        return true;
    };
    auto r = pipelines::score_retrieval_heads(*model, opt);
    bar.done();
    if (!r) return fail("heads", r.error().message);
    auto path = pipelines::save_head_ranking(*r, dir);
    if (!path) return fail("heads", path.error().message);
    print_ranking(*r, *path, top, json);
    return 0;
}

}  // namespace attnrag::cli
