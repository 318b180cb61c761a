// InfiniRetri's token scoring: the phrase (box) filter over key positions and top-k selection.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace attnrag::pipelines::detail {

// "Same"-length box filter with zero padding, centred as SciPy's convolve(mode="same"):
// out[j] = sum of a[m] for m in [j - width/2, j - width/2 + width) (j-4 .. j+3 for width 8).
// width < 1 acts as 1.
std::vector<float> box_filter(std::span<const float> a, int32_t width);

// Indices of the k largest values (all of them when k >= size), ascending by index. Ties at the
// threshold go to the lower indices.
std::vector<int32_t> top_k_indices(std::span<const float> s, int32_t k);

// Calibrated token scores: asked[j] / (neutral[j] + 1/n) with both normalised to sum 1 (a zero
// sum is left as is): attention the question gives a token beyond what a question-independent
// reader gives it. Sizes must match.
std::vector<float> calibrated_scores(std::span<const float> asked, std::span<const float> neutral);

}  // namespace attnrag::pipelines::detail
