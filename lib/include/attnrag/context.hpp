// An inference context: one sequence's KV cache, forward pass (batched prefill / decode), logits.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "attnrag/kernels/block_mask.hpp"
#include "attnrag/kernels/thread_pool.hpp"
#include "attnrag/model.hpp"
#include "attnrag/passage_kv.hpp"
#include "attnrag/result.hpp"

namespace attnrag {

// Where the forward pass runs. Cuda: the weights dequantized to f32 on CUDA device 0, the KV cache
// there too; eval (positions, block masks, probes, logits) and truncate work as on the CPU, while
// splice, extract, recompute and APE are not on the CUDA backend yet (they answer Unsupported).
// Context::create answers Unsupported when the build or the machine has no CUDA device.
enum class Backend { Cpu, Cuda };

struct ContextParams {
    int32_t n_ctx = 0;      // KV capacity in tokens; 0 = the model's training context
    int32_t n_threads = 0;  // 0 = all hardware threads
    int32_t n_batch = 512;  // tokens per forward micro-batch (bounds scratch memory)
    Backend backend = Backend::Cpu;
};

enum class LogitsMode {
    None,  // no LM head (fill the cache only)
    Last,  // logits of the last token of the call
    All,   // logits of every token of the call
};

// Attention visibility (DESIGN.md §3 "Masks"): BlockKind, BlockTag and block_visible live with
// the kernels (attnrag/kernels/block_mask.hpp), so the CPU and CUDA attention share one rule.
using kernels::block_visible;
using kernels::BlockKind;
using kernels::BlockTag;

// APE-style repair for passages encoded apart (../shared/reference/algorithms.md §6): when a
// Global query attends to Local keys, their logits are divided by `temperature` and the two
// partial attentions (Local keys; all other keys) are merged exactly through their log-sum-exps,
// the Local one multiplied by scale * temperature. temperature = scale = 1 is ordinary attention.
struct ApeParams {
    float temperature = 1.0f;
    float scale = 1.0f;
    bool enabled() const { return temperature != 1.0f || scale != 1.0f; }
};

// Cache slots [begin, end): a token, sentence or passage whose attention mass a probe sums.
struct KeySpan {
    int32_t begin = 0, end = 0;
};

// Attention probe (DESIGN.md §3 "Probe"): for the chosen layers, query heads and rows of one
// eval call, the attention probabilities over every key the row sees, normalised with the
// attention's own softmax denominator (its log-sum-exp), summed per key span on the fly. No
// N x N matrix is built: memory is O(spans) per (layer, head, row), plus O(keys) per row when
// probabilities or logits are kept.
struct ProbeRequest {
    std::vector<int32_t> layers;  // layers to read, ascending or not (each once)
    std::vector<int32_t> heads;   // query heads; empty = all
    std::vector<int32_t> rows;    // indices into the eval call's tokens
    std::vector<KeySpan> spans;   // may be empty (then only kept rows are returned)
    bool keep_probs = false;      // also keep each row's probabilities over slots [0, row slot]
    bool keep_logits = false;     // also keep the raw scaled logits q.k/sqrt(d) (masked: -inf)
    // Early exit: skip the layers after the last probed one and the LM head. The call's tokens
    // are then not kept in the cache (their later layers were never computed).
    bool stop_after_last_layer = false;
};

struct ProbeResult {
    int32_t n_layers = 0, n_heads = 0, n_rows = 0, n_spans = 0;
    std::vector<int32_t> layers, heads, rows;  // as resolved (heads filled in when "all")
    std::vector<float> mass;                   // [layer][head][row][span]
    // [layer][head][row] -> [row slot + 1] (only with keep_probs / keep_logits)
    std::vector<std::vector<float>> probs, logits;

    size_t index(int32_t li, int32_t hi, int32_t ri) const {
        return (static_cast<size_t>(li) * static_cast<size_t>(n_heads) + static_cast<size_t>(hi)) *
                   static_cast<size_t>(n_rows) +
               static_cast<size_t>(ri);
    }
    // li, hi, ri index the resolved lists (not layer or head numbers).
    float span_mass(int32_t li, int32_t hi, int32_t ri, int32_t span) const {
        return mass[index(li, hi, ri) * static_cast<size_t>(n_spans) + static_cast<size_t>(span)];
    }
    // Mass per span averaged over all probed layers and heads, for one row.
    std::vector<float> mean_span_mass(int32_t ri) const;
};

struct EvalOptions {
    // Position id of each token (RoPE); empty = continue from next_position(). Positions may
    // repeat or go backwards (shared ranges across blocks): order of attention is by slot.
    std::span<const int32_t> positions = {};
    // Block tag of each token; empty = Global block 0 (ordinary causal attention).
    std::span<const BlockTag> blocks = {};
    LogitsMode logits = LogitsMode::Last;
    ApeParams ape = {};  // when not enabled, the context's default (set_default_ape) applies
    const ProbeRequest* probe = nullptr;  // with probe_out: read attention while evaluating
    ProbeResult* probe_out = nullptr;
};

// Re-running the forward pass for chosen cache slots (KV repair after splicing, CacheBlend /
// EPIC style). The chosen tokens attend to every earlier slot (Global visibility); their K and V
// are overwritten in the recomputed layers; other slots keep their cached K and V.
struct RecomputeOptions {
    int32_t n_layers = 0;  // recompute layers [0, n_layers); 0 = all
    // Out (optional): per chosen slot, the squared L2 change of its value vectors in the last
    // recomputed layer (CacheBlend's "KV deviation", for choosing which tokens to recompute).
    std::vector<float>* value_drift = nullptr;
    ApeParams ape = {};
};

// Single-threaded: one thread at a time may call a Context (it runs its own thread pool).
// Borrows the Model, which must outlive it. Memory: the KV cache is reserved for n_ctx tokens
// but only touched pages are resident.
class Context {
 public:
    static Result<Context> create(const Model& model, const ContextParams& params = {});

    Context(Context&&) noexcept;
    Context& operator=(Context&&) noexcept;
    ~Context();

    // Appends `tokens` to the cache and runs the forward pass. Errors: bad token id or position
    // (InvalidArgument), cache full (OutOfRange). On error the cache is left as before the call.
    Status eval(std::span<const TokenId> tokens, const EvalOptions& options = {});

    // Logits [n_vocab] of row i of the last eval (Last: row 0 only; All: one row per token).
    std::span<const float> logits(int32_t i = 0) const;
    int32_t n_logit_rows() const;

    // Appends a passage's KV state to the cache at slots [n_past, n_past + n) with position ids
    // position, position + 1, ... (keys rotated by position - kv.encoded_position in fp32; not
    // touched when that is 0), tagged `tag`. Errors: state
    // not for this model (InvalidArgument), cache full (OutOfRange); the cache is unchanged then.
    Status splice(const PassageKv& kv, int32_t position, BlockTag tag = {});
    // The same without copying: the context keeps a reference to `kv` and reads its K/V in
    // place (several contexts can share one state; its pages are never duplicated). Keys are
    // not rotated: a state placed away from its encoded position is attended by rotating the
    // query back instead, which gives the same scores up to float rounding. The slots are
    // copied into the context's own buffers only if recompute() rewrites them, and released by
    // truncate()/clear() or when the context is destroyed. extract() of shared slots returns
    // keys rotated to their positions, as for copied ones.
    Status splice(std::shared_ptr<const PassageKv> kv, int32_t position, BlockTag tag = {});
    // Cache slots currently read from shared passage states.
    int32_t n_shared_slots() const;
    // Copies slots [begin, end) out as a PassageKv. The slots must have consecutive position ids
    // (as any ordinary eval gives); InvalidArgument otherwise.
    Result<PassageKv> extract(int32_t begin, int32_t end) const;
    // See RecomputeOptions. `slots` must be ascending, unique and < n_past().
    Status recompute(std::span<const int32_t> slots, const RecomputeOptions& options = {});

    // APE repair applied to every later eval that does not set its own (e.g. generated tokens
    // after a BlocksApe assembly). {1, 1} turns it off. Both values must be > 0.
    Status set_default_ape(ApeParams ape);
    ApeParams default_ape() const;

    // Per cache slot [n_past]: token id, position id, block tag.
    std::span<const TokenId> slot_tokens() const;
    std::span<const int32_t> slot_positions() const;
    std::span<const BlockTag> slot_blocks() const;

    int32_t n_past() const;         // tokens in the cache
    int32_t n_ctx() const;          // capacity
    int32_t next_position() const;  // last position + 1 (0 when empty)
    // Drops cache entries [n_keep, n_past).
    void truncate(int32_t n_keep);
    void clear() { truncate(0); }

    const Model& model() const;
    kernels::ThreadPool& pool();
    // "cpu (N threads, SIMD)" or "cuda: DEVICE ..." for logs and benchmark setups.
    Backend backend() const;
    std::string backend_description() const;

 private:
    struct Impl;
    explicit Context(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace attnrag
