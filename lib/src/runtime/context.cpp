// Forward pass of llama/qwen2 decoders over a per-context f32 KV cache (batched and single-token).
#include "attnrag/context.hpp"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "attnrag/kernels/cpu.hpp"
#include "attnrag/kernels/gemm.hpp"
#include "runtime/kv_buffer.h"

namespace attnrag {

namespace {
constexpr int64_t kAttnTile = 64;  // query rows per attention task
}

struct Context::Impl {
    const Model* model = nullptr;
    ContextParams params;
    kernels::ThreadPool pool;
    kernels::GemmScratch gemm;

    // KV cache, per layer: [n_ctx][n_head_kv * head_dim] f32, keys stored after RoPE.
    std::vector<detail::LazyBuffer> k_cache, v_cache;
    std::vector<int32_t> positions;  // [n_past] position id of each cache slot
    int32_t n_past = 0;
    int32_t next_pos = 0;  // max position in the cache + 1

    // Scratch for one micro-batch of n tokens.
    std::vector<float> x, h, q, k, v, attn, gate, up;  // [n][dim]
    std::vector<std::vector<float>> scores;           // per thread: [kAttnTile][n_ctx]
    std::vector<float> logits;                         // [n_logit_rows][n_vocab]
    int32_t n_logit_rows = 0;

    Impl(const Model& m, const ContextParams& p) : model(&m), params(p), pool(p.n_threads) {}

    void forward(std::span<const TokenId> tokens, std::span<const int32_t> pos, bool want_logits_all,
                 bool want_logits_last);
    void attention(int32_t layer, int64_t n, int64_t kv0);
};

void Context::Impl::attention(int32_t layer, int64_t n, int64_t kv0) {
    const ModelHParams& hp = model->hparams();
    const int64_t hd = hp.head_dim;
    const int64_t q_dim = int64_t{hp.n_head} * hd;
    const int64_t kv_dim = int64_t{hp.n_head_kv} * hd;
    const int64_t group = hp.n_head / hp.n_head_kv;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const float* kc = k_cache[static_cast<size_t>(layer)].data();
    const float* vc = v_cache[static_cast<size_t>(layer)].data();
    const int64_t n_tiles = (n + kAttnTile - 1) / kAttnTile;
    const int64_t n_tasks = hp.n_head * n_tiles;
    std::atomic<int64_t> next{0};
    const kernels::CpuKernels& kk = kernels::cpu_kernels();

    if (n == 1) {
        // Decode: the query heads of one KV group are adjacent in q, so each group is one
        // [group x hd] by [n_keys x hd]^T product and K/V are read once per group, not per head.
        const int64_t n_keys = kv0 + 1;
        pool.run([&](int idx, int) {
            std::vector<float>& s = scores[static_cast<size_t>(idx)];
            for (int64_t g = next.fetch_add(1); g < hp.n_head_kv; g = next.fetch_add(1)) {
                const float* qp = q.data() + g * group * hd;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(group),
                            static_cast<int>(n_keys), static_cast<int>(hd), scale, qp,
                            static_cast<int>(hd), kc + g * hd, static_cast<int>(kv_dim), 0.0f,
                            s.data(), static_cast<int>(n_keys));
                for (int64_t r = 0; r < group; ++r) kk.softmax(s.data() + r * n_keys, n_keys);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(group),
                            static_cast<int>(hd), static_cast<int>(n_keys), 1.0f, s.data(),
                            static_cast<int>(n_keys), vc + g * hd, static_cast<int>(kv_dim), 0.0f,
                            attn.data() + g * group * hd, static_cast<int>(hd));
            }
        });
        return;
    }

    pool.run([&](int idx, int) {
        std::vector<float>& s = scores[static_cast<size_t>(idx)];
        for (int64_t task = next.fetch_add(1); task < n_tasks; task = next.fetch_add(1)) {
            const int64_t head = task % hp.n_head;
            const int64_t tile = task / hp.n_head;
            const int64_t g = head / group;
            const int64_t i0 = tile * kAttnTile;
            const int64_t rows = std::min(kAttnTile, n - i0);
            // Causal by cache slot: query i (slot kv0 + i) sees slots [0, kv0 + i].
            const int64_t n_keys = kv0 + i0 + rows;
            const float* qp = q.data() + i0 * q_dim + head * hd;
            const float* kp = kc + g * hd;
            const float* vp = vc + g * hd;
            // s [rows][n_keys] = scale * Q_tile · K^T
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                        static_cast<int>(n_keys), static_cast<int>(hd), scale, qp,
                        static_cast<int>(q_dim), kp, static_cast<int>(kv_dim), 0.0f, s.data(),
                        static_cast<int>(n_keys));
            for (int64_t r = 0; r < rows; ++r) {
                float* row = s.data() + r * n_keys;
                const int64_t visible = kv0 + i0 + r + 1;
                kk.softmax(row, visible);
                std::fill(row + visible, row + n_keys, 0.0f);
            }
            // out [rows][hd] = s · V
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows),
                        static_cast<int>(hd), static_cast<int>(n_keys), 1.0f, s.data(),
                        static_cast<int>(n_keys), vp, static_cast<int>(kv_dim), 0.0f,
                        attn.data() + i0 * q_dim + head * hd, static_cast<int>(q_dim));
        }
    });
}

void Context::Impl::forward(std::span<const TokenId> tokens, std::span<const int32_t> pos,
                            bool want_logits_all, bool want_logits_last) {
    const ModelHParams& hp = model->hparams();
    const kernels::CpuKernels& kk = kernels::cpu_kernels();
    const int64_t n = static_cast<int64_t>(tokens.size());
    const int64_t d = hp.n_embd;
    const int64_t hd = hp.head_dim;
    const int64_t q_dim = int64_t{hp.n_head} * hd;
    const int64_t kv_dim = int64_t{hp.n_head_kv} * hd;
    const int64_t ff = hp.n_ff;
    const int64_t kv0 = n_past;
    auto sz = [](int64_t a) { return static_cast<size_t>(a); };

    x.resize(sz(n * d));
    h.resize(sz(n * d));
    q.resize(sz(n * q_dim));
    k.resize(sz(n * kv_dim));
    v.resize(sz(n * kv_dim));
    attn.resize(sz(n * q_dim));
    gate.resize(sz(n * ff));
    up.resize(sz(n * ff));
    scores.resize(sz(pool.n_threads()));
    for (auto& s : scores) s.resize(sz(std::max<int64_t>(kAttnTile, hp.n_head / hp.n_head_kv) * (kv0 + n)));

    // Embedding rows.
    const kernels::WeightView& emb = model->token_embd();
    kernels::DequantFn dq_emb = kk.dequant[kernels::kernel_type_index(emb.type)];
    for (int64_t i = 0; i < n; ++i) {
        dq_emb(static_cast<const uint8_t*>(emb.data) + sz(tokens[sz(i)]) * emb.row_bytes,
               x.data() + i * d, d);
    }

    for (int32_t il = 0; il < hp.n_layer; ++il) {
        const LayerWeights& L = model->layer(il);
        for (int64_t i = 0; i < n; ++i) kk.rmsnorm(x.data() + i * d, L.attn_norm, hp.rms_eps, h.data() + i * d, d);
        kernels::matmul(pool, gemm, L.wq, h.data(), n, d, q.data(), q_dim);
        kernels::matmul(pool, gemm, L.wk, h.data(), n, d, k.data(), kv_dim);
        kernels::matmul(pool, gemm, L.wv, h.data(), n, d, v.data(), kv_dim);
        float* kc = k_cache[sz(il)].data() + kv0 * kv_dim;
        float* vc = v_cache[sz(il)].data() + kv0 * kv_dim;
        for (int64_t i = 0; i < n; ++i) {
            float* qi = q.data() + i * q_dim;
            float* ki = k.data() + i * kv_dim;
            float* vi = v.data() + i * kv_dim;
            if (L.bq) {
                kk.axpy_f32(1.0f, L.bq, qi, q_dim);
                kk.axpy_f32(1.0f, L.bk, ki, kv_dim);
                kk.axpy_f32(1.0f, L.bv, vi, kv_dim);
            }
            const auto p = static_cast<float>(pos[sz(i)]);
            kernels::rope(qi, hp.n_head, hd, hp.n_rot, p, hp.rope_base, hp.rope_style);
            kernels::rope(ki, hp.n_head_kv, hd, hp.n_rot, p, hp.rope_base, hp.rope_style);
        }
        std::copy(k.begin(), k.end(), kc);
        std::copy(v.begin(), v.end(), vc);

        attention(il, n, kv0);
        // x += attn · Wo^T (h reused as the projection output)
        kernels::matmul(pool, gemm, L.wo, attn.data(), n, q_dim, h.data(), d);
        kk.axpy_f32(1.0f, h.data(), x.data(), n * d);

        for (int64_t i = 0; i < n; ++i) kk.rmsnorm(x.data() + i * d, L.ffn_norm, hp.rms_eps, h.data() + i * d, d);
        kernels::matmul(pool, gemm, L.w_gate, h.data(), n, d, gate.data(), ff);
        kernels::matmul(pool, gemm, L.w_up, h.data(), n, d, up.data(), ff);
        kk.silu_mul(gate.data(), up.data(), n * ff);
        kernels::matmul(pool, gemm, L.w_down, gate.data(), n, ff, h.data(), d);
        kk.axpy_f32(1.0f, h.data(), x.data(), n * d);
    }

    for (int64_t i = 0; i < n; ++i) {
        positions[sz(kv0 + i)] = pos[sz(i)];
        next_pos = std::max(next_pos, pos[sz(i)] + 1);
    }
    n_past = static_cast<int32_t>(kv0 + n);

    if (!want_logits_all && !want_logits_last) return;
    const int64_t first = want_logits_all ? 0 : n - 1;
    const int64_t rows = n - first;
    for (int64_t i = first; i < n; ++i) {
        kk.rmsnorm(x.data() + i * d, model->output_norm(), hp.rms_eps, h.data() + (i - first) * d, d);
    }
    const int64_t vocab = hp.n_vocab;
    const size_t base = sz(n_logit_rows) * sz(vocab);
    logits.resize(base + sz(rows * vocab));
    kernels::matmul(pool, gemm, model->output(), h.data(), rows, d, logits.data() + base, vocab);
    n_logit_rows += static_cast<int32_t>(rows);
}

Context::Context(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Context::Context(Context&&) noexcept = default;
Context& Context::operator=(Context&&) noexcept = default;
Context::~Context() = default;

Result<Context> Context::create(const Model& model, const ContextParams& params) {
    const ModelHParams& hp = model.hparams();
    ContextParams p = params;
    if (p.n_ctx < 0 || p.n_threads < 0 || p.n_batch < 0) {
        return make_error(Errc::InvalidArgument, "Context::create: n_ctx, n_threads and n_batch must be >= 0");
    }
    if (p.n_ctx == 0) p.n_ctx = hp.n_ctx_train;
    if (p.n_threads == 0) p.n_threads = kernels::ThreadPool::default_threads();
    if (p.n_batch == 0) p.n_batch = 512;
    auto impl = std::make_unique<Impl>(model, p);
    const size_t kv_floats = static_cast<size_t>(p.n_ctx) * static_cast<size_t>(hp.n_head_kv) *
                             static_cast<size_t>(hp.head_dim);
    impl->k_cache.resize(static_cast<size_t>(hp.n_layer));
    impl->v_cache.resize(static_cast<size_t>(hp.n_layer));
    for (int32_t i = 0; i < hp.n_layer; ++i) {
        if (!impl->k_cache[static_cast<size_t>(i)].reserve(kv_floats) ||
            !impl->v_cache[static_cast<size_t>(i)].reserve(kv_floats)) {
            return make_error(Errc::OutOfMemory, "Context::create: cannot reserve the KV cache for n_ctx = " +
                                                     std::to_string(p.n_ctx));
        }
    }
    impl->positions.resize(static_cast<size_t>(p.n_ctx));
    return Context(std::move(impl));
}

Status Context::eval(std::span<const TokenId> tokens, const EvalOptions& options) {
    Impl& s = *impl_;
    const ModelHParams& hp = s.model->hparams();
    if (tokens.empty()) return make_error(Errc::InvalidArgument, "Context::eval: no tokens");
    if (!options.positions.empty() && options.positions.size() != tokens.size()) {
        return make_error(Errc::InvalidArgument, "Context::eval: " + std::to_string(options.positions.size()) +
                                                     " positions for " + std::to_string(tokens.size()) + " tokens");
    }
    for (size_t i = 0; i < tokens.size(); ++i) {
        if (tokens[i] < 0 || tokens[i] >= hp.n_vocab) {
            return make_error(Errc::InvalidArgument, "Context::eval: token " + std::to_string(i) + " has id " +
                                                         std::to_string(tokens[i]) + " outside [0, " +
                                                         std::to_string(hp.n_vocab) + ")");
        }
    }
    if (static_cast<int64_t>(s.n_past) + static_cast<int64_t>(tokens.size()) > s.params.n_ctx) {
        return make_error(Errc::OutOfRange, "Context::eval: context full: " + std::to_string(s.n_past) + " + " +
                                                std::to_string(tokens.size()) + " tokens exceed n_ctx = " +
                                                std::to_string(s.params.n_ctx));
    }
    std::vector<int32_t> pos_storage;
    std::span<const int32_t> pos = options.positions;
    if (pos.empty()) {
        pos_storage.resize(tokens.size());
        int32_t p0 = next_position();
        for (size_t i = 0; i < tokens.size(); ++i) pos_storage[i] = p0 + static_cast<int32_t>(i);
        pos = pos_storage;
    }
    for (int32_t p : pos) {
        if (p < 0) return make_error(Errc::InvalidArgument, "Context::eval: negative position id");
    }

    s.logits.clear();
    s.n_logit_rows = 0;
    const size_t nb = static_cast<size_t>(s.params.n_batch);
    for (size_t b = 0; b < tokens.size(); b += nb) {
        size_t e = std::min(tokens.size(), b + nb);
        bool last_batch = e == tokens.size();
        s.forward(tokens.subspan(b, e - b), pos.subspan(b, e - b), options.logits == LogitsMode::All,
                  options.logits == LogitsMode::Last && last_batch);
    }
    return {};
}

std::span<const float> Context::logits(int32_t i) const {
    const int32_t vocab = impl_->model->hparams().n_vocab;
    if (i < 0 || i >= impl_->n_logit_rows) return {};
    return {impl_->logits.data() + static_cast<size_t>(i) * static_cast<size_t>(vocab), static_cast<size_t>(vocab)};
}

int32_t Context::n_logit_rows() const { return impl_->n_logit_rows; }
int32_t Context::n_past() const { return impl_->n_past; }
int32_t Context::n_ctx() const { return impl_->params.n_ctx; }

int32_t Context::next_position() const { return impl_->next_pos; }

void Context::truncate(int32_t n_keep) {
    Impl& s = *impl_;
    s.n_past = std::clamp(n_keep, 0, s.n_past);
    s.next_pos = 0;
    for (int32_t i = 0; i < s.n_past; ++i) s.next_pos = std::max(s.next_pos, s.positions[static_cast<size_t>(i)] + 1);
}

const Model& Context::model() const { return *impl_->model; }
kernels::ThreadPool& Context::pool() { return impl_->pool; }

}  // namespace attnrag
