// Document-text tests: UTF-8 checks, NFKC, sentence/paragraph spans (English, Chinese, mixed),
// the chunker (budget, word and character splits, overlap, paragraphs, a random property test)
// and the readers on files written here (text with BOM, Markdown, HTML, a hand-built PDF).
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "attnrag/text.hpp"
#include "test_support.hpp"

using attnrag::Errc;
namespace text = attnrag::text;
using text::Chunk;
using text::Format;
using text::Span;

namespace {

std::string_view piece(std::string_view s, Span span) {
    return s.substr(static_cast<size_t>(span.begin), static_cast<size_t>(span.size()));
}

std::vector<std::string> pieces(std::string_view s, const std::vector<Span>& spans) {
    std::vector<std::string> out;
    out.reserve(spans.size());
    for (const Span& sp : spans) out.emplace_back(piece(s, sp));
    return out;
}

std::vector<std::string> chunk_texts(std::string_view s, const std::vector<Chunk>& chunks) {
    std::vector<Span> spans;
    spans.reserve(chunks.size());
    for (const Chunk& c : chunks) spans.push_back(c.span);
    return pieces(s, spans);
}

bool is_space(char c) {
    return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}

// Spans inside s, in order, non-overlapping, non-empty, trimmed, on UTF-8 boundaries.
void check_spans(std::string_view s, const std::vector<Span>& spans) {
    uint64_t prev_end = 0;
    for (const Span& sp : spans) {
        INFO("span [" << sp.begin << ", " << sp.end << ")");
        REQUIRE(sp.begin >= prev_end);
        REQUIRE(sp.begin < sp.end);
        REQUIRE(sp.end <= s.size());
        CHECK_FALSE(is_space(s[static_cast<size_t>(sp.begin)]));
        CHECK_FALSE(is_space(s[static_cast<size_t>(sp.end - 1)]));
        CHECK(text::find_invalid_utf8(piece(s, sp)) == text::npos);
        prev_end = sp.end;
    }
}

uint32_t count_words(std::string_view s) {
    uint32_t n = 0;
    bool in_word = false;
    for (const char c : s) {
        if (is_space(c)) {
            in_word = false;
        } else if (!in_word) {
            in_word = true;
            ++n;
        }
    }
    return n;
}

uint32_t count_quarters(std::string_view s) {
    return static_cast<uint32_t>((s.size() + 3) / 4);
}

void write_file(const std::filesystem::path& path, std::string_view bytes) {
    std::ofstream f(path, std::ios::binary);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    REQUIRE(f.good());
}

std::string read_all(const std::filesystem::path& path) {
    std::ifstream f(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// A minimal, valid PDF: one Helvetica text line per page, an Info dict with a Title, and a
// cross-reference table whose offsets are computed here.
std::string make_pdf(const std::vector<std::string>& page_lines, const std::string& title) {
    std::vector<std::string> objects;  // object i+1
    const size_t n_pages = page_lines.size();
    // 1: catalog, 2: pages, 3: font, 4: info, then per page: page object, content stream.
    objects.push_back("<< /Type /Catalog /Pages 2 0 R >>");
    std::string kids;
    for (size_t p = 0; p < n_pages; ++p) kids += std::to_string(5 + 2 * p) + " 0 R ";
    objects.push_back("<< /Type /Pages /Kids [ " + kids + "] /Count " + std::to_string(n_pages) +
                      " >>");
    objects.push_back("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>");
    objects.push_back("<< /Title (" + title + ") /Producer (attnrag test) >>");
    for (size_t p = 0; p < n_pages; ++p) {
        objects.push_back("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents " +
                          std::to_string(6 + 2 * p) +
                          " 0 R /Resources << /Font << /F1 3 0 R >> >> >>");
        const std::string content = "BT /F1 18 Tf 72 700 Td (" + page_lines[p] + ") Tj ET\n";
        objects.push_back("<< /Length " + std::to_string(content.size()) + " >>\nstream\n" +
                          content + "endstream");
    }
    std::string pdf = "%PDF-1.4\n%\xE2\xE3\xCF\xD3\n";
    std::vector<size_t> offsets;
    for (size_t i = 0; i < objects.size(); ++i) {
        offsets.push_back(pdf.size());
        pdf += std::to_string(i + 1) + " 0 obj\n" + objects[i] + "\nendobj\n";
    }
    const size_t xref = pdf.size();
    pdf += "xref\n0 " + std::to_string(objects.size() + 1) + "\n0000000000 65535 f \n";
    for (const size_t off : offsets) {
        char line[32];
        std::snprintf(line, sizeof line, "%010zu 00000 n \n", off);
        pdf += line;
    }
    pdf += "trailer\n<< /Size " + std::to_string(objects.size() + 1) +
           " /Root 1 0 R /Info 4 0 R >>\nstartxref\n" + std::to_string(xref) + "\n%%EOF\n";
    return pdf;
}

}  // namespace

// ---- UTF-8 and NFKC -----------------------------------------------------------------------------

TEST_CASE("find_invalid_utf8 accepts valid multi-byte text", "[text][utf8]") {
    CHECK(text::find_invalid_utf8("") == text::npos);
    CHECK(text::find_invalid_utf8("plain ascii, long enough for the 8-byte path") == text::npos);
    CHECK(text::find_invalid_utf8("h\xC3\xA9llo \xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\x98\x80") ==
          text::npos);
    // Boundaries of the valid ranges: U+0080, U+07FF, U+0800, U+D7FF, U+E000, U+FFFF, U+10000,
    // U+10FFFF.
    CHECK(text::find_invalid_utf8("\xC2\x80\xDF\xBF\xE0\xA0\x80\xED\x9F\xBF\xEE\x80\x80\xEF\xBF\xBF"
                                  "\xF0\x90\x80\x80\xF4\x8F\xBF\xBF") == text::npos);
}

TEST_CASE("find_invalid_utf8 reports each invalid class at its offset", "[text][utf8]") {
    using namespace std::string_literals;
    CHECK(text::find_invalid_utf8("ab\x80"s) == 2);                         // stray continuation
    CHECK(text::find_invalid_utf8("a\xC0\xAF"s) == 1);                      // overlong 2-byte
    CHECK(text::find_invalid_utf8("a\xC1\xBF"s) == 1);                      // overlong 2-byte
    CHECK(text::find_invalid_utf8("ab\xE0\x80\xAF"s) == 2);                 // overlong 3-byte
    CHECK(text::find_invalid_utf8("\xF0\x80\x80\xAF"s) == 0);               // overlong 4-byte
    CHECK(text::find_invalid_utf8("x\xED\xA0\x80"s) == 1);                  // surrogate U+D800
    CHECK(text::find_invalid_utf8("x\xED\xBF\xBF"s) == 1);                  // surrogate U+DFFF
    CHECK(text::find_invalid_utf8("xy\xF4\x90\x80\x80"s) == 2);             // U+110000
    CHECK(text::find_invalid_utf8("xyz\xF5\x80\x80\x80"s) == 3);            // F5 lead
    CHECK(text::find_invalid_utf8("\xFF"s) == 0);                           // FF
    CHECK(text::find_invalid_utf8("abc\xE4\xBD"s) == 3);                    // truncated by the end
    CHECK(text::find_invalid_utf8("\xE4\xBDx"s) == 0);                      // truncated by ASCII
    CHECK(text::find_invalid_utf8("\xF0\x9F\x98"s) == 0);                   // truncated 4-byte
    CHECK(text::find_invalid_utf8("ok \xC3\xA9\xC3"s) == 5);                // truncated after valid
    CHECK(text::find_invalid_utf8(std::string(100, 'a') + "\xFF") == 100);  // after ASCII fast path
    CHECK(text::find_invalid_utf8(std::string(13, 'a') + "\xE4\xBD\xA0\x80") == 16);
}

TEST_CASE("nfkc folds compatibility characters", "[text][nfkc]") {
    auto fi = text::nfkc("\xEF\xAC\x81");  // U+FB01 LATIN SMALL LIGATURE FI
    REQUIRE(fi.ok());
    CHECK(*fi == "fi");
    auto wide = text::nfkc("\xEF\xBC\xA1\xEF\xBC\xA2\xEF\xBC\xA3\xEF\xBC\x91");  // ＡＢＣ１
    REQUIRE(wide.ok());
    CHECK(*wide == "ABC1");
    auto composed = text::nfkc("e\xCC\x81");  // e + COMBINING ACUTE -> é
    REQUIRE(composed.ok());
    CHECK(*composed == "\xC3\xA9");
    auto same = text::nfkc("already normal");
    REQUIRE(same.ok());
    CHECK(*same == "already normal");
    auto bad = text::nfkc(std::string("ab\xFF", 3));
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.error().code == Errc::InvalidArgument);
    CHECK_THAT(bad.error().message, Catch::Contains("byte offset 2"));
}

// ---- Segmentation -------------------------------------------------------------------------------

TEST_CASE("split_sentences on English text", "[text][segment]") {
    const std::string s = "  Hello world. This is a test!  Is it?\n\nNew paragraph here.\n";
    const auto spans = text::split_sentences(s);
    check_spans(s, spans);
    CHECK(pieces(s, spans) == std::vector<std::string>{"Hello world.", "This is a test!", "Is it?",
                                                       "New paragraph here."});
    CHECK(spans[0].begin == 2);
    CHECK(text::split_sentences("").empty());
    CHECK(text::split_sentences(" \n\t \n").empty());
}

TEST_CASE("split_sentences on Chinese text", "[text][segment]") {
    const std::string s = "我喜欢读书。今天天气很好！你呢？";
    const auto spans = text::split_sentences(s);
    check_spans(s, spans);
    CHECK(pieces(s, spans) == std::vector<std::string>{"我喜欢读书。", "今天天气很好！", "你呢？"});
    CHECK(spans.back().end == s.size());
}

TEST_CASE("split_sentences on mixed English and Chinese", "[text][segment]") {
    const std::string s = "I like books. 我喜欢读书。How about you? 你呢？ Fine.";
    const auto spans = text::split_sentences(s);
    check_spans(s, spans);
    CHECK(pieces(s, spans) == std::vector<std::string>{"I like books.", "我喜欢读书。",
                                                       "How about you?", "你呢？", "Fine."});
}

TEST_CASE("split_sentences trims Unicode white space", "[text][segment]") {
    // U+3000 IDEOGRAPHIC SPACE and U+00A0 NO-BREAK SPACE around the sentences.
    const std::string s = "\xE3\x80\x80One. \xC2\xA0Two.\xE3\x80\x80";
    CHECK(pieces(s, text::split_sentences(s)) == std::vector<std::string>{"One.", "Two."});
}

TEST_CASE("split_paragraphs splits at blank lines", "[text][segment]") {
    const std::string s =
        "\n  First line\nsecond line.\n\n\nPara two.\n \t \nPara three\r\n\r\nfour";
    const auto spans = text::split_paragraphs(s);
    check_spans(s, spans);
    CHECK(pieces(s, spans) ==
          std::vector<std::string>{"First line\nsecond line.", "Para two.", "Para three", "four"});
    CHECK(text::split_paragraphs("").empty());
    CHECK(text::split_paragraphs("\n\n  \n").empty());
}

// ---- Chunker -----------------------------------------------------------------------------------

namespace {

// The chunker's contract, checked on any text and counter. visible: s with any non-ASCII white
// space replaced by ASCII spaces (for the coverage and trimming checks); defaults to s.
void check_chunks(std::string_view s, const std::vector<Chunk>& chunks, const text::ChunkOptions& o,
                  const std::function<uint32_t(std::string_view)>& count,
                  std::string_view visible = {}) {
    if (visible.empty()) visible = s;
    std::vector<bool> covered(s.size(), false);
    uint64_t prev_begin = 0, prev_end = 0;
    for (size_t i = 0; i < chunks.size(); ++i) {
        const Chunk& c = chunks[i];
        INFO("chunk " << i << " [" << c.span.begin << ", " << c.span.end << ")");
        REQUIRE(c.ordinal == i);
        REQUIRE(c.span.begin < c.span.end);
        REQUIRE(c.span.end <= s.size());
        const std::string_view t = piece(s, c.span);
        CHECK(c.n_tokens == count(t));
        CHECK(c.n_tokens <= std::max<uint32_t>(o.max_tokens, 1));
        CHECK(text::find_invalid_utf8(t) == text::npos);
        CHECK_FALSE(is_space(visible[static_cast<size_t>(c.span.begin)]));
        CHECK_FALSE(is_space(visible[static_cast<size_t>(c.span.end - 1)]));
        if (i > 0) {
            CHECK(c.span.begin > prev_begin);
            CHECK(c.span.end > prev_end);
            if (o.overlap_tokens == 0) CHECK(c.span.begin >= prev_end);
        }
        prev_begin = c.span.begin;
        prev_end = c.span.end;
        for (uint64_t k = c.span.begin; k < c.span.end; ++k) covered[static_cast<size_t>(k)] = true;
    }
    for (size_t k = 0; k < s.size(); ++k) {
        if (!is_space(visible[k]) && !covered[k]) FAIL("byte " << k << " is in no chunk");
    }
}

}  // namespace

TEST_CASE("chunk_text packs whole sentences under the budget", "[text][chunk]") {
    std::string s;
    for (int i = 0; i < 12; ++i) s += "Sentence number " + std::to_string(i) + " has six words. ";
    const text::ChunkOptions o{.max_tokens = 20, .overlap_tokens = 0};
    const auto chunks = text::chunk_text(s, o, count_words);
    check_chunks(s, chunks, o, count_words);
    // 6 words per sentence, 20 per chunk: 3 sentences each, 4 chunks.
    REQUIRE(chunks.size() == 4);
    const auto sentences = text::split_sentences(s);
    REQUIRE(sentences.size() == 12);
    for (size_t i = 0; i < 4; ++i) {
        CHECK(chunks[i].span.begin == sentences[3 * i].begin);
        CHECK(chunks[i].span.end == sentences[3 * i + 2].end);
        CHECK(chunks[i].n_tokens == 18);
    }
}

TEST_CASE("chunk_text on Chinese and mixed text keeps sentence spans", "[text][chunk]") {
    const std::string zh = "我喜欢读书。今天天气很好！你呢？";
    // 6 bytes per CJK... each sentence is 18 or 21 bytes: a 6-token (24-byte) budget holds one.
    const text::ChunkOptions o{.max_tokens = 6};
    const auto chunks = text::chunk_text(zh, o, count_quarters);
    check_chunks(zh, chunks, o, count_quarters);
    CHECK(chunk_texts(zh, chunks) ==
          std::vector<std::string>{"我喜欢读书。", "今天天气很好！", "你呢？"});

    const std::string mixed = "I like books. 我喜欢读书。How about you? 你呢？";
    const text::ChunkOptions o2{.max_tokens = 4};  // words: "I like books." 3, "我喜欢读书。" 1
    const auto mc = text::chunk_text(mixed, o2, count_words);
    check_chunks(mixed, mc, o2, count_words);
    CHECK(chunk_texts(mixed, mc) ==
          std::vector<std::string>{"I like books. 我喜欢读书。", "How about you? 你呢？"});
}

TEST_CASE("chunk_text splits a long sentence at word boundaries", "[text][chunk]") {
    std::string s = "Short one. ";
    for (int i = 0; i < 95; ++i) s += "word" + std::to_string(i) + " ";
    s += "end. Tail sentence.";
    const text::ChunkOptions o{.max_tokens = 10};
    const auto chunks = text::chunk_text(s, o, count_words);
    check_chunks(s, chunks, o, count_words);
    REQUIRE(chunks.size() >= 10);
    for (const Chunk& c : chunks) {
        // Word boundaries: the bytes around the span are spaces or the text's ends.
        CHECK((c.span.begin == 0 || s[static_cast<size_t>(c.span.begin) - 1] == ' '));
        CHECK((c.span.end == s.size() || s[static_cast<size_t>(c.span.end)] == ' ' ||
               s[static_cast<size_t>(c.span.end)] == '.'));
    }
    // The pieces of the long sentence are full: 10 words each (the first sentence has 2 words,
    // so it goes with the first 8 words).
    CHECK(chunks[1].n_tokens == 10);
    CHECK(piece(s, chunks.back().span).ends_with("Tail sentence."));
}

TEST_CASE("chunk_text splits a giant word at character boundaries", "[text][chunk]") {
    std::string word;
    // One ICU word of 2- and 3-byte letters: é (C3 A9), ж (D0 B6), ẞ (E1 BA 9E).
    for (int i = 0; i < 500; ++i)
        word += (i % 3 == 0) ? "\xE1\xBA\x9E" : (i % 3 == 1) ? "\xC3\xA9" : "\xD0\xB6";
    const std::string s = "Before. " + word + " After.";
    const text::ChunkOptions o{.max_tokens = 5};  // 20 bytes
    const auto chunks = text::chunk_text(s, o, count_quarters);
    check_chunks(s, chunks, o, count_quarters);
    REQUIRE(chunks.size() > 40);
    size_t full = 0;
    for (const Chunk& c : chunks) {
        CHECK(c.span.size() <= 20);
        if (c.span.size() >= 18) ++full;  // greedy: pieces fill the budget up to a character
    }
    CHECK(full >= chunks.size() - 3);
}

TEST_CASE("chunk_text overlap repeats trailing sentences", "[text][chunk]") {
    std::string s;
    for (int i = 0; i < 10; ++i) s += "Alpha beta gamma s" + std::to_string(i) + ". ";
    const text::ChunkOptions o{.max_tokens = 12, .overlap_tokens = 4};
    const auto chunks = text::chunk_text(s, o, count_words);
    check_chunks(s, chunks, o, count_words);
    const auto sentences = text::split_sentences(s);
    REQUIRE(chunks.size() >= 3);
    for (size_t i = 1; i < chunks.size(); ++i) {
        // Each chunk starts with the previous chunk's last sentence (4 words <= overlap).
        const uint64_t prev_end = chunks[i - 1].span.end;
        const auto last_prev = std::find_if(sentences.begin(), sentences.end(),
                                            [&](const Span& sp) { return sp.end == prev_end; });
        REQUIRE(last_prev != sentences.end());
        CHECK(chunks[i].span.begin == last_prev->begin);
    }
    CHECK(chunks[0].n_tokens == 12);
    CHECK(chunks.back().span.end == sentences.back().end);

    // Without overlap the same text gives disjoint chunks.
    const auto plain = text::chunk_text(s, {.max_tokens = 12}, count_words);
    for (size_t i = 1; i < plain.size(); ++i) CHECK(plain[i].span.begin > plain[i - 1].span.end);
    CHECK(plain.size() < chunks.size());
}

TEST_CASE("chunk_text prefers paragraph breaks once half full", "[text][chunk]") {
    const std::string s =
        "One two three four. Five six seven eight. Nine ten eleven twelve.\n\n"
        "Second para starts. It goes on.\n\nThird para.";
    const text::ChunkOptions o{.max_tokens = 20};
    const auto chunks = text::chunk_text(s, o, count_words);
    check_chunks(s, chunks, o, count_words);
    REQUIRE(chunks.size() == 2);
    CHECK(piece(s, chunks[0].span) ==
          "One two three four. Five six seven eight. Nine ten eleven twelve.");
    CHECK(piece(s, chunks[1].span) == "Second para starts. It goes on.\n\nThird para.");
}

TEST_CASE("chunk_text on empty text gives no chunks", "[text][chunk]") {
    CHECK(text::chunk_text("", {}, count_words).empty());
    CHECK(text::chunk_text("  \n\n \t", {}, count_words).empty());
}

TEST_CASE("chunk_text recounts chunks when tokens are not additive", "[text][chunk]") {
    // Counting every byte (spaces too) makes the inter-sentence gaps cost tokens that the
    // per-sentence estimate misses; the final recount must still keep every chunk in budget.
    std::string s;
    for (int i = 0; i < 30; ++i) s += "abcd." + std::string(static_cast<size_t>(i % 7) * 3, ' ');
    auto count_bytes = [](std::string_view t) { return static_cast<uint32_t>(t.size()); };
    const text::ChunkOptions o{.max_tokens = 16, .overlap_tokens = 5};
    const auto chunks = text::chunk_text(s, o, count_bytes);
    check_chunks(s, chunks, o, count_bytes);
}

TEST_CASE("chunk_text property test on random texts", "[text][chunk]") {
    const std::vector<std::string> words = {"a",
                                            "the",
                                            "quick",
                                            "brown",
                                            "fox",
                                            "jumps",
                                            "über",
                                            "naïve",
                                            "你好",
                                            "世界",
                                            "我",
                                            "读书",
                                            "2024",
                                            "x-y",
                                            "(see)",
                                            "e.g.",
                                            "Mr.",
                                            "ok",
                                            "supercalifragilisticexpialidocious",
                                            "\xF0\x9F\x98\x80",
                                            "\xE3\x80\x80"};
    const std::vector<std::string> ends = {".", "!", "?", "。", "！", "", ";"};
    const std::vector<std::string> gaps = {" ", " ", " ", "  ", "\n", "\n\n", "\t", "\n \n"};
    std::mt19937 rng(1234);
    auto pick = [&](const std::vector<std::string>& v) { return v[rng() % v.size()]; };
    auto count_tok = [](std::string_view t) { return count_quarters(t); };
    for (int trial = 0; trial < 300; ++trial) {
        std::string s;
        const int n_sent = static_cast<int>(rng() % 40);
        for (int i = 0; i < n_sent; ++i) {
            const bool long_sentence = rng() % 8 == 0;  // separate statements: a fixed rng order
            const int n_words = 1 + static_cast<int>(rng() % (long_sentence ? 80 : 12));
            for (int w = 0; w < n_words; ++w) {
                if (w > 0) s += (rng() % 6 == 0) ? "" : " ";
                s += pick(words);
                if (rng() % 200 == 0) s += std::string(200 + rng() % 300, 'z');  // giant word
            }
            s += pick(ends);
            s += pick(gaps);
        }
        const uint32_t max_tokens = 1 + static_cast<uint32_t>(rng() % 40);
        const uint32_t overlap_tokens = rng() % 3 == 0 ? static_cast<uint32_t>(rng() % 20) : 0;
        const text::ChunkOptions o{.max_tokens = max_tokens, .overlap_tokens = overlap_tokens};
        const bool by_words = rng() % 2 == 0;
        const std::function<uint32_t(std::string_view)> count =
            by_words ? std::function<uint32_t(std::string_view)>(count_words)
                     : std::function<uint32_t(std::string_view)>(count_tok);
        INFO("trial " << trial << " max " << o.max_tokens << " overlap " << o.overlap_tokens
                      << (by_words ? " words" : " bytes/4") << " text: " << s);
        const auto chunks = text::chunk_text(s, o, count);
        // U+3000 is white space for the chunker but not for check_chunks: blank it first.
        std::string visible = s;
        for (size_t k = 0; k + 2 < visible.size(); ++k) {
            if (visible.compare(k, 3, "\xE3\x80\x80") == 0) visible.replace(k, 3, "   ");
        }
        check_chunks(s, chunks, o, count, visible);
        if (count_words(visible) == 0) CHECK(chunks.empty());
    }
}

// ---- Readers -----------------------------------------------------------------------------------

TEST_CASE("read_file reads plain text with a BOM", "[text][read]") {
    const auto dir = attnrag::test::make_temp_dir("text_txt");
    const std::string body = "Hello there. Second sentence.\n";
    write_file(dir / "a.txt", "\xEF\xBB\xBF" + body);
    auto doc = text::read_file(dir / "a.txt");
    REQUIRE(doc.ok());
    CHECK(doc->format == Format::Text);
    CHECK(doc->text == body);
    CHECK(doc->title.empty());
    CHECK(doc->source_bytes == body.size() + 3);
    CHECK(text::to_source_offset(*doc, 0) == 3);
    CHECK(text::to_source_offset(*doc, 6) == 9);
    CHECK(doc->page_starts.empty());
}

TEST_CASE("read_file takes the Markdown title from the first heading", "[text][read]") {
    const auto dir = attnrag::test::make_temp_dir("text_md");
    const std::string md =
        "Intro line.\n\n```sh\n# not a heading\n```\n\n## Sub first\n\n#  The Title ##\n\nBody.\n";
    write_file(dir / "doc.markdown", md);
    auto doc = text::read_file(dir / "doc.markdown");
    REQUIRE(doc.ok());
    CHECK(doc->format == Format::Markdown);
    CHECK(doc->text == md);
    CHECK(doc->title == "The Title");
    CHECK(text::to_source_offset(*doc, 10) == 10);

    write_file(dir / "b.md", "No level one.\n### Third level\ntext");
    auto b = text::read_file(dir / "b.md");
    REQUIRE(b.ok());
    CHECK(b->title == "Third level");
    write_file(dir / "c.MD", "#hashtag is not a heading\n");
    auto c = text::read_file(dir / "c.MD");
    REQUIRE(c.ok());
    CHECK(c->format == Format::Markdown);
    CHECK(c->title.empty());
}

TEST_CASE("read_file extracts HTML text with exact anchors", "[text][read][html]") {
    const auto dir = attnrag::test::make_temp_dir("text_html");
    const std::string html =
        "<!DOCTYPE html>\r\n<html><head><title>My\n  Page &amp; More</title>\n"
        "<style>p { color: red; }</style><script>var hidden = 1;</script></head>\n"
        "<body><h1>Main   heading</h1>\n<p>Fish &amp; chips cost &lt;5&gt; &eacute;uros\n"
        "today. Target word here.</p><script>alert(\"nope\")</script><noscript>nojs</noscript>"
        "<ul><li>one</li><li>two<br>three</li></ul>\n<pre>keep   this\n  layout</pre>"
        "<div>caf\xC3\xA9 &#233;t&#xE9; end</div><template>tmpl</template></body></html>";
    write_file(dir / "page.htm", html);
    auto doc = text::read_file(dir / "page.htm");
    REQUIRE(doc.ok());
    const std::string& t = doc->text;
    INFO(t);
    CHECK(doc->format == Format::Html);
    CHECK(doc->title == "My Page & More");
    CHECK(t.find("Fish & chips cost <5> \xC3\xA9uros today.") != std::string::npos);
    CHECK(t.find("Main heading") == 0);
    for (const char* gone : {"hidden", "color", "alert", "nope", "nojs", "tmpl", "My"}) {
        CHECK(t.find(gone) == std::string::npos);
    }
    CHECK(t.find("keep   this\n  layout") != std::string::npos);
    CHECK(pieces(t, text::split_paragraphs(t)) ==
          std::vector<std::string>{
              "Main heading", "Fish & chips cost <5> \xC3\xA9uros today. Target word here.", "one",
              "two\nthree", "keep   this\n  layout", "caf\xC3\xA9 \xC3\xA9t\xC3\xA9 end"});
    // Every ASCII word of the text maps back to the same bytes in the source.
    size_t n_checked = 0;
    for (size_t i = 0; i < t.size();) {
        if (!std::isalnum(static_cast<unsigned char>(t[i]))) {
            ++i;
            continue;
        }
        size_t e = i;
        while (e < t.size() && std::isalnum(static_cast<unsigned char>(t[e]))) ++e;
        const std::string word = t.substr(i, e - i);
        const uint64_t src = text::to_source_offset(*doc, i);
        INFO("word '" << word << "' at text offset " << i << " -> source " << src);
        CHECK(html.substr(static_cast<size_t>(src), word.size()) == word);
        ++n_checked;
        i = e;
    }
    CHECK(n_checked > 15);
    // Decoded entities map to the reference that produced them.
    const size_t amp = t.find('&');
    CHECK(html.compare(static_cast<size_t>(text::to_source_offset(*doc, amp)), 5, "&amp;") == 0);
    const size_t eur = t.find("\xC3\xA9uros");
    CHECK(html.compare(static_cast<size_t>(text::to_source_offset(*doc, eur)), 8, "&eacute;") == 0);
    CHECK(html.compare(static_cast<size_t>(text::to_source_offset(*doc, eur + 2)), 4, "uros") == 0);
    CHECK(text::to_source_offset(*doc, t.find("Target")) == html.find("Target"));
}

TEST_CASE("read_bytes HTML with a BOM offsets anchors past it", "[text][read][html]") {
    const std::string html = "\xEF\xBB\xBF<p>Hi <b>there</b></p>";
    auto doc = text::read_bytes(html, Format::Html, "mem.html");
    REQUIRE(doc.ok());
    CHECK(doc->text == "Hi there");
    CHECK(text::to_source_offset(*doc, 0) == html.find("Hi"));
    CHECK(text::to_source_offset(*doc, 3) == html.find("there"));
}

TEST_CASE("read_file extracts text and pages from a real PDF", "[text][read][pdf]") {
    const auto dir = attnrag::test::make_temp_dir("text_pdf");
    const std::string pdf =
        make_pdf({"Hello PDF world. First page text.", "Second page says goodbye."}, "Test Title");
    write_file(dir / "doc.pdf", pdf);
    auto doc = text::read_file(dir / "doc.pdf");
    REQUIRE(doc.ok());
    CHECK(doc->format == Format::Pdf);
    CHECK(doc->title == "Test Title");
    CHECK(doc->text == "Hello PDF world. First page text.\n\nSecond page says goodbye.");
    REQUIRE(doc->page_starts.size() == 2);
    CHECK(doc->page_starts[0] == 0);
    CHECK(doc->text.substr(static_cast<size_t>(doc->page_starts[1])) ==
          "Second page says goodbye.");
    CHECK(text::page_of(*doc, 5) == 0);
    CHECK(text::page_of(*doc, doc->page_starts[1] + 3) == 1);
    CHECK(text::to_source_offset(*doc, 5) == 0);
    CHECK(doc->source_bytes == pdf.size());
    // Sniffed by its magic under another name.
    write_file(dir / "doc.bin", pdf);
    auto sniffed = text::read_file(dir / "doc.bin");
    REQUIRE(sniffed.ok());
    CHECK(sniffed->format == Format::Pdf);
    CHECK(sniffed->text == doc->text);
    // poppler-utils' pdftotext agrees (it is in scripts/setup.sh's package list).
    const auto out = dir / "out.txt";
    const std::string cmd = "pdftotext -enc UTF-8 '" + (dir / "doc.pdf").string() + "' '" +
                            out.string() + "' 2>/dev/null";
    if (std::system(cmd.c_str()) == 0) {
        const std::string ref = read_all(out);
        CHECK(ref.find("Hello PDF world. First page text.") != std::string::npos);
        CHECK(ref.find("Second page says goodbye.") != std::string::npos);
    } else {
        WARN("pdftotext not available: skipped the cross-check");
    }
}

TEST_CASE("read_bytes rejects corrupt PDFs without crashing", "[text][read][pdf]") {
    const std::string pdf = make_pdf({"Some page text here."}, "T");
    for (const size_t n :
         {size_t{5}, size_t{9}, size_t{30}, pdf.size() / 3, pdf.size() / 2, pdf.size() - 10}) {
        auto doc = text::read_bytes(std::string_view(pdf).substr(0, n), Format::Pdf, "cut.pdf");
        if (!doc.ok()) {
            CHECK((doc.error().code == Errc::Corrupt || doc.error().code == Errc::Unsupported));
            CHECK_THAT(doc.error().message, Catch::StartsWith("cut.pdf: "));
        }
    }
    auto head = text::read_bytes(std::string_view(pdf).substr(0, 30), Format::Pdf, "cut.pdf");
    REQUIRE_FALSE(head.ok());
    CHECK(head.error().code == Errc::Corrupt);
    auto junk = text::read_bytes("%PDF-1.4\nthis is not a pdf at all\n", Format::Pdf, "junk.pdf");
    REQUIRE_FALSE(junk.ok());
    CHECK(junk.error().code == Errc::Corrupt);
}

TEST_CASE("read_file reports invalid UTF-8 with the path and offset", "[text][read]") {
    const auto dir = attnrag::test::make_temp_dir("text_bad");
    const auto path = dir / "bad.txt";
    write_file(path, std::string("hello\xC3(world", 12));
    auto doc = text::read_file(path);
    REQUIRE_FALSE(doc.ok());
    CHECK(doc.error().code == Errc::InvalidArgument);
    CHECK(doc.error().message == path.string() + ": invalid UTF-8 at byte offset 5");
    // Offsets count from the start of the file, BOM included.
    write_file(dir / "bom.md", std::string("\xEF\xBB\xBF"
                                           "ab\xFF",
                                           6));
    auto bom = text::read_file(dir / "bom.md");
    REQUIRE_FALSE(bom.ok());
    CHECK_THAT(bom.error().message, Catch::EndsWith("byte offset 5"));
    // The same bytes under an unknown extension are "not text", not broken text.
    write_file(dir / "bad.dat", std::string("hello\xC3(world", 12));
    auto dat = text::read_file(dir / "bad.dat");
    REQUIRE_FALSE(dat.ok());
    CHECK(dat.error().code == Errc::Unsupported);
}

TEST_CASE("read_file rejects binary files", "[text][read]") {
    const auto dir = attnrag::test::make_temp_dir("text_bin");
    std::mt19937 rng(7);
    std::string bytes(4096, '\0');
    for (char& c : bytes) c = static_cast<char>(rng() & 0xFF);
    bytes[10] = '\0';
    for (const char* name : {"blob.bin", "blob.txt", "blob.html"}) {
        write_file(dir / name, bytes);
        auto doc = text::read_file(dir / name);
        REQUIRE_FALSE(doc.ok());
        CHECK(doc.error().code == Errc::Unsupported);
        CHECK_THAT(doc.error().message, Catch::StartsWith((dir / name).string() + ": binary"));
    }
}

TEST_CASE("read_file handles empty missing oversized and sniffed files", "[text][read]") {
    const auto dir = attnrag::test::make_temp_dir("text_misc");
    for (const char* name : {"empty.txt", "empty.html", "empty.pdf", "empty"}) {
        write_file(dir / name, "");
        auto doc = text::read_file(dir / name);
        REQUIRE(doc.ok());
        CHECK(doc->text.empty());
        CHECK(text::chunk_text(doc->text, {}, count_words).empty());
    }
    auto missing = text::read_file(dir / "nope.txt");
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.error().code == Errc::NotFound);
    CHECK_THAT(missing.error().message, Catch::Contains("nope.txt"));
    auto directory = text::read_file(dir);
    REQUIRE_FALSE(directory.ok());
    CHECK(directory.error().code == Errc::Io);

    write_file(dir / "big.txt", std::string(1000, 'a'));
    auto big = text::read_file(dir / "big.txt", {.max_bytes = 999});
    REQUIRE_FALSE(big.ok());
    CHECK(big.error().code == Errc::OutOfRange);
    CHECK(text::read_file(dir / "big.txt", {.max_bytes = 1000}).ok());

    write_file(dir / "notes.log", "Just some notes.\n");
    auto log = text::read_file(dir / "notes.log");
    REQUIRE(log.ok());
    CHECK(log->format == Format::Text);
    write_file(dir / "page.xyz", "\n  <!DOCTYPE HTML><title>T</title><p>x &amp; y</p>");
    auto sniffed = text::read_file(dir / "page.xyz");
    REQUIRE(sniffed.ok());
    CHECK(sniffed->format == Format::Html);
    CHECK(sniffed->text == "x & y");
    CHECK(sniffed->title == "T");
}

TEST_CASE("read_file and chunk_text handle a 20 MB file", "[text][read][chunk]") {
    const auto dir = attnrag::test::make_temp_dir("text_large");
    std::string s;
    s.reserve(21u << 20);
    std::mt19937 rng(99);
    const char* words[] = {"alpha", "beta", "gamma", "delta", "epsilon", "读书", "天气"};
    while (s.size() < (20u << 20)) {
        const int n = 3 + static_cast<int>(rng() % 15);
        for (int w = 0; w < n; ++w) {
            s += words[rng() % 7];
            s += ' ';
        }
        s.back() = '.';
        s += rng() % 10 == 0 ? "\n\n" : " ";
    }
    write_file(dir / "large.txt", s);
    const auto t0 = std::chrono::steady_clock::now();
    auto doc = text::read_file(dir / "large.txt");
    REQUIRE(doc.ok());
    CHECK(doc->text.size() == s.size());
    const text::ChunkOptions o{.max_tokens = 256};
    const auto chunks = text::chunk_text(doc->text, o, count_quarters);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(chunks.size() > s.size() / 1024 / 2);  // ~1 KiB (256 tokens x 4 bytes) per chunk
    uint64_t prev_end = 0;
    for (const Chunk& c : chunks) {
        REQUIRE(c.n_tokens <= 256);
        REQUIRE(c.span.begin >= prev_end);
        prev_end = c.span.end;
    }
    CHECK(prev_end == s.size() - 1 - (s.ends_with("\n\n") ? 1 : 0));
    WARN("read + chunk of " << s.size() << " bytes: " << secs << " s, " << chunks.size()
                            << " chunks");
    CHECK(secs < 10.0);
}

TEST_CASE("readers and chunker run concurrently with identical results", "[text][threads]") {
    const std::string pdf = make_pdf({"Threads read this page.", "And this one."}, "Par");
    const std::string html = "<title>P</title><p>One &amp; two. Three four.</p><p>Five six.</p>";
    std::string plain;
    for (int i = 0; i < 200; ++i) plain += "Sentence " + std::to_string(i) + " is here. 你好。\n";
    auto run = [&] {
        std::string out;
        auto p = text::read_bytes(pdf, Format::Pdf, "t.pdf");
        auto h = text::read_bytes(html, Format::Html, "t.html");
        if (!p.ok() || !h.ok()) return std::string("error");
        out += p->text + "|" + h->text + "|";
        for (const Chunk& c :
             text::chunk_text(plain, {.max_tokens = 40, .overlap_tokens = 8}, count_quarters)) {
            out += std::to_string(c.span.begin) + "," + std::to_string(c.span.end) + ";";
        }
        auto n = text::nfkc("\xEF\xAC\x81");
        return out + (n.ok() ? *n : "");
    };
    const std::string expected = run();
    REQUIRE(expected != "error");
    std::vector<std::string> results(4);
    std::vector<std::thread> threads;
    threads.reserve(results.size());
    for (std::string& result : results) {
        threads.emplace_back([&run, &result] {
            for (int k = 0; k < 5; ++k) result = run();
        });
    }
    for (auto& th : threads) th.join();
    for (const auto& r : results) CHECK(r == expected);
}
