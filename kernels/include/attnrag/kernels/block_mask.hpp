// Attention visibility between blocks of cache slots: the one statement of the mask rule, used by
// the CPU attention and the CUDA kernels alike.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define ATTNRAG_HOST_DEVICE __host__ __device__
#else
#define ATTNRAG_HOST_DEVICE
#endif

namespace attnrag::kernels {

// Every cache slot carries a block id and a kind; a query sees only earlier-or-same cache slots
// (causal by slot, whatever the position ids), and among those:
//   Global: every slot (ordinary causal attention; the default);
//   Shared: Shared slots only (a shared prefix / instruction block);
//   Local:  Shared slots and Local slots of its own block id (a passage or candidate document).
// Block-Attention: prefix Shared, passages Local (one id each), question Global.
// BlockRank: instruction Shared, documents Local, final block Global.
// The values are what the CUDA kernels read from their uint8 kind arrays.
enum class BlockKind : uint8_t { Global = 0, Shared = 1, Local = 2 };

struct BlockTag {
    int32_t id = 0;
    BlockKind kind = BlockKind::Global;
    // Written out (not defaulted): the CUDA files compile as C++17.
    friend constexpr bool operator==(BlockTag a, BlockTag b) {
        return a.id == b.id && a.kind == b.kind;
    }
    friend constexpr bool operator!=(BlockTag a, BlockTag b) { return !(a == b); }
};

// True when a query tagged `q` may attend to an earlier key tagged `k`.
ATTNRAG_HOST_DEVICE constexpr bool block_visible(BlockTag q, BlockTag k) {
    switch (q.kind) {
        case BlockKind::Global: return true;
        case BlockKind::Shared: return k.kind == BlockKind::Shared;
        case BlockKind::Local:
            return k.kind == BlockKind::Shared || (k.kind == BlockKind::Local && k.id == q.id);
    }
    return false;
}

}  // namespace attnrag::kernels
