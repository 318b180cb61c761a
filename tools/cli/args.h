// Minimal command-line option parsing shared by the attnrag subcommands.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace attnrag::cli {

struct OptionSpec {
    std::string name;  // without leading dashes
    bool takes_value;
    std::string help;
};

class Args {
 public:
    // Parses argv (after the subcommand). Unknown options or missing values -> error().
    Args(int argc, char** argv, const std::vector<OptionSpec>& specs);

    bool ok() const { return error_.empty(); }
    const std::string& error() const { return error_; }

    bool flag(const std::string& name) const { return values_.count(name) != 0; }
    std::optional<std::string> get(const std::string& name) const;
    std::string get_or(const std::string& name, const std::string& fallback) const;
    // Numeric getters record an error (see ok()) on a malformed number.
    long long get_int(const std::string& name, long long fallback);
    double get_double(const std::string& name, double fallback);
    const std::vector<std::string>& positional() const { return positional_; }

 private:
    std::map<std::string, std::string> values_;
    std::vector<std::string> positional_;
    std::string error_;
};

std::string usage_text(const std::string& command, const std::string& synopsis,
                       const std::vector<OptionSpec>& specs);

// Prints "attnrag <cmd>: <message>" to stderr and returns exit code 2 (usage) or 1 (failure).
int fail_usage(const std::string& command, const std::string& message);
int fail(const std::string& command, const std::string& message);

// Model options shared by every model command.
inline const OptionSpec kModelOption{
    "model", true,
    "a model name (qwen2.5-1.5b, smollm2-135m; see attnrag models) or a GGUF file (default: "
    "$ATTNRAG_MODEL, else qwen2.5-1.5b where installed, else smollm2-135m)"};
inline const OptionSpec kThreadsOption{"threads", true, "worker threads (default: all cores)"};

// Appends --model, --threads and --help: the tail of every model command's option table.
inline void add_model_options(std::vector<OptionSpec>& specs) {
    specs.push_back(kModelOption);
    specs.push_back(kThreadsOption);
    specs.push_back({"help", false, "show this help"});
}

}  // namespace attnrag::cli
