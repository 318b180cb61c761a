// Chunk vectors in SQLite: [dim] f32 little-endian BLOBs, one embedding dim per store.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "attnrag/result.hpp"
#include "store/sqlite_db.h"

namespace attnrag::detail {

// Inserts or replaces chunk_id's vector. Errors: NotFound (no such chunk).
Status upsert_vector(Db& db, int64_t chunk_id, std::span<const float> vec, const std::string& op);

// InvalidArgument when a stored vector has a dim other than dim (call after writing, inside the
// transaction, so a mismatching write rolls back).
Status check_vector_dim(Db& db, int64_t dim, const std::string& op);

}  // namespace attnrag::detail
