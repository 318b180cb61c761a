// Long documents from the command line: `attnrag ask --file` (InfiniRetri over one file, with
// the kept evidence and its byte ranges) and `attnrag eval longqa`, with the real model; their
// usage and input errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>

#include <nlohmann/json.hpp>

#include "attnrag/kernels/cuda.hpp"
#include "attnrag/pipelines/infiniretri.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using attnrag::test::run_cli;

namespace {

std::string essays(size_t n_bytes) { return attnrag::test::essays_text(n_bytes); }

struct Needle {
    std::string needle, question, answer;
};

Needle first_needle() {
    std::ifstream in(attnrag::test::shared_data_dir() / "eval" / "niah_needles.jsonl");
    std::string line;
    REQUIRE(std::getline(in, line));
    auto j = nlohmann::json::parse(line);
    return {j.at("needle"), j.at("question"), j.at("answers").at(0)};
}

// `text` with `needle` inserted as a sentence after the first ". " past the middle.
std::string with_needle(const std::string& text, const std::string& needle) {
    const size_t at = text.find(". ", text.size() / 2);
    REQUIRE(at != std::string::npos);
    return text.substr(0, at + 1) + " " + needle + text.substr(at + 1);
}

std::string model_args() {
    const fs::path model = attnrag::test::model_path();
    REQUIRE_FALSE(model.empty());
    return "--threads 2 --model " + model.string();
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }

}  // namespace

TEST_CASE("ask --file finds a needle in a document and shows where it read it", "[cli][infiniretri][smollm2]") {
    const Needle n = first_needle();
    const std::string doc = with_needle(essays(12000), n.needle);
    const fs::path file = attnrag::test::make_temp_dir("ask_file") / "essays.txt";
    std::ofstream(file, std::ios::binary) << doc;

    auto r = run_cli("ask --json " + model_args() + " --file " + file.string() + " " + quoted(n.question));
    REQUIRE(r.code == 0);
    auto a = nlohmann::json::parse(r.out);
    INFO("answer: " << a["answer"].get<std::string>());
    CHECK(a["mode"] == "infiniretri");
    CHECK(a["chunks"].get<int>() >= 2);  // more than one chunk was read
    CHECK(a["tokens_read"].get<int64_t>() > 2000);
    std::string answer = a["answer"].get<std::string>();
    std::transform(answer.begin(), answer.end(), answer.begin(), [](unsigned char c) { return std::tolower(c); });
    CHECK(answer.find("dolores park") != std::string::npos);
    // Every kept sentence is exactly its byte range of the file; the needle is among them.
    bool needle_kept = false;
    REQUIRE(!a["kept"].empty());
    for (const auto& k : a["kept"]) {
        const auto b = k["begin"].get<size_t>(), e = k["end"].get<size_t>();
        REQUIRE(e <= doc.size());
        CHECK(doc.substr(b, e - b) == k["text"].get<std::string>());
        needle_kept = needle_kept || k["text"] == n.needle;
    }
    CHECK(needle_kept);
    // The answers it chose among (--answer-alternatives, default 128,256,16 after the 64-token
    // context): exactly one chosen, and it is the answer.
    REQUIRE(a["candidates"].size() == 4);
    CHECK(a["candidates"][0]["answer_context"] == 64);
    int chosen = 0;
    for (const auto& c : a["candidates"]) {
        if (c["chosen"] == true) {
            ++chosen;
            CHECK(c["answer"] == a["answer"]);
        }
    }
    CHECK(chosen == 1);

    // Streamed text mode: the answer, then the evidence with the file name and byte ranges; the
    // progress line and the summary go to stderr.
    auto t = run_cli("ask --quiet " + model_args() + " --file " + file.string() + " " + quoted(n.question), true);
    REQUIRE(t.code == 0);
    CHECK(t.out.find("[1] " + file.string() + "  [") != std::string::npos);
    CHECK(t.out.find("tokens read in") != std::string::npos);
}

TEST_CASE("ask --file rejects bad usage and bad files with clear errors", "[cli][infiniretri]") {
    const fs::path dir = attnrag::test::make_temp_dir("ask_file_errors");
    const std::string margs = model_args();
    std::ofstream(dir / "ok.txt") << "A short document. It has two sentences.";

    auto missing = run_cli("ask " + margs + " --file " + (dir / "nope.txt").string() + " 'Why?'", true);
    CHECK(missing.code == 1);
    CHECK(missing.out.find("nope.txt") != std::string::npos);

    auto both = run_cli("ask " + margs + " --file " + (dir / "ok.txt").string() + " --db " + dir.string() + " 'Why?'", true);
    CHECK(both.code == 2);
    CHECK(both.out.find("not both") != std::string::npos);

    auto k = run_cli("ask " + margs + " --file " + (dir / "ok.txt").string() + " --k 3 'Why?'", true);
    CHECK(k.code == 2);
    CHECK(k.out.find("--k applies to --db") != std::string::npos);

    auto mode = run_cli("ask " + margs + " --file " + (dir / "ok.txt").string() + " --mode bm25 'Why?'", true);
    CHECK(mode.code == 2);

    auto no_question = run_cli("ask " + margs + " --file " + (dir / "ok.txt").string(), true);
    CHECK(no_question.code == 2);

    auto chunk = run_cli("ask " + margs + " --file " + (dir / "ok.txt").string() + " --chunk-tokens 0 'Why?'", true);
    CHECK(chunk.code == 2);

    auto backend = run_cli("ask " + margs + " --file " + (dir / "ok.txt").string() + " --backend gpu 'Why?'", true);
    CHECK(backend.code == 2);
    CHECK(backend.out.find("--backend must be cpu or cuda") != std::string::npos);
    auto db_backend = run_cli("ask " + margs + " --db " + dir.string() + " --backend cuda 'Why?'", true);
    CHECK(db_backend.code == 2);
    CHECK(db_backend.out.find("--backend applies to --file") != std::string::npos);
    // Without a CUDA device (or backend in this build) the reader is refused with the reason.
    if (!attnrag::kernels::cuda::available()) {
        auto no_gpu = run_cli("ask " + margs + " --file " + (dir / "ok.txt").string() + " --backend cuda 'Why?'", true);
        CHECK(no_gpu.code == 1);
        CHECK(no_gpu.out.find("CUDA backend unavailable") != std::string::npos);
    }

    for (const char* memory : {"1", "-0.1", "x"}) {
        auto m = run_cli("ask " + margs + " --file " + (dir / "ok.txt").string() + " --score-memory " + memory + " 'Why?'",
                         true);
        CHECK(m.code == 2);
        CHECK(m.out.find("--score-memory") != std::string::npos);
    }

    std::ofstream(dir / "bad.txt", std::ios::binary) << "Fine text here. Then a bad byte \xff there.";
    auto bad = run_cli("ask " + margs + " --file " + (dir / "bad.txt").string() + " 'Why?'", true);
    CHECK(bad.code == 1);
    CHECK(bad.out.find("invalid UTF-8 at byte offset 32") != std::string::npos);

    std::ofstream(dir / "empty.txt") << "";
    auto empty = run_cli("ask " + margs + " --file " + (dir / "empty.txt").string() + " 'Why?'", true);
    CHECK(empty.code == 1);
    CHECK(empty.out.find("empty") != std::string::npos);

    // A document longer than the window cannot be read whole: the error says what to use.
    std::ofstream(dir / "long.txt") << essays(45000);
    auto full = run_cli("ask " + margs + " --mode full --file " + (dir / "long.txt").string() + " 'Why?'", true);
    CHECK(full.code == 1);
    CHECK(full.out.find("--mode infiniretri") != std::string::npos);
}

TEST_CASE("eval longqa scores questions about long documents", "[cli][infiniretri][smollm2]") {
    const Needle n = first_needle();
    const fs::path dir = attnrag::test::make_temp_dir("longqa");
    const fs::path file = dir / "longqa.jsonl";
    {
        std::ofstream out(file);
        out << nlohmann::json{{"id", "needle"},
                              {"document", with_needle(essays(6000), n.needle)},
                              {"question", n.question},
                              {"answers", {n.answer}}}
                   .dump()
            << "\n\n";  // blank lines are skipped
        out << nlohmann::json{{"id", "choice"},
                              {"document", "The museum opens at nine. Its cafe serves lemon cake on Sundays."},
                              {"question", "What does the cafe serve on Sundays?"},
                              {"options", {"lemon cake", "apple pie"}},
                              {"answers", {"lemon cake"}}}
                   .dump()
            << "\n";
    }
    const fs::path kept = dir / "kept.jsonl";
    auto r = run_cli("eval longqa --json --save-kept " + kept.string() + " " + model_args() + " " + file.string());
    REQUIRE(r.code == 0);
    auto j = nlohmann::json::parse(r.out);
    CHECK(j["n"] == 2);
    CHECK(j["mode"] == "infiniretri");
    for (const char* key : {"em", "f1", "contains", "tokens_per_s", "seconds"}) CHECK(j.contains(key));
    // The reading settings the numbers were measured with (the defaults here).
    CHECK(j["settings"]["chunk_tokens"] == 1024);
    CHECK(j["settings"]["score_memory"].get<double>() == Approx(0.5));
    CHECK(j["settings"]["relevance_reserve"] == 3);
    CHECK(j["settings"]["sentence_relevance"] == "best-root-sum");
    CHECK(j["settings"]["answer_context_tokens"] == 64);
    CHECK(j["settings"]["answer_alternatives"] == nlohmann::json::array({128, 256, 16}));
    REQUIRE(j["questions"].size() == 2);
    INFO("needle answer: " << j["questions"][0]["prediction"].get<std::string>());
    CHECK(j["questions"][0]["contains"] == true);
    CHECK(j["contains"].get<double>() >= 0.5);

    // --save-kept wrote each question's reading; --answer-from-kept answers them again without
    // reading (the same answers with the same settings, the saved readings' seconds).
    auto again = run_cli("eval longqa --json --answer-from-kept " + kept.string() + " " + model_args() + " " +
                         file.string());
    REQUIRE(again.code == 0);
    const auto replay = nlohmann::json::parse(again.out);
    REQUIRE(replay["questions"].size() == 2);
    CHECK(replay["kept_file"] == kept.string());
    for (size_t q = 0; q < 2; ++q) {
        CHECK(replay["questions"][q]["id"] == j["questions"][q]["id"]);
        CHECK(replay["questions"][q]["prediction"] == j["questions"][q]["prediction"]);
        CHECK(replay["questions"][q]["seconds"] == j["questions"][q]["seconds"]);
        CHECK(replay["questions"][q]["kept_tokens"] == j["questions"][q]["kept_tokens"]);
    }
    CHECK(replay["f1"] == j["f1"]);
    // Only the chosen questions are answered (--limit 1), and a saved question that FILE asks
    // differently is an error.
    auto first = run_cli("eval longqa --json --limit 1 --answer-from-kept " + kept.string() + " " + model_args() +
                         " " + file.string());
    REQUIRE(first.code == 0);
    CHECK(nlohmann::json::parse(first.out)["n"] == 1);
    {
        std::ifstream in(file);
        std::string line;
        REQUIRE(std::getline(in, line));
        auto item = nlohmann::json::parse(line);
        item["question"] = "What is the worst thing to do in San Francisco?";
        std::ofstream(dir / "asked_otherwise.jsonl") << item.dump() << "\n";
    }
    auto otherwise = run_cli("eval longqa --answer-from-kept " + kept.string() + " " + model_args() + " " +
                                 (dir / "asked_otherwise.jsonl").string(),
                             true);
    CHECK(otherwise.code == 1);
    CHECK(otherwise.out.find("needle was read for another question") != std::string::npos);
    auto both = run_cli("eval longqa --answer-from-kept " + kept.string() + " --save-kept " + kept.string() + " " +
                            model_args() + " " + file.string(),
                        true);
    CHECK(both.code == 2);
    auto full = run_cli("eval longqa --mode full --save-kept " + (dir / "k2.jsonl").string() + " " + model_args() +
                            " " + file.string(),
                        true);
    CHECK(full.code == 2);
    CHECK(full.out.find("need --mode infiniretri") != std::string::npos);

    auto limited = run_cli("eval longqa --json --limit 1 --mode full " + model_args() + " " + file.string());
    REQUIRE(limited.code == 0);
    CHECK(nlohmann::json::parse(limited.out)["n"] == 1);
    CHECK(nlohmann::json::parse(limited.out)["truncated"] == 0);
    // The full-prompt baseline cuts a document longer than its window to what fits.
    auto cut = run_cli("eval longqa --json --limit 1 --mode full --ctx 1024 " + model_args() + " " + file.string());
    REQUIRE(cut.code == 0);
    auto cj = nlohmann::json::parse(cut.out);
    CHECK(cj["truncated"] == 1);
    CHECK(cj["questions"][0]["truncated"] == true);
    CHECK(cj["questions"][0]["tokens_read"].get<int64_t>() < 1024);
    CHECK(cj["questions"][0]["tokens_read"].get<int64_t>() > 700);

    // Malformed input fails before any model work, naming file and line.
    std::ofstream(dir / "broken.jsonl") << "{\"id\": \"a\", \"document\": \"x\", \"question\": \"q\", \"answers\": [\"y\"]}\n{not json\n";
    auto broken = run_cli("eval longqa " + model_args() + " " + (dir / "broken.jsonl").string(), true);
    CHECK(broken.code == 1);
    CHECK(broken.out.find("broken.jsonl:2: malformed JSON") != std::string::npos);
    std::ofstream(dir / "noanswers.jsonl") << "{\"id\": \"a\", \"document\": \"x\", \"question\": \"q\"}\n";
    auto noanswers = run_cli("eval longqa " + model_args() + " " + (dir / "noanswers.jsonl").string(), true);
    CHECK(noanswers.code == 1);
    CHECK(noanswers.out.find("missing field \"answers\"") != std::string::npos);
    auto none = run_cli("eval longqa " + model_args(), true);
    CHECK(none.code == 2);
    for (const char* bad : {"128,-1", "lots", ""}) {
        auto r2 = run_cli("eval longqa --answer-alternatives '" + std::string(bad) + "' " + model_args() + " " +
                              file.string(),
                          true);
        CHECK(r2.code == 2);
        CHECK(r2.out.find("--answer-alternatives") != std::string::npos);
    }
    for (const char* bad : {"-1", "two"}) {
        auto r2 = run_cli("eval longqa --relevance-reserve " + std::string(bad) + " " + model_args() + " " + file.string(),
                          true);
        CHECK(r2.code == 2);
        CHECK(r2.out.find("--relevance-reserve") != std::string::npos);
    }
}

TEST_CASE("eval niah prints the grid as JSON and an SVG heatmap", "[cli][infiniretri][smollm2]") {
    const fs::path dir = attnrag::test::make_temp_dir("niah_cli");
    const std::string haystack = (attnrag::test::shared_data_dir() / "niah" / "paul_graham_essays").string();
    const std::string needles = (attnrag::test::shared_data_dir() / "eval" / "niah_needles.jsonl").string();
    const std::string grid = "eval niah --json --haystack " + haystack + " --needles " + needles +
                             " --lengths 3k --depths 60,100 --limit-needles 1 --chunk-tokens 512 " +
                             model_args();
    const fs::path svg = dir / "grid.svg";
    const fs::path cells = dir / "cells.jsonl";
    std::ofstream(cells) << "{\"earlier\": true}\n";
    auto r = run_cli(grid + " --plot " + svg.string() + " --cells " + cells.string());
    REQUIRE(r.code == 0);
    auto j = nlohmann::json::parse(r.out);
    {
        // --cells appended each cell as it was measured, after what the file held.
        std::ifstream in(cells);
        std::vector<nlohmann::json> lines;
        for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
        REQUIRE(lines.size() == 3);
        CHECK(lines[0]["earlier"] == true);
        CHECK(lines[1] == j["cells"][0]);
        CHECK(lines[2] == j["cells"][1]);
    }
    CHECK(j["n"] == 2);
    CHECK(j.contains("accuracy"));
    CHECK(j["settings"]["chunk_tokens"] == 512);
    CHECK(j["settings"]["top_k"] == 300);
    REQUIRE(j["cells"].size() == 2);
    // The deepest needle is read first; the 60 % haystack resumes from its checkpoints before
    // the needle, and the result is that of reading it whole (--no-resume).
    auto fresh = nlohmann::json::parse(run_cli(grid + " --no-resume").out);
    REQUIRE(fresh["cells"].size() == 2);
    for (size_t k = 0; k < 2; ++k) {
        const auto& c = j["cells"][k];
        const auto& f = fresh["cells"][k];
        CHECK(c["depth"] == f["depth"]);
        for (const char* key : {"length", "needle", "hit", "prediction", "tokens_read", "needle_rank",
                                 "needle_cached_chunk", "needle_dropped_chunk"})
            CHECK(c[key] == f[key]);
        // Where the needle entered the cache (and that it stayed): the chunk that read it or later.
        if (c["needle_kept"] == true) {
            CHECK(c["needle_cached_chunk"].get<int>() >= 1);
            CHECK(c["needle_cached_chunk"].get<int>() <= c["chunks"].get<int>());
            CHECK(c["needle_dropped_chunk"] == 0);
        }
        CHECK(f["tokens_resumed"] == 0);
        if (c["depth"] == 60) {
            CHECK(c["tokens_resumed"].get<int64_t>() >= 512);
        } else {
            CHECK(c["tokens_resumed"] == 0);
        }
    }
    std::ifstream in(svg);
    const std::string plot((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(plot.rfind("<svg", 0) == 0);
    CHECK(plot.find("3K tokens, depth 60%") != std::string::npos);

    auto bad = run_cli("eval niah --haystack " + haystack + " --needles " + needles + " --depths 120", true);
    CHECK(bad.code == 2);
    CHECK(bad.out.find("depths must be in [0, 100]") != std::string::npos);

    // A plot that could not be written at the end is refused before the run starts.
    for (const fs::path& where : {dir / "no_such_dir" / "grid.svg", dir}) {
        auto unwritable = run_cli(grid + " --plot " + where.string(), true);
        CHECK(unwritable.code == 1);
        CHECK(unwritable.out.find("--plot " + where.string()) != std::string::npos);
        CHECK(unwritable.out.find("cells") == std::string::npos);  // nothing was read
    }
    CHECK_FALSE(fs::exists(svg.string() + ".tmp"));
    auto no_dir = run_cli(grid + " --cells " + (dir / "no_such_dir" / "c.jsonl").string(), true);
    CHECK(no_dir.code == 1);
    CHECK(no_dir.out.find("--cells") != std::string::npos);
    // A full disk while appending cells: a warning, and the run still prints its results.
    if (fs::exists("/dev/full")) {
        auto full = run_cli(grid + " --depths 100 --cells /dev/full", true);
        CHECK(full.code == 0);
        CHECK(full.out.find("--cells /dev/full: write failed") != std::string::npos);
        CHECK(full.out.find("\"accuracy\"") != std::string::npos);
    }

    // Other answer contexts from the same readings: the main one again reproduces each cell.
    auto cmp = nlohmann::json::parse(run_cli(grid + " --no-resume --answer-context 96 --compare-answer-context 96,48").out);
    REQUIRE(cmp["compare"].size() == 2);
    CHECK(cmp["compare"][0]["answer_context"] == 96);
    CHECK(cmp["compare"][0]["hits"] == cmp["hits"]);
    CHECK(cmp["compare"][1]["n"] == 2);
    for (const auto& c : cmp["cells"]) {
        REQUIRE(c["compare"].size() == 2);
        CHECK(c["compare"][0]["prediction"] == c["prediction"]);
        CHECK(c["compare"][1]["answer_context"] == 48);
    }
    auto full_cmp = run_cli("eval niah --haystack " + haystack + " --needles " + needles +
                                " --mode full --compare-answer-context 64",
                            true);
    CHECK(full_cmp.code == 2);
    CHECK(full_cmp.out.find("needs --mode infiniretri") != std::string::npos);
}

TEST_CASE("eval niah puts the needle between sentences and saves the haystacks and the cells", "[cli][infiniretri][smollm2]") {
    // Footnote marks: ICU ends a sentence at "rivers.[" and starts the next one at "3] ...", with
    // no space between them. A needle must never go into such a boundary (it would run into the
    // next sentence and be read as part of it); only every fourth boundary here is spaced.
    const fs::path dir = attnrag::test::make_temp_dir("niah_boundaries");
    fs::create_directories(dir / "hay");
    {
        std::ofstream out(dir / "hay" / "notes.txt", std::ios::binary);
        for (int k = 1; k <= 80; ++k) {
            out << "Sentence " << k << " is about the rivers of the north and their old mills.";
            if (k % 4 != 0) out << "[" << k << "]";
            out << ' ';
        }
    }
    const std::string needles = (attnrag::test::shared_data_dir() / "eval" / "niah_needles.jsonl").string();
    const std::string grid = "eval niah --haystack " + (dir / "hay").string() + " --needles " + needles +
                             " --lengths 600 --limit-needles 1 --save-haystacks " + (dir / "saved").string() +
                             " " + model_args();
    // --save-only writes the haystacks and reads none of them.
    auto r = run_cli(grid + " --depths 0,10,20,30,40,50,60,70,80,90,100 --save-only");
    REQUIRE(r.code == 0);
    CHECK(r.out.find("wrote 11 haystacks to") != std::string::npos);
    CHECK(r.out.find("cell") == std::string::npos);
    const Needle n = first_needle();
    int saved = 0;
    for (int depth = 0; depth <= 100; depth += 10) {
        const fs::path file = dir / "saved" / ("600_d" + std::to_string(depth) + "_sf-sandwich.txt");
        INFO(file.string());
        REQUIRE(fs::exists(file));
        ++saved;
        std::ifstream in(file, std::ios::binary);
        const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        const size_t at = text.find(n.needle);
        REQUIRE(at != std::string::npos);
        const size_t after = at + n.needle.size();
        CHECK((after == text.size() || std::isspace(static_cast<unsigned char>(text[after])) != 0));
        // The sentence splitter reads the needle as a sentence of its own.
        auto src = attnrag::pipelines::SentenceSource::from_text(text);
        bool alone = false;
        for (;;) {
            auto s = src.next();
            REQUIRE(s);
            if (!*s) break;
            alone = alone || (*s)->text == n.needle;
        }
        CHECK(alone);
    }
    CHECK(saved == 11);
    // A run that reads saves its haystacks too (replacing what was there).
    const fs::path one = dir / "saved" / "600_d40_sf-sandwich.txt";
    fs::remove(one);
    const fs::path cells = dir / "cells.jsonl";
    auto read = run_cli(grid + " --json --depths 40 --answer-alternatives none --max-answer-tokens 2 --cells " +
                        cells.string());
    REQUIRE(read.code == 0);
    const auto measured = nlohmann::json::parse(read.out);
    REQUIRE(measured["n"] == 1);
    CHECK(fs::exists(one));

    // --from-cells summarises recorded cells without reading: a later line for the same cell
    // replaces an earlier one (a grid measured in pieces), blank lines are skipped.
    const fs::path merged = dir / "merged.jsonl";
    {
        nlohmann::json earlier = measured["cells"][0];
        earlier["hit"] = !earlier["hit"].get<bool>();
        earlier["prediction"] = "an earlier answer";
        nlohmann::json other = measured["cells"][0];
        other["depth"] = 70;
        other["hit"] = true;
        std::ofstream out(merged);
        out << earlier.dump() << "\n\n" << other.dump() << "\n";
        std::ifstream in(cells);
        out << in.rdbuf();
    }
    const fs::path svg = dir / "merged.svg";
    auto from = run_cli("eval niah --json --from-cells " + merged.string() + " --plot " + svg.string());
    REQUIRE(from.code == 0);
    const auto summary = nlohmann::json::parse(from.out);
    CHECK(summary["n"] == 2);
    CHECK(summary["needles"] == 1);
    CHECK(summary["hits"] == 1 + (measured["cells"][0]["hit"] == true ? 1 : 0));
    REQUIRE(summary["cells"].size() == 2);
    CHECK(summary["cells"][0] == measured["cells"][0]);  // in place of the earlier line
    CHECK(summary["cells"][1]["depth"] == 70);
    REQUIRE(summary["lengths"].size() == 1);
    CHECK(summary["lengths"][0]["length"] == 600);
    std::ifstream plot_in(svg);
    const std::string plot((std::istreambuf_iterator<char>(plot_in)), std::istreambuf_iterator<char>());
    CHECK(plot.find("cells of merged.jsonl") != std::string::npos);
    CHECK(plot.find("600 tokens, depth 70%") != std::string::npos);
    // A line that is not a cell, or no cells at all: an error naming the file (and the line).
    std::ofstream(dir / "bad.jsonl") << measured["cells"][0].dump() << "\n{\"earlier\": true}\n";
    auto bad_line = run_cli("eval niah --from-cells " + (dir / "bad.jsonl").string(), true);
    CHECK(bad_line.code == 1);
    CHECK(bad_line.out.find("bad.jsonl: line 2 is not a cell") != std::string::npos);
    std::ofstream(dir / "empty.jsonl") << "\n";
    auto empty = run_cli("eval niah --from-cells " + (dir / "empty.jsonl").string(), true);
    CHECK(empty.code == 1);
    CHECK(empty.out.find("no cells") != std::string::npos);
    auto no_dir = run_cli("eval niah --haystack " + (dir / "hay").string() + " --needles " + needles + " --save-only", true);
    CHECK(no_dir.code == 2);
    CHECK(no_dir.out.find("--save-only needs --save-haystacks") != std::string::npos);
    // The folder is created; one that cannot be is an error before anything is read.
    std::ofstream(dir / "a_file") << "x";
    auto bad = run_cli("eval niah --haystack " + (dir / "hay").string() + " --needles " + needles +
                           " --lengths 600 --save-haystacks " + (dir / "a_file").string() + " " + model_args(),
                       true);
    CHECK(bad.code == 1);
    CHECK(bad.out.find("--save-haystacks") != std::string::npos);
    CHECK(bad.out.find("cell") == std::string::npos);
}

TEST_CASE("eval niah saves each reading's kept sentences and answers them again without reading", "[cli][infiniretri][smollm2]") {
    const fs::path dir = attnrag::test::make_temp_dir("niah_kept");
    fs::create_directories(dir / "hay");
    std::ofstream(dir / "hay" / "essays.txt", std::ios::binary) << essays(12000);
    const fs::path needles_file = attnrag::test::shared_data_dir() / "eval" / "niah_needles.jsonl";
    const std::string needles = needles_file.string();
    const fs::path kept = dir / "kept.jsonl";
    const std::string answer = " --max-answer-tokens 16 --answer-alternatives 128 ";
    auto read = run_cli("eval niah --json --haystack " + (dir / "hay").string() + " --needles " + needles +
                        " --lengths 1500 --depths 50 --limit-needles 1 --save-haystacks " + (dir / "saved").string() +
                        " --save-kept " + kept.string() + answer + model_args());
    REQUIRE(read.code == 0);
    const auto measured = nlohmann::json::parse(read.out);
    REQUIRE(measured["cells"].size() == 1);
    const auto& cell = measured["cells"][0];
    REQUIRE(cell["candidates"].size() == 2);

    // One line per cell: the cell, the question, and the kept sentences with their tokens, whose
    // byte ranges are those of the haystack that was read.
    std::ifstream kin(kept);
    std::string line;
    REQUIRE(std::getline(kin, line));
    const auto saved = nlohmann::json::parse(line);
    CHECK(saved["cell"] == cell);
    CHECK(saved["question"] == first_needle().question);
    CHECK(saved["sentence_relevance"] == "best-root-sum");  // the ranking its relevances come from
    std::ifstream hin(dir / "saved" / "1500_d50_sf-sandwich.txt", std::ios::binary);
    const std::string hay((std::istreambuf_iterator<char>(hin)), std::istreambuf_iterator<char>());
    REQUIRE_FALSE(saved["kept"].empty());
    int32_t n_tokens = 0;
    for (const auto& k : saved["kept"]) {
        const auto begin = k["begin"].get<size_t>(), end = k["end"].get<size_t>();
        REQUIRE(end <= hay.size());
        CHECK(hay.substr(begin, end - begin) == k["text"].get<std::string>());
        CHECK_FALSE(k["ids"].empty());
        n_tokens += static_cast<int32_t>(k["ids"].size());
    }
    CHECK(n_tokens == cell["cache_tokens"]);
    CHECK_FALSE(std::getline(kin, line));

    // Answered again with the same settings: the same answers, chosen the same way; the reading's
    // counters and seconds are the saved ones.
    const std::string again = "eval niah --json --needles " + needles + " --answer-from-kept " + kept.string();
    auto same = run_cli(again + answer + model_args());
    REQUIRE(same.code == 0);
    const auto replay = nlohmann::json::parse(same.out);
    REQUIRE(replay["cells"].size() == 1);
    CHECK(replay["cells"][0] == cell);
    CHECK(replay["kept_file"] == kept.string());
    CHECK(replay["settings"]["answer_alternatives"] == nlohmann::json::array({128}));
    // Other answer settings: one 16-token context, 32 compared beside it.
    auto other = run_cli(again + " --max-answer-tokens 16 --answer-context 16 --answer-alternatives none "
                                 "--compare-answer-context 32 " + model_args());
    REQUIRE(other.code == 0);
    const auto changed = nlohmann::json::parse(other.out);
    REQUIRE(changed["cells"].size() == 1);
    CHECK_FALSE(changed["cells"][0].contains("candidates"));
    CHECK(changed["cells"][0]["needle_rank"] == cell["needle_rank"]);
    REQUIRE(changed["compare"].size() == 1);
    CHECK(changed["compare"][0]["answer_context"] == 32);
    CHECK(changed["cells"][0]["compare"].size() == 1);
    // Another ranking: the kept sentences are ranked again with it.
    auto best = run_cli(again + answer + "--sentence-relevance best " + model_args());
    REQUIRE(best.code == 0);
    const auto by_best = nlohmann::json::parse(best.out);
    CHECK(by_best["settings"]["sentence_relevance"] == "best");
    REQUIRE(by_best["cells"].size() == 1);
    CHECK(by_best["cells"][0]["needle_rank"].get<int>() >= 1);

    // Errors: a needle the needles file does not have, a question it asks differently, a line that
    // is not a saved reading, and flags that read or write haystacks.
    std::ifstream nin(needles_file);
    REQUIRE(std::getline(nin, line));
    auto needle = nlohmann::json::parse(line);
    needle["id"] = "another-id";
    std::ofstream(dir / "other_id.jsonl") << needle.dump() << "\n";
    auto unknown = run_cli("eval niah --needles " + (dir / "other_id.jsonl").string() + " --answer-from-kept " +
                               kept.string() + " " + model_args(),
                           true);
    CHECK(unknown.code == 1);
    CHECK(unknown.out.find("needle 'sf-sandwich' is not in --needles") != std::string::npos);
    needle["id"] = "sf-sandwich";
    needle["question"] = "What is the best thing to do in Oakland?";
    std::ofstream(dir / "other_question.jsonl") << needle.dump() << "\n";
    auto asked = run_cli("eval niah --needles " + (dir / "other_question.jsonl").string() + " --answer-from-kept " +
                             kept.string() + " " + model_args(),
                         true);
    CHECK(asked.code == 1);
    CHECK(asked.out.find("another question") != std::string::npos);
    std::ofstream(dir / "bad.jsonl") << line << "\n" << cell.dump() << "\n";
    auto bad = run_cli("eval niah --needles " + needles + " --answer-from-kept " + (dir / "bad.jsonl").string() + " " +
                           model_args(),
                       true);
    CHECK(bad.code == 1);
    CHECK(bad.out.find("bad.jsonl: line 1 is not a saved reading") != std::string::npos);
    auto writes = run_cli(again + " --save-kept " + (dir / "more.jsonl").string(), true);
    CHECK(writes.code == 2);
    CHECK(writes.out.find("--answer-from-kept reads nothing") != std::string::npos);
    auto unranked = run_cli(again + " --answer-context 0", true);
    CHECK(unranked.code == 2);
    CHECK(unranked.out.find("--answer-context > 0") != std::string::npos);
    CHECK_FALSE(fs::exists(dir / "more.jsonl"));
}
