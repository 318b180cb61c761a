// The CUDA backend's interface in a build without it (-DATTNRAG_CUDA=OFF): no device is ever
// available, so no Device exists and its members are never reached.
#include "attnrag/kernels/cuda.hpp"

namespace attnrag::kernels::cuda {

namespace {
constexpr const char* kNoBackend =
    "this build has no CUDA backend (configure with -DATTNRAG_CUDA=ON on a machine with nvcc)";
}

bool available(std::string* why) {
    if (why) *why = kNoBackend;
    return false;
}

struct Device::Impl {
    std::string error = kNoBackend;
};

Device::Device(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Device::~Device() = default;

std::unique_ptr<Device> Device::create(std::string* error) {
    if (error) *error = kNoBackend;
    return nullptr;
}

DeviceInfo Device::info() const { return {}; }
void* Device::alloc(size_t) { return nullptr; }
void Device::free(void*) {}
void Device::upload(void*, const void*, size_t) {}
bool Device::download(void*, const void*, size_t) { return false; }
void Device::copy(void*, const void*, size_t) {}
bool Device::sync() { return false; }
const std::string& Device::error() const { return impl_->error; }
void Device::reset_error() {}
void Device::dequant(DType, const void*, float*, int64_t) {}
void Device::gather_rows(const float*, int64_t, const int32_t*, int64_t, float*) {}
void Device::rmsnorm(const float*, const float*, float, float*, int64_t, int64_t) {}
void Device::add(float*, const float*, int64_t) {}
void Device::add_rows(float*, const float*, int64_t, int64_t) {}
void Device::silu_mul(float*, const float*, int64_t) {}
void Device::rope(float*, int64_t, int64_t, int64_t, int64_t, const double*, RopeStyle) {}
void Device::matmul(const float*, int64_t, int64_t, const float*, int64_t, float*, int64_t) {}
void Device::attention(const AttentionArgs&) {}
double Device::measure_sgemm_gflops(int64_t, int) { return 0.0; }
double Device::measure_copy_gbs(size_t, int) { return 0.0; }

}  // namespace attnrag::kernels::cuda
