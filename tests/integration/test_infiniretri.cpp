// InfiniRetri: the streaming sentence source (byte ranges, block edges, UTF-8 errors) and the
// pipeline on the real SmolLM2 (cache cap, a needle found in a haystack, a document larger than
// the window read with bounded memory).
#include <algorithm>
#include <cmath>
#include <catch2/catch.hpp>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "attnrag/model.hpp"
#include "attnrag/pipelines/infiniretri.hpp"
#include "attnrag/pipelines/qa_metrics.hpp"
#include "real_model.hpp"
#include "test_support.hpp"

using namespace attnrag;
using namespace attnrag::pipelines;
namespace fs = std::filesystem;

namespace {

using test::real_model;

void write_file(const fs::path& p, std::string_view bytes) {
    std::ofstream out(p, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<SourceSentence> all_sentences(SentenceSource& src) {
    std::vector<SourceSentence> out;
    for (;;) {
        auto s = src.next();
        REQUIRE(s.ok());
        if (!*s) break;
        out.push_back(std::move(**s));
    }
    return out;
}

std::string essays() { return test::essays_text(); }

// A small reading of `text`: chunks of 400 tokens, top-k 24, no answer context (unless given),
// the given score memory and relevance reserve.
struct SmallReading {
    std::vector<InfiniRetriCheckpoint> checkpoints;  // after each chunk but the last
    InfiniRetriAnswer answer;
    // The cache after each chunk: the checkpoints', then the final kept sentences.
    std::vector<std::vector<KeptSentence>> caches() const {
        std::vector<std::vector<KeptSentence>> out;
        for (const auto& c : checkpoints) out.push_back(c.cache);
        out.push_back(answer.kept);
        return out;
    }
};

SmallReading read_small(InfiniRetri& ir, const std::string& text, const std::string& question, float memory,
                        int32_t reserve, int32_t answer_context = 0, const InfiniRetriCheckpoint* resume = nullptr) {
    InfiniRetriOptions o;
    o.chunk_tokens = 400;
    o.top_k = 24;
    o.score_memory = memory;
    o.relevance_reserve = reserve;
    o.answer_context_tokens = answer_context;
    o.answer_alternatives.clear();
    o.max_answer_tokens = 2;
    o.resume = resume;
    SmallReading out;
    o.on_checkpoint = [&](const InfiniRetriCheckpoint& c) { out.checkpoints.push_back(c); };
    auto src = SentenceSource::from_text(text);
    auto a = ir.answer(src, question, o);
    REQUIRE(a.ok());
    out.answer = std::move(a).value();
    return out;
}

struct Needle {
    std::string needle, question;
    std::vector<std::string> answers;
};

Needle first_needle() {
    std::ifstream in(test::shared_data_dir() / "eval" / "niah_needles.jsonl");
    std::string line;
    REQUIRE(std::getline(in, line));
    auto j = nlohmann::json::parse(line);
    return {j.at("needle"), j.at("question"), j.at("answers").get<std::vector<std::string>>()};
}

// The token count of a sentence as the pipeline tokenizes it (one leading separator).
size_t n_tokens(const Tokenizer& tok, const SourceSentence& s) {
    auto ids = tok.encode((s.paragraph_start ? "\n\n" : " ") + s.text, false);
    REQUIRE(ids.ok());
    return ids->size();
}

// The first sentences of `text` totalling about n tokens, with the needle inserted after the
// sentence at `depth` (0..1) of them.
std::string haystack(const Tokenizer& tok, const std::string& text, size_t n, double depth,
                     const std::string& needle) {
    auto src = SentenceSource::from_text(text);
    std::vector<uint64_t> ends;
    std::vector<size_t> cum;
    size_t total = 0;
    while (total < n) {
        auto s = src.next();
        REQUIRE(s.ok());
        REQUIRE(*s);
        total += n_tokens(tok, **s);
        ends.push_back((*s)->end);
        cum.push_back(total);
    }
    size_t at = 0;
    while (at + 1 < cum.size() && static_cast<double>(cum[at]) < depth * static_cast<double>(total))
        ++at;
    const auto cut = static_cast<size_t>(ends[at]);
    return text.substr(0, cut) + " " + needle +
           text.substr(cut, static_cast<size_t>(ends.back()) - cut);
}

long vm_hwm_kib() {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line)) {
        if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
    }
    return 0;
}

}  // namespace

TEST_CASE("sentences carry the exact byte ranges of their text at any block size",
          "[infiniretri]") {
    const std::string text =
        "The first line of a paragraph\nwraps onto a second line. A short one.\n\n"
        "Caf\xC3\xA9 au lait costs \xE2\x82\xAC"
        "3. Emoji \xF0\x9F\x98\x80 here! "
        "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE6\x96\x87\xE3\x80\x82"
        "Last sentence without a full stop";
    const fs::path dir = test::make_temp_dir("infiniretri_src");
    const fs::path file = dir / "doc.txt";
    write_file(file, text);

    auto whole = SentenceSource::from_text(text);
    const auto ref = all_sentences(whole);
    REQUIRE(ref.size() >= 5);
    CHECK(ref[0].text == "The first line of a paragraph\nwraps onto a second line.");  // unwrapped
    CHECK(ref[0].paragraph_start);
    CHECK_FALSE(ref[1].paragraph_start);
    CHECK(ref[2].paragraph_start);
    CHECK(ref.back().text == "Last sentence without a full stop");
    for (size_t block :
         {size_t{1}, size_t{2}, size_t{3}, size_t{5}, size_t{7}, size_t{64}, size_t{1} << 18}) {
        INFO("block " << block);
        auto src = SentenceSource::open(file, {.block_bytes = block});
        REQUIRE(src.ok());
        const auto got = all_sentences(*src);
        REQUIRE(got.size() == ref.size());
        for (size_t i = 0; i < got.size(); ++i) {
            CHECK(got[i].begin == ref[i].begin);
            CHECK(got[i].end == ref[i].end);
            CHECK(got[i].text == text.substr(got[i].begin, got[i].end - got[i].begin));
            CHECK(got[i].paragraph_start == ref[i].paragraph_start);
        }
        CHECK(src->bytes_read() == text.size());
    }
}

TEST_CASE("a long essay file streams in small blocks to the same sentences", "[infiniretri]") {
    const std::string text = essays().substr(0, 200000);
    const fs::path file = test::make_temp_dir("infiniretri_essay") / "essays.txt";
    write_file(file, text);
    auto whole = SentenceSource::from_text(text);
    const auto ref = all_sentences(whole);
    REQUIRE(ref.size() > 1000);
    for (size_t block : {size_t{97}, size_t{4096}}) {
        INFO("block " << block);
        auto src = SentenceSource::open(file, {.block_bytes = block});
        REQUIRE(src.ok());
        const auto got = all_sentences(*src);
        REQUIRE(got.size() == ref.size());
        size_t mismatches = 0;
        for (size_t i = 0; i < got.size(); ++i) {
            mismatches += got[i].begin != ref[i].begin || got[i].end != ref[i].end;
            REQUIRE(got[i].text == text.substr(got[i].begin, got[i].end - got[i].begin));
        }
        CHECK(mismatches == 0);
    }
}

TEST_CASE("fragments are glued and runs without breaks are cut", "[infiniretri]") {
    SECTION("short fragment after a full stop") {
        auto src = SentenceSource::from_text("I met Dr. No. It was a long and sunny day.");
        const auto got = all_sentences(src);
        REQUIRE(got.size() == 2);
        CHECK(got[0].text == "I met Dr. No.");
        CHECK(got[1].text == "It was a long and sunny day.");
    }
    SECTION("a run without breaks is cut at white space") {
        std::string text;
        for (int i = 0; i < 400; ++i) text += "word" + std::to_string(i) + " ";
        auto src = SentenceSource::from_text(text, {.block_bytes = 100, .max_sentence_bytes = 256});
        const auto got = all_sentences(src);
        REQUIRE(got.size() > 8);
        for (const auto& s : got) {
            CHECK(s.text.size() <= 256);
            CHECK(s.text == text.substr(s.begin, s.end - s.begin));
            CHECK(s.text.front() != ' ');
            CHECK(s.text.back() != ' ');
        }
    }
}

TEST_CASE("invalid UTF-8 is reported with its byte offset", "[infiniretri]") {
    const fs::path dir = test::make_temp_dir("infiniretri_bad");
    struct Case {
        std::string bytes;
        uint64_t offset;
    };
    const std::vector<Case> cases = {
        {"Fine text. More fine text \xFF and the rest.", 26},
        {"Caf\xC3\xA9 ok. \xE2\x82", 10},                // truncated at the end of the file
        {"ab\xC3\xA9\xC3(cd. Ok.", 4},                   // lead byte followed by a non-continuation
        {"\xEF\xBB\xBFWith a BOM. Then \xC0\xAF.", 20},  // overlong, offset counts the BOM
    };
    for (size_t c = 0; c < cases.size(); ++c) {
        const fs::path file = dir / ("bad" + std::to_string(c) + ".txt");
        write_file(file, cases[c].bytes);
        for (size_t block : {size_t{1}, size_t{2}, size_t{3}, size_t{4}, size_t{1} << 18}) {
            INFO("case " << c << " block " << block);
            auto src = SentenceSource::open(file, {.block_bytes = block});
            REQUIRE(src.ok());
            std::optional<Error> err;
            for (;;) {
                auto s = src->next();
                if (!s) {
                    err = s.error();
                    break;
                }
                if (!*s) break;
            }
            REQUIRE(err);
            CHECK(err->code == Errc::InvalidArgument);
            CHECK(err->message == file.string() + ": invalid UTF-8 at byte offset " +
                                      std::to_string(cases[c].offset));
        }
    }
    auto missing = SentenceSource::open(dir / "missing.txt");
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.error().code == Errc::NotFound);
}

TEST_CASE("the sentence cache respects its cap and kept sentences slice the source",
          "[smollm2][infiniretri]") {
    const Model& model = real_model();
    const std::string text = essays().substr(0, 12000);
    auto ir = InfiniRetri::create(model, 2);
    REQUIRE(ir.ok());
    auto src = SentenceSource::from_text(text);
    int32_t n_progress = 0;
    InfiniRetriOptions o;
    o.chunk_tokens = 512;
    o.cache_tokens = 96;
    o.max_answer_tokens = 8;
    o.on_progress = [&](const InfiniRetriProgress& p) {
        ++n_progress;
        CHECK(p.n_cache_tokens <= 96);
        CHECK(p.n_chunks == n_progress);
        return true;
    };
    auto a = ir->answer(src, "What do addictive things have in common?", o);
    REQUIRE(a.ok());
    CHECK(a->cache_limit == 96);
    CHECK(a->n_chunks == n_progress);
    CHECK(a->n_chunks >= 5);
    REQUIRE_FALSE(a->kept.empty());
    // `kept` is the last cache, within the cap, and beside it the relevance reserve (3 sentences
    // by default), in document order.
    int32_t sum = 0, cached = 0, reserved = 0;
    uint64_t prev_end = 0;
    for (const auto& k : a->kept) {
        CHECK(k.text == text.substr(k.begin, k.end - k.begin));
        CHECK(k.begin >= prev_end);  // document order, disjoint
        prev_end = k.end;
        sum += static_cast<int32_t>(k.ids.size());
        if (k.reserved) ++reserved;
        else cached += static_cast<int32_t>(k.ids.size());
    }
    CHECK(sum == a->n_cache_tokens);
    CHECK(cached <= 96);
    CHECK(reserved <= o.relevance_reserve);
    {
        InfiniRetriOptions no_reserve = o;
        no_reserve.relevance_reserve = 0;
        no_reserve.on_progress = {};
        auto plain = SentenceSource::from_text(text);
        auto b = ir->answer(plain, "What do addictive things have in common?", no_reserve);
        REQUIRE(b.ok());
        CHECK(b->n_cache_tokens <= 96);
        CHECK(std::none_of(b->kept.begin(), b->kept.end(), [](const KeptSentence& k) { return k.reserved; }));
    }

    // Cancelling from the progress callback stops the run.
    auto again = SentenceSource::from_text(text);
    o.on_progress = [](const InfiniRetriProgress&) { return false; };
    auto c = ir->answer(again, "What do addictive things have in common?", o);
    REQUIRE_FALSE(c.ok());
    CHECK(c.error().code == Errc::Cancelled);
}

TEST_CASE("score memory keeps cached sentences that scored high before",
          "[smollm2][infiniretri]") {
    const Model& model = real_model();
    const std::string text = essays().substr(0, 7000);
    auto ir = InfiniRetri::create(model, 2);
    REQUIRE(ir.ok());
    const std::string question = "What do addictive things have in common?";
    auto read = [&](float memory) { return read_small(*ir, text, question, memory, 0).caches(); };
    auto by_begin = [](const std::vector<KeptSentence>& cache) {
        std::map<uint64_t, float> out;  // begin -> score
        for (const auto& s : cache) out[s.begin] = s.score;
        return out;
    };
    const float m = 0.9f;
    const auto reference = read(0.0f);
    const auto sticky = read(m);
    REQUIRE(reference.size() >= 3);
    REQUIRE(sticky.size() == reference.size());
    // The first pass has no cache: the same sentences enter with the same scores.
    CHECK(by_begin(sticky[0]) == by_begin(reference[0]));
    // The second pass reads the same prompt: the sticky cache keeps all the reference keeps,
    // and more (first-pass sentences whose remembered score reached the bar).
    const auto ref2 = by_begin(reference[1]);
    const auto sticky2 = by_begin(sticky[1]);
    for (const auto& [begin, score] : ref2) CHECK(sticky2.count(begin) == 1);
    CHECK(sticky2.size() > ref2.size());
    // A sentence carried over competes with at least m times its earlier score; new ones and
    // those the reference also keeps score as in the reference otherwise.
    const auto first = by_begin(sticky[0]);
    for (const auto& [begin, score] : sticky2) {
        const auto was = first.find(begin);
        if (was != first.end()) CHECK(score >= m * was->second);
        const auto ref = ref2.find(begin);
        if (ref != ref2.end() && was == first.end()) CHECK(score == ref->second);
    }

    for (float bad : {-0.5f, 1.0f, std::numeric_limits<float>::quiet_NaN()}) {
        auto src = SentenceSource::from_text(text);
        auto r = ir->answer(src, question, InfiniRetriOptions{.score_memory = bad});
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().code == Errc::InvalidArgument);
    }
}

TEST_CASE("the relevance reserve holds the most relevant dropped sentences for the answer",
          "[smollm2][infiniretri]") {
    const Model& model = real_model();
    const std::string text = essays().substr(0, 7000);
    auto ir = InfiniRetri::create(model, 2);
    REQUIRE(ir.ok());
    const std::string question = "What do addictive things have in common?";
    auto begins = [](const std::vector<KeptSentence>& v) {
        std::set<uint64_t> out;
        for (const auto& s : v) out.insert(s.begin);
        return out;
    };
    auto least = [](const std::vector<KeptSentence>& v) {
        float m = std::numeric_limits<float>::infinity();
        for (const auto& s : v) m = std::min(m, s.peak_relevance);
        return m;
    };
    const SmallReading plain = read_small(*ir, text, question, 0.0f, 0);
    REQUIRE(plain.checkpoints.size() >= 3);
    for (const auto& cp : plain.checkpoints) {
        CHECK(cp.reserve.empty());
        for (const auto& s : cp.cache) CHECK(s.peak_relevance == 0.0f);  // not computed when off
    }
    for (const auto& s : plain.answer.kept) CHECK_FALSE(s.reserved);

    for (int32_t n : {1, 3}) {
        const SmallReading r = read_small(*ir, text, question, 0.0f, n);
        REQUIRE(r.checkpoints.size() == plain.checkpoints.size());
        for (size_t i = 0; i < r.checkpoints.size(); ++i) {
            const auto& cp = r.checkpoints[i];
            // The reading is the one without a reserve: the same cache with the same scores.
            const auto& ref = plain.checkpoints[i].cache;
            REQUIRE(cp.cache.size() == ref.size());
            for (size_t k = 0; k < ref.size(); ++k) {
                CHECK(cp.cache[k].begin == ref[k].begin);
                CHECK(cp.cache[k].score == Approx(ref[k].score).epsilon(1e-5));
                CHECK(cp.cache[k].peak_relevance > 0.0f);
            }
            // The reserve: n sentences (every pass here drops more), none of them cached, in
            // document order.
            CHECK(cp.reserve.size() == static_cast<size_t>(n));
            const auto cached = begins(cp.cache);
            for (size_t k = 0; k < cp.reserve.size(); ++k) {
                CHECK(cached.count(cp.reserve[k].begin) == 0);
                CHECK(cp.reserve[k].peak_relevance > 0.0f);
                if (k > 0) CHECK(cp.reserve[k - 1].end <= cp.reserve[k].begin);
            }
            if (i == 0) continue;
            // The reserve only gets more relevant; a sentence the cache dropped is reserved unless
            // the reserve holds ones at least as relevant.
            const auto& before = r.checkpoints[i - 1];
            CHECK(least(cp.reserve) >= least(before.reserve));
            const auto reserved = begins(cp.reserve);
            for (const auto& s : before.cache) {
                if (cached.count(s.begin) || reserved.count(s.begin)) continue;
                CHECK(least(cp.reserve) >= s.peak_relevance);
            }
        }
        // The answer reads the last cache and the reserve, in document order, the reserved ones
        // marked.
        size_t n_reserved = 0;
        std::set<uint64_t> from_cache;
        for (size_t k = 0; k < r.answer.kept.size(); ++k) {
            const auto& s = r.answer.kept[k];
            if (k > 0) CHECK(r.answer.kept[k - 1].end <= s.begin);
            if (s.reserved) {
                ++n_reserved;
            } else {
                from_cache.insert(s.begin);
            }
        }
        CHECK(n_reserved == static_cast<size_t>(n));
        CHECK(from_cache == begins(plain.answer.kept));

        // A resumed reading carries the reserve on: the same answer context.
        const SmallReading resumed = read_small(*ir, text, question, 0.0f, n, 0, &r.checkpoints[1]);
        REQUIRE(resumed.answer.kept.size() == r.answer.kept.size());
        for (size_t k = 0; k < r.answer.kept.size(); ++k) {
            CHECK(resumed.answer.kept[k].begin == r.answer.kept[k].begin);
            CHECK(resumed.answer.kept[k].reserved == r.answer.kept[k].reserved);
        }
    }
    // Ranked for the answer with the cache.
    const SmallReading ranked = read_small(*ir, text, question, 0.0f, 3, 64);
    CHECK(std::count_if(ranked.answer.kept.begin(), ranked.answer.kept.end(),
                        [](const KeptSentence& s) { return s.reserved; }) == 3);
    for (const auto& s : ranked.answer.kept) CHECK(s.relevance > 0.0f);

    // A checkpoint of a reading without a reserve does not resume one with it.
    {
        InfiniRetriOptions o;
        o.chunk_tokens = 400;
        o.top_k = 24;
        o.score_memory = 0.0f;
        o.relevance_reserve = 3;
        o.answer_context_tokens = 0;
        o.resume = &plain.checkpoints[1];
        auto src = SentenceSource::from_text(text);
        auto bad = ir->answer(src, question, o);
        REQUIRE_FALSE(bad.ok());
        CHECK(bad.error().code == Errc::InvalidArgument);
    }
    auto src = SentenceSource::from_text(text);
    auto r = ir->answer(src, question, InfiniRetriOptions{.relevance_reserve = -1});
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::InvalidArgument);
}

TEST_CASE("sentences longer than a chunk are split at spaces", "[smollm2][infiniretri]") {
    const Model& model = real_model();
    std::string text = "The vault code is 4471.";
    for (int i = 0; i < 120; ++i) text += " and then another clause number " + std::to_string(i);
    text += ".";
    auto ir = InfiniRetri::create(model, 2);
    REQUIRE(ir.ok());
    auto src = SentenceSource::from_text(text);
    InfiniRetriOptions o;
    o.chunk_tokens = 64;
    o.top_k = 1000;  // keep everything: every piece is visible in `kept`
    o.max_answer_tokens = 4;
    auto a = ir->answer(src, "What is the vault code?", o);
    REQUIRE(a.ok());
    CHECK(a->n_chunks > 10);
    uint64_t covered = 0;
    for (const auto& k : a->kept) {
        CHECK(static_cast<int32_t>(k.ids.size()) <= 64);
        CHECK(k.text == text.substr(k.begin, k.end - k.begin));
        covered += k.end - k.begin;
    }
    CHECK(a->kept.size() > 10);
    CHECK(covered > text.size() / 2);
}

TEST_CASE("a needle in a small haystack is found with the real model", "[smollm2][infiniretri]") {
    const Model& model = real_model();
    const Needle n = first_needle();
    const std::string text = haystack(model.tokenizer(), essays(), 3500, 0.5, n.needle);
    auto ir = InfiniRetri::create(model, 2);
    REQUIRE(ir.ok());
    auto src = SentenceSource::from_text(text);
    std::string streamed;
    int pieces = 0;
    InfiniRetriOptions o;
    o.on_text = [&](std::string_view t) {
        streamed += t;
        ++pieces;
        return true;
    };
    auto a = ir->answer(src, n.question, o);
    REQUIRE(a.ok());
    INFO("answer: " << a->text);
    CHECK(a->n_chunks >= 3);
    CHECK(streamed == a->text);
    CHECK(contains_answer(a->text, n.answers));
    // The defaults answer from four contexts (64, then 128, 256 and 16 tokens) and keep the answer
    // choose_answer picks (the best grounded in the top-ranked sentence unless a grounded majority
    // agrees on another); it is passed on whole.
    CHECK(pieces == 1);
    REQUIRE(a->candidates.size() == 1 + o.answer_alternatives.size());
    CHECK(a->candidates[0].context_budget == o.answer_context_tokens);
    const auto chosen = static_cast<size_t>(a->chosen);
    REQUIRE(chosen < a->candidates.size());
    CHECK(a->text == a->candidates[chosen].text);
    CHECK(a->n_context_tokens == a->candidates[chosen].n_context_tokens);
    for (size_t k = 0; k < a->candidates.size(); ++k) {
        const AnswerCandidate& c = a->candidates[k];
        CHECK(c.grounding == answer_grounding(a->kept, n.question, c.text));
        CHECK(c.n_context_tokens <= std::max(c.context_budget, a->candidates[0].n_context_tokens));
    }
    CHECK(chosen == choose_answer(a->candidates));
    const bool needle_kept =
        std::any_of(a->kept.begin(), a->kept.end(), [&](const KeptSentence& k) {
            return k.text == n.needle && text.substr(k.begin, k.end - k.begin) == n.needle;
        });
    CHECK(needle_kept);
}

namespace {

// The 3,500-token haystack with the first needle at half depth that the ranking tests read, and
// one reading of a text with the given options.
std::string ranking_haystack(const Needle& n) {
    return haystack(real_model().tokenizer(), essays(), 3500, 0.5, n.needle);
}

Result<InfiniRetriAnswer> read_text(InfiniRetri& ir, const std::string& text, const std::string& question,
                                    const InfiniRetriOptions& o) {
    auto src = SentenceSource::from_text(text);
    return ir.answer(src, question, o);
}

}  // namespace

TEST_CASE("the answer reads the kept sentences most relevant to the question", "[smollm2][infiniretri]") {
    const Needle n = first_needle();
    const std::string text = ranking_haystack(n);
    auto ir = InfiniRetri::create(real_model(), 2);
    REQUIRE(ir.ok());
    InfiniRetriOptions o;
    o.answer_context_tokens = 96;
    o.answer_alternatives = {};  // one answer per context here; the choice among several below
    auto a = read_text(*ir, text, n.question, o);
    REQUIRE(a.ok());
    INFO("answer: " << a->text);
    CHECK(a->candidates.empty());
    REQUIRE(a->n_cache_tokens > o.answer_context_tokens);
    CHECK(a->n_context_tokens <= o.answer_context_tokens);
    CHECK(a->n_context_tokens > 0);
    const auto needle = std::find_if(a->kept.begin(), a->kept.end(), [&](const KeptSentence& k) { return k.text == n.needle; });
    REQUIRE(needle != a->kept.end());
    // Every kept sentence is ranked; the needle ranks first, ahead of the attention sinks that
    // score higher before calibration (essay openings, short lines).
    for (const KeptSentence& k : a->kept) {
        CHECK(k.relevance > 0);
        if (&k != &*needle) CHECK(k.relevance < needle->relevance);
    }
    const bool sink_outscored_needle = std::any_of(a->kept.begin(), a->kept.end(), [&](const KeptSentence& k) {
        return k.score > needle->score;
    });
    CHECK(sink_outscored_needle);
    CHECK(contains_answer(a->text, n.answers));

    // 0: the answer reads the whole cache, unranked (the reference's behaviour).
    o.answer_context_tokens = 0;
    auto whole = SentenceSource::from_text(text);
    auto w = ir->answer(whole, n.question, o);
    REQUIRE(w.ok());
    CHECK(w->n_context_tokens == w->n_cache_tokens);
    CHECK(std::all_of(w->kept.begin(), w->kept.end(), [](const KeptSentence& k) { return k.relevance == 0; }));

    // Answering again from the kept sentences, without reading: the same options give the same
    // answer; the whole cache gives the answer of a reading with answer_context_tokens = 0.
    o.answer_context_tokens = 96;
    auto same = ir->answer_again(*a, n.question, o);
    REQUIRE(same.ok());
    CHECK(same->text == a->text);
    CHECK(same->n_context_tokens == a->n_context_tokens);
    CHECK(same->n_tokens_read == a->n_tokens_read);
    o.answer_context_tokens = 0;
    auto all = ir->answer_again(*a, n.question, o);
    REQUIRE(all.ok());
    CHECK(all->text == w->text);
    CHECK(all->n_context_tokens == a->n_cache_tokens);
    // A smaller context needs the ranking, which a whole-cache reading does not compute.
    o.answer_context_tokens = 48;
    auto fewer = ir->answer_again(*a, n.question, o);
    REQUIRE(fewer.ok());
    CHECK(fewer->n_context_tokens <= 48);
    // With the best-token ranking it needs the reading's first-chunk weights, which are not kept;
    // best-root-sum (the default) ranks the kept sentences again.
    InfiniRetriOptions best_token = o;
    best_token.sentence_relevance = InfiniRetriOptions::SentenceRelevance::BestToken;
    auto unranked = ir->answer_again(*w, n.question, best_token);
    REQUIRE_FALSE(unranked.ok());
    CHECK(unranked.error().code == Errc::InvalidArgument);
    auto ranked_now = ir->answer_again(*w, n.question, o);
    REQUIRE(ranked_now.ok());
    CHECK(ranked_now->n_context_tokens <= 48);
    CHECK(ranked_now->text == fewer->text);
    // A budget the whole cache fits still ranks it, and the ranking does not depend on the budget.
    o.answer_context_tokens = 8192;
    auto roomy_src = SentenceSource::from_text(text);
    auto roomy = ir->answer(roomy_src, n.question, o);
    REQUIRE(roomy.ok());
    CHECK(roomy->n_context_tokens == roomy->n_cache_tokens);
    REQUIRE(roomy->kept.size() == a->kept.size());
    for (size_t k = 0; k < a->kept.size(); ++k) CHECK(roomy->kept[k].relevance == a->kept[k].relevance);
    o.answer_context_tokens = 96;
    auto narrowed = ir->answer_again(*roomy, n.question, o);
    REQUIRE(narrowed.ok());
    CHECK(narrowed->text == a->text);

    // Several contexts: each distinct one is answered once (the same budget twice reuses the
    // answer), 0 reads the whole cache, and the answers equal those of one context at a time.
    o.answer_context_tokens = 48;
    o.answer_alternatives = {0, 48};
    auto several = ir->answer_again(*a, n.question, o);
    REQUIRE(several.ok());
    REQUIRE(several->candidates.size() == 3);
    CHECK(several->candidates[0].text == fewer->text);
    CHECK(several->candidates[1].text == all->text);
    CHECK(several->candidates[1].n_context_tokens == a->n_cache_tokens);
    CHECK(several->candidates[2].text == fewer->text);
    CHECK(several->candidates[2].grounding == several->candidates[0].grounding);
    CHECK(several->chosen != 2);  // ties go to the earlier context
    CHECK(several->text == several->candidates[static_cast<size_t>(several->chosen)].text);
    auto repeated = ir->answer_again(*several, n.question, o);
    REQUIRE(repeated.ok());
    CHECK(repeated->text == several->text);
    CHECK(repeated->candidates.size() == 3);
    // Cancelling when the chosen answer is passed on.
    o.on_text = [](std::string_view) { return false; };
    auto cancelled = ir->answer_again(*a, n.question, o);
    REQUIRE_FALSE(cancelled.ok());
    CHECK(cancelled.error().code == Errc::Cancelled);
    o.on_text = {};
    // Alternatives choose by the ranking: not from an unranked reading with the best-token one
    // (the default ranks it again).
    InfiniRetriOptions several_best = o;
    several_best.sentence_relevance = InfiniRetriOptions::SentenceRelevance::BestToken;
    auto unranked_several = ir->answer_again(*w, n.question, several_best);
    REQUIRE_FALSE(unranked_several.ok());
    CHECK(unranked_several.error().code == Errc::InvalidArgument);

    // Bad settings are errors before any reading.
    for (auto bad : {InfiniRetriOptions{.answer_context_tokens = -1},
                     InfiniRetriOptions{.answer_context_tokens = 64, .neutral_question = ""},
                     InfiniRetriOptions{.answer_alternatives = {128, -1}}}) {
        auto again = SentenceSource::from_text(text);
        auto r = ir->answer(again, n.question, bad);
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().code == Errc::InvalidArgument);
    }
}

TEST_CASE("the best-root-sum ranking leaves the reading alone and ranks again on answer_again", "[smollm2][infiniretri]") {
    const Needle n = first_needle();
    const std::string text = ranking_haystack(n);
    auto ir = InfiniRetri::create(real_model(), 2);
    REQUIRE(ir.ok());
    InfiniRetriOptions best;
    best.answer_context_tokens = 96;
    best.answer_alternatives = {};
    best.sentence_relevance = InfiniRetriOptions::SentenceRelevance::BestToken;
    InfiniRetriOptions root_sum = best;
    root_sum.sentence_relevance = InfiniRetriOptions::SentenceRelevance::BestTimesRootSum;
    auto a = read_text(*ir, text, n.question, best);
    REQUIRE(a.ok());
    auto b = read_text(*ir, text, n.question, root_sum);
    REQUIRE(b.ok());
    // The same reading (the ranking comes after it), ranked differently.
    REQUIRE(b->kept.size() == a->kept.size());
    bool differs = false;
    for (size_t k = 0; k < a->kept.size(); ++k) {
        CHECK(b->kept[k].begin == a->kept[k].begin);
        CHECK(b->kept[k].score == a->kept[k].score);
        CHECK(b->kept[k].relevance > 0);
        differs = differs || b->kept[k].relevance != a->kept[k].relevance;
    }
    CHECK(differs);
    const auto needle = std::find_if(b->kept.begin(), b->kept.end(), [&](const KeptSentence& k) { return k.text == n.needle; });
    REQUIRE(needle != b->kept.end());
    for (const KeptSentence& k : b->kept) {
        if (&k != &*needle) CHECK(k.relevance < needle->relevance);
    }
    INFO("answer: " << b->text);
    CHECK(contains_answer(b->text, n.answers));
    // Answering again from the default reading ranks it again: the same relevance and answer as
    // reading with this ranking.
    auto again = ir->answer_again(*a, n.question, root_sum);
    REQUIRE(again.ok());
    REQUIRE(again->kept.size() == b->kept.size());
    for (size_t k = 0; k < b->kept.size(); ++k) CHECK(again->kept[k].relevance == b->kept[k].relevance);
    CHECK(again->text == b->text);
    CHECK(a->relevance_by == InfiniRetriOptions::SentenceRelevance::BestToken);
    CHECK(again->relevance_by == InfiniRetriOptions::SentenceRelevance::BestTimesRootSum);
    // A reading ranked with best-root-sum answered again with best is ranked again with best:
    // every relevance the best token's (no longer multiplied by the root of the sum).
    auto back = ir->answer_again(*b, n.question, best);
    REQUIRE(back.ok());
    CHECK(back->relevance_by == InfiniRetriOptions::SentenceRelevance::BestToken);
    REQUIRE(back->kept.size() == b->kept.size());
    bool reranked = false;
    for (size_t k = 0; k < b->kept.size(); ++k) {
        CHECK(back->kept[k].relevance > 0);
        reranked = reranked || back->kept[k].relevance != b->kept[k].relevance;
    }
    CHECK(reranked);
    // Even a reading that was never ranked (whole-cache answer) can be ranked and answered again.
    InfiniRetriOptions whole = best;
    whole.answer_context_tokens = 0;
    auto w = read_text(*ir, text, n.question, whole);
    REQUIRE(w.ok());
    auto ranked = ir->answer_again(*w, n.question, root_sum);
    REQUIRE(ranked.ok());
    CHECK(ranked->text == b->text);
}

TEST_CASE("answer grounding weighs the top sentence's new words by their rarity", "[infiniretri]") {
    auto kept_sentence = [](std::string text, float relevance) {
        return KeptSentence{.text = std::move(text), .relevance = relevance};
    };
    const std::vector<KeptSentence> kept = {
        kept_sentence("The cat sat on the old mat.", 1.0f),
        kept_sentence("The secret code for the old lighthouse door is 7319.", 5.0f),
        kept_sentence("The café in Ljubljana is the dog's favourite.", 2.0f),
    };
    const std::string question = "What is the secret code for the lighthouse door?";
    // New words of the top sentence: "old" (in 2 of 3 kept sentences) and "7319" (in 1).
    const double idf_old = std::log(4.0 / 2.5), idf_code = std::log(4.0 / 1.5);
    CHECK(answer_grounding(kept, question, "The code is 7319.") == Approx(idf_code));
    CHECK(answer_grounding(kept, question, "OLD DOOR, 7319") == Approx(idf_old + idf_code));
    CHECK(answer_grounding(kept, question, "The answer is: the secret code for the lighthouse door.") == 0.0f);
    CHECK(answer_grounding(kept, question, "73190") == 0.0f);  // whole words only
    CHECK(answer_grounding(kept, question, "") == 0.0f);
    CHECK(answer_grounding({}, question, "7319") == 0.0f);
    // The top sentence is the most relevant one, whatever its position; non-ASCII bytes are
    // word characters.
    std::vector<KeptSentence> cafe = kept;
    cafe[2].relevance = 9.0f;
    CHECK(answer_grounding(cafe, "Where is the café?", "In Ljubljana's café.") ==
          Approx(std::log(4.0 / 1.5) * 3));  // "in", "ljubljana", "s" (of "'s"); "café" is asked
    CHECK(answer_grounding(cafe, "Where is the café?", "7319") == 0.0f);
}

TEST_CASE("the answer kept is the best grounded unless a grounded majority agrees on another", "[infiniretri]") {
    auto candidate = [](std::string text, float grounding) {
        return AnswerCandidate{.text = std::move(text), .grounding = grounding};
    };
    // Agreement: at least half of the two answers' words shared (case and punctuation aside).
    CHECK(answers_agree("Eat a sandwich in Dolores Park.", "eat a sandwich, in Dolores Park"));
    CHECK(answers_agree("Eat a sandwich in Dolores Park.", "To eat a sandwich in Dolores Park on a sunny day."));
    CHECK_FALSE(answers_agree("Eat a sandwich in Dolores Park.", "Visit the city's many tourist attractions."));
    CHECK(answers_agree("", ""));
    CHECK_FALSE(answers_agree("", "7319"));
    const std::string sandwich = "The best thing to do is eat a sandwich and sit in Dolores Park.";
    const std::string tourist = "The best thing to do is to visit the city's many tourist attractions.";
    // The best grounded, the first of equals, when no majority outvotes it.
    CHECK(choose_answer({}) == 0);
    CHECK(choose_answer(std::vector{candidate(sandwich, 1.0f)}) == 0);
    CHECK(choose_answer(std::vector{candidate("7319", 2.0f), candidate("The code is 7319.", 2.0f)}) == 0);
    CHECK(choose_answer(std::vector{candidate("A blue door.", 0.0f), candidate("It is 7319.", 3.0f),
                                    candidate("Dolores Park.", 1.0f)}) == 1);
    // Three of four agree on a grounded answer: the lone best grounded one loses to them (the
    // best grounded of the majority).
    const std::vector<AnswerCandidate> lone = {candidate(sandwich, 0.8f), candidate(sandwich, 0.9f),
                                               candidate(sandwich + " Sunny.", 0.8f), candidate(tourist, 5.5f)};
    CHECK(choose_answer(lone) == 1);
    // A majority that carries nothing of the top sentence (a non-answer) does not outvote it.
    std::vector<AnswerCandidate> empty_majority = lone;
    for (size_t k = 0; k < 3; ++k) empty_majority[k] = candidate("The answer to this question is:", 0.0f);
    CHECK(choose_answer(empty_majority) == 3);
    // Two against two is no majority.
    const std::vector<AnswerCandidate> split = {candidate(sandwich, 0.8f), candidate(sandwich, 0.8f),
                                                candidate(tourist, 5.5f), candidate(tourist, 5.5f)};
    CHECK(choose_answer(split) == 2);
    // The best grounded answer in the majority needs no vote.
    const std::vector<AnswerCandidate> agreed = {candidate(tourist, 1.0f), candidate(sandwich, 4.0f),
                                                 candidate(sandwich, 4.0f), candidate(sandwich, 3.0f)};
    CHECK(choose_answer(agreed) == 1);
}

TEST_CASE("a file larger than the window streams with a bounded cache", "[smollm2][infiniretri]") {
    const Model& model = real_model();
    const Tokenizer& tok = model.tokenizer();
    const std::string base = essays().substr(0, 70000);
    const fs::path file = test::make_temp_dir("infiniretri_big") / "big.txt";
    {
        std::ofstream out(file, std::ios::binary);
        for (int i = 0; i < 2; ++i) out << base << "\n\n";
    }
    // Expected: the chunks that greedy packing of the per-sentence token counts gives.
    constexpr int32_t kChunk = 1024;
    int64_t expected_tokens = 0;
    int32_t expected_chunks = 0;
    {
        auto src = SentenceSource::open(file, {.block_bytes = 16 << 10});
        REQUIRE(src.ok());
        int64_t in_chunk = 0;
        for (const auto& s : all_sentences(*src)) {
            const auto t = static_cast<int64_t>(n_tokens(tok, s));
            REQUIRE(t <= kChunk);
            expected_tokens += t;
            if (in_chunk > 0 && in_chunk + t > kChunk) {
                ++expected_chunks;
                in_chunk = 0;
            }
            in_chunk += t;
        }
        if (in_chunk > 0) ++expected_chunks;
    }
    REQUIRE(expected_tokens > 3 * 8192);

    auto ir = InfiniRetri::create(model, 2);
    REQUIRE(ir.ok());
    const long hwm_before = vm_hwm_kib();
    auto src = SentenceSource::open(file, {.block_bytes = 16 << 10});
    REQUIRE(src.ok());
    InfiniRetriOptions o;
    o.max_answer_tokens = 16;
    int32_t max_cache = 0;
    std::vector<uint64_t> progress_bytes;
    o.on_progress = [&](const InfiniRetriProgress& p) {
        max_cache = std::max(max_cache, p.n_cache_tokens);
        progress_bytes.push_back(p.n_bytes_read);
        CHECK(p.n_bytes_total == fs::file_size(file));
        return true;
    };
    auto a = ir->answer(*src, "What is the main point of the essays?", o);
    REQUIRE(a.ok());
    // Progress counts the bytes read into chunks: rising with every chunk, up to the last
    // sentence's end (all but the file's trailing white space).
    REQUIRE(progress_bytes.size() == static_cast<size_t>(a->n_chunks));
    CHECK(std::is_sorted(progress_bytes.begin(), progress_bytes.end()));
    CHECK(progress_bytes.front() < fs::file_size(file) / 4);
    CHECK(progress_bytes.back() <= fs::file_size(file));
    CHECK(progress_bytes.back() + 4 >= fs::file_size(file));
    const long hwm_after = vm_hwm_kib();
    INFO("VmHWM growth " << (hwm_after - hwm_before) / 1024 << " MiB; max cache " << max_cache
                         << " tokens");
    CHECK(a->n_tokens_read == expected_tokens);
    CHECK(a->n_chunks == expected_chunks);
    CHECK(max_cache <= a->cache_limit);
    CHECK(a->max_prompt_tokens <= 8192);
    CHECK(a->max_prompt_tokens < a->n_tokens_read / 3);
    // A KV cache of the whole document (30 layers x K and V x 192 f32 values per token) would
    // need ~1.3 GiB; one window's work must stay far below that.
    CHECK(hwm_after - hwm_before < 300 * 1024);
}

namespace {

// Everything a read reports about its result, for comparing two reads.
void check_same_answer(const InfiniRetriAnswer& x, const InfiniRetriAnswer& y) {
    CHECK(x.text == y.text);
    CHECK(x.n_tokens_read == y.n_tokens_read);
    CHECK(x.n_sentences == y.n_sentences);
    CHECK(x.n_chunks == y.n_chunks);
    CHECK(x.n_cache_tokens == y.n_cache_tokens);
    CHECK(x.n_context_tokens == y.n_context_tokens);
    CHECK(x.max_prompt_tokens == y.max_prompt_tokens);
    REQUIRE(x.kept.size() == y.kept.size());
    for (size_t k = 0; k < x.kept.size(); ++k) {
        CHECK(x.kept[k].begin == y.kept[k].begin);
        CHECK(x.kept[k].end == y.kept[k].end);
        CHECK(x.kept[k].ids == y.kept[k].ids);
        CHECK(x.kept[k].score == y.kept[k].score);
        CHECK(x.kept[k].relevance == y.kept[k].relevance);
    }
}

}  // namespace

TEST_CASE("reading resumed from a checkpoint equals reading from the start",
          "[smollm2][infiniretri]") {
    const Model& model = real_model();
    const Needle n = first_needle();
    // Two haystacks over the same text: the needle at 80 % and at 50 %.
    const std::string deep = haystack(model.tokenizer(), essays(), 2500, 0.8, n.needle);
    const std::string mid = haystack(model.tokenizer(), essays(), 2500, 0.5, n.needle);
    const size_t mid_needle_at = mid.find(" " + n.needle);  // where the texts part
    REQUIRE(deep.compare(0, mid_needle_at, mid, 0, mid_needle_at) == 0);
    auto ir = InfiniRetri::create(model, 2);
    REQUIRE(ir.ok());
    InfiniRetriOptions o;
    o.chunk_tokens = 400;
    o.max_answer_tokens = 24;
    std::vector<InfiniRetriCheckpoint> cps;
    o.on_checkpoint = [&](const InfiniRetriCheckpoint& c) { cps.push_back(c); };
    auto read = [&](const std::string& text, const InfiniRetriOptions& opt,
                    std::string_view question) {
        auto src = SentenceSource::from_text(text);
        return ir->answer(src, question, opt);
    };

    auto fresh_deep = read(deep, o, n.question);
    REQUIRE(fresh_deep.ok());
    // One checkpoint per chunk but the last, in order.
    REQUIRE(cps.size() == static_cast<size_t>(fresh_deep->n_chunks - 1));
    for (size_t k = 0; k < cps.size(); ++k) {
        CHECK(cps[k].n_chunks == static_cast<int32_t>(k + 1));
        CHECK(cps[k].offset < cps[k].next_end);
        CHECK(cps[k].question == n.question);
    }
    const std::vector<InfiniRetriCheckpoint> deep_cps = cps;

    // The same text from its third chunk on.
    InfiniRetriOptions r = o;
    r.on_checkpoint = {};
    r.resume = &deep_cps[2];
    auto resumed = read(deep, r, n.question);
    REQUIRE(resumed.ok());
    check_same_answer(*resumed, *fresh_deep);
    CHECK(resumed->n_tokens_resumed == deep_cps[2].n_tokens_read);
    CHECK(fresh_deep->n_tokens_resumed == 0);

    // The other haystack from the last checkpoint of the first that lies before its needle.
    const InfiniRetriCheckpoint* shared = nullptr;
    for (const auto& c : deep_cps) {
        if (c.next_end < mid_needle_at) shared = &c;
    }
    REQUIRE(shared != nullptr);
    REQUIRE(shared->n_chunks >= 2);
    cps.clear();
    auto fresh_mid = read(mid, o, n.question);
    REQUIRE(fresh_mid.ok());
    r.resume = shared;
    auto resumed_mid = read(mid, r, n.question);
    REQUIRE(resumed_mid.ok());
    check_same_answer(*resumed_mid, *fresh_mid);
    INFO("answer: " << resumed_mid->text);
    CHECK(contains_answer(resumed_mid->text, n.answers));

    // A checkpoint is refused for another question, another text before it, or a text that
    // ends before it.
    std::string edited = deep;
    edited[deep_cps[0].offset / 2] = edited[deep_cps[0].offset / 2] == 'e' ? 'a' : 'e';
    for (const auto& [text, question] :
         {std::pair{deep, std::string("What is the capital of France?")},
          std::pair{edited, n.question},
          std::pair{deep.substr(0, static_cast<size_t>(deep_cps[2].offset)), n.question}}) {
        auto bad = read(text, InfiniRetriOptions{.chunk_tokens = 400, .resume = &deep_cps[2]},
                        question);
        REQUIRE_FALSE(bad.ok());
        CHECK(bad.error().code == Errc::InvalidArgument);
    }
    // ... or other reading options (answer options may differ: max_answer_tokens above).
    for (const InfiniRetriOptions& other :
         {InfiniRetriOptions{.chunk_tokens = 400, .top_k = 200, .resume = &deep_cps[2]},
          InfiniRetriOptions{.chunk_tokens = 400, .score_memory = 0.0f, .resume = &deep_cps[2]},
          InfiniRetriOptions{.chunk_tokens = 400, .layers = {20}, .resume = &deep_cps[2]}}) {
        auto bad = read(deep, other, n.question);
        REQUIRE_FALSE(bad.ok());
        CHECK(bad.error().code == Errc::InvalidArgument);
        CHECK(bad.error().message.find("other reading options") != std::string::npos);
    }
}
