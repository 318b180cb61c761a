// Sentence embedder: a BERT encoder (all-MiniLM-L6-v2 and kin) on attnrag's CPU kernels.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attnrag/result.hpp"
#include "attnrag/wordpiece.hpp"

namespace attnrag::index {

struct EmbedderParams {
    int32_t n_threads = 0;  // 0: one per hardware thread
    // Tokens per text including [CLS] and [SEP]; longer texts are cut (as sentence-transformers'
    // max_seq_length does). Capped at the model's max_position_embeddings. 0: the model's own
    // max_seq_length (sentence_bert_config.json).
    int32_t max_tokens = 256;
    int32_t batch_size = 32;  // texts per forward pass in embed_batch (also capped by tokens)
};

enum class Pooling { Mean, Cls };

// A BERT sentence embedder loaded from a sentence-transformers directory: config.json,
// 1_Pooling/config.json (mean or cls), sentence_bert_config.json (max_seq_length),
// tokenizer_config.json (optional: do_lower_case, strip_accents, tokenize_chinese_chars),
// vocab.txt and model.safetensors (F32, F16 or BF16; names with or without a "bert." prefix).
// Forward pass: word + position + token type 0 embeddings, LayerNorm; per layer self-attention
// (each text attends to its own tokens only, so a batch needs no padding), output projection,
// residual, LayerNorm, exact-erf GELU feed-forward, residual, LayerNorm; then pooling and L2
// normalisation. Matrix products go to OpenBLAS sgemm, split over the instance's threads.
//
// Thread-safety: the model (weights, tokenizer) is immutable and shared by clone()s; an
// instance owns its thread pool and scratch buffers, so embed()/embed_batch() must not run
// concurrently on one instance: use one instance per thread (clone() is cheap) or a mutex.
// count_tokens() and the accessors are safe from any thread.
class Embedder {
   public:
    // Errors name the file and what is wrong in it: NotFound for a missing directory or file,
    // Corrupt for bad JSON, missing keys or tensor shapes that contradict config.json,
    // Unsupported for another architecture, activation or pooling mode.
    static Result<Embedder> load(const std::filesystem::path& model_dir,
                                 const EmbedderParams& params = {});

    Embedder(Embedder&&) noexcept;
    Embedder& operator=(Embedder&&) noexcept;
    ~Embedder();

    // Another instance over the same weights (nothing copied), with its own threads and scratch.
    Embedder clone() const;
    // As clone() with another thread count (0: one per hardware thread).
    Embedder clone(int32_t n_threads) const;

    int32_t dim() const;              // 384 for all-MiniLM-L6-v2
    const std::string& name() const;  // the directory's name, e.g. "all-MiniLM-L6-v2"
    int32_t max_tokens() const;       // tokens per text, [CLS] and [SEP] included
    Pooling pooling() const;
    int32_t n_threads() const;
    const WordPiece& tokenizer() const;

    // WordPiece tokens of text without [CLS]/[SEP] (and without truncation).
    uint32_t count_tokens(std::string_view text) const;

    // The L2-normalised embedding ([dim()] floats). Invalid UTF-8: InvalidArgument.
    Result<std::vector<float>> embed(std::string_view text);
    // The embeddings of many texts, in order, batched; each equals embed() of the text alone
    // (to float rounding, ~1e-6). An invalid text fails the call, naming its index.
    Result<std::vector<std::vector<float>>> embed_batch(std::span<const std::string> texts);
    Result<std::vector<std::vector<float>>> embed_batch(std::span<const std::string_view> texts);

   private:
    struct Model;
    struct Scratch;
    Embedder(std::shared_ptr<const Model> model, int32_t n_threads);
    std::shared_ptr<const Model> model_;
    std::unique_ptr<Scratch> scratch_;  // thread pool and buffers
};

// $ATTNRAG_EMBEDDER when set, else "models/all-MiniLM-L6-v2" (relative to the working
// directory; scripts/setup.sh puts the model there).
std::string default_embedder_dir();

}  // namespace attnrag::index
