// QA metric tests: SQuAD normalisation, exact match, token F1 and contains, on cases whose
// values the official SQuAD evaluation script gives.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "attnrag/pipelines/qa_metrics.hpp"

using attnrag::pipelines::contains_answer;
using attnrag::pipelines::exact_match;
using attnrag::pipelines::f1_score;
using attnrag::pipelines::normalize_answer;
using Refs = std::vector<std::string>;

TEST_CASE("normalize_answer follows the SQuAD script", "[qa_metrics]") {
    CHECK(normalize_answer("The Normans") == "normans");
    CHECK(normalize_answer("  in the 10th and 11th centuries. ") == "in 10th and 11th centuries");
    CHECK(normalize_answer("Denver Broncos!") == "denver broncos");
    CHECK(normalize_answer("A cat, an owl & THE dog") == "cat owl dog");
    // Articles only as whole words; punctuation is deleted without a space.
    CHECK(normalize_answer("theory of an anthem") == "theory of anthem");
    CHECK(normalize_answer("don't") == "dont");
    CHECK(normalize_answer("1,000") == "1000");
    CHECK(normalize_answer("a-the") == "athe");
    CHECK(normalize_answer("") == "");
    CHECK(normalize_answer("the a an .") == "");
    CHECK(normalize_answer("tab\tand\nnewline") == "tab and newline");
}

TEST_CASE("normalize_answer handles common Unicode punctuation and capitals", "[qa_metrics]") {
    CHECK(normalize_answer("\xE2\x80\x9CQuoted\xE2\x80\x9D") == "quoted");                  // “Quoted”
    CHECK(normalize_answer("1990\xE2\x80\x93" "2000") == "19902000");                       // en dash
    CHECK(normalize_answer("\xC3\x89" "COLE normale") == "\xC3\xA9" "cole normale");        // École
    CHECK(normalize_answer("Wait\xE2\x80\xA6 what\xEF\xBC\x9F") == "wait what");            // … and ？
    CHECK(normalize_answer("a\xC2\xA0" "b the\xE3\x80\x80" "c") == "b c");                  // NBSP, ideographic space
    CHECK(normalize_answer("\xD0\x9C\xD0\xBE\xD1\x81\xD0\xBA\xD0\xB2\xD0\xB0") ==
          "\xD0\xBC\xD0\xBE\xD1\x81\xD0\xBA\xD0\xB2\xD0\xB0");                              // Москва
    CHECK(normalize_answer("bad \xFF byte") == "bad \xFF byte");
}

TEST_CASE("exact_match compares normalised answers over all references", "[qa_metrics]") {
    const Refs refs = {"Denver Broncos", "the Denver Broncos"};
    CHECK(exact_match("denver broncos.", refs));
    CHECK(exact_match("The Denver Broncos", refs));
    CHECK_FALSE(exact_match("Broncos", refs));
    CHECK_FALSE(exact_match("", refs));
    CHECK(exact_match("France", Refs{"Paris", "France"}));
}

TEST_CASE("f1_score gives SQuAD token overlap F1", "[qa_metrics]") {
    // pred tokens {broncos}, gold {denver broncos}: P = 1, R = 1/2, F1 = 2/3.
    CHECK(f1_score("Broncos", Refs{"Denver Broncos"}) == Approx(2.0 / 3.0));
    // pred {denver broncos won}, gold {denver broncos}: P = 2/3, R = 1, F1 = 0.8.
    CHECK(f1_score("The Denver Broncos won", Refs{"Denver Broncos"}) == Approx(0.8));
    // Best over references.
    CHECK(f1_score("Broncos", Refs{"Carolina Panthers", "Broncos"}) == Approx(1.0));
    CHECK(f1_score("Santa Clara California", Refs{"Santa Clara", "Levi's Stadium"}) == Approx(0.8));
    CHECK(f1_score("Panthers", Refs{"Denver Broncos"}) == 0.0);
    // Token multisets: a repeated token counts only as often as the reference has it.
    // pred {x x y}, gold {x y}: common = one x + one y = 2; P = 2/3, R = 1, F1 = 0.8.
    CHECK(f1_score("x x y", Refs{"x y"}) == Approx(0.8));
}

TEST_CASE("empty answers follow the SQuAD 2.0 rule", "[qa_metrics]") {
    // No usable reference: the empty answer is the reference.
    CHECK(exact_match("", Refs{}));
    CHECK(exact_match("The.", Refs{""}));
    CHECK_FALSE(exact_match("Paris", Refs{}));
    CHECK(f1_score("", Refs{}) == 1.0);
    CHECK(f1_score("an", Refs{"the"}) == 1.0);
    CHECK(f1_score("Paris", Refs{}) == 0.0);
    // A prediction with no tokens against a real reference scores 0.
    CHECK(f1_score("", Refs{"Paris"}) == 0.0);
    CHECK_FALSE(exact_match("", Refs{"Paris"}));
    // An empty reference beside a real one is ignored.
    CHECK_FALSE(exact_match("", Refs{"", "Paris"}));
    CHECK(exact_match("paris", Refs{"", "Paris"}));
}

TEST_CASE("contains_answer finds a normalised reference in the prediction", "[qa_metrics]") {
    CHECK(contains_answer("The answer is Denver Broncos, I think.", Refs{"the Denver Broncos"}));
    CHECK(contains_answer("In the 10th century", Refs{"Paris", "10th Century"}));
    CHECK_FALSE(contains_answer("Carolina", Refs{"Denver Broncos"}));
    // Empty normalised references never match (they would match everything).
    CHECK_FALSE(contains_answer("anything", Refs{"", "the", "!"}));
    CHECK_FALSE(contains_answer("", Refs{}));
}
