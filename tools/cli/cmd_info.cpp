// attnrag info: a model's metadata, hyperparameters and tensor summary.
#include <cstdio>
#include <map>

#include "args.h"
#include "commands.h"
#include "common.h"

namespace attnrag::cli {

int cmd_info(int argc, char** argv) {
    const std::vector<OptionSpec> specs = {
        {"tensors", false, "list every tensor"},
        kModelOption,
        {"help", false, "show this help"},
    };
    Args args(argc, argv, specs);
    if (args.flag("help")) {
        std::printf("%s", usage_text("info", "[--model F] [--tensors]", specs).c_str());
        return 0;
    }
    if (!args.ok()) return fail_usage("info", args.error());
    auto model = load_model_from(args, "info");
    if (!model) return 1;
    const GgufFile& f = model->file();
    const ModelHParams& hp = model->hparams();
    std::printf("file         %s (GGUF v%u, %.1f MB, alignment %llu)\n", f.path().c_str(), f.version(),
                static_cast<double>(f.file_bytes()) / 1e6, static_cast<unsigned long long>(f.alignment()));
    std::printf("fingerprint  %s\n", model->fingerprint().c_str());
    std::printf("arch         %s: %d layers, n_embd %d, n_ff %d, heads %d (kv %d), head_dim %d, n_rot %d\n",
                hp.arch_name.c_str(), hp.n_layer, hp.n_embd, hp.n_ff, hp.n_head, hp.n_head_kv, hp.head_dim, hp.n_rot);
    std::printf("             vocab %d, context %d, rope base %g (%s), rms eps %g, %s embeddings\n", hp.n_vocab,
                hp.n_ctx_train, static_cast<double>(hp.rope_base),
                hp.rope_style == kernels::RopeStyle::Neox ? "neox" : "interleaved", static_cast<double>(hp.rms_eps),
                hp.tied_embeddings ? "tied" : "separate");
    std::printf("\nmetadata (%zu keys)\n", f.keys().size());
    for (const auto& k : f.keys()) std::printf("  %-44s %s\n", k.c_str(), f.value_to_string(k, 4).c_str());

    std::map<std::string, std::pair<int, uint64_t>> by_type;
    uint64_t total = 0;
    for (const auto& t : f.tensors()) {
        const kernels::TypeTraits* tt = kernels::type_traits(t.type);
        auto& e = by_type[tt ? std::string(tt->name) : "?"];
        e.first++;
        e.second += t.n_bytes;
        total += t.n_bytes;
    }
    std::printf("\ntensors (%zu, %.1f MB)\n", f.tensors().size(), static_cast<double>(total) / 1e6);
    for (const auto& [name, e] : by_type) {
        std::printf("  %-6s %4d tensors %9.1f MB\n", name.c_str(), e.first, static_cast<double>(e.second) / 1e6);
    }
    if (args.flag("tensors")) {
        for (const auto& t : f.tensors()) {
            std::string shape;
            for (size_t i = 0; i < t.shape.size(); ++i) shape += (i ? " x " : "") + std::to_string(t.shape[i]);
            const kernels::TypeTraits* tt = kernels::type_traits(t.type);
            std::printf("  %-32s %-6s %-16s %10llu bytes\n", t.name.c_str(), tt ? std::string(tt->name).c_str() : "?",
                        shape.c_str(), static_cast<unsigned long long>(t.n_bytes));
        }
    }
    return 0;
}

}  // namespace attnrag::cli
