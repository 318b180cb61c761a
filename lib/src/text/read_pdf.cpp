// PDF reader: poppler-cpp text extraction in reading order, one page after another.
#include <poppler-document.h>
#include <poppler-global.h>
#include <poppler-page.h>

#include <climits>
#include <exception>
#include <memory>
#include <mutex>
#include <new>

#include "text/readers.h"
#include "text/utf8.h"

namespace attnrag::text::detail {
namespace {

// Poppler keeps process-wide state (global parameters, the error callback); documents are
// parsed one at a time to stay clear of its thread-safety history.
std::mutex& poppler_mutex() {
    static std::mutex m;
    return m;
}

void drop_message(const std::string& /*msg*/, void* /*closure*/) {}

std::string to_std_string(const poppler::ustring& s) {
    const poppler::byte_array utf8 = s.to_utf8();
    return std::string(utf8.begin(), utf8.end());
}

// Page text: valid UTF-8, form feeds turned into line breaks, trimmed.
std::string clean_page_text(std::string raw) {
    for (char& c : raw) {
        if (c == '\f') c = '\n';
    }
    std::string text = sanitize_utf8(raw);
    const Span s = trim_space(text, Span{0, text.size()});
    return text.substr(static_cast<size_t>(s.begin), static_cast<size_t>(s.size()));
}

Result<Document> extract(std::string_view bytes, const std::string& name) {
    std::unique_ptr<poppler::document> pdf(
        poppler::document::load_from_raw_data(bytes.data(), static_cast<int>(bytes.size())));
    if (!pdf)
        return make_error(Errc::Corrupt, name + ": not a readable PDF (poppler cannot parse it)");
    if (pdf->is_locked()) {
        return make_error(Errc::Unsupported, name + ": PDF is encrypted and needs a password");
    }
    Document doc;
    doc.format = Format::Pdf;
    doc.source_bytes = bytes.size();
    doc.title = clean_page_text(to_std_string(pdf->info_key("Title")));
    const int n_pages = pdf->pages();
    for (int i = 0; i < n_pages; ++i) {
        if (i > 0) doc.text += "\n\n";
        doc.page_starts.push_back(doc.text.size());
        std::unique_ptr<poppler::page> page(pdf->create_page(i));
        if (!page) continue;  // an unreadable page contributes no text
        doc.text += clean_page_text(to_std_string(
            page->text(poppler::rectf(), poppler::page::non_raw_non_physical_layout)));
    }
    return doc;
}

}  // namespace

Result<Document> read_pdf(std::string_view bytes, const std::string& name) {
    if (bytes.size() > static_cast<size_t>(INT_MAX)) {  // poppler takes an int length
        return make_error(Errc::OutOfRange, name + ": PDF larger than 2 GiB");
    }
    std::lock_guard<std::mutex> lock(poppler_mutex());
    static std::once_flag quiet;
    std::call_once(quiet, [] { poppler::set_debug_error_function(drop_message, nullptr); });
    try {
        return extract(bytes, name);
    } catch (const std::bad_alloc&) {
        return make_error(Errc::OutOfMemory, name + ": out of memory extracting PDF text");
    } catch (const std::exception& e) {
        return make_error(Errc::Corrupt, name + ": PDF extraction failed: " + e.what());
    }
}

}  // namespace attnrag::text::detail
