// Known models by name, the directories searched for them, and --model resolution.
#include "attnrag/model_catalog.hpp"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <set>

namespace attnrag {
namespace {

namespace fs = std::filesystem;

constexpr KnownModel kKnown[] = {
    {"qwen2.5-1.5b", "Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
     "Qwen2.5-Coder-1.5B-Instruct Q4_K_M", "Apache-2.0",
     "quality model: the default for generate, ask and the demo"},
    {"smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct Q4_1", "Apache-2.0",
     "fast model: tests and quick evaluations"},
};

bool is_file(const std::string& p) {
    std::error_code ec;
    return fs::is_regular_file(p, ec);
}

std::string join_dirs(const std::vector<std::string>& dirs) {
    std::string out;
    for (const auto& d : dirs) out += (out.empty() ? "" : ", ") + d;
    return out;
}

std::string known_names() {
    std::string out;
    for (const auto& k : kKnown) out += (out.empty() ? "" : ", ") + std::string(k.name);
    return out;
}

}  // namespace

std::span<const KnownModel> known_models() {
    return kKnown;
}

const KnownModel* find_known_model(std::string_view name) {
    for (const auto& k : kKnown) {
        if (k.name == name) return &k;
    }
    return nullptr;
}

std::vector<std::string> model_search_dirs() {
    std::vector<std::string> dirs;
    if (const char* env = std::getenv("ATTNRAG_MODELS_DIR"); env && *env) dirs.emplace_back(env);
    dirs.emplace_back("models");
    if (const char* xdg = std::getenv("XDG_DATA_HOME"); xdg && *xdg) {
        dirs.push_back(std::string(xdg) + "/attnrag/models");
    } else if (const char* home = std::getenv("HOME"); home && *home) {
        dirs.push_back(std::string(home) + "/.local/share/attnrag/models");
    }
    return dirs;
}

Result<std::string> resolve_model(std::string_view name_or_path) {
    const std::string value(name_or_path);
    if (const KnownModel* k = find_known_model(name_or_path)) {
        const auto dirs = model_search_dirs();
        for (const auto& d : dirs) {
            const std::string p = d + "/" + std::string(k->file);
            if (is_file(p)) return p;
        }
        return make_error(Errc::NotFound, "model " + value + " (" + std::string(k->file) +
                                              ") is not installed; looked in " + join_dirs(dirs) +
                                              "; fetch it with ATTNRAG_MODELS=" + value +
                                              " ./scripts/setup.sh");
    }
    if (is_file(value)) return value;
    return make_error(Errc::NotFound,
                      "no model file " + value + " (known model names: " + known_names() + ")");
}

std::string default_model_path() {
    if (const char* env = std::getenv("ATTNRAG_MODEL"); env && *env) {
        // A name resolves; a path (or a name that is not installed) is returned as given and
        // fails at load with its own message.
        auto r = resolve_model(env);
        return r ? *r : std::string(env);
    }
    for (const auto& k : kKnown) {
        if (auto r = resolve_model(k.name)) return *r;
    }
    return "models/" + std::string(kKnown[std::size(kKnown) - 1].file);
}

std::vector<InstalledModel> installed_models() {
    std::vector<InstalledModel> out;
    std::set<std::string> seen;
    for (const auto& d : model_search_dirs()) {
        std::error_code ec;
        if (!fs::is_directory(d, ec)) continue;
        std::vector<fs::path> files;
        for (fs::directory_iterator it(d, ec), end; !ec && it != end; it.increment(ec)) {
            if (it->path().extension() == ".gguf" && it->is_regular_file(ec))
                files.push_back(it->path());
        }
        std::sort(files.begin(), files.end());
        for (const auto& f : files) {
            const std::string canon = fs::weakly_canonical(f, ec).string();
            if (!seen.insert(canon).second) continue;
            InstalledModel m;
            m.path = f.string();
            m.file_bytes = static_cast<uint64_t>(fs::file_size(f, ec));
            for (const auto& k : kKnown) {
                if (f.filename() == k.file) m.name = std::string(k.name);
            }
            out.push_back(std::move(m));
        }
    }
    return out;
}

std::string file_type_name(int64_t file_type) {
    // llama.cpp's llama_ftype values.
    switch (file_type) {
        case 0: return "F32";
        case 1: return "F16";
        case 2: return "Q4_0";
        case 3: return "Q4_1";
        case 7: return "Q8_0";
        case 8: return "Q5_0";
        case 9: return "Q5_1";
        case 10: return "Q2_K";
        case 11: return "Q3_K_S";
        case 12: return "Q3_K_M";
        case 13: return "Q3_K_L";
        case 14: return "Q4_K_S";
        case 15: return "Q4_K_M";
        case 16: return "Q5_K_S";
        case 17: return "Q5_K_M";
        case 18: return "Q6_K";
        case 32: return "BF16";
        default: return "type " + std::to_string(file_type);
    }
}

}  // namespace attnrag
