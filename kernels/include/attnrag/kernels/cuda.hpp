// CUDA backend: device memory, cuBLAS matrix products and our own kernels (dequantization,
// RMSNorm, RoPE, SwiGLU, attention with block masks and log-sum-exp), on one stream.
//
// This header has no CUDA types, so every layer can include it whether or not the build has the
// backend (-DATTNRAG_CUDA=ON). Without it, available() says so and Device::create fails.
// Errors come back as messages, never as an abort: operations are queued on the device's stream
// and the first failure is reported by sync() (and by every later call until reset_error()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "attnrag/kernels/cpu.hpp"
#include "attnrag/kernels/types.hpp"

namespace attnrag::kernels::cuda {

// True when this build has the CUDA backend and device 0 can be used; otherwise false, with the
// reason in *why (no backend in this build, no driver, no device).
bool available(std::string* why = nullptr);

struct DeviceInfo {
    std::string name;
    int cc_major = 0, cc_minor = 0;
    int sm_count = 0;
    size_t total_bytes = 0, free_bytes = 0;
};

// Arguments of Device::attention. All pointers are device memory.
struct AttentionArgs {
    const float* q = nullptr;        // [n_rows][n_head * head_dim], after RoPE
    const float* k = nullptr;        // [n_ctx][n_head_kv * head_dim] cache, keys after RoPE
    const float* v = nullptr;        // [n_ctx][n_head_kv * head_dim]
    int64_t n_rows = 0;              // query rows, in cache slots first_slot, first_slot + 1, ...
    int64_t first_slot = 0;          // row i sees slots [0, first_slot + i] (causal by slot)
    int64_t n_head = 0, n_head_kv = 0, head_dim = 0;
    float scale = 1.0f;              // logit scale, 1/sqrt(head_dim)
    // Block masks (attnrag::block_visible): per cache slot its block id and kind (0 Global,
    // 1 Shared, 2 Local); a row's own tag is its slot's. Null: every earlier slot is visible.
    const int32_t* tag_ids = nullptr;
    const uint8_t* tag_kinds = nullptr;
    float* out = nullptr;            // [n_rows][n_head * head_dim]
    float* lse = nullptr;            // [n_rows][n_head] log-sum-exp of each row's logits
};

// Largest head_dim the attention kernel takes.
inline constexpr int64_t kMaxHeadDim = 256;

// One CUDA device (device 0), one stream and one cuBLAS handle. Single-threaded, like a Context.
class Device {
   public:
    // nullptr with *error set when the backend or a device is missing.
    static std::unique_ptr<Device> create(std::string* error);
    ~Device();
    Device(const Device&) = delete;
    Device& operator=(const Device&) = delete;

    DeviceInfo info() const;

    // Memory. alloc returns nullptr (and records the error) when the device is out of memory.
    void* alloc(size_t bytes);
    void free(void* p);
    template <class T>
    T* alloc_n(size_t n) { return static_cast<T*>(alloc(n * sizeof(T))); }
    // Host <-> device copies on the stream. Host memory must stay valid until sync(); download()
    // waits itself, so its destination is filled when it returns true.
    void upload(void* dst, const void* src, size_t bytes);
    bool download(void* dst, const void* src, size_t bytes);
    void copy(void* dst, const void* src, size_t bytes);  // device to device

    // Waits for queued work; false when anything failed since the last reset (see error()).
    bool sync();
    const std::string& error() const;
    void reset_error();

    // ---- operations (queued on the stream; rows are contiguous unless a stride is given) ----
    // dst[0, n) = dequantized n elements of `type` at src (device memory, whole blocks).
    void dequant(DType type, const void* src, float* dst, int64_t n);
    // out[i] = table row ids[i] ([n_rows][n_cols] f32 table).
    void gather_rows(const float* table, int64_t n_cols, const int32_t* ids, int64_t n, float* out);
    // y[r] = rmsnorm(x[r]) * w for n_rows rows of n elements (sum of squares in double).
    void rmsnorm(const float* x, const float* w, float eps, float* y, int64_t n_rows, int64_t n);
    // y[i] += x[i]
    void add(float* y, const float* x, int64_t n);
    // y[r][c] += b[c] for n_rows rows of n elements (biases).
    void add_rows(float* y, const float* b, int64_t n_rows, int64_t n);
    // g[i] = silu(g[i]) * u[i]
    void silu_mul(float* g, const float* u, int64_t n);
    // RoPE in place on n_rows rows of n_heads heads (row stride n_heads * head_dim), row r rotated
    // by cs[r][0, 2 * (n_rot / 2)) = (cos, sin) per pair, as kernels::rope_angles gives them.
    void rope(float* x, int64_t n_rows, int64_t n_heads, int64_t head_dim, int64_t n_rot,
              const double* cs, RopeStyle style);
    // y[m][ldy] = x[m][k] · W^T for W [n][k] f32 (cuBLAS sgemm, f32 throughout).
    void matmul(const float* x, int64_t m, int64_t k, const float* w, int64_t n, float* y, int64_t ldy);
    // Softmax attention of every (row, head) over the keys it sees; writes out and lse.
    // head_dim must be <= kMaxHeadDim and n_head a multiple of n_head_kv.
    void attention(const AttentionArgs& args);

    // This device's limits, for benchmarks: cuBLAS f32 sgemm of n x n x n (no TF32), GFLOP/s, and
    // a device-to-device copy of `bytes`, GB/s counting bytes read and written; best of `reps`.
    // 0 when the measurement failed (see error()).
    double measure_sgemm_gflops(int64_t n, int reps);
    double measure_copy_gbs(size_t bytes, int reps);

   private:
    struct Impl;
    explicit Device(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

// A device allocation freed with its Device (which must outlive it).
template <class T>
class Buffer {
   public:
    Buffer() = default;
    Buffer(Device& dev, size_t n) : dev_(&dev), p_(dev.alloc_n<T>(n)), n_(p_ ? n : 0) {}
    Buffer(Buffer&& o) noexcept : dev_(o.dev_), p_(o.p_), n_(o.n_) { o.p_ = nullptr; o.n_ = 0; }
    Buffer& operator=(Buffer&& o) noexcept {
        if (this != &o) {
            release();
            dev_ = o.dev_;
            p_ = o.p_;
            n_ = o.n_;
            o.p_ = nullptr;
            o.n_ = 0;
        }
        return *this;
    }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    ~Buffer() { release(); }

    T* get() const { return p_; }
    size_t size() const { return n_; }
    explicit operator bool() const { return p_ != nullptr; }

   private:
    void release() {
        if (p_) dev_->free(p_);
        p_ = nullptr;
        n_ = 0;
    }
    Device* dev_ = nullptr;
    T* p_ = nullptr;
    size_t n_ = 0;
};

}  // namespace attnrag::kernels::cuda
