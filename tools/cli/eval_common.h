// Pieces shared by the evaluation commands (cmd_eval.cpp, cmd_eval_longqa.cpp): reading JSONL
// files with errors that name file:line, typed field access, medians.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "attnrag/result.hpp"

namespace attnrag::cli {

// Ids may be written as strings or integers; anything else is not an id.
std::optional<std::string> id_text(const nlohmann::json& j);

// j[key] as a string (or integer id) / an array of them; false with `error` set otherwise.
bool get_string(const nlohmann::json& j, const char* key, std::string& out, std::string& error);
bool get_strings(const nlohmann::json& j, const char* key, std::vector<std::string>& out, std::string& error);

// Calls `on_line` for every non-blank line of a JSONL file (it returns false with `error` set
// to reject the line); errors name file:line. Lines are read one at a time.
Status read_jsonl(const std::filesystem::path& path,
                  const std::function<bool(const nlohmann::json&, std::string&)>& on_line);

// For --sample: which of n_items to take so that n of them are spread evenly over the file (all
// of them when n is 0 or not smaller than n_items).
std::vector<char> spread_sample(size_t n_items, size_t n);

// The median (mean of the middle two for an even count); 0 for none.
double median(std::vector<double> v);

}  // namespace attnrag::cli
