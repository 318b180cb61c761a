// The attnrag subcommands: each takes the arguments after its name and returns an exit code.
#pragma once

namespace attnrag::cli {

int cmd_generate(int argc, char** argv);
int cmd_perplexity(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_bench_kv(int argc, char** argv);  // attnrag bench kv
int cmd_info(int argc, char** argv);
int cmd_ingest(int argc, char** argv);
int cmd_search(int argc, char** argv);
int cmd_docs(int argc, char** argv);
int cmd_eval(int argc, char** argv);

}  // namespace attnrag::cli
