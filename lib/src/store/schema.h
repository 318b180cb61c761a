// The store's schema and its forward-only migrations (PRAGMA user_version).
#pragma once

#include "attnrag/result.hpp"
#include "store/sqlite_db.h"

namespace attnrag::detail {

// Brings the database to kSchemaVersion, applying the migrations in order in one transaction:
// 0 (empty file) -> 1 -> 2 -> ... Returns the version reached. Errors: Unsupported for a newer
// version or a non-empty database without a version (not an attnrag store).
Result<int> migrate_schema(Db& db);

}  // namespace attnrag::detail
