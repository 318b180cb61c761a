// Attention-sorting settings on the command line.
#include "sort_args.h"

#include "infiniretri_args.h"

namespace attnrag::cli {

std::vector<OptionSpec> sort_option_specs() {
    return {
        {"sort-passes", true, "attention-sorting passes before answering (default 0)"},
        {"sort-layers", true, "layers whose attention sorts the passages, e.g. 10-29 (default: all, averaged)"},
        {"sort-rows", true,
         "last (the last prompt row's attention, the method's) or question (every row of the question "
         "block, averaged) (default last)"},
        {"sort-score", true,
         "raw (the question's attention mass per passage) or calibrated (divided by the mass a "
         "neutral question gives it; one more question pass per sort pass) (default raw)"},
    };
}

bool read_sort_options(Args& args, pipelines::RagOptions& options, std::string& error) {
    const long long passes = args.get_int("sort-passes", options.sort_passes);
    if (passes < 0 || passes > 100) {
        error = "--sort-passes must be in [0, 100]";
        return false;
    }
    options.sort_passes = static_cast<int32_t>(passes);
    if (auto layers = args.get("sort-layers")) {
        std::vector<int32_t> list;
        if (!parse_int_list(*layers, list) || list.empty()) {
            error = "--sort-layers: expected layers such as 12 or 10-29 or 3,7,20";
            return false;
        }
        for (int32_t l : list) {
            if (l < 0) {
                error = "--sort-layers: layers are >= 0";
                return false;
            }
        }
        options.assembly.probe_layers = std::move(list);
    }
    const std::string rows = args.get_or("sort-rows", options.assembly.probe_question_rows ? "question" : "last");
    if (rows != "last" && rows != "question") {
        error = "--sort-rows must be last or question";
        return false;
    }
    options.assembly.probe_question_rows = rows == "question";
    const std::string score = args.get_or("sort-score", options.sort_baseline ? "calibrated" : "raw");
    if (score != "raw" && score != "calibrated") {
        error = "--sort-score must be raw or calibrated";
        return false;
    }
    options.sort_baseline = score == "calibrated";
    return true;
}

}  // namespace attnrag::cli
