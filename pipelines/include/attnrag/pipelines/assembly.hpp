// Context assembly for passage prompts (DESIGN.md §4 "Passage KV reuse"): a prompt is
// [shared prefix] [passage]... [question block]; `full` prefills all of it, the `blocks` modes
// splice passage KV states encoded once after the prefix and prefill only the question block.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attnrag/context.hpp"
#include "attnrag/kv_store.hpp"
#include "attnrag/result.hpp"

namespace attnrag::pipelines {

enum class Assembly {
    Full,             // ordinary prefill of the whole prompt
    Blocks,           // cached passage KV spliced, only the question block prefilled
    BlocksApe,        // Blocks + APE temperature/scale on the passages (exact LSE merge)
    BlocksRecompute,  // Blocks + recompute of chosen passage tokens (first k, or by value drift)
};

std::string_view to_string(Assembly a);
Result<Assembly> parse_assembly(std::string_view name);  // "full", "blocks", "blocks-ape", "blocks-recompute"

struct AssemblyOptions {
    Assembly mode = Assembly::Blocks;
    ApeParams ape = {0.9f, 0.9f};  // BlocksApe (APE's published defaults)
    // BlocksRecompute: the first k tokens of every passage (EPIC) ...
    int32_t recompute_first = 4;
    // ... or, when > 0, this fraction of passage tokens with the largest value drift at
    // `drift_layer` (CacheBlend; its default 0.16 at layer 1).
    float recompute_ratio = 0.0f;
    int32_t drift_layer = 1;
    // Layers and heads whose attention `assemble` reads for passage_attention (empty = all).
    std::vector<int32_t> probe_layers = {}, probe_heads = {};
    // passage_attention probes every row of the question block (ProbeResult rows in order), not
    // just its last row.
    bool probe_question_rows = false;
};

// Where the pieces landed in the context, and what it cost.
struct AssembledPrompt {
    KeySpan prefix;
    std::vector<KeySpan> passages;  // cache slots of each passage, in prompt order
    KeySpan question;
    int32_t n_passages_reused = 0;   // passage states taken from the cache (memory or disk)
    int32_t n_passages_encoded = 0;  // passage states computed by this call
    int32_t n_recomputed = 0;        // tokens recomputed (BlocksRecompute)
    double encode_ms = 0, splice_ms = 0, recompute_ms = 0, question_ms = 0;
};

// Passage states encoded after one shared prefix, kept in a PassageKvStore (memory and,
// optionally, disk). Not thread-safe (it owns a scratch context); one per worker.
class PassageKvCache {
   public:
    // `store` may be null (then nothing is kept: every passage is encoded when asked).
    static Result<PassageKvCache> create(const Model& model, std::span<const TokenId> prefix,
                                         PassageKvStore* store, int32_t n_threads = 0);
    PassageKvCache(PassageKvCache&&) noexcept;
    PassageKvCache& operator=(PassageKvCache&&) noexcept;
    ~PassageKvCache();

    std::span<const TokenId> prefix() const;
    uint64_t prefix_hash() const;
    PassageKvKey key_of(std::span<const TokenId> passage) const;

    // True when the passage's state is in the store (memory or catalogued file; not loaded).
    Result<bool> stored(std::span<const TokenId> passage);

    // The prefix's own state (encoded once per cache object, or loaded from the store).
    Result<std::shared_ptr<const PassageKv>> prefix_state();
    // The passage's state encoded after the prefix (from the store, else encoded and stored).
    // `reused` (optional) says whether it came from the store.
    Result<std::shared_ptr<const PassageKv>> passage_state(std::span<const TokenId> passage, bool* reused = nullptr);

   private:
    struct Impl;
    explicit PassageKvCache(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

// Fills `ctx` (cleared first) with prefix + passages + question and evaluates the question
// block with logits of its last token, ready for generation (in BlocksApe the context keeps
// the APE setting for the tokens generated next). Block modes need `cache` (whose prefix must
// equal `prefix`). With `passage_attention`, the last prompt row's attention is probed over the
// passage spans (span i = passage i) at options.probe_layers / probe_heads.
// Errors: context too small (OutOfRange), cache I/O.
Result<AssembledPrompt> assemble(Context& ctx, std::span<const TokenId> prefix,
                                 std::span<const std::vector<TokenId>> passages, std::span<const TokenId> question,
                                 const AssemblyOptions& options, PassageKvCache* cache,
                                 ProbeResult* passage_attention = nullptr);

}  // namespace attnrag::pipelines
