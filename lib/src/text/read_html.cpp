// HTML reader: gumbo parse tree -> visible text with block breaks, plus exact source anchors.
//
// Text nodes are walked beside their original source (GumboText::original_text) so that every
// byte copied from the source keeps its exact offset; decoded entities map to the '&' that
// starts them. Whitespace runs collapse to one space outside <pre>/<textarea>/<listing>.
#include <gumbo.h>

#include <cctype>
#include <memory>
#include <optional>
#include <vector>

#include "text/readers.h"
#include "text/utf8.h"

namespace attnrag::text::detail {
namespace {

bool is_html_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

bool is_skipped(GumboTag tag) {
    switch (tag) {
        case GUMBO_TAG_HEAD:
        case GUMBO_TAG_SCRIPT:
        case GUMBO_TAG_STYLE:
        case GUMBO_TAG_NOSCRIPT:
        case GUMBO_TAG_TEMPLATE:
        case GUMBO_TAG_IFRAME:
        case GUMBO_TAG_OBJECT:
        case GUMBO_TAG_EMBED:
        case GUMBO_TAG_SVG:
        case GUMBO_TAG_CANVAS:
        case GUMBO_TAG_TITLE: return true;
        default: return false;
    }
}

bool is_block(GumboTag tag) {
    switch (tag) {
        case GUMBO_TAG_ADDRESS:
        case GUMBO_TAG_ARTICLE:
        case GUMBO_TAG_ASIDE:
        case GUMBO_TAG_BLOCKQUOTE:
        case GUMBO_TAG_BODY:
        case GUMBO_TAG_CAPTION:
        case GUMBO_TAG_CENTER:
        case GUMBO_TAG_DD:
        case GUMBO_TAG_DETAILS:
        case GUMBO_TAG_DIR:
        case GUMBO_TAG_DIV:
        case GUMBO_TAG_DL:
        case GUMBO_TAG_DT:
        case GUMBO_TAG_FIELDSET:
        case GUMBO_TAG_FIGCAPTION:
        case GUMBO_TAG_FIGURE:
        case GUMBO_TAG_FOOTER:
        case GUMBO_TAG_FORM:
        case GUMBO_TAG_H1:
        case GUMBO_TAG_H2:
        case GUMBO_TAG_H3:
        case GUMBO_TAG_H4:
        case GUMBO_TAG_H5:
        case GUMBO_TAG_H6:
        case GUMBO_TAG_HEADER:
        case GUMBO_TAG_HGROUP:
        case GUMBO_TAG_HR:
        case GUMBO_TAG_LEGEND:
        case GUMBO_TAG_LI:
        case GUMBO_TAG_LISTING:
        case GUMBO_TAG_MAIN:
        case GUMBO_TAG_MENU:
        case GUMBO_TAG_NAV:
        case GUMBO_TAG_OL:
        case GUMBO_TAG_P:
        case GUMBO_TAG_PLAINTEXT:
        case GUMBO_TAG_PRE:
        case GUMBO_TAG_SECTION:
        case GUMBO_TAG_SUMMARY:
        case GUMBO_TAG_TABLE:
        case GUMBO_TAG_TBODY:
        case GUMBO_TAG_TEXTAREA:
        case GUMBO_TAG_TFOOT:
        case GUMBO_TAG_THEAD:
        case GUMBO_TAG_TR:
        case GUMBO_TAG_UL: return true;
        default: return false;
    }
}

bool keeps_whitespace(GumboTag tag) {
    return tag == GUMBO_TAG_PRE || tag == GUMBO_TAG_TEXTAREA || tag == GUMBO_TAG_LISTING ||
           tag == GUMBO_TAG_PLAINTEXT;
}

const GumboVector* children_of(const GumboNode* node) {
    if (node->type == GUMBO_NODE_DOCUMENT) return &node->v.document.children;
    if (node->type == GUMBO_NODE_ELEMENT || node->type == GUMBO_NODE_TEMPLATE) {
        return &node->v.element.children;
    }
    return nullptr;
}

bool is_text_node(const GumboNode* node) {
    return node->type == GUMBO_NODE_TEXT || node->type == GUMBO_NODE_WHITESPACE ||
           node->type == GUMBO_NODE_CDATA;
}

size_t code_point_end(std::string_view s, size_t i) {
    return next_char_boundary(s, i);
}

// Where decoded text (dec at i) and source (orig at j) line up again after the character
// reference starting at orig[j] == '&'. Returns false if no reading of the reference realigns
// them (then the caller stops mapping inside this node).
bool skip_reference(std::string_view dec, size_t i, std::string_view orig, size_t j, size_t& di,
                    size_t& dj) {
    auto aligned = [&](size_t a, size_t b) {
        if (a == dec.size()) return b == orig.size();
        if (b >= orig.size()) return false;
        return dec[a] == orig[b] || orig[b] == '&' || (orig[b] == '\r' && dec[a] == '\n');
    };
    // Candidate ends of the reference in orig, longest first.
    std::vector<size_t> ends;
    size_t k = j + 1;
    if (k < orig.size() && orig[k] == '#') {
        ++k;
        const bool hex = k < orig.size() && (orig[k] == 'x' || orig[k] == 'X');
        if (hex) ++k;
        const size_t digits = k;
        while (k < orig.size() && (hex ? std::isxdigit(static_cast<unsigned char>(orig[k]))
                                       : std::isdigit(static_cast<unsigned char>(orig[k])))) {
            ++k;
        }
        if (k > digits) ends.push_back(k < orig.size() && orig[k] == ';' ? k + 1 : k);
    } else {
        while (k < orig.size() && std::isalnum(static_cast<unsigned char>(orig[k]))) ++k;
        for (size_t e = k; e > j + 1; --e) {  // legacy references may match a prefix of the name
            ends.push_back(e < orig.size() && orig[e] == ';' ? e + 1 : e);
        }
    }
    for (const size_t e : ends) {
        size_t a = i;
        for (int n_cp = 0; n_cp < 2 && a < dec.size(); ++n_cp) {  // a reference is 1-2 code points
            a = code_point_end(dec, a);
            if (aligned(a, e)) {
                di = a;
                dj = e;
                return true;
            }
        }
    }
    if (dec[i] == '&') {  // not a reference after all: a literal '&'
        di = i + 1;
        dj = j + 1;
        return true;
    }
    return false;
}

// Builds the text and its anchors.
class TextBuilder {
 public:
    explicit TextBuilder(uint64_t source_base) : base_(source_base) {}

    void block_break() {
        pending_space_ = false;
        if (text_.empty()) return;
        size_t n_newlines = 0;
        while (n_newlines < 2 && n_newlines < text_.size() &&
               text_[text_.size() - 1 - n_newlines] == '\n') {
            ++n_newlines;
        }
        text_.append(2 - n_newlines, '\n');
    }

    void line_break() {
        pending_space_ = false;
        if (!text_.empty()) text_.push_back('\n');
    }

    void soft_space() { pending_space_ = true; }

    // A text node: decoded text, its original source and where that source starts.
    void add_node(std::string_view dec, std::string_view orig, uint64_t orig_offset, bool pre) {
        size_t i = 0, j = 0;
        bool synced = true;
        bool first = true;
        while (i < dec.size()) {
            std::optional<uint64_t> src;
            size_t take = 1;
            if (synced) {
                if (j < orig.size() && orig[j] == '&') {
                    size_t di = 0, dj = 0;
                    if (skip_reference(dec, i, orig, j, di, dj)) {
                        src = orig_offset + j;
                        take = di - i;
                        j = dj;
                    } else {
                        synced = false;
                    }
                } else if (j < orig.size() && dec[i] == orig[j]) {
                    src = orig_offset + j;
                    ++j;
                } else if (j < orig.size() && orig[j] == '\r') {  // gumbo turns CR LF into LF
                    if (dec[i] != '\n') {
                        ++j;
                        continue;
                    }
                    src = orig_offset + j;
                    j += j + 1 < orig.size() && orig[j + 1] == '\n' ? 2 : 1;
                } else if (j < orig.size() && is_html_space(orig[j])) {  // dropped by the parser
                    ++j;
                    continue;
                } else {
                    synced = false;
                }
            }
            if (!src && first) src = orig_offset + std::min<size_t>(j, orig.size());
            first = false;
            emit(dec.substr(i, take), src, pre);
            i += take;
        }
    }

    // Moves the text and anchors into doc.
    void finish(Document& doc) {
        doc.text = std::move(text_);
        doc.anchors = std::move(anchors_);
    }

 private:
    // Appends bytes whose first byte comes from source offset src (when known).
    void emit(std::string_view bytes, std::optional<uint64_t> src, bool pre) {
        for (const char c : bytes) {
            if (!pre && is_html_space(c)) {
                pending_space_ = true;
                src.reset();
                continue;
            }
            if (pending_space_) {
                pending_space_ = false;
                const char last = text_.empty() ? '\n' : text_.back();
                if (last != ' ' && last != '\n' && last != '\t') text_.push_back(' ');
            }
            if (src) anchor(base_ + *src);
            src.reset();
            text_.push_back(c);
        }
    }

    // Records that the next text byte comes from source byte s, if the current delta disagrees.
    void anchor(uint64_t s) {
        const uint64_t t = text_.size();
        if (!anchors_.empty()) {
            const auto& a = anchors_.back();
            if (a.second + (t - a.first) == s) return;
            if (a.first == t) {
                anchors_.back().second = s;
                return;
            }
        }
        anchors_.emplace_back(t, s);
    }

    uint64_t base_;
    std::string text_;
    std::vector<std::pair<uint64_t, uint64_t>> anchors_;
    bool pending_space_ = false;
};

std::string collapse_space(std::string_view s) {
    std::string out;
    bool space = false;
    for (const char c : s) {
        if (is_html_space(c)) {
            space = !out.empty();
            continue;
        }
        if (space) out.push_back(' ');
        space = false;
        out.push_back(c);
    }
    return out;
}

std::string find_title(const GumboNode* root) {
    std::vector<const GumboNode*> stack{root};
    while (!stack.empty()) {
        const GumboNode* node = stack.back();
        stack.pop_back();
        if (node->type == GUMBO_NODE_ELEMENT && node->v.element.tag == GUMBO_TAG_TITLE) {
            std::string raw;
            const GumboVector& kids = node->v.element.children;
            for (unsigned i = 0; i < kids.length; ++i) {
                const auto* kid = static_cast<const GumboNode*>(kids.data[i]);
                if (is_text_node(kid)) raw += kid->v.text.text;
            }
            return collapse_space(raw);
        }
        if (const GumboVector* kids = children_of(node)) {
            for (unsigned i = kids->length; i > 0; --i) {
                stack.push_back(static_cast<const GumboNode*>(kids->data[i - 1]));
            }
        }
    }
    return "";
}

struct OutputDeleter {
    const GumboOptions* options;
    void operator()(GumboOutput* out) const { gumbo_destroy_output(options, out); }
};

}  // namespace

Result<Document> read_html(std::string_view bytes, const std::string& name) {
    if (bytes.size() > UINT32_MAX) {  // gumbo's source positions are unsigned int
        return make_error(Errc::OutOfRange, name + ": HTML larger than 4 GiB");
    }
    const size_t bom = bytes.substr(0, 3) == "\xEF\xBB\xBF" ? 3 : 0;
    const std::string_view html = bytes.substr(bom);
    GumboOptions options = kGumboDefaultOptions;
    options.max_errors = 0;  // parse errors are not reported; do not keep them
    std::unique_ptr<GumboOutput, OutputDeleter> out(
        gumbo_parse_with_options(&options, html.data(), html.size()), OutputDeleter{&options});
    if (!out) return make_error(Errc::Internal, name + ": gumbo failed to parse the HTML");

    Document doc;
    doc.format = Format::Html;
    doc.source_bytes = bytes.size();
    doc.title = find_title(out->document);

    TextBuilder builder(bom);
    // Depth-first walk with an explicit stack (deeply nested markup must not overflow ours).
    struct Item {
        const GumboNode* node;
        bool leaving;
    };
    std::vector<Item> stack{{out->document, false}};
    int pre_depth = 0;
    while (!stack.empty()) {
        const Item item = stack.back();
        stack.pop_back();
        const GumboNode* node = item.node;
        if (is_text_node(node)) {
            const GumboText& t = node->v.text;
            builder.add_node(t.text, std::string_view(t.original_text.data, t.original_text.length),
                             t.start_pos.offset, pre_depth > 0);
            continue;
        }
        if (node->type != GUMBO_NODE_ELEMENT && node->type != GUMBO_NODE_DOCUMENT &&
            node->type != GUMBO_NODE_TEMPLATE) {
            continue;  // comments
        }
        const GumboTag tag =
            node->type == GUMBO_NODE_DOCUMENT ? GUMBO_TAG_UNKNOWN : node->v.element.tag;
        if (node->type == GUMBO_NODE_TEMPLATE || is_skipped(tag)) continue;
        if (item.leaving) {
            if (keeps_whitespace(tag)) --pre_depth;
            if (is_block(tag)) builder.block_break();
            if (tag == GUMBO_TAG_TD || tag == GUMBO_TAG_TH) builder.soft_space();
            continue;
        }
        if (tag == GUMBO_TAG_BR) builder.line_break();
        if (is_block(tag)) builder.block_break();
        if (tag == GUMBO_TAG_TD || tag == GUMBO_TAG_TH || tag == GUMBO_TAG_IMG)
            builder.soft_space();
        if (keeps_whitespace(tag)) ++pre_depth;
        stack.push_back({node, true});
        const GumboVector* kids = children_of(node);
        for (unsigned i = kids->length; i > 0; --i) {
            stack.push_back({static_cast<const GumboNode*>(kids->data[i - 1]), false});
        }
    }
    builder.finish(doc);
    // Block breaks at the very end are noise.
    while (!doc.text.empty() && doc.text.back() == '\n') doc.text.pop_back();
    while (!doc.anchors.empty() && doc.anchors.back().first >= doc.text.size() &&
           doc.anchors.size() > 1) {
        doc.anchors.pop_back();
    }
    if (doc.anchors.empty()) doc.anchors.emplace_back(0, bom);
    return doc;
}

}  // namespace attnrag::text::detail
