// attnrag search: BM25, dense or hybrid search over a corpus.
#include <cstdio>

#include <nlohmann/json.hpp>

#include "args.h"
#include "attnrag/index/corpus.hpp"
#include "commands.h"
#include "common.h"

namespace attnrag::cli {

// "key=value" filters on document metadata and --doc ids, shared with other commands.
bool parse_filter(const Args& args, Filter& filter, std::string& error) {
    if (auto d = args.get("doc")) {
        char* end = nullptr;
        long long id = std::strtoll(d->c_str(), &end, 10);
        if (d->empty() || *end) {
            error = "--doc expects a document id";
            return false;
        }
        filter.document_ids.push_back(id);
    }
    if (auto w = args.get("where")) {
        auto eq = w->find('=');
        if (eq == std::string::npos || eq == 0) {
            error = "--where expects KEY=VALUE";
            return false;
        }
        filter.metadata_equals.emplace_back(w->substr(0, eq), w->substr(eq + 1));
    }
    return true;
}

int cmd_search(int argc, char** argv) {
    const std::vector<OptionSpec> specs = {
        {"db", true, "corpus directory (required)"},
        {"k", true, "number of results (default 10)"},
        {"mode", true, "bm25 | dense | hybrid (default hybrid)"},
        {"doc", true, "only this document id"},
        {"where", true, "only documents whose metadata KEY equals VALUE (KEY=VALUE)"},
        {"json", false, "print results as JSON"},
        kThreadsOption,
        {"help", false, "show this help"},
    };
    Args args(argc, argv, specs);
    if (args.flag("help")) {
        std::printf("%s", usage_text("search", "--db DIR [--k 10] [--mode bm25|dense|hybrid] QUERY", specs).c_str());
        return 0;
    }
    const int k = static_cast<int>(args.get_int("k", 10));
    index::CorpusOptions opt;
    opt.n_threads = static_cast<int32_t>(args.get_int("threads", 0));
    if (!args.ok()) return fail_usage("search", args.error());
    auto db = args.get("db");
    if (!db) return fail_usage("search", "--db is required");
    if (args.positional().empty()) return fail_usage("search", "give a query");
    if (k <= 0) return fail_usage("search", "--k must be positive");
    auto mode = index::parse_search_mode(args.get_or("mode", "hybrid"));
    if (!mode) return fail_usage("search", mode.error().message);
    Filter filter;
    std::string ferr;
    if (!parse_filter(args, filter, ferr)) return fail_usage("search", ferr);
    std::string query;
    for (const auto& p : args.positional()) query += (query.empty() ? "" : " ") + p;

    if (!std::filesystem::exists(std::filesystem::path(*db) / "attnrag.db")) {
        return fail("search", *db + ": no corpus here (run attnrag ingest --db " + *db + " ...)");
    }
    opt.read_only = true;
    auto corpus = index::Corpus::open(*db, opt);
    if (!corpus) return fail("search", corpus.error().message);
    auto hits = corpus->search(query, k, *mode, filter);
    if (!hits) return fail("search", hits.error().message);
    if (args.flag("json")) {
        nlohmann::json out = nlohmann::json::array();
        for (const auto& h : *hits) {
            out.push_back({{"chunk_id", h.chunk_id}, {"document_id", h.document_id}, {"source", h.source},
                           {"title", h.title}, {"score", h.score}, {"begin", h.begin}, {"end", h.end},
                           {"source_begin", h.source_begin}, {"source_end", h.source_end},
                           {"dense_rank", h.dense_rank}, {"lexical_rank", h.lexical_rank}, {"text", h.text}});
        }
        std::printf("%s\n", out.dump(2).c_str());
        return 0;
    }
    int rank = 0;
    for (const auto& h : *hits) {
        std::printf("%2d. %.4f  doc %lld  %s  [%llu, %llu)\n", ++rank, h.score, static_cast<long long>(h.document_id),
                    h.source.c_str(), static_cast<unsigned long long>(h.source_begin),
                    static_cast<unsigned long long>(h.source_end));
        std::string snippet = h.text.size() > 300 ? h.text.substr(0, 300) + "..." : h.text;
        for (char& c : snippet) {
            if (c == '\n') c = ' ';
        }
        std::printf("    %s\n", snippet.c_str());
    }
    if (hits->empty()) std::printf("no results\n");
    return 0;
}

}  // namespace attnrag::cli
