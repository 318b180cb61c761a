// The forward pass on the CUDA backend (see cuda_forward.h). Mirrors Context::Impl::forward.
#include "runtime/cuda_forward.h"

#include <cmath>
#include <cstring>

namespace attnrag::detail {

namespace cuda = kernels::cuda;

namespace {
size_t sz(int64_t n) { return static_cast<size_t>(n); }
}  // namespace

DeviceForward::~DeviceForward() = default;

Status DeviceForward::device_status(const char* what) {
    if (dev_->sync()) return {};
    const std::string msg = std::string(what) + " on the CUDA device failed: " + dev_->error();
    dev_->reset_error();
    return make_error(msg.find("cudaMalloc") != std::string::npos ? Errc::OutOfMemory : Errc::Internal, msg);
}

Result<std::unique_ptr<DeviceForward>> DeviceForward::create(const Model& model, int32_t n_ctx, int32_t n_batch) {
    std::string why;
    std::unique_ptr<cuda::Device> dev = cuda::Device::create(&why);
    if (!dev) return make_error(Errc::Unsupported, "CUDA backend unavailable: " + why);
    std::unique_ptr<DeviceForward> f(new DeviceForward());
    f->model_ = &model;
    f->dev_ = std::move(dev);
    f->n_ctx_ = n_ctx;
    f->n_batch_ = n_batch;
    cuda::Device& d = *f->dev_;
    const ModelHParams& hp = model.hparams();

    // Raw bytes of the largest matrix, reused to dequantize each one on the device.
    size_t staging_bytes = 0;
    auto matrix_bytes = [](const kernels::WeightView& w) { return sz(w.n_rows) * w.row_bytes; };
    staging_bytes = std::max(staging_bytes, matrix_bytes(model.token_embd()));
    staging_bytes = std::max(staging_bytes, matrix_bytes(model.output()));
    for (int32_t l = 0; l < hp.n_layer; ++l) {
        const LayerWeights& L = model.layer(l);
        for (const kernels::WeightView* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) {
            staging_bytes = std::max(staging_bytes, matrix_bytes(*w));
        }
    }
    cuda::Buffer<uint8_t> staging(d, staging_bytes);
    if (!staging) return make_error(Errc::OutOfMemory, "CUDA backend: " + d.error());

    auto matrix = [&](const kernels::WeightView& w, cuda::Buffer<float>& out) -> Status {
        if (w.row_bytes != kernels::row_bytes(w.type, w.n_cols)) {
            return make_error(Errc::Unsupported, "CUDA backend: weight rows with padding are not supported");
        }
        out = cuda::Buffer<float>(d, sz(w.n_rows * w.n_cols));
        if (!out) return make_error(Errc::OutOfMemory, "CUDA backend: " + d.error());
        d.upload(staging.get(), w.data, matrix_bytes(w));
        d.dequant(w.type, staging.get(), out.get(), w.n_rows * w.n_cols);
        f->weight_bytes_ += sz(w.n_rows * w.n_cols) * sizeof(float);
        // Wait before the staging buffer is written again (uploads are asynchronous).
        return f->device_status("uploading weights");
    };
    auto vector = [&](const float* host, int64_t n, cuda::Buffer<float>& out) -> Status {
        if (!host) return {};
        out = cuda::Buffer<float>(d, sz(n));
        if (!out) return make_error(Errc::OutOfMemory, "CUDA backend: " + d.error());
        d.upload(out.get(), host, sz(n) * sizeof(float));
        f->weight_bytes_ += sz(n) * sizeof(float);
        return {};
    };

    const int64_t q_dim = int64_t{hp.n_head} * hp.head_dim;
    const int64_t kv_dim = int64_t{hp.n_head_kv} * hp.head_dim;
    ATTNRAG_TRY(matrix(model.token_embd(), f->token_embd_));
    f->tied_ = model.output().data == model.token_embd().data;
    if (!f->tied_) ATTNRAG_TRY(matrix(model.output(), f->output_));
    ATTNRAG_TRY(vector(model.output_norm(), hp.n_embd, f->output_norm_));
    f->layers_.resize(sz(hp.n_layer));
    for (int32_t l = 0; l < hp.n_layer; ++l) {
        const LayerWeights& L = model.layer(l);
        Layer& G = f->layers_[sz(l)];
        ATTNRAG_TRY(vector(L.attn_norm, hp.n_embd, G.attn_norm));
        ATTNRAG_TRY(vector(L.ffn_norm, hp.n_embd, G.ffn_norm));
        ATTNRAG_TRY(vector(L.bq, q_dim, G.bq));
        ATTNRAG_TRY(vector(L.bk, kv_dim, G.bk));
        ATTNRAG_TRY(vector(L.bv, kv_dim, G.bv));
        ATTNRAG_TRY(matrix(L.wq, G.wq));
        ATTNRAG_TRY(matrix(L.wk, G.wk));
        ATTNRAG_TRY(matrix(L.wv, G.wv));
        ATTNRAG_TRY(matrix(L.wo, G.wo));
        ATTNRAG_TRY(matrix(L.w_gate, G.w_gate));
        ATTNRAG_TRY(matrix(L.w_up, G.w_up));
        ATTNRAG_TRY(matrix(L.w_down, G.w_down));
    }

    bool ok = true;
    auto need = [&](auto& buf, auto n) {
        using T = std::remove_pointer_t<decltype(buf.get())>;
        buf = cuda::Buffer<T>(d, sz(static_cast<int64_t>(n)));
        ok = ok && static_cast<bool>(buf);
    };
    f->k_cache_.resize(sz(hp.n_layer));
    f->v_cache_.resize(sz(hp.n_layer));
    for (int32_t l = 0; l < hp.n_layer; ++l) {
        need(f->k_cache_[sz(l)], int64_t{n_ctx} * kv_dim);
        need(f->v_cache_[sz(l)], int64_t{n_ctx} * kv_dim);
    }
    f->kv_bytes_ = sz(hp.n_layer) * 2 * sz(n_ctx) * sz(kv_dim) * sizeof(float);
    need(f->tag_ids_, n_ctx);
    need(f->tag_kinds_, n_ctx);
    const int64_t nb = n_batch;
    need(f->x_, nb * hp.n_embd);
    need(f->h_, nb * hp.n_embd);
    need(f->q_, nb * q_dim);
    need(f->attn_, nb * q_dim);
    need(f->k_, nb * kv_dim);
    need(f->v_, nb * kv_dim);
    need(f->gate_, nb * hp.n_ff);
    need(f->up_, nb * hp.n_ff);
    need(f->lse_, nb * hp.n_head);
    need(f->logits_, nb * hp.n_vocab);
    need(f->cs_, nb * 2 * (hp.n_rot / 2));
    need(f->tokens_, nb);
    if (!ok) {
        const std::string msg = d.error();
        d.reset_error();
        return make_error(Errc::OutOfMemory, "CUDA backend: KV cache for n_ctx = " + std::to_string(n_ctx) +
                                                 " and scratch for n_batch = " + std::to_string(n_batch) +
                                                 " do not fit: " + msg);
    }
    ATTNRAG_TRY(f->device_status("reserving the KV cache"));
    return f;
}

Status DeviceForward::run(const DeviceBatch& b, const std::function<Status(int32_t layer)>& after_attention,
                          std::vector<float>& logits) {
    const ModelHParams& hp = model_->hparams();
    cuda::Device& d = *dev_;
    const int64_t n = static_cast<int64_t>(b.tokens.size());
    if (n <= 0 || n > n_batch_ || b.first_slot + n > n_ctx_) {
        return make_error(Errc::Internal, "DeviceForward::run: batch outside the reserved sizes");
    }
    const int64_t dm = hp.n_embd, hd = hp.head_dim, ff = hp.n_ff;
    const int64_t q_dim = int64_t{hp.n_head} * hd;
    const int64_t kv_dim = int64_t{hp.n_head_kv} * hd;
    const int64_t slot0 = b.first_slot;

    // Tags of the batch's slots (kept for later batches' masks) and its inputs.
    std::vector<int32_t> ids(sz(n));
    std::vector<uint8_t> kinds(sz(n));
    for (int64_t i = 0; i < n; ++i) {
        ids[sz(i)] = b.tags[sz(i)].id;
        kinds[sz(i)] = static_cast<uint8_t>(b.tags[sz(i)].kind);
    }
    d.upload(tag_ids_.get() + slot0, ids.data(), sz(n) * sizeof(int32_t));
    d.upload(tag_kinds_.get() + slot0, kinds.data(), sz(n));
    d.upload(tokens_.get(), b.tokens.data(), sz(n) * sizeof(int32_t));
    d.upload(cs_.get(), b.rope_cs.data(), b.rope_cs.size() * sizeof(double));

    float* x = x_.get();
    float* h = h_.get();
    d.gather_rows(token_embd_.get(), dm, tokens_.get(), n, x);
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    for (int32_t il = 0; il < b.n_layers; ++il) {
        const Layer& L = layers_[sz(il)];
        d.rmsnorm(x, L.attn_norm.get(), hp.rms_eps, h, n, dm);
        d.matmul(h, n, dm, L.wq.get(), q_dim, q_.get(), q_dim);
        d.matmul(h, n, dm, L.wk.get(), kv_dim, k_.get(), kv_dim);
        d.matmul(h, n, dm, L.wv.get(), kv_dim, v_.get(), kv_dim);
        if (L.bq) {
            d.add_rows(q_.get(), L.bq.get(), n, q_dim);
            d.add_rows(k_.get(), L.bk.get(), n, kv_dim);
            d.add_rows(v_.get(), L.bv.get(), n, kv_dim);
        }
        d.rope(q_.get(), n, hp.n_head, hd, hp.n_rot, cs_.get(), hp.rope_style);
        d.rope(k_.get(), n, hp.n_head_kv, hd, hp.n_rot, cs_.get(), hp.rope_style);
        float* kc = k_cache_[sz(il)].get();
        float* vc = v_cache_[sz(il)].get();
        d.copy(kc + slot0 * kv_dim, k_.get(), sz(n * kv_dim) * sizeof(float));
        d.copy(vc + slot0 * kv_dim, v_.get(), sz(n * kv_dim) * sizeof(float));

        cuda::AttentionArgs a;
        a.q = q_.get();
        a.k = kc;
        a.v = vc;
        a.n_rows = n;
        a.first_slot = slot0;
        a.n_head = hp.n_head;
        a.n_head_kv = hp.n_head_kv;
        a.head_dim = hd;
        a.scale = scale;
        if (b.masked) {
            a.tag_ids = tag_ids_.get();
            a.tag_kinds = tag_kinds_.get();
        }
        a.out = attn_.get();
        a.lse = lse_.get();
        d.attention(a);
        if (after_attention) {
            ATTNRAG_TRY(device_status("attention"));
            ATTNRAG_TRY(after_attention(il));
        }

        d.matmul(attn_.get(), n, q_dim, L.wo.get(), dm, h, dm);
        d.add(x, h, n * dm);
        d.rmsnorm(x, L.ffn_norm.get(), hp.rms_eps, h, n, dm);
        d.matmul(h, n, dm, L.w_gate.get(), ff, gate_.get(), ff);
        d.matmul(h, n, dm, L.w_up.get(), ff, up_.get(), ff);
        d.silu_mul(gate_.get(), up_.get(), n * ff);
        d.matmul(gate_.get(), n, ff, L.w_down.get(), dm, h, dm);
        d.add(x, h, n * dm);
    }

    if (b.logits_all || b.logits_last) {
        const int64_t first = b.logits_all ? 0 : n - 1;
        const int64_t n_out = n - first;
        const int64_t vocab = hp.n_vocab;
        d.rmsnorm(x + first * dm, output_norm_.get(), hp.rms_eps, h, n_out, dm);
        d.matmul(h, n_out, dm, tied_ ? token_embd_.get() : output_.get(), vocab, logits_.get(), vocab);
        const size_t base = logits.size();
        logits.resize(base + sz(n_out * vocab));
        d.download(logits.data() + base, logits_.get(), sz(n_out * vocab) * sizeof(float));
    }
    return device_status("forward pass");
}

Status DeviceForward::download_queries(int64_t n, float* dst) {
    const ModelHParams& hp = model_->hparams();
    dev_->download(dst, q_.get(), sz(n) * sz(hp.n_head) * sz(hp.head_dim) * sizeof(float));
    return device_status("reading queries");
}

Status DeviceForward::download_lse(int64_t n, float* dst) {
    dev_->download(dst, lse_.get(), sz(n) * sz(model_->hparams().n_head) * sizeof(float));
    return device_status("reading attention log-sum-exps");
}

Status DeviceForward::download_keys(int32_t layer, int64_t n_keys, float* dst) {
    const ModelHParams& hp = model_->hparams();
    dev_->download(dst, k_cache_[sz(layer)].get(), sz(n_keys) * sz(hp.n_head_kv) * sz(hp.head_dim) * sizeof(float));
    return device_status("reading cached keys");
}

std::string DeviceForward::describe() const {
    const cuda::DeviceInfo i = dev_->info();
    return i.name + " (compute capability " + std::to_string(i.cc_major) + "." + std::to_string(i.cc_minor) + ", " +
           std::to_string(i.sm_count) + " SMs, " + std::to_string(i.total_bytes >> 20) + " MiB)";
}

}  // namespace attnrag::detail
