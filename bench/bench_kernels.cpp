// Single-thread matvec throughput (GB/s of weight bytes streamed) per type, shape and SIMD level.
//
// Usage: bench_kernels [seconds_per_case=0.25] [type name, e.g. q4_1] [level: scalar|avx2|avx512]
// "hot": the same matrix again and again (it stays in L2/L3 when small enough).
// "cold": successive matrices from a 512 MiB pool, so weights come from DRAM as in decode,
// where a token streams every layer's weights once.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include "attnrag/kernels/cpu.hpp"
#include "attnrag/kernels/types.hpp"

using namespace attnrag::kernels;

namespace {

// Wall time by default; ATTNRAG_BENCH_CPUTIME=1 times this thread's CPU time instead, which
// ignores time slices lost to other processes on a shared machine (for A/B comparisons).
struct Clock {
    using time_point = double;
    static double now() {
        static const bool cpu = [] {
            const char* e = std::getenv("ATTNRAG_BENCH_CPUTIME");
            return e != nullptr && e[0] == '1';
        }();
        timespec ts{};
        clock_gettime(cpu ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
        return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
    }
};

double seconds_since(double t0) {
    return Clock::now() - t0;
}

// Valid random rows of `type` (finite, normal-range scales: no denormal slow paths).
std::vector<uint8_t> random_rows(DType type, int64_t n_rows, int64_t n_cols, std::mt19937& rng) {
    const size_t rb = row_bytes(type, n_cols);
    std::vector<uint8_t> out(rb * static_cast<size_t>(n_rows));
    std::uniform_int_distribution<int> byte(0, 255);
    for (auto& b : out) b = static_cast<uint8_t>(byte(rng));
    std::uniform_real_distribution<float> val(-1.0f, 1.0f), scale(0.001f, 0.01f);
    auto put16 = [](uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); };
    const TypeTraits* tt = type_traits(type);
    const int64_t n_blocks = static_cast<int64_t>(out.size() / tt->block_bytes);
    for (int64_t b = 0; b < n_blocks; ++b) {
        uint8_t* p = out.data() + static_cast<size_t>(b) * tt->block_bytes;
        switch (type) {
            case DType::F32: {
                const float f = val(rng);
                std::memcpy(p, &f, 4);
                break;
            }
            case DType::F16: put16(p, f32_to_f16(val(rng))); break;
            case DType::BF16: put16(p, f32_to_bf16(val(rng))); break;
            case DType::Q4_0:
            case DType::Q8_0: put16(p, f32_to_f16(scale(rng))); break;
            case DType::Q4_1:
            case DType::Q4_K:
            case DType::Q5_K:
                put16(p, f32_to_f16(scale(rng)));
                put16(p + 2, f32_to_f16(scale(rng)));
                break;
            case DType::Q6_K: put16(p + 208, f32_to_f16(scale(rng))); break;
        }
    }
    return out;
}

double bench_memcpy(size_t bytes, double budget) {
    std::vector<uint8_t> a(bytes, 1), b(bytes, 2);
    double best = 1e30;
    const auto start = Clock::now();
    do {
        const auto t0 = Clock::now();
        std::memcpy(b.data(), a.data(), bytes);
        best = std::min(best, seconds_since(t0));
        a[0] = b[bytes / 2];
    } while (seconds_since(start) < budget);
    return static_cast<double>(bytes) / best / 1e9;
}

// Read-only streaming rate of a plain float sum (the compiler vectorises it).
double bench_read(size_t bytes, double budget) {
    std::vector<float> a(bytes / 4, 1.0f);
    double best = 1e30;
    volatile float sink = 0;
    const auto start = Clock::now();
    do {
        const auto t0 = Clock::now();
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
        for (size_t i = 0; i + 8 <= a.size(); i += 8) {
            s0 += a[i];
            s1 += a[i + 1];
            s2 += a[i + 2];
            s3 += a[i + 3];
            s4 += a[i + 4];
            s5 += a[i + 5];
            s6 += a[i + 6];
            s7 += a[i + 7];
        }
        sink = s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
        best = std::min(best, seconds_since(t0));
    } while (seconds_since(start) < budget);
    (void)sink;
    return static_cast<double>(bytes) / best / 1e9;
}

struct Shape {
    int64_t n_rows, n_cols;
};

}  // namespace

int main(int argc, char** argv) {
    const double budget = argc > 1 ? std::atof(argv[1]) : 0.25;
    const std::string only_type = argc > 2 ? argv[2] : "";
    const std::string only_level = argc > 3 ? argv[3] : "";
    const DType types[] = {DType::Q4_1, DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::Q5_K,
                           DType::Q6_K, DType::F16,  DType::BF16, DType::F32};
    const Shape shapes[] = {{1536, 576}, {576, 1536}, {49152, 576}};
    constexpr size_t kPool = size_t{512} << 20;
    std::mt19937 rng(42);

    std::printf("attnrag bench_kernels: single thread, detected SIMD level %s\n",
                std::string(simd_level_name(detected_simd_level())).c_str());
    std::printf(
        "memcpy 256 MiB: %.1f GB/s copied (%.1f GB/s read+write); float sum read 256 MiB: %.1f "
        "GB/s\n",
        bench_memcpy(size_t{256} << 20, budget * 4),
        2 * bench_memcpy(size_t{256} << 20, budget * 4), bench_read(size_t{256} << 20, budget * 4));
    std::printf(
        "GB/s of weight bytes per matvec (rows x cols); hot = one matrix repeated (best "
        "call), cold = streamed from a 512 MiB pool (best 32 MB chunk)\n");
    std::printf("%-6s %-7s %-12s %9s %9s %9s %10s\n", "type", "level", "shape", "MB", "hot", "cold",
                "us/cold");

    for (DType t : types) {
        const TypeTraits* tt = type_traits(t);
        if (!only_type.empty() && only_type != tt->name) continue;
        const int slot = kernel_type_index(t);
        // One pool per type: distinct random rows tiled to 512 MiB.
        const int64_t pattern_rows = 4096;
        const int64_t pool_cols = 1536;
        const std::vector<uint8_t> pattern = random_rows(t, pattern_rows, pool_cols, rng);
        std::vector<uint8_t> pool(kPool);
        for (size_t off = 0; off < kPool; off += pattern.size()) {
            std::memcpy(pool.data() + off, pattern.data(), std::min(pattern.size(), kPool - off));
        }
        for (Shape sh : shapes) {
            // K-quant rows come in 256-element super-blocks: 576 columns become 768.
            sh.n_cols = (sh.n_cols + tt->block_elems - 1) / tt->block_elems * tt->block_elems;
            const size_t rb = row_bytes(t, sh.n_cols);
            const size_t mat_bytes = rb * static_cast<size_t>(sh.n_rows);
            const int64_t n_mats = static_cast<int64_t>(kPool / mat_bytes);
            std::vector<float> xf(static_cast<size_t>(sh.n_cols));
            std::normal_distribution<float> nd(0.0f, 1.0f);
            for (auto& v : xf) v = nd(rng);
            std::vector<BlockQ8A> xq(static_cast<size_t>(sh.n_cols / kQK));
            cpu_kernels(SimdLevel::Scalar).quantize_q8a(xf.data(), xq.data(), sh.n_cols);
            const void* x = tt->quantized ? static_cast<const void*>(xq.data()) : xf.data();
            std::vector<float> y(static_cast<size_t>(sh.n_rows));

            for (int lv = 0; lv <= static_cast<int>(detected_simd_level()); ++lv) {
                if (!only_level.empty() &&
                    only_level != simd_level_name(static_cast<SimdLevel>(lv)))
                    continue;
                const CpuKernels& k = cpu_kernels(static_cast<SimdLevel>(lv));
                MatVecFn mv = k.matvec[slot];
                // The scalar level is slow; give it fewer repetitions rather than more time.
                const double b = lv == 0 ? budget / 2 : budget;
                // hot
                mv(sh.n_cols, sh.n_rows, pool.data(), rb, x, y.data());
                double best = 1e30;
                auto start = Clock::now();
                do {
                    const auto t0 = Clock::now();
                    mv(sh.n_cols, sh.n_rows, pool.data(), rb, x, y.data());
                    best = std::min(best, seconds_since(t0));
                } while (seconds_since(start) < b);
                const double hot = static_cast<double>(mat_bytes) / best / 1e9;
                // cold: walk through the pool, one matrix after another, in chunks of >= 32 MB;
                // the best chunk is reported (the machine may be shared; the best is the one
                // nobody interrupted).
                int64_t calls = 0;
                double best_chunk = 0;
                start = Clock::now();
                do {
                    const auto t0 = Clock::now();
                    size_t streamed = 0;
                    do {
                        const uint8_t* w =
                            pool.data() + static_cast<size_t>(calls % n_mats) * mat_bytes;
                        mv(sh.n_cols, sh.n_rows, w, rb, x, y.data());
                        ++calls;
                        streamed += mat_bytes;
                    } while (streamed < (size_t{32} << 20));
                    best_chunk = std::max(best_chunk,
                                          static_cast<double>(streamed) / seconds_since(t0) / 1e9);
                } while (seconds_since(start) < b);
                const double cold = best_chunk;
                const double secs = static_cast<double>(mat_bytes) / (cold * 1e9);
                char shape[64];
                std::snprintf(shape, sizeof shape, "%lldx%lld", static_cast<long long>(sh.n_rows),
                              static_cast<long long>(sh.n_cols));
                std::printf("%-6s %-7s %-12s %9.2f %9.1f %9.1f %10.1f\n",
                            std::string(tt->name).c_str(),
                            std::string(simd_level_name(static_cast<SimdLevel>(lv))).c_str(), shape,
                            static_cast<double>(mat_bytes) / 1e6, hot, cold, secs * 1e6);
                std::fflush(stdout);
            }
        }
    }
    return 0;
}
