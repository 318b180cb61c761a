// attnrag docs: list, show and delete the documents of a corpus.
#include <cstdio>

#include <nlohmann/json.hpp>

#include "args.h"
#include "attnrag/index/corpus.hpp"
#include "commands.h"
#include "common.h"

namespace attnrag::cli {

int cmd_docs(int argc, char** argv) {
    const std::vector<OptionSpec> specs = {
        {"db", true, "corpus directory (required)"},
        {"json", false, "print JSON"},
        {"help", false, "show this help"},
    };
    Args args(argc, argv, specs);
    if (args.flag("help")) {
        std::printf("%s", usage_text("docs", "list|show ID|delete ID --db DIR", specs).c_str());
        return 0;
    }
    if (!args.ok()) return fail_usage("docs", args.error());
    auto db = args.get("db");
    const auto& pos = args.positional();
    if (!db || pos.empty()) return fail_usage("docs", "usage: docs list|show ID|delete ID --db DIR");
    if (!std::filesystem::exists(std::filesystem::path(*db) / "attnrag.db")) {
        return fail("docs", *db + ": no corpus here");
    }
    const std::string& verb = pos[0];
    int64_t id = 0;
    if (verb == "show" || verb == "delete") {
        char* end = nullptr;
        if (pos.size() != 2) return fail_usage("docs", verb + " needs a document id");
        id = std::strtoll(pos[1].c_str(), &end, 10);
        if (*end) return fail_usage("docs", "bad document id '" + pos[1] + "'");
    } else if (verb != "list") {
        return fail_usage("docs", "unknown verb '" + verb + "' (list, show, delete)");
    }
    index::CorpusOptions opt;
    opt.read_only = verb != "delete";
    auto corpus = index::Corpus::open(*db, opt);
    if (!corpus) return fail("docs", corpus.error().message);
    const bool json = args.flag("json");
    auto doc_json = [](const DocumentRow& d) {
        return nlohmann::json{{"id", d.id},           {"source", d.source}, {"title", d.title},
                              {"format", d.format},   {"n_bytes", d.n_bytes}, {"n_chunks", d.n_chunks},
                              {"content_hash", d.content_hash},
                              {"metadata", nlohmann::json::parse(d.metadata_json, nullptr, false)}};
    };
    if (verb == "list") {
        auto docs = corpus->store().list_documents();
        if (!docs) return fail("docs", docs.error().message);
        if (json) {
            nlohmann::json out = nlohmann::json::array();
            for (const auto& d : *docs) out.push_back(doc_json(d));
            std::printf("%s\n", out.dump(2).c_str());
        } else {
            for (const auto& d : *docs) {
                std::printf("%6lld  %5lld chunks  %9llu bytes  %-8s %s\n", static_cast<long long>(d.id),
                            static_cast<long long>(d.n_chunks), static_cast<unsigned long long>(d.n_bytes),
                            d.format.c_str(), d.source.c_str());
            }
            std::printf("%zu documents\n", docs->size());
        }
        return 0;
    }
    if (verb == "show") {
        auto doc = corpus->store().get_document(id);
        if (!doc) return fail("docs", doc.error().message);
        if (!*doc) return fail("docs", "no document " + std::to_string(id));
        auto chunks = corpus->store().chunks_of(id);
        if (!chunks) return fail("docs", chunks.error().message);
        if (json) {
            nlohmann::json out = doc_json(**doc);
            out["chunks"] = nlohmann::json::array();
            for (const auto& c : *chunks) {
                out["chunks"].push_back({{"id", c.id}, {"ordinal", c.ordinal}, {"begin", c.begin}, {"end", c.end},
                                         {"n_tokens", c.n_tokens}, {"text", c.text}});
            }
            std::printf("%s\n", out.dump(2).c_str());
        } else {
            std::printf("%s\n  title: %s\n  format: %s, %llu bytes, %zu chunks\n  metadata: %s\n",
                        (*doc)->source.c_str(), (*doc)->title.c_str(), (*doc)->format.c_str(),
                        static_cast<unsigned long long>((*doc)->n_bytes), chunks->size(),
                        (*doc)->metadata_json.c_str());
            for (const auto& c : *chunks) {
                std::printf("  #%u [%llu, %llu) %u tokens\n", c.ordinal, static_cast<unsigned long long>(c.begin),
                            static_cast<unsigned long long>(c.end), c.n_tokens);
            }
        }
        return 0;
    }
    auto removed = corpus->delete_document(id);
    if (!removed) return fail("docs", removed.error().message);
    if (!*removed) return fail("docs", "no document " + std::to_string(id));
    std::printf("deleted document %lld\n", static_cast<long long>(id));
    return 0;
}

}  // namespace attnrag::cli
