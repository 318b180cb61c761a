// nDCG@k and recall@k as BEIR computes them (pytrec_eval: linear gain, log2(rank + 1) discount).
#include "attnrag/index/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace attnrag::index {
namespace {

// Calls f(doc_id, rank) for the first k distinct documents of the ranking, rank from 1.
template <class F>
void for_top_k_distinct(std::span<const std::string> ranked, int k, F&& f) {
    std::unordered_set<std::string_view> seen;
    int rank = 0;
    for (const std::string& doc : ranked) {
        if (rank >= k) break;
        if (!seen.insert(doc).second) continue;
        f(doc, ++rank);
    }
}

int relevance(const std::map<std::string, int>& qrels, const std::string& doc) {
    auto it = qrels.find(doc);
    return it == qrels.end() ? 0 : std::max(0, it->second);
}

}  // namespace

double ndcg_at_k(std::span<const std::string> ranked_doc_ids,
                 const std::map<std::string, int>& qrels, int k) {
    if (k <= 0) return 0.0;
    double dcg = 0.0;
    for_top_k_distinct(ranked_doc_ids, k, [&](const std::string& doc, int rank) {
        dcg += relevance(qrels, doc) / std::log2(rank + 1.0);
    });
    std::vector<int> ideal;
    for (const auto& [doc, rel] : qrels) {
        if (rel > 0) ideal.push_back(rel);
    }
    std::sort(ideal.begin(), ideal.end(), std::greater<>());
    double idcg = 0.0;
    for (size_t i = 0; i < ideal.size() && i < static_cast<size_t>(k); ++i) {
        idcg += ideal[i] / std::log2(static_cast<double>(i) + 2.0);
    }
    return idcg > 0.0 ? dcg / idcg : 0.0;
}

double recall_at_k(std::span<const std::string> ranked_doc_ids,
                   const std::map<std::string, int>& qrels, int k) {
    if (k <= 0) return 0.0;
    const auto n_relevant =
        std::count_if(qrels.begin(), qrels.end(), [](const auto& q) { return q.second > 0; });
    if (n_relevant == 0) return 0.0;
    int n_found = 0;
    for_top_k_distinct(ranked_doc_ids, k, [&](const std::string& doc, int) {
        if (relevance(qrels, doc) > 0) ++n_found;
    });
    return static_cast<double>(n_found) / static_cast<double>(n_relevant);
}

}  // namespace attnrag::index
