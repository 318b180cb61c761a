// Helpers shared by CLI subcommands: model loading, peak memory, JSON string escaping.
#include "common.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace attnrag::cli {

Result<Model> load_model_from(const Args& args, const std::string& command) {
    std::string path = default_model_path();
    if (auto given = args.get("model")) {
        auto resolved = resolve_model(*given);
        if (!resolved) {
            std::fprintf(stderr, "attnrag %s: %s\n", command.c_str(),
                         resolved.error().message.c_str());
            return resolved.error();
        }
        path = *resolved;
    }
    auto model = Model::load(path);
    if (!model) {
        std::fprintf(stderr, "attnrag %s: cannot load model: %s\n", command.c_str(),
                     model.error().message.c_str());
        if (model.error().code == Errc::NotFound || model.error().code == Errc::Io) {
            std::fprintf(
                stderr, "  (run ./scripts/setup.sh to fetch the default model, or pass --model)\n");
        }
    }
    return model;
}

double peak_rss_mib() {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line)) {
        if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
    }
    return 0;
}

std::string json_string(std::string_view s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += static_cast<char>(c);
                }
        }
    }
    return out + "\"";
}

std::string output_path_problem(const std::string& path, bool appends) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::is_directory(path, ec)) return path + ": is a directory";
    if (appends && fs::exists(path, ec)) {
        if (::access(path.c_str(), W_OK) != 0)
            return path + ": cannot write (" + std::strerror(errno) + ")";
        return {};
    }
    fs::path dir = fs::path(path).parent_path();
    if (dir.empty()) dir = ".";
    if (!fs::is_directory(dir, ec)) return path + ": no such directory " + dir.string();
    if (::access(dir.c_str(), W_OK) != 0)
        return path + ": cannot write in " + dir.string() + " (" + std::strerror(errno) + ")";
    return {};
}

Status write_file_replacing(const std::string& path, std::string_view text) {
    const std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        if (!out) return make_error(Errc::Io, tmp + ": cannot open for writing");
        out.write(text.data(), static_cast<std::streamsize>(text.size()));
        out.flush();
        if (!out) {
            std::remove(tmp.c_str());
            return make_error(Errc::Io, tmp + ": write failed (disk full?)");
        }
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        const std::string why = std::strerror(errno);
        std::remove(tmp.c_str());
        return make_error(Errc::Io, path + ": cannot rename into place (" + why + ")");
    }
    return {};
}

}  // namespace attnrag::cli
