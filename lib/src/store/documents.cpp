// Store: documents and their chunks (put with dedupe/replace, get, list, delete).
#include <cmath>
#include <functional>
#include <limits>
#include <unordered_map>

#include "attnrag/store.hpp"
#include "store/filter.h"
#include "store/store_impl.h"
#include "store/vector_blob.h"

namespace attnrag {

namespace {

using detail::Db;
using detail::Stmt;

constexpr uint64_t kMaxI64 = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());

bool is_hex(std::string_view s) {
    for (char c : s)
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return false;
    return !s.empty();
}

// Checks the caller's input before any write. Duplicate ordinals are left to the UNIQUE
// constraint (they fail the insert and roll the whole put back).
Status validate(Db& db, const DocumentInput& doc, const std::string& op) {
    auto bad = [&](const std::string& why) {
        return make_error(Errc::InvalidArgument, op + ": " + why);
    };
    if (doc.source.empty()) return bad("empty source");
    if (!is_hex(doc.content_hash)) return bad("content_hash '" + doc.content_hash + "' is not hex");
    if (doc.n_bytes > kMaxI64) return bad("n_bytes out of range");
    // SQLite's own JSON parser decides, so whatever passes here also works in metadata filters.
    auto st = db.prepare("SELECT CASE WHEN json_valid(?1) THEN json_type(?1) ELSE '' END", op);
    if (!st) return st.error();
    st->bind_text(1, doc.metadata_json);
    auto row = st->step();
    if (!row) return row.error();
    if (st->column_text(0) != "object") return bad("metadata_json is not a JSON object");

    size_t dim = 0;
    for (const ChunkInput& c : doc.chunks) {
        const std::string at = "chunk ordinal " + std::to_string(c.ordinal) + ": ";
        if (c.begin > c.end || c.end > kMaxI64) return bad(at + "bad byte range");
        if (c.source_begin > c.source_end || c.source_end > kMaxI64)
            return bad(at + "bad source byte range");
        if (c.embedding.empty()) continue;
        if (dim == 0) dim = c.embedding.size();
        if (c.embedding.size() != dim)
            return bad(at + "embedding dim " + std::to_string(c.embedding.size()) +
                       " != " + std::to_string(dim) + " of the document's other chunks");
        for (float x : c.embedding)
            if (!std::isfinite(x)) return bad(at + "embedding holds a non-finite value");
    }
    return {};
}

Result<std::vector<int64_t>> chunk_ids_of(Db& db, int64_t document_id, const std::string& op) {
    auto st = db.prepare("SELECT id FROM chunks WHERE document_id = ?1 ORDER BY ordinal", op);
    if (!st) return st.error();
    st->bind_int(1, document_id);
    std::vector<int64_t> ids;
    for (;;) {
        auto row = st->step();
        if (!row) return row.error();
        if (!*row) break;
        ids.push_back(st->column_int(0));
    }
    return ids;
}

Result<std::optional<DocumentRow>> one_document(Db& db, const std::string& sql,
                                                const std::string& op,
                                                const std::function<void(Stmt&)>& bind) {
    auto st = db.prepare(sql, op);
    if (!st) return st.error();
    bind(*st);
    auto row = st->step();
    if (!row) return row.error();
    if (!*row) return std::optional<DocumentRow>{};
    return std::optional<DocumentRow>{detail::read_document(*st)};
}

}  // namespace

Result<PutResult> Store::put_document(const DocumentInput& doc) {
    Db& db = impl_->db;
    const std::string op = "put_document " + doc.source;
    ATTNRAG_TRY(validate(db, doc, op));

    detail::Transaction tx(db);
    ATTNRAG_TRY(tx.begin(op));
    PutResult res;
    const int64_t now = detail::now_ms();
    const auto n_chunks = static_cast<int64_t>(doc.chunks.size());

    std::optional<std::pair<int64_t, std::string>> existing;
    {
        auto st =
            db.prepare("SELECT id, content_hash FROM documents WHERE source = ?1", op + ": find");
        if (!st) return st.error();
        st->bind_text(1, doc.source);
        auto row = st->step();
        if (!row) return row.error();
        if (*row) existing.emplace(st->column_int(0), st->column_text(1));
    }

    if (existing && existing->second == doc.content_hash) {
        // Nothing to write; the destructor ends the (empty) transaction.
        res.outcome = PutOutcome::Unchanged;
        res.document_id = existing->first;
        return res;
    }

    if (existing) {
        res.outcome = PutOutcome::Replaced;
        res.document_id = existing->first;
        auto old = chunk_ids_of(db, res.document_id, op + ": list old chunks");
        if (!old) return old.error();
        res.removed_chunk_ids = std::move(*old);
        // Triggers drop the FTS rows; vectors and other chunk dependants cascade.
        auto del =
            db.prepare("DELETE FROM chunks WHERE document_id = ?1", op + ": delete old chunks");
        if (!del) return del.error();
        del->bind_int(1, res.document_id);
        ATTNRAG_TRY(del->run());
    } else {
        res.outcome = PutOutcome::Added;
    }
    // One upsert for both cases: a replaced document keeps its id and created_at.
    auto up = db.prepare(
        "INSERT INTO documents(source, title, content_hash, metadata, format, n_bytes, "
        "n_chunks, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8) "
        "ON CONFLICT(source) DO UPDATE SET title = excluded.title, "
        "content_hash = excluded.content_hash, metadata = excluded.metadata, "
        "format = excluded.format, n_bytes = excluded.n_bytes, n_chunks = excluded.n_chunks, "
        "updated_at = excluded.updated_at RETURNING id",
        op + ": write document");
    if (!up) return up.error();
    up->bind_text(1, doc.source)
        .bind_text(2, doc.title)
        .bind_text(3, doc.content_hash)
        .bind_text(4, doc.metadata_json)
        .bind_text(5, doc.format)
        .bind_int(6, static_cast<int64_t>(doc.n_bytes))
        .bind_int(7, n_chunks)
        .bind_int(8, now);
    auto row = up->step();
    if (!row) return row.error();
    if (!*row) return make_error(Errc::Internal, op + ": write document returned no id");
    res.document_id = up->column_int(0);
    ATTNRAG_TRY(up->run());  // finish the statement

    int64_t dim = 0;
    res.chunk_ids.reserve(doc.chunks.size());
    for (const ChunkInput& c : doc.chunks) {
        const std::string at = op + ": insert chunk ordinal " + std::to_string(c.ordinal);
        auto ins = db.prepare(
            "INSERT INTO chunks(document_id, ordinal, byte_begin, byte_end, source_begin, "
            "source_end, n_tokens, text) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            at);
        if (!ins) return ins.error();
        ins->bind_int(1, res.document_id)
            .bind_int(2, c.ordinal)
            .bind_int(3, static_cast<int64_t>(c.begin))
            .bind_int(4, static_cast<int64_t>(c.end))
            .bind_int(5, static_cast<int64_t>(c.source_begin))
            .bind_int(6, static_cast<int64_t>(c.source_end))
            .bind_int(7, c.n_tokens)
            .bind_text(8, c.text);
        ATTNRAG_TRY(ins->run());
        // The FTS trigger's insert does not change last_insert_rowid once the trigger is done.
        const int64_t chunk_id = sqlite3_last_insert_rowid(db.handle());
        res.chunk_ids.push_back(chunk_id);
        if (!c.embedding.empty()) {
            dim = static_cast<int64_t>(c.embedding.size());
            ATTNRAG_TRY(detail::upsert_vector(db, chunk_id, c.embedding, at + ": vector"));
        }
    }
    if (dim != 0) ATTNRAG_TRY(detail::check_vector_dim(db, dim, op));
    ATTNRAG_TRY(tx.commit(op));
    return res;
}

Result<std::optional<DocumentRow>> Store::find_document(std::string_view source) {
    return one_document(
        impl_->db,
        "SELECT " + std::string(detail::kDocumentColumns) + " FROM documents WHERE source = ?1",
        "find_document " + std::string(source), [&](Stmt& st) { st.bind_text(1, source); });
}

Result<std::optional<DocumentRow>> Store::get_document(int64_t id) {
    return one_document(
        impl_->db,
        "SELECT " + std::string(detail::kDocumentColumns) + " FROM documents WHERE id = ?1",
        "get_document " + std::to_string(id), [&](Stmt& st) { st.bind_int(1, id); });
}

Result<std::vector<DocumentRow>> Store::list_documents(const Filter& filter) {
    auto fs = detail::filter_sql(filter, "id", "metadata", 1);
    if (!fs) return fs.error();
    const std::string sql = "SELECT " + std::string(detail::kDocumentColumns) +
                            " FROM documents WHERE 1" + fs->where + " ORDER BY id";
    auto st = impl_->db.prepare(sql, "list_documents");
    if (!st) return st.error();
    detail::bind_filter(*st, *fs);
    std::vector<DocumentRow> docs;
    for (;;) {
        auto row = st->step();
        if (!row) return row.error();
        if (!*row) break;
        docs.push_back(detail::read_document(*st));
    }
    return docs;
}

Result<std::optional<std::vector<int64_t>>> Store::delete_document(int64_t id) {
    Db& db = impl_->db;
    const std::string op = "delete_document " + std::to_string(id);
    detail::Transaction tx(db);
    ATTNRAG_TRY(tx.begin(op));
    auto removed = chunk_ids_of(db, id, op + ": list chunks");
    if (!removed) return removed.error();
    auto del = db.prepare("DELETE FROM documents WHERE id = ?1", op);
    if (!del) return del.error();
    del->bind_int(1, id);
    ATTNRAG_TRY(del->run());
    // Counts the documents row only; chunks, FTS rows and vectors go by cascade and triggers.
    if (sqlite3_changes(db.handle()) == 0) return std::optional<std::vector<int64_t>>{};
    ATTNRAG_TRY(tx.commit(op));
    return std::optional<std::vector<int64_t>>{std::move(*removed)};
}

Result<std::optional<ChunkRow>> Store::get_chunk(int64_t id) {
    const std::string op = "get_chunk " + std::to_string(id);
    auto st = impl_->db.prepare(
        "SELECT " + std::string(detail::kChunkColumns) + " FROM chunks WHERE id = ?1", op);
    if (!st) return st.error();
    st->bind_int(1, id);
    auto row = st->step();
    if (!row) return row.error();
    if (!*row) return std::optional<ChunkRow>{};
    return std::optional<ChunkRow>{detail::read_chunk(*st)};
}

Result<std::vector<ChunkRow>> Store::get_chunks(std::span<const int64_t> ids) {
    std::vector<ChunkRow> out;
    if (ids.empty()) return out;
    std::string list = "[";
    for (size_t i = 0; i < ids.size(); ++i) {
        if (i) list += ',';
        list += std::to_string(ids[i]);
    }
    list += ']';
    auto st = impl_->db.prepare("SELECT " + std::string(detail::kChunkColumns) +
                                    " FROM chunks WHERE id IN (SELECT value FROM json_each(?1))",
                                "get_chunks");
    if (!st) return st.error();
    st->bind_text(1, list);
    std::unordered_map<int64_t, ChunkRow> by_id;
    for (;;) {
        auto row = st->step();
        if (!row) return row.error();
        if (!*row) break;
        ChunkRow c = detail::read_chunk(*st);
        by_id.emplace(c.id, std::move(c));
    }
    out.reserve(by_id.size());
    for (int64_t id : ids) {
        auto it = by_id.find(id);
        if (it != by_id.end()) out.push_back(it->second);
    }
    return out;
}

Result<std::vector<ChunkRow>> Store::chunks_of(int64_t document_id) {
    auto st = impl_->db.prepare("SELECT " + std::string(detail::kChunkColumns) +
                                    " FROM chunks WHERE document_id = ?1 ORDER BY ordinal",
                                "chunks_of " + std::to_string(document_id));
    if (!st) return st.error();
    st->bind_int(1, document_id);
    std::vector<ChunkRow> out;
    for (;;) {
        auto row = st->step();
        if (!row) return row.error();
        if (!*row) break;
        out.push_back(detail::read_chunk(*st));
    }
    return out;
}

}  // namespace attnrag
