// Forward pass of llama/qwen2 decoders over a per-context f32 KV cache (batched and single-token).
#include "attnrag/context.hpp"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "attnrag/kernels/cpu.hpp"
#include "attnrag/kernels/gemm.hpp"
#include "runtime/cuda_forward.h"
#include "runtime/kv_buffer.h"

namespace attnrag {

namespace {
constexpr int64_t kAttnTile = 64;  // query rows per attention task
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
}  // namespace

std::vector<float> ProbeResult::mean_span_mass(int32_t ri) const {
    std::vector<float> out(static_cast<size_t>(n_spans), 0.0f);
    if (n_layers == 0 || n_heads == 0) return out;
    for (int32_t li = 0; li < n_layers; ++li) {
        for (int32_t hi = 0; hi < n_heads; ++hi) {
            for (int32_t s = 0; s < n_spans; ++s)
                out[static_cast<size_t>(s)] += span_mass(li, hi, ri, s);
        }
    }
    const float inv = 1.0f / static_cast<float>(n_layers * n_heads);
    for (float& m : out) m *= inv;
    return out;
}

// The rows of one forward micro-batch: which tokens, where they sit in the cache, how they see.
struct ForwardRows {
    std::span<const TokenId> tokens;
    std::span<const int32_t> positions;
    std::span<const int32_t> slots;  // ascending cache slots the rows write
    bool queries_global = false;     // recompute: rows attend to every earlier slot
};

// What one forward call asks beyond filling the cache.
struct ForwardExtras {
    int32_t n_layers = 0;  // layers to run
    bool logits_all = false, logits_last = false;
    ApeParams ape;
    const ProbeRequest* probe = nullptr;
    ProbeResult* probe_out = nullptr;
    int32_t probe_row0 = 0;                     // call index of this micro-batch's first row
    std::vector<float>* value_drift = nullptr;  // per row, at layer n_layers - 1
};

struct Context::Impl {
    const Model* model = nullptr;
    ContextParams params;
    kernels::ThreadPool pool;
    kernels::GemmScratch gemm;

    // KV cache, per layer: [n_ctx][n_head_kv * head_dim] f32, keys stored after RoPE. Slots of a
    // shared run (below) are not stored here: their pages stay untouched (never resident).
    std::vector<detail::LazyBuffer> k_cache, v_cache;
    // Slot ranges whose K/V are read in place from a passage state shared with its owner (the
    // passage KV store, other contexts) instead of copied: ascending, disjoint, below n_past.
    // Keys stay rotated for the position they were encoded at; a run placed `delta` positions
    // later is attended by rotating the query by -delta, which gives the same scores as keys
    // rotated by +delta (RoPE rotations are orthogonal and compose).
    struct SharedRun {
        int32_t slot0 = 0, n = 0;  // cache slots [slot0, slot0 + n)
        int32_t token0 = 0;        // their first token in `kv`
        int32_t delta = 0;         // position shift from the encoded position
        std::vector<double> back;  // RoPE angles of -delta (empty when delta is 0)
        std::shared_ptr<const PassageKv> kv;
    };
    std::vector<SharedRun> shared;
    // A run of consecutive key slots of one layer and where its K/V rows are.
    struct KeyRun {
        int64_t slot0 = 0, n = 0;
        const float* k = nullptr;
        const float* v = nullptr;
        const double* back = nullptr;  // query rotation for this run, null when none is needed
        int32_t delta = 0;             // keys are these rows rotated by delta
    };
    std::vector<int32_t> positions;  // [n_ctx] position id of each cache slot
    std::vector<TokenId> slot_tokens;
    std::vector<BlockTag> slot_tags;
    int32_t n_past = 0;
    int32_t next_pos = 0;  // max position in the cache + 1
    ApeParams default_ape;

    // Scratch for one micro-batch of n tokens.
    std::vector<float> x, h, q, k, v, attn, gate, up;  // [n][dim]
    std::vector<float> lse;                            // [n][n_head] attention log-sum-exp
    std::vector<double> rope_cs;                       // [n][n_rot] (cos, sin) per pair
    std::vector<std::vector<float>> scores;            // per thread: [kAttnTile][n_ctx]
    std::vector<std::vector<float>> qrot;              // per thread: [kAttnTile][head_dim]
    std::vector<float> logits;                         // [n_logit_rows][n_vocab]
    int32_t n_logit_rows = 0;
    // The CUDA backend's weights, KV cache and forward pass (null on the CPU backend). The host
    // K cache of a layer is filled from the device only when a probe reads that layer.
    std::unique_ptr<detail::DeviceForward> gpu;

    Impl(const Model& m, const ContextParams& p) : model(&m), params(p), pool(p.n_threads) {}

    void forward(const ForwardRows& rows, const ForwardExtras& ex);
    Status forward_gpu(const ForwardRows& rows, const ForwardExtras& ex);
    // Sizes the rows' scratch and RoPE angles (both backends) and says whether masks apply.
    bool prepare_rows(const ForwardRows& rows, const ForwardExtras& ex);
    Status cpu_only(const char* what) const;
    void attention(int32_t layer, const ForwardRows& rows, bool masked, const ApeParams& ape);
    void adjust_row(float* row, int64_t visible, BlockTag qtag, bool masked,
                    const ApeParams& ape) const;
    void probe(int32_t layer, const ForwardRows& rows, bool masked, const ForwardExtras& ex);
    Status prepare_probe(const ProbeRequest& req, int32_t n_tokens, ProbeResult& out) const;

    // The key runs of `layer` covering slots [0, n_keys): the context's own buffers between
    // shared runs, and the shared runs themselves.
    void key_runs(int32_t layer, int64_t n_keys, std::vector<KeyRun>& out) const;
    // Copies shared run `i` into the context's own buffers (keys rotated to their positions)
    // and drops the reference: before its slots are rewritten.
    void materialize(size_t i);
    Status check_splice(const PassageKv& kv, int32_t position) const;
};

void Context::Impl::key_runs(int32_t layer, int64_t n_keys, std::vector<KeyRun>& out) const {
    const ModelHParams& hp = model->hparams();
    const int64_t kv_dim = int64_t{hp.n_head_kv} * hp.head_dim;
    const float* kc = k_cache[static_cast<size_t>(layer)].data();
    const float* vc = v_cache[static_cast<size_t>(layer)].data();
    out.clear();
    int64_t at = 0;
    for (const SharedRun& r : shared) {
        if (at >= n_keys) break;
        if (r.slot0 > at) {
            const int64_t e = std::min<int64_t>(r.slot0, n_keys);
            out.push_back({at, e - at, kc + at * kv_dim, vc + at * kv_dim, nullptr, 0});
            at = e;
            if (at >= n_keys) break;
        }
        const int64_t e = std::min<int64_t>(int64_t{r.slot0} + r.n, n_keys);
        const int64_t off = int64_t{r.token0} * kv_dim;
        out.push_back({at, e - at, r.kv->k_layer(layer).data() + off,
                       r.kv->v_layer(layer).data() + off, r.back.empty() ? nullptr : r.back.data(),
                       r.delta});
        at = e;
    }
    if (at < n_keys)
        out.push_back({at, n_keys - at, kc + at * kv_dim, vc + at * kv_dim, nullptr, 0});
}

void Context::Impl::materialize(size_t i) {
    const ModelHParams& hp = model->hparams();
    const int64_t kv_dim = int64_t{hp.n_head_kv} * hp.head_dim;
    const SharedRun r = shared[i];
    std::vector<double> cs(static_cast<size_t>(hp.n_rot / 2 * 2));
    kernels::rope_angles(static_cast<float>(r.delta), hp.n_rot, hp.rope_base, cs.data());
    for (int32_t l = 0; l < hp.n_layer; ++l) {
        const float* sk = r.kv->k_layer(l).data() + int64_t{r.token0} * kv_dim;
        const float* sv = r.kv->v_layer(l).data() + int64_t{r.token0} * kv_dim;
        float* dk = k_cache[static_cast<size_t>(l)].data() + int64_t{r.slot0} * kv_dim;
        float* dv = v_cache[static_cast<size_t>(l)].data() + int64_t{r.slot0} * kv_dim;
        std::copy(sk, sk + int64_t{r.n} * kv_dim, dk);
        std::copy(sv, sv + int64_t{r.n} * kv_dim, dv);
        if (r.delta != 0) {
            for (int32_t t = 0; t < r.n; ++t) {
                kernels::rope_apply(dk + t * kv_dim, hp.n_head_kv, hp.head_dim, hp.n_rot, cs.data(),
                                    hp.rope_style);
            }
        }
    }
    shared.erase(shared.begin() + static_cast<std::ptrdiff_t>(i));
}

// Turns a row of scaled logits over slots [0, visible) into the logits whose softmax is the
// attention actually used: invisible keys become -inf; with APE, Local keys seen by a Global
// query take logit l / T + (S T - 1) lse_local, so that one softmax equals the exact LSE merge
// of the Local partial attention (scaled by S T) with the rest.
void Context::Impl::adjust_row(float* row, int64_t visible, BlockTag qtag, bool masked,
                               const ApeParams& ape) const {
    if (masked) {
        for (int64_t j = 0; j < visible; ++j) {
            if (!block_visible(qtag, slot_tags[static_cast<size_t>(j)])) row[j] = kNegInf;
        }
    }
    if (!ape.enabled() || qtag.kind != BlockKind::Global) return;
    const float inv_t = 1.0f / ape.temperature;
    float mx = kNegInf;
    for (int64_t j = 0; j < visible; ++j) {
        if (slot_tags[static_cast<size_t>(j)].kind == BlockKind::Local && row[j] != kNegInf) {
            mx = std::max(mx, row[j] * inv_t);
        }
    }
    if (mx == kNegInf) return;  // no Local key in view
    double sum = 0.0;
    for (int64_t j = 0; j < visible; ++j) {
        if (slot_tags[static_cast<size_t>(j)].kind == BlockKind::Local && row[j] != kNegInf) {
            sum += std::exp(static_cast<double>(row[j] * inv_t - mx));
        }
    }
    const double lse_local = static_cast<double>(mx) + std::log(sum);
    const auto shift =
        static_cast<float>((static_cast<double>(ape.scale) * ape.temperature - 1.0) * lse_local);
    for (int64_t j = 0; j < visible; ++j) {
        if (slot_tags[static_cast<size_t>(j)].kind == BlockKind::Local && row[j] != kNegInf) {
            row[j] = row[j] * inv_t + shift;
        }
    }
}

void Context::Impl::attention(int32_t layer, const ForwardRows& rows, bool masked,
                              const ApeParams& ape) {
    const ModelHParams& hp = model->hparams();
    const int64_t n = static_cast<int64_t>(rows.slots.size());
    const int64_t hd = hp.head_dim;
    const int64_t q_dim = int64_t{hp.n_head} * hd;
    const int64_t kv_dim = int64_t{hp.n_head_kv} * hd;
    const int64_t group = hp.n_head / hp.n_head_kv;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const bool adjust = masked || ape.enabled();
    auto qtag = [&](int64_t i) {
        return rows.queries_global
                   ? BlockTag{}
                   : slot_tags[static_cast<size_t>(rows.slots[static_cast<size_t>(i)])];
    };
    std::vector<KeyRun> runs;
    key_runs(layer, int64_t{rows.slots.back()} + 1, runs);
    std::atomic<int64_t> next{0};
    const kernels::CpuKernels& kk = kernels::cpu_kernels();

    // s [m][n_keys] = scale * Q · K^T for m query rows (stride ldq) of one head group `g`, run by
    // run; a shared run placed away from its encoded position sees the rows rotated back.
    auto scores_into = [&](float* s, int64_t n_keys, const float* qp, int64_t ldq, int64_t m,
                           int64_t g, float* qbuf) {
        for (const KeyRun& r : runs) {
            if (r.slot0 >= n_keys) break;
            const int64_t nk = std::min(r.n, n_keys - r.slot0);
            const float* qs = qp;
            int64_t lda = ldq;
            if (r.back) {
                for (int64_t i = 0; i < m; ++i) {
                    std::copy(qp + i * ldq, qp + i * ldq + hd, qbuf + i * hd);
                    kernels::rope_apply(qbuf + i * hd, 1, hd, hp.n_rot, r.back, hp.rope_style);
                }
                qs = qbuf;
                lda = hd;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m),
                        static_cast<int>(nk), static_cast<int>(hd), scale, qs,
                        static_cast<int>(lda), r.k + g * hd, static_cast<int>(kv_dim), 0.0f,
                        s + r.slot0, static_cast<int>(n_keys));
        }
    };
    // out [m][hd] (stride ldo) = s · V, run by run.
    auto values_into = [&](const float* s, int64_t n_keys, int64_t m, int64_t g, float* out,
                           int64_t ldo) {
        float beta = 0.0f;
        for (const KeyRun& r : runs) {
            if (r.slot0 >= n_keys) break;
            const int64_t nk = std::min(r.n, n_keys - r.slot0);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m),
                        static_cast<int>(hd), static_cast<int>(nk), 1.0f, s + r.slot0,
                        static_cast<int>(n_keys), r.v + g * hd, static_cast<int>(kv_dim), beta, out,
                        static_cast<int>(ldo));
            beta = 1.0f;
        }
    };

    if (n == 1) {
        // One query row: the query heads of one KV group are adjacent in q, so each group is one
        // [group x hd] by [n_keys x hd]^T product and K/V are read once per group, not per head.
        const int64_t n_keys = int64_t{rows.slots[0]} + 1;
        const BlockTag tag = qtag(0);
        pool.run([&](int idx, int) {
            std::vector<float>& s = scores[static_cast<size_t>(idx)];
            float* qbuf = qrot[static_cast<size_t>(idx)].data();
            for (int64_t g = next.fetch_add(1); g < hp.n_head_kv; g = next.fetch_add(1)) {
                scores_into(s.data(), n_keys, q.data() + g * group * hd, hd, group, g, qbuf);
                for (int64_t r = 0; r < group; ++r) {
                    float* row = s.data() + r * n_keys;
                    if (adjust) adjust_row(row, n_keys, tag, masked, ape);
                    lse[static_cast<size_t>(g * group + r)] = kk.softmax(row, n_keys);
                }
                values_into(s.data(), n_keys, group, g, attn.data() + g * group * hd, hd);
            }
        });
        return;
    }

    const int64_t n_tiles = (n + kAttnTile - 1) / kAttnTile;
    const int64_t n_tasks = hp.n_head * n_tiles;
    pool.run([&](int idx, int) {
        std::vector<float>& s = scores[static_cast<size_t>(idx)];
        float* qbuf = qrot[static_cast<size_t>(idx)].data();
        for (int64_t task = next.fetch_add(1); task < n_tasks; task = next.fetch_add(1)) {
            const int64_t head = task % hp.n_head;
            const int64_t tile = task / hp.n_head;
            const int64_t g = head / group;
            const int64_t i0 = tile * kAttnTile;
            const int64_t n_rows = std::min(kAttnTile, n - i0);
            // Causal by cache slot: the row in slot t sees slots [0, t].
            const int64_t n_keys = int64_t{rows.slots[static_cast<size_t>(i0 + n_rows - 1)]} + 1;
            scores_into(s.data(), n_keys, q.data() + i0 * q_dim + head * hd, q_dim, n_rows, g,
                        qbuf);
            for (int64_t r = 0; r < n_rows; ++r) {
                float* row = s.data() + r * n_keys;
                const int64_t visible = int64_t{rows.slots[static_cast<size_t>(i0 + r)]} + 1;
                if (adjust) adjust_row(row, visible, qtag(i0 + r), masked, ape);
                lse[static_cast<size_t>((i0 + r) * hp.n_head + head)] = kk.softmax(row, visible);
                std::fill(row + visible, row + n_keys, 0.0f);
            }
            values_into(s.data(), n_keys, n_rows, g, attn.data() + i0 * q_dim + head * hd, q_dim);
        }
    });
}

// Reads the probed rows of this micro-batch at `layer`: logits recomputed from the row's q and
// the cached keys, turned into probabilities with the attention's own log-sum-exp.
void Context::Impl::probe(int32_t layer, const ForwardRows& rows, bool masked,
                          const ForwardExtras& ex) {
    const ProbeRequest& req = *ex.probe;
    ProbeResult& out = *ex.probe_out;
    const auto li_it = std::find(out.layers.begin(), out.layers.end(), layer);
    if (li_it == out.layers.end()) return;
    const auto li = static_cast<int32_t>(li_it - out.layers.begin());
    const ModelHParams& hp = model->hparams();
    const int64_t hd = hp.head_dim;
    const int64_t q_dim = int64_t{hp.n_head} * hd;
    const int64_t kv_dim = int64_t{hp.n_head_kv} * hd;
    const int64_t group = hp.n_head / hp.n_head_kv;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const int64_t n = static_cast<int64_t>(rows.slots.size());
    std::vector<KeyRun> runs;
    key_runs(layer, int64_t{rows.slots.back()} + 1, runs);

    // (row index in the request, row index in this micro-batch) for rows computed here.
    std::vector<std::pair<int32_t, int64_t>> here;
    for (int32_t ri = 0; ri < out.n_rows; ++ri) {
        const int64_t i = int64_t{out.rows[static_cast<size_t>(ri)]} - ex.probe_row0;
        if (i >= 0 && i < n) here.emplace_back(ri, i);
    }
    if (here.empty()) return;
    const int64_t n_tasks = static_cast<int64_t>(here.size()) * out.n_heads;
    std::atomic<int64_t> next{0};
    const kernels::CpuKernels& kk = kernels::cpu_kernels();
    pool.run([&](int idx, int) {
        std::vector<float>& s = scores[static_cast<size_t>(idx)];
        for (int64_t task = next.fetch_add(1); task < n_tasks; task = next.fetch_add(1)) {
            const auto hi = static_cast<int32_t>(task % out.n_heads);
            const auto [ri, i] = here[static_cast<size_t>(task / out.n_heads)];
            const int64_t head = out.heads[static_cast<size_t>(hi)];
            const int64_t g = head / group;
            const int64_t visible = int64_t{rows.slots[static_cast<size_t>(i)]} + 1;
            const float* qp = q.data() + i * q_dim + head * hd;
            float* row = s.data();
            float* qbuf = qrot[static_cast<size_t>(idx)].data();
            for (const KeyRun& r : runs) {
                if (r.slot0 >= visible) break;
                const float* qs = qp;
                if (r.back) {
                    std::copy(qp, qp + hd, qbuf);
                    kernels::rope_apply(qbuf, 1, hd, hp.n_rot, r.back, hp.rope_style);
                    qs = qbuf;
                }
                const int64_t e = std::min(visible, r.slot0 + r.n);
                for (int64_t j = r.slot0; j < e; ++j) {
                    row[j] = scale * kk.dot_f32(qs, r.k + (j - r.slot0) * kv_dim + g * hd, hd);
                }
            }
            const BlockTag tag =
                rows.queries_global
                    ? BlockTag{}
                    : slot_tags[static_cast<size_t>(rows.slots[static_cast<size_t>(i)])];
            const size_t at = out.index(li, hi, ri);
            if (req.keep_logits) {
                std::vector<float>& kept = out.logits[at];
                kept.assign(row, row + visible);
                if (masked) {
                    for (int64_t j = 0; j < visible; ++j) {
                        if (!block_visible(tag, slot_tags[static_cast<size_t>(j)]))
                            kept[static_cast<size_t>(j)] = kNegInf;
                    }
                }
            }
            adjust_row(row, visible, tag, masked, ex.ape);
            const float row_lse = lse[static_cast<size_t>(i * hp.n_head + head)];
            for (int64_t j = 0; j < visible; ++j)
                row[j] = row[j] == kNegInf ? 0.0f : std::exp(row[j] - row_lse);
            float* mass = out.mass.data() + at * static_cast<size_t>(out.n_spans);
            for (int32_t sp = 0; sp < out.n_spans; ++sp) {
                const KeySpan span = req.spans[static_cast<size_t>(sp)];
                const int64_t b = std::max<int64_t>(0, span.begin),
                              e = std::min<int64_t>(visible, span.end);
                double acc = 0.0;
                for (int64_t j = b; j < e; ++j) acc += row[j];
                mass[sp] = static_cast<float>(acc);
            }
            if (req.keep_probs) out.probs[at].assign(row, row + visible);
        }
    });
}

bool Context::Impl::prepare_rows(const ForwardRows& rows, const ForwardExtras& ex) {
    const ModelHParams& hp = model->hparams();
    const int64_t n = static_cast<int64_t>(rows.tokens.size());
    const int64_t hd = hp.head_dim;
    const int64_t n_keys_max = int64_t{rows.slots.back()} + 1;
    const int64_t n_pairs = hp.n_rot / 2;
    auto sz = [](int64_t a) { return static_cast<size_t>(a); };
    q.resize(sz(n * int64_t{hp.n_head} * hd));
    lse.resize(sz(n * hp.n_head));
    scores.resize(sz(pool.n_threads()));
    for (auto& s : scores)
        s.resize(sz(std::max<int64_t>(kAttnTile, hp.n_head / hp.n_head_kv) * n_keys_max));
    qrot.resize(sz(pool.n_threads()));
    for (auto& r : qrot) r.resize(sz(std::max<int64_t>(kAttnTile, hp.n_head / hp.n_head_kv) * hd));
    if (ex.value_drift) ex.value_drift->assign(sz(n), 0.0f);

    // RoPE angles once per token for all layers.
    rope_cs.resize(sz(n * 2 * n_pairs));
    for (int64_t i = 0; i < n; ++i) {
        kernels::rope_angles(static_cast<float>(rows.positions[sz(i)]), hp.n_rot, hp.rope_base,
                             rope_cs.data() + i * 2 * n_pairs);
    }
    // Any non-Global slot in view means the mask must be evaluated.
    bool masked = false;
    for (int64_t j = 0; j < n_keys_max && !masked; ++j)
        masked = slot_tags[sz(j)].kind != BlockKind::Global;
    return masked;
}

Status Context::Impl::cpu_only(const char* what) const {
    if (!gpu) return {};
    return make_error(Errc::Unsupported,
                      std::string("Context::") + what + " is not on the CUDA backend yet");
}

Status Context::Impl::forward_gpu(const ForwardRows& rows, const ForwardExtras& ex) {
    const ModelHParams& hp = model->hparams();
    const int64_t n = static_cast<int64_t>(rows.tokens.size());
    const bool masked = prepare_rows(rows, ex);
    std::vector<BlockTag> tags(rows.slots.size());
    for (size_t i = 0; i < tags.size(); ++i)
        tags[i] = slot_tags[static_cast<size_t>(rows.slots[i])];
    detail::DeviceBatch b;
    b.tokens = rows.tokens;
    b.rope_cs = rope_cs;
    b.tags = tags;
    b.first_slot = rows.slots.front();
    b.masked = masked;
    b.n_layers = ex.n_layers;
    b.logits_all = ex.logits_all;
    b.logits_last = ex.logits_last;
    // A probed layer: its queries, log-sum-exps and keys come to the host, and the CPU probe
    // reads them there exactly as after a CPU forward.
    std::function<Status(int32_t)> after;
    if (ex.probe) {
        after = [&](int32_t layer) -> Status {
            const auto& layers = ex.probe_out->layers;
            if (std::find(layers.begin(), layers.end(), layer) == layers.end()) return {};
            const int64_t n_keys = int64_t{rows.slots.back()} + 1;
            ATTNRAG_TRY(gpu->download_queries(n, q.data()));
            ATTNRAG_TRY(gpu->download_lse(n, lse.data()));
            ATTNRAG_TRY(
                gpu->download_keys(layer, n_keys, k_cache[static_cast<size_t>(layer)].data()));
            probe(layer, rows, masked, ex);
            return {};
        };
    }
    const size_t before = logits.size();
    Status st = gpu->run(b, after, logits);
    if (!st) {
        logits.resize(before);
        return st;
    }
    n_logit_rows +=
        static_cast<int32_t>((logits.size() - before) / static_cast<size_t>(hp.n_vocab));
    return {};
}

void Context::Impl::forward(const ForwardRows& rows, const ForwardExtras& ex) {
    const ModelHParams& hp = model->hparams();
    const kernels::CpuKernels& kk = kernels::cpu_kernels();
    const int64_t n = static_cast<int64_t>(rows.tokens.size());
    const int64_t d = hp.n_embd;
    const int64_t hd = hp.head_dim;
    const int64_t q_dim = int64_t{hp.n_head} * hd;
    const int64_t kv_dim = int64_t{hp.n_head_kv} * hd;
    const int64_t ff = hp.n_ff;
    const int64_t n_pairs = hp.n_rot / 2;
    // Contiguous rows (appending) write K/V with one copy; scattered ones (recompute) per row.
    const bool contiguous = rows.slots.back() - rows.slots.front() == n - 1;
    auto sz = [](int64_t a) { return static_cast<size_t>(a); };
    const bool masked = prepare_rows(rows, ex);
    x.resize(sz(n * d));
    h.resize(sz(n * d));
    k.resize(sz(n * kv_dim));
    v.resize(sz(n * kv_dim));
    attn.resize(sz(n * q_dim));
    gate.resize(sz(n * ff));
    up.resize(sz(n * ff));

    // Embedding rows.
    const kernels::WeightView& emb = model->token_embd();
    kernels::DequantFn dq_emb = kk.dequant[kernels::kernel_type_index(emb.type)];
    for (int64_t i = 0; i < n; ++i) {
        dq_emb(static_cast<const uint8_t*>(emb.data) + sz(rows.tokens[sz(i)]) * emb.row_bytes,
               x.data() + i * d, d);
    }

    for (int32_t il = 0; il < ex.n_layers; ++il) {
        const LayerWeights& L = model->layer(il);
        for (int64_t i = 0; i < n; ++i)
            kk.rmsnorm(x.data() + i * d, L.attn_norm, hp.rms_eps, h.data() + i * d, d);
        {
            const kernels::MatmulTarget qkv[] = {
                {&L.wq, q.data(), q_dim}, {&L.wk, k.data(), kv_dim}, {&L.wv, v.data(), kv_dim}};
            kernels::matmul_many(pool, gemm, qkv, h.data(), n, d);
        }
        float* kc = k_cache[sz(il)].data();
        float* vc = v_cache[sz(il)].data();
        for (int64_t i = 0; i < n; ++i) {
            float* qi = q.data() + i * q_dim;
            float* ki = k.data() + i * kv_dim;
            float* vi = v.data() + i * kv_dim;
            if (L.bq) {
                kk.axpy_f32(1.0f, L.bq, qi, q_dim);
                kk.axpy_f32(1.0f, L.bk, ki, kv_dim);
                kk.axpy_f32(1.0f, L.bv, vi, kv_dim);
            }
            const double* cs = rope_cs.data() + i * 2 * n_pairs;
            kernels::rope_apply(qi, hp.n_head, hd, hp.n_rot, cs, hp.rope_style);
            kernels::rope_apply(ki, hp.n_head_kv, hd, hp.n_rot, cs, hp.rope_style);
        }
        if (ex.value_drift && il == ex.n_layers - 1) {
            for (int64_t i = 0; i < n; ++i) {
                const float* old_v = vc + int64_t{rows.slots[sz(i)]} * kv_dim;
                double acc = 0.0;
                for (int64_t c = 0; c < kv_dim; ++c) {
                    const double diff = static_cast<double>(v[sz(i * kv_dim + c)]) - old_v[c];
                    acc += diff * diff;
                }
                (*ex.value_drift)[sz(i)] = static_cast<float>(acc);
            }
        }
        if (contiguous) {
            std::copy(k.begin(), k.end(), kc + int64_t{rows.slots[0]} * kv_dim);
            std::copy(v.begin(), v.end(), vc + int64_t{rows.slots[0]} * kv_dim);
        } else {
            for (int64_t i = 0; i < n; ++i) {
                const int64_t at = int64_t{rows.slots[sz(i)]} * kv_dim;
                std::copy(k.begin() + i * kv_dim, k.begin() + (i + 1) * kv_dim, kc + at);
                std::copy(v.begin() + i * kv_dim, v.begin() + (i + 1) * kv_dim, vc + at);
            }
        }

        attention(il, rows, masked, ex.ape);
        if (ex.probe) probe(il, rows, masked, ex);
        // x += attn · Wo^T (h reused as the projection output)
        kernels::matmul(pool, gemm, L.wo, attn.data(), n, q_dim, h.data(), d);
        kk.axpy_f32(1.0f, h.data(), x.data(), n * d);

        for (int64_t i = 0; i < n; ++i)
            kk.rmsnorm(x.data() + i * d, L.ffn_norm, hp.rms_eps, h.data() + i * d, d);
        {
            const kernels::MatmulTarget gate_up[] = {{&L.w_gate, gate.data(), ff},
                                                     {&L.w_up, up.data(), ff}};
            kernels::matmul_many(pool, gemm, gate_up, h.data(), n, d);
        }
        kk.silu_mul(gate.data(), up.data(), n * ff);
        kernels::matmul(pool, gemm, L.w_down, gate.data(), n, ff, h.data(), d);
        kk.axpy_f32(1.0f, h.data(), x.data(), n * d);
    }

    if (!ex.logits_all && !ex.logits_last) return;
    const int64_t first = ex.logits_all ? 0 : n - 1;
    const int64_t n_out = n - first;
    for (int64_t i = first; i < n; ++i) {
        kk.rmsnorm(x.data() + i * d, model->output_norm(), hp.rms_eps, h.data() + (i - first) * d,
                   d);
    }
    const int64_t vocab = hp.n_vocab;
    const size_t base = sz(n_logit_rows) * sz(vocab);
    logits.resize(base + sz(n_out * vocab));
    kernels::matmul(pool, gemm, model->output(), h.data(), n_out, d, logits.data() + base, vocab);
    n_logit_rows += static_cast<int32_t>(n_out);
}

Context::Context(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Context::Context(Context&&) noexcept = default;
Context& Context::operator=(Context&&) noexcept = default;
Context::~Context() = default;

Result<Context> Context::create(const Model& model, const ContextParams& params) {
    const ModelHParams& hp = model.hparams();
    ContextParams p = params;
    if (p.n_ctx < 0 || p.n_threads < 0 || p.n_batch < 0) {
        return make_error(Errc::InvalidArgument,
                          "Context::create: n_ctx, n_threads and n_batch must be >= 0");
    }
    if (p.n_ctx == 0) p.n_ctx = hp.n_ctx_train;
    if (p.n_threads == 0) p.n_threads = kernels::ThreadPool::default_threads();
    if (p.n_batch == 0) p.n_batch = 512;
    // Attention calls cblas_sgemm from the pool's threads: OpenBLAS must not start its own
    // (it would spin against ours; seen as 5x slower prefill when nothing else had set it).
    kernels::blas_single_threaded();
    auto impl = std::make_unique<Impl>(model, p);
    const size_t kv_floats = static_cast<size_t>(p.n_ctx) * static_cast<size_t>(hp.n_head_kv) *
                             static_cast<size_t>(hp.head_dim);
    impl->k_cache.resize(static_cast<size_t>(hp.n_layer));
    impl->v_cache.resize(static_cast<size_t>(hp.n_layer));
    for (int32_t i = 0; i < hp.n_layer; ++i) {
        if (!impl->k_cache[static_cast<size_t>(i)].reserve(kv_floats) ||
            !impl->v_cache[static_cast<size_t>(i)].reserve(kv_floats)) {
            return make_error(Errc::OutOfMemory,
                              "Context::create: cannot reserve the KV cache for n_ctx = " +
                                  std::to_string(p.n_ctx));
        }
    }
    if (p.backend == Backend::Cuda) {
        auto gpu = detail::DeviceForward::create(model, p.n_ctx, p.n_batch);
        if (!gpu) return gpu.error();
        impl->gpu = std::move(gpu.value());
    }
    impl->positions.resize(static_cast<size_t>(p.n_ctx));
    impl->slot_tokens.resize(static_cast<size_t>(p.n_ctx));
    impl->slot_tags.resize(static_cast<size_t>(p.n_ctx));
    return Context(std::move(impl));
}

Status Context::eval(std::span<const TokenId> tokens, const EvalOptions& options) {
    Impl& s = *impl_;
    const ModelHParams& hp = s.model->hparams();
    if (tokens.empty()) return make_error(Errc::InvalidArgument, "Context::eval: no tokens");
    if (!options.positions.empty() && options.positions.size() != tokens.size()) {
        return make_error(Errc::InvalidArgument,
                          "Context::eval: " + std::to_string(options.positions.size()) +
                              " positions for " + std::to_string(tokens.size()) + " tokens");
    }
    for (size_t i = 0; i < tokens.size(); ++i) {
        if (tokens[i] < 0 || tokens[i] >= hp.n_vocab) {
            return make_error(Errc::InvalidArgument, "Context::eval: token " + std::to_string(i) +
                                                         " has id " + std::to_string(tokens[i]) +
                                                         " outside [0, " +
                                                         std::to_string(hp.n_vocab) + ")");
        }
    }
    if (static_cast<int64_t>(s.n_past) + static_cast<int64_t>(tokens.size()) > s.params.n_ctx) {
        return make_error(Errc::OutOfRange,
                          "Context::eval: context full: " + std::to_string(s.n_past) + " + " +
                              std::to_string(tokens.size()) +
                              " tokens exceed n_ctx = " + std::to_string(s.params.n_ctx));
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
    if (!options.blocks.empty() && options.blocks.size() != tokens.size()) {
        return make_error(Errc::InvalidArgument,
                          "Context::eval: " + std::to_string(options.blocks.size()) +
                              " block tags for " + std::to_string(tokens.size()) + " tokens");
    }
    if (!(options.ape.temperature > 0.0f) || !(options.ape.scale > 0.0f)) {
        return make_error(Errc::InvalidArgument,
                          "Context::eval: APE temperature and scale must be > 0");
    }

    ForwardExtras ex;
    ex.n_layers = hp.n_layer;
    ex.ape = options.ape.enabled() ? options.ape : s.default_ape;
    if (ex.ape.enabled()) ATTNRAG_TRY(s.cpu_only("eval with APE"));
    bool early_exit = false;
    if (options.probe) {
        if (!options.probe_out)
            return make_error(Errc::InvalidArgument, "Context::eval: probe without probe_out");
        ATTNRAG_TRY(s.prepare_probe(*options.probe, static_cast<int32_t>(tokens.size()),
                                    *options.probe_out));
        ex.probe = options.probe;
        ex.probe_out = options.probe_out;
        if (options.probe->stop_after_last_layer && !options.probe->layers.empty()) {
            early_exit = true;
            ex.n_layers =
                *std::max_element(options.probe->layers.begin(), options.probe->layers.end()) + 1;
        }
    }

    const int32_t n_past_before = s.n_past, next_pos_before = s.next_pos;
    s.logits.clear();
    s.n_logit_rows = 0;
    std::vector<int32_t> slots(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) {
        const size_t slot = static_cast<size_t>(s.n_past) + i;
        slots[i] = static_cast<int32_t>(slot);
        s.slot_tokens[slot] = tokens[i];
        s.slot_tags[slot] = options.blocks.empty() ? BlockTag{} : options.blocks[i];
        s.positions[slot] = pos[i];
    }
    const size_t nb = static_cast<size_t>(s.params.n_batch);
    for (size_t b = 0; b < tokens.size(); b += nb) {
        const size_t e = std::min(tokens.size(), b + nb);
        const bool last_batch = e == tokens.size();
        ForwardRows rows{tokens.subspan(b, e - b), pos.subspan(b, e - b),
                         std::span<const int32_t>(slots).subspan(b, e - b), false};
        ex.logits_all = !early_exit && options.logits == LogitsMode::All;
        ex.logits_last = !early_exit && options.logits == LogitsMode::Last && last_batch;
        ex.probe_row0 = static_cast<int32_t>(b);
        if (s.gpu) {
            Status st = s.forward_gpu(rows, ex);
            if (!st) {  // the slots written so far are dropped: the cache is as before the call
                s.n_past = n_past_before;
                s.next_pos = next_pos_before;
                return st;
            }
        } else {
            s.forward(rows, ex);
        }
        s.n_past = static_cast<int32_t>(e) + n_past_before;
        for (size_t i = b; i < e; ++i) s.next_pos = std::max(s.next_pos, pos[i] + 1);
    }
    if (early_exit) {
        s.n_past = n_past_before;
        s.next_pos = next_pos_before;
    }
    return {};
}

Status Context::Impl::prepare_probe(const ProbeRequest& req, int32_t n_tokens,
                                    ProbeResult& out) const {
    const ModelHParams& hp = model->hparams();
    out = ProbeResult{};
    out.layers = req.layers;
    for (int32_t l : req.layers) {
        if (l < 0 || l >= hp.n_layer) {
            return make_error(Errc::InvalidArgument, "probe: layer " + std::to_string(l) +
                                                         " outside [0, " +
                                                         std::to_string(hp.n_layer) + ")");
        }
        if (std::count(req.layers.begin(), req.layers.end(), l) > 1) {
            return make_error(Errc::InvalidArgument,
                              "probe: layer " + std::to_string(l) + " listed twice");
        }
    }
    out.heads = req.heads;
    if (out.heads.empty()) {
        for (int32_t head = 0; head < hp.n_head; ++head) out.heads.push_back(head);
    }
    for (int32_t head : out.heads) {
        if (head < 0 || head >= hp.n_head) {
            return make_error(Errc::InvalidArgument, "probe: head " + std::to_string(head) +
                                                         " outside [0, " +
                                                         std::to_string(hp.n_head) + ")");
        }
    }
    out.rows = req.rows;
    for (int32_t r : req.rows) {
        if (r < 0 || r >= n_tokens) {
            return make_error(Errc::InvalidArgument, "probe: row " + std::to_string(r) +
                                                         " outside the call's " +
                                                         std::to_string(n_tokens) + " tokens");
        }
    }
    for (const KeySpan& sp : req.spans) {
        if (sp.begin < 0 || sp.end < sp.begin) {
            return make_error(Errc::InvalidArgument, "probe: bad key span [" +
                                                         std::to_string(sp.begin) + ", " +
                                                         std::to_string(sp.end) + ")");
        }
    }
    out.n_layers = static_cast<int32_t>(out.layers.size());
    out.n_heads = static_cast<int32_t>(out.heads.size());
    out.n_rows = static_cast<int32_t>(out.rows.size());
    out.n_spans = static_cast<int32_t>(req.spans.size());
    const size_t cells = static_cast<size_t>(out.n_layers) * static_cast<size_t>(out.n_heads) *
                         static_cast<size_t>(out.n_rows);
    out.mass.assign(cells * static_cast<size_t>(out.n_spans), 0.0f);
    if (req.keep_probs) out.probs.resize(cells);
    if (req.keep_logits) out.logits.resize(cells);
    return {};
}

Status Context::Impl::check_splice(const PassageKv& kv, int32_t position) const {
    ATTNRAG_TRY(cpu_only("splice"));
    const ModelHParams& hp = model->hparams();
    const int32_t kv_dim = hp.n_head_kv * hp.head_dim;
    if (!kv.consistent() || kv.n_layer != hp.n_layer || kv.kv_dim != kv_dim) {
        return make_error(Errc::InvalidArgument,
                          "Context::splice: the passage state (" + std::to_string(kv.n_layer) +
                              " layers, kv_dim " + std::to_string(kv.kv_dim) +
                              ") does not fit this model (" + std::to_string(hp.n_layer) +
                              " layers, kv_dim " + std::to_string(kv_dim) + ")");
    }
    if (position < 0)
        return make_error(Errc::InvalidArgument, "Context::splice: negative position id");
    for (TokenId t : kv.tokens) {
        if (t < 0 || t >= hp.n_vocab)
            return make_error(Errc::InvalidArgument, "Context::splice: token id out of range");
    }
    if (int64_t{n_past} + kv.n_tokens > params.n_ctx) {
        return make_error(Errc::OutOfRange,
                          "Context::splice: context full: " + std::to_string(n_past) + " + " +
                              std::to_string(kv.n_tokens) +
                              " tokens exceed n_ctx = " + std::to_string(params.n_ctx));
    }
    return {};
}

Status Context::splice(const PassageKv& kv, int32_t position, BlockTag tag) {
    Impl& s = *impl_;
    const ModelHParams& hp = s.model->hparams();
    ATTNRAG_TRY(s.check_splice(kv, position));
    const int32_t kv_dim = hp.n_head_kv * hp.head_dim;
    const int64_t n_pairs = hp.n_rot / 2;
    const auto n = static_cast<int64_t>(kv.n_tokens);
    const int64_t slot0 = s.n_past;
    const int32_t delta = position - kv.encoded_position;
    // Keys move by one rotation of `delta` (the same angles for every token); values are copied.
    std::vector<double> cs(static_cast<size_t>(2 * n_pairs));
    kernels::rope_angles(static_cast<float>(delta), hp.n_rot, hp.rope_base, cs.data());
    s.pool.parallel_for(int64_t{hp.n_layer} * n, 64, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
            const auto l = static_cast<int32_t>(t / n);
            const int64_t i = t % n;
            const float* src_k = kv.k_layer(l).data() + i * kv_dim;
            const float* src_v = kv.v_layer(l).data() + i * kv_dim;
            float* dk = s.k_cache[static_cast<size_t>(l)].data() + (slot0 + i) * kv_dim;
            float* dv = s.v_cache[static_cast<size_t>(l)].data() + (slot0 + i) * kv_dim;
            std::copy(src_k, src_k + kv_dim, dk);
            std::copy(src_v, src_v + kv_dim, dv);
            if (delta != 0)
                kernels::rope_apply(dk, hp.n_head_kv, hp.head_dim, hp.n_rot, cs.data(),
                                    hp.rope_style);
        }
    });
    for (int64_t i = 0; i < n; ++i) {
        const auto slot = static_cast<size_t>(slot0 + i);
        s.slot_tokens[slot] = kv.tokens[static_cast<size_t>(i)];
        s.slot_tags[slot] = tag;
        s.positions[slot] = position + static_cast<int32_t>(i);
    }
    s.n_past += kv.n_tokens;
    s.next_pos = std::max(s.next_pos, position + kv.n_tokens);
    return {};
}

Status Context::splice(std::shared_ptr<const PassageKv> kv, int32_t position, BlockTag tag) {
    Impl& s = *impl_;
    const ModelHParams& hp = s.model->hparams();
    if (!kv) return make_error(Errc::InvalidArgument, "Context::splice: no passage state");
    ATTNRAG_TRY(s.check_splice(*kv, position));
    if (kv->n_tokens == 0) return {};
    Impl::SharedRun run;
    run.slot0 = s.n_past;
    run.n = kv->n_tokens;
    run.delta = position - kv->encoded_position;
    if (run.delta != 0) {
        run.back.resize(static_cast<size_t>(hp.n_rot / 2 * 2));
        kernels::rope_angles(static_cast<float>(-run.delta), hp.n_rot, hp.rope_base,
                             run.back.data());
    }
    run.kv = std::move(kv);
    const PassageKv& state = *run.kv;
    for (int32_t i = 0; i < state.n_tokens; ++i) {
        const auto slot = static_cast<size_t>(run.slot0 + i);
        s.slot_tokens[slot] = state.tokens[static_cast<size_t>(i)];
        s.slot_tags[slot] = tag;
        s.positions[slot] = position + i;
    }
    s.n_past += state.n_tokens;
    s.next_pos = std::max(s.next_pos, position + state.n_tokens);
    s.shared.push_back(std::move(run));
    return {};
}

int32_t Context::n_shared_slots() const {
    int32_t n = 0;
    for (const auto& r : impl_->shared) n += r.n;
    return n;
}

Result<PassageKv> Context::extract(int32_t begin, int32_t end) const {
    const Impl& s = *impl_;
    ATTNRAG_TRY(s.cpu_only("extract"));
    const ModelHParams& hp = s.model->hparams();
    if (begin < 0 || end <= begin || end > s.n_past) {
        return make_error(Errc::InvalidArgument,
                          "Context::extract: slots [" + std::to_string(begin) + ", " +
                              std::to_string(end) + ") outside the cache's " +
                              std::to_string(s.n_past) + " tokens");
    }
    PassageKv kv;
    kv.n_layer = hp.n_layer;
    kv.n_tokens = end - begin;
    kv.kv_dim = hp.n_head_kv * hp.head_dim;
    kv.encoded_position = s.positions[static_cast<size_t>(begin)];
    kv.tokens.assign(s.slot_tokens.begin() + begin, s.slot_tokens.begin() + end);
    const size_t per_layer = kv.layer_floats();
    kv.k.resize(per_layer * static_cast<size_t>(hp.n_layer));
    kv.v.resize(per_layer * static_cast<size_t>(hp.n_layer));
    for (int32_t i = begin + 1; i < end; ++i) {
        if (s.positions[static_cast<size_t>(i)] != s.positions[static_cast<size_t>(i - 1)] + 1) {
            return make_error(Errc::InvalidArgument,
                              "Context::extract: slots [" + std::to_string(begin) + ", " +
                                  std::to_string(end) + ") do not have consecutive positions");
        }
    }
    // Run by run: rows of shared runs placed away from their encoded position are rotated to it.
    const int64_t row = kv.kv_dim;
    std::vector<Impl::KeyRun> runs;
    std::vector<double> fwd(static_cast<size_t>(hp.n_rot / 2 * 2));
    for (int32_t l = 0; l < hp.n_layer; ++l) {
        s.key_runs(l, end, runs);
        float* dk = kv.k.data() + static_cast<size_t>(l) * per_layer;
        float* dv = kv.v.data() + static_cast<size_t>(l) * per_layer;
        for (const Impl::KeyRun& r : runs) {
            const int64_t b = std::max<int64_t>(r.slot0, begin), e = r.slot0 + r.n;
            if (e <= b) continue;
            std::copy(r.k + (b - r.slot0) * row, r.k + (e - r.slot0) * row, dk + (b - begin) * row);
            std::copy(r.v + (b - r.slot0) * row, r.v + (e - r.slot0) * row, dv + (b - begin) * row);
            if (r.delta == 0) continue;
            kernels::rope_angles(static_cast<float>(r.delta), hp.n_rot, hp.rope_base, fwd.data());
            for (int64_t t = b; t < e; ++t) {
                kernels::rope_apply(dk + (t - begin) * row, hp.n_head_kv, hp.head_dim, hp.n_rot,
                                    fwd.data(), hp.rope_style);
            }
        }
    }
    return kv;
}

Status Context::recompute(std::span<const int32_t> slots, const RecomputeOptions& options) {
    Impl& s = *impl_;
    ATTNRAG_TRY(s.cpu_only("recompute"));
    const ModelHParams& hp = s.model->hparams();
    if (options.n_layers < 0 || options.n_layers > hp.n_layer) {
        return make_error(Errc::InvalidArgument, "Context::recompute: n_layers outside [0, " +
                                                     std::to_string(hp.n_layer) + "]");
    }
    for (size_t i = 0; i < slots.size(); ++i) {
        if (slots[i] < 0 || slots[i] >= s.n_past || (i > 0 && slots[i] <= slots[i - 1])) {
            return make_error(
                Errc::InvalidArgument,
                "Context::recompute: slots must be ascending, unique and inside the cache");
        }
    }
    if (options.value_drift) options.value_drift->clear();
    if (slots.empty()) return {};
    // Rewritten slots must be the context's own: shared runs among them are copied first.
    for (size_t i = s.shared.size(); i-- > 0;) {
        const auto& r = s.shared[i];
        const auto it = std::lower_bound(slots.begin(), slots.end(), r.slot0);
        if (it != slots.end() && *it < r.slot0 + r.n) s.materialize(i);
    }
    std::vector<TokenId> tokens(slots.size());
    std::vector<int32_t> pos(slots.size());
    for (size_t i = 0; i < slots.size(); ++i) {
        tokens[i] = s.slot_tokens[static_cast<size_t>(slots[i])];
        pos[i] = s.positions[static_cast<size_t>(slots[i])];
    }
    ForwardExtras ex;
    ex.n_layers = options.n_layers == 0 ? hp.n_layer : options.n_layers;
    ex.ape = options.ape;
    std::vector<float> drift_part;
    const size_t nb = static_cast<size_t>(s.params.n_batch);
    for (size_t b = 0; b < slots.size(); b += nb) {
        const size_t e = std::min(slots.size(), b + nb);
        ForwardRows rows{std::span<const TokenId>(tokens).subspan(b, e - b),
                         std::span<const int32_t>(pos).subspan(b, e - b), slots.subspan(b, e - b),
                         true};
        ex.value_drift = options.value_drift ? &drift_part : nullptr;
        s.forward(rows, ex);
        if (options.value_drift)
            options.value_drift->insert(options.value_drift->end(), drift_part.begin(),
                                        drift_part.end());
    }
    return {};
}

Status Context::set_default_ape(ApeParams ape) {
    if (!(ape.temperature > 0.0f) || !(ape.scale > 0.0f)) {
        return make_error(Errc::InvalidArgument,
                          "Context::set_default_ape: temperature and scale must be > 0");
    }
    impl_->default_ape = ape;
    return {};
}
ApeParams Context::default_ape() const {
    return impl_->default_ape;
}

std::span<const TokenId> Context::slot_tokens() const {
    return {impl_->slot_tokens.data(), static_cast<size_t>(impl_->n_past)};
}
std::span<const int32_t> Context::slot_positions() const {
    return {impl_->positions.data(), static_cast<size_t>(impl_->n_past)};
}
std::span<const BlockTag> Context::slot_blocks() const {
    return {impl_->slot_tags.data(), static_cast<size_t>(impl_->n_past)};
}

std::span<const float> Context::logits(int32_t i) const {
    const int32_t vocab = impl_->model->hparams().n_vocab;
    if (i < 0 || i >= impl_->n_logit_rows) return {};
    return {impl_->logits.data() + static_cast<size_t>(i) * static_cast<size_t>(vocab),
            static_cast<size_t>(vocab)};
}

int32_t Context::n_logit_rows() const {
    return impl_->n_logit_rows;
}
int32_t Context::n_past() const {
    return impl_->n_past;
}
int32_t Context::n_ctx() const {
    return impl_->params.n_ctx;
}

int32_t Context::next_position() const {
    return impl_->next_pos;
}

void Context::truncate(int32_t n_keep) {
    Impl& s = *impl_;
    s.n_past = std::clamp(n_keep, 0, s.n_past);
    // Shared runs past the end are released; one cut in two keeps its head.
    while (!s.shared.empty() && s.shared.back().slot0 >= s.n_past) s.shared.pop_back();
    if (!s.shared.empty()) {
        auto& r = s.shared.back();
        r.n = std::min(r.n, s.n_past - r.slot0);
    }
    s.next_pos = 0;
    for (int32_t i = 0; i < s.n_past; ++i)
        s.next_pos = std::max(s.next_pos, s.positions[static_cast<size_t>(i)] + 1);
}

const Model& Context::model() const {
    return *impl_->model;
}
kernels::ThreadPool& Context::pool() {
    return impl_->pool;
}
Backend Context::backend() const {
    return impl_->gpu ? Backend::Cuda : Backend::Cpu;
}

std::string Context::backend_description() const {
    if (impl_->gpu) return "cuda: " + impl_->gpu->describe();
    return "cpu (" + std::to_string(impl_->pool.n_threads()) + " threads, " +
           std::string(kernels::simd_level_name(kernels::active_simd_level())) + ")";
}

}  // namespace attnrag
