// ATTNRAG_SIMD: read once, lowers the SIMD level, never raises it (its own program: it must run
// before anything else asks for the level).
#include <catch2/catch.hpp>
#include <cstdlib>

#include "attnrag/kernels/cpu.hpp"

using namespace attnrag::kernels;

TEST_CASE("ATTNRAG_SIMD lowers the active level and is read once") {
    const SimdLevel det = detected_simd_level();
    // Ask for avx2: the active level is avx2, or the detected one when that is lower.
    REQUIRE(setenv("ATTNRAG_SIMD", "avx2", 1) == 0);
    const SimdLevel want =
        static_cast<int>(det) < static_cast<int>(SimdLevel::Avx2) ? det : SimdLevel::Avx2;
    CHECK(active_simd_level() == want);
    CHECK(cpu_kernels().level == want);
    // Read once: changing the variable later has no effect.
    REQUIRE(setenv("ATTNRAG_SIMD", "scalar", 1) == 0);
    CHECK(active_simd_level() == want);
    // set_simd_level still moves within [scalar, detected].
    set_simd_level(SimdLevel::Scalar);
    CHECK(active_simd_level() == SimdLevel::Scalar);
    CHECK(cpu_kernels().level == SimdLevel::Scalar);
    set_simd_level(SimdLevel::Avx512);
    CHECK(active_simd_level() == det);
}
