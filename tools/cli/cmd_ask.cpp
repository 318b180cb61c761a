// attnrag ask: retrieve passages from a corpus and answer a question about them, streaming the
// answer and citing passages by attention, with passage KV states reused across processes.
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "args.h"
#include "attnrag/index/corpus.hpp"
#include "attnrag/kv_store.hpp"
#include "attnrag/pipelines/rag.hpp"
#include "commands.h"
#include "common.h"

namespace attnrag::cli {

namespace fs = std::filesystem;

Result<PassageKvStore> open_corpus_kv_store(index::Corpus& corpus) {
    PassageKvStoreOptions o;
    o.memory_budget_bytes = size_t{1} << 30;
    o.directory = corpus.dir() / "kv";
    o.catalogue = &corpus.store();
    o.file_type = KvFileType::F16;
    return PassageKvStore::open(o);
}

namespace {

pipelines::RagPassage passage_of(const index::SearchHit& h) {
    pipelines::RagPassage p;
    p.id = std::to_string(h.chunk_id);
    p.document_id = h.document_id;
    p.chunk_id = h.chunk_id;
    p.source = h.source;
    p.title = h.title;
    p.text = h.text;
    p.source_begin = h.source_begin;
    p.source_end = h.source_end;
    return p;
}

void print_citations(const pipelines::RagAnswer& a, const std::vector<pipelines::RagPassage>& passages) {
    if (a.citations.empty()) {
        std::printf("(no citations)\n");
        return;
    }
    int rank = 0;
    for (const auto& c : a.citations) {
        const std::string& title = passages[c.passage].title;
        std::printf("[%d] %5.1f%%  %s  chunk %lld  [%llu, %llu)%s%s\n", ++rank, 100.0 * c.share, c.source.c_str(),
                    static_cast<long long>(c.chunk_id), static_cast<unsigned long long>(c.source_begin),
                    static_cast<unsigned long long>(c.source_end), title.empty() ? "" : "  ", title.c_str());
    }
}

nlohmann::json answer_json(const std::string& question, const pipelines::RagAnswer& a,
                           const std::vector<pipelines::RagPassage>& passages,
                           const std::vector<index::SearchHit>& hits, const pipelines::RagOptions& options) {
    nlohmann::json out = {
        {"question", question},
        {"answer", a.text},
        {"stop_reason", stop_reason_name(a.stop_reason)},
        {"assembly", std::string(pipelines::to_string(options.assembly.mode))},
        {"sort_passes", options.sort_passes},
        {"ttft_ms", a.ttft_ms},
        {"decode_ms", a.decode_ms},
        {"n_answer_tokens", a.n_answer_tokens},
        {"passages_reused", a.assembled.n_passages_reused},
        {"passages_encoded", a.assembled.n_passages_encoded},
        {"dropped", nlohmann::json::array()},
        {"citations", nlohmann::json::array()},
        {"passages", nlohmann::json::array()},
    };
    for (size_t i : a.dropped) out["dropped"].push_back(passages[i].id);
    for (const auto& c : a.citations) {
        out["citations"].push_back({{"id", c.id},
                                    {"document_id", c.document_id},
                                    {"chunk_id", c.chunk_id},
                                    {"source", c.source},
                                    {"source_begin", c.source_begin},
                                    {"source_end", c.source_end},
                                    {"share", c.share}});
    }
    for (size_t i = 0; i < passages.size(); ++i) {
        out["passages"].push_back({{"id", passages[i].id}, {"source", passages[i].source}, {"score", hits[i].score}});
    }
    return out;
}

}  // namespace

int cmd_ask(int argc, char** argv) {
    const pipelines::RagOptions defaults;
    const std::vector<OptionSpec> specs = {
        {"db", true, "corpus directory (required)"},
        {"k", true, "passages to retrieve (default 8)"},
        {"mode", true, "retrieval: bm25 | dense | hybrid (default hybrid)"},
        {"doc", true, "only this document id"},
        {"where", true, "only documents whose metadata KEY equals VALUE (KEY=VALUE)"},
        {"assembly", true, "full | blocks | blocks-ape | blocks-recompute (default blocks: cached passage KV)"},
        {"sort-passes", true, "attention-sorting passes before answering (default 0)"},
        {"max-tokens", true, "maximum answer tokens (default " + std::to_string(defaults.max_answer_tokens) + ")"},
        {"instruction", true, "system instruction (default: the one ingest --precompute-kv uses)"},
        {"ctx", true, "context size in tokens (default: the model's)"},
        {"embedder", true, "sentence embedder folder for dense/hybrid (default: models/all-MiniLM-L6-v2)"},
        {"json", false, "print one JSON object instead of streaming"},
        kModelOption,
        kThreadsOption,
        {"help", false, "show this help"},
    };
    Args args(argc, argv, specs);
    if (args.flag("help")) {
        std::printf("%s", usage_text("ask",
                                     "--db DIR [--k 8] [--assembly full|blocks|blocks-ape|blocks-recompute] "
                                     "[--sort-passes K] [--mode bm25|dense|hybrid] [--json] QUESTION",
                                     specs)
                              .c_str());
        return 0;
    }
    const int k = static_cast<int>(args.get_int("k", 8));
    pipelines::RagOptions options;
    options.sort_passes = static_cast<int32_t>(args.get_int("sort-passes", 0));
    options.max_answer_tokens = static_cast<int32_t>(args.get_int("max-tokens", defaults.max_answer_tokens));
    options.instruction = args.get_or("instruction", defaults.instruction);
    const auto n_ctx = static_cast<int32_t>(args.get_int("ctx", 0));
    const auto n_threads = static_cast<int32_t>(args.get_int("threads", 0));
    if (!args.ok()) return fail_usage("ask", args.error());
    auto db = args.get("db");
    if (!db) return fail_usage("ask", "--db is required");
    if (k <= 0) return fail_usage("ask", "--k must be positive");
    if (options.sort_passes < 0 || options.max_answer_tokens < 1 || n_ctx < 0 || n_threads < 0) {
        return fail_usage("ask", "--sort-passes, --ctx and --threads must be >= 0 and --max-tokens >= 1");
    }
    auto mode = index::parse_search_mode(args.get_or("mode", "hybrid"));
    if (!mode) return fail_usage("ask", mode.error().message);
    auto assembly = pipelines::parse_assembly(args.get_or("assembly", "blocks"));
    if (!assembly) return fail_usage("ask", assembly.error().message);
    options.assembly.mode = *assembly;
    Filter filter;
    std::string ferr;
    if (!parse_filter(args, filter, ferr)) return fail_usage("ask", ferr);
    std::string question;
    for (const auto& p : args.positional()) {
        if (!question.empty()) question += ' ';
        question += p;
    }
    if (question.find_first_not_of(" \t\r\n") == std::string::npos) return fail_usage("ask", "give a question");
    const bool json = args.flag("json");

    if (!fs::exists(fs::path(*db) / "attnrag.db")) {
        return fail("ask", *db + ": no corpus here (run attnrag ingest --db " + *db + " ...)");
    }
    // read_only: never create a corpus; the store connection still writes the KV catalogue.
    index::CorpusOptions copt;
    copt.read_only = true;
    copt.n_threads = n_threads;
    copt.embedder_dir = args.get_or("embedder", "");
    auto corpus = index::Corpus::open(*db, copt);
    if (!corpus) return fail("ask", corpus.error().message);
    auto hits = corpus->search(question, k, *mode, filter);
    if (!hits) return fail("ask", hits.error().message);
    if (hits->empty()) return fail("ask", "no passages found for the question");
    std::vector<pipelines::RagPassage> passages;
    passages.reserve(hits->size());
    for (const auto& h : *hits) passages.push_back(passage_of(h));

    auto model = load_model_from(args, "ask");
    if (!model) return 1;
    auto kv_store = open_corpus_kv_store(*corpus);
    if (!kv_store) return fail("ask", "passage KV store: " + kv_store.error().message);
    auto session = pipelines::RagSession::create(*model, &*kv_store, n_threads, n_ctx);
    if (!session) return fail("ask", session.error().message);

    if (!json) {
        options.on_text = [](std::string_view piece) {
            std::fwrite(piece.data(), 1, piece.size(), stdout);
            std::fflush(stdout);
            return true;
        };
    }
    auto answer = session->answer(question, passages, options);
    if (!answer) {
        if (!json) std::printf("\n");
        return fail("ask", answer.error().message);
    }
    const auto& a = *answer;
    if (json) {
        std::printf("%s\n", answer_json(question, a, passages, *hits, options).dump(2).c_str());
        return 0;
    }
    std::printf("\n\n");
    print_citations(a, passages);
    std::fflush(stdout);
    if (!a.dropped.empty()) {
        std::fprintf(stderr, "note: %zu passage%s did not fit the window and %s left out\n", a.dropped.size(),
                     a.dropped.size() == 1 ? "" : "s", a.dropped.size() == 1 ? "was" : "were");
    }
    std::fprintf(stderr, "ttft %.1f ms (%s), passages %d reused from cache, %d encoded; decode %.1f tok/s\n",
                 a.ttft_ms, std::string(pipelines::to_string(options.assembly.mode)).c_str(),
                 a.assembled.n_passages_reused, a.assembled.n_passages_encoded,
                 a.decode_ms > 0 ? 1000.0 * a.n_answer_tokens / a.decode_ms : 0.0);
    return 0;
}

}  // namespace attnrag::cli
