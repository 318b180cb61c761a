// Test memory that ends exactly at a PROT_NONE page, so a kernel reading past the end faults.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstddef>
#include <cstdint>

namespace attnrag::test {

// `bytes` of writable memory whose last byte is followed by an inaccessible page.
class GuardedBuffer {
   public:
    explicit GuardedBuffer(size_t bytes) {
        page_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
        span_ = (bytes + page_ - 1) / page_ * page_ + page_;
        base_ = static_cast<uint8_t*>(
            mmap(nullptr, span_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
        REQUIRE(base_ != MAP_FAILED);
        REQUIRE(mprotect(base_ + span_ - page_, page_, PROT_NONE) == 0);
        data_ = base_ + span_ - page_ - bytes;
    }
    GuardedBuffer(const GuardedBuffer&) = delete;
    GuardedBuffer& operator=(const GuardedBuffer&) = delete;
    ~GuardedBuffer() { munmap(base_, span_); }
    uint8_t* data() { return data_; }

   private:
    size_t page_ = 0, span_ = 0;
    uint8_t* base_ = nullptr;
    uint8_t* data_ = nullptr;
};

}  // namespace attnrag::test
