// Minimal command-line option parsing shared by the attnrag subcommands.
#include "args.h"

#include <cstdio>
#include <cstdlib>

namespace attnrag::cli {

Args::Args(int argc, char** argv, const std::vector<OptionSpec>& specs) {
    for (int i = 0; i < argc; ++i) {
        std::string a = argv[i];
        if (a.size() > 2 && a.rfind("--", 0) == 0) {
            std::string name = a.substr(2), value;
            bool has_inline = false;
            if (auto eq = name.find('='); eq != std::string::npos) {
                value = name.substr(eq + 1);
                name = name.substr(0, eq);
                has_inline = true;
            }
            const OptionSpec* spec = nullptr;
            for (const auto& s : specs) {
                if (s.name == name) spec = &s;
            }
            if (!spec) {
                error_ = "unknown option --" + name;
                return;
            }
            if (spec->takes_value && !has_inline) {
                if (i + 1 >= argc) {
                    error_ = "option --" + name + " needs a value";
                    return;
                }
                value = argv[++i];
            } else if (!spec->takes_value && has_inline) {
                error_ = "option --" + name + " takes no value";
                return;
            }
            values_[name] = value;
        } else {
            positional_.push_back(a);
        }
    }
}

std::optional<std::string> Args::get(const std::string& name) const {
    auto it = values_.find(name);
    if (it == values_.end()) return std::nullopt;
    return it->second;
}

std::string Args::get_or(const std::string& name, const std::string& fallback) const {
    auto v = get(name);
    return v ? *v : fallback;
}

long long Args::get_int(const std::string& name, long long fallback) {
    auto v = get(name);
    if (!v) return fallback;
    char* end = nullptr;
    long long r = std::strtoll(v->c_str(), &end, 10);
    if (v->empty() || *end != '\0') {
        if (error_.empty()) error_ = "option --" + name + " expects an integer, got '" + *v + "'";
        return fallback;
    }
    return r;
}

double Args::get_double(const std::string& name, double fallback) {
    auto v = get(name);
    if (!v) return fallback;
    char* end = nullptr;
    double r = std::strtod(v->c_str(), &end);
    if (v->empty() || *end != '\0') {
        if (error_.empty()) error_ = "option --" + name + " expects a number, got '" + *v + "'";
        return fallback;
    }
    return r;
}

std::string usage_text(const std::string& command, const std::string& synopsis,
                       const std::vector<OptionSpec>& specs) {
    std::string out = "usage: attnrag " + command + " " + synopsis + "\n\noptions:\n";
    for (const auto& s : specs) {
        std::string left = "  --" + s.name + (s.takes_value ? " VALUE" : "");
        if (left.size() < 24) left.resize(24, ' ');
        out += left + " " + s.help + "\n";
    }
    return out;
}

int fail_usage(const std::string& command, const std::string& message) {
    std::fprintf(stderr, "attnrag %s: %s (see attnrag %s --help)\n", command.c_str(), message.c_str(),
                 command.c_str());
    return 2;
}

int fail(const std::string& command, const std::string& message) {
    std::fprintf(stderr, "attnrag %s: %s\n", command.c_str(), message.c_str());
    return 1;
}

}  // namespace attnrag::cli
