// answer_grounding(): how much of the top-ranked kept sentence's new information an answer carries.
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

}  // namespace attnrag::pipelines
