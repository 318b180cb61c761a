// Helpers shared by CLI subcommands: model loading, peak memory, JSON string escaping.
#pragma once

#include <string>
#include <string_view>

#include "args.h"
#include "attnrag/model.hpp"

namespace attnrag::cli {

// Loads --model (or the default path); on failure prints the error and returns it.
Result<Model> load_model_from(const Args& args, const std::string& command);

// Peak resident set size of this process in MiB (VmHWM), 0 if unknown.
double peak_rss_mib();

// A JSON string literal (quotes included) for UTF-8 text.
std::string json_string(std::string_view s);

}  // namespace attnrag::cli
