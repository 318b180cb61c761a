// Store: the passage KV catalogue (table passage_kv, schema v3), one row per file on disk.
#include <charconv>
#include <cstdio>
#include <limits>

#include "attnrag/store.hpp"
#include "store/store_impl.h"

namespace attnrag {

namespace {

using detail::Db;
using detail::Stmt;

constexpr uint64_t kMaxI64 = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());

std::string hex16(uint64_t v) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
    return buf;
}

// The schema's CHECKs admit only 16 lowercase hex digits, so a failure means a foreign writer.
Result<uint64_t> parse_hex16(const std::string& s, const char* column) {
    uint64_t v = 0;
    const char* end = s.data() + s.size();
    auto [p, ec] = std::from_chars(s.data(), end, v, 16);
    if (s.size() != 16 || ec != std::errc{} || p != end)
        return make_error(Errc::Corrupt, std::string("passage_kv: bad ") + column + " '" + s + "'");
    return v;
}

constexpr const char* kRowColumns =
    "model, prefix_hash, passage_hash, n_tokens, file_type, file, n_bytes, created_at, last_used";

Result<PassageKvRow> read_row(const Stmt& st) {
    PassageKvRow r;
    r.model = st.column_text(0);
    auto prefix = parse_hex16(st.column_text(1), "prefix_hash");
    if (!prefix) return prefix.error();
    auto passage = parse_hex16(st.column_text(2), "passage_hash");
    if (!passage) return passage.error();
    r.prefix_hash = *prefix;
    r.passage_hash = *passage;
    r.n_tokens = st.column_int(3);
    r.file_type = static_cast<int>(st.column_int(4));
    r.file = st.column_text(5);
    r.n_bytes = static_cast<uint64_t>(st.column_int(6));
    r.created_at = st.column_int(7);
    r.last_used = st.column_int(8);
    return r;
}

std::string key_text(std::string_view model, uint64_t prefix_hash, uint64_t passage_hash) {
    return std::string(model) + "/" + hex16(prefix_hash) + "-" + hex16(passage_hash);
}

// Runs a one-key statement (?1 model, ?2 prefix, ?3 passage) and returns whether it changed a row.
Result<bool> run_on_key(Db& db, const char* sql, std::string_view model, uint64_t prefix_hash,
                        uint64_t passage_hash, const std::string& op) {
    auto st = db.prepare(sql, op);
    if (!st) return st.error();
    st->bind_text(1, model).bind_text(2, hex16(prefix_hash)).bind_text(3, hex16(passage_hash));
    ATTNRAG_TRY(st->run());
    return sqlite3_changes(db.handle()) > 0;
}

}  // namespace

Status Store::put_passage_kv(const PassageKvRow& row) {
    const std::string op =
        "put_passage_kv " + key_text(row.model, row.prefix_hash, row.passage_hash);
    auto bad = [&](const char* why) { return make_error(Errc::InvalidArgument, op + ": " + why); };
    if (row.model.empty()) return bad("empty model");
    if (row.file.empty()) return bad("empty file name");
    if (row.n_tokens <= 0) return bad("n_tokens must be positive");
    if (row.n_bytes > kMaxI64) return bad("n_bytes out of range");
    auto st = impl_->db.prepare(
        "INSERT INTO passage_kv(model, prefix_hash, passage_hash, n_tokens, file_type, file, "
        "n_bytes, created_at, last_used) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8) "
        "ON CONFLICT(model, prefix_hash, passage_hash) DO UPDATE SET "
        "n_tokens = excluded.n_tokens, file_type = excluded.file_type, file = excluded.file, "
        "n_bytes = excluded.n_bytes, created_at = excluded.created_at, "
        "last_used = excluded.last_used",
        op);
    if (!st) return st.error();
    st->bind_text(1, row.model)
        .bind_text(2, hex16(row.prefix_hash))
        .bind_text(3, hex16(row.passage_hash))
        .bind_int(4, row.n_tokens)
        .bind_int(5, row.file_type)
        .bind_text(6, row.file)
        .bind_int(7, static_cast<int64_t>(row.n_bytes))
        .bind_int(8, detail::now_ms());
    return st->run();
}

Result<std::optional<PassageKvRow>> Store::find_passage_kv(std::string_view model,
                                                           uint64_t prefix_hash,
                                                           uint64_t passage_hash) {
    const std::string op = "find_passage_kv " + key_text(model, prefix_hash, passage_hash);
    auto st = impl_->db.prepare(std::string("SELECT ") + kRowColumns +
                                    " FROM passage_kv WHERE model = ?1 AND prefix_hash = ?2 AND "
                                    "passage_hash = ?3",
                                op);
    if (!st) return st.error();
    st->bind_text(1, model).bind_text(2, hex16(prefix_hash)).bind_text(3, hex16(passage_hash));
    auto has_row = st->step();
    if (!has_row) return has_row.error();
    if (!*has_row) return std::optional<PassageKvRow>{};
    auto row = read_row(*st);
    if (!row) return row.error();
    return std::optional<PassageKvRow>{std::move(row).value()};
}

Result<bool> Store::touch_passage_kv(std::string_view model, uint64_t prefix_hash,
                                     uint64_t passage_hash) {
    const std::string op = "touch_passage_kv " + key_text(model, prefix_hash, passage_hash);
    auto st = impl_->db.prepare(
        "UPDATE passage_kv SET last_used = ?4 "
        "WHERE model = ?1 AND prefix_hash = ?2 AND passage_hash = ?3",
        op);
    if (!st) return st.error();
    st->bind_text(1, model)
        .bind_text(2, hex16(prefix_hash))
        .bind_text(3, hex16(passage_hash))
        .bind_int(4, detail::now_ms());
    ATTNRAG_TRY(st->run());
    return sqlite3_changes(impl_->db.handle()) > 0;
}

Result<bool> Store::delete_passage_kv(std::string_view model, uint64_t prefix_hash,
                                      uint64_t passage_hash) {
    return run_on_key(impl_->db,
                      "DELETE FROM passage_kv "
                      "WHERE model = ?1 AND prefix_hash = ?2 AND passage_hash = ?3",
                      model, prefix_hash, passage_hash,
                      "delete_passage_kv " + key_text(model, prefix_hash, passage_hash));
}

Result<std::vector<PassageKvRow>> Store::list_passage_kv(std::string_view model) {
    const std::string op = "list_passage_kv";
    auto st = impl_->db.prepare(std::string("SELECT ") + kRowColumns +
                                    " FROM passage_kv WHERE ?1 = '' OR model = ?1 "
                                    "ORDER BY last_used, model, prefix_hash, passage_hash",
                                op);
    if (!st) return st.error();
    st->bind_text(1, model);
    std::vector<PassageKvRow> rows;
    for (;;) {
        auto has_row = st->step();
        if (!has_row) return has_row.error();
        if (!*has_row) return rows;
        auto row = read_row(*st);
        if (!row) return row.error();
        rows.push_back(std::move(row).value());
    }
}

}  // namespace attnrag
