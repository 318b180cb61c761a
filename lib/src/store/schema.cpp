// The store's schema and its forward-only migrations (PRAGMA user_version).
//
// Migration N takes a version N-1 database to version N. Once released, a migration's SQL never
// changes (stores in the field were built by it); schema changes are new migrations appended to
// kMigrations, and kSchemaVersion in store.hpp moves with them.
#include "store/schema.h"

#include <array>
#include <cstdint>
#include <string>

#include "attnrag/store.hpp"

namespace attnrag::detail {

namespace {

// v1: documents, chunks and the FTS5 index over chunk text.
//  - AUTOINCREMENT: ids are never reused, so a stale FAISS file (keyed by chunk id) can never
//    point a deleted chunk's vector at a new chunk.
//  - chunks_fts is an external-content table over chunks.text (the text is stored once);
//    triggers keep it in step, including the deletes that cascade from documents.
//  - Porter stemming over unicode61: BEIR's BM25 baseline (Anserini) stems with Porter too.
constexpr const char* kV1 = R"sql(
CREATE TABLE documents (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    source       TEXT NOT NULL UNIQUE,
    title        TEXT NOT NULL DEFAULT '',
    content_hash TEXT NOT NULL,
    metadata     TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    format       TEXT NOT NULL DEFAULT '',
    n_bytes      INTEGER NOT NULL DEFAULT 0,
    n_chunks     INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,  -- Unix ms
    updated_at   INTEGER NOT NULL
);
CREATE TABLE chunks (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id  INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ordinal      INTEGER NOT NULL,
    byte_begin   INTEGER NOT NULL,  -- [byte_begin, byte_end) in the extracted text
    byte_end     INTEGER NOT NULL,
    source_begin INTEGER NOT NULL,  -- [source_begin, source_end) in the source file
    source_end   INTEGER NOT NULL,
    n_tokens     INTEGER NOT NULL,
    text         TEXT NOT NULL,
    UNIQUE (document_id, ordinal)   -- also the index for chunks_of and the cascade
);
CREATE VIRTUAL TABLE chunks_fts USING fts5(
    text, content='chunks', content_rowid='id',
    tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TRIGGER chunks_fts_update AFTER UPDATE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
END;
)sql";

// v2: chunk vectors, settings, and the vector generation counter (bumped by triggers on every
// insert/update/delete of a vector, cascades included).
constexpr const char* kV2 = R"sql(
CREATE TABLE chunk_vectors (
    chunk_id INTEGER PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE,
    dim      INTEGER NOT NULL CHECK (dim > 0),
    vector   BLOB NOT NULL CHECK (length(vector) = 4 * dim)  -- [dim] f32, little-endian
);
CREATE INDEX chunk_vectors_dim ON chunk_vectors(dim);  -- the one-dim-per-store check
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO counters(name, value) VALUES ('vector_generation', 0);
CREATE TRIGGER chunk_vectors_gen_insert AFTER INSERT ON chunk_vectors BEGIN
    UPDATE counters SET value = value + 1 WHERE name = 'vector_generation';
END;
CREATE TRIGGER chunk_vectors_gen_update AFTER UPDATE ON chunk_vectors BEGIN
    UPDATE counters SET value = value + 1 WHERE name = 'vector_generation';
END;
CREATE TRIGGER chunk_vectors_gen_delete AFTER DELETE ON chunk_vectors BEGIN
    UPDATE counters SET value = value + 1 WHERE name = 'vector_generation';
END;
)sql";

// v3: the passage KV catalogue (kv_store.hpp): one row per passage KV file on disk, keyed like
// the store's memory tier. Hashes are 16 lowercase hex digits (not INTEGER: SQLite integers are
// signed, and hex reads the same in the file names). WITHOUT ROWID: lookups are by the full key.
constexpr const char* kV3 = R"sql(
CREATE TABLE passage_kv (
    model        TEXT NOT NULL CHECK (length(model) > 0),
    prefix_hash  TEXT NOT NULL
                 CHECK (length(prefix_hash) = 16 AND prefix_hash NOT GLOB '*[^0-9a-f]*'),
    passage_hash TEXT NOT NULL
                 CHECK (length(passage_hash) = 16 AND passage_hash NOT GLOB '*[^0-9a-f]*'),
    n_tokens     INTEGER NOT NULL CHECK (n_tokens > 0),
    file_type    INTEGER NOT NULL,  -- KvFileType: 1 f16, 2 q8
    file         TEXT NOT NULL,     -- relative to the KV directory
    n_bytes      INTEGER NOT NULL CHECK (n_bytes >= 0),  -- file size
    created_at   INTEGER NOT NULL,  -- Unix ms, when the file was (re)written
    last_used    INTEGER NOT NULL,  -- Unix ms, last write or disk load
    PRIMARY KEY (model, prefix_hash, passage_hash)
) WITHOUT ROWID;
)sql";

constexpr std::array<const char*, 3> kMigrations = {kV1, kV2, kV3};
static_assert(kMigrations.size() == kSchemaVersion, "one migration per schema version");

Result<int> migrate_schema_checked_version(int64_t version) {
    if (version == kSchemaVersion) return kSchemaVersion;
    return make_error(Errc::Unsupported, "store schema version " + std::to_string(version) +
                                             " is newer than this build's " +
                                             std::to_string(kSchemaVersion));
}

}  // namespace

Result<int> migrate_schema(Db& db) {
    auto version = db.query_int("PRAGMA user_version", "read schema version");
    if (!version) return version.error();
    // The common case, current or newer: no write lock taken.
    if (*version >= kSchemaVersion) return migrate_schema_checked_version(*version);

    // All steps in one transaction: a crash mid-upgrade leaves the old version intact.
    Transaction tx(db);
    ATTNRAG_TRY(tx.begin("migrate schema"));
    // Re-read under the write lock: another connection may have migrated meanwhile.
    version = db.query_int("PRAGMA user_version", "read schema version");
    if (!version) return version.error();
    if (*version >= kSchemaVersion) return migrate_schema_checked_version(*version);
    if (*version == 0) {
        auto n_objects = db.query_int("SELECT count(*) FROM sqlite_master", "inspect schema");
        if (!n_objects) return n_objects.error();
        if (*n_objects != 0)
            return make_error(
                Errc::Unsupported,
                "not an attnrag store: the database has tables but no schema version");
    }
    for (int v = static_cast<int>(*version); v < kSchemaVersion; ++v) {
        ATTNRAG_TRY(db.exec(kMigrations[static_cast<size_t>(v)],
                            "migrate schema to v" + std::to_string(v + 1)));
    }
    ATTNRAG_TRY(
        db.exec("PRAGMA user_version = " + std::to_string(kSchemaVersion), "write schema version"));
    ATTNRAG_TRY(tx.commit("migrate schema"));
    return kSchemaVersion;
}

}  // namespace attnrag::detail
