// Reciprocal rank fusion of a dense and a lexical ranking into one list.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace attnrag::index {

// One fused result; a rank is 1-based, 0 when the id is absent from that list.
struct FusedHit {
    int64_t id = 0;
    double score = 0.0;
    int dense_rank = 0;
    int lexical_rank = 0;
};

// Reciprocal rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009):
//   score(d) = sum over the lists containing d of 1 / (k_rrf + rank_list(d)),  rank from 1.
// Inputs are ids best first; an id repeated within one list counts at its first (best) rank only.
// k_rrf = 60 is the paper's constant; a negative k_rrf is treated as 0. Returns the union of both
// lists ordered by score, highest first; ties go to the smaller best rank (min over the lists the
// id is in), then to the smaller id, so the order is deterministic. limit > 0 keeps only the first
// `limit` hits. Pure function: thread-safe, inputs borrowed only for the call.
std::vector<FusedHit> reciprocal_rank_fusion(std::span<const int64_t> dense_ids_ranked,
                                             std::span<const int64_t> lexical_ids_ranked,
                                             int k_rrf = 60, size_t limit = 0);

}  // namespace attnrag::index
