// attnrag ingest: files and folders into a corpus (store + dense index), with progress, and
// optionally the passage KV states `ask` reuses (--precompute-kv).
#include <chrono>
#include <cstdio>
#include <optional>

#include <nlohmann/json.hpp>

#include "args.h"
#include "attnrag/index/corpus.hpp"
#include "attnrag/kv_store.hpp"
#include "attnrag/pipelines/rag.hpp"
#include "commands.h"
#include "common.h"
#include "progress.h"

namespace attnrag::cli {

namespace {

struct KvPrecomputeReport {
    int64_t n_precomputed = 0, n_already_stored = 0;
    double seconds = 0;
};

// Encodes and stores the KV state of every chunk in the corpus, as `ask` assembles it (document
// title + chunk text after the instruction's prefix). All chunks, not only this run's: states
// already stored are skipped after a catalogue lookup, and a corpus ingested earlier without
// --precompute-kv is filled in.
Result<KvPrecomputeReport> precompute_kv(index::Corpus& corpus, const Model& model, const std::string& instruction,
                                         int32_t n_threads) {
    constexpr size_t kBatch = 16;  // passages per precompute call (one tokenization batch)
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    auto kv_store = open_corpus_kv_store(corpus);
    if (!kv_store) return make_error(kv_store.error().code, "passage KV store: " + kv_store.error().message);
    auto session = pipelines::RagSession::create(model, &*kv_store, n_threads);
    if (!session) return session.error();
    Store& store = corpus.store();
    auto docs = store.list_documents();
    if (!docs) return docs.error();
    int64_t n_total = 0;
    for (const auto& d : *docs) n_total += d.n_chunks;

    KvPrecomputeReport out;
    Progress bar(true);
    std::vector<pipelines::RagPassage> batch;
    auto flush = [&]() -> Status {
        if (batch.empty()) return {};
        auto stored = session->precompute(batch, instruction);
        if (!stored) return stored.error();
        out.n_already_stored += *stored;
        out.n_precomputed += static_cast<int64_t>(batch.size()) - *stored;
        batch.clear();
        const int64_t n_done = out.n_already_stored + out.n_precomputed;
        const double s = std::chrono::duration<double>(clock::now() - t0).count();
        char line[160];
        std::snprintf(line, sizeof line, "kv %lld/%lld chunks (%lld already stored), %.1f chunks/s",
                      static_cast<long long>(n_done), static_cast<long long>(n_total),
                      static_cast<long long>(out.n_already_stored), s > 0 ? static_cast<double>(n_done) / s : 0.0);
        bar.update(line, n_done == n_total);
        return {};
    };
    for (const auto& d : *docs) {
        auto chunks = store.chunks_of(d.id);
        if (!chunks) return chunks.error();
        for (auto& c : *chunks) {
            // The fields `ask` builds from a search hit; only title and text enter the state's key.
            pipelines::RagPassage p;
            p.id = std::to_string(c.id);
            p.document_id = d.id;
            p.chunk_id = c.id;
            p.source = d.source;
            p.title = d.title;
            p.text = std::move(c.text);
            p.source_begin = c.source_begin;
            p.source_end = c.source_end;
            batch.push_back(std::move(p));
            if (batch.size() == kBatch) ATTNRAG_TRY(flush());
        }
    }
    ATTNRAG_TRY(flush());
    bar.done();
    out.seconds = std::chrono::duration<double>(clock::now() - t0).count();
    return out;
}

}  // namespace

int cmd_ingest(int argc, char** argv) {
    const std::vector<OptionSpec> specs = {
        {"db", true, "corpus directory (created if missing; required)"},
        {"chunk-tokens", true, "chunk budget in embedder tokens (default 256)"},
        {"overlap", true, "tokens of overlap between chunks (default 0)"},
        {"factory", true, "FAISS index for a new corpus: Flat (default), HNSW32, ..."},
        {"embedder", true, "sentence embedder folder (default: models/all-MiniLM-L6-v2)"},
        {"precompute-kv", false, "also encode and store every chunk's passage KV state for ask (needs the model)"},
        {"instruction", true, "with --precompute-kv: the system instruction (default: ask's default)"},
        {"json", false, "print the summary as JSON"},
        kModelOption,
        kThreadsOption,
        {"help", false, "show this help"},
    };
    Args args(argc, argv, specs);
    if (args.flag("help")) {
        std::printf("%s", usage_text("ingest", "--db DIR [--precompute-kv] PATH...", specs).c_str());
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
    const bool precompute = args.flag("precompute-kv");
    const pipelines::RagOptions rag_defaults;  // ask's instruction, so ask finds the states
    const std::string instruction = args.get_or("instruction", rag_defaults.instruction);
    if (args.get("instruction") && !precompute) return fail_usage("ingest", "--instruction needs --precompute-kv");
    // The model is loaded before ingesting so that a bad --model fails before any work.
    std::optional<Result<Model>> model;
    if (precompute) {
        model.emplace(load_model_from(args, "ingest"));
        if (!*model) return 1;
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
    KvPrecomputeReport kv;
    if (precompute) {
        auto k = precompute_kv(*corpus, **model, instruction, opt.n_threads);
        if (!k) return fail("ingest", "--precompute-kv: " + k.error().message);
        kv = *k;
    }
    if (json) {
        nlohmann::json out = {{"added", r.added},       {"unchanged", r.unchanged}, {"replaced", r.replaced},
                              {"skipped", nlohmann::json::array()}, {"chunks", r.n_chunks},
                              {"seconds", r.seconds},   {"peak_rss_mib", peak_rss_mib()}};
        for (const auto& s : r.skipped) out["skipped"].push_back({{"path", s.path}, {"reason", s.reason}});
        if (precompute) {
            out["kv_precomputed"] = kv.n_precomputed;
            out["kv_already_stored"] = kv.n_already_stored;
            out["kv_seconds"] = kv.seconds;
        }
        std::printf("%s\n", out.dump().c_str());
    } else {
        std::printf("added %lld, unchanged %lld, replaced %lld, skipped %zu; %lld chunks in %.1f s (%.1f chunks/s)\n",
                    static_cast<long long>(r.added), static_cast<long long>(r.unchanged),
                    static_cast<long long>(r.replaced), r.skipped.size(), static_cast<long long>(r.n_chunks),
                    r.seconds, r.seconds > 0 ? static_cast<double>(r.n_chunks) / r.seconds : 0.0);
        for (const auto& s : r.skipped) std::printf("  skipped %s: %s\n", s.path.c_str(), s.reason.c_str());
        if (precompute) {
            const int64_t n = kv.n_precomputed + kv.n_already_stored;
            std::printf("passage KV: %lld precomputed, %lld already stored in %.1f s (%.1f chunks/s)\n",
                        static_cast<long long>(kv.n_precomputed), static_cast<long long>(kv.n_already_stored),
                        kv.seconds, kv.seconds > 0 ? static_cast<double>(n) / kv.seconds : 0.0);
        }
    }
    return 0;
}

}  // namespace attnrag::cli
