// attnrag models: the models attnrag knows by name, the model files installed, and the default.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "args.h"
#include "attnrag/gguf.hpp"
#include "attnrag/model_catalog.hpp"
#include "commands.h"

namespace attnrag::cli {
namespace {

struct Row {
    std::string name, path, type, arch, size_label, licence, title, role;
    uint64_t file_bytes = 0;
    bool installed = false;
    std::string problem;  // why the file's metadata could not be read
};

// Metadata of an installed file; the file is mapped, not read.
void describe(Row& row) {
    auto f = GgufFile::open(row.path);
    if (!f) {
        row.problem = f.error().message;
        return;
    }
    if (auto a = f->get_string("general.architecture")) row.arch = *a;
    if (auto t = f->get_int("general.file_type")) row.type = file_type_name(*t);
    if (auto s = f->get_string("general.size_label")) row.size_label = *s;
    if (auto l = f->get_string("general.license"); l && row.licence.empty()) row.licence = *l;
}

}  // namespace

int cmd_models(int argc, char** argv) {
    const std::vector<OptionSpec> specs = {
        {"json", false, "print one JSON object"},
        {"help", false, "show this help"},
    };
    Args args(argc, argv, specs);
    if (args.flag("help")) {
        std::printf("%s", usage_text("models", "[--json]", specs).c_str());
        std::printf(
            "\nKnown models are installed by ./scripts/setup.sh (ATTNRAG_MODELS=name,... picks "
            "which);\nany other .gguf file in a models directory is listed too. Searched: ");
        const auto dirs = model_search_dirs();
        for (size_t i = 0; i < dirs.size(); ++i)
            std::printf("%s%s", i ? ", " : "", dirs[i].c_str());
        std::printf("\n");
        return 0;
    }
    if (!args.ok()) return fail_usage("models", args.error());
    if (!args.positional().empty()) return fail_usage("models", "takes no arguments");

    std::vector<Row> rows;
    for (const auto& k : known_models()) {
        Row r;
        r.name = std::string(k.name);
        r.licence = std::string(k.licence);
        r.title = std::string(k.title);
        r.role = std::string(k.role);
        rows.push_back(r);
    }
    for (const auto& m : installed_models()) {
        Row* row = nullptr;
        for (auto& r : rows) {
            if (!m.name.empty() && r.name == m.name && !r.installed) row = &r;
        }
        if (row == nullptr) {
            rows.push_back(Row{});
            row = &rows.back();
        }
        row->path = m.path;
        row->file_bytes = m.file_bytes;
        row->installed = true;
        describe(*row);
    }
    const std::string def = default_model_path();

    if (args.flag("json")) {
        nlohmann::json out = {{"default", def}, {"search_dirs", model_search_dirs()}};
        out["models"] = nlohmann::json::array();
        for (const auto& r : rows) {
            nlohmann::json j = {{"name", r.name},
                                {"installed", r.installed},
                                {"path", r.path},
                                {"file_bytes", r.file_bytes},
                                {"type", r.type},
                                {"arch", r.arch},
                                {"size_label", r.size_label},
                                {"licence", r.licence},
                                {"title", r.title},
                                {"role", r.role}};
            if (!r.problem.empty()) j["error"] = r.problem;
            out["models"].push_back(j);
        }
        std::printf("%s\n", out.dump(2).c_str());
        return 0;
    }
    std::printf("%-14s %-7s %9s  %-6s %-6s %-11s %s\n", "name", "type", "size", "arch", "params",
                "licence", "path");
    for (const auto& r : rows) {
        if (!r.installed) continue;
        std::printf("%-14s %-7s %6.0f MB  %-6s %-6s %-11s %s%s\n",
                    r.name.empty() ? "-" : r.name.c_str(), r.type.empty() ? "?" : r.type.c_str(),
                    static_cast<double>(r.file_bytes) / 1e6, r.arch.c_str(), r.size_label.c_str(),
                    r.licence.empty() ? "?" : r.licence.c_str(), r.path.c_str(),
                    r.path == def ? "  (default)" : "");
        if (!r.problem.empty()) std::printf("               unreadable: %s\n", r.problem.c_str());
    }
    for (const auto& r : rows) {
        if (r.installed) continue;
        std::printf(
            "%-14s not installed: %s (%s); fetch with ATTNRAG_MODELS=%s ./scripts/setup.sh\n",
            r.name.c_str(), r.title.c_str(), r.licence.c_str(), r.name.c_str());
    }
    return 0;
}

}  // namespace attnrag::cli
