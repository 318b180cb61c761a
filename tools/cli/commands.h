// The attnrag subcommands: each takes the arguments after its name and returns an exit code.
#pragma once

#include <string>

#include "attnrag/result.hpp"

namespace attnrag {
class PassageKvStore;
struct Filter;
namespace index {
class Corpus;
}
}  // namespace attnrag

namespace attnrag::cli {

class Args;

int cmd_generate(int argc, char** argv);
int cmd_perplexity(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_bench_kv(int argc, char** argv);  // attnrag bench kv
int cmd_info(int argc, char** argv);
int cmd_models(int argc, char** argv);
int cmd_ingest(int argc, char** argv);
int cmd_search(int argc, char** argv);
int cmd_ask(int argc, char** argv);
int cmd_docs(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int eval_niah(int argc, char** argv);    // attnrag eval niah (cmd_eval_niah.cpp)
int eval_longqa(int argc, char** argv);  // attnrag eval longqa (cmd_eval_longqa.cpp)
int cmd_heads(int argc, char** argv);    // attnrag heads (cmd_heads.cpp)

// Pieces shared between subcommands.

// --doc ID and --where KEY=VALUE into `filter`; false with `error` set on a malformed value
// (cmd_search.cpp).
bool parse_filter(const Args& args, Filter& filter, std::string& error);

// The corpus's passage KV store (cmd_ask.cpp): states as f16 files under <corpus dir>/kv,
// catalogued in the corpus store, 1 GiB kept in memory. Borrows `corpus`, which must outlive it.
// `ask` and `ingest --precompute-kv` share it, so states precomputed at ingest are found.
Result<PassageKvStore> open_corpus_kv_store(index::Corpus& corpus);

}  // namespace attnrag::cli
