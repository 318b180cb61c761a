// attnrag generate: text generation from a prompt, streamed to stdout.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "args.h"
#include "attnrag/context.hpp"
#include "attnrag/generate.hpp"
#include "attnrag/pipelines/prompts.hpp"
#include "commands.h"
#include "common.h"

namespace attnrag::cli {

int cmd_generate(int argc, char** argv) {
    const std::vector<OptionSpec> specs = {
        {"prompt", true, "the prompt text"},
        {"prompt-file", true, "read the prompt from a UTF-8 file instead"},
        {"chat", false, "wrap the prompt as a user turn in the model's chat template"},
        {"system", true, "system message for --chat (default: none)"},
        {"template-system", false,
         "with --chat and no --system: insert the GGUF template's default system turn (without "
         "it: the model family's default, which is Qwen's system turn and none for SmolLM2)"},
        {"max-tokens", true, "maximum tokens to generate (default 256)"},
        {"temp", true, "sampling temperature; 0 = greedy (default 0)"},
        {"top-k", true, "top-k cut (default 40)"},
        {"top-p", true, "nucleus cut (default 0.95)"},
        {"repeat-penalty", true, "repetition penalty (default 1.0 = off)"},
        {"seed", true, "random seed (default 24301)"},
        {"stop", true, "stop string"},
        {"ctx", true, "context size in tokens (default: the model's)"},
        {"json", false, "print one JSON object instead of streaming"},
        kModelOption,
        kThreadsOption,
        {"help", false, "show this help"},
    };
    Args args(argc, argv, specs);
    if (args.flag("help")) {
        std::printf("%s", usage_text("generate", "--prompt TEXT [options]", specs).c_str());
        return 0;
    }
    GenerateParams gp;
    gp.max_tokens = static_cast<int32_t>(args.get_int("max-tokens", 256));
    gp.sampler.temperature = static_cast<float>(args.get_double("temp", 0.0));
    gp.sampler.top_k = static_cast<int32_t>(args.get_int("top-k", 40));
    gp.sampler.top_p = static_cast<float>(args.get_double("top-p", 0.95));
    gp.sampler.repeat_penalty = static_cast<float>(args.get_double("repeat-penalty", 1.0));
    gp.sampler.seed = static_cast<uint64_t>(args.get_int("seed", 0x5EED));
    if (auto s = args.get("stop")) gp.stop.push_back(*s);
    ContextParams cp;
    cp.n_ctx = static_cast<int32_t>(args.get_int("ctx", 0));
    cp.n_threads = static_cast<int32_t>(args.get_int("threads", 0));
    if (!args.ok()) return fail_usage("generate", args.error());
    auto prompt_text = args.get("prompt");
    if (auto file = args.get("prompt-file")) {
        if (prompt_text) return fail_usage("generate", "give --prompt or --prompt-file, not both");
        std::ifstream in(*file, std::ios::binary);
        if (!in) return fail("generate", "cannot open " + *file);
        std::stringstream ss;
        ss << in.rdbuf();
        prompt_text = ss.str();
    }
    if (!prompt_text) return fail_usage("generate", "--prompt or --prompt-file is required");
    if (gp.max_tokens < 0 || cp.n_ctx < 0 || cp.n_threads < 0) {
        return fail_usage("generate", "--max-tokens, --ctx and --threads must be >= 0");
    }

    auto model = load_model_from(args, "generate");
    if (!model) return 1;
    const Tokenizer& tok = model->tokenizer();
    Result<std::vector<TokenId>> prompt = std::vector<TokenId>{};
    if (args.flag("chat")) {
        std::vector<ChatMessage> msgs;
        if (auto sys = args.get("system")) msgs.push_back({"system", *sys});
        msgs.push_back({"user", *prompt_text});
        if (args.flag("template-system")) {
            prompt = tok.encode_chat(msgs, true, true);
        } else {
            auto format = pipelines::ChatFormat::detect(tok);
            if (!format) return fail("generate", format.error().message);
            prompt = format->encode_chat(msgs, true);
        }
    } else {
        prompt = tok.encode(*prompt_text);
    }
    if (!prompt) return fail("generate", prompt.error().message);
    if (prompt->empty()) return fail_usage("generate", "the prompt is empty");

    auto ctx = Context::create(*model, cp);
    if (!ctx) return fail("generate", ctx.error().message);
    const bool json = args.flag("json");
    if (!json) {
        gp.on_text = [](std::string_view piece) {
            std::fwrite(piece.data(), 1, piece.size(), stdout);
            std::fflush(stdout);
            return true;
        };
    }
    auto res = generate(*ctx, *prompt, gp);
    if (!res) return fail("generate", res.error().message);
    const int32_t n_gen = static_cast<int32_t>(res->tokens.size());
    const double decode_tok_s =
        n_gen > 1 && res->decode_ms > 0 ? (n_gen - 1) * 1000.0 / res->decode_ms : 0;
    if (json) {
        std::printf(
            "{\"text\": %s, \"n_prompt\": %d, \"n_generated\": %d, \"stop_reason\": \"%s\", "
            "\"prefill_ms\": %.2f, \"decode_tok_s\": %.2f, \"peak_rss_mib\": %.1f}\n",
            json_string(res->text).c_str(), res->n_prompt, n_gen,
            stop_reason_name(res->stop_reason), res->prefill_ms, decode_tok_s, peak_rss_mib());
    } else {
        std::printf("\n");
        std::fflush(stdout);
        std::fprintf(stderr,
                     "[%d prompt tokens in %.1f ms, %d generated at %.1f tok/s, stop: %s, peak RSS "
                     "%.0f MiB]\n",
                     res->n_prompt, res->prefill_ms, n_gen, decode_tok_s,
                     stop_reason_name(res->stop_reason), peak_rss_mib());
    }
    return 0;
}

}  // namespace attnrag::cli
