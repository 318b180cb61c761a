// Helpers shared by CLI subcommands: model loading, peak memory, JSON string escaping.
#include "common.h"

#include <cstdio>
#include <fstream>

namespace attnrag::cli {

Result<Model> load_model_from(const Args& args, const std::string& command) {
    std::string path = args.get_or("model", default_model_path());
    auto model = Model::load(path);
    if (!model) {
        std::fprintf(stderr, "attnrag %s: cannot load model: %s\n", command.c_str(),
                     model.error().message.c_str());
        if (model.error().code == Errc::NotFound || model.error().code == Errc::Io) {
            std::fprintf(stderr, "  (run ./scripts/setup.sh to fetch the default model, or pass --model)\n");
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

}  // namespace attnrag::cli
