// attnrag ask: retrieve passages from a corpus and answer a question about them, streaming the
// answer and citing passages by attention, with passage KV states reused across processes.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "args.h"
#include "attnrag/index/corpus.hpp"
#include "attnrag/kv_store.hpp"
#include "attnrag/pipelines/infiniretri.hpp"
#include "attnrag/pipelines/rag.hpp"
#include "commands.h"
#include "common.h"
#include "infiniretri_args.h"
#include "progress.h"
#include "sort_args.h"

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
        {"sort_score", options.sort.calibrated ? "calibrated" : "raw"},
        {"sort_rows", options.sort.question_rows ? "question" : "last"},
        {"sort_layers", sort_layers_name(options.sort)},
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

// The evidence InfiniRetri kept, best first (at most `n`), with the source byte ranges.
void print_kept(const pipelines::InfiniRetriAnswer& a, const std::string& file, size_t n) {
    std::vector<const pipelines::KeptSentence*> best;
    for (const auto& s : a.kept) best.push_back(&s);
    // By relevance where it was computed (--answer-context), else by score.
    std::stable_sort(best.begin(), best.end(), [](auto* x, auto* y) {
        return x->relevance != y->relevance ? x->relevance > y->relevance : x->score > y->score;
    });
    if (best.size() > n) best.resize(n);
    if (best.empty()) {
        std::printf("(no sentences kept)\n");
        return;
    }
    int rank = 0;
    for (const auto* s : best) {
        std::string text = s->text;
        for (char& c : text) {
            if (c == '\n' || c == '\r' || c == '\t') c = ' ';
        }
        if (text.size() > 160) {
            size_t cut = 157;
            while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;  // whole characters
            text = text.substr(0, cut) + "...";
        }
        std::printf("[%d] %s  [%llu, %llu)  %s\n", ++rank, file.c_str(), static_cast<unsigned long long>(s->begin),
                    static_cast<unsigned long long>(s->end), text.c_str());
    }
}

nlohmann::json file_answer_json(const std::string& question, const std::string& file, const std::string& mode,
                                const pipelines::InfiniRetriAnswer& a) {
    nlohmann::json out = {
        {"question", question},
        {"file", file},
        {"mode", mode},
        {"answer", a.text},
        {"stop_reason", stop_reason_name(a.stop_reason)},
        {"tokens_read", a.n_tokens_read},
        {"sentences", a.n_sentences},
        {"chunks", a.n_chunks},
        {"cache_tokens", a.n_cache_tokens},
        {"cache_limit", a.cache_limit},
        {"max_prompt_tokens", a.max_prompt_tokens},
        {"answer_tokens", a.n_answer_tokens},
        {"context_tokens", a.n_context_tokens},
        {"read_ms", a.read_ms},
        {"prefill_ms", a.prefill_ms},
        {"decode_ms", a.decode_ms},
        {"total_ms", a.total_ms},
        {"kept", nlohmann::json::array()},
    };
    for (const auto& s : a.kept) {
        out["kept"].push_back({{"begin", s.begin}, {"end", s.end}, {"score", s.score}, {"relevance", s.relevance}, {"text", s.text}});
        if (s.reserved) out["kept"].back()["reserved"] = true;
    }
    if (!a.candidates.empty()) {
        auto& cs = out["candidates"] = nlohmann::json::array();
        for (size_t k = 0; k < a.candidates.size(); ++k) {
            const auto& c = a.candidates[k];
            cs.push_back({{"answer_context", c.context_budget},
                          {"context_tokens", c.n_context_tokens},
                          {"answer", c.text},
                          {"grounding", c.grounding},
                          {"chosen", static_cast<int32_t>(k) == a.chosen}});
        }
    }
    return out;
}

// ask --file: one document of any length, read by InfiniRetri (or whole, --mode full).
int ask_file(Args& args, const std::string& file, const std::string& question, bool json) {
    pipelines::InfiniRetriOptions options;
    options.max_answer_tokens = static_cast<int32_t>(args.get_int("max-tokens", options.max_answer_tokens));
    const auto n_ctx = static_cast<int32_t>(args.get_int("ctx", 0));
    const auto n_threads = static_cast<int32_t>(args.get_int("threads", 0));
    std::string err;
    if (!read_infiniretri_options(args, options, err)) return fail_usage("ask", err);
    Backend backend = Backend::Cpu;
    if (!read_backend(args, backend, err)) return fail_usage("ask", err);
    if (options.max_answer_tokens < 1 || n_ctx < 0 || n_threads < 0) {
        return fail_usage("ask", "--ctx and --threads must be >= 0 and --max-tokens >= 1");
    }
    if (auto instruction = args.get("instruction")) options.instruction = *instruction;
    const std::string mode = args.get_or("mode", "infiniretri");
    if (mode != "infiniretri" && mode != "full") {
        return fail_usage("ask", "with --file, --mode is infiniretri or full (not '" + mode + "')");
    }
    for (const char* opt : {"k", "assembly", "sort-passes", "sort-layers", "sort-rows", "sort-score", "doc", "where", "embedder"}) {
        if (args.get(opt)) return fail_usage("ask", std::string("--") + opt + " applies to --db, not --file");
    }

    auto source = pipelines::SentenceSource::open(file);
    if (!source) return fail("ask", source.error().message);
    auto model = load_model_from(args, "ask");
    if (!model) return 1;
    if (auto hs = read_infiniretri_heads(args, *model, options); !hs) return fail("ask", hs.error().message);
    auto reader = pipelines::InfiniRetri::create(*model, n_threads, n_ctx, backend);
    if (!reader) return fail("ask", reader.error().message);

    Progress bar(!args.flag("quiet"));
    options.on_progress = [&](const pipelines::InfiniRetriProgress& p) {
        bar.update(infiniretri_progress_line(p));
        return true;
    };
    if (!json) {
        options.on_text = [&](std::string_view piece) {
            bar.done();
            std::fwrite(piece.data(), 1, piece.size(), stdout);
            std::fflush(stdout);
            return true;
        };
    }
    auto answer = mode == "full" ? reader->answer_full(*source, question, options)
                                 : reader->answer(*source, question, options);
    bar.done();
    if (!answer) {
        if (answer.error().code == Errc::OutOfRange && mode == "full") {
            return fail("ask", answer.error().message + " (use --mode infiniretri for long documents)");
        }
        return fail("ask", answer.error().message);
    }
    const auto& a = *answer;
    if (json) {
        std::printf("%s\n", file_answer_json(question, file, mode, a).dump(2).c_str());
        return 0;
    }
    std::printf("\n\n");
    if (mode == "infiniretri") print_kept(a, file, 3);
    std::fflush(stdout);
    std::fprintf(stderr, "%lld tokens read in %d chunks (%.0f tokens/s); answer from %d kept tokens, %.1f ms prefill, %d tokens in %.1f ms\n",
                 static_cast<long long>(a.n_tokens_read), a.n_chunks,
                 a.read_ms > 0 ? 1000.0 * static_cast<double>(a.n_tokens_read) / a.read_ms : 0.0,
                 mode == "full" ? a.max_prompt_tokens : a.n_cache_tokens, a.prefill_ms, a.n_answer_tokens, a.decode_ms);
    return 0;
}

}  // namespace

int cmd_ask(int argc, char** argv) {
    const pipelines::RagOptions defaults;
    std::vector<OptionSpec> specs = {
        {"db", true, "corpus directory (this or --file)"},
        {"file", true, "one document of any length, read by InfiniRetri (this or --db)"},
        {"k", true, "passages to retrieve (default 8)"},
        {"mode", true, "with --db, retrieval: bm25 | dense | hybrid (default hybrid); with --file: infiniretri | full "
                       "(default infiniretri)"},
        {"doc", true, "only this document id"},
        {"where", true, "only documents whose metadata KEY equals VALUE (KEY=VALUE)"},
        {"assembly", true, "full | blocks | blocks-ape | blocks-recompute (default blocks: cached passage KV)"},
        {"max-tokens", true, "maximum answer tokens (default " + std::to_string(defaults.max_answer_tokens) + "; " + std::to_string(pipelines::InfiniRetriOptions{}.max_answer_tokens) + " with --file)"},
        {"instruction", true, "system instruction (default: the one ingest --precompute-kv uses)"},
        {"ctx", true, "context size in tokens (default: the model's)"},
        {"embedder", true, "sentence embedder folder for dense/hybrid (default: models/all-MiniLM-L6-v2)"},
        {"json", false, "print one JSON object instead of streaming"},
        {"quiet", false, "no progress display (--file)"},
        kModelOption,
        kThreadsOption,
        {"help", false, "show this help"},
    };
    {
        auto sort_specs = sort_option_specs();
        const auto at = std::find_if(specs.begin(), specs.end(), [](const OptionSpec& o) { return o.name == "max-tokens"; });
        specs.insert(at, sort_specs.begin(), sort_specs.end());
    }
    for (auto& spec : infiniretri_option_specs()) specs.insert(specs.end() - 3, std::move(spec));
    Args args(argc, argv, specs);
    if (args.flag("help")) {
        std::printf("%s", usage_text("ask",
                                     "--db DIR [--k 8] [--assembly full|blocks|blocks-ape|blocks-recompute] "
                                     "[--sort-passes K] [--mode bm25|dense|hybrid] [--json] QUESTION\n"
                                     "       attnrag ask --file DOC [--mode infiniretri|full] [--json] QUESTION",
                                     specs)
                              .c_str());
        return 0;
    }
    if (auto file = args.get("file")) {
        if (!args.ok()) return fail_usage("ask", args.error());
        if (args.get("db")) return fail_usage("ask", "give --db or --file, not both");
        std::string question;
        for (const auto& p : args.positional()) {
            if (!question.empty()) question += ' ';
            question += p;
        }
        if (question.find_first_not_of(" \t\r\n") == std::string::npos) return fail_usage("ask", "give a question");
        return ask_file(args, *file, question, args.flag("json"));
    }
    for (const auto& spec : infiniretri_option_specs()) {
        if (args.get(spec.name)) return fail_usage("ask", "--" + spec.name + " applies to --file, not --db");
    }
    const int k = static_cast<int>(args.get_int("k", 8));
    pipelines::RagOptions options;
    if (std::string err; !read_sort_options(args, options, err)) return fail_usage("ask", err);
    options.max_answer_tokens = static_cast<int32_t>(args.get_int("max-tokens", defaults.max_answer_tokens));
    options.instruction = args.get_or("instruction", defaults.instruction);
    const auto n_ctx = static_cast<int32_t>(args.get_int("ctx", 0));
    const auto n_threads = static_cast<int32_t>(args.get_int("threads", 0));
    if (!args.ok()) return fail_usage("ask", args.error());
    auto db = args.get("db");
    if (!db) return fail_usage("ask", "give --db DIR (a corpus) or --file DOC (one document)");
    if (k <= 0) return fail_usage("ask", "--k must be positive");
    if (options.max_answer_tokens < 1 || n_ctx < 0 || n_threads < 0) {
        return fail_usage("ask", "--ctx and --threads must be >= 0 and --max-tokens >= 1");
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
