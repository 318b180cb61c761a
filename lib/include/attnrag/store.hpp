// The document store: documents, chunks, chunk vectors and an FTS5 (BM25) index in one SQLite file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "attnrag/result.hpp"

namespace attnrag {

// Schema version written to PRAGMA user_version. Older stores are migrated forward on open;
// newer ones are refused (Unsupported).
//   1: documents, chunks, chunks_fts (+ triggers)
//   2: chunk_vectors, settings, counters (vector_generation)
//   3: passage_kv (the passage KV store's file catalogue)
inline constexpr int kSchemaVersion = 3;

// One chunk of a document, as the chunker produced it.
struct ChunkInput {
    uint32_t ordinal = 0;         // position in the document; unique within it
    uint64_t begin = 0, end = 0;  // [begin, end) bytes in the extracted document text
    uint64_t source_begin = 0,
             source_end = 0;  // [source_begin, source_end) bytes in the source file
    uint32_t n_tokens = 0;
    std::string text;
    std::vector<float> embedding;  // [dim] f32; empty: no vector for this chunk
};

struct DocumentInput {
    std::string source;  // path or URI: the document's identity
    std::string title;
    std::string content_hash;          // hex; same source + same hash = same document
    std::string metadata_json = "{}";  // must be a JSON object
    uint64_t n_bytes = 0;              // size of the extracted text
    std::string format;                // "text", "markdown", "html", "pdf", ...
    std::vector<ChunkInput> chunks;
};

enum class PutOutcome {
    Added,      // new source
    Unchanged,  // same source and content hash: nothing was written
    Replaced,   // same source, other hash: old chunks, vectors and their dependants replaced
};

struct PutResult {
    PutOutcome outcome = PutOutcome::Added;
    int64_t document_id = 0;
    std::vector<int64_t> chunk_ids;          // in input order; empty when Unchanged
    std::vector<int64_t> removed_chunk_ids;  // the replaced document's old chunks (Replaced)
};

struct DocumentRow {
    int64_t id = 0;
    std::string source, title, content_hash, metadata_json, format;
    uint64_t n_bytes = 0;
    int64_t n_chunks = 0;
    int64_t created_at = 0, updated_at = 0;  // Unix time in milliseconds
};

struct ChunkRow {
    int64_t id = 0, document_id = 0;
    uint32_t ordinal = 0;
    uint64_t begin = 0, end = 0, source_begin = 0, source_end = 0;  // half-open byte ranges
    uint32_t n_tokens = 0;
    std::string text;
};

// One passage KV file as the passage KV store (kv_store.hpp) catalogues it. The key is
// (model, prefix_hash, passage_hash).
struct PassageKvRow {
    std::string model;         // model fingerprint; not empty
    uint64_t prefix_hash = 0;  // kept as 16 lowercase hex digits
    uint64_t passage_hash = 0;
    int64_t n_tokens = 0;  // > 0
    int file_type = 0;     // KvFileType's value (the store does not interpret it)
    std::string file;      // relative to the KV directory; not empty
    uint64_t n_bytes = 0;  // file size
    int64_t created_at = 0, last_used = 0;  // Unix time in milliseconds; set by the store
};

// Restricts list_documents and search_bm25. All conditions must hold (AND).
struct Filter {
    std::vector<int64_t> document_ids;  // empty: all documents
    // (key, value): the document's metadata at key, rendered as text, equals value. A key that
    // starts with '$' is a SQLite JSON path ("$.lang", "$.tags[0]"); any other key names a
    // top-level member ("lang"; may contain dots, not '"'). Strings compare without quotes,
    // true/false as "true"/"false", numbers as SQLite renders them ("3", "2.5"); a missing key
    // or JSON null never matches.
    std::vector<std::pair<std::string, std::string>> metadata_equals;
};

struct Bm25Hit {
    int64_t chunk_id = 0;
    double score = 0;  // -bm25(): higher is better
};

// One SQLite connection to a store file (WAL journal, foreign keys on, synchronous=NORMAL,
// busy timeout 5 s). Not thread-safe: use one Store per thread (several Stores, in one process or
// several, may open the same file; writers queue on SQLite's lock). A Store may be moved to
// another thread between calls. Move-only; a moved-from Store may only be assigned or destroyed.
//
// Every fallible call returns a Result: SQLite errors become Errors whose message names the
// operation and carries sqlite3_errmsg (SQLITE_FULL: Errc::Io "disk full"; constraint
// violations: InvalidArgument; corruption: Corrupt). Every write is one transaction; on error it
// is rolled back and the store is as it was.
class Store {
 public:
    // Opens (and, when create_if_missing, creates) the store at db_file; ":memory:" gives a
    // private in-memory store. Migrates an older schema forward in place. Errors: NotFound (no
    // file and !create_if_missing), Corrupt (not a SQLite file), Unsupported (a newer schema or
    // a SQLite file that is not an attnrag store), Io.
    static Result<Store> open(const std::filesystem::path& db_file, bool create_if_missing = true);

    Store(Store&&) noexcept;
    Store& operator=(Store&&) noexcept;
    ~Store();

    // PRAGMA user_version of the open store (kSchemaVersion after a successful open).
    int schema_version() const;
    const std::filesystem::path& path() const;

    // Adds or replaces a document with its chunks (and the chunks' embeddings, where given), in
    // one transaction (BEGIN IMMEDIATE): a crash leaves the document as it was before or whole.
    // Same source + same content_hash: Unchanged, nothing written (title/metadata not updated).
    // Same source, other hash: Replaced; the document id and created_at stay, updated_at moves,
    // the old chunks, their FTS rows, vectors and dependent rows are deleted.
    // Errors: InvalidArgument (metadata not a JSON object, empty source, hash not hex, a byte
    // range with begin > end, duplicate ordinals, embeddings of different dims, or a dim other
    // than the stored vectors').
    Result<PutResult> put_document(const DocumentInput& doc);

    // nullopt when absent.
    Result<std::optional<DocumentRow>> find_document(std::string_view source);
    Result<std::optional<DocumentRow>> get_document(int64_t id);
    // Documents matching filter, by id.
    Result<std::vector<DocumentRow>> list_documents(const Filter& filter = {});

    // Deletes a document and everything hanging off it (chunks, FTS rows, vectors, ...) in one
    // transaction. Returns nullopt when there is no such document, else the removed chunk ids
    // (by ordinal; possibly empty).
    Result<std::optional<std::vector<int64_t>>> delete_document(int64_t id);

    Result<std::optional<ChunkRow>> get_chunk(int64_t id);
    // The chunks with these ids, in the order of ids; ids that do not exist are skipped.
    Result<std::vector<ChunkRow>> get_chunks(std::span<const int64_t> ids);
    // A document's chunks by ordinal (empty if the document does not exist).
    Result<std::vector<ChunkRow>> chunks_of(int64_t document_id);

    // BM25 over chunk text (FTS5, Porter stemming, unicode61 with diacritics removed). The query
    // is plain user text, never FTS5 syntax: it is split into terms, stopwords (Lucene's English
    // list) dropped, each term quoted and the terms OR-joined, so no input is a syntax error.
    // Returns at most k hits, best first (ties by chunk id); empty for k <= 0 or no terms.
    Result<std::vector<Bm25Hit>> search_bm25(std::string_view query, int k,
                                             const Filter& filter = {});

    // Sets (or, with an empty vector, removes) chunks' vectors in one transaction. Errors:
    // NotFound (no such chunk), InvalidArgument (dim differs from the stored vectors').
    Status set_embeddings(std::span<const std::pair<int64_t, std::vector<float>>> vectors);
    // nullopt when the chunk has no vector.
    Result<std::optional<std::vector<float>>> get_embedding(int64_t chunk_id);
    // Streams every stored vector by ascending chunk id (for rebuilding a FAISS index). The span
    // is valid only during the call. fn returning false stops the walk: Errc::Cancelled. fn must
    // not call this Store.
    Status for_each_embedding(
        const std::function<bool(int64_t chunk_id, std::span<const float>)>& fn);
    Result<int64_t> count_embeddings();

    Result<int64_t> count_chunks();
    Result<int64_t> count_documents();

    // Increments on every change to the set of chunk vectors (insert, replace, delete, cascade):
    // an index built at generation g is current while this still returns g. Starts at 0.
    Result<uint64_t> vector_generation();

    // A small key-value table (embedder name, dim, ...). get_setting: nullopt when unset.
    Result<std::optional<std::string>> get_setting(std::string_view key);
    Status set_setting(std::string_view key, std::string_view value);

    // The passage KV catalogue (schema v3). put_passage_kv inserts or replaces the key's row and
    // sets created_at and last_used to now (row.created_at/last_used are ignored). Errors:
    // InvalidArgument (empty model or file, n_tokens <= 0, n_bytes past INT64_MAX).
    Status put_passage_kv(const PassageKvRow& row);
    // nullopt when absent.
    Result<std::optional<PassageKvRow>> find_passage_kv(std::string_view model,
                                                        uint64_t prefix_hash,
                                                        uint64_t passage_hash);
    // Sets last_used to now; a missing key is not an error. Returns whether a row was touched.
    Result<bool> touch_passage_kv(std::string_view model, uint64_t prefix_hash,
                                  uint64_t passage_hash);
    // Returns whether a row was removed.
    Result<bool> delete_passage_kv(std::string_view model, uint64_t prefix_hash,
                                   uint64_t passage_hash);
    // The rows of one model (empty: all models), least recently used first (ties by key).
    Result<std::vector<PassageKvRow>> list_passage_kv(std::string_view model = {});

    // PRAGMA integrity_check, FTS5's integrity-check (every chunk's text indexed as it is) and a
    // search for index rows whose chunk is gone. Returns "ok" or the report. Reads the whole
    // database: O(size).
    Result<std::string> integrity_check();

    // Caps the database at about max_bytes (PRAGMA max_page_count; never below its current
    // size): writes past it fail with Errc::Io "disk full" and roll back. For this connection
    // only. Returns the cap in bytes actually set.
    Result<uint64_t> set_max_size_bytes(uint64_t max_bytes);

 private:
    struct Impl;
    explicit Store(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace attnrag
