// One sqlite3 connection: cached prepared statements, transactions, SQLite errors as Error values.
#pragma once

#include <sqlite3.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "attnrag/result.hpp"

namespace attnrag::detail {

// SQLite result code -> Error whose message is "<op>: <sqlite3_errmsg>" (db may be null).
// SQLITE_FULL -> Io "disk full"; constraint -> InvalidArgument (foreign key -> NotFound);
// corrupt/not a database -> Corrupt; JSON path/parse errors -> InvalidArgument.
Error sqlite_error(sqlite3* db, int rc, std::string_view op);

// A prepared statement borrowed from the Db's cache (or owned, when the cached one is busy).
// Reset and unbound on destruction. Bind errors are kept and reported by the next step().
class Stmt {
 public:
    Stmt(sqlite3* db, sqlite3_stmt* stmt, bool* in_use, std::string_view op);
    Stmt(Stmt&& other) noexcept;
    Stmt& operator=(Stmt&&) = delete;
    Stmt(const Stmt&) = delete;
    ~Stmt();

    // Parameters are 1-based. Text and blobs are copied (SQLITE_TRANSIENT).
    Stmt& bind_int(int idx, int64_t v);
    Stmt& bind_text(int idx, std::string_view v);
    Stmt& bind_blob(int idx, std::span<const std::byte> v);
    Stmt& bind_null(int idx);

    // true: a row is ready; false: done.
    Result<bool> step();
    // Steps to the end, ignoring rows.
    Status run();

    // Columns are 0-based; valid until the next step().
    int64_t column_int(int i) const { return sqlite3_column_int64(stmt_, i); }
    double column_double(int i) const { return sqlite3_column_double(stmt_, i); }
    bool column_is_null(int i) const { return sqlite3_column_type(stmt_, i) == SQLITE_NULL; }
    std::string column_text(int i) const;
    std::span<const std::byte> column_blob(int i) const;

 private:
    void note_bind(int rc);

    sqlite3* db_ = nullptr;
    sqlite3_stmt* stmt_ = nullptr;
    bool* in_use_ = nullptr;  // the cache slot's flag; null when this Stmt owns stmt_
    std::string op_;
    int bind_rc_ = SQLITE_OK;
    std::string bind_msg_;
};

// Owns the connection and a cache of prepared statements keyed by SQL text. Not thread-safe.
class Db {
 public:
    Db() = default;
    Db(const Db&) = delete;
    Db& operator=(const Db&) = delete;
    ~Db();

    // sqlite3_open_v2 with extended result codes; flags as SQLite's.
    Status open(const std::string& filename, int flags);

    // A statement for sql, prepared once and cached. op names the operation in errors.
    Result<Stmt> prepare(std::string_view sql, std::string_view op);
    // Runs one or more statements without results (DDL, pragmas, BEGIN/COMMIT).
    Status exec(const std::string& sql, std::string_view op);
    // The first column of the first row of a one-row query, as text ("" if no row).
    Result<std::string> query_text(const std::string& sql, std::string_view op);
    Result<int64_t> query_int(const std::string& sql, std::string_view op);

    sqlite3* handle() const { return db_; }
    Error error(int rc, std::string_view op) const { return sqlite_error(db_, rc, op); }

 private:
    struct Cached {
        sqlite3_stmt* stmt = nullptr;
        bool in_use = false;
    };
    sqlite3* db_ = nullptr;
    std::unordered_map<std::string, Cached> cache_;  // node-based: slot addresses are stable
};

// BEGIN IMMEDIATE ... COMMIT; rolls back on destruction unless committed. Takes the write lock
// at begin, so a transaction never fails half-way on another writer (SQLITE_BUSY upgrading).
class Transaction {
 public:
    explicit Transaction(Db& db) : db_(db) {}
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    ~Transaction();

    Status begin(std::string_view op);
    Status commit(std::string_view op);

 private:
    Db& db_;
    bool active_ = false;
};

}  // namespace attnrag::detail
