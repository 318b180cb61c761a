// InfiniRetri (../shared/reference/algorithms.md §1): answer a question about a document of any
// length by reading it chunk by chunk and keeping, in a small token cache, the sentences that the
// last layer's attention from the question points at. Also the streaming sentence source it reads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attnrag/generate.hpp"
#include "attnrag/model.hpp"
#include "attnrag/pipelines/retrieval_heads.hpp"

namespace attnrag::pipelines {

// ---- Sentence source --------------------------------------------------------------------------

// A sentence of the source with its exact place: text == source bytes [begin, end).
struct SourceSentence {
    uint64_t begin = 0, end = 0;  // byte range in the source (file offsets, BOM included)
    std::string text = {};
    bool paragraph_start = false;  // a blank line (or the start of the source) precedes it
};

struct SentenceSourceOptions {
    size_t block_bytes = size_t{256} << 10;  // read granularity (values < 1 act as 1)
    // A run of text this long without a sentence break is cut at its last white space (else at a
    // character boundary): bounds the buffer on text without punctuation or line breaks.
    size_t max_sentence_bytes = size_t{64} << 10;
    // Hard-wrapped text (a line break inside a paragraph) is read as if the lone line break were
    // a space, so it does not end a sentence (ICU/UAX #29 ends a sentence at every line break).
    // Blank lines still separate paragraphs. The reported text keeps the original bytes.
    bool unwrap_lines = true;
    // Glue rules of the reference splitter (algorithms.md §1(a) step 1): a fragment made only of
    // ASCII punctuation joins the sentence before it, and so does a fragment of at most this many
    // characters after a sentence ending in '.' (abbreviations: "Mr. Smith", "e.g. this").
    size_t short_fragment_chars = 10;
    std::string locale = "en";  // ICU locale of the sentence rules
};

// Yields the sentences of a file (read in blocks, never whole) or of a string, in order, with
// their byte ranges. UTF-8 is validated as it is read; the first invalid sequence is an
// InvalidArgument error "NAME: invalid UTF-8 at byte offset N" (N counts from the start of the
// source). A UTF-8 byte order mark at the start is skipped. Memory: one block plus the current
// unfinished sentence (at most max_sentence_bytes). Move-only; single-threaded.
class SentenceSource {
 public:
    // Errors: NotFound (no such file), Io (a directory or a read failure).
    static Result<SentenceSource> open(const std::filesystem::path& path,
                                       const SentenceSourceOptions& options = {});
    // A source over text in memory (read through the same block-wise path); `name` is used in
    // error messages.
    static SentenceSource from_text(std::string text, const SentenceSourceOptions& options = {},
                                    std::string name = "text");

    SentenceSource(SentenceSource&&) noexcept;
    SentenceSource& operator=(SentenceSource&&) noexcept;
    ~SentenceSource();

    // The next sentence, or nullopt after the last one. After an error every call repeats it.
    Result<std::optional<SourceSentence>> next();

    uint64_t bytes_read() const;  // bytes read from the source so far
    uint64_t size_bytes() const;  // the source's size in bytes
    const std::string& name() const;

 private:
    struct Impl;
    explicit SentenceSource(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

// The text files a haystack or corpus path names: the file itself, or every .txt file under a
// folder (recursively, sorted by path). NotFound when there are none, Io when a folder cannot be
// listed.
Result<std::vector<std::filesystem::path>> text_files(const std::filesystem::path& path);

// ---- InfiniRetri ------------------------------------------------------------------------------

struct InfiniRetriProgress {
    int64_t n_tokens_read = 0;   // document tokens read so far
    uint64_t n_bytes_read = 0;   // source bytes of the sentences read into chunks so far
    uint64_t n_bytes_total = 0;  // the source's size
    int32_t n_chunks = 0;        // chunks processed so far
    int32_t n_cache_tokens = 0;  // tokens in the sentence cache after the last chunk
    double tokens_per_s = 0;     // document tokens read per second of wall time
};

struct InfiniRetriCheckpoint;

struct InfiniRetriOptions {
    int32_t chunk_tokens =
        1024;             // document tokens per chunk (whole sentences; excludes prompt and cache)
    int32_t top_k = 300;  // tokens whose sentences are kept after each chunk
    int32_t phrase_tokens = 8;  // width of the box filter over key positions
    // A sentence enters the cache by holding one of a pass's top_k tokens. With memory m > 0, a
    // sentence already cached competes with the larger of its score in this pass and m times
    // the score it competed with in the pass before, and stays while that reaches the pass's
    // k-th best token score (evictions under the cap rank by it too). 0 = the reference: kept
    // sentences compete again like new ones, and one pass that looks elsewhere drops them. The
    // question's attention on a kept needle swings up to tenfold from pass to pass as chunks come
    // and go: at 128K tokens the reference dropped a needle 29 chunks after reading it (its score
    // fell just below the bar for one pass), memory 0.5 kept it to the end; the cache holds ~1.6x
    // the tokens and a 128K read takes ~1.45x as long (docs/niah/README.md, "Score memory").
    // In [0, 1).
    float score_memory = 0.5f;
    // Hold, outside the prompts, up to this many sentences that left the cache (or never entered
    // it) and were the most relevant to the question while read; the final ranking and the answer
    // read them beside the cache (KeptSentence::reserved). A safety net for a needle that the
    // question's raw attention stops favouring: the reading itself is the one without a reserve.
    // Relevance here is the calibrated score of answer_context_tokens taken within each chunk pass
    // (no extra pass): the question rows' attention over that of the rows before the question's
    // words ("Question: "), which cannot depend on it; a sentence keeps its best
    // (KeptSentence::peak_relevance). The reserve holds at most the tokens the window has left
    // beside a full cache and the answer. Session 18 kept such sentences in the cache instead,
    // where at 128K they held distractors sharing the question's words in every later prompt and
    // lost two needles (docs/niah/README.md, "Relevance reserve"). 0 = off. Default 3 since session
    // 21: with sentence_relevance BestTimesRootSum it found every needle of the 4K-128K grids read
    // end to end (docs/niah/README.md).
    int32_t relevance_reserve = 3;
    // Most tokens the sentence cache may hold; when the kept sentences exceed it, the highest
    // scoring ones are kept. Lowered automatically so that instruction + cache + chunk + question
    // + answer fit the context window.
    int32_t cache_tokens = 4096;
    // Layers whose attention is read (summed). Empty = the middle layer (n_layer / 2). The
    // reference reads the last layer; on SmolLM2-135M that finds 8 of 25 needles at 4K tokens
    // (5 needles x 5 depths), the middle layer (15) 21 of 25, layers 12..29 summed 20, layer 20
    // 17, layer 8 10 (full prompt: 13). Pass {n_layer - 1} for the reference's choice. Reading an
    // earlier layer is also cheaper: the chunk passes stop after it.
    std::vector<int32_t> layers = {};
    std::vector<int32_t> heads = {};  // query heads (summed); empty = all
    // Exact (layer, head) pairs to read, summed; non-empty overrides `layers` and `heads`. Meant
    // for the top retrieval heads of the model (retrieval_heads.hpp: top_retrieval_heads). Each
    // pair must be in range and listed once. The chunk passes stop after the deepest layer named.
    // On SmolLM2-135M the top 8 or 16 retrieval heads find 19 of the 25 needles above (top 4:
    // 16), fewer than layer 15 (docs/niah/README.md, "Retrieval heads").
    std::vector<LayerHead> layer_heads = {};
    bool question_weight = true;  // weight query rows by w_i^2 (their mass on the question)
    std::string instruction = "Read the text and answer the question very concisely.";
    // Most tokens of kept sentences the final answer reads: the most relevant ones that fit, in
    // document order. 0 = the whole cache (the reference). Relevance (KeptSentence::relevance,
    // computed whenever this is > 0, also when the whole cache fits) takes two extra passes over
    // the final cache: one with the question, one with
    // `neutral_question`; a sentence's relevance is its best smoothed token score for the question
    // divided by the score that token gets from the neutral question (plus the mean). That
    // discounts attention sinks (short sentences, essay openings) that draw the question rows
    // whatever they ask: by raw score the needle ranks 1st-8th among ~30 kept sentences at 4K
    // tokens, by relevance 1st in all 25 cells of docs/niah/README.md. A small model answers far
    // better from a short context: 24/25 needles found at 4K with 128 or 256, 21/25 with the
    // whole cache (~900 tokens). Over the 220 cells of the 4K-128K needle grids, 64 tokens found
    // 206, 128 found 200 and 256 found 196 (docs/niah/README.md, "Answer context").
    int32_t answer_context_tokens = 64;
    // More answer contexts (token budgets as above, 0 = the whole cache) tried after
    // answer_context_tokens: one answer is generated from each distinct context and the one
    // best grounded in the top-ranked kept sentence wins (InfiniRetriAnswer::candidates): the
    // most inverse-document-frequency weight of that sentence's words that the question does not
    // already contain; ties go to the earlier context; an answer only a minority of the contexts
    // give loses to one a majority agree on when that one is grounded at all (choose_answer).
    // A 135M model's answer changes with the
    // context around the needle in ways no single budget avoids; choosing among 64/128/256
    // found 218 of the 220 cells above (both misses wrong in all three). 16 tokens (about the
    // top sentence alone) joined them in session 17: alone it found every needle its reading
    // kept at 4K, 16K and 64K, and it answers the 64K cell the other three miss; it is last, so
    // it wins only when strictly better grounded (docs/niah/README.md, "A 16-token context").
    // Used only when answer_context_tokens > 0 (the ranking picks the top sentence); empty = one
    // answer. With more than one candidate, on_text receives the chosen answer whole once all
    // are generated.
    std::vector<int32_t> answer_alternatives = {128, 256, 16};
    // How the final ranking turns calibrated token scores into a sentence's relevance (only with
    // answer_context_tokens > 0). BestToken: its best token's score, with the question rows
    // weighted as in the reading (the first chunk's weights). BestTimesRootSum (the default since
    // session 21): best * sqrt(sum over its tokens of max(0, score - 1)) + 0.001 * best, with the
    // question rows weighted by their own mass on the question in the ranking pass: a sentence
    // that matches the question over many tokens then beats one that shares a single name with
    // it, without the plain sum's bias for long sentences. With the relevance reserve it ranks
    // the needle first where BestToken ranks a reserved needle third (128K grid, docs/niah).
    enum class SentenceRelevance { BestToken, BestTimesRootSum };
    SentenceRelevance sentence_relevance = SentenceRelevance::BestTimesRootSum;
    std::string neutral_question = "What does the text say?";
    int32_t max_answer_tokens = 64;
    // answer_full only: a document longer than the window is cut to the whole sentences from its
    // start that fit (InfiniRetriAnswer::truncated), instead of an OutOfRange error.
    bool truncate_full = false;
    SamplerParams sampler = {};                          // greedy by default
    std::function<bool(std::string_view)> on_text = {};  // streamed answer text; false cancels
    // Called after each chunk; false cancels (Errc::Cancelled).
    std::function<bool(const InfiniRetriProgress&)> on_progress = {};
    // Called after each chunk but the source's last with the reading state at that point.
    std::function<void(const InfiniRetriCheckpoint&)> on_checkpoint = {};
    // Start from a checkpoint instead of the first chunk. The source is still read from its
    // start, but the sentences up to the checkpoint are only tokenized and compared with it (their
    // byte ranges and token ids, and the sentence that opened the next chunk): the model does not
    // read them again. The result equals reading the whole source. Errors (InvalidArgument):
    // another question, other reading options (InfiniRetriCheckpoint::settings_digest; the answer
    // settings may differ), or a source that differs from the checkpointed one before the
    // checkpoint. Meant for sources that share a beginning, such as one haystack with a needle
    // at different depths.
    const InfiniRetriCheckpoint* resume = nullptr;
};

// A sentence of the final cache. ids are its tokens as they appear in the prompt (its text with
// one leading separator: " ", or "\n\n" at a paragraph start), tokenized once when read.
struct KeptSentence {
    uint64_t begin = 0, end = 0;  // byte range in the source
    std::string text = {};        // source bytes [begin, end)
    std::vector<TokenId> ids = {};
    // Its best smoothed token score in the chunk pass that last kept it (with
    // InfiniRetriOptions::score_memory, the remembered score it competed with).
    float score = 0;
    // Calibrated relevance (see InfiniRetriOptions::answer_context_tokens); 0 when not computed.
    float relevance = 0;
    // With InfiniRetriOptions::relevance_reserve: its best in-pass relevance while read; else 0.
    float peak_relevance = 0;
    // Taken from the reserve (InfiniRetriOptions::relevance_reserve), not from the last cache.
    bool reserved = false;
};

// The reading state after a chunk (InfiniRetriOptions::on_checkpoint, ::resume).
struct InfiniRetriCheckpoint {
    std::string question = {};
    uint64_t offset = 0;     // source bytes read into chunks: the end of the chunk's last sentence
    uint64_t next_end = 0;   // end of the sentence that did not fit the chunk (opens the next one)
    int32_t chunk_fill = 0;  // tokens of the chunk that ended at `offset`
    uint64_t digest = 0;     // of the byte ranges and token ids of every sentence up to `offset`
    // Of the reading options (chunk, top-k, filter, score memory, cache cap, instruction, the
    // layers and heads read, question weighting): a resume with other ones is refused.
    uint64_t settings_digest = 0;
    int64_t n_tokens_read = 0;
    int32_t n_chunks = 0;
    int32_t max_prompt_tokens = 0;
    std::vector<float> question_weights = {};  // the frozen w_i^2 of the question rows
    std::vector<KeptSentence> cache = {};      // the kept sentences, in document order
    std::vector<KeptSentence> reserve =
        {};  // InfiniRetriOptions::relevance_reserve, in document order
};

// One answer generated from one answer context (InfiniRetriOptions::answer_alternatives).
struct AnswerCandidate {
    int32_t context_budget = 0;    // the budget asked for (0 = the whole cache)
    int32_t n_context_tokens = 0;  // tokens of kept sentences it read
    std::string text = {};
    float grounding = 0;  // weight of the top sentence's new words the answer contains
};

struct InfiniRetriAnswer {
    std::string text = {};
    StopReason stop_reason = StopReason::MaxTokens;
    std::vector<KeptSentence> kept =
        {};  // the last cache (and the reserve) the answer was generated from, in document order
    int64_t n_tokens_read = 0;     // document tokens (per-sentence tokenization)
    int64_t n_tokens_resumed = 0;  // of those, taken from InfiniRetriOptions::resume (not re-read)
    int64_t n_sentences = 0;
    int32_t n_chunks = 0;
    int32_t n_cache_tokens = 0;  // tokens in `kept`
    int32_t n_context_tokens =
        0;                    // tokens of `kept` the answer read (options.answer_context_tokens)
    int32_t cache_limit = 0;  // the cache cap in effect
    int32_t max_prompt_tokens = 0;  // longest chunk-pass prompt
    int32_t n_answer_tokens = 0;
    // Every answer generated, primary context first, when there was more than one context to
    // choose from (InfiniRetriOptions::answer_alternatives); `chosen` indexes the one in `text`.
    std::vector<AnswerCandidate> candidates = {};
    int32_t chosen = 0;
    bool truncated = false;  // answer_full with truncate_full: the document was cut to the window
    // The ranking that computed KeptSentence::relevance (when computed): answer_again ranks again
    // when asked for another one.
    InfiniRetriOptions::SentenceRelevance relevance_by =
        InfiniRetriOptions::SentenceRelevance::BestToken;
    double read_ms = 0;     // reading, tokenizing and all chunk passes
    double prefill_ms = 0;  // final answer prompt (summed over the candidates)
    double decode_ms = 0;
    double total_ms = 0;
};

// How well `answer` is grounded in the most relevant of `kept` (the first with the highest
// KeptSentence::relevance): the summed weight of that sentence's words that the question does not
// contain and the answer does, each word weighted by its inverse document frequency over the kept
// sentences, log((n + 1) / (df + 0.5)), so words found in most of them ("the", "is") count little.
// Words are runs of ASCII letters and digits (lower-cased) and non-ASCII bytes. 0 when `kept` is
// empty or nothing of the sentence's new words is in the answer.
float answer_grounding(std::span<const KeptSentence> kept, std::string_view question,
                       std::string_view answer);

// Whether two answers say much the same: their word sets (as answer_grounding's words) share at
// least half of their union. Two empty answers agree.
bool answers_agree(std::string_view a, std::string_view b);

// Which of `candidates` (grounding computed) to answer with: the best grounded, the first of
// equals, unless that answer is in a minority (agrees with at most half of the candidates,
// itself included) while a majority agrees with an answer that is grounded at all (grounding > 0):
// then the best grounded of those. When the ranking puts a distractor first, the smallest
// context holds only the distractor and its answer is best grounded in it, while the larger
// contexts also hold the needle and agree on its answer (docs/niah/README.md, "Agreeing
// answers"). A majority that is not grounded at all (a non-answer such as "The answer is:")
// does not outvote. 0 when `candidates` is empty.
size_t choose_answer(std::span<const AnswerCandidate> candidates);

// The prompt pieces, one user turn in the model's chat format (ChatFormat, prompts.hpp):
// prefix + context + question.
struct InfiniRetriPrompt {
    // [default system turn] + opening of the user turn + instruction "\n\n", up to the context
    std::vector<TokenId> prefix;
    // "\n\nQuestion: " question "\n\nAnswer:" + end of the user turn + generation prompt
    std::vector<TokenId> question;
    int32_t question_offset = 0;  // index in `question` of the first token of "Question:"
    int32_t content_offset = 0;   // index in `question` of the question's first token
};
Result<InfiniRetriPrompt> build_infiniretri_prompt(const Tokenizer& tok,
                                                   std::string_view instruction,
                                                   std::string_view question);

// Owns a context (one window). Not thread-safe; the Model must outlive it.
class InfiniRetri {
 public:
    // backend: where the forward passes run (Backend::Cuda: Unsupported when there is no device).
    static Result<InfiniRetri> create(const Model& model, int32_t n_threads = 0, int32_t n_ctx = 0,
                                      Backend backend = Backend::Cpu);
    InfiniRetri(InfiniRetri&&) noexcept;
    InfiniRetri& operator=(InfiniRetri&&) noexcept;
    ~InfiniRetri();

    // Reads `source` to its end chunk by chunk, then answers from the kept sentences. Errors:
    // bad options or an empty question/document (InvalidArgument), source errors, Cancelled.
    Result<InfiniRetriAnswer> answer(SentenceSource& source, std::string_view question,
                                     const InfiniRetriOptions& options = {});

    // Answers `question` again from the sentences an earlier answer() kept (`read.kept`), without
    // reading the document again: with options' instruction, answer_context_tokens,
    // answer_alternatives, max_answer_tokens, sampler and on_text (the reading settings are not
    // used). The question
    // should be the one `read` was read for: the kept sentences are those its attention chose. A
    // smaller answer context picks from the relevance ranking answer() computed, so `read` must
    // come from a reading with answer_context_tokens > 0: otherwise InvalidArgument. With
    // sentence_relevance BestTimesRootSum, or a ranking other than read.relevance_by, the kept
    // sentences are ranked again (two passes; BestToken then weights the question rows by this
    // pass's own mass on the question: the reading's first-chunk weights are not kept).
    // The reading counters are copied from `read`; the answer's are new.
    Result<InfiniRetriAnswer> answer_again(const InfiniRetriAnswer& read, std::string_view question,
                                           const InfiniRetriOptions& options = {});

    // Baseline: the whole document in one prompt (same template and tokenization), greedy
    // answer. OutOfRange when the prompt and answer do not fit the window, unless
    // options.truncate_full (found while reading:
    // the source is read only up to the window's size). `kept` is left empty.
    Result<InfiniRetriAnswer> answer_full(SentenceSource& source, std::string_view question,
                                          const InfiniRetriOptions& options = {});

    Context& context();

 private:
    struct Impl;
    explicit InfiniRetri(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace attnrag::pipelines
