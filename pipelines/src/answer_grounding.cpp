// answer_grounding(): how much of the top-ranked kept sentence's new information an answer carries;
// choose_answer(): which of the answers from several contexts to keep.
#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "attnrag/pipelines/infiniretri.hpp"

namespace attnrag::pipelines {

namespace {

bool is_word_byte(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}

std::set<std::string> words_of(std::string_view text) {
    std::set<std::string> out;
    std::string word;
    for (const char ch : text) {
        const auto c = static_cast<unsigned char>(ch);
        if (is_word_byte(c)) {
            word.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : ch);
        } else if (!word.empty()) {
            out.insert(std::move(word));
            word.clear();
        }
    }
    if (!word.empty()) out.insert(std::move(word));
    return out;
}

}  // namespace

float answer_grounding(std::span<const KeptSentence> kept, std::string_view question, std::string_view answer) {
    if (kept.empty()) return 0.0f;
    const auto top = std::max_element(kept.begin(), kept.end(), [](const KeptSentence& a, const KeptSentence& b) {
        return a.relevance < b.relevance;
    });
    const std::set<std::string> asked = words_of(question);
    const std::set<std::string> said = words_of(answer);
    std::vector<std::set<std::string>> kept_words;
    kept_words.reserve(kept.size());
    for (const KeptSentence& s : kept) kept_words.push_back(words_of(s.text));
    double sum = 0;
    for (const std::string& w : kept_words[static_cast<size_t>(top - kept.begin())]) {
        if (asked.count(w) != 0 || said.count(w) == 0) continue;
        const auto df = std::count_if(kept_words.begin(), kept_words.end(),
                                      [&](const std::set<std::string>& ws) { return ws.count(w) != 0; });
        sum += std::log((static_cast<double>(kept.size()) + 1.0) / (static_cast<double>(df) + 0.5));
    }
    return static_cast<float>(sum);
}

bool answers_agree(std::string_view a, std::string_view b) {
    const std::set<std::string> wa = words_of(a), wb = words_of(b);
    const auto shared = static_cast<size_t>(std::count_if(wa.begin(), wa.end(), [&](const std::string& w) {
        return wb.count(w) != 0;
    }));
    const size_t either = wa.size() + wb.size() - shared;
    return 2 * shared >= either;
}

size_t choose_answer(std::span<const AnswerCandidate> candidates) {
    const size_t n = candidates.size();
    auto best_of = [&](auto&& eligible) {
        size_t best = n;
        for (size_t k = 0; k < n; ++k) {
            if (eligible(k) && (best == n || candidates[k].grounding > candidates[best].grounding)) best = k;
        }
        return best;
    };
    const size_t grounded = best_of([](size_t) { return true; });
    if (grounded == n) return 0;
    // support[k]: the candidates whose answer agrees with k's, k included.
    std::vector<size_t> support(n, 0);
    for (size_t k = 0; k < n; ++k) {
        for (size_t j = 0; j < n; ++j) support[k] += answers_agree(candidates[k].text, candidates[j].text) ? 1 : 0;
    }
    auto majority = [&](size_t k) { return 2 * support[k] > n; };
    if (majority(grounded)) return grounded;
    const size_t agreed = best_of([&](size_t k) { return majority(k) && candidates[k].grounding > 0; });
    return agreed == n ? grounded : agreed;
}

}  // namespace attnrag::pipelines
