// attnrag command-line entry: dispatches to one subcommand per file.
#include <cstdio>
#include <cstring>
#include <string>

#include "commands.h"

namespace {

void print_usage() {
    std::printf(
        "attnrag: attention-guided retrieval-augmented generation and long-document engine\n\n"
        "usage: attnrag <command> [options]\n\n"
        "commands:\n"
        "  generate     generate text from a prompt (optionally as a chat turn)\n"
        "  perplexity   perplexity of the model on a text file\n"
        "  bench        prefill/decode speed next to this machine's sgemm and memory limits;\n"
        "               bench kv: time to first token, full prefill vs spliced passage KV\n"
        "  info         model metadata and tensor summary\n"
        "  models       the models attnrag knows and the ones installed\n"
        "  ingest       add files and folders to a corpus (store + hybrid index)\n"
        "  search       BM25, dense or hybrid search over a corpus\n"
        "  ask          answer a question from a corpus, with citations (passage KV reused)\n"
        "  docs         list, show or delete a corpus's documents\n"
        "  eval         evaluation harnesses (retrieval on BEIR data)\n"
        "  heads        rank the model's retrieval heads on copy trials (stored per model)\n\n"
        "Run 'attnrag <command> --help' for a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
        !std::strcmp(argv[1], "help")) {
        print_usage();
        return argc < 2 ? 2 : 0;
    }
    std::string cmd = argv[1];
    using namespace attnrag::cli;
    if (cmd == "generate") return cmd_generate(argc - 2, argv + 2);
    if (cmd == "perplexity") return cmd_perplexity(argc - 2, argv + 2);
    if (cmd == "bench") return cmd_bench(argc - 2, argv + 2);
    if (cmd == "info") return cmd_info(argc - 2, argv + 2);
    if (cmd == "models") return cmd_models(argc - 2, argv + 2);
    if (cmd == "ingest") return cmd_ingest(argc - 2, argv + 2);
    if (cmd == "search") return cmd_search(argc - 2, argv + 2);
    if (cmd == "ask") return cmd_ask(argc - 2, argv + 2);
    if (cmd == "docs") return cmd_docs(argc - 2, argv + 2);
    if (cmd == "eval") return cmd_eval(argc - 2, argv + 2);
    if (cmd == "heads") return cmd_heads(argc - 2, argv + 2);
    std::fprintf(stderr, "attnrag: unknown command '%s' (see attnrag --help)\n", cmd.c_str());
    return 2;
}
