// A tiny random llama/qwen2 model written as GGUF, and a naive double-precision reference forward.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "attnrag/kernels/types.hpp"

namespace attnrag::test {

struct TinyModelSpec {
    std::string arch = "llama";  // "llama" or "qwen2" (q/k/v biases, neox rope)
    int n_embd = 64;
    int n_head = 4;
    int n_head_kv = 2;
    int n_ff = 96;
    int n_layer = 2;
    int n_ctx = 256;
    float rope_base = 10000.0f;
    float rms_eps = 1e-5f;
    bool tied = true;                                  // no output.weight
    kernels::DType matrix_type = kernels::DType::F32;  // layer matrices and output
    kernels::DType embd_type = kernels::DType::F32;
    uint32_t seed = 1;
    // output.weight's type when untied (a Q4_K_M-like mix); empty: matrix_type.
    std::optional<kernels::DType> output_type = std::nullopt;
};

// The weights as floats (after quantization round trip, i.e. exactly what the file holds).
struct TinyWeights {
    struct Layer {
        std::vector<float> attn_norm, wq, wk, wv, wo, bq, bk, bv, ffn_norm, w_gate, w_up, w_down;
    };
    std::vector<float> token_embd, output, output_norm;  // [n_vocab][n_embd]
    std::vector<Layer> layers;
    int n_vocab = 0;
};

// GPT-2's byte-level alphabet (bytes_to_unicode): [256] the vocabulary text of each byte's token;
// printable bytes stand for themselves, the others for U+0100 + k in byte order.
std::vector<std::string> byte_tokens();

// Writes the model to `path` (vocab: 256 byte tokens + <|endoftext|>, <|im_start|>, <|im_end|>).
TinyWeights write_tiny_model(const TinyModelSpec& spec, const std::string& path);

// Quantize floats to `type` and back: F32/F16/BF16/Q8_0/Q4_0/Q4_1 (n a multiple of 32) and
// Q4_K/Q5_K/Q6_K (n a multiple of 256; a simple quantizer with ggml's block packing, decoded by
// the library's scalar reference).
std::vector<uint8_t> quantize_row(kernels::DType type, const std::vector<float>& x);
std::vector<float> dequantize_row(kernels::DType type, const std::vector<uint8_t>& bytes, size_t n);

// Reference forward: logits [n_tokens][n_vocab] for tokens at the given positions, causal.
std::vector<std::vector<double>> reference_logits(const TinyModelSpec& spec, const TinyWeights& w,
                                                  const std::vector<int32_t>& tokens,
                                                  const std::vector<int32_t>& positions);

// Reference forward with attention options: a visibility rule (masks), APE-style merging, and
// the attention probabilities of every layer, head, row and key [layer][head][row][key <= row].
struct ReferenceOptions {
    std::function<bool(size_t q, size_t k)> visible = {};  // empty = every earlier key
    std::function<bool(size_t q, size_t k)> ape_local =
        {};  // keys in the tempered partial attention
    double ape_temperature = 1.0, ape_scale = 1.0;
    std::vector<std::vector<std::vector<std::vector<double>>>>* probs = nullptr;
};
std::vector<std::vector<double>> reference_forward(const TinyModelSpec& spec, const TinyWeights& w,
                                                   const std::vector<int32_t>& tokens,
                                                   const std::vector<int32_t>& positions,
                                                   const ReferenceOptions& options);

}  // namespace attnrag::test
