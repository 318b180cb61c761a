// attnrag bench: prefill and decode speed beside this machine's measured sgemm and copy limits.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>

#include "args.h"
#include "attnrag/context.hpp"
#include "attnrag/kernels/cpu.hpp"
#include "attnrag/kernels/gemm.hpp"
#include "commands.h"
#include "common.h"

namespace attnrag::cli {

int cmd_bench(int argc, char** argv) {
    if (argc > 0 && std::string(argv[0]) == "kv") return cmd_bench_kv(argc - 1, argv + 1);
    const std::vector<OptionSpec> specs = {
        {"pp", true, "prompt tokens for the prefill test (default 512)"},
        {"tg", true, "tokens for the decode test (default 128)"},
        {"reps", true, "repetitions; the median is reported (default 3)"},
        {"json", false, "print one JSON object"},
        kModelOption,
        kThreadsOption,
        {"help", false, "show this help"},
    };
    Args args(argc, argv, specs);
    if (args.flag("help")) {
        std::printf("%s", usage_text("bench", "[--pp 512] [--tg 128] [--threads N] [--json]", specs).c_str());
        return 0;
    }
    auto pp = static_cast<int32_t>(args.get_int("pp", 512));
    auto tg = static_cast<int32_t>(args.get_int("tg", 128));
    auto reps = static_cast<int32_t>(args.get_int("reps", 3));
    auto threads = static_cast<int32_t>(args.get_int("threads", 0));
    if (!args.ok()) return fail_usage("bench", args.error());
    if (pp < 1 || tg < 1 || reps < 1 || threads < 0) return fail_usage("bench", "--pp, --tg, --reps must be >= 1");
    const bool json = args.flag("json");

    auto model = load_model_from(args, "bench");
    if (!model) return 1;
    const ModelHParams& hp = model->hparams();
    ContextParams cp;
    cp.n_ctx = std::max(pp, tg) + 1;
    cp.n_threads = threads;
    auto ctx = Context::create(*model, cp);
    if (!ctx) return fail("bench", ctx.error().message);
    kernels::ThreadPool& pool = ctx->pool();

    // Machine limits, measured with the same threads.
    const double sgemm_gflops = kernels::measure_sgemm_gflops(pool, 1024, 5);
    const double memcpy_gbs = kernels::measure_memcpy_gbs(pool, size_t{128} << 20, 5);
    const double read_gbs = kernels::measure_read_gbs(pool, size_t{256} << 20, 5);

    std::mt19937 rng(42);
    std::uniform_int_distribution<TokenId> dist(0, hp.n_vocab - 1);
    std::vector<TokenId> prompt(static_cast<size_t>(pp));
    for (auto& t : prompt) t = dist(rng);
    using clock = std::chrono::steady_clock;
    auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
    };

    // Warm-up: fault in the weights and scratch buffers.
    ctx->clear();
    if (auto st = ctx->eval(std::span(prompt).first(std::min<size_t>(prompt.size(), 16))); !st) {
        return fail("bench", st.error().message);
    }

    std::vector<double> pp_s, tg_s;
    for (int32_t r = 0; r < reps; ++r) {
        ctx->clear();
        auto t0 = clock::now();
        if (auto st = ctx->eval(prompt); !st) return fail("bench", st.error().message);
        pp_s.push_back(std::chrono::duration<double>(clock::now() - t0).count());

        ctx->clear();
        TokenId t = prompt[0];
        auto t1 = clock::now();
        for (int32_t i = 0; i < tg; ++i) {
            const TokenId one[1] = {t};
            if (auto st = ctx->eval(one); !st) return fail("bench", st.error().message);
            t = static_cast<TokenId>(std::max_element(ctx->logits(0).begin(), ctx->logits(0).end()) -
                                     ctx->logits(0).begin());
        }
        tg_s.push_back(std::chrono::duration<double>(clock::now() - t1).count());
    }
    const double prefill_tok_s = pp / median(pp_s);
    const double decode_tok_s = tg / median(tg_s);
    // Limits: prefill is FLOP-bound (2 FLOPs per multiply-add of the weight matrices; attention
    // adds a little on top), decode is bound by reading every weight byte once per token.
    // Prefill work per token: the layers' weight matmuls plus causal attention (QK^T and PV over
    // (pp+1)/2 keys on average); the LM head runs for the last token only.
    const double attn_macs = 2.0 * hp.n_layer * hp.n_head * hp.head_dim * (pp + 1) / 2.0;
    const double flops_per_token = 2.0 * (static_cast<double>(model->matmul_macs_per_token(false)) + attn_macs);
    const double bytes_per_token = static_cast<double>(model->decode_weight_bytes());
    const double prefill_gflops = prefill_tok_s * flops_per_token / 1e9;
    const double decode_gbs = decode_tok_s * bytes_per_token / 1e9;

    if (json) {
        std::printf("{\"model\": %s, \"threads\": %d, \"simd\": \"%.*s\", \"pp\": %d, \"tg\": %d, \"reps\": %d, "
                    "\"prefill_tok_s\": %.2f, \"decode_tok_s\": %.2f, \"sgemm_gflops\": %.2f, \"memcpy_gbs\": %.2f, \"read_gbs\": %.2f, "
                    "\"prefill_gflops\": %.2f, \"prefill_fraction_of_sgemm\": %.3f, "
                    "\"decode_weight_gbs\": %.2f, \"decode_fraction_of_read\": %.3f, "
                    "\"weight_bytes_per_token\": %.0f}\n",
                    json_string(model->path()).c_str(), pool.n_threads(),
                    static_cast<int>(kernels::simd_level_name(kernels::active_simd_level()).size()),
                    kernels::simd_level_name(kernels::active_simd_level()).data(), pp, tg, reps, prefill_tok_s,
                    decode_tok_s, sgemm_gflops, memcpy_gbs, read_gbs, prefill_gflops, prefill_gflops / sgemm_gflops,
                    decode_gbs, decode_gbs / read_gbs, bytes_per_token);
        return 0;
    }
    std::printf("model        %s (%s, %d layers, n_embd %d)\n", model->path().c_str(), hp.arch_name.c_str(),
                hp.n_layer, hp.n_embd);
    std::printf("setup        %d threads, SIMD %.*s, median of %d reps\n", pool.n_threads(),
                static_cast<int>(kernels::simd_level_name(kernels::active_simd_level()).size()),
                kernels::simd_level_name(kernels::active_simd_level()).data(), reps);
    std::printf("limits       sgemm %.1f GFLOP/s (1024^3 f32, OpenBLAS per thread), memcpy %.1f GB/s (read+write),\n"
                "             streaming read %.1f GB/s (256 MiB per thread)\n",
                sgemm_gflops, memcpy_gbs, read_gbs);
    std::printf("prefill pp%d  %.1f tok/s = %.1f GFLOP/s (matmuls + attention) = %.0f%% of sgemm\n", pp, prefill_tok_s,
                prefill_gflops, 100 * prefill_gflops / sgemm_gflops);
    std::printf("decode tg%d   %.1f tok/s = %.1f GB/s of weights (%.1f MB/token) = %.0f%% of streaming read\n",
                tg, decode_tok_s, decode_gbs, bytes_per_token / 1e6, 100 * decode_gbs / read_gbs);
    return 0;
}

}  // namespace attnrag::cli
