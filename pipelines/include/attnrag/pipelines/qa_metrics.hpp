// Answer metrics for QA evaluation (the SQuAD definitions; /work/shared/data/README.md "Metrics"):
// normalisation, exact match, token-overlap F1 and "contains".
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace attnrag::pipelines {

// SQuAD normalisation: lowercase, remove punctuation, remove the articles a/an/the as whole
// words, collapse whitespace (result has single spaces, none leading or trailing).
// Beyond the official script (ASCII only): Latin-1, Latin Extended-A, Greek and Cyrillic capitals
// are lowercased, common Unicode punctuation (general punctuation, CJK and fullwidth
// punctuation, Latin-1 marks such as « » ¿ ¡) is removed and Unicode spaces separate words.
// Articles are matched as whitespace-separated tokens after punctuation is gone. Invalid
// UTF-8 bytes are kept as they are.
std::string normalize_answer(std::string_view s);

// References whose normalised form is empty are ignored; when none is left the reference is the
// empty answer (SQuAD 2.0: an unanswerable question), so an empty prediction scores 1.

// 1 when the normalised prediction equals a normalised reference.
bool exact_match(std::string_view prediction, std::span<const std::string> answers);
// Token-overlap F1 (multiset of normalised tokens), best over the references, in [0, 1]; when
// the prediction or the reference has no tokens it is 1 if both have none, else 0.
double f1_score(std::string_view prediction, std::span<const std::string> answers);
// True when a non-empty normalised reference is a substring of the normalised prediction.
bool contains_answer(std::string_view prediction, std::span<const std::string> answers);

}  // namespace attnrag::pipelines
