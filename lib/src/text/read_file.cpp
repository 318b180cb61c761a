// read_file and read_bytes: size limits, I/O errors, format sniffing, byte checks, dispatch.
#include <cerrno>
#include <cstdio>
#include <memory>
#include <system_error>

#include "attnrag/text.hpp"
#include "text/readers.h"

namespace attnrag::text {
namespace {

namespace fs = std::filesystem;

struct FileCloser {
    void operator()(std::FILE* f) const { std::fclose(f); }
};

Error too_big(const std::string& name, uint64_t n_bytes, uint64_t max_bytes) {
    return make_error(Errc::OutOfRange, name + ": " + std::to_string(n_bytes) +
                                            " bytes exceeds max_bytes " +
                                            std::to_string(max_bytes));
}

Result<std::string> slurp(const fs::path& path, uint64_t max_bytes) {
    const std::string name = path.string();
    std::error_code ec;
    const fs::file_status st = fs::status(path, ec);
    if (ec || !fs::exists(st)) {
        if (!ec || ec == std::errc::no_such_file_or_directory) {
            return make_error(Errc::NotFound, name + ": no such file");
        }
        return make_error(Errc::Io, name + ": " + ec.message());
    }
    if (fs::is_directory(st)) return make_error(Errc::Io, name + ": is a directory");
    uint64_t expected = 0;
    if (fs::is_regular_file(st)) {
        expected = fs::file_size(path, ec);
        if (ec) return make_error(Errc::Io, name + ": " + ec.message());
        if (expected > max_bytes) return too_big(name, expected, max_bytes);
    }
    std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
    if (!f) {
        const int err = errno;
        return make_error(err == ENOENT ? Errc::NotFound : Errc::Io,
                          name + ": cannot open: " + std::generic_category().message(err));
    }
    std::string data(static_cast<size_t>(expected), '\0');
    size_t n = expected > 0 ? std::fread(data.data(), 1, data.size(), f.get()) : 0;
    data.resize(n);
    // The size may have changed since stat, and pipes have none: read on to EOF, within limits.
    char buf[1 << 16];
    while (!std::ferror(f.get()) && !std::feof(f.get())) {
        const size_t got = std::fread(buf, 1, sizeof buf, f.get());
        data.append(buf, got);
        if (data.size() > max_bytes) return too_big(name, data.size(), max_bytes);
        if (got == 0) break;
    }
    if (std::ferror(f.get())) {
        return make_error(Errc::Io,
                          name + ": read failed: " + std::generic_category().message(errno));
    }
    return data;
}

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
    if (s.size() < prefix.size()) return false;
    for (size_t i = 0; i < prefix.size(); ++i) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        if (c != prefix[i]) return false;
    }
    return true;
}

Format sniff(std::string_view bytes) {
    if (bytes.substr(0, 5) == "%PDF-") return Format::Pdf;
    size_t i = bytes.substr(0, 3) == "\xEF\xBB\xBF" ? 3 : 0;
    while (i < bytes.size() && (bytes[i] == ' ' || bytes[i] == '\t' || bytes[i] == '\n' ||
                                bytes[i] == '\r' || bytes[i] == '\f')) {
        ++i;
    }
    const std::string_view head = bytes.substr(i);
    if (starts_with_nocase(head, "<!doctype html") || starts_with_nocase(head, "<html")) {
        return Format::Html;
    }
    return Format::Text;
}

// Text formats must be UTF-8 without NUL bytes. sniffed: the format was guessed, so bytes that
// are not UTF-8 mean "an unknown binary format" rather than "broken text".
Status check_text(std::string_view bytes, const std::string& name, bool sniffed) {
    if (const size_t nul = bytes.find('\0'); nul != std::string_view::npos) {
        return make_error(Errc::Unsupported, name + ": binary content (NUL byte at offset " +
                                                 std::to_string(nul) + "), not a text format");
    }
    if (const size_t bad = find_invalid_utf8(bytes); bad != npos) {
        if (sniffed) {
            return make_error(Errc::Unsupported,
                              name + ": not UTF-8 text and not a known format (invalid UTF-8 at " +
                                  "byte offset " + std::to_string(bad) + ")");
        }
        return make_error(Errc::InvalidArgument,
                          name + ": invalid UTF-8 at byte offset " + std::to_string(bad));
    }
    return {};
}

Result<Document> read_checked(std::string_view bytes, Format format, const std::string& name,
                              const ReadOptions& opts, bool sniffed) {
    if (bytes.size() > opts.max_bytes) return too_big(name, bytes.size(), opts.max_bytes);
    if (bytes.empty()) {
        Document doc;
        doc.format = format;
        if (format != Format::Pdf) doc.anchors.emplace_back(0, 0);
        return doc;
    }
    if (format == Format::Pdf) return detail::read_pdf(bytes, name);
    ATTNRAG_TRY(check_text(bytes, name, sniffed));
    if (format == Format::Html) return detail::read_html(bytes, name);
    return detail::read_plain(bytes, format);
}

}  // namespace

Result<Document> read_bytes(std::string_view bytes, Format format, const std::string& name,
                            const ReadOptions& opts) {
    return read_checked(bytes, format, name, opts, false);
}

Result<Document> read_file(const std::filesystem::path& path, const ReadOptions& opts) {
    auto data = slurp(path, opts.max_bytes);
    if (!data) return data.error();
    const std::optional<Format> by_ext = format_from_extension(path);
    const Format format = by_ext ? *by_ext : sniff(*data);
    return read_checked(*data, format, path.string(), opts,
                        !by_ext.has_value() && format == Format::Text);
}

}  // namespace attnrag::text
