// attnrag bench kv: time to first token for prefix + n passages + question, full prefill versus
// passage KV spliced from memory or disk, and the repair variants.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>

#include "args.h"
#include "attnrag/context.hpp"
#include "attnrag/kv_store.hpp"
#include "attnrag/pipelines/assembly.hpp"
#include "attnrag/pipelines/prompts.hpp"
#include "attnrag/store.hpp"
#include "attnrag/text.hpp"
#include "commands.h"
#include "common.h"

namespace attnrag::cli {

namespace {

namespace fs = std::filesystem;
using pipelines::Assembly;

std::vector<int> parse_list(const std::string& s) {
    std::vector<int> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) {
        if (item.empty()) continue;
        try {
            out.push_back(std::stoi(item));
        } catch (...) {
            return {};
        }
    }
    return out;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
}

}  // namespace

int cmd_bench_kv(int argc, char** argv) {
    const std::vector<OptionSpec> specs = {
        {"passages", true,
         "passage counts (default 5,10,20,40; rows that exceed the window are skipped)"},
        {"passage-tokens", true, "tokens per passage (default 200)"},
        {"question-tokens", true, "tokens in the question block (default 30)"},
        {"text", true,
         "text to cut passages from (default ../shared/data/niah/tinyshakespeare/input.txt)"},
        {"reps", true,
         "repetitions of each spliced measurement; the median is reported (default 3)"},
        {"file-type", true, "f16 | q8 for the disk tier (default f16)"},
        {"dir", true, "scratch directory for the disk tier (default: a temporary one, removed)"},
        {"json", false, "print one JSON object"},
        kModelOption,
        kThreadsOption,
        {"help", false, "show this help"},
    };
    Args args(argc, argv, specs);
    if (args.flag("help")) {
        std::printf("%s",
                    usage_text("bench kv", "[--passages 5,10,20,40] [--json]", specs).c_str());
        return 0;
    }
    const auto counts = parse_list(args.get_or("passages", "5,10,20,40"));
    const auto passage_tokens = static_cast<int32_t>(args.get_int("passage-tokens", 200));
    const auto question_tokens = static_cast<int32_t>(args.get_int("question-tokens", 30));
    const auto reps = static_cast<int32_t>(args.get_int("reps", 3));
    const auto threads = static_cast<int32_t>(args.get_int("threads", 0));
    const std::string file_type_name = args.get_or("file-type", "f16");
    if (!args.ok()) return fail_usage("bench kv", args.error());
    if (counts.empty() || passage_tokens < 1 || question_tokens < 1 || reps < 1) {
        return fail_usage("bench kv",
                          "--passages needs a list of counts; sizes and --reps must be >= 1");
    }
    if (file_type_name != "f16" && file_type_name != "q8")
        return fail_usage("bench kv", "--file-type is f16 or q8");
    const bool json = args.flag("json");

    auto model = load_model_from(args, "bench kv");
    if (!model) return 1;
    const Tokenizer& tok = model->tokenizer();

    // Passages: consecutive pieces of a real text, each exactly passage_tokens long.
    const fs::path text_path = args.get_or("text", "../shared/data/niah/tinyshakespeare/input.txt");
    auto text = text::read_file(text_path);
    if (!text) return fail("bench kv", text.error().message);
    auto ids = tok.encode(text->text, false);
    if (!ids) return fail("bench kv", ids.error().message);
    const int max_n = *std::max_element(counts.begin(), counts.end());
    if (ids->size() < static_cast<size_t>(max_n) * static_cast<size_t>(passage_tokens) +
                          static_cast<size_t>(question_tokens)) {
        return fail("bench kv", text_path.string() + " is too short for " + std::to_string(max_n) +
                                    " passages");
    }
    std::vector<std::vector<TokenId>> passages;
    for (int i = 0; i < max_n; ++i) {
        auto b = ids->begin() + static_cast<ptrdiff_t>(i) * passage_tokens;
        passages.emplace_back(b, b + passage_tokens);
    }
    auto chat = pipelines::ChatFormat::detect(tok);
    if (!chat) return fail("bench kv", chat.error().message);
    auto prefix = chat->open_user_turn("Answer the question using the passages.");
    if (!prefix) return fail("bench kv", prefix.error().message);
    // Question block: text tokens (from the end of the text) + the end of the user turn and the
    // assistant header, question_tokens in all.
    const std::vector<TokenId>& tail = chat->close_user_turn();
    const auto n_text =
        std::max<ptrdiff_t>(1, question_tokens - static_cast<ptrdiff_t>(tail.size()));
    std::vector<TokenId> question(ids->end() - n_text, ids->end());
    question.insert(question.end(), tail.begin(), tail.end());

    // Stores: memory only, and disk (files + catalogue) in a scratch directory.
    const bool own_dir = !args.get("dir");
    const fs::path dir =
        own_dir ? fs::temp_directory_path() / ("attnrag-bench-kv-" + std::to_string(::getpid()))
                : fs::path(*args.get("dir"));
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return fail("bench kv", "cannot create " + dir.string() + ": " + ec.message());
    struct Cleanup {
        fs::path d;
        bool on;
        ~Cleanup() {
            std::error_code e;
            if (on) fs::remove_all(d, e);
        }
    } cleanup{dir, own_dir};
    auto catalogue = Store::open(dir / "kv.db");
    if (!catalogue) return fail("bench kv", catalogue.error().message);
    PassageKvStoreOptions mem_opts;
    mem_opts.memory_budget_bytes = size_t{4} << 30;
    auto mem_store = PassageKvStore::open(mem_opts);
    if (!mem_store) return fail("bench kv", mem_store.error().message);
    PassageKvStoreOptions disk_opts;
    disk_opts.memory_budget_bytes = size_t{4} << 30;
    disk_opts.directory = dir / "kv";
    disk_opts.catalogue = &*catalogue;
    disk_opts.file_type = file_type_name == "q8" ? KvFileType::Q8 : KvFileType::F16;
    auto disk_store = PassageKvStore::open(disk_opts);
    if (!disk_store) return fail("bench kv", disk_store.error().message);

    auto mem_cache = pipelines::PassageKvCache::create(*model, *prefix, &*mem_store, threads);
    auto disk_cache = pipelines::PassageKvCache::create(*model, *prefix, &*disk_store, threads);
    if (!mem_cache) return fail("bench kv", mem_cache.error().message);
    if (!disk_cache) return fail("bench kv", disk_cache.error().message);
    auto ctx = Context::create(*model, {.n_ctx = 0, .n_threads = threads});
    if (!ctx) return fail("bench kv", ctx.error().message);

    // Encode every passage once into both stores (not timed: this is what ingest --precompute-kv
    // does).
    if (!json)
        std::fprintf(stderr, "bench kv: encoding %d passages of %d tokens...\n", max_n,
                     passage_tokens);
    for (const auto& p : passages) {
        for (auto* c : {&*mem_cache, &*disk_cache}) {
            if (auto kv = c->passage_state(p); !kv) return fail("bench kv", kv.error().message);
        }
    }
    if (auto st = mem_cache->prefix_state(); !st) return fail("bench kv", st.error().message);
    if (auto st = disk_cache->prefix_state(); !st) return fail("bench kv", st.error().message);

    using clock = std::chrono::steady_clock;
    pipelines::AssembledPrompt last;  // the breakdown of the latest run
    auto ttft = [&](std::span<const std::vector<TokenId>> ps, const pipelines::AssemblyOptions& o,
                    pipelines::PassageKvCache* cache, bool cold_memory) -> Result<double> {
        if (cold_memory) disk_store->clear_memory();
        const auto t0 = clock::now();
        auto r = pipelines::assemble(*ctx, *prefix, ps, question, o, cache);
        if (!r) return r.error();
        last = *r;
        return std::chrono::duration<double, std::milli>(clock::now() - t0).count();
    };

    nlohmann::json rows = nlohmann::json::array();
    const size_t bytes_per_token =
        static_cast<size_t>(model->hparams().n_layer) * 2 *
        static_cast<size_t>(model->hparams().n_head_kv * model->hparams().head_dim);
    if (!json) {
        std::printf(
            "bench kv: %s, %d threads, passages of %d tokens, question %d tokens, prefix %zu "
            "tokens\n",
            model->path().c_str(), ctx->pool().n_threads(), passage_tokens, question_tokens,
            prefix->size());
        std::printf("%4s %7s %10s %10s %16s %10s %10s %12s %12s %8s\n", "n", "tokens", "full ms",
                    "mem ms", "(splice+quest.)", "disk ms", "ape ms", "recomp4 ms", "recomp16% ms",
                    "speedup");
    }
    for (int n : counts) {
        const size_t total = prefix->size() +
                             static_cast<size_t>(n) * static_cast<size_t>(passage_tokens) +
                             question.size();
        if (total > static_cast<size_t>(ctx->n_ctx())) {
            if (!json)
                std::printf("%4d %7zu  (exceeds the %d-token window: skipped)\n", n, total,
                            ctx->n_ctx());
            continue;
        }
        std::span<const std::vector<TokenId>> ps(passages.data(), static_cast<size_t>(n));
        pipelines::AssemblyOptions full{.mode = Assembly::Full};
        pipelines::AssemblyOptions blocks{.mode = Assembly::Blocks};
        pipelines::AssemblyOptions ape{.mode = Assembly::BlocksApe};
        pipelines::AssemblyOptions first{.mode = Assembly::BlocksRecompute};
        pipelines::AssemblyOptions drift{.mode = Assembly::BlocksRecompute};
        drift.recompute_ratio = 0.16f;
        auto t_full = ttft(ps, full, nullptr, false);  // one run: it is the slow one
        if (!t_full) return fail("bench kv", t_full.error().message);
        std::vector<double> mem, disk, t_ape, t_first, t_drift, mem_splice, mem_question;
        for (int32_t r = 0; r < reps; ++r) {
            auto t_mem = ttft(ps, blocks, &*mem_cache, false);
            if (!t_mem) return fail("bench kv", t_mem.error().message);
            mem.push_back(*t_mem);
            mem_splice.push_back(last.splice_ms);
            mem_question.push_back(last.question_ms);
            for (auto [vec, opts, cache, cold] :
                 {std::tuple{&disk, &blocks, &*disk_cache, true},
                  std::tuple{&t_ape, &ape, &*mem_cache, false},
                  std::tuple{&t_first, &first, &*mem_cache, false},
                  std::tuple{&t_drift, &drift, &*mem_cache, false}}) {
                auto t = ttft(ps, *opts, cache, cold);
                if (!t) return fail("bench kv", t.error().message);
                vec->push_back(*t);
            }
        }
        nlohmann::json row = {
            {"n_passages", n},
            {"prompt_tokens", total},
            {"ttft_full_ms", *t_full},
            {"ttft_spliced_mem_ms", median(mem)},
            {"ttft_spliced_disk_ms", median(disk)},
            {"mem_splice_ms", median(mem_splice)},
            {"mem_question_ms", median(mem_question)},
            {"ttft_ape_ms", median(t_ape)},
            {"ttft_recompute_first4_ms", median(t_first)},
            {"ttft_recompute_drift16_ms", median(t_drift)},
            {"speedup_mem", *t_full / median(mem)},
            {"speedup_disk", *t_full / median(disk)},
            {"kv_f32_bytes", total * bytes_per_token * sizeof(float)},
        };
        rows.push_back(row);
        if (!json) {
            std::printf("%4d %7zu %10.1f %10.1f %7.1f + %6.1f %10.1f %10.1f %12.1f %12.1f %7.1fx\n",
                        n, total, *t_full, median(mem), median(mem_splice), median(mem_question),
                        median(disk), median(t_ape), median(t_first), median(t_drift),
                        *t_full / median(mem));
            std::fflush(stdout);
        }
    }
    if (json) {
        nlohmann::json out = {{"model", model->path()},
                              {"threads", ctx->pool().n_threads()},
                              {"passage_tokens", passage_tokens},
                              {"question_tokens", question.size()},
                              {"prefix_tokens", prefix->size()},
                              {"file_type", file_type_name},
                              {"reps", reps},
                              {"rows", rows}};
        std::printf("%s\n", out.dump(2).c_str());
    }
    return 0;
}

}  // namespace attnrag::cli
