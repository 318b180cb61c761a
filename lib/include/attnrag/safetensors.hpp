// safetensors files (Hugging Face weights): memory-mapped reader of the JSON header and tensors.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attnrag/kernels/types.hpp"
#include "attnrag/result.hpp"

namespace attnrag {

// The element types of the safetensors format (the "dtype" strings of the header).
enum class SafetensorsDType {
    Bool, U8, I8, F8_E5M2, F8_E4M3, U16, I16, F16, BF16, U32, I32, F32, U64, I64, F64,
};

// "F32", "BF16", ... as written in headers.
std::string_view safetensors_dtype_name(SafetensorsDType dtype);
// Bytes per element (1 for Bool and the 8-bit types).
size_t safetensors_dtype_size(SafetensorsDType dtype);
// Parses a header dtype string; std::nullopt for an unknown one.
std::optional<SafetensorsDType> safetensors_dtype_from_name(std::string_view name);
// The kernel type of a float dtype (F32, F16, BF16); std::nullopt for the others.
std::optional<kernels::DType> safetensors_kernel_type(SafetensorsDType dtype);

struct SafetensorsTensor {
    std::string name;
    SafetensorsDType dtype = SafetensorsDType::F32;
    std::vector<int64_t> shape;  // row-major (PyTorch order): shape.back() is contiguous
    uint64_t offset = 0;         // from the start of the data section (data_offsets[0])
    uint64_t n_bytes = 0;        // data_offsets[1] - data_offsets[0] = n_elements * dtype size
    int64_t n_elements = 0;      // prod(shape); 1 for a scalar (empty shape)
};

// A safetensors file, memory-mapped read-only: an 8-byte little-endian header length N, N bytes
// of JSON ({"name": {"dtype", "shape", "data_offsets": [begin, end)}, "__metadata__": {...}}),
// then the data section. open() checks everything a reader relies on: the header fits the file
// and is a JSON object; every tensor has a known dtype (else Unsupported naming the tensor),
// non-negative dims, and data_offsets inside the data section, of exactly prod(shape) * dtype
// size bytes, not overlapping another tensor's. Errors name the file and the byte offset or the
// tensor. __metadata__ is skipped.
// Immutable after open; safe to share between threads.
class SafetensorsFile {
   public:
    // The header may not exceed this (the format's own limit is 100 MB).
    static constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

    static Result<SafetensorsFile> open(const std::filesystem::path& path);
    // Parses a copy of `bytes` with the same checks as open(); `name` stands for the path in
    // messages. For tests and fuzzing.
    static Result<SafetensorsFile> from_bytes(std::span<const uint8_t> bytes,
                                              std::string name = "<memory>");

    SafetensorsFile(SafetensorsFile&&) noexcept;
    SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
    ~SafetensorsFile();

    const std::string& path() const;
    uint64_t file_bytes() const;
    // Start of the data section in the file: 8 + header length.
    uint64_t data_offset() const;

    // Tensors in data order (ascending offset).
    const std::vector<SafetensorsTensor>& tensors() const;
    // nullptr when absent.
    const SafetensorsTensor* find(std::string_view name) const;
    // NotFound naming the file and the tensor when absent.
    Result<const SafetensorsTensor*> get(std::string_view name) const;

    // The tensor's bytes inside the mapping; live as long as this file. Not necessarily aligned
    // to the element size (the header length decides); to_f32() copes with any alignment.
    std::span<const uint8_t> data(const SafetensorsTensor& tensor) const;

    // The tensor's elements as f32 (F32 copied, F16/BF16 converted); other dtypes: Unsupported
    // naming the tensor.
    Result<std::vector<float>> to_f32(const SafetensorsTensor& tensor) const;
    // As above into out[0, n_elements).
    Status to_f32(const SafetensorsTensor& tensor, std::span<float> out) const;

   private:
    struct Impl;
    explicit SafetensorsFile(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace attnrag
