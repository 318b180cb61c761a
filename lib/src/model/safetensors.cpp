// safetensors reader: header parsing and validation over a read-only mapping, f32 conversion.
#include "attnrag/safetensors.hpp"

#include "common/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <system_error>

namespace attnrag {

namespace {

struct DTypeInfo {
    SafetensorsDType dtype;
    std::string_view name;
    size_t size;
};

constexpr std::array<DTypeInfo, 15> kDTypes = {{
    {SafetensorsDType::Bool, "BOOL", 1},
    {SafetensorsDType::U8, "U8", 1},
    {SafetensorsDType::I8, "I8", 1},
    {SafetensorsDType::F8_E5M2, "F8_E5M2", 1},
    {SafetensorsDType::F8_E4M3, "F8_E4M3", 1},
    {SafetensorsDType::U16, "U16", 2},
    {SafetensorsDType::I16, "I16", 2},
    {SafetensorsDType::F16, "F16", 2},
    {SafetensorsDType::BF16, "BF16", 2},
    {SafetensorsDType::U32, "U32", 4},
    {SafetensorsDType::I32, "I32", 4},
    {SafetensorsDType::F32, "F32", 4},
    {SafetensorsDType::U64, "U64", 8},
    {SafetensorsDType::I64, "I64", 8},
    {SafetensorsDType::F64, "F64", 8},
}};

// kDTypes is indexed by the enum's value.
constexpr bool dtypes_in_enum_order() {
    for (size_t i = 0; i < kDTypes.size(); ++i) {
        if (static_cast<size_t>(kDTypes[i].dtype) != i) return false;
    }
    return true;
}
static_assert(dtypes_in_enum_order());

const DTypeInfo& info_of(SafetensorsDType dtype) {
    return kDTypes[static_cast<size_t>(dtype)];
}

uint64_t read_u64_le(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

using Json = nlohmann::json;

// A JSON value's short description for messages ("string", "array", ...).
std::string json_kind(const Json& j) {
    return j.type_name();
}

}  // namespace

std::string_view safetensors_dtype_name(SafetensorsDType dtype) {
    return info_of(dtype).name;
}

size_t safetensors_dtype_size(SafetensorsDType dtype) {
    return info_of(dtype).size;
}

std::optional<SafetensorsDType> safetensors_dtype_from_name(std::string_view name) {
    for (const DTypeInfo& d : kDTypes) {
        if (d.name == name) return d.dtype;
    }
    return std::nullopt;
}

std::optional<kernels::DType> safetensors_kernel_type(SafetensorsDType dtype) {
    switch (dtype) {
        case SafetensorsDType::F32: return kernels::DType::F32;
        case SafetensorsDType::F16: return kernels::DType::F16;
        case SafetensorsDType::BF16: return kernels::DType::BF16;
        default: return std::nullopt;
    }
}

struct SafetensorsFile::Impl {
    std::string path;
    const uint8_t* bytes = nullptr;  // [size]: the mapping or `owned`
    uint64_t size = 0;
    detail::MappedFile mapping;
    std::unique_ptr<uint8_t[]> owned;

    uint64_t data_offset = 0;
    std::vector<SafetensorsTensor> tensors;            // ascending offset
    std::map<std::string, size_t, std::less<>> index;  // name -> tensors[i]

    Impl() = default;
    Impl(const Impl&) = delete;
    Impl& operator=(const Impl&) = delete;

    Error at(Errc code, uint64_t offset, const std::string& what) const {
        return make_error(code, path + ": offset " + std::to_string(offset) + ": " + what);
    }
    Error tensor_error(Errc code, std::string_view name, const std::string& what) const {
        return make_error(code, path + ": tensor '" + std::string(name) + "': " + what);
    }

    Status parse();
    Result<SafetensorsTensor> parse_tensor(const std::string& name, const Json& j,
                                           uint64_t data_bytes) const;
};

Result<SafetensorsTensor> SafetensorsFile::Impl::parse_tensor(const std::string& name,
                                                              const Json& j,
                                                              uint64_t data_bytes) const {
    if (!j.is_object()) {
        return tensor_error(Errc::Corrupt, name,
                            "entry is a JSON " + json_kind(j) + ", expected an object");
    }
    SafetensorsTensor t;
    t.name = name;

    auto dtype_it = j.find("dtype");
    if (dtype_it == j.end() || !dtype_it->is_string()) {
        return tensor_error(Errc::Corrupt, name, "missing or non-string \"dtype\"");
    }
    const auto& dtype_name = dtype_it->get_ref<const std::string&>();
    auto dtype = safetensors_dtype_from_name(dtype_name);
    if (!dtype) {
        return tensor_error(Errc::Unsupported, name, "unsupported dtype '" + dtype_name + "'");
    }
    t.dtype = *dtype;

    auto shape_it = j.find("shape");
    if (shape_it == j.end() || !shape_it->is_array()) {
        return tensor_error(Errc::Corrupt, name, "missing or non-array \"shape\"");
    }
    // prod(shape) * dtype size, checked against overflow: the product must stay below 2^63.
    uint64_t n_elements = 1;
    bool overflow = false;
    bool has_zero = false;  // a zero dim makes any product of the others harmless
    constexpr uint64_t kMaxElems = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    for (const Json& d : *shape_it) {
        if (!d.is_number_unsigned()) {
            return tensor_error(Errc::Corrupt, name,
                                "shape entry " + d.dump() + " is not a non-negative integer");
        }
        auto dim = d.get<uint64_t>();
        if (dim > kMaxElems) {
            return tensor_error(Errc::Corrupt, name, "shape entry " + d.dump() + " is too large");
        }
        t.shape.push_back(static_cast<int64_t>(dim));
        if (dim == 0) has_zero = true;
        if (dim != 0 && n_elements > kMaxElems / dim) overflow = true;
        if (!overflow) n_elements *= dim;
    }
    size_t elem_size = safetensors_dtype_size(t.dtype);
    if (has_zero) {
        overflow = false;
        n_elements = 0;
    }
    if (!overflow && n_elements > kMaxElems / elem_size) overflow = true;
    if (overflow) {
        return tensor_error(Errc::Corrupt, name, "shape " + shape_it->dump() + " is too large");
    }
    t.n_elements = static_cast<int64_t>(n_elements);

    auto off_it = j.find("data_offsets");
    if (off_it == j.end() || !off_it->is_array() || off_it->size() != 2 ||
        !(*off_it)[0].is_number_unsigned() || !(*off_it)[1].is_number_unsigned()) {
        return tensor_error(Errc::Corrupt, name,
                            "\"data_offsets\" must be two non-negative integers");
    }
    auto begin = (*off_it)[0].get<uint64_t>();
    auto end = (*off_it)[1].get<uint64_t>();
    if (begin > end) {
        return tensor_error(Errc::Corrupt, name,
                            "data_offsets " + off_it->dump() + ": begin after end");
    }
    if (end > data_bytes) {
        return tensor_error(Errc::Corrupt, name,
                            "data_offsets " + off_it->dump() + " run past the data section (" +
                                std::to_string(data_bytes) + " bytes; file truncated?)");
    }
    uint64_t expect = n_elements * elem_size;
    if (end - begin != expect) {
        return tensor_error(Errc::Corrupt, name,
                            "data_offsets " + off_it->dump() + " span " +
                                std::to_string(end - begin) + " bytes, but shape " +
                                shape_it->dump() + " of " + dtype_name + " needs " +
                                std::to_string(expect));
    }
    t.offset = begin;
    t.n_bytes = end - begin;
    return t;
}

Status SafetensorsFile::Impl::parse() {
    if (size < 8) {
        return at(Errc::Corrupt, 0,
                  "file is " + std::to_string(size) +
                      " bytes; a safetensors file starts with an 8-byte header length");
    }
    uint64_t header_bytes = read_u64_le(bytes);
    if (header_bytes > kMaxHeaderBytes) {
        return at(Errc::Corrupt, 0,
                  "header length " + std::to_string(header_bytes) + " exceeds the limit of " +
                      std::to_string(kMaxHeaderBytes) + " bytes");
    }
    if (header_bytes > size - 8) {
        return at(Errc::Corrupt, 8,
                  "header of " + std::to_string(header_bytes) + " bytes runs past the end of the " +
                      std::to_string(size) + "-byte file (truncated?)");
    }
    if (header_bytes < 2) {
        return at(Errc::Corrupt, 8,
                  "header of " + std::to_string(header_bytes) + " bytes cannot hold a JSON object");
    }
    data_offset = 8 + header_bytes;
    const uint64_t data_bytes = size - data_offset;

    Json header;
    try {
        const auto* first = reinterpret_cast<const char*>(bytes + 8);
        header = Json::parse(first, first + header_bytes);
    } catch (const Json::parse_error& e) {
        uint64_t pos = e.byte > 0 ? static_cast<uint64_t>(e.byte) - 1 : 0;
        return at(Errc::Corrupt, 8 + std::min<uint64_t>(pos, header_bytes),
                  std::string("header is not valid JSON: ") + e.what());
    } catch (const std::exception& e) {
        return at(Errc::Corrupt, 8, std::string("cannot parse the JSON header: ") + e.what());
    }
    if (!header.is_object()) {
        return at(Errc::Corrupt, 8,
                  "header is a JSON " + json_kind(header) + ", expected an object");
    }

    try {
        tensors.reserve(header.size());
        for (auto it = header.begin(); it != header.end(); ++it) {
            if (it.key() == "__metadata__") continue;
            auto t = parse_tensor(it.key(), it.value(), data_bytes);
            if (!t.ok()) return t.error();
            tensors.push_back(std::move(t).value());
        }
    } catch (const std::exception& e) {  // defensive: the checks above avoid type_error
        return at(Errc::Corrupt, 8, std::string("bad header: ") + e.what());
    }

    std::stable_sort(
        tensors.begin(), tensors.end(),
        [](const SafetensorsTensor& a, const SafetensorsTensor& b) { return a.offset < b.offset; });
    const SafetensorsTensor* prev = nullptr;
    for (const SafetensorsTensor& t : tensors) {
        if (t.n_bytes == 0) continue;  // empty tensors occupy no bytes
        if (prev != nullptr && prev->offset + prev->n_bytes > t.offset) {
            return tensor_error(Errc::Corrupt, t.name,
                                "data [" + std::to_string(t.offset) + ", " +
                                    std::to_string(t.offset + t.n_bytes) + ") overlaps tensor '" +
                                    prev->name + "' [" + std::to_string(prev->offset) + ", " +
                                    std::to_string(prev->offset + prev->n_bytes) + ")");
        }
        prev = &t;
    }
    for (size_t i = 0; i < tensors.size(); ++i) index.emplace(tensors[i].name, i);
    return {};
}

SafetensorsFile::SafetensorsFile(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;
SafetensorsFile::~SafetensorsFile() = default;

Result<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
    auto impl = std::make_unique<Impl>();
    impl->path = path.string();
    auto mapping = detail::MappedFile::open(impl->path);
    if (!mapping) return mapping.error();
    impl->mapping = std::move(mapping).value();
    impl->bytes = impl->mapping.data();
    impl->size = impl->mapping.size();
    ATTNRAG_TRY(impl->parse());
    return SafetensorsFile(std::move(impl));
}

Result<SafetensorsFile> SafetensorsFile::from_bytes(std::span<const uint8_t> bytes,
                                                    std::string name) {
    auto impl = std::make_unique<Impl>();
    impl->path = std::move(name);
    impl->size = bytes.size();
    // Exactly sized, so sanitizers see any overread.
    impl->owned.reset(new uint8_t[std::max<size_t>(bytes.size(), 1)]);
    if (!bytes.empty()) std::memcpy(impl->owned.get(), bytes.data(), bytes.size());
    impl->bytes = impl->owned.get();
    ATTNRAG_TRY(impl->parse());
    return SafetensorsFile(std::move(impl));
}

const std::string& SafetensorsFile::path() const {
    return impl_->path;
}
uint64_t SafetensorsFile::file_bytes() const {
    return impl_->size;
}
uint64_t SafetensorsFile::data_offset() const {
    return impl_->data_offset;
}
const std::vector<SafetensorsTensor>& SafetensorsFile::tensors() const {
    return impl_->tensors;
}

const SafetensorsTensor* SafetensorsFile::find(std::string_view name) const {
    auto it = impl_->index.find(name);
    return it == impl_->index.end() ? nullptr : &impl_->tensors[it->second];
}

Result<const SafetensorsTensor*> SafetensorsFile::get(std::string_view name) const {
    if (const SafetensorsTensor* t = find(name)) return t;
    return impl_->tensor_error(Errc::NotFound, name, "not found");
}

std::span<const uint8_t> SafetensorsFile::data(const SafetensorsTensor& tensor) const {
    return {impl_->bytes + impl_->data_offset + tensor.offset, static_cast<size_t>(tensor.n_bytes)};
}

Status SafetensorsFile::to_f32(const SafetensorsTensor& tensor, std::span<float> out) const {
    if (out.size() != static_cast<size_t>(tensor.n_elements)) {
        return impl_->tensor_error(Errc::InvalidArgument, tensor.name,
                                   "output holds " + std::to_string(out.size()) +
                                       " floats, tensor has " + std::to_string(tensor.n_elements));
    }
    std::span<const uint8_t> src = data(tensor);
    switch (tensor.dtype) {
        case SafetensorsDType::F32:
            if (!src.empty()) std::memcpy(out.data(), src.data(), src.size());
            return {};
        case SafetensorsDType::F16:
        case SafetensorsDType::BF16: {
            const bool f16 = tensor.dtype == SafetensorsDType::F16;
            for (size_t i = 0; i < out.size(); ++i) {
                auto h = static_cast<uint16_t>(src[2 * i] | (src[2 * i + 1] << 8));
                out[i] = f16 ? kernels::f16_to_f32(h) : kernels::bf16_to_f32(h);
            }
            return {};
        }
        default:
            return impl_->tensor_error(Errc::Unsupported, tensor.name,
                                       "dtype " +
                                           std::string(safetensors_dtype_name(tensor.dtype)) +
                                           " cannot be read as f32");
    }
}

Result<std::vector<float>> SafetensorsFile::to_f32(const SafetensorsTensor& tensor) const {
    std::vector<float> out;
    if (!safetensors_kernel_type(tensor.dtype)) {
        return impl_->tensor_error(Errc::Unsupported, tensor.name,
                                   "dtype " + std::string(safetensors_dtype_name(tensor.dtype)) +
                                       " cannot be read as f32");
    }
    try {
        out.resize(static_cast<size_t>(tensor.n_elements));
    } catch (const std::bad_alloc&) {
        return impl_->tensor_error(
            Errc::OutOfMemory, tensor.name,
            "cannot allocate " + std::to_string(tensor.n_elements) + " floats");
    }
    ATTNRAG_TRY(to_f32(tensor, out));
    return out;
}

}  // namespace attnrag
