// Retrieval heads (../shared/reference/algorithms.md §7, Wu et al. 2024): score every (layer,
// head) of a model on copy trials, rank them, and store the ranking per model fingerprint.
//
// The copy task, as implemented here (teacher-forced, so one forward pass per trial):
//   prompt   = InfiniRetri's prompt (build_infiniretri_prompt, in the model's chat format)
//              whose context is a cut of the haystack (L tokens in all, needle included) with a
//              needle sentence inserted at the sentence boundary nearest d% of the haystack
//              tokens;
//   needle   = "<subject> <w1> ... <wn>." with n words drawn at random from the haystack's own
//              vocabulary (so the continuation cannot be guessed from the language prior and the
//              project's eval needles never enter the scoring), e.g. "The words written on the
//              blue envelope are: garden fortune simple weekend rather purple.";
//   question = the matching question ("What words are written on the blue envelope?");
//   answer   = the needle sentence itself, appended after the assistant header.
// Probed rows: the last prompt token and every answer token but the last, i.e. the rows whose
// next token is answer token i. A row is scored when answer token i occurs inside the inserted
// needle; a (layer, head) hits on that row when its most attended key (argmax over every key the
// row sees, softmax over all of them) lies inside the needle and holds the same token id as
// answer token i (the paper's rule: the head points at the token being copied).
//   score         = hits / scored rows, over all trials;
//   score_correct = the same, counting only rows where the model's own greedy prediction is
//                   answer token i (the paper scores generated tokens, i.e. correct copies).
// The ranking sorts by score (ties: score_correct, then lower layer, then lower head).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "attnrag/model.hpp"
#include "attnrag/result.hpp"

namespace attnrag::pipelines {

// One attention head: a layer index and a query head index within it.
struct LayerHead {
    int32_t layer = 0, head = 0;
    bool operator==(const LayerHead&) const = default;
};

// "L:H,L:H,..." (spaces allowed around items). Errors: InvalidArgument naming the bad item.
// Ranges are not checked here (that needs the model; see check_layer_heads).
Result<std::vector<LayerHead>> parse_layer_heads(std::string_view text);
// "L:H,L:H" (the inverse of parse_layer_heads).
std::string format_layer_heads(const std::vector<LayerHead>& heads);
// InvalidArgument when a pair is out of range for n_layer x n_head or listed twice. `what`
// prefixes the message ("infiniretri", ...).
Status check_layer_heads(const std::vector<LayerHead>& heads, int32_t n_layer, int32_t n_head,
                         std::string_view what);

struct RetrievalHeadsProgress {
    int32_t n_trials_done = 0, n_trials = 0;
    int64_t length = 0;    // context tokens of the trial just finished
    int32_t depth = 0;     // its needle depth in %
    int64_t n_tokens = 0;  // tokens evaluated so far
    double seconds = 0;
};

struct RetrievalHeadsOptions {
    // A .txt file or a folder searched recursively for .txt files (read in name order, joined
    // as paragraphs). Only its first max_haystack_tokens tokens are read.
    std::filesystem::path haystack = {};
    std::vector<int32_t> lengths = {1000, 2000,
                                    4000};  // context tokens per trial (needle included)
    std::vector<int32_t> depths = {0, 25, 50, 75, 100};  // needle depth in % of the haystack
    int32_t n_trials = 2;  // needles per (length, depth); each at another haystack offset
    int32_t n_words = 6;   // random words per needle
    uint64_t seed = 1;     // needles, words and haystack offsets are a function of it
    int64_t max_haystack_tokens = 200000;
    int32_t n_threads = 0;  // 0 = all hardware threads
    // The probabilities kept per pass are n_layers x n_heads x rows x keys floats; when all
    // layers would exceed this, the answer rows are evaluated again per group of layers (the
    // haystack's cache is kept, so a group costs only the short answer rows).
    size_t max_probe_bytes = size_t{256} << 20;
    // After each trial; false cancels (Errc::Cancelled).
    std::function<bool(const RetrievalHeadsProgress&)> on_progress = {};
};

// The trial grid a ranking was measured on (stored with it).
struct RetrievalHeadsSetup {
    std::string haystack = {};  // the path as given
    std::vector<int32_t> lengths = {}, depths = {};
    int32_t n_trials = 0, n_words = 0;
    uint64_t seed = 0;
};

struct HeadScore {
    LayerHead head = {};
    double score = 0;          // hits / scored rows
    double score_correct = 0;  // hits / scored rows the model itself predicts right
    bool operator==(const HeadScore&) const = default;
};

// Every (layer, head) of one model with its retrieval score, best first.
struct HeadRanking {
    std::string fingerprint = {};  // Model::fingerprint()
    std::string model_name = {};   // GGUF general.name (else the file name)
    int32_t n_layer = 0, n_head = 0;
    RetrievalHeadsSetup setup = {};
    int32_t n_trials = 0;               // trials run
    int64_t n_rows = 0;                 // scored rows (denominator of score)
    int64_t n_rows_correct = 0;         // of which the model predicted right (of score_correct)
    double seconds = 0;                 // scoring wall time
    std::vector<HeadScore> heads = {};  // n_layer * n_head entries, sorted (see the file comment)

    // The first n of `heads` (all when n exceeds their number; none when n <= 0).
    std::vector<LayerHead> top(int32_t n) const;
    double mean_score() const;
};

// Sorts `heads` into ranking order (score, then score_correct, descending; then layer, head).
void sort_head_scores(std::vector<HeadScore>& heads);

// Runs the copy trials on `model` and ranks its heads. Errors: bad options (InvalidArgument), a
// haystack that is missing (NotFound) or too small, engine errors, Cancelled. Uses its own
// context; the model may be shared with other threads.
Result<HeadRanking> score_retrieval_heads(const Model& model,
                                          const RetrievalHeadsOptions& options = {});

// ---- Storage: <dir>/<fingerprint>.json ----------------------------------------------------------

// $ATTNRAG_HEADS_DIR, else $XDG_CACHE_HOME/attnrag/heads, else $HOME/.cache/attnrag/heads.
// NotFound when none of the three variables is set.
Result<std::filesystem::path> default_heads_dir();

// <dir>/<fingerprint>.json.
std::filesystem::path head_ranking_path(const std::filesystem::path& dir,
                                        std::string_view fingerprint);

// Writes the ranking to <dir>/<fingerprint>.json (directory created if needed) through a
// temporary file renamed into place, so readers never see half a file. Returns the path.
// Errors: InvalidArgument (an inconsistent ranking or a fingerprint unfit for a file name), Io.
Result<std::filesystem::path> save_head_ranking(const HeadRanking& ranking,
                                                const std::filesystem::path& dir);

// Reads and validates one ranking file: NotFound (no file), Corrupt (not JSON, wrong format or
// version, missing or mistyped fields, scores outside [0, 1], heads that do not cover every
// (layer, head) exactly once or are not in ranking order), Io.
Result<HeadRanking> load_head_ranking_file(const std::filesystem::path& file);

// The ranking stored in `dir` for this fingerprint: load_head_ranking_file plus Corrupt when the
// file names another fingerprint. NotFound says how to make one (attnrag heads).
Result<HeadRanking> load_head_ranking(const std::filesystem::path& dir,
                                      std::string_view fingerprint);
// As above for `model`, also checking its layer and head counts (Corrupt on a mismatch).
Result<HeadRanking> load_head_ranking(const std::filesystem::path& dir, const Model& model);

// The n best stored retrieval heads of `model` (n >= 1; InvalidArgument otherwise).
Result<std::vector<LayerHead>> top_retrieval_heads(const std::filesystem::path& dir,
                                                   const Model& model, int32_t n);

}  // namespace attnrag::pipelines
