// The attnrag command as a user runs it: ingest, search --json, docs, usage errors, exit codes.
#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "test_support.hpp"

namespace fs = std::filesystem;

namespace {

using attnrag::test::CliRun;

fs::path cli() { return attnrag::test::cli_path(); }
CliRun run(const std::string& args, bool with_stderr = false) { return attnrag::test::run_cli(args, with_stderr); }

}  // namespace

TEST_CASE("CLI ingest then search --json and docs list", "[cli]") {
    REQUIRE(fs::exists(cli()));
    auto docs = attnrag::test::make_temp_dir("cli_docs");
    auto db = attnrag::test::make_temp_dir("cli_db") / "corpus";
    std::ofstream(docs / "tides.txt") << "Tides are caused by the gravitational pull of the Moon and the Sun on the oceans.";
    std::ofstream(docs / "bees.md") << "# Bees\n\nHoneybees communicate the location of flowers with a waggle dance.";
    const std::string model_dir = (attnrag::test::source_dir() / "models" / "all-MiniLM-L6-v2").string();

    auto ingest = run("ingest --json --threads 2 --embedder " + model_dir + " --db " + db.string() + " " + docs.string());
    REQUIRE(ingest.code == 0);
    auto summary = nlohmann::json::parse(ingest.out);
    CHECK(summary["added"] == 2);
    CHECK(summary["skipped"].empty());

    auto again = run("ingest --json --embedder " + model_dir + " --db " + db.string() + " " + docs.string());
    REQUIRE(again.code == 0);
    CHECK(nlohmann::json::parse(again.out)["unchanged"] == 2);

    auto search = run("search --json --k 1 --mode bm25 --db " + db.string() + " \"waggle dance\"");
    REQUIRE(search.code == 0);
    auto hits = nlohmann::json::parse(search.out);
    REQUIRE(hits.size() == 1);
    CHECK(hits[0]["source"].get<std::string>().find("bees.md") != std::string::npos);
    CHECK(hits[0]["text"].get<std::string>().find("waggle dance") != std::string::npos);

    auto list = run("docs list --json --db " + db.string());
    REQUIRE(list.code == 0);
    CHECK(nlohmann::json::parse(list.out).size() == 2);
}

TEST_CASE("CLI usage errors exit 2 and runtime errors exit 1", "[cli]") {
    CHECK(run("search \"x\"").code == 2);                       // --db missing
    CHECK(run("ingest --db /tmp/x").code == 2);                 // nothing to ingest
    CHECK(run("search --mode fuzzy --db /tmp/x q").code == 2);  // bad mode
    CHECK(run("frobnicate").code == 2);                         // unknown command
    auto empty = attnrag::test::make_temp_dir("cli_empty");
    CHECK(run("search --db " + empty.string() + " q").code == 1);  // no corpus there
    CHECK(run("generate --prompt hi --model /nonexistent.gguf").code == 1);
    CHECK(run("perplexity --file /nonexistent.txt").code == 1);
}
