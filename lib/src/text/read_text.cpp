// Plain-text and Markdown readers: the source bytes are the text (identity offsets).
#include "text/readers.h"
#include "text/utf8.h"

namespace attnrag::text::detail {

namespace {

constexpr std::string_view kBom = "\xEF\xBB\xBF";

// A line's content after up to 3 spaces of indentation; ok is false when indented 4 or more.
std::string_view unindent(std::string_view line, bool& ok) {
    size_t i = 0;
    while (i < line.size() && i < 4 && line[i] == ' ') ++i;
    ok = i < 4;
    return line.substr(i);
}

bool is_fence(std::string_view s) {
    return s.substr(0, 3) == "```" || s.substr(0, 3) == "~~~";
}

// The text of an ATX heading line and its level (0 when the line is not a heading).
std::string_view atx_heading(std::string_view s, int& level) {
    level = 0;
    size_t i = 0;
    while (i < s.size() && s[i] == '#') ++i;
    if (i == 0 || i > 6) return {};
    if (i < s.size() && s[i] != ' ' && s[i] != '\t') return {};
    std::string_view t = s.substr(i);
    while (!t.empty() && is_ascii_space(t.front())) t.remove_prefix(1);
    while (!t.empty() && is_ascii_space(t.back())) t.remove_suffix(1);
    // An optional closing run of '#', preceded by a space (or the whole content).
    size_t j = t.size();
    while (j > 0 && t[j - 1] == '#') --j;
    if (j == 0 || (j < t.size() && (t[j - 1] == ' ' || t[j - 1] == '\t'))) {
        t = t.substr(0, j);
        while (!t.empty() && is_ascii_space(t.back())) t.remove_suffix(1);
    }
    level = static_cast<int>(i);
    return t;
}

}  // namespace

std::string markdown_title(std::string_view text) {
    std::string_view first_any;
    bool have_any = false;
    bool in_fence = false;
    size_t pos = 0;
    while (pos < text.size()) {
        const size_t nl = text.find('\n', pos);
        std::string_view line = text.substr(pos, nl == npos ? npos : nl - pos);
        pos = nl == npos ? text.size() : nl + 1;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        bool ok = false;
        const std::string_view s = unindent(line, ok);
        if (!ok) continue;
        if (is_fence(s)) {
            in_fence = !in_fence;
            continue;
        }
        if (in_fence) continue;
        int level = 0;
        const std::string_view h = atx_heading(s, level);
        if (level == 0 || h.empty()) continue;
        if (level == 1) return std::string(h);
        if (!have_any) {
            first_any = h;
            have_any = true;
        }
    }
    return std::string(first_any);
}

Document read_plain(std::string_view bytes, Format format) {
    Document doc;
    doc.format = format;
    doc.source_bytes = bytes.size();
    const uint64_t bom = bytes.substr(0, 3) == kBom ? 3 : 0;
    doc.text.assign(bytes.substr(static_cast<size_t>(bom)));
    doc.anchors.emplace_back(0, bom);
    if (format == Format::Markdown) doc.title = markdown_title(doc.text);
    return doc;
}

}  // namespace attnrag::text::detail
