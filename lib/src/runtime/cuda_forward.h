// The forward pass on the CUDA backend: the model's weights dequantized to f32 on the device,
// a device KV cache, and one micro-batch run layer by layer with kernels::cuda ops. Context
// (ContextParams::backend = Cuda) owns one and keeps the host bookkeeping (slots, positions,
// tags, probes) as for the CPU.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "attnrag/context.hpp"
#include "attnrag/kernels/cuda.hpp"
#include "attnrag/model.hpp"
#include "attnrag/result.hpp"

namespace attnrag::detail {

// One micro-batch: tokens written to consecutive cache slots [first_slot, first_slot + n).
struct DeviceBatch {
    std::span<const TokenId> tokens;
    std::span<const double> rope_cs;   // [n][2 * (n_rot / 2)] (cos, sin), as the CPU computes them
    std::span<const BlockTag> tags;    // the batch's own tags [n]
    int32_t first_slot = 0;
    bool masked = false;               // a non-Global slot is in view: evaluate block masks
    int32_t n_layers = 0;              // layers to run
    bool logits_all = false, logits_last = false;
};

class DeviceForward {
   public:
    // Uploads the weights (dequantized on the device) and reserves the KV cache for n_ctx slots
    // and scratch for n_batch rows. Unsupported when the build or machine has no CUDA device,
    // OutOfMemory when the device is too small.
    static Result<std::unique_ptr<DeviceForward>> create(const Model& model, int32_t n_ctx, int32_t n_batch);
    ~DeviceForward();

    // Runs the batch. After layer l's attention, `after_attention(l)` may read the layer through
    // the downloads below (probes). Appends the logits rows asked for to `logits`.
    Status run(const DeviceBatch& batch, const std::function<Status(int32_t layer)>& after_attention,
               std::vector<float>& logits);

    // Host copies of the current batch's queries [n][n_head * head_dim] (after RoPE), attention
    // log-sum-exps [n][n_head], and layer l's cached keys [0, n_keys) [n_keys][n_head_kv * head_dim].
    Status download_queries(int64_t n, float* dst);
    Status download_lse(int64_t n, float* dst);
    Status download_keys(int32_t layer, int64_t n_keys, float* dst);

    // "NAME (compute capability X.Y, N SMs, M MiB)".
    std::string describe() const;
    // Device bytes held for weights and the KV cache.
    size_t weight_bytes() const { return weight_bytes_; }
    size_t kv_bytes() const { return kv_bytes_; }

   private:
    DeviceForward() = default;
    Status device_status(const char* what);

    struct Layer {
        kernels::cuda::Buffer<float> attn_norm, ffn_norm, bq, bk, bv;
        kernels::cuda::Buffer<float> wq, wk, wv, wo, w_gate, w_up, w_down;
    };

    const Model* model_ = nullptr;
    std::unique_ptr<kernels::cuda::Device> dev_;
    std::vector<Layer> layers_;
    kernels::cuda::Buffer<float> token_embd_, output_, output_norm_;
    bool tied_ = false;  // the LM head is token_embd_
    std::vector<kernels::cuda::Buffer<float>> k_cache_, v_cache_;  // [layer] -> [n_ctx][kv_dim]
    kernels::cuda::Buffer<int32_t> tag_ids_;
    kernels::cuda::Buffer<uint8_t> tag_kinds_;
    // Scratch for n_batch rows.
    kernels::cuda::Buffer<float> x_, h_, q_, k_, v_, attn_, gate_, up_, lse_, logits_;
    kernels::cuda::Buffer<double> cs_;
    kernels::cuda::Buffer<int32_t> tokens_;
    int32_t n_ctx_ = 0, n_batch_ = 0;
    size_t weight_bytes_ = 0, kv_bytes_ = 0;
};

}  // namespace attnrag::detail
