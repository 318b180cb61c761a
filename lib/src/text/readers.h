// Private: the per-format readers behind read_bytes/read_file. Each takes the whole source.
#pragma once

#include <string>
#include <string_view>

#include "attnrag/text.hpp"

namespace attnrag::text::detail {

// Text and Markdown: the bytes as they are (a UTF-8 BOM skipped), identity anchors.
// The bytes must already be checked (valid UTF-8, no NUL).
Document read_plain(std::string_view bytes, Format format);

// The Markdown title: the first level-1 ATX heading ("# Title"), else the first ATX heading of
// any level, outside fenced code blocks; "" if none.
std::string markdown_title(std::string_view text);

// HTML via gumbo (bytes checked as for read_plain).
Result<Document> read_html(std::string_view bytes, const std::string& name);

// PDF via poppler-cpp; serialized by a process-wide mutex.
Result<Document> read_pdf(std::string_view bytes, const std::string& name);

}  // namespace attnrag::text::detail
