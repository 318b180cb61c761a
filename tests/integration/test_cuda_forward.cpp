// The forward pass on the CUDA backend against the naive reference and the CPU backend: tiny
// random models (llama, qwen2, quantized), block masks, probes, and the real SmolLM2. Without a
// CUDA device (or in a build without the backend) a CUDA context must be refused with a reason.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "attnrag/context.hpp"
#include "attnrag/kernels/cuda.hpp"
#include "attnrag/model.hpp"
#include "real_model.hpp"
#include "test_support.hpp"
#include "tiny_loaded.hpp"
#include "tiny_model.hpp"

using namespace attnrag;
using kernels::DType;

namespace {

bool have_cuda() {
    std::string why;
    const bool ok = kernels::cuda::available(&why);
    if (!ok) WARN("no CUDA device, GPU forward checks skipped: " << why);
    return ok;
}

using test::load_tiny;
using test::rel_err;
using test::some_tokens;

Context cuda_context(const Model& model, int32_t n_ctx, int32_t n_batch) {
    auto ctx = Context::create(model, {.n_ctx = n_ctx, .n_threads = 2, .n_batch = n_batch, .backend = Backend::Cuda});
    if (!ctx) FAIL(ctx.error().to_string());
    return std::move(ctx).value();
}

}  // namespace

TEST_CASE("a CUDA context is refused with the reason when there is no device", "[cuda]") {
    test::LoadedTiny L = load_tiny({});
    auto ctx = Context::create(L.model, {.n_ctx = 64, .backend = Backend::Cuda});
    if (kernels::cuda::available()) {
        REQUIRE(ctx.ok());
        CHECK(ctx->backend() == Backend::Cuda);
        CHECK(ctx->backend_description().rfind("cuda: ", 0) == 0);
        return;
    }
    REQUIRE_FALSE(ctx.ok());
    CHECK(ctx.error().code == Errc::Unsupported);
    CHECK(ctx.error().message.find("CUDA") != std::string::npos);
}

TEST_CASE("the CUDA forward pass matches the reference on tiny models, batched and decoding", "[cuda]") {
    if (!have_cuda()) return;
    test::TinyModelSpec llama;
    test::TinyModelSpec qwen;
    qwen.arch = "qwen2";
    qwen.n_head_kv = 4;
    qwen.seed = 2;
    test::TinyModelSpec quant;
    quant.matrix_type = DType::Q4_1;
    quant.embd_type = DType::Q8_0;
    quant.tied = false;
    quant.seed = 3;
    for (const test::TinyModelSpec& spec : {llama, qwen, quant}) {
        CAPTURE(spec.arch, static_cast<int>(spec.matrix_type));
        test::LoadedTiny L = load_tiny(spec);
        const auto tokens = some_tokens(41, L.weights.n_vocab, spec.seed);
        std::vector<int32_t> pos(tokens.size());
        std::iota(pos.begin(), pos.end(), 7);  // positions need not start at 0
        const auto ref = test::reference_logits(spec, L.weights, tokens, pos);
        Context ctx = cuda_context(L.model, 64, 16);  // 38 tokens = three micro-batches
        EvalOptions all;
        all.logits = LogitsMode::All;
        all.positions = std::span(pos).first(38);
        REQUIRE(ctx.eval(std::span(tokens).first(38), all).ok());
        REQUIRE(ctx.n_logit_rows() == 38);
        for (int32_t t = 0; t < 38; ++t) {
            INFO("prefill row " << t);
            CHECK(rel_err(ctx.logits(t), ref[static_cast<size_t>(t)]) < 1e-4);
        }
        for (size_t t = 38; t < tokens.size(); ++t) {
            INFO("decode token " << t);
            EvalOptions one;
            one.positions = std::span(pos).subspan(t, 1);
            REQUIRE(ctx.eval(std::span(tokens).subspan(t, 1), one).ok());
            CHECK(rel_err(ctx.logits(0), ref[t]) < 1e-4);
        }
        // truncate + eval again rewrites the same slots with the same result.
        ctx.truncate(40);
        EvalOptions last;
        last.positions = std::span(pos).subspan(40, 1);
        REQUIRE(ctx.eval(std::span(tokens).subspan(40, 1), last).ok());
        CHECK(rel_err(ctx.logits(0), ref[40]) < 1e-4);
    }
}

TEST_CASE("CUDA block masks and probes equal the CPU backend's", "[cuda]") {
    if (!have_cuda()) return;
    test::LoadedTiny L = load_tiny({});
    const auto tokens = some_tokens(27, L.weights.n_vocab, 9);
    // Shared prefix [0,5), Local passages [5,11) id 1 and [11,17) id 2 sharing positions 5..10,
    // Global question [17,27).
    std::vector<BlockTag> tags(tokens.size());
    std::vector<int32_t> pos(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) {
        if (i < 5) {
            tags[i] = {0, BlockKind::Shared};
            pos[i] = static_cast<int32_t>(i);
        } else if (i < 17) {
            tags[i] = {i < 11 ? 1 : 2, BlockKind::Local};
            pos[i] = 5 + static_cast<int32_t>((i - 5) % 6);
        } else {
            tags[i] = {0, BlockKind::Global};
            pos[i] = static_cast<int32_t>(i) - 6;
        }
    }
    ProbeRequest req;
    req.layers = {0, 1};
    req.rows = {16, 20, 26};
    req.spans = {{0, 5}, {5, 11}, {11, 17}, {17, 27}};
    req.keep_probs = true;
    for (bool early_exit : {false, true}) {
        CAPTURE(early_exit);
        req.stop_after_last_layer = early_exit;
        ProbeResult cpu_probe, gpu_probe;
        auto cpu = Context::create(L.model, {.n_ctx = 64, .n_threads = 2, .n_batch = 8});
        REQUIRE(cpu.ok());
        Context gpu = cuda_context(L.model, 64, 8);
        for (Context* c : {&*cpu, &gpu}) {
            EvalOptions o;
            o.positions = pos;
            o.blocks = tags;
            o.logits = LogitsMode::All;
            o.probe = &req;
            o.probe_out = c == &gpu ? &gpu_probe : &cpu_probe;
            REQUIRE(c->eval(tokens, o).ok());
            CHECK(c->n_past() == (early_exit ? 0 : 27));
        }
        if (!early_exit) {
            for (int32_t t = 0; t < 27; ++t) {
                INFO("row " << t);
                CHECK(rel_err(gpu.logits(t), cpu->logits(t)) < 1e-4);
            }
        }
        REQUIRE(gpu_probe.mass.size() == cpu_probe.mass.size());
        REQUIRE(gpu_probe.n_heads == 4);
        for (size_t i = 0; i < cpu_probe.mass.size(); ++i) CHECK(gpu_probe.mass[i] == Approx(cpu_probe.mass[i]).margin(1e-5));
        // Row 16 (passage 2) sees the prefix and its own passage only.
        for (int32_t li = 0; li < 2; ++li) {
            for (int32_t hi = 0; hi < 4; ++hi) {
                CHECK(gpu_probe.span_mass(li, hi, 0, 1) == 0.0f);
                CHECK(gpu_probe.span_mass(li, hi, 0, 0) + gpu_probe.span_mass(li, hi, 0, 2) == Approx(1.0f).margin(1e-5));
            }
        }
        for (size_t i = 0; i < cpu_probe.probs.size(); ++i) {
            REQUIRE(gpu_probe.probs[i].size() == cpu_probe.probs[i].size());
            for (size_t j = 0; j < cpu_probe.probs[i].size(); ++j) {
                CHECK(gpu_probe.probs[i][j] == Approx(cpu_probe.probs[i][j]).margin(1e-5));
            }
        }
    }
}

TEST_CASE("CPU-only context operations answer Unsupported on the CUDA backend", "[cuda]") {
    if (!have_cuda()) return;
    test::LoadedTiny L = load_tiny({});
    Context gpu = cuda_context(L.model, 64, 16);
    const auto tokens = some_tokens(8, L.weights.n_vocab, 4);
    REQUIRE(gpu.eval(tokens).ok());
    auto kv = gpu.extract(0, 4);
    REQUIRE_FALSE(kv.ok());
    CHECK(kv.error().code == Errc::Unsupported);
    const std::vector<int32_t> slots = {1, 2};
    auto rc = gpu.recompute(slots);
    REQUIRE_FALSE(rc.ok());
    CHECK(rc.error().code == Errc::Unsupported);
    EvalOptions ape;
    ape.ape = {2.0f, 1.0f};
    auto st = gpu.eval(std::span(tokens).first(1), ape);
    REQUIRE_FALSE(st.ok());
    CHECK(st.error().code == Errc::Unsupported);
    CHECK(gpu.n_past() == 8);  // refused calls leave the cache as it was
    // A full cache is refused before anything runs.
    const auto many = some_tokens(60, L.weights.n_vocab, 5);
    auto full = gpu.eval(many);
    REQUIRE_FALSE(full.ok());
    CHECK(full.error().code == Errc::OutOfRange);
    CHECK(gpu.n_past() == 8);
}

TEST_CASE("SmolLM2 on the CUDA backend predicts as on the CPU", "[cuda][smollm2]") {
    if (!have_cuda()) return;
    const Model& model = test::real_model();
    const std::string text =
        "The lighthouse keeper climbed the spiral stairs every evening at dusk. He cleaned the great lens, "
        "trimmed the wick and wrote the weather in a leather book: wind from the west, a light swell, fog "
        "over the harbour by midnight. Ships passing the point saw his lamp turn once every ten seconds, and "
        "the fishermen of the village set their clocks by it. When the keeper grew old, his daughter took "
        "the key, and the light never missed a night.";
    auto tokens = model.tokenizer().encode(text);
    REQUIRE(tokens.ok());
    const auto n = static_cast<int32_t>(tokens->size());
    auto cpu = Context::create(model, {.n_ctx = 512, .n_threads = 2});
    REQUIRE(cpu.ok());
    Context gpu = cuda_context(model, 512, 64);
    EvalOptions all;
    all.logits = LogitsMode::All;
    REQUIRE(cpu->eval(*tokens, all).ok());
    REQUIRE(gpu.eval(*tokens, all).ok());
    // The CPU rounds activations to int8 blocks for quantized weights (about 1 %); the GPU
    // multiplies in f32. Both must predict the same next tokens nearly everywhere, with close
    // log-probabilities of the text's own tokens.
    int agree = 0;
    double nll_cpu = 0, nll_gpu = 0;
    auto log_prob = [](std::span<const float> l, int32_t t) {
        const float mx = *std::max_element(l.begin(), l.end());
        double s = 0;
        for (float v : l) s += std::exp(static_cast<double>(v) - mx);
        return static_cast<double>(l[static_cast<size_t>(t)]) - mx - std::log(s);
    };
    for (int32_t i = 0; i + 1 < n; ++i) {
        auto a = cpu->logits(i), b = gpu.logits(i);
        const auto ia = std::max_element(a.begin(), a.end()) - a.begin();
        const auto ib = std::max_element(b.begin(), b.end()) - b.begin();
        agree += ia == ib;
        const int32_t next = (*tokens)[static_cast<size_t>(i) + 1];
        nll_cpu -= log_prob(a, next);
        nll_gpu -= log_prob(b, next);
    }
    const double frac = static_cast<double>(agree) / (n - 1);
    WARN("SmolLM2 CPU vs CUDA: top-1 agreement " << frac << ", mean NLL " << nll_cpu / (n - 1) << " vs "
                                                 << nll_gpu / (n - 1) << " over " << n - 1 << " tokens; "
                                                 << gpu.backend_description());
    CHECK(frac >= 0.9);
    CHECK(std::fabs(nll_cpu - nll_gpu) / (n - 1) < 0.05);
}
