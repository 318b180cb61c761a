// One sqlite3 connection: cached prepared statements, transactions, SQLite errors as Error values.
#include "store/sqlite_db.h"

#include <utility>

namespace attnrag::detail {

Error sqlite_error(sqlite3* db, int rc, std::string_view op) {
    std::string what = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    // sqlite3_errmsg describes the connection's last error; when rc came from elsewhere (a bind
    // checked later, a stale message) fall back to the code's own text.
    if (db && (sqlite3_extended_errcode(db) & 0xff) != (rc & 0xff)) what = sqlite3_errstr(rc);
    std::string msg = std::string(op) + ": " + what;
    switch (rc & 0xff) {
        case SQLITE_FULL:
            return make_error(Errc::Io, std::string(op) + ": disk full (" + what + ")");
        case SQLITE_IOERR:
        case SQLITE_CANTOPEN:
        case SQLITE_READONLY:
        case SQLITE_PERM:
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
        case SQLITE_PROTOCOL: return make_error(Errc::Io, std::move(msg));
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB: return make_error(Errc::Corrupt, std::move(msg));
        case SQLITE_NOMEM: return make_error(Errc::OutOfMemory, std::move(msg));
        case SQLITE_CONSTRAINT:
            return make_error(
                rc == SQLITE_CONSTRAINT_FOREIGNKEY ? Errc::NotFound : Errc::InvalidArgument,
                std::move(msg));
        case SQLITE_TOOBIG:
        case SQLITE_RANGE:
        case SQLITE_MISMATCH: return make_error(Errc::InvalidArgument, std::move(msg));
        case SQLITE_INTERRUPT: return make_error(Errc::Cancelled, std::move(msg));
        default: break;
    }
    // User-supplied JSON paths and documents reach SQL through the metadata filter.
    if (what.find("JSON path") != std::string::npos ||
        what.find("malformed JSON") != std::string::npos)
        return make_error(Errc::InvalidArgument, std::move(msg));
    return make_error(Errc::Internal, std::move(msg));
}

// ---- Stmt ----

Stmt::Stmt(sqlite3* db, sqlite3_stmt* stmt, bool* in_use, std::string_view op)
    : db_(db), stmt_(stmt), in_use_(in_use), op_(op) {}

Stmt::Stmt(Stmt&& other) noexcept
    : db_(other.db_),
      stmt_(std::exchange(other.stmt_, nullptr)),
      in_use_(std::exchange(other.in_use_, nullptr)),
      op_(std::move(other.op_)),
      bind_rc_(other.bind_rc_),
      bind_msg_(std::move(other.bind_msg_)) {}

Stmt::~Stmt() {
    if (!stmt_) return;
    if (in_use_) {
        sqlite3_reset(stmt_);
        sqlite3_clear_bindings(stmt_);
        *in_use_ = false;
    } else {
        sqlite3_finalize(stmt_);
    }
}

void Stmt::note_bind(int rc) {
    if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) {
        bind_rc_ = rc;
        bind_msg_ = sqlite3_errmsg(db_);
    }
}

Stmt& Stmt::bind_int(int idx, int64_t v) {
    note_bind(sqlite3_bind_int64(stmt_, idx, static_cast<sqlite3_int64>(v)));
    return *this;
}

Stmt& Stmt::bind_text(int idx, std::string_view v) {
    // A default string_view has a null data(), which SQLite would bind as NULL, not ''.
    const char* p = v.data() != nullptr ? v.data() : "";
    note_bind(sqlite3_bind_text64(stmt_, idx, p, v.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
    return *this;
}

Stmt& Stmt::bind_blob(int idx, std::span<const std::byte> v) {
    // A zero-length blob must still be a blob, not NULL: pass a valid pointer.
    static const std::byte kEmpty{};
    const void* p = v.empty() ? static_cast<const void*>(&kEmpty) : v.data();
    note_bind(sqlite3_bind_blob64(stmt_, idx, p, v.size(), SQLITE_TRANSIENT));
    return *this;
}

Stmt& Stmt::bind_null(int idx) {
    note_bind(sqlite3_bind_null(stmt_, idx));
    return *this;
}

Result<bool> Stmt::step() {
    if (bind_rc_ != SQLITE_OK)
        return make_error(sqlite_error(nullptr, bind_rc_, op_).code, op_ + ": bind: " + bind_msg_);
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return sqlite_error(db_, rc, op_);
}

Status Stmt::run() {
    for (;;) {
        auto r = step();
        if (!r) return r.error();
        if (!*r) return {};
    }
}

std::string Stmt::column_text(int i) const {
    const auto* p = sqlite3_column_text(stmt_, i);
    int n = sqlite3_column_bytes(stmt_, i);
    if (!p) return {};
    return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
}

std::span<const std::byte> Stmt::column_blob(int i) const {
    const void* p = sqlite3_column_blob(stmt_, i);
    int n = sqlite3_column_bytes(stmt_, i);
    if (!p || n <= 0) return {};
    return {static_cast<const std::byte*>(p), static_cast<size_t>(n)};
}

// ---- Db ----

Db::~Db() {
    for (auto& [sql, c] : cache_) sqlite3_finalize(c.stmt);
    if (db_) sqlite3_close_v2(db_);
}

Status Db::open(const std::string& filename, int flags) {
    int rc = sqlite3_open_v2(filename.c_str(), &db_, flags, nullptr);
    if (rc != SQLITE_OK) {
        Error e = sqlite_error(db_, rc, "open " + filename);
        sqlite3_close_v2(db_);
        db_ = nullptr;
        return e;
    }
    sqlite3_extended_result_codes(db_, 1);
    return {};
}

Result<Stmt> Db::prepare(std::string_view sql, std::string_view op) {
    auto [it, inserted] = cache_.try_emplace(std::string(sql));
    Cached& slot = it->second;
    if (!slot.stmt) {
        int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                    SQLITE_PREPARE_PERSISTENT, &slot.stmt, nullptr);
        if (rc != SQLITE_OK) {
            Error e = sqlite_error(db_, rc, std::string(op) + ": prepare");
            sqlite3_finalize(slot.stmt);
            cache_.erase(it);
            return e;
        }
    }
    if (!slot.in_use) {
        slot.in_use = true;
        return Stmt(db_, slot.stmt, &slot.in_use, op);
    }
    // The cached statement is being stepped (re-entrant use): hand out a private one.
    sqlite3_stmt* own = nullptr;
    int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &own, nullptr);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(own);
        return sqlite_error(db_, rc, std::string(op) + ": prepare");
    }
    return Stmt(db_, own, nullptr, op);
}

Status Db::exec(const std::string& sql, std::string_view op) {
    int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return sqlite_error(db_, rc, op);
    return {};
}

Result<std::string> Db::query_text(const std::string& sql, std::string_view op) {
    auto st = prepare(sql, op);
    if (!st) return st.error();
    auto row = st->step();
    if (!row) return row.error();
    return *row ? st->column_text(0) : std::string{};
}

Result<int64_t> Db::query_int(const std::string& sql, std::string_view op) {
    auto st = prepare(sql, op);
    if (!st) return st.error();
    auto row = st->step();
    if (!row) return row.error();
    return *row ? st->column_int(0) : int64_t{0};
}

// ---- Transaction ----

Transaction::~Transaction() {
    // Some errors (SQLITE_FULL, IOERR, NOMEM) roll the transaction back by themselves; a second
    // ROLLBACK would then fail, so only roll back what is still open.
    if (active_ && !sqlite3_get_autocommit(db_.handle()))
        sqlite3_exec(db_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
}

Status Transaction::begin(std::string_view op) {
    ATTNRAG_TRY(db_.exec("BEGIN IMMEDIATE", std::string(op) + ": begin transaction"));
    active_ = true;
    return {};
}

Status Transaction::commit(std::string_view op) {
    ATTNRAG_TRY(db_.exec("COMMIT", std::string(op) + ": commit"));
    active_ = false;
    return {};
}

}  // namespace attnrag::detail
