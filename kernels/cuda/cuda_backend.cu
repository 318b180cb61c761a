// CUDA backend (kernels/include/attnrag/kernels/cuda.hpp): device, stream, cuBLAS and our kernels.
// Each kernel follows the CPU scalar reference (kernels/cpu/ref.cpp, rope.cpp) in its order of
// operations; products that the reference keeps unfused are written with __fmul_rn / __fadd_rn so
// that dequantized weights are bit-identical to the CPU's.
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <string>

#include "attnrag/kernels/block_mask.hpp"
#include "attnrag/kernels/cuda.hpp"

namespace attnrag::kernels::cuda {
namespace {

constexpr int kThreads = 256;

std::string cuda_message(const char* what, cudaError_t e) {
    return std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
}

int64_t blocks_for(int64_t n, int threads = kThreads) {
    return (n + threads - 1) / threads;
}

// ---- dequantization: one thread per element ----------------------------------------------

__device__ inline float load_f16(const uint8_t* p) {
    const unsigned short u = static_cast<unsigned short>(p[0] | (p[1] << 8));
    return __half2float(__ushort_as_half(u));
}
__device__ inline float load_bf16(const uint8_t* p) {
    const unsigned int u = static_cast<unsigned int>(p[0] | (p[1] << 8)) << 16;
    return __uint_as_float(u);
}
__device__ inline uint32_t load_u32(const uint8_t* p) {
    return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
           (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

// The 6-bit scale (j < 8) or min (j >= 8) of sub-block j % 8 of a Q4_K/Q5_K super-block, as
// unpack_scales_k4 lays them out.
__device__ inline float k4_scale(const uint8_t* scales, int j) {
    const uint32_t w0 = load_u32(scales), w1 = load_u32(scales + 4), w2 = load_u32(scales + 8);
    constexpr uint32_t kLow6 = 0x3f3f3f3fu, kLow4 = 0x0f0f0f0fu, kLow2 = 0x03030303u;
    uint32_t word;
    switch (j / 4) {
        case 0: word = w0 & kLow6; break;
        case 1: word = (w2 & kLow4) | (((w0 >> 6) & kLow2) << 4); break;
        case 2: word = w1 & kLow6; break;
        default: word = ((w2 >> 4) & kLow4) | (((w1 >> 6) & kLow2) << 4); break;
    }
    return static_cast<float>((word >> (8 * (j % 4))) & 0xff);
}

__global__ void dequant_kernel(DType type, const uint8_t* src, float* dst, int64_t n) {
    const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (e >= n) return;
    float w = 0.0f;
    switch (type) {
        case DType::F32: w = reinterpret_cast<const float*>(src)[e]; break;
        case DType::F16: w = load_f16(src + 2 * e); break;
        case DType::BF16: w = load_bf16(src + 2 * e); break;
        case DType::Q4_0: {
            const uint8_t* b = src + (e / kQK) * sizeof(BlockQ4_0);
            const int j = static_cast<int>(e % kQK);
            const int q = j < 16 ? (b[2 + j] & 0x0f) : (b[2 + j - 16] >> 4);
            w = load_f16(b) * static_cast<float>(q - 8);
            break;
        }
        case DType::Q4_1: {
            const uint8_t* b = src + (e / kQK) * sizeof(BlockQ4_1);
            const int j = static_cast<int>(e % kQK);
            const int q = j < 16 ? (b[4 + j] & 0x0f) : (b[4 + j - 16] >> 4);
            w = __fadd_rn(__fmul_rn(load_f16(b), static_cast<float>(q)), load_f16(b + 2));
            break;
        }
        case DType::Q8_0: {
            const uint8_t* b = src + (e / kQK) * sizeof(BlockQ8_0);
            w = load_f16(b) * static_cast<float>(static_cast<int8_t>(b[2 + e % kQK]));
            break;
        }
        case DType::Q4_K:
        case DType::Q5_K: {
            const bool five = type == DType::Q5_K;
            const uint8_t* b = src + (e / kQKK) * (five ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K));
            const int i = static_cast<int>(e % kQKK);
            const uint8_t* scales = b + 4;
            const uint8_t* qs = b + 16 + (five ? kQKK / 8 : 0);
            const int c = i / 64, l = i % 64;
            int q = l < 32 ? (qs[32 * c + l] & 0x0f) : (qs[32 * c + l - 32] >> 4);
            if (five) q += ((b[16 + i % 32] >> (i / 32)) & 1) << 4;
            const float d1 = __fmul_rn(load_f16(b), k4_scale(scales, i / 32));
            const float m1 = __fmul_rn(load_f16(b + 2), k4_scale(scales, 8 + i / 32));
            w = __fsub_rn(__fmul_rn(d1, static_cast<float>(q)), m1);
            break;
        }
        case DType::Q6_K: {
            const uint8_t* b = src + (e / kQKK) * sizeof(BlockQ6_K);
            const int i = static_cast<int>(e % kQKK);
            const int h = i / 128, r = i % 128, l = r % 32, quarter = r / 32;
            const uint8_t* ql = b + 64 * h;
            const uint8_t qh = b[128 + 32 * h + l];
            const uint8_t lo = ql[l + (quarter & 1) * 32];
            const int nib = quarter < 2 ? (lo & 0x0f) : (lo >> 4);
            const int q = (nib | (((qh >> (2 * quarter)) & 3) << 4)) - 32;
            const float d1 = __fmul_rn(load_f16(b + 208),
                                       static_cast<float>(static_cast<int8_t>(b[192 + i / 16])));
            w = __fmul_rn(d1, static_cast<float>(q));
            break;
        }
    }
    dst[e] = w;
}

// ---- element-wise and row ops ------------------------------------------------------------

__global__ void gather_rows_kernel(const float* table, int64_t n_cols, const int32_t* ids,
                                   int64_t n, float* out) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n * n_cols) return;
    const int64_t r = i / n_cols, c = i % n_cols;
    out[i] = table[static_cast<int64_t>(ids[r]) * n_cols + c];
}

__global__ void rmsnorm_kernel(const float* x, const float* w, float eps, float* y, int64_t n) {
    const float* xr = x + static_cast<int64_t>(blockIdx.x) * n;
    float* yr = y + static_cast<int64_t>(blockIdx.x) * n;
    __shared__ double partial[kThreads];
    double ss = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss += static_cast<double>(xr[i]) * xr[i];
    partial[threadIdx.x] = ss;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s /= 2) {
        if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
        __syncthreads();
    }
    const float scale = static_cast<float>(1.0 / sqrt(partial[0] / static_cast<double>(n) + eps));
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        yr[i] = __fmul_rn(__fmul_rn(xr[i], scale), w[i]);
}

__global__ void add_kernel(float* y, const float* x, int64_t n) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) y[i] += x[i];
}

__global__ void add_rows_kernel(float* y, const float* b, int64_t n_rows, int64_t n) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n_rows * n) y[i] += b[i % n];
}

__global__ void silu_mul_kernel(float* g, const float* u, int64_t n) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

// One thread per (row, head, pair); angles in double as the CPU's rope_apply.
__global__ void rope_kernel(float* x, int64_t n_rows, int64_t n_heads, int64_t head_dim,
                            int64_t n_pairs, const double* cs, int interleaved) {
    const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (t >= n_rows * n_heads * n_pairs) return;
    const int64_t i = t % n_pairs, h = (t / n_pairs) % n_heads, r = t / (n_pairs * n_heads);
    const double c = cs[r * 2 * n_pairs + 2 * i], s = cs[r * 2 * n_pairs + 2 * i + 1];
    float* xh = x + (r * n_heads + h) * head_dim;
    float* a = xh + (interleaved ? 2 * i : i);
    float* b = a + (interleaved ? 1 : n_pairs);
    const double x0 = *a, x1 = *b;
    *a = static_cast<float>(__dsub_rn(__dmul_rn(x0, c), __dmul_rn(x1, s)));
    *b = static_cast<float>(__dadd_rn(__dmul_rn(x0, s), __dmul_rn(x1, c)));
}

// ---- attention ---------------------------------------------------------------------------

// The kernels keep tags as separate id and kind arrays (uint8 kinds: BlockKind's values).
__device__ inline bool visible(int32_t q_id, uint8_t q_kind, int32_t k_id, uint8_t k_kind) {
    return block_visible(BlockTag{q_id, static_cast<BlockKind>(q_kind)},
                         BlockTag{k_id, static_cast<BlockKind>(k_kind)});
}

constexpr int kAttnThreads = 128;

// One block per (row, head). Each thread runs an online softmax over its strided share of the
// keys (running max, sum and weighted values), then the block merges the threads' partials
// exactly (rescaling by exp(max_t - max)): no logits are stored, so any context length fits.
template <int HD>
__global__ void attention_kernel(AttentionArgs a) {
    const int64_t row = blockIdx.x, head = blockIdx.y;
    const int64_t hd = a.head_dim;
    const int64_t group = a.n_head / a.n_head_kv;
    const int64_t kv_dim = a.n_head_kv * hd;
    const int64_t g = head / group;
    const int64_t slot = a.first_slot + row;
    const int64_t n_keys = slot + 1;
    __shared__ float qs[HD];
    for (int64_t d = threadIdx.x; d < hd; d += blockDim.x)
        qs[d] = a.q[(row * a.n_head + head) * hd + d];
    __syncthreads();
    const bool masked = a.tag_ids != nullptr;
    const int32_t q_id = masked ? a.tag_ids[slot] : 0;
    const uint8_t q_kind = masked ? a.tag_kinds[slot] : 0;

    float m = -INFINITY, l = 0.0f;
    float acc[HD];
#pragma unroll
    for (int d = 0; d < HD; ++d) acc[d] = 0.0f;
    for (int64_t j = threadIdx.x; j < n_keys; j += blockDim.x) {
        if (masked && !visible(q_id, q_kind, a.tag_ids[j], a.tag_kinds[j])) continue;
        const float* kj = a.k + j * kv_dim + g * hd;
        float s = 0.0f;
#pragma unroll
        for (int d = 0; d < HD; ++d) {
            if (d < hd) s += qs[d] * kj[d];
        }
        s *= a.scale;
        if (s > m) {
            const float corr = expf(m - s);  // 0 when m is -inf
            l *= corr;
#pragma unroll
            for (int d = 0; d < HD; ++d) acc[d] *= corr;
            m = s;
        }
        const float p = expf(s - m);
        l += p;
        const float* vj = a.v + j * kv_dim + g * hd;
#pragma unroll
        for (int d = 0; d < HD; ++d) {
            if (d < hd) acc[d] += p * vj[d];
        }
    }

    // Merge within each warp, then across warps through shared memory.
    const unsigned full = 0xffffffffu;
    for (int off = 16; off > 0; off /= 2) {
        const float m_o = __shfl_down_sync(full, m, off);
        const float l_o = __shfl_down_sync(full, l, off);
        const float mx = fmaxf(m, m_o);
        const float ca = mx == -INFINITY ? 0.0f : expf(m - mx);
        const float cb = mx == -INFINITY ? 0.0f : expf(m_o - mx);
        l = l * ca + l_o * cb;
#pragma unroll
        for (int d = 0; d < HD; ++d) {
            const float a_o = __shfl_down_sync(full, acc[d], off);
            acc[d] = acc[d] * ca + a_o * cb;
        }
        m = mx;
    }
    constexpr int kWarps = kAttnThreads / 32;
    __shared__ float wm[kWarps], wl[kWarps];
    __shared__ float wacc[kWarps][HD];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) {
        wm[warp] = m;
        wl[warp] = l;
#pragma unroll
        for (int d = 0; d < HD; ++d) wacc[warp][d] = acc[d];
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, wm[w]);
    float total = 0.0f;
    for (int w = 0; w < kWarps; ++w) total += mx == -INFINITY ? 0.0f : wl[w] * expf(wm[w] - mx);
    for (int64_t d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < kWarps; ++w)
            o += mx == -INFINITY ? 0.0f : wacc[w][d] * expf(wm[w] - mx);
        a.out[(row * a.n_head + head) * hd + d] = total > 0.0f ? o / total : 0.0f;
    }
    if (threadIdx.x == 0)
        a.lse[row * a.n_head + head] = mx == -INFINITY ? -INFINITY : mx + logf(total);
}

// Prefill attention, flash-style: one block per (tile of kTileRows query rows, head). K and V
// tiles of kTileKeys slots are staged in shared memory and shared by the tile's rows; each row
// is owned by kLanes adjacent threads, which split the tile's keys for the scores and the head's
// dimensions for the output, and keep the row's running max and sum (an online softmax, so no
// logits are stored).
constexpr int kTileRows = 32;
constexpr int kTileKeys = 64;
constexpr int kLanes = 4;  // threads per row: kTileRows * kLanes = 128 threads

template <int HD>
__global__ void attention_tiled_kernel(AttentionArgs a) {
    constexpr int kDims = HD / kLanes;         // output dimensions per thread
    constexpr int kKeys = kTileKeys / kLanes;  // keys per thread per tile
    extern __shared__ float smem[];
    // Rows of Q, K and P are padded by one float so that the rows a warp reads at once fall in
    // different shared-memory banks.
    float* qs = smem;                       // [kTileRows][HD + 1]
    float* ks = qs + kTileRows * (HD + 1);  // [kTileKeys][HD + 1]
    float* vs = ks + kTileKeys * (HD + 1);  // [kTileKeys][HD]
    float* ps = vs + kTileKeys * HD;        // [kTileRows][kTileKeys + 1]

    const int64_t hd = a.head_dim;
    const int64_t head = blockIdx.y;
    const int64_t group = a.n_head / a.n_head_kv;
    const int64_t kv_dim = a.n_head_kv * hd;
    const int64_t g = head / group;
    const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kTileRows;
    const int tid = threadIdx.x;
    const int r = tid / kLanes, lane = tid % kLanes;
    const int64_t row = row0 + r;
    const bool live = row < a.n_rows;
    const int64_t slot = a.first_slot + row;
    const bool masked = a.tag_ids != nullptr;
    const int32_t q_id = masked && live ? a.tag_ids[slot] : 0;
    const uint8_t q_kind = masked && live ? a.tag_kinds[slot] : 0;

    for (int i = tid; i < kTileRows * HD; i += blockDim.x) {
        const int rr = i / HD, d = i % HD;
        qs[rr * (HD + 1) + d] =
            (row0 + rr < a.n_rows && d < hd) ? a.q[((row0 + rr) * a.n_head + head) * hd + d] : 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    float acc[kDims];
#pragma unroll
    for (int i = 0; i < kDims; ++i) acc[i] = 0.0f;

    const int64_t last_row = min(row0 + kTileRows, a.n_rows) - 1;
    const int64_t n_keys = a.first_slot + last_row + 1;  // keys any row of the tile sees
    for (int64_t k0 = 0; k0 < n_keys; k0 += kTileKeys) {
        __syncthreads();  // the previous tile's K, V and P are no longer read
        for (int i = tid; i < kTileKeys * HD; i += blockDim.x) {
            const int j = i / HD, d = i % HD;
            const bool in = k0 + j < n_keys && d < hd;
            ks[j * (HD + 1) + d] = in ? a.k[(k0 + j) * kv_dim + g * hd + d] : 0.0f;
            vs[j * HD + d] = in ? a.v[(k0 + j) * kv_dim + g * hd + d] : 0.0f;
        }
        __syncthreads();
        // Scores of this thread's keys: lane, lane + kLanes, ... of the tile.
        float s[kKeys];
        float tile_max = -INFINITY;
#pragma unroll
        for (int t = 0; t < kKeys; ++t) {
            const int j = lane + t * kLanes;
            const int64_t key = k0 + j;
            bool see = live && key <= slot;
            if (see && masked) see = visible(q_id, q_kind, a.tag_ids[key], a.tag_kinds[key]);
            float dot = 0.0f;
            if (see) {
                const float* qr = qs + r * (HD + 1);
                const float* kr = ks + j * (HD + 1);
#pragma unroll
                for (int d = 0; d < HD; ++d) dot += qr[d] * kr[d];
            }
            s[t] = see ? dot * a.scale : -INFINITY;
            tile_max = fmaxf(tile_max, s[t]);
        }
        // The row's lanes are adjacent threads of one warp.
#pragma unroll
        for (int off = kLanes / 2; off > 0; off /= 2)
            tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, off));
        const float m_new = fmaxf(m, tile_max);
        const float corr = m_new == -INFINITY ? 1.0f : expf(m - m_new);
        float sum = 0.0f;
#pragma unroll
        for (int t = 0; t < kKeys; ++t) {
            const float p = s[t] == -INFINITY ? 0.0f : expf(s[t] - m_new);
            ps[r * (kTileKeys + 1) + lane + t * kLanes] = p;
            sum += p;
        }
#pragma unroll
        for (int off = kLanes / 2; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
        l = l * corr + sum;
        m = m_new;
        __syncwarp();
        // Output dimensions lane, lane + kLanes, ... of the row.
#pragma unroll
        for (int i = 0; i < kDims; ++i) acc[i] *= corr;
        for (int j = 0; j < kTileKeys; ++j) {
            const float p = ps[r * (kTileKeys + 1) + j];
            const float* vr = vs + j * HD;
#pragma unroll
            for (int i = 0; i < kDims; ++i) acc[i] += p * vr[lane + i * kLanes];
        }
    }
    if (!live) return;
#pragma unroll
    for (int i = 0; i < kDims; ++i) {
        const int d = lane + i * kLanes;
        if (d < hd) a.out[(row * a.n_head + head) * hd + d] = l > 0.0f ? acc[i] / l : 0.0f;
    }
    if (lane == 0) a.lse[row * a.n_head + head] = m == -INFINITY ? -INFINITY : m + logf(l);
}

template <int HD>
size_t tiled_smem_bytes() {
    return sizeof(float) * (kTileRows * (HD + 1) + kTileKeys * (HD + 1) + kTileKeys * HD +
                            kTileRows * (kTileKeys + 1));
}

// Rows at or above which attention uses the tiled kernel (decode keeps one block per head).
constexpr int64_t kTiledMinRows = 16;

}  // namespace

// ---- Device ------------------------------------------------------------------------------

bool available(std::string* why) {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        if (why) *why = cuda_message("no usable CUDA driver or device", e);
        return false;
    }
    if (n == 0) {
        if (why) *why = "no CUDA device";
        return false;
    }
    return true;
}

struct Device::Impl {
    cudaStream_t stream = nullptr;
    cublasHandle_t blas = nullptr;
    std::string error;

    void fail(std::string message) {
        if (error.empty()) error = std::move(message);
    }
    void check(const char* what, cudaError_t e) {
        if (e != cudaSuccess) fail(cuda_message(what, e));
    }
    void launched(const char* what) { check(what, cudaGetLastError()); }
};

Device::Device(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Device::~Device() {
    if (impl_->blas) cublasDestroy(impl_->blas);
    if (impl_->stream) cudaStreamDestroy(impl_->stream);
}

std::unique_ptr<Device> Device::create(std::string* error) {
    std::string why;
    if (!available(&why)) {
        if (error) *error = why;
        return nullptr;
    }
    auto impl = std::make_unique<Impl>();
    cudaError_t e = cudaSetDevice(0);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        if (error) *error = cuda_message("cannot start CUDA device 0", e);
        return nullptr;
    }
    std::unique_ptr<Device> dev(new Device(std::move(impl)));
    if (cublasCreate(&dev->impl_->blas) != CUBLAS_STATUS_SUCCESS) {
        if (error) *error = "cuBLAS could not start (cublasCreate failed)";
        return nullptr;
    }
    cublasSetStream(dev->impl_->blas, dev->impl_->stream);
    // Plain f32 products (no TF32): results comparable with the CPU reference.
    cublasSetMathMode(dev->impl_->blas, CUBLAS_PEDANTIC_MATH);
    return dev;
}

DeviceInfo Device::info() const {
    DeviceInfo out;
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, 0) == cudaSuccess) {
        out.name = p.name;
        out.cc_major = p.major;
        out.cc_minor = p.minor;
        out.sm_count = p.multiProcessorCount;
    }
    cudaMemGetInfo(&out.free_bytes, &out.total_bytes);
    return out;
}

void* Device::alloc(size_t bytes) {
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes == 0 ? 1 : bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();  // clear the sticky-free error state of a failed allocation
        impl_->fail(cuda_message(("cudaMalloc of " + std::to_string(bytes) + " bytes").c_str(), e));
        return nullptr;
    }
    return p;
}

void Device::free(void* p) {
    if (p) cudaFree(p);
}

void Device::upload(void* dst, const void* src, size_t bytes) {
    impl_->check("upload", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, impl_->stream));
}

bool Device::download(void* dst, const void* src, size_t bytes) {
    impl_->check("download",
                 cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, impl_->stream));
    return sync();
}

void Device::copy(void* dst, const void* src, size_t bytes) {
    impl_->check("device copy",
                 cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, impl_->stream));
}

bool Device::sync() {
    impl_->check("stream", cudaStreamSynchronize(impl_->stream));
    impl_->launched("kernel");
    return impl_->error.empty();
}

const std::string& Device::error() const {
    return impl_->error;
}
void Device::reset_error() {
    impl_->error.clear();
}

void Device::dequant(DType type, const void* src, float* dst, int64_t n) {
    if (n <= 0) return;
    if (!type_traits(type)) {
        impl_->fail("dequant: unsupported type id " + std::to_string(static_cast<uint32_t>(type)));
        return;
    }
    dequant_kernel<<<blocks_for(n), kThreads, 0, impl_->stream>>>(
        type, static_cast<const uint8_t*>(src), dst, n);
    impl_->launched("dequant");
}

void Device::gather_rows(const float* table, int64_t n_cols, const int32_t* ids, int64_t n,
                         float* out) {
    if (n <= 0) return;
    gather_rows_kernel<<<blocks_for(n * n_cols), kThreads, 0, impl_->stream>>>(table, n_cols, ids,
                                                                               n, out);
    impl_->launched("gather_rows");
}

void Device::rmsnorm(const float* x, const float* w, float eps, float* y, int64_t n_rows,
                     int64_t n) {
    if (n_rows <= 0) return;
    rmsnorm_kernel<<<n_rows, kThreads, 0, impl_->stream>>>(x, w, eps, y, n);
    impl_->launched("rmsnorm");
}

void Device::add(float* y, const float* x, int64_t n) {
    if (n <= 0) return;
    add_kernel<<<blocks_for(n), kThreads, 0, impl_->stream>>>(y, x, n);
    impl_->launched("add");
}

void Device::add_rows(float* y, const float* b, int64_t n_rows, int64_t n) {
    if (n_rows * n <= 0) return;
    add_rows_kernel<<<blocks_for(n_rows * n), kThreads, 0, impl_->stream>>>(y, b, n_rows, n);
    impl_->launched("add_rows");
}

void Device::silu_mul(float* g, const float* u, int64_t n) {
    if (n <= 0) return;
    silu_mul_kernel<<<blocks_for(n), kThreads, 0, impl_->stream>>>(g, u, n);
    impl_->launched("silu_mul");
}

void Device::rope(float* x, int64_t n_rows, int64_t n_heads, int64_t head_dim, int64_t n_rot,
                  const double* cs, RopeStyle style) {
    if (n_rot > head_dim) n_rot = head_dim;
    const int64_t n_pairs = n_rot / 2;
    const int64_t n = n_rows * n_heads * n_pairs;
    if (n <= 0) return;
    rope_kernel<<<blocks_for(n), kThreads, 0, impl_->stream>>>(
        x, n_rows, n_heads, head_dim, n_pairs, cs, style == RopeStyle::Interleaved ? 1 : 0);
    impl_->launched("rope");
}

void Device::matmul(const float* x, int64_t m, int64_t k, const float* w, int64_t n, float* y,
                    int64_t ldy) {
    if (m <= 0 || n <= 0) return;
    const float one = 1.0f, zero = 0.0f;
    // Column-major view: Y^T [n x m] = W [k x n]^T · X^T [k x m].
    const cublasStatus_t s =
        cublasSgemm(impl_->blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                    static_cast<int>(k), &one, w, static_cast<int>(k), x, static_cast<int>(k),
                    &zero, y, static_cast<int>(ldy));
    if (s != CUBLAS_STATUS_SUCCESS) {
        impl_->fail(std::string("cublasSgemm failed: ") + cublasGetStatusString(s));
    }
}

void Device::attention(const AttentionArgs& args) {
    if (args.n_rows <= 0) return;
    if (args.head_dim <= 0 || args.head_dim > kMaxHeadDim || args.n_head_kv <= 0 ||
        args.n_head % args.n_head_kv != 0) {
        impl_->fail("attention: head_dim " + std::to_string(args.head_dim) + " / heads " +
                    std::to_string(args.n_head) + "/" + std::to_string(args.n_head_kv) +
                    " not supported");
        return;
    }
    if (args.n_rows >= kTiledMinRows) {
        const dim3 grid(static_cast<unsigned>((args.n_rows + kTileRows - 1) / kTileRows),
                        static_cast<unsigned>(args.n_head));
        const int threads = kTileRows * kLanes;
        auto launch = [&](auto kernel, size_t smem) {
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 static_cast<int>(smem));
            kernel<<<grid, threads, smem, impl_->stream>>>(args);
        };
        if (args.head_dim <= 32) {
            launch(attention_tiled_kernel<32>, tiled_smem_bytes<32>());
        } else if (args.head_dim <= 64) {
            launch(attention_tiled_kernel<64>, tiled_smem_bytes<64>());
        } else if (args.head_dim <= 128) {
            launch(attention_tiled_kernel<128>, tiled_smem_bytes<128>());
        } else {
            launch(attention_tiled_kernel<256>, tiled_smem_bytes<256>());
        }
        impl_->launched("attention");
        return;
    }
    const dim3 grid(static_cast<unsigned>(args.n_rows), static_cast<unsigned>(args.n_head));
    if (args.head_dim <= 32) {
        attention_kernel<32><<<grid, kAttnThreads, 0, impl_->stream>>>(args);
    } else if (args.head_dim <= 64) {
        attention_kernel<64><<<grid, kAttnThreads, 0, impl_->stream>>>(args);
    } else if (args.head_dim <= 128) {
        attention_kernel<128><<<grid, kAttnThreads, 0, impl_->stream>>>(args);
    } else {
        attention_kernel<256><<<grid, kAttnThreads, 0, impl_->stream>>>(args);
    }
    impl_->launched("attention");
}

namespace {

// Best time in seconds of `reps` runs of fn on the stream, timed with events.
template <class F>
double best_seconds(cudaStream_t stream, int reps, F&& fn) {
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    fn();  // warm-up
    double best = 0.0;
    for (int r = 0; r < reps; ++r) {
        cudaEventRecord(a, stream);
        fn();
        cudaEventRecord(b, stream);
        cudaEventSynchronize(b);
        float ms = 0.0f;
        cudaEventElapsedTime(&ms, a, b);
        if (r == 0 || ms < best) best = ms;
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return best / 1e3;
}

}  // namespace

double Device::measure_sgemm_gflops(int64_t n, int reps) {
    Buffer<float> a(*this, static_cast<size_t>(n * n)), b(*this, static_cast<size_t>(n * n)),
        c(*this, static_cast<size_t>(n * n));
    if (!a || !b || !c) return 0.0;
    // Non-zero operands (0x3c3c3c3c is about 0.0115): products of zeros can run faster.
    cudaMemsetAsync(a.get(), 0x3c, static_cast<size_t>(n * n) * sizeof(float), impl_->stream);
    cudaMemsetAsync(b.get(), 0x3c, static_cast<size_t>(n * n) * sizeof(float), impl_->stream);
    const double s =
        best_seconds(impl_->stream, reps, [&] { matmul(a.get(), n, n, b.get(), n, c.get(), n); });
    if (!sync() || s <= 0.0) return 0.0;
    return 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n) / s / 1e9;
}

double Device::measure_copy_gbs(size_t bytes, int reps) {
    Buffer<uint8_t> a(*this, bytes), b(*this, bytes);
    if (!a || !b) return 0.0;
    const double s = best_seconds(impl_->stream, reps, [&] { copy(b.get(), a.get(), bytes); });
    if (!sync() || s <= 0.0) return 0.0;
    return 2.0 * static_cast<double>(bytes) / s / 1e9;
}

}  // namespace attnrag::kernels::cuda
