// The attnrag command as a user runs it: ingest, search --json, docs, usage errors, exit codes.
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_support.hpp"

namespace fs = std::filesystem;

namespace {

using attnrag::test::CliRun;

fs::path cli() {
    return attnrag::test::cli_path();
}
CliRun run(const std::string& args, bool with_stderr = false) {
    return attnrag::test::run_cli(args, with_stderr);
}

}  // namespace

TEST_CASE("CLI ingest then search --json and docs list", "[cli]") {
    REQUIRE(fs::exists(cli()));
    auto docs = attnrag::test::make_temp_dir("cli_docs");
    auto db = attnrag::test::make_temp_dir("cli_db") / "corpus";
    std::ofstream(docs / "tides.txt")
        << "Tides are caused by the gravitational pull of the Moon and the Sun on the oceans.";
    std::ofstream(docs / "bees.md")
        << "# Bees\n\nHoneybees communicate the location of flowers with a waggle dance.";
    const std::string model_dir =
        (attnrag::test::source_dir() / "models" / "all-MiniLM-L6-v2").string();

    auto ingest = run("ingest --json --threads 2 --embedder " + model_dir + " --db " + db.string() +
                      " " + docs.string());
    REQUIRE(ingest.code == 0);
    auto summary = nlohmann::json::parse(ingest.out);
    CHECK(summary["added"] == 2);
    CHECK(summary["skipped"].empty());

    auto again =
        run("ingest --json --embedder " + model_dir + " --db " + db.string() + " " + docs.string());
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

TEST_CASE("CLI models by name: attnrag models, --model NAME, clear errors", "[cli]") {
    // SmolLM2 (the tests' model) is installed in <repo>/models; names resolve through
    // ATTNRAG_MODELS_DIR, which is searched first.
    const std::string repo_models = (attnrag::test::source_dir() / "models").string();
    ::setenv("ATTNRAG_MODELS_DIR", repo_models.c_str(), 1);
    auto listed = run("models --json");
    REQUIRE(listed.code == 0);
    auto j = nlohmann::json::parse(listed.out);
    bool smollm_installed = false, qwen_known = false;
    for (const auto& m : j["models"]) {
        if (m["name"] == "smollm2-135m" && m["installed"] == true) {
            smollm_installed = true;
            CHECK(m["type"] == "Q4_1");
            CHECK(m["arch"] == "llama");
            CHECK(m["licence"] == "Apache-2.0");
        }
        if (m["name"] == "qwen2.5-1.5b") qwen_known = true;
    }
    CHECK(smollm_installed);
    CHECK(qwen_known);
    CHECK(j["search_dirs"][0] == repo_models);

    auto info = run("info --model smollm2-135m");
    CHECK(info.code == 0);
    CHECK(info.out.find("SmolLM2-135M-Instruct.Q4_1.gguf") != std::string::npos);

    // An unknown name that is no file either: the known names are listed.
    auto unknown = run("info --model no-such-model", true);
    CHECK(unknown.code == 1);
    CHECK(unknown.out.find("known model names: qwen2.5-1.5b, smollm2-135m") != std::string::npos);

    // A known name that is not installed: the folders searched and the set-up command.
    const auto empty = attnrag::test::make_temp_dir("cli_no_models");
    ::setenv("ATTNRAG_MODELS_DIR", empty.string().c_str(), 1);
    ::setenv("XDG_DATA_HOME", empty.string().c_str(), 1);
    auto missing = run("info --model qwen2.5-1.5b", true);
    if (!fs::exists(
            "models/Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf")) {  // cwd's models/ is searched too
        CHECK(missing.code == 1);
        CHECK(missing.out.find("is not installed; looked in " + empty.string()) !=
              std::string::npos);
        CHECK(missing.out.find("ATTNRAG_MODELS=qwen2.5-1.5b ./scripts/setup.sh") !=
              std::string::npos);
    }
    ::unsetenv("ATTNRAG_MODELS_DIR");
    ::unsetenv("XDG_DATA_HOME");
}
