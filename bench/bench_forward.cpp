// Forward-pass benchmark on one backend (cpu or cuda): prefill at several prompt lengths, decode,
// and an InfiniRetri-style chunk pass (prefill with a last-layer attention probe), beside the
// machine's measured limits. A program, not a test: it prints numbers with their setup.
//
//   bench_forward [--backend cpu|cuda] [--model PATH] [--threads N] [--pp 512,2048,8000]
//                 [--tg 128] [--reps 3] [--chunk 2300]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "attnrag/context.hpp"
#include "attnrag/kernels/cuda.hpp"
#include "attnrag/kernels/gemm.hpp"
#include "attnrag/model.hpp"

using namespace attnrag;

namespace {

[[noreturn]] void die(const std::string& msg) {
    std::fprintf(stderr, "bench_forward: %s\n", msg.c_str());
    std::exit(1);
}

std::vector<int32_t> int_list(const std::string& s) {
    std::vector<int32_t> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) {
        char* end = nullptr;
        const long v = std::strtol(item.c_str(), &end, 10);
        if (item.empty() || *end != '\0' || v < 1) die("bad number list: " + s);
        out.push_back(static_cast<int32_t>(v));
    }
    return out;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    std::string backend = "cpu", model_path = default_model_path();
    std::vector<int32_t> pps = {512, 2048, 8000};
    int32_t tg = 128, reps = 3, threads = 0, chunk = 2300;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) die(a + " needs a value");
            return argv[++i];
        };
        if (a == "--backend") backend = value();
        else if (a == "--model") model_path = value();
        else if (a == "--threads") threads = int_list(value())[0];
        else if (a == "--pp") pps = int_list(value());
        else if (a == "--tg") tg = int_list(value())[0];
        else if (a == "--reps") reps = int_list(value())[0];
        else if (a == "--chunk") chunk = int_list(value())[0];
        else die("unknown option " + a + " (see the header of bench/bench_forward.cpp)");
    }
    if (backend != "cpu" && backend != "cuda") die("--backend must be cpu or cuda");
    auto model = Model::load(model_path);
    if (!model) die(model.error().to_string());
    const ModelHParams& hp = model->hparams();
    const int32_t max_pp = *std::max_element(pps.begin(), pps.end());
    ContextParams cp;
    cp.n_ctx = std::max({max_pp, tg, chunk}) + 1;
    cp.n_threads = threads;
    cp.backend = backend == "cuda" ? Backend::Cuda : Backend::Cpu;
    auto ctx = Context::create(*model, cp);
    if (!ctx) die(ctx.error().to_string());

    // Limits of the backend's machine.
    double sgemm_gflops = 0, copy_gbs = 0;
    std::string limits;
    if (cp.backend == Backend::Cuda) {
        std::string why;
        auto dev = kernels::cuda::Device::create(&why);
        if (!dev) die(why);
        sgemm_gflops = dev->measure_sgemm_gflops(8192, 5);
        copy_gbs = dev->measure_copy_gbs(size_t{1} << 30, 5);
        limits = "cuBLAS sgemm 8192^3 f32 (no TF32), device copy 1 GiB";
    } else {
        sgemm_gflops = kernels::measure_sgemm_gflops(ctx->pool(), 1024, 5);
        copy_gbs = kernels::measure_memcpy_gbs(ctx->pool(), size_t{128} << 20, 5);
        limits = "OpenBLAS sgemm 1024^3 per thread, memcpy 128 MiB per thread";
    }
    std::printf("model      %s (%s, %d layers, n_embd %d, n_ctx %d)\n", model->path().c_str(), hp.arch_name.c_str(),
                hp.n_layer, hp.n_embd, cp.n_ctx);
    std::printf("backend    %s, median of %d reps\n", ctx->backend_description().c_str(), reps);
    std::printf("limits     sgemm %.0f GFLOP/s, copy %.0f GB/s (read+write) [%s]\n", sgemm_gflops, copy_gbs,
                limits.c_str());

    std::mt19937 rng(42);
    std::uniform_int_distribution<TokenId> dist(0, hp.n_vocab - 1);
    std::vector<TokenId> prompt(static_cast<size_t>(cp.n_ctx));
    for (auto& t : prompt) t = dist(rng);
    using clock = std::chrono::steady_clock;
    auto seconds = [](clock::time_point t0) { return std::chrono::duration<double>(clock::now() - t0).count(); };
    // Warm-up.
    if (auto st = ctx->eval(std::span(prompt).first(16)); !st) die(st.error().to_string());

    for (int32_t pp : pps) {
        std::vector<double> s;
        for (int32_t r = 0; r < reps; ++r) {
            ctx->clear();
            const auto t0 = clock::now();
            if (auto st = ctx->eval(std::span(prompt).first(static_cast<size_t>(pp))); !st) die(st.error().to_string());
            s.push_back(seconds(t0));
        }
        const double tok_s = pp / median(s);
        const double attn_macs = 2.0 * hp.n_layer * hp.n_head * hp.head_dim * (pp + 1) / 2.0;
        const double gflops = tok_s * 2.0 * (static_cast<double>(model->matmul_macs_per_token(false)) + attn_macs) / 1e9;
        std::printf("prefill    pp %5d: %9.1f tok/s, %7.1f GFLOP/s (weights + attention) = %5.1f%% of sgemm, %.3f s\n",
                    pp, tok_s, gflops, 100 * gflops / sgemm_gflops, median(s));
    }

    {
        std::vector<double> s;
        for (int32_t r = 0; r < reps; ++r) {
            ctx->clear();
            TokenId t = prompt[0];
            const auto t0 = clock::now();
            for (int32_t i = 0; i < tg; ++i) {
                const TokenId one[1] = {t};
                if (auto st = ctx->eval(one); !st) die(st.error().to_string());
                auto l = ctx->logits(0);
                t = static_cast<TokenId>(std::max_element(l.begin(), l.end()) - l.begin());
            }
            s.push_back(seconds(t0));
        }
        const double tok_s = tg / median(s);
        // Bytes of weights read per token: quantized on the CPU, f32 on the GPU.
        const double bytes = cp.backend == Backend::Cuda ? 4.0 * static_cast<double>(model->matmul_macs_per_token(true))
                                                         : static_cast<double>(model->decode_weight_bytes());
        std::printf("decode     tg %5d: %9.1f tok/s, %7.1f GB/s of weights (%.0f MB/token) = %5.1f%% of copy\n", tg,
                    tok_s, tok_s * bytes / 1e9, bytes / 1e6, 100 * tok_s * bytes / 1e9 / copy_gbs);
    }

    {
        // InfiniRetri-style pass: `chunk` tokens, the last 40 rows probed at the last layer over
        // spans of 20 tokens (sentences), logits of the last row.
        ProbeRequest req;
        req.layers = {hp.n_layer - 1};
        for (int32_t r = chunk - 40; r < chunk; ++r) req.rows.push_back(r);
        for (int32_t b = 0; b + 20 <= chunk - 40; b += 20) req.spans.push_back({b, b + 20});
        ProbeResult out;
        std::vector<double> s;
        for (int32_t r = 0; r < reps; ++r) {
            ctx->clear();
            EvalOptions o;
            o.probe = &req;
            o.probe_out = &out;
            const auto t0 = clock::now();
            if (auto st = ctx->eval(std::span(prompt).first(static_cast<size_t>(chunk)), o); !st) {
                die(st.error().to_string());
            }
            s.push_back(seconds(t0));
        }
        std::printf("chunk pass %5d tokens + probe (last layer, 40 rows, %zu spans): %.3f s = %.1f tok/s\n", chunk,
                    req.spans.size(), median(s), chunk / median(s));
    }
    return 0;
}
