// Store: BM25 search over chunk text (FTS5) with document filters applied in SQL.
#include "attnrag/store.hpp"
#include "store/filter.h"
#include "store/fts_query.h"
#include "store/store_impl.h"

namespace attnrag {

Result<std::vector<Bm25Hit>> Store::search_bm25(std::string_view query, int k,
                                                const Filter& filter) {
    std::vector<Bm25Hit> hits;
    const std::string match = detail::fts5_or_query(query);
    if (k <= 0 || match.empty()) return hits;
    auto fs = detail::filter_sql(filter, "c.document_id", "d.metadata", 3);
    if (!fs) return fs.error();
    // FTS5's bm25() is lower-is-better (k1 = 1.2, b = 0.75); ties broken by chunk id so results
    // are deterministic.
    std::string sql =
        "SELECT c.id, bm25(chunks_fts) AS s FROM chunks_fts JOIN chunks c ON c.id = "
        "chunks_fts.rowid";
    if (fs->uses_metadata) sql += " JOIN documents d ON d.id = c.document_id";
    sql += " WHERE chunks_fts MATCH ?1" + fs->where + " ORDER BY s, c.id LIMIT ?2";
    auto st = impl_->db.prepare(sql, "search_bm25");
    if (!st) return st.error();
    st->bind_text(1, match).bind_int(2, k);
    detail::bind_filter(*st, *fs);
    for (;;) {
        auto row = st->step();
        if (!row) return row.error();
        if (!*row) break;
        hits.push_back({st->column_int(0), -st->column_double(1)});
    }
    return hits;
}

}  // namespace attnrag
