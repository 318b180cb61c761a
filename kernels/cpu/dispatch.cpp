// Run-time choice of the SIMD level (cpuid, ATTNRAG_SIMD, tests) and the per-level kernel tables.
#include <atomic>
#include <cstdlib>
#include <string_view>

#include "attnrag/kernels/cpu.hpp"
#include "kernels_impl.h"

namespace attnrag::kernels {
namespace {

SimdLevel detect() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    // __builtin_cpu_supports also checks that the OS saves the wide registers (XCR0).
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                      __builtin_cpu_supports("f16c");
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni");
    if (avx512) return SimdLevel::Avx512;
    if (avx2) return SimdLevel::Avx2;
#endif
    return SimdLevel::Scalar;
}

SimdLevel clamp_to_detected(SimdLevel level) {
    const SimdLevel det = detected_simd_level();
    return static_cast<int>(level) > static_cast<int>(det) ? det : level;
}

SimdLevel initial_level() {
    SimdLevel level = detected_simd_level();
    if (const char* env = std::getenv("ATTNRAG_SIMD")) {
        const std::string_view v(env);
        if (v == "scalar")
            level = SimdLevel::Scalar;
        else if (v == "avx2")
            level = SimdLevel::Avx2;
        else if (v == "avx512")
            level = SimdLevel::Avx512;
    }
    return clamp_to_detected(level);
}

std::atomic<int>& active_slot() {
    static std::atomic<int> slot{static_cast<int>(initial_level())};
    return slot;
}

struct Tables {
    CpuKernels by_level[3];
    Tables() {
        for (auto& t : by_level) ref::fill_table(t);
        // SIMD tables start from the scalar one so any op without a SIMD body falls back.
        // The fill functions live in files compiled for their ISA (the compiler may use VEX
        // instructions even there), so they run only on CPUs that have it; levels above the
        // detected one are never handed out (cpu_kernels clamps) and keep the scalar table.
        const SimdLevel det = detected_simd_level();
        if (det >= SimdLevel::Avx2) {
            avx2::fill_table(by_level[1]);
            avx2::fill_table(by_level[2]);
        }
        if (det >= SimdLevel::Avx512) {
            avx512::fill_table(by_level[2]);
            avx512::fill_gemm_table(by_level[2]);
        }
        by_level[1].level = SimdLevel::Avx2;
        by_level[2].level = SimdLevel::Avx512;
    }
};

}  // namespace

SimdLevel detected_simd_level() {
    static const SimdLevel level = detect();
    return level;
}

SimdLevel active_simd_level() {
    return static_cast<SimdLevel>(active_slot().load(std::memory_order_relaxed));
}

void set_simd_level(SimdLevel level) {
    active_slot().store(static_cast<int>(clamp_to_detected(level)), std::memory_order_relaxed);
}

const CpuKernels& cpu_kernels(SimdLevel level) {
    static const Tables tables;
    return tables.by_level[static_cast<int>(clamp_to_detected(level))];
}

const CpuKernels& cpu_kernels() {
    return cpu_kernels(active_simd_level());
}

}  // namespace attnrag::kernels
