// CUDA backend ops against the CPU scalar reference and naive double-precision loops. On a
// machine or build without a CUDA device every test checks that the backend says why and stops.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "attnrag/kernels/cpu.hpp"
#include "attnrag/kernels/cuda.hpp"
#include "attnrag/kernels/types.hpp"

using namespace attnrag::kernels;

namespace {

// The device, or null (with a note in the test output) when there is none.
cuda::Device* device() {
    static std::string why;
    static std::unique_ptr<cuda::Device> dev = cuda::Device::create(&why);
    if (!dev) WARN("no CUDA device, CUDA kernel checks skipped: " << why);
    return dev.get();
}

template <class T>
std::vector<T> round_trip(cuda::Device& d, const std::vector<T>& host,
                          const std::function<void(T*)>& op) {
    cuda::Buffer<T> buf(d, host.size());
    REQUIRE(buf);
    d.upload(buf.get(), host.data(), host.size() * sizeof(T));
    op(buf.get());
    std::vector<T> out(host.size());
    REQUIRE(d.download(out.data(), buf.get(), host.size() * sizeof(T)));
    return out;
}

template <class T>
cuda::Buffer<T> on_device(cuda::Device& d, const std::vector<T>& host) {
    cuda::Buffer<T> buf(d, host.size());
    REQUIRE(buf);
    d.upload(buf.get(), host.data(), host.size() * sizeof(T));
    return buf;
}

template <class T>
std::vector<T> to_host(cuda::Device& d, const cuda::Buffer<T>& buf) {
    std::vector<T> out(buf.size());
    REQUIRE(d.download(out.data(), buf.get(), buf.size() * sizeof(T)));
    return out;
}

std::vector<float> random_floats(size_t n, std::mt19937& rng, float scale = 1.0f) {
    std::normal_distribution<float> dist(0.0f, scale);
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng);
    return v;
}

uint32_t bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

}  // namespace

TEST_CASE("the CUDA backend says why it is unavailable") {
    std::string why;
    if (cuda::available(&why)) {
        REQUIRE(device() != nullptr);
        const cuda::DeviceInfo info = device()->info();
        CHECK_FALSE(info.name.empty());
        CHECK(info.total_bytes > 0);
        return;
    }
    CHECK_FALSE(why.empty());
    std::string error;
    CHECK(cuda::Device::create(&error) == nullptr);
    CHECK(error == why);
}

TEST_CASE("CUDA dequant equals the CPU scalar reference bit for bit") {
    cuda::Device* d = device();
    if (!d) return;
    std::mt19937 rng(7);
    std::uniform_int_distribution<int> byte(0, 255);
    for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q4_0, DType::Q4_1, DType::Q8_0, DType::Q4_K,
                    DType::Q5_K, DType::Q6_K}) {
        const TypeTraits* tr = type_traits(t);
        INFO(tr->name);
        // Random bytes are valid blocks of every format (scales included: NaN and infinity too).
        const int64_t n_blocks = 37;
        const int64_t n = n_blocks * tr->block_elems;
        std::vector<uint8_t> raw(static_cast<size_t>(n_blocks) * tr->block_bytes);
        for (uint8_t& b : raw) b = static_cast<uint8_t>(byte(rng));
        if (t == DType::F32) {  // keep f32 finite so the comparison is of values, not NaN payloads
            for (size_t i = 0; i < raw.size(); i += 4) raw[i + 3] &= 0x3f;
        }
        std::vector<float> want(static_cast<size_t>(n));
        cpu_kernels(SimdLevel::Scalar).dequant[kernel_type_index(t)](raw.data(), want.data(), n);
        const cuda::Buffer<uint8_t> src = on_device(*d, raw);
        cuda::Buffer<float> dst(*d, static_cast<size_t>(n));
        d->dequant(t, src.get(), dst.get(), n);
        const std::vector<float> got = to_host(*d, dst);
        int bad = 0;
        for (size_t i = 0; i < want.size(); ++i) {
            if (std::isnan(want[i]) ? !std::isnan(got[i]) : bits(want[i]) != bits(got[i])) ++bad;
        }
        CHECK(bad == 0);
    }
}

TEST_CASE("CUDA row ops equal the CPU reference") {
    cuda::Device* d = device();
    if (!d) return;
    std::mt19937 rng(3);
    const CpuKernels& ref = cpu_kernels(SimdLevel::Scalar);
    const int64_t rows = 5, n = 577;  // odd length
    const std::vector<float> x = random_floats(static_cast<size_t>(rows * n), rng, 2.0f);
    const std::vector<float> w = random_floats(static_cast<size_t>(n), rng);
    const std::vector<float> u = random_floats(static_cast<size_t>(rows * n), rng);

    SECTION("rmsnorm") {
        const cuda::Buffer<float> dx = on_device(*d, x), dw = on_device(*d, w);
        cuda::Buffer<float> dy(*d, x.size());
        d->rmsnorm(dx.get(), dw.get(), 1e-5f, dy.get(), rows, n);
        const std::vector<float> got = to_host(*d, dy);
        for (int64_t r = 0; r < rows; ++r) {
            std::vector<float> want(static_cast<size_t>(n));
            ref.rmsnorm(x.data() + r * n, w.data(), 1e-5f, want.data(), n);
            for (int64_t i = 0; i < n; ++i) {
                REQUIRE(got[static_cast<size_t>(r * n + i)] == Approx(want[static_cast<size_t>(i)]).epsilon(1e-6));
            }
        }
    }
    SECTION("silu_mul, add, add_rows") {
        const cuda::Buffer<float> du = on_device(*d, u), dw = on_device(*d, w);
        std::vector<float> got = round_trip<float>(*d, x, [&](float* g) { d->silu_mul(g, du.get(), rows * n); });
        std::vector<float> want = x;
        ref.silu_mul(want.data(), u.data(), rows * n);
        for (size_t i = 0; i < want.size(); ++i) REQUIRE(got[i] == Approx(want[i]).epsilon(1e-6).margin(1e-30));
        got = round_trip<float>(*d, x, [&](float* y) { d->add(y, du.get(), rows * n); });
        for (size_t i = 0; i < x.size(); ++i) REQUIRE(got[i] == x[i] + u[i]);
        got = round_trip<float>(*d, x, [&](float* y) { d->add_rows(y, dw.get(), rows, n); });
        for (size_t i = 0; i < x.size(); ++i) REQUIRE(got[i] == x[i] + w[i % static_cast<size_t>(n)]);
    }
    SECTION("gather_rows") {
        const cuda::Buffer<float> table = on_device(*d, x);
        const std::vector<int32_t> ids = {4, 0, 4, 2};
        const cuda::Buffer<int32_t> dids = on_device(*d, ids);
        cuda::Buffer<float> out(*d, ids.size() * static_cast<size_t>(n));
        d->gather_rows(table.get(), n, dids.get(), static_cast<int64_t>(ids.size()), out.get());
        const std::vector<float> got = to_host(*d, out);
        for (size_t r = 0; r < ids.size(); ++r) {
            for (int64_t i = 0; i < n; ++i) {
                REQUIRE(got[r * static_cast<size_t>(n) + static_cast<size_t>(i)] ==
                        x[static_cast<size_t>(ids[r] * n + i)]);
            }
        }
    }
}

TEST_CASE("CUDA rope equals the CPU rotation for both styles") {
    cuda::Device* d = device();
    if (!d) return;
    std::mt19937 rng(5);
    const int64_t rows = 3, heads = 3, hd = 64;
    for (RopeStyle style : {RopeStyle::Interleaved, RopeStyle::Neox}) {
        for (int64_t n_rot : {int64_t{64}, int64_t{32}}) {
            CAPTURE(static_cast<int>(style), n_rot);
            const std::vector<float> x = random_floats(static_cast<size_t>(rows * heads * hd), rng);
            const std::vector<float> positions = {0.0f, 17.0f, 70000.0f};
            std::vector<double> cs(static_cast<size_t>(rows * n_rot));
            for (int64_t r = 0; r < rows; ++r) rope_angles(positions[static_cast<size_t>(r)], n_rot, 10000.0f, cs.data() + r * n_rot);
            const cuda::Buffer<double> dcs = on_device(*d, cs);
            const std::vector<float> got =
                round_trip<float>(*d, x, [&](float* p) { d->rope(p, rows, heads, hd, n_rot, dcs.get(), style); });
            std::vector<float> want = x;
            for (int64_t r = 0; r < rows; ++r) rope_apply(want.data() + r * heads * hd, heads, hd, n_rot, cs.data() + r * n_rot, style);
            for (size_t i = 0; i < want.size(); ++i) REQUIRE(bits(got[i]) == bits(want[i]));
        }
    }
}

TEST_CASE("CUDA matmul equals a double-precision product") {
    cuda::Device* d = device();
    if (!d) return;
    std::mt19937 rng(11);
    for (auto [m, k, n] : {std::tuple<int64_t, int64_t, int64_t>{1, 576, 192}, {37, 576, 1536}, {5, 33, 7}}) {
        CAPTURE(m, k, n);
        const std::vector<float> x = random_floats(static_cast<size_t>(m * k), rng);
        const std::vector<float> w = random_floats(static_cast<size_t>(n * k), rng);
        const cuda::Buffer<float> dx = on_device(*d, x), dw = on_device(*d, w);
        const int64_t ldy = n + 3;  // a row stride wider than the product
        cuda::Buffer<float> dy(*d, static_cast<size_t>(m * ldy));
        d->matmul(dx.get(), m, k, dw.get(), n, dy.get(), ldy);
        const std::vector<float> got = to_host(*d, dy);
        for (int64_t i = 0; i < m; ++i) {
            for (int64_t r = 0; r < n; ++r) {
                double want = 0.0, mag = 0.0;
                for (int64_t c = 0; c < k; ++c) {
                    want += static_cast<double>(x[static_cast<size_t>(i * k + c)]) * w[static_cast<size_t>(r * k + c)];
                    mag += std::fabs(static_cast<double>(x[static_cast<size_t>(i * k + c)]) * w[static_cast<size_t>(r * k + c)]);
                }
                REQUIRE(std::fabs(got[static_cast<size_t>(i * ldy + r)] - want) <= 1e-5 * mag + 1e-6);
            }
        }
    }
}

TEST_CASE("CUDA attention equals a naive softmax attention, with block masks and GQA") {
    cuda::Device* d = device();
    if (!d) return;
    std::mt19937 rng(13);
    struct Shape {
        int64_t n_head, n_head_kv, hd, n_rows, first_slot;
        bool masked;
    };
    // Below 16 rows one block per (row, head); from 16 rows the tiled kernel (32 rows x 64 keys):
    // partial row and key tiles, head_dim below, at and above 64, masks in both.
    for (const Shape& s : {Shape{9, 3, 64, 7, 300, false}, Shape{9, 3, 64, 1, 1000, false}, Shape{4, 2, 16, 20, 0, false},
                           Shape{6, 2, 100, 5, 40, true}, Shape{9, 3, 64, 33, 90, true}, Shape{2, 1, 128, 3, 5000, false},
                           Shape{9, 3, 64, 70, 2000, false}, Shape{6, 2, 100, 40, 40, true}, Shape{2, 2, 256, 17, 3, false}}) {
        CAPTURE(s.n_head, s.n_head_kv, s.hd, s.n_rows, s.first_slot, s.masked);
        const int64_t n_keys = s.first_slot + s.n_rows;
        const int64_t q_dim = s.n_head * s.hd, kv_dim = s.n_head_kv * s.hd;
        const std::vector<float> q = random_floats(static_cast<size_t>(s.n_rows * q_dim), rng, 0.5f);
        const std::vector<float> k = random_floats(static_cast<size_t>(n_keys * kv_dim), rng, 0.5f);
        const std::vector<float> v = random_floats(static_cast<size_t>(n_keys * kv_dim), rng);
        // Tags: a Shared prefix, Local passages of 13 slots each, the last rows Global.
        std::vector<int32_t> ids(static_cast<size_t>(n_keys));
        std::vector<uint8_t> kinds(static_cast<size_t>(n_keys));
        for (int64_t j = 0; j < n_keys; ++j) {
            const bool last_rows = j >= n_keys - 4;
            kinds[static_cast<size_t>(j)] = last_rows ? 0 : (j < 10 ? 1 : 2);
            ids[static_cast<size_t>(j)] = static_cast<int32_t>(j / 13);
        }
        auto visible = [&](int64_t qs, int64_t ks) {
            if (!s.masked) return true;
            const uint8_t qk = kinds[static_cast<size_t>(qs)], kk = kinds[static_cast<size_t>(ks)];
            if (qk == 0) return true;
            if (qk == 1) return kk == 1;
            return kk == 1 || (kk == 2 && ids[static_cast<size_t>(ks)] == ids[static_cast<size_t>(qs)]);
        };
        const cuda::Buffer<float> dq = on_device(*d, q), dk = on_device(*d, k), dv = on_device(*d, v);
        const cuda::Buffer<int32_t> dids = on_device(*d, ids);
        const cuda::Buffer<uint8_t> dkinds = on_device(*d, kinds);
        cuda::Buffer<float> out(*d, static_cast<size_t>(s.n_rows * q_dim)), lse(*d, static_cast<size_t>(s.n_rows * s.n_head));
        cuda::AttentionArgs a;
        a.q = dq.get();
        a.k = dk.get();
        a.v = dv.get();
        a.n_rows = s.n_rows;
        a.first_slot = s.first_slot;
        a.n_head = s.n_head;
        a.n_head_kv = s.n_head_kv;
        a.head_dim = s.hd;
        a.scale = 1.0f / std::sqrt(static_cast<float>(s.hd));
        if (s.masked) {
            a.tag_ids = dids.get();
            a.tag_kinds = dkinds.get();
        }
        a.out = out.get();
        a.lse = lse.get();
        d->attention(a);
        const std::vector<float> got = to_host(*d, out), got_lse = to_host(*d, lse);
        const int64_t group = s.n_head / s.n_head_kv;
        for (int64_t r = 0; r < s.n_rows; ++r) {
            const int64_t slot = s.first_slot + r;
            for (int64_t h = 0; h < s.n_head; ++h) {
                const int64_t g = h / group;
                std::vector<double> logit(static_cast<size_t>(slot + 1), -std::numeric_limits<double>::infinity());
                double mx = -std::numeric_limits<double>::infinity();
                for (int64_t j = 0; j <= slot; ++j) {
                    if (!visible(slot, j)) continue;
                    double acc = 0.0;
                    for (int64_t c = 0; c < s.hd; ++c) {
                        acc += static_cast<double>(q[static_cast<size_t>(r * q_dim + h * s.hd + c)]) *
                               k[static_cast<size_t>(j * kv_dim + g * s.hd + c)];
                    }
                    logit[static_cast<size_t>(j)] = acc * a.scale;
                    mx = std::max(mx, logit[static_cast<size_t>(j)]);
                }
                double sum = 0.0;
                for (double& l : logit) sum += l == -std::numeric_limits<double>::infinity() ? 0.0 : std::exp(l - mx);
                REQUIRE(got_lse[static_cast<size_t>(r * s.n_head + h)] == Approx(mx + std::log(sum)).epsilon(1e-5));
                for (int64_t c = 0; c < s.hd; ++c) {
                    double want = 0.0;
                    for (int64_t j = 0; j <= slot; ++j) {
                        const double l = logit[static_cast<size_t>(j)];
                        if (l == -std::numeric_limits<double>::infinity()) continue;
                        want += std::exp(l - mx) / sum * v[static_cast<size_t>(j * kv_dim + g * s.hd + c)];
                    }
                    REQUIRE(got[static_cast<size_t>(r * q_dim + h * s.hd + c)] == Approx(want).margin(2e-5));
                }
            }
        }
    }
}

TEST_CASE("CUDA errors come back as messages") {
    cuda::Device* d = device();
    if (!d) return;
    cuda::AttentionArgs a;
    a.n_rows = 1;
    a.n_head = 2;
    a.n_head_kv = 1;
    a.head_dim = cuda::kMaxHeadDim + 1;
    d->attention(a);
    CHECK_FALSE(d->sync());
    CHECK(d->error().find("head_dim") != std::string::npos);
    d->reset_error();
    CHECK(d->sync());
    // An allocation far beyond the device's memory fails with a message, and the device goes on.
    void* huge = d->alloc(size_t{1} << 50);
    CHECK(huge == nullptr);
    CHECK(d->error().find("cudaMalloc") != std::string::npos);
    d->reset_error();
    cuda::Buffer<float> ok(*d, 16);
    CHECK(ok);
    CHECK(d->sync());
}
