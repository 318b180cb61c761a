// Filter -> SQL: a WHERE fragment over documents' ids and metadata, with its parameters.
#include "store/filter.h"

namespace attnrag::detail {

namespace {

bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

// SQLite's path grammar: '$' then any of .label ."quoted label" [N] [#] [#-N]. SQLite parses a
// path lazily (only as far as the document goes), so a bad path could pass unnoticed on some
// documents and fail on others; check it whole up front.
bool is_json_path(std::string_view p) {
    if (p.empty() || p[0] != '$') return false;
    size_t i = 1;
    while (i < p.size()) {
        if (p[i] == '.') {
            ++i;
            if (i < p.size() && p[i] == '"') {
                size_t close = p.find('"', i + 1);
                if (close == std::string_view::npos) return false;
                i = close + 1;
            } else {
                size_t j = i;
                while (j < p.size() && p[j] != '.' && p[j] != '[') ++j;
                if (j == i) return false;
                i = j;
            }
        } else if (p[i] == '[') {
            ++i;
            if (i < p.size() && p[i] == '#') {
                ++i;
                if (i < p.size() && p[i] == '-') {
                    ++i;
                    if (i >= p.size() || !is_digit(p[i])) return false;
                    while (i < p.size() && is_digit(p[i])) ++i;
                }
            } else {
                if (i >= p.size() || !is_digit(p[i])) return false;
                while (i < p.size() && is_digit(p[i])) ++i;
            }
            if (i >= p.size() || p[i] != ']') return false;
            ++i;
        } else {
            return false;
        }
    }
    return true;
}

}  // namespace

Result<FilterSql> filter_sql(const Filter& filter, std::string_view document_id_expr,
                             std::string_view metadata_expr, int first_param) {
    FilterSql fs;
    int n = first_param;
    if (!filter.document_ids.empty()) {
        // One JSON array parameter instead of a variable-length IN list: one cached statement.
        std::string ids = "[";
        for (size_t i = 0; i < filter.document_ids.size(); ++i) {
            if (i) ids += ',';
            ids += std::to_string(filter.document_ids[i]);
        }
        ids += ']';
        fs.where += " AND " + std::string(document_id_expr) + " IN (SELECT value FROM json_each(?" +
                    std::to_string(n) + "))";
        fs.params.emplace_back(n++, std::move(ids));
    }
    for (const auto& [key, value] : filter.metadata_equals) {
        std::string path;
        if (!key.empty() && key[0] == '$') {
            if (!is_json_path(key))
                return make_error(Errc::InvalidArgument,
                                  "metadata filter: '" + key + "' is not a JSON path");
            path = key;
        } else {
            if (key.find('"') != std::string::npos)
                return make_error(Errc::InvalidArgument,
                                  "metadata filter: key '" + key +
                                      "' holds '\"'; give a JSON path starting with '$' instead");
            path = "$.\"" + key + "\"";
        }
        // Built with append: GCC 12 warns falsely (-Wrestrict) on "literal" + std::string&&.
        std::string p = "?";
        p += std::to_string(n);
        std::string v = "?";
        v += std::to_string(n + 1);
        const std::string m(metadata_expr);
        // json_extract renders true/false as 1/0; json_type tells them apart from numbers.
        fs.where += " AND (CASE json_type(" + m + ", " + p + ") WHEN 'true' THEN 'true'" +
                    " WHEN 'false' THEN 'false' ELSE CAST(json_extract(" + m + ", " + p +
                    ") AS TEXT) END) = " + v;
        fs.params.emplace_back(n, std::move(path));
        fs.params.emplace_back(n + 1, value);
        n += 2;
        fs.uses_metadata = true;
    }
    return fs;
}

void bind_filter(Stmt& st, const FilterSql& fs) {
    for (const auto& [idx, text] : fs.params) st.bind_text(idx, text);
}

}  // namespace attnrag::detail
