// Reciprocal rank fusion of the dense and lexical rankings.
#include "attnrag/index/fusion.hpp"

#include <algorithm>
#include <unordered_map>

namespace attnrag::index {

std::vector<FusedHit> reciprocal_rank_fusion(std::span<const int64_t> dense_ids_ranked,
                                             std::span<const int64_t> lexical_ids_ranked, int k_rrf,
                                             size_t limit) {
    const double k = std::max(0, k_rrf);
    std::vector<FusedHit> hits;
    hits.reserve(dense_ids_ranked.size() + lexical_ids_ranked.size());
    std::unordered_map<int64_t, size_t> hit_idx;  // id -> position in hits
    hit_idx.reserve(hits.capacity());
    auto accumulate = [&](std::span<const int64_t> ranked, int FusedHit::*rank_field) {
        for (size_t i = 0; i < ranked.size(); ++i) {
            auto [it, inserted] = hit_idx.try_emplace(ranked[i], hits.size());
            if (inserted) hits.push_back({.id = ranked[i]});
            FusedHit& hit = hits[it->second];
            if (hit.*rank_field != 0) continue;  // repeated in this list: first rank counts
            const int rank = static_cast<int>(i) + 1;
            hit.*rank_field = rank;
            hit.score += 1.0 / (k + rank);
        }
    };
    accumulate(dense_ids_ranked, &FusedHit::dense_rank);
    accumulate(lexical_ids_ranked, &FusedHit::lexical_rank);

    auto best_rank = [](const FusedHit& h) {
        if (h.dense_rank == 0) return h.lexical_rank;
        if (h.lexical_rank == 0) return h.dense_rank;
        return std::min(h.dense_rank, h.lexical_rank);
    };
    auto better = [&](const FusedHit& a, const FusedHit& b) {
        if (a.score != b.score) return a.score > b.score;
        if (best_rank(a) != best_rank(b)) return best_rank(a) < best_rank(b);
        return a.id < b.id;
    };
    if (limit > 0 && limit < hits.size()) {
        std::partial_sort(hits.begin(), hits.begin() + static_cast<std::ptrdiff_t>(limit),
                          hits.end(), better);
        hits.resize(limit);
    } else {
        std::sort(hits.begin(), hits.end(), better);
    }
    return hits;
}

}  // namespace attnrag::index
