// Retrieval-augmented QA over given passages (DESIGN.md §4): prompt assembly with passage KV
// reuse, attention sorting, streamed generation, and citations ranked by the attention mass the
// answer's tokens put on each passage.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attnrag/generate.hpp"
#include "attnrag/pipelines/assembly.hpp"

namespace attnrag::pipelines {

struct RagPassage {
    std::string id;  // caller's id (data set passage id, or chunk id as text)
    int64_t document_id = 0, chunk_id = 0;
    std::string source, title, text;
    uint64_t source_begin = 0, source_end = 0;  // byte range in the source document
};

// What attention sorting reads from each sorting pass (DESIGN.md §4 "Attention sorting").
// The method as published reads the last prompt row's raw attention, averaged over all layers and
// heads (`SortSignal::method()`). On SmolLM2-135M that row attends by position, not content: it
// puts a gold passage next to the question in 1 of 103 HotpotQA questions, below chance. The
// default reads every row of the question block in the upper two thirds of the layers and divides
// each passage's mass by the mass a content-free question gives it; that puts a gold passage
// there in about half of them (BENCHMARKS.md, "What sorting reads").
struct SortSignal {
    // Every row of the question block, averaged (false: only the last prompt row).
    bool question_rows = true;
    // Layers averaged: empty = the upper two thirds (from n_layer / 3, as citations); all_layers
    // reads every layer whatever `layers` says.
    std::vector<int32_t> layers = {};
    bool all_layers = false;
    std::vector<int32_t> heads = {};  // empty = all
    // Divide by the mass each passage gets when the question block asks `neutral_question`
    // instead (one more question-block pass per sort pass). That removes what the question rows
    // attend to whatever is asked (the passage nearest to the question, the first one), leaving
    // how much the question itself draws each passage.
    bool calibrated = true;
    std::string neutral_question = "What do the documents say?";

    // The published method: last prompt row, all layers and heads, raw mass.
    static SortSignal method() {
        return {.question_rows = false, .all_layers = true, .calibrated = false};
    }
};

// The upper two thirds of a model's layers, [n_layer / 3, n_layer): the default for sorting and
// citations (the first third of SmolLM2's layers attends mostly by recency).
std::vector<int32_t> upper_two_thirds(int32_t n_layer);

struct RagOptions {
    // The assembly mode and its repair settings. Its probe fields are not read: sorting probes
    // what `sort` says, citations what `citation_layers` says.
    AssemblyOptions assembly;
    // Attention sorting: passes of "probe the question block's attention over the passages, sort
    // them by it ascending (most attended next to the question)", then answer. In the blocks
    // modes a re-sort re-rotates the cached passages instead of encoding them again.
    int32_t sort_passes = 0;
    SortSignal sort = {};
    int32_t max_answer_tokens = 48;
    SamplerParams sampler = {};  // greedy by default
    std::string instruction =
        "Answer the question using the documents. Reply with a short answer only, a few words.";
    std::function<bool(std::string_view)> on_text = {};  // streaming; return false to cancel
    bool citations = true;
    // Layers whose attention ranks citations (all heads); empty = upper_two_thirds().
    std::vector<int32_t> citation_layers = {};
    // How a passage's support is scored from each (layer, head, answer row): Mass sums the
    // probability over its tokens; Peak takes its single most attended token (copying heads put
    // sharp peaks on the tokens they copy, recency spreads thin mass over nearby passages).
    enum class CitationScore { Mass, Peak } citation_score = CitationScore::Mass;
    // Divide by the support a content-free continuation ("The answer is") gives each passage:
    // on HotpotQA (12 questions, blocks) this took the gold-in-top-2 rate with gold passages
    // placed first from 0.08 to 0.50 and made it nearly independent of placement.
    bool citation_baseline = true;
};

struct Citation {
    size_t passage = 0;  // index into the caller's passages
    std::string id;
    int64_t document_id = 0, chunk_id = 0;
    std::string source;
    uint64_t source_begin = 0, source_end = 0;
    float share = 0;  // fraction of the answer's attention mass on passages that went here
};

struct RagAnswer {
    std::string text;
    StopReason stop_reason = StopReason::MaxTokens;
    std::vector<size_t> order;  // passages in prompt order (indices into the input), after sorting
    std::vector<size_t> dropped;  // passages left out because the window was full (lowest ranked)
    std::vector<Citation> citations;  // most supported first
    AssembledPrompt assembled;        // the final assembly
    double ttft_ms = 0;               // assembly (+ sorting passes) until the first token's logits
    double decode_ms = 0;
    int32_t n_answer_tokens = 0;
};

// The pieces of the prompt, tokenized separately so passage states can be reused: concatenating
// them gives the prompt of every assembly mode. The chat turns are in the model's own format
// (ChatFormat, prompts.hpp).
struct RagPrompt {
    // System turn holding the instruction + opening of the user turn.
    std::vector<TokenId> prefix;
    // passage_block_text of each passage.
    std::vector<std::vector<TokenId>> passages;
    // "Question: " question + end of the user turn + generation prompt.
    std::vector<TokenId> question;
};
Result<RagPrompt> build_rag_prompt(const Tokenizer& tok, std::string_view instruction,
                                   std::span<const RagPassage> passages, std::string_view question);
// One passage's block text (what is tokenized and cached).
std::string passage_block_text(const RagPassage& p);

// Answers questions; owns a context and a passage cache per instruction. Not thread-safe.
class RagSession {
 public:
    // `store` (optional, borrowed) keeps passage states across questions and processes.
    static Result<RagSession> create(const Model& model, PassageKvStore* store,
                                     int32_t n_threads = 0, int32_t n_ctx = 0);
    RagSession(RagSession&&) noexcept;
    RagSession& operator=(RagSession&&) noexcept;
    ~RagSession();

    // `passages` in retriever order (best first).
    Result<RagAnswer> answer(std::string_view question, std::span<const RagPassage> passages,
                             const RagOptions& options);
    // Encodes the passages' states for `instruction` and stores them, without answering: what
    // `ingest --precompute-kv` does. Passages already stored are skipped (not loaded); returns
    // how many were.
    Result<int32_t> precompute(std::span<const RagPassage> passages, std::string_view instruction);

    Context& context();

 private:
    struct Impl;
    explicit RagSession(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace attnrag::pipelines
