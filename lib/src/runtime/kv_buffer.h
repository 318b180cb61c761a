// A zero-initialised f32 buffer reserved with mmap: pages become resident only when touched.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <utility>

namespace attnrag::detail {

class LazyBuffer {
   public:
    LazyBuffer() = default;
    // Returns false when the address space cannot be reserved.
    bool reserve(size_t n_floats) {
        release();
        if (n_floats == 0) return true;
        void* p = ::mmap(nullptr, n_floats * sizeof(float), PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) return false;
        data_ = static_cast<float*>(p);
        n_ = n_floats;
        return true;
    }
    LazyBuffer(LazyBuffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), n_(std::exchange(o.n_, 0)) {}
    LazyBuffer& operator=(LazyBuffer&& o) noexcept {
        if (this != &o) {
            release();
            data_ = std::exchange(o.data_, nullptr);
            n_ = std::exchange(o.n_, 0);
        }
        return *this;
    }
    LazyBuffer(const LazyBuffer&) = delete;
    LazyBuffer& operator=(const LazyBuffer&) = delete;
    ~LazyBuffer() { release(); }

    float* data() { return data_; }
    const float* data() const { return data_; }
    size_t size() const { return n_; }

   private:
    void release() {
        if (data_) ::munmap(data_, n_ * sizeof(float));
        data_ = nullptr;
        n_ = 0;
    }
    float* data_ = nullptr;
    size_t n_ = 0;
};

}  // namespace attnrag::detail
