// A whole regular file mapped read-only (shared by the GGUF and safetensors readers), errno text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "attnrag/result.hpp"

namespace attnrag::detail {

// strerror-style text for an errno value (thread-safe).
std::string errno_text(int err);

// Move-only; the mapping lives until destruction. An empty file maps to no memory (data() null).
class MappedFile {
   public:
    // Errors name the path: NotFound when absent, Io for anything else (not a regular file,
    // stat/mmap failure).
    static Result<MappedFile> open(const std::string& path);

    MappedFile() = default;
    MappedFile(MappedFile&& o) noexcept;
    MappedFile& operator=(MappedFile&& o) noexcept;
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;
    ~MappedFile();

    const uint8_t* data() const { return static_cast<const uint8_t*>(map_); }
    uint64_t size() const { return size_; }

   private:
    void* map_ = nullptr;
    uint64_t size_ = 0;
};

}  // namespace attnrag::detail
