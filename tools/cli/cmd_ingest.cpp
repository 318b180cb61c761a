// attnrag ingest: files and folders into a corpus (store + dense index), with progress.
#include <cstdio>

#include <nlohmann/json.hpp>

#include "args.h"
#include "attnrag/index/corpus.hpp"
#include "commands.h"
#include "common.h"
#include "progress.h"

namespace attnrag::cli {

int cmd_ingest(int argc, char** argv) {
    const std::vector<OptionSpec> specs = {
        {"db", true, "corpus directory (created if missing; required)"},
        {"chunk-tokens", true, "chunk budget in embedder tokens (default 256)"},
        {"overlap", true, "tokens of overlap between chunks (default 0)"},
        {"factory", true, "FAISS index for a new corpus: Flat (default), HNSW32, ..."},
        {"embedder", true, "sentence embedder folder (default: models/all-MiniLM-L6-v2)"},
        {"json", false, "print the summary as JSON"},
        kThreadsOption,
        {"help", false, "show this help"},
    };
    Args args(argc, argv, specs);
    if (args.flag("help")) {
        std::printf("%s", usage_text("ingest", "--db DIR PATH...", specs).c_str());
        return 0;
    }
    index::CorpusOptions opt;
    opt.chunk_tokens = static_cast<uint32_t>(args.get_int("chunk-tokens", 256));
    opt.overlap_tokens = static_cast<uint32_t>(args.get_int("overlap", 0));
    opt.n_threads = static_cast<int32_t>(args.get_int("threads", 0));
    opt.factory = args.get_or("factory", "");
    opt.embedder_dir = args.get_or("embedder", "");
    if (!args.ok()) return fail_usage("ingest", args.error());
    auto db = args.get("db");
    if (!db) return fail_usage("ingest", "--db is required");
    if (args.positional().empty()) return fail_usage("ingest", "give at least one file or folder");
    if (opt.chunk_tokens < 8 || opt.overlap_tokens >= opt.chunk_tokens) {
        return fail_usage("ingest", "--chunk-tokens must be >= 8 and --overlap below it");
    }
    auto corpus = index::Corpus::open(*db, opt);
    if (!corpus) return fail("ingest", corpus.error().message);

    std::vector<std::filesystem::path> paths(args.positional().begin(), args.positional().end());
    const bool json = args.flag("json");
    Progress bar(true);
    auto report = corpus->ingest(paths, [&](const index::IngestProgress& p) {
        char line[512];
        std::snprintf(line, sizeof line, "ingest %zu/%zu files, %lld chunks, %.1f files/s, %.1f chunks/s  %s",
                      p.files_done, p.files_total, static_cast<long long>(p.chunks_done),
                      p.elapsed_s > 0 ? static_cast<double>(p.files_done) / p.elapsed_s : 0.0,
                      p.elapsed_s > 0 ? static_cast<double>(p.chunks_done) / p.elapsed_s : 0.0,
                      p.current.size() > 60 ? ("..." + p.current.substr(p.current.size() - 57)).c_str()
                                            : p.current.c_str());
        bar.update(line, p.files_done == p.files_total);
        return true;
    });
    bar.done();
    if (!report) return fail("ingest", report.error().message);
    const auto& r = *report;
    if (json) {
        nlohmann::json out = {{"added", r.added},       {"unchanged", r.unchanged}, {"replaced", r.replaced},
                              {"skipped", nlohmann::json::array()}, {"chunks", r.n_chunks},
                              {"seconds", r.seconds},   {"peak_rss_mib", peak_rss_mib()}};
        for (const auto& s : r.skipped) out["skipped"].push_back({{"path", s.path}, {"reason", s.reason}});
        std::printf("%s\n", out.dump().c_str());
    } else {
        std::printf("added %lld, unchanged %lld, replaced %lld, skipped %zu; %lld chunks in %.1f s (%.1f chunks/s)\n",
                    static_cast<long long>(r.added), static_cast<long long>(r.unchanged),
                    static_cast<long long>(r.replaced), r.skipped.size(), static_cast<long long>(r.n_chunks),
                    r.seconds, r.seconds > 0 ? static_cast<double>(r.n_chunks) / r.seconds : 0.0);
        for (const auto& s : r.skipped) std::printf("  skipped %s: %s\n", s.path.c_str(), s.reason.c_str());
    }
    return 0;
}

}  // namespace attnrag::cli
