// Attention-sorting settings on the command line.
#include "sort_args.h"

#include "infiniretri_args.h"

namespace attnrag::cli {

std::vector<OptionSpec> sort_option_specs() {
    return {
        {"sort-passes", true, "attention-sorting passes before answering (default 0)"},
        {"sort-layers", true,
         "layers whose attention sorts the passages: upper (the upper two thirds), all, or a list such as "
         "10-29 (default upper)"},
        {"sort-rows", true,
         "question (every row of the question block, averaged) or last (the last prompt row only) "
         "(default question)"},
        {"sort-score", true,
         "calibrated (each passage's mass divided by the mass a neutral question gives it; one more "
         "question pass per sort pass) or raw (default calibrated). The published method is "
         "--sort-rows last --sort-layers all --sort-score raw"},
    };
}

std::string sort_layers_name(const pipelines::SortSignal& signal) {
    if (signal.all_layers) return "all";
    if (signal.layers.empty()) return "upper";
    std::string out;
    for (int32_t l : signal.layers) {
        if (!out.empty()) out += ',';
        out += std::to_string(l);
    }
    return out;
}

bool read_sort_options(Args& args, pipelines::RagOptions& options, std::string& error) {
    const long long passes = args.get_int("sort-passes", options.sort_passes);
    if (passes < 0 || passes > 100) {
        error = "--sort-passes must be in [0, 100]";
        return false;
    }
    options.sort_passes = static_cast<int32_t>(passes);
    pipelines::SortSignal& signal = options.sort;
    if (auto layers = args.get("sort-layers")) {
        if (*layers == "all" || *layers == "upper") {
            signal.all_layers = *layers == "all";
            signal.layers.clear();
        } else {
            std::vector<int32_t> list;
            if (!parse_int_list(*layers, list) || list.empty()) {
                error = "--sort-layers: expected upper, all, or layers such as 12 or 10-29 or 3,7,20";
                return false;
            }
            for (int32_t l : list) {
                if (l < 0) {
                    error = "--sort-layers: layers are >= 0";
                    return false;
                }
            }
            signal.all_layers = false;
            signal.layers = std::move(list);
        }
    }
    const std::string rows = args.get_or("sort-rows", signal.question_rows ? "question" : "last");
    if (rows != "last" && rows != "question") {
        error = "--sort-rows must be question or last";
        return false;
    }
    signal.question_rows = rows == "question";
    const std::string score = args.get_or("sort-score", signal.calibrated ? "calibrated" : "raw");
    if (score != "raw" && score != "calibrated") {
        error = "--sort-score must be calibrated or raw";
        return false;
    }
    signal.calibrated = score == "calibrated";
    return true;
}

}  // namespace attnrag::cli
