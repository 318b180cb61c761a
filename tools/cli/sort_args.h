// Attention-sorting settings on the command line, shared by `ask --db` and `eval qa`.
#pragma once

#include <string>
#include <vector>

#include "args.h"
#include "attnrag/pipelines/rag.hpp"

namespace attnrag::cli {

// --sort-passes, --sort-layers, --sort-rows, --sort-score.
std::vector<OptionSpec> sort_option_specs();

// Reads those options into `options` (unset ones keep its values); false with `error` set on a
// malformed or out-of-range value. Layers are checked against the model later, by the probe.
bool read_sort_options(Args& args, pipelines::RagOptions& options, std::string& error);

// "upper", "all" or the listed layers ("10,11,12"), as reported in JSON.
std::string sort_layers_name(const pipelines::SortSignal& signal);

}  // namespace attnrag::cli
