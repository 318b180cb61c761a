// A tiny random llama/qwen2 model written as GGUF, and a naive double-precision reference forward.
#include "tiny_model.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <type_traits>

#include "attnrag/gguf.hpp"
#include "attnrag/kernels/cpu.hpp"

namespace attnrag::test {

using kernels::DType;

namespace {

// An f16 super-block scale of `amax` / `n_levels`, nudged up by more than f16's rounding
// (2^-11) so that the stored scale times n_levels still covers amax. Stores the f16 in `h`.
float f16_scale_up(float amax, float n_levels, uint16_t& h) {
    h = kernels::f32_to_f16(amax / n_levels * 1.001f);
    return kernels::f16_to_f32(h);
}

// A Q4_K or Q5_K super-block of x[0, 256): sub-block j (32 elements) decodes to
// d*sc[j]*q - dmin*m[j], q in [0, 2^bits), with 6-bit sc[j] and m[j]. Not ggml's error search:
// the minimum is clamped to <= 0 (as ggml does, so m[j] >= 0) and m[j], then sc[j], round up so
// that the codes cover the sub-block: no clamping, error <= half a step d*sc[j]/2.
template <class Block>
Block quantize_k4_block(const float* x) {
    constexpr bool kQ5 = std::is_same_v<Block, kernels::BlockQ5_K>;
    constexpr int kMaxQ = kQ5 ? 31 : 15;
    Block blk{};
    float neg[8], hi[8], max_neg = 0;
    for (int j = 0; j < 8; ++j) {
        float lo = 0;
        hi[j] = x[32 * j];
        for (int i = 0; i < 32; ++i) {
            lo = std::min(lo, x[32 * j + i]);
            hi[j] = std::max(hi[j], x[32 * j + i]);
        }
        neg[j] = -lo;
        max_neg = std::max(max_neg, neg[j]);
    }
    const float dmin = f16_scale_up(max_neg, 63.0f, blk.dmin);
    uint8_t sc[8], mn[8];
    float dm[8], range[8], max_range = 0;
    for (int j = 0; j < 8; ++j) {
        mn[j] = dmin > 0 ? static_cast<uint8_t>(std::min(63.0f, std::ceil(neg[j] / dmin))) : 0;
        dm[j] = dmin * static_cast<float>(mn[j]);
        range[j] = std::max(0.0f, (hi[j] + dm[j]) / static_cast<float>(kMaxQ));
        max_range = std::max(max_range, range[j]);
    }
    const float d = f16_scale_up(max_range, 63.0f, blk.d);
    for (int j = 0; j < 8; ++j) {
        sc[j] = d > 0 ? static_cast<uint8_t>(std::min(63.0f, std::ceil(range[j] / d))) : 0;
    }
    // ggml's packing (the inverse of get_scale_min_k4): sub-blocks 0-3 in the low 6 bits of
    // bytes 0-3 (scales) and 4-7 (mins); sub-blocks 4-7 as nibbles in bytes 8-11 with their top
    // two bits in the spare top bits of bytes 0-3 (scales) and 4-7 (mins).
    for (int j = 0; j < 4; ++j) {
        blk.scales[j] = sc[j];
        blk.scales[j + 4] = mn[j];
    }
    for (int j = 4; j < 8; ++j) {
        blk.scales[j + 4] = static_cast<uint8_t>((sc[j] & 0x0f) | ((mn[j] & 0x0f) << 4));
        blk.scales[j - 4] = static_cast<uint8_t>(blk.scales[j - 4] | ((sc[j] >> 4) << 6));
        blk.scales[j] = static_cast<uint8_t>(blk.scales[j] | ((mn[j] >> 4) << 6));
    }
    int q[kernels::kQKK];
    for (int j = 0; j < 8; ++j) {
        const float ds = d * static_cast<float>(sc[j]);
        for (int i = 0; i < 32; ++i) {
            const long v = ds > 0 ? std::lround((x[32 * j + i] + dm[j]) / ds) : 0;
            q[32 * j + i] = static_cast<int>(std::clamp(v, 0L, static_cast<long>(kMaxQ)));
        }
    }
    // Chunk c of 64 elements: qs[32c + l] = element 64c + l (low nibble), 64c + 32 + l (high);
    // Q5_K: bit 4 of element 32j + l is bit j of qh[l].
    for (int c = 0; c < 4; ++c) {
        for (int l = 0; l < 32; ++l) {
            blk.qs[32 * c + l] =
                static_cast<uint8_t>((q[64 * c + l] & 0x0f) | ((q[64 * c + 32 + l] & 0x0f) << 4));
        }
    }
    if constexpr (kQ5) {
        for (int j = 0; j < 8; ++j) {
            for (int l = 0; l < 32; ++l) {
                blk.qh[l] = static_cast<uint8_t>(blk.qh[l] | ((q[32 * j + l] >> 4) << j));
            }
        }
    }
    return blk;
}

// A Q6_K super-block of x[0, 256): sub-block j (16 elements) decodes to d*scales[j]*(q - 32),
// q in [0, 64), scales[j] int8. As ggml, the sub-block's largest-magnitude value maps to code 0
// (-32 * a signed scale); |scales[j]| rounds up so that no code leaves [-32, 32] (+32 is
// clamped to 31, the one place the error can exceed half a step).
kernels::BlockQ6_K quantize_q6k_block(const float* x) {
    kernels::BlockQ6_K blk{};
    float scale[16], max_abs = 0;
    for (int j = 0; j < 16; ++j) {
        float mx = 0;
        for (int i = 0; i < 16; ++i) {
            if (std::fabs(x[16 * j + i]) > std::fabs(mx)) mx = x[16 * j + i];
        }
        scale[j] = mx / -32.0f;
        max_abs = std::max(max_abs, std::fabs(scale[j]));
    }
    const float d = f16_scale_up(max_abs, 127.0f, blk.d);
    int q[kernels::kQKK];
    for (int j = 0; j < 16; ++j) {
        int sc = d > 0 ? static_cast<int>(std::min(127.0f, std::ceil(std::fabs(scale[j]) / d))) : 0;
        if (scale[j] < 0) sc = -sc;
        blk.scales[j] = static_cast<int8_t>(sc);
        const float ds = d * static_cast<float>(sc);
        for (int i = 0; i < 16; ++i) {
            const long v = ds != 0 ? std::lround(x[16 * j + i] / ds) : 0;
            q[16 * j + i] = static_cast<int>(std::clamp(v, -32L, 31L)) + 32;
        }
    }
    // Half h of 128 elements uses ql[64h, 64h+64) and qh[32h, 32h+32); for l < 32, elements
    // l, l+32, l+64, l+96 take the low/low/high/high nibbles of ql[l], ql[l+32], ql[l], ql[l+32]
    // and bits 0-1, 2-3, 4-5, 6-7 of qh[l] for their top two bits.
    for (int h = 0; h < 2; ++h) {
        const int* e = q + 128 * h;
        uint8_t* ql = blk.ql + 64 * h;
        uint8_t* qh = blk.qh + 32 * h;
        for (int l = 0; l < 32; ++l) {
            ql[l] = static_cast<uint8_t>((e[l] & 0x0f) | ((e[l + 64] & 0x0f) << 4));
            ql[l + 32] = static_cast<uint8_t>((e[l + 32] & 0x0f) | ((e[l + 96] & 0x0f) << 4));
            qh[l] = static_cast<uint8_t>((e[l] >> 4) | ((e[l + 32] >> 4) << 2) |
                                         ((e[l + 64] >> 4) << 4) | ((e[l + 96] >> 4) << 6));
        }
    }
    return blk;
}

}  // namespace

std::vector<uint8_t> quantize_row(DType type, const std::vector<float>& x) {
    std::vector<uint8_t> out;
    auto put = [&out](const void* p, size_t n) {
        const auto* b = static_cast<const uint8_t*>(p);
        out.insert(out.end(), b, b + n);
    };
    switch (type) {
        case DType::F32: put(x.data(), x.size() * 4); break;
        case DType::F16:
            for (float v : x) {
                uint16_t h = kernels::f32_to_f16(v);
                put(&h, 2);
            }
            break;
        case DType::BF16:
            for (float v : x) {
                uint16_t h = kernels::f32_to_bf16(v);
                put(&h, 2);
            }
            break;
        case DType::Q8_0:
            for (size_t b = 0; b < x.size(); b += 32) {
                float amax = 0;
                for (size_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b + i]));
                kernels::BlockQ8_0 blk{};
                float d = amax / 127.0f;
                blk.d = kernels::f32_to_f16(d);
                float id = d > 0 ? 1.0f / d : 0.0f;
                for (size_t i = 0; i < 32; ++i)
                    blk.qs[i] = static_cast<int8_t>(std::lround(x[b + i] * id));
                put(&blk, sizeof blk);
            }
            break;
        case DType::Q4_0:
            for (size_t b = 0; b < x.size(); b += 32) {
                float amax = 0, mx = 0;
                for (size_t i = 0; i < 32; ++i) {
                    if (std::fabs(x[b + i]) > amax) {
                        amax = std::fabs(x[b + i]);
                        mx = x[b + i];
                    }
                }
                float d = mx / -8.0f;
                float id = d != 0 ? 1.0f / d : 0.0f;
                kernels::BlockQ4_0 blk{};
                blk.d = kernels::f32_to_f16(d);
                for (size_t i = 0; i < 16; ++i) {
                    auto q0 =
                        static_cast<uint8_t>(std::min(15.0f, std::floor(x[b + i] * id + 8.5f)));
                    auto q1 = static_cast<uint8_t>(
                        std::min(15.0f, std::floor(x[b + i + 16] * id + 8.5f)));
                    blk.qs[i] = static_cast<uint8_t>(q0 | (q1 << 4));
                }
                put(&blk, sizeof blk);
            }
            break;
        case DType::Q4_1:
            for (size_t b = 0; b < x.size(); b += 32) {
                float mn = x[b], mx = x[b];
                for (size_t i = 0; i < 32; ++i) {
                    mn = std::min(mn, x[b + i]);
                    mx = std::max(mx, x[b + i]);
                }
                float d = (mx - mn) / 15.0f;
                float id = d > 0 ? 1.0f / d : 0.0f;
                kernels::BlockQ4_1 blk{};
                blk.d = kernels::f32_to_f16(d);
                blk.m = kernels::f32_to_f16(mn);
                for (size_t i = 0; i < 16; ++i) {
                    auto q0 = static_cast<uint8_t>(
                        std::min(15.0f, std::floor((x[b + i] - mn) * id + 0.5f)));
                    auto q1 = static_cast<uint8_t>(
                        std::min(15.0f, std::floor((x[b + i + 16] - mn) * id + 0.5f)));
                    blk.qs[i] = static_cast<uint8_t>(q0 | (q1 << 4));
                }
                put(&blk, sizeof blk);
            }
            break;
        case DType::Q4_K:
        case DType::Q5_K:
        case DType::Q6_K:
            if (x.size() % kernels::kQKK != 0) {
                throw std::runtime_error(
                    "quantize_row: K-quant rows need a multiple of 256 values");
            }
            for (size_t b = 0; b < x.size(); b += kernels::kQKK) {
                if (type == DType::Q4_K) {
                    const auto blk = quantize_k4_block<kernels::BlockQ4_K>(x.data() + b);
                    put(&blk, sizeof blk);
                } else if (type == DType::Q5_K) {
                    const auto blk = quantize_k4_block<kernels::BlockQ5_K>(x.data() + b);
                    put(&blk, sizeof blk);
                } else {
                    const auto blk = quantize_q6k_block(x.data() + b);
                    put(&blk, sizeof blk);
                }
            }
            break;
        default: throw std::runtime_error("quantize_row: type not supported by the test quantizer");
    }
    return out;
}

std::vector<float> dequantize_row(DType type, const std::vector<uint8_t>& bytes, size_t n) {
    std::vector<float> out(n);
    switch (type) {
        case DType::F32: std::memcpy(out.data(), bytes.data(), n * 4); break;
        case DType::F16:
        case DType::BF16:
            for (size_t i = 0; i < n; ++i) {
                uint16_t h;
                std::memcpy(&h, bytes.data() + 2 * i, 2);
                out[i] = type == DType::F16 ? kernels::f16_to_f32(h) : kernels::bf16_to_f32(h);
            }
            break;
        case DType::Q8_0:
            for (size_t b = 0; b < n / 32; ++b) {
                kernels::BlockQ8_0 blk;
                std::memcpy(&blk, bytes.data() + b * sizeof blk, sizeof blk);
                for (size_t i = 0; i < 32; ++i)
                    out[b * 32 + i] = kernels::f16_to_f32(blk.d) * blk.qs[i];
            }
            break;
        case DType::Q4_0:
            for (size_t b = 0; b < n / 32; ++b) {
                kernels::BlockQ4_0 blk;
                std::memcpy(&blk, bytes.data() + b * sizeof blk, sizeof blk);
                float d = kernels::f16_to_f32(blk.d);
                for (size_t i = 0; i < 16; ++i) {
                    out[b * 32 + i] = d * static_cast<float>((blk.qs[i] & 0xF) - 8);
                    out[b * 32 + i + 16] = d * static_cast<float>((blk.qs[i] >> 4) - 8);
                }
            }
            break;
        case DType::Q4_1:
            for (size_t b = 0; b < n / 32; ++b) {
                kernels::BlockQ4_1 blk;
                std::memcpy(&blk, bytes.data() + b * sizeof blk, sizeof blk);
                float d = kernels::f16_to_f32(blk.d), m = kernels::f16_to_f32(blk.m);
                for (size_t i = 0; i < 16; ++i) {
                    out[b * 32 + i] = d * static_cast<float>(blk.qs[i] & 0xF) + m;
                    out[b * 32 + i + 16] = d * static_cast<float>(blk.qs[i] >> 4) + m;
                }
            }
            break;
        case DType::Q4_K:
        case DType::Q5_K:
        case DType::Q6_K:
            // The library's scalar reference decoder: the engine's oracle for these layouts.
            if (n % kernels::kQKK != 0 ||
                bytes.size() < kernels::row_bytes(type, static_cast<int64_t>(n))) {
                throw std::runtime_error("dequantize_row: K-quant row size mismatch");
            }
            kernels::cpu_kernels(kernels::SimdLevel::Scalar)
                .dequant[kernels::kernel_type_index(type)](bytes.data(), out.data(),
                                                           static_cast<int64_t>(n));
            break;
        default:
            throw std::runtime_error("dequantize_row: type not supported by the test quantizer");
    }
    return out;
}

std::vector<std::string> byte_tokens() {
    std::vector<std::string> out(256);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        int cp = printable ? b : 256 + extra++;
        std::string s;
        if (cp < 0x80) {
            s += static_cast<char>(cp);
        } else {
            s += static_cast<char>(0xC0 | (cp >> 6));
            s += static_cast<char>(0x80 | (cp & 0x3F));
        }
        out[static_cast<size_t>(b)] = s;
    }
    return out;
}

TinyWeights write_tiny_model(const TinyModelSpec& spec, const std::string& path) {
    std::mt19937 rng(spec.seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const int hd = spec.n_embd / spec.n_head;
    const int q_dim = spec.n_head * hd, kv_dim = spec.n_head_kv * hd;

    std::vector<std::string> tokens = byte_tokens();
    tokens.push_back("<|endoftext|>");
    tokens.push_back("<|im_start|>");
    tokens.push_back("<|im_end|>");
    std::vector<int32_t> types(tokens.size(), 1);
    for (size_t i = 256; i < tokens.size(); ++i) types[i] = 3;
    TinyWeights w;
    w.n_vocab = static_cast<int>(tokens.size());

    GgufWriter gw;
    const std::string a = spec.arch;
    gw.set_string("general.architecture", a);
    gw.set_string("general.name", "attnrag tiny test model");
    gw.set_u32(a + ".block_count", static_cast<uint32_t>(spec.n_layer));
    gw.set_u32(a + ".context_length", static_cast<uint32_t>(spec.n_ctx));
    gw.set_u32(a + ".embedding_length", static_cast<uint32_t>(spec.n_embd));
    gw.set_u32(a + ".feed_forward_length", static_cast<uint32_t>(spec.n_ff));
    gw.set_u32(a + ".attention.head_count", static_cast<uint32_t>(spec.n_head));
    gw.set_u32(a + ".attention.head_count_kv", static_cast<uint32_t>(spec.n_head_kv));
    gw.set_f32(a + ".rope.freq_base", spec.rope_base);
    gw.set_f32(a + ".attention.layer_norm_rms_epsilon", spec.rms_eps);
    gw.set_string("tokenizer.ggml.model", "gpt2");
    gw.set_string("tokenizer.ggml.pre", "gpt2");
    gw.set_string_array("tokenizer.ggml.tokens", tokens);
    gw.set_i32_array("tokenizer.ggml.token_type", types);
    gw.set_string_array("tokenizer.ggml.merges", {});
    gw.set_u32("tokenizer.ggml.bos_token_id", 257);
    gw.set_u32("tokenizer.ggml.eos_token_id", 258);

    auto add = [&](const std::string& name, int cols, int rows, DType type, float scale) {
        std::vector<float> data(static_cast<size_t>(cols) * static_cast<size_t>(rows));
        for (auto& v : data) v = nd(rng) * scale;
        std::vector<uint8_t> bytes;
        std::vector<float> back;
        for (int r = 0; r < rows; ++r) {
            std::vector<float> row(data.begin() + static_cast<ptrdiff_t>(r) * cols,
                                   data.begin() + static_cast<ptrdiff_t>(r + 1) * cols);
            auto q = quantize_row(type, row);
            auto dq = dequantize_row(type, q, row.size());
            bytes.insert(bytes.end(), q.begin(), q.end());
            back.insert(back.end(), dq.begin(), dq.end());
        }
        std::vector<int64_t> shape =
            rows == 1 ? std::vector<int64_t>{cols} : std::vector<int64_t>{cols, rows};
        auto st = gw.add_tensor(name, shape, type, bytes);
        if (!st) throw std::runtime_error(st.error().message);
        return back;
    };
    auto norm = [&](const std::string& name, int n) {
        std::vector<float> data(static_cast<size_t>(n));
        for (auto& v : data) v = 1.0f + 0.1f * nd(rng);
        std::vector<uint8_t> bytes(data.size() * 4);
        std::memcpy(bytes.data(), data.data(), bytes.size());
        auto st = gw.add_tensor(name, {n}, DType::F32, bytes);
        if (!st) throw std::runtime_error(st.error().message);
        return data;
    };

    const float s = 1.0f / std::sqrt(static_cast<float>(spec.n_embd));
    w.token_embd = add("token_embd.weight", spec.n_embd, w.n_vocab, spec.embd_type, 1.0f);
    w.output_norm = norm("output_norm.weight", spec.n_embd);
    w.output = spec.tied ? w.token_embd
                         : add("output.weight", spec.n_embd, w.n_vocab,
                               spec.output_type.value_or(spec.matrix_type), s);
    for (int l = 0; l < spec.n_layer; ++l) {
        const std::string p = "blk." + std::to_string(l) + ".";
        TinyWeights::Layer L;
        L.attn_norm = norm(p + "attn_norm.weight", spec.n_embd);
        L.wq = add(p + "attn_q.weight", spec.n_embd, q_dim, spec.matrix_type, s);
        L.wk = add(p + "attn_k.weight", spec.n_embd, kv_dim, spec.matrix_type, s);
        L.wv = add(p + "attn_v.weight", spec.n_embd, kv_dim, spec.matrix_type, s);
        L.wo = add(p + "attn_output.weight", q_dim, spec.n_embd, spec.matrix_type, s);
        if (spec.arch == "qwen2") {
            L.bq = add(p + "attn_q.bias", q_dim, 1, DType::F32, 0.1f);
            L.bk = add(p + "attn_k.bias", kv_dim, 1, DType::F32, 0.1f);
            L.bv = add(p + "attn_v.bias", kv_dim, 1, DType::F32, 0.1f);
        }
        L.ffn_norm = norm(p + "ffn_norm.weight", spec.n_embd);
        L.w_gate = add(p + "ffn_gate.weight", spec.n_embd, spec.n_ff, spec.matrix_type, s);
        L.w_up = add(p + "ffn_up.weight", spec.n_embd, spec.n_ff, spec.matrix_type, s);
        L.w_down = add(p + "ffn_down.weight", spec.n_ff, spec.n_embd, spec.matrix_type,
                       1.0f / std::sqrt(static_cast<float>(spec.n_ff)));
        w.layers.push_back(std::move(L));
    }
    auto st = gw.write(path);
    if (!st) throw std::runtime_error(st.error().message);
    return w;
}

std::vector<std::vector<double>> reference_logits(const TinyModelSpec& spec, const TinyWeights& w,
                                                  const std::vector<int32_t>& tokens,
                                                  const std::vector<int32_t>& positions) {
    return reference_forward(spec, w, tokens, positions, {});
}

std::vector<std::vector<double>> reference_forward(const TinyModelSpec& spec, const TinyWeights& w,
                                                   const std::vector<int32_t>& tokens,
                                                   const std::vector<int32_t>& positions,
                                                   const ReferenceOptions& opt) {
    const int d = spec.n_embd, hd = d / spec.n_head, ff = spec.n_ff;
    const int group = spec.n_head / spec.n_head_kv;
    const size_t n = tokens.size();
    const int kv_dim = spec.n_head_kv * hd;
    using Vec = std::vector<double>;
    auto matvec = [](const std::vector<float>& W, const Vec& x, int rows, int cols) {
        Vec y(static_cast<size_t>(rows));
        for (int r = 0; r < rows; ++r) {
            double acc = 0;
            for (int c = 0; c < cols; ++c)
                acc += static_cast<double>(W[static_cast<size_t>(r) * cols + c]) *
                       x[static_cast<size_t>(c)];
            y[static_cast<size_t>(r)] = acc;
        }
        return y;
    };
    auto rmsnorm = [&](const Vec& x, const std::vector<float>& g) {
        double ss = 0;
        for (double v : x) ss += v * v;
        double inv = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + spec.rms_eps);
        Vec y(x.size());
        for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * g[i];
        return y;
    };
    auto rope = [&](Vec& v, int n_heads, int pos) {
        for (int h = 0; h < n_heads; ++h) {
            for (int i = 0; i < hd / 2; ++i) {
                double theta = pos * std::pow(static_cast<double>(spec.rope_base), -2.0 * i / hd);
                size_t a, b;
                if (spec.arch == "qwen2") {
                    a = static_cast<size_t>(h * hd + i);
                    b = a + static_cast<size_t>(hd / 2);
                } else {
                    a = static_cast<size_t>(h * hd + 2 * i);
                    b = a + 1;
                }
                double x0 = v[a], x1 = v[b];
                v[a] = x0 * std::cos(theta) - x1 * std::sin(theta);
                v[b] = x0 * std::sin(theta) + x1 * std::cos(theta);
            }
        }
    };

    std::vector<Vec> x(n);
    for (size_t t = 0; t < n; ++t) {
        x[t].assign(w.token_embd.begin() + static_cast<ptrdiff_t>(tokens[t]) * d,
                    w.token_embd.begin() + static_cast<ptrdiff_t>(tokens[t] + 1) * d);
    }
    if (opt.probs) {
        opt.probs->assign(w.layers.size(), std::vector<std::vector<std::vector<double>>>(
                                               static_cast<size_t>(spec.n_head),
                                               std::vector<std::vector<double>>(n)));
    }
    for (size_t layer_index = 0; layer_index < w.layers.size(); ++layer_index) {
        const auto& L = w.layers[layer_index];
        std::vector<Vec> q(n), k(n), v(n);
        for (size_t t = 0; t < n; ++t) {
            Vec h = rmsnorm(x[t], L.attn_norm);
            q[t] = matvec(L.wq, h, d, d);
            k[t] = matvec(L.wk, h, kv_dim, d);
            v[t] = matvec(L.wv, h, kv_dim, d);
            if (!L.bq.empty()) {
                for (size_t i = 0; i < q[t].size(); ++i) q[t][i] += L.bq[i];
                for (size_t i = 0; i < k[t].size(); ++i) k[t][i] += L.bk[i];
                for (size_t i = 0; i < v[t].size(); ++i) v[t][i] += L.bv[i];
            }
            rope(q[t], spec.n_head, positions[t]);
            rope(k[t], spec.n_head_kv, positions[t]);
        }
        for (size_t t = 0; t < n; ++t) {
            Vec attn(static_cast<size_t>(d), 0.0);
            for (int h = 0; h < spec.n_head; ++h) {
                int g = h / group;
                // Full row over keys 0..t: masked keys get no weight; with APE, the keys
                // ape_local(t, j) form one partial attention (logits / T), the others another,
                // merged through their log-sum-exps with the local one multiplied by S * T.
                std::vector<double> logit(t + 1), p(t + 1, 0.0);
                std::vector<bool> seen(t + 1), local(t + 1);
                for (size_t j = 0; j <= t; ++j) {
                    double acc = 0;
                    for (int i = 0; i < hd; ++i)
                        acc += q[t][static_cast<size_t>(h * hd + i)] *
                               k[j][static_cast<size_t>(g * hd + i)];
                    logit[j] = acc / std::sqrt(static_cast<double>(hd));
                    seen[j] = !opt.visible || opt.visible(t, j);
                    local[j] = seen[j] && opt.ape_local && opt.ape_local(t, j);
                }
                auto lse_of = [&](bool want_local, double div) {
                    double mx = -1e300, sum = 0;
                    bool any = false;
                    for (size_t j = 0; j <= t; ++j) {
                        if (seen[j] && local[j] == want_local) {
                            mx = std::max(mx, logit[j] / div);
                            any = true;
                        }
                    }
                    if (!any) return -1e300;
                    for (size_t j = 0; j <= t; ++j) {
                        if (seen[j] && local[j] == want_local) sum += std::exp(logit[j] / div - mx);
                    }
                    return mx + std::log(sum);
                };
                const double lse_local = lse_of(true, opt.ape_temperature);
                const double lse_other = lse_of(false, 1.0);
                const double w_local =
                    lse_local < -1e299 ? -1e300 : opt.ape_scale * opt.ape_temperature * lse_local;
                const double top = std::max(w_local, lse_other);
                const double total =
                    top + std::log(std::exp(w_local - top) + std::exp(lse_other - top));
                for (size_t j = 0; j <= t; ++j) {
                    if (!seen[j]) continue;
                    if (local[j]) {
                        p[j] =
                            std::exp(logit[j] / opt.ape_temperature - lse_local + w_local - total);
                    } else {
                        p[j] = std::exp(logit[j] - lse_other + lse_other - total);
                    }
                }
                if (opt.probs) (*opt.probs)[layer_index][static_cast<size_t>(h)][t] = p;
                for (size_t j = 0; j <= t; ++j) {
                    for (int i = 0; i < hd; ++i)
                        attn[static_cast<size_t>(h * hd + i)] +=
                            p[j] * v[j][static_cast<size_t>(g * hd + i)];
                }
            }
            Vec o = matvec(L.wo, attn, d, d);
            for (size_t i = 0; i < o.size(); ++i) x[t][i] += o[i];
        }
        for (size_t t = 0; t < n; ++t) {
            Vec h = rmsnorm(x[t], L.ffn_norm);
            Vec g = matvec(L.w_gate, h, ff, d), u = matvec(L.w_up, h, ff, d);
            for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
            Vec o = matvec(L.w_down, g, d, ff);
            for (size_t i = 0; i < o.size(); ++i) x[t][i] += o[i];
        }
    }
    std::vector<Vec> logits(n);
    for (size_t t = 0; t < n; ++t)
        logits[t] = matvec(w.output, rmsnorm(x[t], w.output_norm), w.n_vocab, d);
    return logits;
}

}  // namespace attnrag::test
