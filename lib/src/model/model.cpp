// Model loading: GGUF hyperparameters and tensor views for llama/qwen2, validated up front.
#include "attnrag/model.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>

namespace attnrag {

struct Model::Impl {
    explicit Impl(GgufFile f) : file(std::move(f)) {}
    GgufFile file;
    std::optional<Tokenizer> tokenizer;
    ModelHParams hp;
    std::string path;
    std::string fingerprint;
    kernels::WeightView token_embd;
    kernels::WeightView output;
    const float* output_norm = nullptr;
    std::vector<LayerWeights> layers;
};

namespace {

class Loader {
 public:
    Loader(const GgufFile& f, std::string prefix) : f_(f), prefix_(std::move(prefix)) {}

    Result<int64_t> int_key(const std::string& key, bool required, int64_t fallback) const {
        std::string full = prefix_ + "." + key;
        if (!f_.has(full)) {
            if (required)
                return make_error(Errc::Corrupt,
                                  f_.path() + ": missing metadata key '" + full + "'");
            return fallback;
        }
        return f_.get_int(full);
    }
    Result<double> float_key(const std::string& key, double fallback) const {
        std::string full = prefix_ + "." + key;
        if (!f_.has(full)) return fallback;
        return f_.get_float(full);
    }

    // A tensor with exactly this shape (ggml order) and any supported type.
    Result<kernels::WeightView> matrix(const std::string& name, int64_t n_cols,
                                       int64_t n_rows) const {
        const GgufTensorInfo* t = f_.find_tensor(name);
        if (!t) return make_error(Errc::Corrupt, f_.path() + ": missing tensor '" + name + "'");
        if (t->shape.size() != 2 || t->shape[0] != n_cols || t->shape[1] != n_rows) {
            return make_error(Errc::Corrupt, f_.path() + ": tensor '" + name + "' has shape " +
                                                 shape_str(t->shape) + ", expected [" +
                                                 std::to_string(n_cols) + ", " +
                                                 std::to_string(n_rows) + "]");
        }
        if (kernels::kernel_type_index(t->type) < 0) {
            return make_error(Errc::Unsupported,
                              f_.path() + ": tensor '" + name + "' has unsupported type " +
                                  std::to_string(static_cast<uint32_t>(t->type)));
        }
        kernels::WeightView v;
        v.data = f_.tensor_data(*t);
        v.type = t->type;
        v.n_cols = n_cols;
        v.n_rows = n_rows;
        v.row_bytes = kernels::row_bytes(t->type, n_cols);
        return v;
    }

    // An F32 vector of n elements; optional ones return nullptr when absent.
    Result<const float*> vector(const std::string& name, int64_t n, bool required) const {
        const GgufTensorInfo* t = f_.find_tensor(name);
        if (!t) {
            if (!required) return static_cast<const float*>(nullptr);
            return make_error(Errc::Corrupt, f_.path() + ": missing tensor '" + name + "'");
        }
        if (t->type != kernels::DType::F32 || t->n_elements != n) {
            return make_error(Errc::Unsupported,
                              f_.path() + ": tensor '" + name + "' must be F32 with " +
                                  std::to_string(n) + " elements, found " + shape_str(t->shape) +
                                  " of type " + std::to_string(static_cast<uint32_t>(t->type)));
        }
        return reinterpret_cast<const float*>(f_.tensor_data(*t));
    }

    static std::string shape_str(const std::vector<int64_t>& s) {
        std::string out = "[";
        for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
        return out + "]";
    }

 private:
    const GgufFile& f_;
    std::string prefix_;
};

// FNV-1a 64 over the structure and samples of every tensor's bytes: cheap, and different
// fine-tunes of one architecture differ in their sampled weights.
std::string compute_fingerprint(const GgufFile& f) {
    uint64_t h = 1469598103934665603ull;
    auto mix = [&h](const void* p, size_t n) {
        const auto* b = static_cast<const uint8_t*>(p);
        for (size_t i = 0; i < n; ++i) {
            h ^= b[i];
            h *= 1099511628211ull;
        }
    };
    uint64_t size = f.file_bytes();
    mix(&size, sizeof size);
    for (const auto& t : f.tensors()) {
        mix(t.name.data(), t.name.size());
        mix(&t.type, sizeof t.type);
        for (int64_t d : t.shape) mix(&d, sizeof d);
        const uint8_t* data = f.tensor_data(t);
        size_t n = static_cast<size_t>(t.n_bytes);
        size_t k = std::min<size_t>(n, 64);
        mix(data, k);
        mix(data + n / 2 - std::min(n / 2, k / 2), k);
        mix(data + n - k, k);
    }
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
    return buf;
}

Status check_positive(const std::string& path, const char* what, int64_t v, int64_t max) {
    if (v <= 0 || v > max) {
        return make_error(Errc::Corrupt, path + ": hyperparameter " + what + " = " +
                                             std::to_string(v) + " is outside (0, " +
                                             std::to_string(max) + "]");
    }
    return {};
}

}  // namespace

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

Result<Model> Model::load(const std::string& path) {
    auto file = GgufFile::open(path);
    if (!file) return file.error();
    const GgufFile& f = *file;

    auto arch = f.get_string("general.architecture");
    if (!arch) return make_error(Errc::Corrupt, path + ": " + arch.error().message);
    ModelHParams hp;
    hp.arch_name = *arch;
    if (*arch == "llama") {
        hp.arch = Arch::Llama;
        hp.rope_style = kernels::RopeStyle::Interleaved;
    } else if (*arch == "qwen2") {
        hp.arch = Arch::Qwen2;
        hp.rope_style = kernels::RopeStyle::Neox;
    } else {
        return make_error(Errc::Unsupported,
                          path + ": architecture '" + *arch + "' is not supported (llama, qwen2)");
    }

    Loader ld(f, *arch);
    auto get_i32 = [&](const char* key, bool required, int64_t fallback, int32_t& out) -> Status {
        auto v = ld.int_key(key, required, fallback);
        if (!v) return v.error();
        if (*v < INT32_MIN || *v > INT32_MAX) {
            return make_error(Errc::Corrupt, path + ": " + *arch + "." + key + " out of range");
        }
        out = static_cast<int32_t>(*v);
        return {};
    };
    ATTNRAG_TRY(get_i32("block_count", true, 0, hp.n_layer));
    ATTNRAG_TRY(get_i32("context_length", false, 2048, hp.n_ctx_train));
    ATTNRAG_TRY(get_i32("embedding_length", true, 0, hp.n_embd));
    ATTNRAG_TRY(get_i32("feed_forward_length", true, 0, hp.n_ff));
    ATTNRAG_TRY(get_i32("attention.head_count", true, 0, hp.n_head));
    ATTNRAG_TRY(get_i32("attention.head_count_kv", false, hp.n_head, hp.n_head_kv));
    ATTNRAG_TRY(check_positive(path, "block_count", hp.n_layer, 1024));
    ATTNRAG_TRY(check_positive(path, "embedding_length", hp.n_embd, 1 << 16));
    ATTNRAG_TRY(check_positive(path, "feed_forward_length", hp.n_ff, 1 << 18));
    ATTNRAG_TRY(check_positive(path, "attention.head_count", hp.n_head, 1024));
    ATTNRAG_TRY(check_positive(path, "attention.head_count_kv", hp.n_head_kv, hp.n_head));
    ATTNRAG_TRY(check_positive(path, "context_length", hp.n_ctx_train, 1 << 24));
    if (hp.n_embd % hp.n_head != 0 || hp.n_head % hp.n_head_kv != 0) {
        return make_error(Errc::Corrupt, path + ": embedding_length " + std::to_string(hp.n_embd) +
                                             ", head_count " + std::to_string(hp.n_head) +
                                             " and head_count_kv " + std::to_string(hp.n_head_kv) +
                                             " are inconsistent");
    }
    int32_t key_length = 0;
    ATTNRAG_TRY(get_i32("attention.key_length", false, hp.n_embd / hp.n_head, key_length));
    hp.head_dim = key_length;
    if (hp.head_dim != hp.n_embd / hp.n_head || hp.head_dim % 2 != 0) {
        return make_error(Errc::Unsupported,
                          path + ": head dimension " + std::to_string(hp.head_dim) +
                              " (must be even and equal embedding_length/head_count)");
    }
    ATTNRAG_TRY(get_i32("rope.dimension_count", false, hp.head_dim, hp.n_rot));
    if (hp.n_rot <= 0 || hp.n_rot > hp.head_dim || hp.n_rot % 2 != 0) {
        return make_error(Errc::Corrupt, path + ": rope.dimension_count " +
                                             std::to_string(hp.n_rot) +
                                             " must be even and at most the head dimension");
    }
    auto base = ld.float_key("rope.freq_base", 10000.0);
    if (!base) return base.error();
    auto eps = ld.float_key("attention.layer_norm_rms_epsilon", 1e-5);
    if (!eps) return eps.error();
    if (!(*base > 0) || !(*eps > 0) || *eps > 1) {
        return make_error(Errc::Corrupt,
                          path + ": rope.freq_base or layer_norm_rms_epsilon out of range");
    }
    hp.rope_base = static_cast<float>(*base);
    hp.rms_eps = static_cast<float>(*eps);

    const GgufTensorInfo* te = f.find_tensor("token_embd.weight");
    if (!te || te->shape.size() != 2) {
        return make_error(Errc::Corrupt,
                          path + ": missing or malformed tensor 'token_embd.weight'");
    }
    if (te->shape[1] > INT32_MAX) return make_error(Errc::Corrupt, path + ": vocabulary too large");
    hp.n_vocab = static_cast<int32_t>(te->shape[1]);

    auto impl = std::make_unique<Impl>(std::move(file).value());
    const GgufFile& g = impl->file;
    Loader lg(g, *arch);
    auto tok = Tokenizer::from_gguf(g);
    if (!tok) return tok.error();
    if (tok->n_vocab() != hp.n_vocab) {
        return make_error(Errc::Corrupt, path + ": tokenizer has " +
                                             std::to_string(tok->n_vocab()) +
                                             " tokens but token_embd.weight has " +
                                             std::to_string(hp.n_vocab) + " rows");
    }
    impl->tokenizer.emplace(std::move(tok).value());

    auto emb = lg.matrix("token_embd.weight", hp.n_embd, hp.n_vocab);
    if (!emb) return emb.error();
    impl->token_embd = *emb;
    if (g.find_tensor("output.weight")) {
        auto out = lg.matrix("output.weight", hp.n_embd, hp.n_vocab);
        if (!out) return out.error();
        impl->output = *out;
    } else {
        hp.tied_embeddings = true;
        impl->output = impl->token_embd;
    }
    auto onorm = lg.vector("output_norm.weight", hp.n_embd, true);
    if (!onorm) return onorm.error();
    impl->output_norm = *onorm;

    const int64_t q_dim = int64_t{hp.n_head} * hp.head_dim;
    const int64_t kv_dim = int64_t{hp.n_head_kv} * hp.head_dim;
    const bool bias_required = hp.arch == Arch::Qwen2;
    impl->layers.resize(static_cast<size_t>(hp.n_layer));
    for (int32_t i = 0; i < hp.n_layer; ++i) {
        const std::string p = "blk." + std::to_string(i) + ".";
        LayerWeights& L = impl->layers[static_cast<size_t>(i)];
        auto vec = [&](const char* n, int64_t len, bool req, const float*& out) -> Status {
            auto r = lg.vector(p + n, len, req);
            if (!r) return r.error();
            out = *r;
            return {};
        };
        auto mat = [&](const char* n, int64_t cols, int64_t rows,
                       kernels::WeightView& out) -> Status {
            auto r = lg.matrix(p + n, cols, rows);
            if (!r) return r.error();
            out = *r;
            return {};
        };
        ATTNRAG_TRY(vec("attn_norm.weight", hp.n_embd, true, L.attn_norm));
        ATTNRAG_TRY(vec("ffn_norm.weight", hp.n_embd, true, L.ffn_norm));
        ATTNRAG_TRY(mat("attn_q.weight", hp.n_embd, q_dim, L.wq));
        ATTNRAG_TRY(mat("attn_k.weight", hp.n_embd, kv_dim, L.wk));
        ATTNRAG_TRY(mat("attn_v.weight", hp.n_embd, kv_dim, L.wv));
        ATTNRAG_TRY(mat("attn_output.weight", q_dim, hp.n_embd, L.wo));
        ATTNRAG_TRY(mat("ffn_gate.weight", hp.n_embd, hp.n_ff, L.w_gate));
        ATTNRAG_TRY(mat("ffn_up.weight", hp.n_embd, hp.n_ff, L.w_up));
        ATTNRAG_TRY(mat("ffn_down.weight", hp.n_ff, hp.n_embd, L.w_down));
        ATTNRAG_TRY(vec("attn_q.bias", q_dim, bias_required, L.bq));
        ATTNRAG_TRY(vec("attn_k.bias", kv_dim, bias_required, L.bk));
        ATTNRAG_TRY(vec("attn_v.bias", kv_dim, bias_required, L.bv));
    }
    impl->hp = hp;
    impl->path = path;
    impl->fingerprint = compute_fingerprint(g);
    return Model(std::move(impl));
}

const ModelHParams& Model::hparams() const {
    return impl_->hp;
}
const Tokenizer& Model::tokenizer() const {
    return *impl_->tokenizer;
}
const GgufFile& Model::file() const {
    return impl_->file;
}
const std::string& Model::path() const {
    return impl_->path;
}
const std::string& Model::fingerprint() const {
    return impl_->fingerprint;
}
const kernels::WeightView& Model::token_embd() const {
    return impl_->token_embd;
}
const kernels::WeightView& Model::output() const {
    return impl_->output;
}
const float* Model::output_norm() const {
    return impl_->output_norm;
}
const LayerWeights& Model::layer(int32_t i) const {
    return impl_->layers[static_cast<size_t>(i)];
}

uint64_t Model::decode_weight_bytes() const {
    uint64_t total = 0;
    auto add = [&total](const kernels::WeightView& w) {
        total += w.row_bytes * static_cast<uint64_t>(w.n_rows);
    };
    for (const auto& L : impl_->layers) {
        for (const auto* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) add(*w);
    }
    add(impl_->output);
    total += impl_->token_embd.row_bytes;
    return total;
}

uint64_t Model::matmul_macs_per_token(bool with_lm_head) const {
    uint64_t total = 0;
    auto add = [&total](const kernels::WeightView& w) {
        total += static_cast<uint64_t>(w.n_cols) * static_cast<uint64_t>(w.n_rows);
    };
    for (const auto& L : impl_->layers) {
        for (const auto* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) add(*w);
    }
    if (with_lm_head) add(impl_->output);
    return total;
}

}  // namespace attnrag
