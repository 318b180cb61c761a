// attnrag eval: evaluation harnesses over the shared data sets (retrieval: BEIR layout; qa:
// passage QA and corpus QA with EM/F1/contains, citations and time to first token).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <set>

#include <nlohmann/json.hpp>

#include "args.h"
#include "attnrag/index/corpus.hpp"
#include "attnrag/index/metrics.hpp"
#include "attnrag/kv_store.hpp"
#include "attnrag/pipelines/qa_metrics.hpp"
#include "attnrag/pipelines/rag.hpp"
#include "attnrag/store.hpp"
#include "commands.h"
#include "common.h"
#include "eval_common.h"
#include "progress.h"
#include "sort_args.h"

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
        {"embedder", true, "sentence embedder folder (default: models/all-MiniLM-L6-v2)"},
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
    opt.embedder_dir = args.get_or("embedder", "");
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

// ---- eval qa ----------------------------------------------------------------------------------

struct QaItem {
    std::string id, question;
    std::vector<std::string> answers, gold;
    std::vector<pipelines::RagPassage> passages;  // --passages: the line's own; --corpus: retrieved
};

// Where gold passages go in the prompt (before attention sorting); the others keep file order.
enum class Placement { Given, GoldFirst, GoldMiddle, GoldLast };

std::optional<Placement> parse_placement(std::string_view s) {
    if (s == "given") return Placement::Given;
    if (s == "gold-first") return Placement::GoldFirst;
    if (s == "gold-middle") return Placement::GoldMiddle;
    if (s == "gold-last") return Placement::GoldLast;
    return std::nullopt;
}

const char* placement_name(Placement p) {
    switch (p) {
        case Placement::Given: return "given";
        case Placement::GoldFirst: return "gold-first";
        case Placement::GoldMiddle: return "gold-middle";
        case Placement::GoldLast: return "gold-last";
    }
    return "given";
}

std::vector<pipelines::RagPassage> place(const QaItem& item, Placement placement) {
    if (placement == Placement::Given) return item.passages;
    const std::set<std::string> gold(item.gold.begin(), item.gold.end());
    std::vector<pipelines::RagPassage> golds, others;
    for (const auto& p : item.passages) (gold.count(p.id) ? golds : others).push_back(p);
    const size_t at = placement == Placement::GoldFirst   ? 0
                      : placement == Placement::GoldLast ? others.size()
                                                         : others.size() / 2;
    std::vector<pipelines::RagPassage> out(others.begin(), others.begin() + static_cast<ptrdiff_t>(at));
    for (auto& p : golds) out.push_back(std::move(p));
    for (size_t i = at; i < others.size(); ++i) out.push_back(std::move(others[i]));
    return out;
}

// id, question, answers, gold_passages (both formats), and with `with_passages` the passages.
bool parse_question(const nlohmann::json& j, bool with_passages, QaItem& item, std::string& error) {
    if (!get_string(j, "id", item.id, error) || !get_string(j, "question", item.question, error) ||
        !get_strings(j, "answers", item.answers, error) || !get_strings(j, "gold_passages", item.gold, error)) {
        return false;
    }
    if (item.question.empty()) {
        error = "empty \"question\"";
        return false;
    }
    if (!with_passages) return true;
    auto ps = j.find("passages");
    if (ps == j.end() || !ps->is_array()) {
        error = ps == j.end() ? "missing field \"passages\"" : "field \"passages\" is not an array";
        return false;
    }
    for (const auto& pj : *ps) {
        if (!pj.is_object()) {
            error = "a passage is not a JSON object";
            return false;
        }
        pipelines::RagPassage p;
        if (!get_string(pj, "id", p.id, error) || !get_string(pj, "text", p.text, error)) {
            error = std::string("passage ") + std::to_string(item.passages.size()) + ": " + error;
            return false;
        }
        if (pj.contains("title") && !get_string(pj, "title", p.title, error)) return false;
        p.source = p.id;
        p.source_end = p.text.size();
        item.passages.push_back(std::move(p));
    }
    return true;
}

// A retrieved chunk as a passage whose id is the corpus record's _id (the document source), so
// citations and retrieval compare with gold ids. Records were ingested as "title\n\ntext": the
// title goes in the passage header, not twice.
pipelines::RagPassage passage_of_hit(const index::SearchHit& h) {
    pipelines::RagPassage p;
    p.id = h.source;
    p.document_id = h.document_id;
    p.chunk_id = h.chunk_id;
    p.source = h.source;
    p.title = h.title;
    p.text = h.text;
    const std::string head = h.title + "\n\n";
    if (h.begin == 0 && !h.title.empty() && p.text.size() > head.size() && p.text.compare(0, head.size(), head) == 0) {
        p.text.erase(0, head.size());
    }
    p.source_begin = h.source_begin;
    p.source_end = h.source_end;
    return p;
}

int eval_qa(int argc, char** argv) {
    std::vector<OptionSpec> specs = {
        {"passages", true, "passage QA file: JSONL {id, question, answers, passages, gold_passages}"},
        {"corpus", true, "corpus QA folder: corpus.jsonl {_id, title, text} and questions.jsonl"},
        {"questions", true, "with --corpus: the questions file (default <corpus>/questions.jsonl)"},
        {"db", true, "with --corpus: corpus directory to build or reuse (default .cache/qa-<folder name>)"},
        {"embedder", true, "with --corpus: sentence embedder folder (default: models/all-MiniLM-L6-v2)"},
        {"k", true, "with --corpus: passages retrieved per question (default 5)"},
        {"search", true, "with --corpus: bm25 | dense | hybrid (default hybrid)"},
        {"assembly", true, "full | blocks | blocks-ape | blocks-recompute (default blocks)"},
        {"citation", true, "citation score: peak | mass | peak-raw | mass-raw (default mass; -raw: no baseline)"},
        {"order", true, "with --passages: given | gold-first | gold-middle | gold-last (default given)"},
        {"limit", true, "evaluate only the first N questions"},
        {"sample", true, "N questions spread evenly over the file (after --limit)"},
        {"max-tokens", true, "answer length limit in tokens (default 32)"},
        {"kv-dir", true, "also keep passage KV states on disk in DIR (default: memory only)"},
        {"details", true, "write one JSON line per question to FILE"},
        {"json", false, "print one JSON object"},
        kModelOption,
        kThreadsOption,
        {"help", false, "show this help"},
    };
    {
        auto sort_specs = sort_option_specs();
        const auto at = std::find_if(specs.begin(), specs.end(), [](const OptionSpec& o) { return o.name == "citation"; });
        specs.insert(at, sort_specs.begin(), sort_specs.end());
    }
    Args args(argc, argv, specs);
    if (args.flag("help")) {
        std::printf("%s", usage_text("eval qa",
                                     "(--passages FILE.jsonl | --corpus DIR) [--assembly MODE] [--sort-passes K] "
                                     "[--order ORDER] [--json]",
                                     specs)
                              .c_str());
        return 0;
    }
    const auto limit = args.get_int("limit", 0);
    const auto sample = args.get_int("sample", 0);
    const auto k = args.get_int("k", 5);
    const auto max_tokens = args.get_int("max-tokens", 32);
    const auto threads = args.get_int("threads", 0);
    if (!args.ok()) return fail_usage("eval", args.error());
    pipelines::RagOptions options;
    if (std::string err; !read_sort_options(args, options, err)) return fail_usage("eval", err);
    const int32_t sort_passes = options.sort_passes;
    const auto passages_file = args.get("passages");
    const auto corpus_arg = args.get("corpus");
    if (passages_file.has_value() == corpus_arg.has_value()) {
        return fail_usage("eval", "give one of --passages FILE or --corpus DIR");
    }
    if (passages_file) {
        for (const char* o : {"questions", "db", "k", "search", "embedder"}) {
            if (args.get(o)) return fail_usage("eval", std::string("--") + o + " needs --corpus");
        }
    }
    if (limit < 0 || sample < 0) return fail_usage("eval", "--limit and --sample must be >= 0");
    if (k < 1 || k > 1000) return fail_usage("eval", "--k must be in [1, 1000]");
    if (max_tokens < 1 || max_tokens > 4096) return fail_usage("eval", "--max-tokens must be in [1, 4096]");
    if (threads < 0 || threads > 1024) return fail_usage("eval", "--threads must be in [0, 1024]");
    auto assembly = pipelines::parse_assembly(args.get_or("assembly", "blocks"));
    if (!assembly) return fail_usage("eval", assembly.error().message);
    auto search_mode = index::parse_search_mode(args.get_or("search", "hybrid"));
    if (!search_mode) return fail_usage("eval", search_mode.error().message);
    const auto placement = parse_placement(args.get_or("order", "given"));
    if (!placement) return fail_usage("eval", "--order must be given, gold-first, gold-middle or gold-last");
    if (corpus_arg && *placement != Placement::Given) {
        return fail_usage("eval", "--order needs --passages (retrieved passages keep retriever order)");
    }
    const bool json = args.flag("json");

    // Questions (and, for --passages, their passages), all validated before the model loads.
    std::vector<QaItem> items;
    std::string dataset;
    if (passages_file) {
        dataset = fs::path(*passages_file).stem().string();
        auto st = read_jsonl(*passages_file, [&](const nlohmann::json& j, std::string& error) {
            QaItem item;
            if (!parse_question(j, true, item, error)) return false;
            items.push_back(std::move(item));
            return true;
        });
        if (!st) return fail("eval", st.error().message);
    } else {
        dataset = fs::absolute(fs::path(*corpus_arg)).lexically_normal().filename().string();
        const fs::path questions = args.get_or("questions", (fs::path(*corpus_arg) / "questions.jsonl").string());
        auto st = read_jsonl(questions, [&](const nlohmann::json& j, std::string& error) {
            QaItem item;
            if (!parse_question(j, false, item, error)) return false;
            items.push_back(std::move(item));
            return true;
        });
        if (!st) return fail("eval", st.error().message);
    }
    if (limit > 0 && static_cast<size_t>(limit) < items.size()) items.resize(static_cast<size_t>(limit));
    if (sample > 0) {
        const std::vector<char> chosen = spread_sample(items.size(), static_cast<size_t>(sample));
        std::vector<QaItem> picked;
        for (size_t i = 0; i < items.size(); ++i) {
            if (chosen[i]) picked.push_back(std::move(items[i]));
        }
        items = std::move(picked);
    }
    if (items.empty()) return fail("eval", "no questions");

    std::ofstream details;
    if (auto path = args.get("details")) {
        details.open(*path);
        if (!details) return fail("eval", *path + ": cannot write");
    }

    // --corpus: build or update the corpus db (unchanged records are skipped by content hash).
    std::optional<index::Corpus> corpus;
    if (corpus_arg) {
        index::CorpusOptions copt;
        copt.n_threads = static_cast<int32_t>(threads);
        copt.embedder_dir = args.get_or("embedder", "");
        const fs::path db = args.get_or("db", (fs::path(".cache") / ("qa-" + dataset)).string());
        auto c = index::Corpus::open(db, copt);
        if (!c) return fail("eval", db.string() + ": " + c.error().message);
        corpus.emplace(std::move(c).value());
        int64_t n_docs = 0, n_added = 0;
        Progress bar(true);
        auto st = read_jsonl(fs::path(*corpus_arg) / "corpus.jsonl", [&](const nlohmann::json& j, std::string& error) {
            std::string id, text, title;
            if (!get_string(j, "_id", id, error) || !get_string(j, "text", text, error)) return false;
            if (j.contains("title") && !get_string(j, "title", title, error)) return false;
            auto put = corpus->ingest_text(id, title.empty() ? text : title + "\n\n" + text, title);
            if (!put) {
                error = put.error().message;
                return false;
            }
            ++n_docs;
            if (put->outcome != PutOutcome::Unchanged) ++n_added;
            bar.update(std::string("corpus ") + std::to_string(n_docs) + " records (" + std::to_string(n_added) +
                       " new)");
            return true;
        });
        bar.done();
        if (!st) return fail("eval", st.error().message);
        if (auto fl = corpus->flush(); !fl) return fail("eval", fl.error().message);
    }

    auto model = load_model_from(args, "eval");
    if (!model) return 1;

    // Passage states: memory (2 GiB, LRU) and, with --kv-dir, files catalogued in DIR/kv.db.
    std::optional<Store> catalogue;
    PassageKvStoreOptions kv_opts;
    kv_opts.memory_budget_bytes = size_t{2} << 30;
    if (auto kv_dir = args.get("kv-dir")) {
        std::error_code ec;
        fs::create_directories(*kv_dir, ec);
        if (ec) return fail("eval", "cannot create " + *kv_dir + ": " + ec.message());
        auto cat = Store::open(fs::path(*kv_dir) / "kv.db");
        if (!cat) return fail("eval", cat.error().message);
        catalogue.emplace(std::move(cat).value());
        kv_opts.directory = *kv_dir;
        kv_opts.catalogue = &*catalogue;
    }
    auto kv_store = PassageKvStore::open(kv_opts);
    if (!kv_store) return fail("eval", kv_store.error().message);
    auto session = pipelines::RagSession::create(*model, &*kv_store, static_cast<int32_t>(threads));
    if (!session) return fail("eval", session.error().message);

    options.assembly.mode = *assembly;
    options.max_answer_tokens = static_cast<int32_t>(max_tokens);
    const std::string citation = args.get_or("citation", "mass");
    if (citation != "peak" && citation != "mass" && citation != "peak-raw" && citation != "mass-raw") {
        return fail_usage("eval", "--citation must be peak, mass, peak-raw or mass-raw");
    }
    options.citation_score = citation.rfind("peak", 0) == 0 ? pipelines::RagOptions::CitationScore::Peak
                                                            : pipelines::RagOptions::CitationScore::Mass;
    options.citation_baseline = citation.find("-raw") == std::string::npos;
    // Warm TTFT: the same passages again (now stored), sorting included, one token, no citations.
    pipelines::RagOptions warm_options = options;
    warm_options.max_answer_tokens = 1;
    warm_options.citations = false;

    const auto t_start = std::chrono::steady_clock::now();
    double em = 0, f1 = 0, contains = 0, cited = 0, retrieved = 0, decode_ms = 0;
    double gold_nearest = 0;  // questions whose prompt ends with a gold passage (after sorting)
    int64_t n_answer_tokens = 0, n_dropped = 0;
    std::vector<double> ttft_cold, ttft_warm;
    Progress bar(true);
    for (size_t qi = 0; qi < items.size(); ++qi) {
        QaItem& item = items[qi];
        const std::set<std::string> gold(item.gold.begin(), item.gold.end());
        bool retrieval_hit = false;
        if (corpus) {
            auto hits = corpus->search(item.question, static_cast<int>(k), *search_mode);
            if (!hits) return fail("eval", "question " + item.id + ": " + hits.error().message);
            for (const auto& h : *hits) {
                item.passages.push_back(passage_of_hit(h));
                retrieval_hit = retrieval_hit || gold.count(h.source) != 0;
            }
            retrieved += retrieval_hit ? 1 : 0;
        }
        const std::vector<pipelines::RagPassage> passages = place(item, *placement);
        auto a = session->answer(item.question, passages, options);
        if (!a) return fail("eval", "question " + item.id + ": " + a.error().message);

        // The warm run gets the passages the cold one kept (it has a larger window budget).
        std::vector<pipelines::RagPassage> kept;
        for (size_t i = 0; i < passages.size(); ++i) {
            if (std::find(a->dropped.begin(), a->dropped.end(), i) == a->dropped.end()) kept.push_back(passages[i]);
        }
        auto warm = session->answer(item.question, kept, warm_options);
        if (!warm) return fail("eval", "question " + item.id + " (warm run): " + warm.error().message);

        const bool q_em = pipelines::exact_match(a->text, item.answers);
        const double q_f1 = pipelines::f1_score(a->text, item.answers);
        const bool q_contains = pipelines::contains_answer(a->text, item.answers);
        bool q_cited = false;
        for (size_t c = 0; c < std::min<size_t>(2, a->citations.size()); ++c) {
            q_cited = q_cited || gold.count(a->citations[c].id) != 0;
        }
        const bool q_gold_nearest = !a->order.empty() && gold.count(passages[a->order.back()].id) != 0;
        gold_nearest += q_gold_nearest ? 1 : 0;
        em += q_em ? 1 : 0;
        f1 += q_f1;
        contains += q_contains ? 1 : 0;
        cited += q_cited ? 1 : 0;
        ttft_cold.push_back(a->ttft_ms);
        ttft_warm.push_back(warm->ttft_ms);
        decode_ms += a->decode_ms;
        n_answer_tokens += a->n_answer_tokens;
        n_dropped += static_cast<int64_t>(a->dropped.size());

        if (details.is_open()) {
            nlohmann::json cites = nlohmann::json::array(), prompt_ids = nlohmann::json::array();
            for (const auto& c : a->citations) cites.push_back({{"id", c.id}, {"share", c.share}});
            for (size_t i : a->order) prompt_ids.push_back(passages[i].id);
            nlohmann::json rec = {{"id", item.id},
                                  {"question", item.question},
                                  {"prediction", a->text},
                                  {"answers", item.answers},
                                  {"gold_passages", item.gold},
                                  {"em", q_em},
                                  {"f1", q_f1},
                                  {"contains", q_contains},
                                  {"citation_hit", q_cited},
                                  {"gold_nearest", q_gold_nearest},
                                  {"citations", cites},
                                  {"prompt_order", prompt_ids},
                                  {"dropped", a->dropped.size()},
                                  {"ttft_cold_ms", a->ttft_ms},
                                  {"ttft_ms", warm->ttft_ms},
                                  {"decode_ms", a->decode_ms},
                                  {"n_answer_tokens", a->n_answer_tokens}};
            if (corpus) rec["retrieval_hit"] = retrieval_hit;
            details << rec.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
            if (!details) return fail("eval", *args.get("details") + ": write failed");
        }
        char line[160];
        std::snprintf(line, sizeof line, "questions %zu/%zu  EM %.3f  F1 %.3f", qi + 1, items.size(),
                      em / static_cast<double>(qi + 1), f1 / static_cast<double>(qi + 1));
        bar.update(line);
    }
    bar.done();
    const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    const double n = static_cast<double>(items.size());
    const double tok_s = decode_ms > 0 ? static_cast<double>(n_answer_tokens) / decode_ms * 1000.0 : 0.0;
    const auto kv_stats = kv_store->stats();
    nlohmann::json out = {{"dataset", dataset},
                          {"n", items.size()},
                          {"em", em / n},
                          {"f1", f1 / n},
                          {"contains", contains / n},
                          {"citation_hit_rate", cited / n},
                          {"gold_nearest_rate", gold_nearest / n},
                          {"ttft_ms_median", median(ttft_warm)},
                          {"ttft_cold_ms_median", median(ttft_cold)},
                          {"decode_tok_s", tok_s},
                          {"dropped_passages", n_dropped},
                          {"assembly", std::string(pipelines::to_string(*assembly))},
                          {"sort_passes", sort_passes},
                          {"sort_score", options.sort.calibrated ? "calibrated" : "raw"},
                          {"sort_rows", options.sort.question_rows ? "question" : "last"},
                          {"sort_layers", sort_layers_name(options.sort)},
                          {"order", placement_name(*placement)},
                          {"max_tokens", max_tokens},
                          {"kv_memory_hits", kv_stats.memory_hits},
                          {"kv_disk_hits", kv_stats.disk_hits},
                          {"kv_misses", kv_stats.misses},
                          {"wall_s", wall_s},
                          {"peak_rss_mib", peak_rss_mib()}};
    if (corpus) {
        out["retrieval_recall"] = retrieved / n;
        out["k"] = k;
        out["search"] = index::search_mode_name(*search_mode);
    }
    if (json) {
        std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
        return 0;
    }
    std::printf("%s: %zu questions, assembly %s, sort passes %lld, order %s\n", dataset.c_str(), items.size(),
                std::string(pipelines::to_string(*assembly)).c_str(), static_cast<long long>(sort_passes),
                placement_name(*placement));
    if (corpus) {
        std::printf("retrieval (%s, k %lld): recall of a gold passage %.3f\n", index::search_mode_name(*search_mode),
                    static_cast<long long>(k), retrieved / n);
    }
    std::printf("EM %.3f  F1 %.3f  contains %.3f  citation hit (top 2) %.3f  gold passage nearest the question %.3f\n",
                em / n, f1 / n, contains / n, cited / n, gold_nearest / n);
    std::printf("TTFT median: warm %.1f ms, cold %.1f ms; decode %.1f tok/s; dropped passages %lld\n",
                median(ttft_warm), median(ttft_cold), tok_s, static_cast<long long>(n_dropped));
    std::printf("wall %.1f s; peak RSS %.0f MiB\n", wall_s, peak_rss_mib());
    return 0;
}

}  // namespace

int cmd_eval(int argc, char** argv) {
    if (argc < 1 || std::string(argv[0]) == "--help") {
        std::printf("usage: attnrag eval retrieval --beir DIR [--mode bm25|dense|hybrid] [--json]\n"
                    "       attnrag eval qa (--passages FILE.jsonl | --corpus DIR) [--assembly MODE] [--json]\n"
                    "       attnrag eval niah --haystack PATH --needles FILE --lengths 4k,16k [--depths ...] [--plot F.svg]\n"
                    "       attnrag eval longqa FILE.jsonl [--mode infiniretri|full] [--json]\n");
        return argc < 1 ? 2 : 0;
    }
    std::string what = argv[0];
    if (what == "retrieval") return eval_retrieval(argc - 1, argv + 1);
    if (what == "qa") return eval_qa(argc - 1, argv + 1);
    if (what == "niah") return eval_niah(argc - 1, argv + 1);
    if (what == "longqa") return eval_longqa(argc - 1, argv + 1);
    return fail_usage("eval", "unknown evaluation '" + what + "' (retrieval, qa, niah, longqa)");
}

}  // namespace attnrag::cli
