// Sentence embedder: loads a sentence-transformers BERT directory and runs its batched forward
// pass.
#include "attnrag/index/embedder.hpp"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "attnrag/kernels/cpu.hpp"
#include "attnrag/kernels/gemm.hpp"
#include "attnrag/kernels/thread_pool.hpp"
#include "attnrag/safetensors.hpp"

namespace attnrag::index {

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

// Rows (tokens of all texts together) of one forward pass: bounds the scratch to
// kMaxBatchTokens * (5 * hidden) floats (~31 MB for hidden 384) whatever the batch size.
constexpr int64_t kMaxBatchTokens = 4096;
// Rows per step of the per-row stages (output projection, feed-forward, next projections).
// sgemm repacks the weight matrix on every call, which costs about as much as 1/8 of the
// products at 128 rows; at 512 it is ~3%, and the [512][intermediate] activations (3 MB for
// 1536) still sit in L2/L3 between the two feed-forward products.
constexpr int64_t kRowChunk = 512;

Result<Json> read_json(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        std::error_code ec;
        bool exists = fs::exists(path, ec);
        return make_error(exists ? Errc::Io : Errc::NotFound,
                          path.string() + (exists ? ": cannot read" : ": not found"));
    }
    std::stringstream ss;
    ss << in.rdbuf();
    try {
        return Json::parse(ss.str());
    } catch (const Json::parse_error& e) {
        return make_error(Errc::Corrupt, path.string() + ": offset " +
                                             std::to_string(e.byte > 0 ? e.byte - 1 : 0) +
                                             ": not valid JSON (" + e.what() + ")");
    }
}

// A positive integer under `key` of a JSON object read from `path`.
Result<int32_t> get_dim(const Json& j, const fs::path& path, const char* key) {
    auto it = j.find(key);
    if (it == j.end()) {
        return make_error(Errc::Corrupt, path.string() + ": missing key '" + key + "'");
    }
    if (!it->is_number_integer() || it->get<int64_t>() < 1 || it->get<int64_t>() > (1 << 24)) {
        return make_error(Errc::Corrupt, path.string() + ": '" + key + "' is " + it->dump() +
                                             ", expected a positive integer");
    }
    return static_cast<int32_t>(it->get<int64_t>());
}

std::string shape_text(std::span<const int64_t> shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

// x[0, n) = (x - mean) / sqrt(var + eps) * w + b. Reductions through the SIMD dot kernel.
void layer_norm(const kernels::CpuKernels& k, const float* ones, float* x, const float* w,
                const float* b, int64_t n, float eps) {
    const float mean = k.dot_f32(x, ones, n) / static_cast<float>(n);
    for (int64_t i = 0; i < n; ++i) x[i] -= mean;
    const float var = k.dot_f32(x, x, n) / static_cast<float>(n);
    const float inv = 1.0f / std::sqrt(var + eps);
    for (int64_t i = 0; i < n; ++i) x[i] = x[i] * inv * w[i] + b[i];
}

// GELU with the exact erf: 0.5 x (1 + erf(x / sqrt 2)). erf is Eigen's rational approximation
// (odd degree-13 over even degree-8 polynomial on [-4, 4], |error| < 5e-7), branch-free so the
// loop vectorises; std::erf per element would cost as much as the matrix products around it.
// Cloned per ISA (the baseline build only has SSE2): at 4 lanes it took ~10% of the forward pass.
[[gnu::target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")]] void gelu_erf(float* x,
                                                                                    int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const float v = x[i];
        const float a = std::min(std::max(v * 0.70710678118654752f, -4.0f), 4.0f);
        const float a2 = a * a;
        float p = -2.72614225801306e-10f;
        p = p * a2 + 2.77068142495902e-08f;
        p = p * a2 + -2.10102402082508e-06f;
        p = p * a2 + -5.69250639462346e-05f;
        p = p * a2 + -7.34990630326855e-04f;
        p = p * a2 + -2.95459980854025e-03f;
        p = p * a2 + -1.60960333262415e-02f;
        float q = -1.45660718464996e-05f;
        q = q * a2 + -2.13374055278905e-04f;
        q = q * a2 + -1.68282697438203e-03f;
        q = q * a2 + -7.37332916720468e-03f;
        q = q * a2 + -1.42647390514189e-02f;
        x[i] = 0.5f * v * (1.0f + a * p / q);
    }
}

// y[m][n] (row stride ldy) = x[m][k] (stride ldx) · W^T + beta * y, W row-major [n][k].
void gemm_xwt(int64_t m, int64_t n, int64_t k, const float* x, int64_t ldx, const float* w,
              float beta, float* y, int64_t ldy) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
                static_cast<int>(k), 1.0f, x, static_cast<int>(ldx), w, static_cast<int>(k), beta,
                y, static_cast<int>(ldy));
}

// Each of rows [r0, r1) of y [.][n] set to bias [n].
void fill_rows(float* y, int64_t r0, int64_t r1, const float* bias, int64_t n) {
    for (int64_t r = r0; r < r1; ++r) std::copy(bias, bias + n, y + r * n);
}
void add_rows(float* y, int64_t r0, int64_t r1, const float* bias, int64_t n) {
    for (int64_t r = r0; r < r1; ++r) {
        float* row = y + r * n;
        for (int64_t i = 0; i < n; ++i) row[i] += bias[i];
    }
}

struct Layer {
    std::vector<float> wqkv, bqkv;    // [3 hidden][hidden] query, key, value rows; [3 hidden]
    std::vector<float> wo, bo;        // [hidden][hidden], [hidden]: attention output
    std::vector<float> ln1_w, ln1_b;  // [hidden]
    std::vector<float> w1, b1;        // [intermediate][hidden], [intermediate]
    std::vector<float> w2, b2;        // [hidden][intermediate], [hidden]
    std::vector<float> ln2_w, ln2_b;  // [hidden]
};

}  // namespace

struct Embedder::Model {
    explicit Model(WordPiece tok) : tokenizer(std::move(tok)) {}

    std::string name;
    int32_t d = 0;  // hidden size
    int32_t n_heads = 0;
    int32_t head_dim = 0;
    int32_t n_layers = 0;
    int32_t d_ff = 0;  // intermediate size
    int32_t n_vocab = 0;
    int32_t n_pos = 0;       // max_position_embeddings
    int32_t max_tokens = 0;  // per text, specials included
    int32_t batch_size = 32;
    float eps = 1e-12f;
    Pooling pooling = Pooling::Mean;
    WordPiece tokenizer;

    std::vector<float> word_emb;            // [n_vocab][d]
    std::vector<float> pos_emb;             // [n_pos][d], token type 0's embedding added
    std::vector<float> emb_ln_w, emb_ln_b;  // [d]
    std::vector<Layer> layers;
    std::vector<float> ones;  // [d] of 1.0: the sum in layer_norm is a dot product
};

struct Embedder::Scratch {
    explicit Scratch(int n_threads) : pool(n_threads) {}
    kernels::ThreadPool pool;
    std::vector<float> x;                    // [T][d] hidden states of all rows
    std::vector<float> qkv;                  // [T][3d] queries, keys, values
    std::vector<float> ctx;                  // [T][d] attention output before the output projection
    std::vector<std::vector<float>> ff;      // [thread][kRowChunk][d_ff]
    std::vector<std::vector<float>> scores;  // [thread][L][L] attention probabilities
    std::vector<int32_t> ids, pos;           // [T] token id and position of each row
};

namespace {

// The forward pass over `seqs` (token ids with [CLS]/[SEP], each at most n_pos long), all rows
// concatenated without padding. out: [seqs.size()][d], L2-normalised embeddings.
template <class Model, class Scratch>
void forward(const Model& m, Scratch& s, std::span<const std::vector<int32_t>> seqs, float* out) {
    const kernels::CpuKernels& k = kernels::cpu_kernels();
    const int64_t d = m.d, d3 = 3 * m.d, d_ff = m.d_ff, hd = m.head_dim, n_heads = m.n_heads;
    std::vector<int64_t> start(seqs.size() + 1, 0);  // rows of text i: [start[i], start[i+1])
    int64_t max_len = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
        const auto len = static_cast<int64_t>(seqs[i].size());
        start[i + 1] = start[i] + len;
        max_len = std::max(max_len, len);
    }
    const int64_t T = start.back();
    const int nt = s.pool.n_threads();
    auto grow = [](std::vector<float>& v, int64_t n) {
        if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
    };
    grow(s.x, T * d);
    grow(s.qkv, T * d3);
    grow(s.ctx, T * d);
    s.ff.resize(static_cast<size_t>(nt));
    s.scores.resize(static_cast<size_t>(nt));
    for (auto& f : s.ff) grow(f, kRowChunk * d_ff);
    for (auto& sc : s.scores) grow(sc, max_len * max_len);
    s.ids.clear();
    s.pos.clear();
    for (const auto& seq : seqs) {
        for (size_t p = 0; p < seq.size(); ++p) {
            s.ids.push_back(seq[p]);
            s.pos.push_back(static_cast<int32_t>(p));
        }
    }
    float* x = s.x.data();
    float* qkv = s.qkv.data();
    float* ctx = s.ctx.data();
    const float* ones = m.ones.data();

    auto rows_of = [T](int idx, int n) {
        return std::pair<int64_t, int64_t>{T * idx / n, T * (idx + 1) / n};
    };
    auto qkv_rows = [&](const Layer& ly, int64_t r0, int64_t r1) {
        fill_rows(qkv, r0, r1, ly.bqkv.data(), d3);
        gemm_xwt(r1 - r0, d3, d, x + r0 * d, d, ly.wqkv.data(), 1.0f, qkv + r0 * d3, d3);
    };

    // Embeddings, LayerNorm, and layer 0's projections.
    s.pool.run([&](int idx, int n) {
        auto [r0, r1] = rows_of(idx, n);
        if (r0 >= r1) return;
        for (int64_t r = r0; r < r1; ++r) {
            const float* we =
                m.word_emb.data() + static_cast<int64_t>(s.ids[static_cast<size_t>(r)]) * d;
            const float* pe =
                m.pos_emb.data() + static_cast<int64_t>(s.pos[static_cast<size_t>(r)]) * d;
            float* row = x + r * d;
            for (int64_t i = 0; i < d; ++i) row[i] = we[i] + pe[i];
            layer_norm(k, ones, row, m.emb_ln_w.data(), m.emb_ln_b.data(), d, m.eps);
        }
        qkv_rows(m.layers[0], r0, r1);
    });

    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const int64_t n_tasks = static_cast<int64_t>(seqs.size()) * n_heads;
    for (size_t l = 0; l < m.layers.size(); ++l) {
        const Layer& ly = m.layers[l];
        const Layer* next = l + 1 < m.layers.size() ? &m.layers[l + 1] : nullptr;

        // Self-attention, one (text, head) pair at a time: a text sees only its own rows, which
        // is what the padding mask does in a padded batch.
        std::atomic<int64_t> next_task{0};
        s.pool.run([&](int idx, int) {
            float* sc = s.scores[static_cast<size_t>(idx)].data();
            for (;;) {
                const int64_t task = next_task.fetch_add(1, std::memory_order_relaxed);
                if (task >= n_tasks) break;
                const auto i = static_cast<size_t>(task / n_heads);
                const int64_t h = task % n_heads;
                const int64_t r0 = start[i], len = start[i + 1] - start[i];
                const float* q = qkv + r0 * d3 + h * hd;
                const float* kk = q + d;
                const float* v = q + 2 * d;
                // scores [len][len] = scale * Q K^T
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(len),
                            static_cast<int>(len), static_cast<int>(hd), scale, q,
                            static_cast<int>(d3), kk, static_cast<int>(d3), 0.0f, sc,
                            static_cast<int>(len));
                for (int64_t r = 0; r < len; ++r) k.softmax(sc + r * len, len);
                // ctx rows, head h's columns = P V
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(len),
                            static_cast<int>(hd), static_cast<int>(len), 1.0f, sc,
                            static_cast<int>(len), v, static_cast<int>(d3), 0.0f,
                            ctx + r0 * d + h * hd, static_cast<int>(d));
            }
        });

        // Output projection + residual + LayerNorm, feed-forward + residual + LayerNorm, and the
        // next layer's projections, in chunks of rows that stay in cache.
        s.pool.run([&](int idx, int n) {
            auto [r0, r1] = rows_of(idx, n);
            float* h = s.ff[static_cast<size_t>(idx)].data();
            for (int64_t c0 = r0; c0 < r1; c0 += kRowChunk) {
                const int64_t c1 = std::min(c0 + kRowChunk, r1), rows = c1 - c0;
                float* xc = x + c0 * d;
                add_rows(x, c0, c1, ly.bo.data(), d);
                gemm_xwt(rows, d, d, ctx + c0 * d, d, ly.wo.data(), 1.0f, xc, d);
                for (int64_t r = 0; r < rows; ++r) {
                    layer_norm(k, ones, xc + r * d, ly.ln1_w.data(), ly.ln1_b.data(), d, m.eps);
                }
                fill_rows(h, 0, rows, ly.b1.data(), d_ff);
                gemm_xwt(rows, d_ff, d, xc, d, ly.w1.data(), 1.0f, h, d_ff);
                gelu_erf(h, rows * d_ff);
                add_rows(x, c0, c1, ly.b2.data(), d);
                gemm_xwt(rows, d, d_ff, h, d_ff, ly.w2.data(), 1.0f, xc, d);
                for (int64_t r = 0; r < rows; ++r) {
                    layer_norm(k, ones, xc + r * d, ly.ln2_w.data(), ly.ln2_b.data(), d, m.eps);
                }
                if (next != nullptr) qkv_rows(*next, c0, c1);
            }
        });
    }

    // Pooling and L2 normalisation (sentence-transformers' Normalize: x / max(|x|, 1e-12)).
    for (size_t i = 0; i < seqs.size(); ++i) {
        float* o = out + static_cast<int64_t>(i) * d;
        const int64_t r0 = start[i], len = start[i + 1] - start[i];
        if (m.pooling == Pooling::Cls) {
            std::copy(x + r0 * d, x + (r0 + 1) * d, o);
        } else {
            std::vector<double> acc(static_cast<size_t>(d), 0.0);
            for (int64_t r = r0; r < r0 + len; ++r) {
                for (int64_t j = 0; j < d; ++j) acc[static_cast<size_t>(j)] += x[r * d + j];
            }
            for (int64_t j = 0; j < d; ++j) {
                o[j] = static_cast<float>(acc[static_cast<size_t>(j)] / static_cast<double>(len));
            }
        }
        double norm2 = 0;
        for (int64_t j = 0; j < d; ++j) norm2 += static_cast<double>(o[j]) * o[j];
        const auto inv = static_cast<float>(1.0 / std::max(std::sqrt(norm2), 1e-12));
        for (int64_t j = 0; j < d; ++j) o[j] *= inv;
    }
}

// Tensor `name` into dst[0, prod(shape)), which must be its shape exactly.
Status read_tensor(const SafetensorsFile& f, const std::string& name, std::vector<int64_t> shape,
                   float* dst) {
    auto t = f.get(name);
    if (!t.ok()) return t.error();
    if ((*t)->shape != shape) {
        return make_error(Errc::Corrupt, f.path() + ": tensor '" + name + "' has shape " +
                                             shape_text((*t)->shape) + ", config.json implies " +
                                             shape_text(shape));
    }
    return f.to_f32(**t, std::span<float>(dst, static_cast<size_t>((*t)->n_elements)));
}

Status read_tensor(const SafetensorsFile& f, const std::string& name, std::vector<int64_t> shape,
                   std::vector<float>& dst) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    dst.assign(static_cast<size_t>(n), 0.0f);
    return read_tensor(f, name, std::move(shape), dst.data());
}

// Optional string setting of tokenizer_config.json (a plain string or {"content": ...}).
void read_token_name(const Json& j, const char* key, std::string& out) {
    auto it = j.find(key);
    if (it == j.end()) return;
    if (it->is_string()) {
        out = it->get<std::string>();
    } else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
        out = (*it)["content"].get<std::string>();
    }
}

}  // namespace

Result<Embedder> Embedder::load(const fs::path& model_dir, const EmbedderParams& params) {
    if (params.n_threads < 0 || params.batch_size < 1 || params.max_tokens < 0 ||
        params.max_tokens == 1) {
        return make_error(Errc::InvalidArgument,
                          "Embedder::load: bad params (n_threads " +
                              std::to_string(params.n_threads) + ", max_tokens " +
                              std::to_string(params.max_tokens) + ", batch_size " +
                              std::to_string(params.batch_size) + ")");
    }
    std::error_code ec;
    if (!fs::is_directory(model_dir, ec)) {
        return make_error(Errc::NotFound,
                          model_dir.string() +
                              ": embedder directory not found (run scripts/setup.sh, or set "
                              "ATTNRAG_EMBEDDER to a sentence-transformers BERT directory)");
    }
    try {
        // config.json: the architecture.
        const fs::path config_path = model_dir / "config.json";
        auto config = read_json(config_path);
        if (!config.ok()) return config.error();
        const Json& c = *config;
        if (!c.is_object()) {
            return make_error(Errc::Corrupt, config_path.string() + ": not a JSON object");
        }
        if (c.contains("model_type") && c["model_type"] != "bert") {
            return make_error(Errc::Unsupported, config_path.string() + ": model_type " +
                                                     c["model_type"].dump() +
                                                     " (only \"bert\" is supported)");
        }
        if (c.value("hidden_act", std::string("gelu")) != "gelu") {
            return make_error(Errc::Unsupported, config_path.string() + ": hidden_act " +
                                                     c["hidden_act"].dump() +
                                                     " (only \"gelu\" is supported)");
        }
        if (c.value("position_embedding_type", std::string("absolute")) != "absolute") {
            return make_error(Errc::Unsupported, config_path.string() +
                                                     ": position_embedding_type " +
                                                     c["position_embedding_type"].dump() +
                                                     " (only \"absolute\" is supported)");
        }
        int32_t dims[7];
        const char* keys[7] = {
            "hidden_size", "num_attention_heads",     "num_hidden_layers", "intermediate_size",
            "vocab_size",  "max_position_embeddings", "type_vocab_size"};
        for (int i = 0; i < 7; ++i) {
            auto v = get_dim(c, config_path, keys[i]);
            if (!v.ok()) return v.error();
            dims[i] = *v;
        }
        const int32_t d = dims[0], n_heads = dims[1];
        if (d % n_heads != 0) {
            return make_error(Errc::Corrupt, config_path.string() + ": hidden_size " +
                                                 std::to_string(d) + " is not a multiple of " +
                                                 "num_attention_heads " + std::to_string(n_heads));
        }
        double eps = 1e-12;
        if (c.contains("layer_norm_eps")) {
            if (!c["layer_norm_eps"].is_number() || c["layer_norm_eps"].get<double>() < 0) {
                return make_error(Errc::Corrupt, config_path.string() + ": bad layer_norm_eps " +
                                                     c["layer_norm_eps"].dump());
            }
            eps = c["layer_norm_eps"].get<double>();
        }

        // 1_Pooling/config.json: mean (the default when absent) or cls.
        Pooling pooling = Pooling::Mean;
        const fs::path pooling_path = model_dir / "1_Pooling" / "config.json";
        if (fs::exists(pooling_path, ec)) {
            auto pc = read_json(pooling_path);
            if (!pc.ok()) return pc.error();
            auto flag = [&](const char* key) { return pc->is_object() && pc->value(key, false); };
            const bool mean = flag("pooling_mode_mean_tokens");
            const bool cls = flag("pooling_mode_cls_token");
            if (flag("pooling_mode_max_tokens") || flag("pooling_mode_mean_sqrt_len_tokens") ||
                flag("pooling_mode_weightedmean_tokens") || flag("pooling_mode_lasttoken") ||
                mean == cls) {
                return make_error(Errc::Unsupported,
                                  pooling_path.string() +
                                      ": pooling must be exactly one of mean_tokens and cls_token");
            }
            pooling = cls ? Pooling::Cls : Pooling::Mean;
        }

        // sentence_bert_config.json: max_seq_length.
        int32_t max_seq = dims[5];
        const fs::path sbert_path = model_dir / "sentence_bert_config.json";
        if (fs::exists(sbert_path, ec)) {
            auto sc = read_json(sbert_path);
            if (!sc.ok()) return sc.error();
            if (sc->is_object() && sc->contains("max_seq_length")) {
                auto v = get_dim(*sc, sbert_path, "max_seq_length");
                if (!v.ok()) return v.error();
                max_seq = std::min(*v, dims[5]);
            }
        }
        const int32_t max_tokens =
            params.max_tokens == 0 ? max_seq : std::min(params.max_tokens, dims[5]);

        // The tokenizer: vocab.txt with tokenizer_config.json's normalisation settings.
        WordPieceConfig wp_config;
        const fs::path tok_config_path = model_dir / "tokenizer_config.json";
        if (fs::exists(tok_config_path, ec)) {
            auto tc = read_json(tok_config_path);
            if (!tc.ok()) return tc.error();
            if (tc->is_object()) {
                const Json& t = *tc;
                if (t.contains("do_lower_case") && t["do_lower_case"].is_boolean()) {
                    wp_config.lowercase = t["do_lower_case"].get<bool>();
                }
                if (t.contains("strip_accents") && t["strip_accents"].is_boolean()) {
                    wp_config.strip_accents = t["strip_accents"].get<bool>();
                }
                if (t.contains("tokenize_chinese_chars") &&
                    t["tokenize_chinese_chars"].is_boolean()) {
                    wp_config.tokenize_chinese_chars = t["tokenize_chinese_chars"].get<bool>();
                }
                read_token_name(t, "unk_token", wp_config.unk_token);
                read_token_name(t, "cls_token", wp_config.cls_token);
                read_token_name(t, "sep_token", wp_config.sep_token);
                read_token_name(t, "pad_token", wp_config.pad_token);
                read_token_name(t, "mask_token", wp_config.mask_token);
            }
        }
        auto tok = WordPiece::load(model_dir / "vocab.txt", wp_config);
        if (!tok.ok()) return tok.error();
        if (tok->n_vocab() > dims[4]) {
            return make_error(Errc::Corrupt, (model_dir / "vocab.txt").string() + ": " +
                                                 std::to_string(tok->n_vocab()) +
                                                 " tokens, but config.json's vocab_size is " +
                                                 std::to_string(dims[4]));
        }

        auto model = std::make_shared<Model>(std::move(tok).value());
        Model& m = *model;
        fs::path abs = model_dir.lexically_normal();
        m.name = abs.filename().empty() ? abs.parent_path().filename().string()
                                        : abs.filename().string();
        m.d = d;
        m.n_heads = n_heads;
        m.head_dim = d / n_heads;
        m.n_layers = dims[2];
        m.d_ff = dims[3];
        m.n_vocab = dims[4];
        m.n_pos = dims[5];
        m.max_tokens = max_tokens;
        m.batch_size = params.batch_size;
        m.eps = static_cast<float>(eps);
        m.pooling = pooling;
        m.ones.assign(static_cast<size_t>(d), 1.0f);

        // model.safetensors: the weights, copied out as f32 (so F16/BF16 files work too) with
        // query/key/value stacked into one matrix per layer.
        auto file = SafetensorsFile::open(model_dir / "model.safetensors");
        if (!file.ok()) return file.error();
        const SafetensorsFile& f = *file;
        std::string pre;
        if (f.find("embeddings.word_embeddings.weight") == nullptr) {
            if (f.find("bert.embeddings.word_embeddings.weight") == nullptr) {
                return make_error(Errc::Corrupt,
                                  f.path() +
                                      ": no tensor 'embeddings.word_embeddings.weight' "
                                      "(is this a BERT model?)");
            }
            pre = "bert.";
        }
        const int64_t D = d, F = m.d_ff;
        ATTNRAG_TRY(
            read_tensor(f, pre + "embeddings.word_embeddings.weight", {m.n_vocab, D}, m.word_emb));
        ATTNRAG_TRY(
            read_tensor(f, pre + "embeddings.position_embeddings.weight", {m.n_pos, D}, m.pos_emb));
        std::vector<float> types;
        ATTNRAG_TRY(
            read_tensor(f, pre + "embeddings.token_type_embeddings.weight", {dims[6], D}, types));
        for (int64_t p = 0; p < m.n_pos; ++p) {
            for (int64_t i = 0; i < D; ++i)
                m.pos_emb[static_cast<size_t>(p * D + i)] += types[static_cast<size_t>(i)];
        }
        ATTNRAG_TRY(read_tensor(f, pre + "embeddings.LayerNorm.weight", {D}, m.emb_ln_w));
        ATTNRAG_TRY(read_tensor(f, pre + "embeddings.LayerNorm.bias", {D}, m.emb_ln_b));
        m.layers.resize(static_cast<size_t>(m.n_layers));
        for (int32_t l = 0; l < m.n_layers; ++l) {
            Layer& ly = m.layers[static_cast<size_t>(l)];
            const std::string p = pre + "encoder.layer." + std::to_string(l) + ".";
            ly.wqkv.assign(static_cast<size_t>(3 * D * D), 0.0f);
            ly.bqkv.assign(static_cast<size_t>(3 * D), 0.0f);
            const char* qkv_names[3] = {"query", "key", "value"};
            for (int j = 0; j < 3; ++j) {
                const std::string base = p + "attention.self." + qkv_names[j];
                ATTNRAG_TRY(read_tensor(f, base + ".weight", {D, D}, ly.wqkv.data() + j * D * D));
                ATTNRAG_TRY(read_tensor(f, base + ".bias", {D}, ly.bqkv.data() + j * D));
            }
            ATTNRAG_TRY(read_tensor(f, p + "attention.output.dense.weight", {D, D}, ly.wo));
            ATTNRAG_TRY(read_tensor(f, p + "attention.output.dense.bias", {D}, ly.bo));
            ATTNRAG_TRY(read_tensor(f, p + "attention.output.LayerNorm.weight", {D}, ly.ln1_w));
            ATTNRAG_TRY(read_tensor(f, p + "attention.output.LayerNorm.bias", {D}, ly.ln1_b));
            ATTNRAG_TRY(read_tensor(f, p + "intermediate.dense.weight", {F, D}, ly.w1));
            ATTNRAG_TRY(read_tensor(f, p + "intermediate.dense.bias", {F}, ly.b1));
            ATTNRAG_TRY(read_tensor(f, p + "output.dense.weight", {D, F}, ly.w2));
            ATTNRAG_TRY(read_tensor(f, p + "output.dense.bias", {D}, ly.b2));
            ATTNRAG_TRY(read_tensor(f, p + "output.LayerNorm.weight", {D}, ly.ln2_w));
            ATTNRAG_TRY(read_tensor(f, p + "output.LayerNorm.bias", {D}, ly.ln2_b));
        }
        kernels::blas_single_threaded();  // attnrag's pool splits the work, not OpenBLAS
        return Embedder(std::move(model), params.n_threads);
    } catch (const std::bad_alloc&) {
        return make_error(Errc::OutOfMemory,
                          model_dir.string() + ": out of memory loading the embedder");
    } catch (const std::exception& e) {
        return make_error(Errc::Corrupt, model_dir.string() + ": " + e.what());
    }
}

Embedder::Embedder(std::shared_ptr<const Model> model, int32_t n_threads)
    : model_(std::move(model)),
      scratch_(std::make_unique<Scratch>(n_threads > 0 ? n_threads
                                                       : kernels::ThreadPool::default_threads())) {}
Embedder::Embedder(Embedder&&) noexcept = default;
Embedder& Embedder::operator=(Embedder&&) noexcept = default;
Embedder::~Embedder() = default;

Embedder Embedder::clone() const {
    return Embedder(model_, scratch_->pool.n_threads());
}
Embedder Embedder::clone(int32_t n_threads) const {
    return Embedder(model_, n_threads);
}

int32_t Embedder::dim() const {
    return model_->d;
}
const std::string& Embedder::name() const {
    return model_->name;
}
int32_t Embedder::max_tokens() const {
    return model_->max_tokens;
}
Pooling Embedder::pooling() const {
    return model_->pooling;
}
int32_t Embedder::n_threads() const {
    return scratch_->pool.n_threads();
}
const WordPiece& Embedder::tokenizer() const {
    return model_->tokenizer;
}

uint32_t Embedder::count_tokens(std::string_view text) const {
    return model_->tokenizer.count_tokens(text);
}

Result<std::vector<float>> Embedder::embed(std::string_view text) {
    std::string_view one[1] = {text};
    auto r = embed_batch(std::span<const std::string_view>(one));
    if (!r.ok()) return r.error();
    return std::move((*r)[0]);
}

Result<std::vector<std::vector<float>>> Embedder::embed_batch(std::span<const std::string> texts) {
    std::vector<std::string_view> views(texts.begin(), texts.end());
    return embed_batch(std::span<const std::string_view>(views));
}

Result<std::vector<std::vector<float>>> Embedder::embed_batch(
    std::span<const std::string_view> texts) {
    const Model& m = *model_;
    std::vector<std::vector<float>> out(texts.size());
    std::vector<std::vector<int32_t>> seqs;
    std::vector<float> flat;
    size_t i = 0;
    try {
        while (i < texts.size()) {
            // One forward pass: up to batch_size texts and kMaxBatchTokens rows (at least one).
            seqs.clear();
            int64_t rows = 0;
            const size_t first = i;
            while (i < texts.size() && seqs.size() < static_cast<size_t>(m.batch_size)) {
                auto ids = m.tokenizer.encode(texts[i], m.max_tokens);
                if (!ids.ok()) {
                    return make_error(ids.error().code, "Embedder: text " + std::to_string(i) +
                                                            ": " + ids.error().message);
                }
                const auto len = static_cast<int64_t>(ids->size());
                if (!seqs.empty() && rows + len > kMaxBatchTokens) break;  // next pass
                rows += len;
                seqs.push_back(std::move(ids).value());
                ++i;
            }
            flat.resize(seqs.size() * static_cast<size_t>(m.d));
            forward(m, *scratch_, std::span<const std::vector<int32_t>>(seqs), flat.data());
            for (size_t j = 0; j < seqs.size(); ++j) {
                out[first + j].assign(flat.begin() + static_cast<std::ptrdiff_t>(j * m.d),
                                      flat.begin() + static_cast<std::ptrdiff_t>((j + 1) * m.d));
            }
        }
    } catch (const std::bad_alloc&) {
        return make_error(Errc::OutOfMemory, "Embedder: out of memory embedding " +
                                                 std::to_string(texts.size()) + " texts");
    }
    return out;
}

std::string default_embedder_dir() {
    if (const char* env = std::getenv("ATTNRAG_EMBEDDER"); env != nullptr && *env != '\0') {
        return env;
    }
    return "models/all-MiniLM-L6-v2";
}

}  // namespace attnrag::index
