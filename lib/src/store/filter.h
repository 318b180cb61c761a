// Filter -> SQL: a WHERE fragment over documents' ids and metadata, with its parameters.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "attnrag/result.hpp"
#include "attnrag/store.hpp"
#include "store/sqlite_db.h"

namespace attnrag::detail {

struct FilterSql {
    std::string where;                                // "" or " AND ... AND ..."
    std::vector<std::pair<int, std::string>> params;  // (1-based parameter number, text)
    bool uses_metadata = false;  // the fragment reads metadata_expr (callers may need a join)
};

// Parameters are numbered from first_param; the SQL text depends only on the filter's shape
// (ids or not, number of metadata pairs), so the statement cache stays small. Errors:
// InvalidArgument for a plain key holding '"'.
Result<FilterSql> filter_sql(const Filter& filter, std::string_view document_id_expr,
                             std::string_view metadata_expr, int first_param);

void bind_filter(Stmt& st, const FilterSql& fs);

}  // namespace attnrag::detail
