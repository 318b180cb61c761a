// Helpers shared by CLI subcommands: model loading, peak memory, JSON string escaping, output
// files.
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

// Whether `path` can be written later: not a directory; appended to in place (`appends`) when
// it exists and is writable, else created (or replaced, write_file_replacing) in a directory
// that exists and is writable. Checked before a long run so that it does not fail at the end;
// empty when fine, else the reason.
std::string output_path_problem(const std::string& path, bool appends = false);

// Writes `text` to `path` through a temporary file renamed into place, so a failed write (full
// disk) leaves any earlier file whole.
Status write_file_replacing(const std::string& path, std::string_view text);

}  // namespace attnrag::cli
