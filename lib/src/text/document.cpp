// Document helpers: format names and extensions, text-to-source offsets, pages.
#include <algorithm>
#include <cctype>

#include "attnrag/text.hpp"

namespace attnrag::text {

const char* format_name(Format format) {
    switch (format) {
        case Format::Text: return "text";
        case Format::Markdown: return "markdown";
        case Format::Html: return "html";
        case Format::Pdf: return "pdf";
    }
    return "unknown";
}

std::optional<Format> format_from_extension(const std::filesystem::path& path) {
    std::string ext = path.extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (ext == ".txt" || ext == ".text") return Format::Text;
    if (ext == ".md" || ext == ".markdown") return Format::Markdown;
    if (ext == ".html" || ext == ".htm" || ext == ".xhtml") return Format::Html;
    if (ext == ".pdf") return Format::Pdf;
    return std::nullopt;
}

uint64_t to_source_offset(const Document& doc, uint64_t text_offset) {
    const auto& a = doc.anchors;
    if (a.empty()) return 0;
    // The last anchor with a.first <= text_offset.
    auto it = std::upper_bound(a.begin(), a.end(), text_offset,
                               [](uint64_t t, const auto& anchor) { return t < anchor.first; });
    if (it == a.begin()) return std::min(a.front().second, doc.source_bytes);
    --it;
    return std::min(it->second + (text_offset - it->first), doc.source_bytes);
}

uint32_t page_of(const Document& doc, uint64_t text_offset) {
    const auto& p = doc.page_starts;
    auto it = std::upper_bound(p.begin(), p.end(), text_offset);
    if (it == p.begin()) return 0;
    return static_cast<uint32_t>(it - p.begin() - 1);
}

}  // namespace attnrag::text
