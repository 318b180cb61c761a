// attnrag eval: evaluation harnesses over the shared data sets (retrieval: BEIR layout).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <set>

#include <nlohmann/json.hpp>

#include "args.h"
#include "attnrag/index/corpus.hpp"
#include "attnrag/index/metrics.hpp"
#include "commands.h"
#include "common.h"
#include "progress.h"

namespace attnrag::cli {
namespace {

namespace fs = std::filesystem;

struct BeirQuery {
    std::string id, text;
};

int eval_retrieval(int argc, char** argv) {
    const std::vector<OptionSpec> specs = {
        {"beir", true, "BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv (required)"},
        {"mode", true, "bm25 | dense | hybrid (default hybrid)"},
        {"db", true, "corpus directory to build or reuse (default .cache/beir-<folder name>)"},
        {"limit", true, "evaluate only the first N queries"},
        {"json", false, "print one JSON object"},
        kThreadsOption,
        {"help", false, "show this help"},
    };
    Args args(argc, argv, specs);
    if (args.flag("help")) {
        std::printf("%s", usage_text("eval retrieval", "--beir DIR [--mode bm25|dense|hybrid] [--json]", specs).c_str());
        return 0;
    }
    const auto limit = args.get_int("limit", 0);
    index::CorpusOptions opt;
    opt.n_threads = static_cast<int32_t>(args.get_int("threads", 0));
    if (!args.ok()) return fail_usage("eval", args.error());
    auto beir = args.get("beir");
    if (!beir) return fail_usage("eval", "--beir is required");
    auto mode = index::parse_search_mode(args.get_or("mode", "hybrid"));
    if (!mode) return fail_usage("eval", mode.error().message);
    const fs::path dir(*beir);
    const std::string name = fs::absolute(dir).lexically_normal().filename().string();
    const fs::path db = args.get_or("db", (fs::path(".cache") / ("beir-" + name)).string());
    const bool json = args.flag("json");

    // qrels: query-id \t corpus-id \t score (header line first).
    std::map<std::string, std::map<std::string, int>> qrels;
    {
        std::ifstream in(dir / "qrels" / "test.tsv");
        if (!in) return fail("eval", (dir / "qrels" / "test.tsv").string() + ": cannot open");
        std::string line;
        std::getline(in, line);
        while (std::getline(in, line)) {
            std::string q, d;
            int rel = 0;
            std::istringstream ls(line);
            if (std::getline(ls, q, '\t') && std::getline(ls, d, '\t') && (ls >> rel)) qrels[q][d] = rel;
        }
    }
    std::vector<BeirQuery> queries;
    {
        std::ifstream in(dir / "queries.jsonl");
        if (!in) return fail("eval", (dir / "queries.jsonl").string() + ": cannot open");
        std::string line;
        while (std::getline(in, line)) {
            auto j = nlohmann::json::parse(line, nullptr, false);
            if (j.is_discarded()) return fail("eval", "queries.jsonl: malformed JSON line");
            std::string id = j.value("_id", "");
            if (qrels.count(id)) queries.push_back({id, j.value("text", "")});
        }
    }
    if (limit > 0 && static_cast<size_t>(limit) < queries.size()) queries.resize(static_cast<size_t>(limit));
    if (queries.empty()) return fail("eval", "no queries with relevance judgements");

    auto corpus = index::Corpus::open(db, opt);
    if (!corpus) return fail("eval", corpus.error().message);

    // Build or update the corpus (unchanged records are skipped by their content hash).
    auto t_ingest = std::chrono::steady_clock::now();
    int64_t n_docs = 0, n_added = 0;
    {
        std::ifstream in(dir / "corpus.jsonl");
        if (!in) return fail("eval", (dir / "corpus.jsonl").string() + ": cannot open");
        Progress bar(true);
        std::string line;
        while (std::getline(in, line)) {
            auto j = nlohmann::json::parse(line, nullptr, false);
            if (j.is_discarded()) return fail("eval", "corpus.jsonl: malformed JSON line " + std::to_string(n_docs + 1));
            std::string title = j.value("title", ""), text = j.value("text", "");
            std::string body = title.empty() ? text : title + "\n\n" + text;
            auto put = corpus->ingest_text("beir:" + j.value("_id", ""), body, title);
            if (!put) return fail("eval", "corpus record " + std::to_string(n_docs + 1) + ": " + put.error().message);
            ++n_docs;
            if (put->outcome != PutOutcome::Unchanged) ++n_added;
            double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_ingest).count();
            bar.update("corpus " + std::to_string(n_docs) + " records (" + std::to_string(n_added) + " new), " +
                       std::to_string(static_cast<int>(static_cast<double>(n_docs) / std::max(s, 1e-9))) + " records/s");
        }
        bar.done();
        if (auto st = corpus->flush(); !st) return fail("eval", st.error().message);
    }
    const double ingest_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_ingest).count();

    // Chunks are ranked, then folded to documents (best chunk per document).
    constexpr int kDocs = 100;
    double ndcg = 0, recall = 0;
    std::vector<double> ms;
    Progress bar(true);
    for (size_t qi = 0; qi < queries.size(); ++qi) {
        auto t0 = std::chrono::steady_clock::now();
        auto hits = corpus->search(queries[qi].text, 2 * kDocs, *mode);
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        if (!hits) return fail("eval", "query " + queries[qi].id + ": " + hits.error().message);
        std::vector<std::string> ranked;
        std::set<std::string> seen;
        for (const auto& h : *hits) {
            std::string id = h.source.rfind("beir:", 0) == 0 ? h.source.substr(5) : h.source;
            if (seen.insert(id).second) ranked.push_back(id);
            if (ranked.size() == kDocs) break;
        }
        const auto& rel = qrels[queries[qi].id];
        ndcg += index::ndcg_at_k(ranked, rel, 10);
        recall += index::recall_at_k(ranked, rel, kDocs);
        bar.update("queries " + std::to_string(qi + 1) + "/" + std::to_string(queries.size()));
    }
    bar.done();
    const double n = static_cast<double>(queries.size());
    std::sort(ms.begin(), ms.end());
    auto pct = [&](double p) { return ms[std::min(ms.size() - 1, static_cast<size_t>(p * static_cast<double>(ms.size())))]; };
    nlohmann::json out = {{"dataset", name},
                          {"mode", index::search_mode_name(*mode)},
                          {"ndcg_at_10", ndcg / n},
                          {"recall_at_100", recall / n},
                          {"n_queries", queries.size()},
                          {"n_documents", n_docs},
                          {"search_ms_p50", pct(0.5)},
                          {"search_ms_p99", pct(0.99)},
                          {"ingest_s", ingest_s},
                          {"ingested_records", n_added},
                          {"peak_rss_mib", peak_rss_mib()}};
    if (json) {
        std::printf("%s\n", out.dump().c_str());
    } else {
        std::printf("%s  mode %-6s  nDCG@10 %.4f  recall@100 %.4f  (%zu queries, %lld documents)\n", name.c_str(),
                    index::search_mode_name(*mode), ndcg / n, recall / n, queries.size(),
                    static_cast<long long>(n_docs));
        std::printf("search latency p50 %.1f ms, p99 %.1f ms; corpus step %.1f s (%lld records embedded); peak RSS %.0f MiB\n",
                    pct(0.5), pct(0.99), ingest_s, static_cast<long long>(n_added), peak_rss_mib());
    }
    return 0;
}

}  // namespace

int cmd_eval(int argc, char** argv) {
    if (argc < 1 || std::string(argv[0]) == "--help") {
        std::printf("usage: attnrag eval retrieval --beir DIR [--mode bm25|dense|hybrid] [--json]\n");
        return argc < 1 ? 2 : 0;
    }
    std::string what = argv[0];
    if (what == "retrieval") return eval_retrieval(argc - 1, argv + 1);
    return fail_usage("eval", "unknown evaluation '" + what + "' (retrieval)");
}

}  // namespace attnrag::cli
