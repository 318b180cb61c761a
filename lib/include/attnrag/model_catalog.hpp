// The models attnrag knows by name, where installed models are looked for, and how a --model
// value (a name or a path) becomes a file.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attnrag/result.hpp"

namespace attnrag {

struct KnownModel {
    std::string_view name;     // what a user types: --model NAME, ATTNRAG_MODEL=NAME
    std::string_view file;     // file name in a models directory
    std::string_view title;    // the model as its authors name it, with the quantization
    std::string_view licence;  // SPDX identifier
    std::string_view role;     // what attnrag uses it for
};

// Known models, the quality model first (the default where it is installed).
std::span<const KnownModel> known_models();
// nullptr when `name` is not a known model's name.
const KnownModel* find_known_model(std::string_view name);

// Directories searched for model files, in order: $ATTNRAG_MODELS_DIR (if set), models/ under
// the working directory, then $XDG_DATA_HOME/attnrag/models (or ~/.local/share/attnrag/models).
std::vector<std::string> model_search_dirs();

// The file a --model value names. A known name resolves to its file in the first search
// directory that has it (NotFound, listing the directories searched and the set-up command,
// when none has); any other value is a path, returned as given when the file exists (NotFound
// otherwise, listing the known names).
Result<std::string> resolve_model(std::string_view name_or_path);

// The model used when none is given: $ATTNRAG_MODEL (a name or a path), else the first known
// model that is installed (the quality model, then SmolLM2), else SmolLM2's path under models/
// (which then fails to load with the set-up hint).
std::string default_model_path();

// One installed model file: a known model or any other .gguf found in a search directory.
struct InstalledModel {
    std::string name;  // known name, or empty
    std::string path;
    uint64_t file_bytes = 0;
};
std::vector<InstalledModel> installed_models();

// The llama.cpp file type (general.file_type) as its usual name: "Q4_K_M", "Q4_1", ...;
// "type N" for one this table does not name.
std::string file_type_name(int64_t file_type);

}  // namespace attnrag
