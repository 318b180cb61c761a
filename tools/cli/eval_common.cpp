// Shared evaluation helpers (see eval_common.h).
#include "eval_common.h"

#include <algorithm>
#include <fstream>

namespace attnrag::cli {

namespace fs = std::filesystem;

std::optional<std::string> id_text(const nlohmann::json& j) {
    if (j.is_string()) return j.get<std::string>();
    if (j.is_number_integer()) return j.dump();
    return std::nullopt;
}

bool get_string(const nlohmann::json& j, const char* key, std::string& out, std::string& error) {
    auto it = j.find(key);
    if (it == j.end()) {
        error = std::string("missing field \"") + key + "\"";
        return false;
    }
    auto t = id_text(*it);
    if (!t) {
        error = std::string("field \"") + key + "\" is not a string";
        return false;
    }
    out = std::move(*t);
    return true;
}

bool get_strings(const nlohmann::json& j, const char* key, std::vector<std::string>& out, std::string& error) {
    auto it = j.find(key);
    if (it == j.end()) {
        error = std::string("missing field \"") + key + "\"";
        return false;
    }
    if (!it->is_array()) {
        error = std::string("field \"") + key + "\" is not an array of strings";
        return false;
    }
    for (const auto& e : *it) {
        auto t = id_text(e);
        if (!t) {
            error = std::string("field \"") + key + "\" is not an array of strings";
            return false;
        }
        out.push_back(std::move(*t));
    }
    return true;
}

Status read_jsonl(const fs::path& path, const std::function<bool(const nlohmann::json&, std::string&)>& on_line) {
    std::error_code ec;
    if (fs::is_directory(path, ec)) return make_error(Errc::InvalidArgument, path.string() + ": is a directory");
    std::ifstream in(path);
    if (!in) return make_error(Errc::NotFound, path.string() + ": cannot open");
    std::string line;
    size_t n_line = 0;
    while (std::getline(in, line)) {
        ++n_line;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        const std::string where = path.string() + ":" + std::to_string(n_line);
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_discarded()) return make_error(Errc::Corrupt, where + ": malformed JSON");
        if (!j.is_object()) return make_error(Errc::Corrupt, where + ": not a JSON object");
        std::string error;
        if (!on_line(j, error)) return make_error(Errc::Corrupt, where + ": " + error);
    }
    if (in.bad()) return make_error(Errc::Io, path.string() + ": read error");
    return {};
}

std::vector<char> spread_sample(size_t n_items, size_t n) {
    if (n == 0 || n >= n_items) return std::vector<char>(n_items, 1);
    std::vector<char> chosen(n_items, 0);
    for (size_t i = 0; i < n; ++i) chosen[i * n_items / n] = 1;
    return chosen;
}

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const size_t m = v.size() / 2;
    return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}
}  // namespace attnrag::cli
