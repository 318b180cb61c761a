// A transformer model loaded from GGUF: hyperparameters, weight views into the mapping, tokenizer.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "attnrag/gguf.hpp"
#include "attnrag/kernels/cpu.hpp"
#include "attnrag/kernels/gemm.hpp"
#include "attnrag/model_catalog.hpp"  // default_model_path
#include "attnrag/result.hpp"
#include "attnrag/tokenizer.hpp"

namespace attnrag {

enum class Arch { Llama, Qwen2 };

struct ModelHParams {
    Arch arch = Arch::Llama;
    std::string arch_name;
    int32_t n_vocab = 0;
    int32_t n_ctx_train = 0;
    int32_t n_embd = 0;
    int32_t n_layer = 0;
    int32_t n_head = 0;
    int32_t n_head_kv = 0;
    int32_t head_dim = 0;  // n_embd / n_head
    int32_t n_ff = 0;
    int32_t n_rot = 0;  // rotary dimensions per head
    float rope_base = 10000.0f;
    float rms_eps = 1e-5f;
    kernels::RopeStyle rope_style = kernels::RopeStyle::Interleaved;
    bool tied_embeddings = false;  // no output.weight: the LM head is token_embd
};

struct LayerWeights {
    const float* attn_norm = nullptr;  // [n_embd]
    kernels::WeightView wq, wk, wv,
        wo;                     // wq [n_head*head_dim][n_embd], wk/wv [n_head_kv*head_dim][n_embd]
    const float* bq = nullptr;  // qwen2 only: [n_head*head_dim]
    const float* bk = nullptr;  // [n_head_kv*head_dim]
    const float* bv = nullptr;
    const float* ffn_norm = nullptr;   // [n_embd]
    kernels::WeightView w_gate, w_up;  // [n_ff][n_embd]
    kernels::WeightView w_down;        // [n_embd][n_ff]
};

// Immutable after load; safe to share between threads and contexts. Weights stay quantized in
// the read-only file mapping.
class Model {
 public:
    // Loads and validates a llama/qwen2 GGUF; errors name the file and the tensor or key.
    static Result<Model> load(const std::string& path);

    Model(Model&&) noexcept;
    Model& operator=(Model&&) noexcept;
    ~Model();

    const ModelHParams& hparams() const;
    const Tokenizer& tokenizer() const;
    const GgufFile& file() const;
    const std::string& path() const;
    // Hex digest identifying the weights (file size, metadata and tensor table), for caches.
    const std::string& fingerprint() const;

    const kernels::WeightView& token_embd() const;  // [n_vocab][n_embd]
    const kernels::WeightView& output() const;      // LM head [n_vocab][n_embd]
    const float* output_norm() const;               // [n_embd]
    const LayerWeights& layer(int32_t i) const;

    // Weight bytes read per decoded token (layer matrices, one embedding row, the LM head).
    uint64_t decode_weight_bytes() const;
    // Multiply-adds per token in the weight matrix products (attention excluded), with or
    // without the LM head (a prefill computes logits only for its last token).
    uint64_t matmul_macs_per_token(bool with_lm_head = true) const;

 private:
    struct Impl;
    explicit Model(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace attnrag
