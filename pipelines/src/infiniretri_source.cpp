// The streaming sentence source of InfiniRetri: block-wise reading, UTF-8 checks across block
// edges, ICU sentences with exact byte ranges, the reference splitter's glue rules.
#include <algorithm>
#include <cctype>
#include <deque>
#include <fstream>
#include <system_error>

#include "attnrag/pipelines/infiniretri.hpp"
#include "attnrag/text.hpp"

namespace attnrag::pipelines {

namespace {

bool is_ascii_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_continuation(unsigned char c) {
    return (c & 0xC0) == 0x80;
}

// Length of the prefix of s made of whole UTF-8 sequences as far as the lead bytes tell: an
// incomplete sequence at the very end (cut by a block edge) is left out for the next block.
// Invalid bytes are left in for the validator to report.
size_t complete_prefix(std::string_view s) {
    const size_t n = s.size();
    for (size_t back = 1; back <= std::min<size_t>(4, n); ++back) {
        const auto c = static_cast<unsigned char>(s[n - back]);
        if (is_continuation(c)) continue;
        size_t len = 1;
        if (c >= 0xF0 && c <= 0xF4)
            len = 4;
        else if (c >= 0xE0 && c <= 0xEF)
            len = 3;
        else if (c >= 0xC2 && c <= 0xDF)
            len = 2;
        return len > back ? n - back : n;
    }
    return n;
}

// Largest character boundary <= pos in s (s valid UTF-8).
size_t floor_boundary(std::string_view s, size_t pos) {
    pos = std::min(pos, s.size());
    while (pos > 0 && pos < s.size() && is_continuation(static_cast<unsigned char>(s[pos]))) --pos;
    return pos;
}

// A copy of s in which the line breaks of a run of white space holding exactly one line break
// become spaces (same length). A run touching the end of s is left alone: the next block may
// continue it.
std::string unwrap_lines(std::string_view s) {
    std::string out(s);
    size_t i = 0;
    while (i < s.size()) {
        if (!is_ascii_space(s[i])) {
            ++i;
            continue;
        }
        size_t j = i;
        int n_lf = 0, n_cr = 0;
        while (j < s.size() && is_ascii_space(s[j])) {
            n_lf += s[j] == '\n';
            n_cr += s[j] == '\r';
            ++j;
        }
        const int n_breaks = n_lf > 0 ? n_lf : n_cr;
        if (n_breaks == 1 && j < s.size()) {
            for (size_t k = i; k < j; ++k) {
                if (out[k] == '\n' || out[k] == '\r') out[k] = ' ';
            }
        }
        i = j;
    }
    return out;
}

bool has_blank_line(std::string_view gap) {
    return std::count(gap.begin(), gap.end(), '\n') >= 2 ||
           (gap.find('\n') == std::string_view::npos &&
            std::count(gap.begin(), gap.end(), '\r') >= 2);
}

size_t count_chars(std::string_view s) {
    size_t n = 0;
    for (char c : s) n += !is_continuation(static_cast<unsigned char>(c));
    return n;
}

}  // namespace

struct SentenceSource::Impl {
    SentenceSourceOptions opt;
    std::string name;
    std::ifstream file;
    bool from_memory = false;
    std::string memory;
    size_t memory_pos = 0;
    uint64_t size = 0;
    uint64_t n_read = 0;  // source bytes read so far

    // Source bytes [buf_base, buf_base + buf.size()); buf[0, n_valid) is checked UTF-8.
    std::string buf;
    uint64_t buf_base = 0;
    size_t n_valid = 0;
    bool eof = false;
    bool bom_checked = false;
    bool finished = false;
    std::optional<Error> error;

    std::deque<SourceSentence> ready;
    std::optional<SourceSentence> pending;  // the last sentence: a following fragment may join it
    bool at_start = true;  // nothing emitted yet (the first sentence starts a paragraph)

    Status read_block() {
        const size_t want = std::max<size_t>(1, opt.block_bytes);
        const size_t old = buf.size();
        if (from_memory) {
            const size_t n = std::min(want, memory.size() - memory_pos);
            buf.append(memory, memory_pos, n);
            memory_pos += n;
            eof = memory_pos == memory.size();
        } else {
            buf.resize(old + want);
            file.read(buf.data() + old, static_cast<std::streamsize>(want));
            const auto got = static_cast<size_t>(file.gcount());
            buf.resize(old + got);
            if (file.bad())
                return make_error(Errc::Io,
                                  name + ": read failed at byte offset " + std::to_string(n_read));
            eof = got < want || file.peek() == std::char_traits<char>::eof();
        }
        n_read += buf.size() - old;
        if (!bom_checked && (buf.size() >= 3 || eof)) {  // a UTF-8 byte order mark
            bom_checked = true;
            if (buf.size() >= 3 && buf.compare(0, 3, "\xEF\xBB\xBF") == 0) {
                buf.erase(0, 3);
                buf_base = 3;
            }
        }
        if (!bom_checked) return {};
        const size_t upto = eof ? buf.size() : complete_prefix(buf);
        if (upto > n_valid) {
            const size_t bad =
                text::find_invalid_utf8(std::string_view(buf).substr(n_valid, upto - n_valid));
            if (bad != text::npos) {
                return make_error(Errc::InvalidArgument,
                                  name + ": invalid UTF-8 at byte offset " +
                                      std::to_string(buf_base + n_valid + bad));
            }
            n_valid = upto;
        }
        return {};
    }

    bool glues(const SourceSentence& prev, std::string_view frag) const {
        if (prev.text.size() + frag.size() > opt.max_sentence_bytes) return false;
        const bool punct_only = std::all_of(frag.begin(), frag.end(), [](char c) {
            const auto u = static_cast<unsigned char>(c);
            return u < 0x80 && std::ispunct(u);
        });
        if (punct_only) return true;
        return prev.text.back() == '.' && count_chars(frag) <= opt.short_fragment_chars;
    }

    // A raw sentence [b, e) (absolute offsets, inside buf), or a glued fragment.
    void offer(uint64_t b, uint64_t e) {
        const std::string_view view(buf);
        const auto at = [&](uint64_t off) { return static_cast<size_t>(off - buf_base); };
        const std::string_view frag = view.substr(at(b), static_cast<size_t>(e - b));
        if (pending) {
            if (glues(*pending, frag)) {
                pending->text.append(
                    view.substr(at(pending->end), static_cast<size_t>(e - pending->end)));
                pending->end = e;
                return;
            }
            const bool para = has_blank_line(
                view.substr(at(pending->end), static_cast<size_t>(b - pending->end)));
            ready.push_back(std::move(*pending));
            pending = SourceSentence{b, e, std::string(frag), para};
        } else {
            pending = SourceSentence{b, e, std::string(frag), at_start};
            at_start = false;
        }
    }

    // Offers [start, end) (offsets in buf) in pieces of at most max_sentence_bytes, each cut at
    // its last white space if there is one in its second half, else at a character boundary.
    // Unless `whole`, the tail shorter than the limit is not offered (more text may follow).
    // Returns where the part not offered starts; `consumed` is set past the last piece.
    size_t offer_cut(std::string_view valid, size_t start, size_t end, bool whole,
                     size_t& consumed) {
        const size_t max = std::max<size_t>(opt.max_sentence_bytes, 4);
        while (end - start > max) {
            const size_t limit = start + max;
            size_t cut = limit;
            while (cut > start + max / 2 && !is_ascii_space(valid[cut - 1])) --cut;
            if (cut <= start + max / 2) cut = floor_boundary(valid, limit);
            size_t piece_end = cut;
            while (piece_end > start && is_ascii_space(valid[piece_end - 1])) --piece_end;
            offer(buf_base + start, buf_base + piece_end);
            consumed = piece_end;
            start = cut;
            while (start < end && is_ascii_space(valid[start])) ++start;
        }
        if (whole && start < end) {
            offer(buf_base + start, buf_base + end);
            consumed = end;
        }
        return start;
    }

    // Moves finished sentences from buf to `ready` and drops the bytes consumed.
    void split() {
        const std::string_view valid = std::string_view(buf).substr(0, n_valid);
        const std::string unwrapped = opt.unwrap_lines ? unwrap_lines(valid) : std::string();
        const std::vector<text::Span> spans = text::split_sentences(
            opt.unwrap_lines ? std::string_view(unwrapped) : valid, opt.locale.c_str());
        // Without EOF the last sentence may continue in the next block: hold it back (or, when it
        // has grown past max_sentence_bytes, all of it but its last piece).
        const bool all = eof && n_valid == buf.size();
        const size_t n_final = all ? spans.size() : (spans.empty() ? 0 : spans.size() - 1);
        size_t consumed = 0;
        for (size_t i = 0; i < n_final; ++i) {
            offer_cut(valid, static_cast<size_t>(spans[i].begin), static_cast<size_t>(spans[i].end),
                      true, consumed);
        }
        if (!all) {
            const size_t start =
                n_final < spans.size() ? static_cast<size_t>(spans[n_final].begin) : n_valid;
            offer_cut(valid, start, n_valid, false, consumed);
        }
        // Keep the bytes from the end of the last offered sentence: a glued fragment takes the
        // gap before it, and the gap tells whether a paragraph starts.
        const size_t keep_from = pending ? static_cast<size_t>(pending->end - buf_base) : consumed;
        buf.erase(0, keep_from);
        buf_base += keep_from;
        n_valid -= keep_from;
    }

    Result<std::optional<SourceSentence>> next() {
        if (error) return *error;
        while (ready.empty() && !finished) {
            if (eof && n_valid == buf.size()) {
                if (pending) ready.push_back(std::move(*pending));
                pending.reset();
                finished = true;
                break;
            }
            if (auto st = read_block(); !st) {
                error = st.error();
                return *error;
            }
            split();
            if (eof && n_valid == buf.size() && buf.empty() && !pending) finished = true;
        }
        if (ready.empty()) return std::optional<SourceSentence>{};
        SourceSentence s = std::move(ready.front());
        ready.pop_front();
        return std::optional<SourceSentence>{std::move(s)};
    }
};

SentenceSource::SentenceSource(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SentenceSource::SentenceSource(SentenceSource&&) noexcept = default;
SentenceSource& SentenceSource::operator=(SentenceSource&&) noexcept = default;
SentenceSource::~SentenceSource() = default;

Result<SentenceSource> SentenceSource::open(const std::filesystem::path& path,
                                            const SentenceSourceOptions& options) {
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    if (ec || !std::filesystem::exists(status))
        return make_error(Errc::NotFound, path.string() + ": no such file");
    if (std::filesystem::is_directory(status))
        return make_error(Errc::Io, path.string() + ": is a directory");
    auto impl = std::make_unique<Impl>();
    impl->opt = options;
    impl->name = path.string();
    impl->file.open(path, std::ios::binary);
    if (!impl->file) return make_error(Errc::Io, path.string() + ": cannot open");
    impl->size = std::filesystem::file_size(path, ec);
    if (ec) impl->size = 0;
    if (impl->file.peek() == std::char_traits<char>::eof()) impl->eof = true;
    return SentenceSource(std::move(impl));
}

SentenceSource SentenceSource::from_text(std::string text, const SentenceSourceOptions& options,
                                         std::string name) {
    auto impl = std::make_unique<Impl>();
    impl->opt = options;
    impl->name = std::move(name);
    impl->from_memory = true;
    impl->size = text.size();
    impl->memory = std::move(text);
    impl->eof = impl->memory.empty();
    return SentenceSource(std::move(impl));
}

Result<std::optional<SourceSentence>> SentenceSource::next() {
    return impl_->next();
}
uint64_t SentenceSource::bytes_read() const {
    return impl_->n_read;
}
uint64_t SentenceSource::size_bytes() const {
    return impl_->size;
}
const std::string& SentenceSource::name() const {
    return impl_->name;
}

Result<std::vector<std::filesystem::path>> text_files(const std::filesystem::path& path) {
    namespace fs = std::filesystem;
    std::vector<fs::path> files;
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
        for (auto it = fs::recursive_directory_iterator(path, ec); !ec && it != fs::recursive_directory_iterator();
             it.increment(ec)) {
            if (it->is_regular_file() && it->path().extension() == ".txt") files.push_back(it->path());
        }
        if (ec) return make_error(Errc::Io, path.string() + ": " + ec.message());
        std::sort(files.begin(), files.end());
    } else if (fs::is_regular_file(path, ec)) {
        files.push_back(path);
    }
    if (files.empty()) return make_error(Errc::NotFound, path.string() + ": no such file or .txt files");
    return files;
}

}  // namespace attnrag::pipelines
