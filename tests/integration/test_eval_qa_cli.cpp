// `attnrag eval qa` from the command line with the real model: passage QA (each question with its
// own passages, gold placement), corpus QA (ingest, retrieve, answer, retrieval recall), the JSON
// keys the benchmarks read, --limit / --sample / --details, and input errors.
#include <catch2/catch.hpp>

#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "test_support.hpp"

namespace fs = std::filesystem;
using attnrag::test::run_cli;

namespace {

// The model (and, for corpora, the embedder) by absolute path: ctest runs in the build folder.
std::string model_args() {
    const fs::path model = attnrag::test::model_path();
    REQUIRE_FALSE(model.empty());
    return "--threads 2 --max-tokens 24 --model " + model.string();
}

std::string embedder_arg() {
    return " --embedder " + (attnrag::test::source_dir() / "models" / "all-MiniLM-L6-v2").string();
}

struct Fact {
    std::string id, question, answer, passage;
};

// Made-up facts, one passage each, so only the gold passage can answer.
const std::vector<Fact>& facts() {
    static const std::vector<Fact> f = {
        {"lighthouse", "What colour is the Varnby lighthouse?", "green",
         "The Varnby lighthouse is painted green and stands on a rock north of the harbour."},
        {"bakery", "What does the bakery in Ostrava Lane sell?", "rye bread",
         "The bakery in Ostrava Lane sells rye bread with caraway seeds and opens at five."},
        {"ferry", "Which pier does the Kellin ferry leave from?", "Pier 9",
         "The Kellin ferry leaves from Pier 9 and crosses the bay in calm weather."},
        {"museum", "Which day is the Tarrow museum closed?", "Monday",
         "The Tarrow museum is closed on Monday and free on the first Sunday of the month."},
    };
    return f;
}

std::vector<std::string> read_lines(const fs::path& p) {
    std::ifstream in(p);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) {
        if (!line.empty()) lines.push_back(line);
    }
    return lines;
}

}  // namespace

TEST_CASE("eval qa with passages scores answers and citations and places the gold passage", "[cli][rag][smollm2]") {
    const fs::path dir = attnrag::test::make_temp_dir("evalqa");
    const fs::path file = dir / "qa.jsonl";
    {
        std::ofstream out(file);
        // Each question gets every passage; its own fact is the gold one.
        for (const Fact& q : facts()) {
            nlohmann::json passages = nlohmann::json::array();
            for (const Fact& p : facts()) passages.push_back({{"id", p.id}, {"title", p.id}, {"text", p.passage}});
            out << nlohmann::json{{"id", q.id},
                                  {"question", q.question},
                                  {"answers", {q.answer}},
                                  {"passages", passages},
                                  {"gold_passages", {q.id}}}
                       .dump()
                << "\n";
        }
    }
    const fs::path details = dir / "details.jsonl";
    auto r = run_cli("eval qa --json --assembly blocks --order gold-last --details " + details.string() + " --passages " +
                     file.string() + " " + model_args());
    REQUIRE(r.code == 0);
    const auto j = nlohmann::json::parse(r.out);
    CHECK(j["n"] == 4);
    for (const char* key : {"em", "f1", "contains", "citation_hit_rate", "ttft_ms_median", "ttft_cold_ms_median",
                            "decode_tok_s", "wall_s"}) {
        INFO(key);
        CHECK(j.contains(key));
    }
    CHECK(j["assembly"] == "blocks");
    CHECK(j["order"] == "gold-last");
    CHECK(j["gold_nearest_rate"] == 1.0);  // gold-last, no sorting: the gold passage is last
    // Warm runs splice stored states: the second reading of the same passages hits the store.
    CHECK(j["kv_memory_hits"].get<int64_t>() > 0);
    // One fact each, 4 passages (top-2 chance 0.5): answers and citations point at the gold one.
    CHECK(j["contains"].get<double>() >= 0.5);
    CHECK(j["citation_hit_rate"].get<double>() >= 0.75);

    const auto rows = read_lines(details);
    REQUIRE(rows.size() == 4);
    for (const auto& line : rows) {
        const auto row = nlohmann::json::parse(line);
        INFO(line);
        REQUIRE(row["prompt_order"].size() == 4);
        CHECK(row["prompt_order"].back() == row["id"]);  // gold-last: right before the question
        CHECK(row.contains("citations"));
        CHECK(row.contains("prediction"));
    }
    auto first = run_cli("eval qa --json --assembly full --order gold-first --details " + details.string() +
                         " --limit 1 --passages " + file.string() + " " + model_args());
    REQUIRE(first.code == 0);
    CHECK(nlohmann::json::parse(first.out)["n"] == 1);
    const auto first_rows = read_lines(details);
    REQUIRE(first_rows.size() == 1);
    CHECK(nlohmann::json::parse(first_rows[0])["prompt_order"].front() == facts()[0].id);

    // Sorting settings reach the run and are reported; bad ones are usage errors.
    auto sorted = run_cli("eval qa --json --assembly blocks --order gold-first --limit 2 --sort-passes 1 --passages " +
                          file.string() + " " + model_args());
    REQUIRE(sorted.code == 0);
    const auto sj = nlohmann::json::parse(sorted.out);
    CHECK(sj["sort_passes"] == 1);
    CHECK(sj["sort_score"] == "calibrated");  // the defaults
    CHECK(sj["sort_rows"] == "question");
    CHECK(sj["sort_layers"] == "upper");
    CHECK(sj.contains("gold_nearest_rate"));
    auto method = run_cli("eval qa --json --assembly blocks --order gold-first --limit 1 --sort-passes 1 --sort-rows last "
                          "--sort-score raw --sort-layers all --passages " + file.string() + " " + model_args());
    REQUIRE(method.code == 0);
    const auto mj = nlohmann::json::parse(method.out);
    CHECK(mj["sort_score"] == "raw");
    CHECK(mj["sort_rows"] == "last");
    CHECK(mj["sort_layers"] == "all");
    auto listed = run_cli("eval qa --json --limit 1 --sort-passes 1 --sort-layers 10-12 --passages " + file.string() + " " +
                          model_args());
    REQUIRE(listed.code == 0);
    CHECK(nlohmann::json::parse(listed.out)["sort_layers"] == "10,11,12");
    for (const char* bad : {"--sort-rows all", "--sort-score best", "--sort-layers 5-2", "--sort-layers top",
                            "--sort-passes -1"}) {
        INFO(bad);
        CHECK(run_cli("eval qa " + std::string(bad) + " --passages " + file.string() + " " + model_args()).code == 2);
    }

    // --sample 2 of 4: the first and the third question.
    auto sampled = run_cli("eval qa --json --details " + details.string() + " --sample 2 --passages " + file.string() +
                           " " + model_args());
    REQUIRE(sampled.code == 0);
    CHECK(nlohmann::json::parse(sampled.out)["n"] == 2);
    const auto sampled_rows = read_lines(details);
    REQUIRE(sampled_rows.size() == 2);
    CHECK(nlohmann::json::parse(sampled_rows[0])["id"] == facts()[0].id);
    CHECK(nlohmann::json::parse(sampled_rows[1])["id"] == facts()[2].id);
}

TEST_CASE("eval qa with a corpus retrieves then answers and reports retrieval recall", "[cli][rag][smollm2]") {
    const fs::path dir = attnrag::test::make_temp_dir("evalqa-corpus");
    const fs::path corpus = dir / "corpus";
    fs::create_directories(corpus);
    {
        std::ofstream c(corpus / "corpus.jsonl");
        for (const Fact& f : facts()) c << nlohmann::json{{"_id", f.id}, {"title", f.id}, {"text", f.passage}}.dump() << "\n";
        std::ofstream q(corpus / "questions.jsonl");
        for (const Fact& f : facts()) {
            q << nlohmann::json{{"id", "q-" + f.id}, {"question", f.question}, {"answers", {f.answer}},
                                {"gold_passages", {f.id}}}
                     .dump()
              << "\n";
        }
    }
    const std::string common = " --corpus " + corpus.string() + " --db " + (dir / "db").string() + embedder_arg() + " " + model_args();
    auto r = run_cli("eval qa --json --k 2 --limit 2" + common);
    REQUIRE(r.code == 0);
    const auto j = nlohmann::json::parse(r.out);
    CHECK(j["n"] == 2);
    CHECK(j["k"] == 2);
    CHECK(j["search"] == "hybrid");
    // Each question names words only its own passage has.
    CHECK(j["retrieval_recall"].get<double>() == 1.0);
    for (const char* key : {"em", "f1", "contains", "citation_hit_rate", "ttft_ms_median", "ttft_cold_ms_median"}) {
        INFO(key);
        CHECK(j.contains(key));
    }
    // The corpus db is reused on a second run (nothing new to ingest) and still answers.
    auto again = run_cli("eval qa --json --k 1 --limit 1" + common);
    REQUIRE(again.code == 0);
    CHECK(nlohmann::json::parse(again.out)["retrieval_recall"].get<double>() == 1.0);

    // Placement is for --passages only; one of --passages / --corpus; bad numbers.
    CHECK(run_cli("eval qa --order gold-first" + common).code == 2);
    CHECK(run_cli("eval qa --passages x.jsonl" + common).code == 2);
    CHECK(run_cli("eval qa --sample -1" + common).code == 2);
    CHECK(run_cli("eval qa --k 0" + common).code == 2);

    // A malformed question line fails before any model work, naming file and line.
    const fs::path broken = dir / "broken";
    fs::create_directories(broken);
    fs::copy_file(corpus / "corpus.jsonl", broken / "corpus.jsonl");
    std::ofstream(broken / "questions.jsonl") << nlohmann::json{{"id", "a"}, {"question", "q"}, {"answers", {"x"}},
                                                                 {"gold_passages", {"lighthouse"}}}
                                                      .dump()
                                               << "\n{\"id\": \"b\", \"question\": \n";
    auto bad = run_cli("eval qa --corpus " + broken.string() + " --db " + (dir / "db2").string() + embedder_arg() + " " + model_args(),
                       true);
    CHECK(bad.code == 1);
    CHECK(bad.out.find("questions.jsonl:2") != std::string::npos);
}
