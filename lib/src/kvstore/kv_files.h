// Durable file replacement for the passage KV store: temp file, fsync, rename, directory fsync.
#pragma once

#include <filesystem>
#include <string_view>

#include "attnrag/result.hpp"

namespace attnrag::detail {

// Writes bytes to a temp file beside path, fsyncs it, renames it over path and fsyncs the
// directory: path then holds either its old contents or all of bytes, even after a crash. On any
// error (Errc::Io naming path and the errno text, e.g. "No space left on device") the temp file
// is removed and path is untouched. The directory must exist.
Status write_file_durably(const std::filesystem::path& path, std::string_view bytes);

// Removes a file; a missing one is not an error. Errors: Io.
Status remove_file(const std::filesystem::path& path);

}  // namespace attnrag::detail
