// An inference context: one sequence's KV cache, forward pass (batched prefill / decode), logits.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "attnrag/kernels/thread_pool.hpp"
#include "attnrag/model.hpp"
#include "attnrag/result.hpp"

namespace attnrag {

struct ContextParams {
    int32_t n_ctx = 0;      // KV capacity in tokens; 0 = the model's training context
    int32_t n_threads = 0;  // 0 = all hardware threads
    int32_t n_batch = 512;  // tokens per forward micro-batch (bounds scratch memory)
};

enum class LogitsMode {
    None,  // no LM head (fill the cache only)
    Last,  // logits of the last token of the call
    All,   // logits of every token of the call
};

struct EvalOptions {
    // Position id of each token (RoPE); empty = continue from next_position().
    std::span<const int32_t> positions = {};
    LogitsMode logits = LogitsMode::Last;
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

    int32_t n_past() const;         // tokens in the cache
    int32_t n_ctx() const;          // capacity
    int32_t next_position() const;  // last position + 1 (0 when empty)
    // Drops cache entries [n_keep, n_past).
    void truncate(int32_t n_keep);
    void clear() { truncate(0); }

    const Model& model() const;
    kernels::ThreadPool& pool();

   private:
    struct Impl;
    explicit Context(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace attnrag
