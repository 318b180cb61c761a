// Retrieval quality metrics with BEIR's definitions (pytrec_eval's ndcg_cut and recall).
#pragma once

#include <map>
#include <span>
#include <string>

namespace attnrag::index {

// Both take one query's ranking (document ids, best first) and its relevance judgements
// (qrels: document id -> graded relevance; 0 or below means not relevant, absent means 0).
// As in pytrec_eval, where a run is a map, a document repeated in the ranking counts once, at its
// first position; later copies are dropped and do not take a rank. k <= 0, or qrels without any
// relevant document, give 0. Pure functions: thread-safe.

// nDCG@k = DCG@k / IDCG@k, DCG@k = sum over ranks i = 1..k of rel_i / log2(i + 1) (linear gain),
// IDCG@k the DCG of the qrels' own relevances sorted descending (the ideal ranking).
double ndcg_at_k(std::span<const std::string> ranked_doc_ids,
                 const std::map<std::string, int>& qrels, int k);

// recall@k = |relevant ∩ top k of the ranking| / |relevant|, relevant = qrels with rel > 0.
double recall_at_k(std::span<const std::string> ranked_doc_ids,
                   const std::map<std::string, int>& qrels, int k);

}  // namespace attnrag::index
