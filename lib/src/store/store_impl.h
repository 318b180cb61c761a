// Store internals shared by the store's source files: the connection and row readers.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string_view>

#include "attnrag/store.hpp"
#include "store/sqlite_db.h"

namespace attnrag {

struct Store::Impl {
    detail::Db db;
    std::filesystem::path path;
    int schema_version = 0;
};

namespace detail {

// Column lists matching read_document / read_chunk (prefix each name when joining).
inline constexpr std::string_view kDocumentColumns =
    "id, source, title, content_hash, metadata, format, n_bytes, n_chunks, created_at, updated_at";
inline constexpr std::string_view kChunkColumns =
    "id, document_id, ordinal, byte_begin, byte_end, source_begin, source_end, n_tokens, text";

DocumentRow read_document(const Stmt& st);
ChunkRow read_chunk(const Stmt& st);

// Unix time in milliseconds.
int64_t now_ms();

}  // namespace detail
}  // namespace attnrag
