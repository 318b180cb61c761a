// attnrag perplexity: perplexity of the model on a text file.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "args.h"
#include "attnrag/perplexity.hpp"
#include "commands.h"
#include "common.h"

namespace attnrag::cli {

int cmd_perplexity(int argc, char** argv) {
    const std::vector<OptionSpec> specs = {
        {"file", true, "UTF-8 text file (required)"},
        {"ctx", true, "window size in tokens (default 2048)"},
        {"chunks", true, "score only the first N windows (default: all)"},
        {"score-second-half", false,
         "score only the predictions in the second half of each full window, as llama.cpp's "
         "llama-perplexity does (default: every token after a window's first)"},
        {"json", false, "print one JSON object"},
        kModelOption,
        kThreadsOption,
        {"help", false, "show this help"},
    };
    Args args(argc, argv, specs);
    if (args.flag("help")) {
        std::printf("%s", usage_text("perplexity", "--file F [--ctx N] [options]", specs).c_str());
        return 0;
    }
    auto n_ctx = static_cast<int32_t>(args.get_int("ctx", 2048));
    auto chunks = static_cast<int32_t>(args.get_int("chunks", 0));
    auto threads = static_cast<int32_t>(args.get_int("threads", 0));
    if (!args.ok()) return fail_usage("perplexity", args.error());
    auto path = args.get("file");
    if (!path) return fail_usage("perplexity", "--file is required");
    if (n_ctx < 2 || chunks < 0 || threads < 0)
        return fail_usage("perplexity", "--ctx must be >= 2, --chunks and --threads >= 0");

    std::ifstream in(*path, std::ios::binary);
    if (!in) return fail("perplexity", "cannot open " + *path);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();

    auto model = load_model_from(args, "perplexity");
    if (!model) return 1;
    auto tokens = model->tokenizer().encode(text);
    if (!tokens) return fail("perplexity", *path + ": " + tokens.error().message);
    if (tokens->size() < 2) return fail("perplexity", *path + ": fewer than 2 tokens");

    ContextParams cp;
    cp.n_ctx = n_ctx;
    cp.n_threads = threads;
    auto ctx = Context::create(*model, cp);
    if (!ctx) return fail("perplexity", ctx.error().message);
    const bool json = args.flag("json");
    const bool second_half = args.flag("score-second-half");
    auto r = perplexity(
        *ctx, *tokens, n_ctx, chunks,
        [json](int32_t w, int32_t n) {
            if (!json) std::fprintf(stderr, "\rwindow %d/%d", w + 1, n);
            return true;
        },
        second_half ? n_ctx / 2 : 0);
    if (!json) std::fprintf(stderr, "\n");
    if (!r) return fail("perplexity", r.error().message);
    if (json) {
        std::printf(
            "{\"perplexity\": %.4f, \"mean_nll\": %.6f, \"n_scored\": %lld, \"n_windows\": %d, "
            "\"n_tokens_file\": %zu, \"ctx\": %d, \"scored\": \"%s\"}\n",
            r->perplexity, r->mean_nll, static_cast<long long>(r->n_scored), r->n_windows,
            tokens->size(), n_ctx, second_half ? "second half" : "all");
    } else {
        std::printf("perplexity: %.4f\n", r->perplexity);
        std::printf("tokens scored: %lld in %d window(s) of %d (file has %zu tokens)\n",
                    static_cast<long long>(r->n_scored), r->n_windows, n_ctx, tokens->size());
    }
    return 0;
}

}  // namespace attnrag::cli
