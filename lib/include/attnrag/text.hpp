// Document text: UTF-8 checks, NFKC, ICU sentence/paragraph segmentation, readers for plain text,
// Markdown, HTML and PDF, and the sentence-aligned token-budget chunker.
//
// Thread-safety: every function here is reentrant and safe to call from many threads at once;
// none keeps state between calls (PDF parsing is serialized internally, see read_file).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "attnrag/result.hpp"

namespace attnrag::text {

inline constexpr size_t npos = std::string_view::npos;

// ---- UTF-8 and normalization ---------------------------------------------------------------

// Byte offset of the first byte of the first invalid UTF-8 sequence in s (a stray continuation
// byte, an overlong form, a surrogate, a code point > U+10FFFF, or a sequence truncated by the
// end of s or by a non-continuation byte), or npos when s is entirely valid.
size_t find_invalid_utf8(std::string_view s);

// s normalized to NFKC (ICU Normalizer2, UTF-8 in and out, no UTF-16 copy of s). Invalid UTF-8
// is InvalidArgument ("nfkc: invalid UTF-8 at byte offset N"); inputs of 2 GiB or more are
// OutOfRange.
Result<std::string> nfkc(std::string_view s);

// ---- Documents ------------------------------------------------------------------------------

enum class Format { Text, Markdown, Html, Pdf };

// "text", "markdown", "html", "pdf". Static storage.
const char* format_name(Format format);

// The format implied by path's extension (case-insensitive: .txt .text .md .markdown .html .htm
// .xhtml .pdf), or nullopt for any other extension (read_file then sniffs the contents).
std::optional<Format> format_from_extension(const std::filesystem::path& path);

// A document's extracted text and how it maps back to the source bytes. Plain value type.
struct Document {
    std::string text;  // extracted text, valid UTF-8, no NUL bytes
    Format format = Format::Text;
    std::string title;  // HTML <title>, Markdown's first '# ' heading, PDF Title; or ""
    // Sorted by text offset, first components strictly increasing: text byte t maps to source
    // byte a.second + (t - a.first) for the last anchor a with a.first <= t.
    // Text/Markdown: one anchor (0, 0), or (0, 3) after a UTF-8 BOM. HTML: an anchor wherever
    // the text-to-source delta changes (each text node, decoded entity, collapsed whitespace run),
    // so every byte copied from the source maps to its exact source offset. PDF: empty (the text
    // comes from compressed content streams; there is no byte mapping, use page_starts).
    std::vector<std::pair<uint64_t, uint64_t>> anchors;
    std::vector<uint64_t> page_starts;  // PDF: text offset where each page begins; else empty
    uint64_t source_bytes = 0;          // size of the source (file) in bytes
};

// The source byte offset of text byte text_offset (see Document::anchors), clamped to
// [0, source_bytes]. Documents without anchors (PDF) give 0: locate PDF text with page_of.
uint64_t to_source_offset(const Document& doc, uint64_t text_offset);

// The 0-based page holding text byte text_offset: the last page whose start is <= text_offset.
// 0 for documents without pages.
uint32_t page_of(const Document& doc, uint64_t text_offset);

struct ReadOptions {
    uint64_t max_bytes = 256ull << 20;  // larger sources are OutOfRange
};

// Reads and extracts a document. The reader is chosen by extension (format_from_extension);
// for other extensions the contents are sniffed: "%PDF-" magic -> PDF, "<html" or
// "<!doctype html" (case-insensitive, after a BOM and whitespace) -> HTML, else plain text.
// Errors (messages start with the path):
//   no such file -> NotFound; a directory or a read failure -> Io;
//   larger than opts.max_bytes -> OutOfRange;
//   NUL bytes in a text format, or invalid UTF-8 in a file of unknown extension -> Unsupported
//     ("binary ...", "not UTF-8 text ...", with the byte offset);
//   invalid UTF-8 in a .txt/.md/.html file -> InvalidArgument "path: invalid UTF-8 at byte
//     offset N" (N counts from the start of the file);
//   a PDF that cannot be parsed -> Corrupt; a password-protected PDF -> Unsupported.
// An empty file gives a Document with empty text, whatever its format.
// PDF parsing (poppler) is serialized by a process-wide mutex; the other formats run in
// parallel. Poppler's diagnostics on stderr are silenced process-wide on the first PDF read.
Result<Document> read_file(const std::filesystem::path& path, const ReadOptions& opts = {});

// The same from bytes in memory, with the format given (no sniffing); name is used only in
// error messages. The result owns copies of everything it needs; bytes may die after the call.
Result<Document> read_bytes(std::string_view bytes, Format format, const std::string& name,
                            const ReadOptions& opts = {});

// ---- Segmentation ---------------------------------------------------------------------------

// A half-open byte range [begin, end) in a text.
struct Span {
    uint64_t begin = 0, end = 0;

    uint64_t size() const { return end - begin; }
    friend bool operator==(const Span&, const Span&) = default;
};

// Sentences per ICU's sentence BreakIterator (UAX #29, run directly over the UTF-8 via UText),
// each span trimmed of leading and trailing white space (Unicode White_Space); empty and
// white-space-only pieces dropped. Spans are in order, non-overlapping, inside text, on
// character boundaries. Handles Latin, CJK terminators (。！？) and mixed text. As UAX #29 says,
// every line break ends a sentence, so hard-wrapped text gives line-sized pieces. locale is an
// ICU locale id; "en@ss=standard" suppresses breaks after abbreviations such as "Mr.". An
// unknown locale falls back to the root rules; text should be valid UTF-8 (invalid bytes are
// treated as U+FFFD and never split).
std::vector<Span> split_sentences(std::string_view text, const char* locale = "en");

// Paragraphs: maximal runs of lines separated by one or more blank lines (a blank line holds
// only ASCII white space: the regex \n\s*\n), each span trimmed of white space.
std::vector<Span> split_paragraphs(std::string_view text);

// ---- Chunking -------------------------------------------------------------------------------

struct ChunkOptions {
    uint32_t max_tokens = 256;    // budget per chunk (values < 1 act as 1)
    uint32_t overlap_tokens = 0;  // tokens of trailing sentences repeated at the next chunk's start
};

struct Chunk {
    uint32_t ordinal = 0;   // 0..n-1 in text order
    Span span;              // in the text; trimmed of white space; never splits a character
    uint32_t n_tokens = 0;  // count_tokens(text of span)
};

// Sentence-aligned chunks of at most opts.max_tokens tokens as counted by count_tokens (called
// on substrings of text; it must be thread-compatible with the caller and roughly monotone in
// length). Sentences (split_sentences, "en") are packed greedily; when the chunk is at least half
// full, a paragraph break (split_paragraphs) ends it early. A sentence over the budget is split
// at word boundaries (ICU word BreakIterator), a word over the budget at UTF-8 character
// boundaries. With overlap, each chunk after the first starts with the last sentences (not the
// first) of the previous chunk totalling <= overlap_tokens, dropped if they leave no room.
// Every chunk's n_tokens is the count of its final text and is <= max_tokens, except that a
// single character counting more than max_tokens becomes a chunk of its own. Together the spans
// cover every non-white-space byte of text. Empty or white-space-only text gives no chunks.
std::vector<Chunk> chunk_text(std::string_view text, const ChunkOptions& opts,
                              const std::function<uint32_t(std::string_view)>& count_tokens);

}  // namespace attnrag::text
