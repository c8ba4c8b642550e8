// SPDX-License-Identifier: Apache-2.0
/// \file
/// A small reader of Hugging Face's safetensors format: an 8-byte little-endian header length
/// N, N bytes of JSON (`{"name": {"dtype": "BF16", "shape": [r, c], "data_offsets": [b, e]},
/// ..., "__metadata__": {...}}`, offsets relative to the first byte after the header), then the
/// raw little-endian tensor data. BF16, F16 and F32 tensors are converted to float32 exactly.
///
/// Every malformed input is a load_error naming the field and the value. Nothing is
/// allocated from a number read in the file before it is checked against the file's real size:
/// the header length is bounded by the file (and by 100 MB), each tensor's byte range by the
/// data section, and a tensor's element count by its byte range.
#pragma once

#include <nlohmann/json.hpp>
#include <ropekit/storage.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace long_context {

/// A malformed or unexpected input file (safetensors, config.json, the model directory): the
/// message names the source, the field at fault and the value found, e.g. `safetensors:
/// model.norm.weight.shape must be [256] for this model (got [255])`. The CLI prints it and
/// exits 2.
class load_error : public std::runtime_error {
  public:
    /// \param field the header key or tensor field at fault; \param message the whole text.
    load_error(std::string field, const std::string& message)
        : std::runtime_error(message), field_(std::move(field)) {}
    /// The field the error is about (`header_length`, `<tensor>.data_offsets`, ...).
    const std::string& field() const noexcept { return field_; }

  private:
    std::string field_;
};

/// Throws load_error "`source`: `field` `requirement` (got `value`)".
[[noreturn]] inline void load_fail(const char* source, const std::string& field,
                                   const std::string& requirement, const std::string& value) {
    throw load_error(
        field, std::string(source) + ": " + field + " " + requirement + " (got " + value + ")");
}

/// load_fail for the safetensors file.
[[noreturn]] inline void safetensors_fail(const std::string& field, const std::string& requirement,
                                          const std::string& value) {
    load_fail("safetensors", field, requirement, value);
}

/// Element types the reader converts to float32.
enum class dtype { bf16, f16, f32 };

/// Bytes per element of `t`.
inline std::size_t dtype_size(dtype t) noexcept {
    return t == dtype::f32 ? 4 : 2;
}

/// The safetensors spelling of `t` ("BF16", "F16", "F32").
inline const char* dtype_name(dtype t) noexcept {
    return t == dtype::bf16 ? "BF16" : t == dtype::f16 ? "F16" : "F32";
}

/// One tensor of the header: its type, shape and byte range inside the data section.
struct tensor_info {
    std::string name;                 ///< the header key
    dtype type = dtype::f32;          ///< element type
    std::vector<std::int64_t> shape;  ///< dimensions, outermost first (row-major)
    std::uint64_t begin = 0;          ///< first byte, relative to the data section
    std::uint64_t end = 0;            ///< one past the last byte
    /// Number of elements (the product of the shape; 1 for a scalar).
    std::int64_t elements() const noexcept {
        std::int64_t n = 1;
        for (std::int64_t d : shape) n *= d;
        return n;
    }
};

/// "[a, b, c]" for messages.
inline std::string format_shape(const std::vector<std::int64_t>& shape) {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

namespace detail {

/// Largest header the reader accepts: 100 MB (the format's own limit; ours is a few KB).
inline constexpr std::uint64_t max_header_bytes = 100u * 1000u * 1000u;

/// Largest dimension / element count accepted (far above any tensor here; keeps products of
/// dimensions from overflowing before they are compared with the byte range).
inline constexpr std::int64_t max_elements = std::int64_t(1) << 40;

}  // namespace detail

/// A safetensors file held in memory: the parsed header and the raw bytes.
class safetensors_file {
  public:
    /// Reads and checks the file at `path`; throws load_error (field `path` when it cannot
    /// be read) for any malformed content.
    static safetensors_file open(const std::string& path) {
        std::ifstream f(path, std::ios::binary | std::ios::ate);
        if (!f) safetensors_fail("path", "cannot be opened", "\"" + path + "\"");
        const std::streamoff size = f.tellg();
        if (size < 0) safetensors_fail("path", "cannot be read", "\"" + path + "\"");
        std::vector<unsigned char> bytes(static_cast<std::size_t>(size));
        f.seekg(0);
        if (size > 0 && !f.read(reinterpret_cast<char*>(bytes.data()), size))
            safetensors_fail("path", "cannot be read", "\"" + path + "\"");
        return parse(std::move(bytes));
    }

    /// Parses a whole file's bytes; throws load_error naming the field at fault.
    static safetensors_file parse(std::vector<unsigned char> bytes) {
        safetensors_file out;
        out.bytes_ = std::move(bytes);
        out.parse_header();
        return out;
    }

    /// Every tensor of the header, by name.
    const std::map<std::string, tensor_info>& tensors() const noexcept { return tensors_; }
    /// The optional "__metadata__" object (null when absent).
    const nlohmann::json& metadata() const noexcept { return metadata_; }
    /// Whether the file holds a tensor `name`.
    bool contains(const std::string& name) const { return tensors_.count(name) != 0; }

    /// The tensor `name`; throws load_error (field `tensor`) when it is missing.
    const tensor_info& info(const std::string& name) const {
        const auto it = tensors_.find(name);
        if (it == tensors_.end()) safetensors_fail("tensor", "is missing from the file", name);
        return it->second;
    }

    /// The tensor `name`, checked to have exactly `shape`, converted to float32 into `out`
    /// (which must hold the product of `shape` floats). Throws load_error naming
    /// `<name>.shape` for another shape, `tensor` when it is missing.
    void read_f32(const std::string& name, const std::vector<std::int64_t>& shape,
                  float* out) const {
        const tensor_info& t = info(name);
        if (t.shape != shape)
            safetensors_fail(name + ".shape", "must be " + format_shape(shape) + " for this model",
                             format_shape(t.shape));
        const unsigned char* p = bytes_.data() + data_start_ + t.begin;
        const std::int64_t n = t.elements();
        switch (t.type) {
            case dtype::bf16:
                for (std::int64_t i = 0; i < n; ++i, p += 2)
                    out[i] = float(ropekit::bfloat16::from_bits(std::uint16_t(p[0] | (p[1] << 8))));
                break;
            case dtype::f16:
                for (std::int64_t i = 0; i < n; ++i, p += 2)
                    out[i] = ropekit::half::to_float(std::uint16_t(p[0] | (p[1] << 8)));
                break;
            case dtype::f32:
                for (std::int64_t i = 0; i < n; ++i, p += 4) {
                    const std::uint32_t bits = std::uint32_t(p[0]) | (std::uint32_t(p[1]) << 8) |
                                               (std::uint32_t(p[2]) << 16) |
                                               (std::uint32_t(p[3]) << 24);
                    std::memcpy(out + i, &bits, sizeof(float));
                }
                break;
        }
    }

    /// read_f32 into a new vector.
    std::vector<float> read_f32(const std::string& name,
                                const std::vector<std::int64_t>& shape) const {
        std::int64_t n = 1;
        for (std::int64_t d : shape) n *= d;
        std::vector<float> out(static_cast<std::size_t>(n));
        read_f32(name, shape, out.data());
        return out;
    }

  private:
    void parse_header() {
        const std::uint64_t file_size = bytes_.size();
        if (file_size < 8)
            safetensors_fail("header_length", "needs 8 bytes, the file is shorter",
                             std::to_string(file_size) + " bytes");
        std::uint64_t n = 0;
        for (int i = 7; i >= 0; --i) n = (n << 8) | bytes_[std::size_t(i)];  // little-endian
        if (n > detail::max_header_bytes)
            safetensors_fail("header_length", "must be <= 100 MB", std::to_string(n));
        if (n > file_size - 8)
            safetensors_fail(
                "header_length",
                "exceeds the file (" + std::to_string(file_size - 8) + " bytes after the length)",
                std::to_string(n));
        if (n == 0) safetensors_fail("header_length", "must be > 0", "0");
        data_start_ = 8 + n;
        const std::uint64_t data_size = file_size - data_start_;

        nlohmann::json header;
        try {
            header = nlohmann::json::parse(bytes_.begin() + 8,
                                           bytes_.begin() + std::ptrdiff_t(data_start_));
        } catch (const nlohmann::json::parse_error& e) {
            safetensors_fail("header", "must be valid JSON", e.what());
        }
        if (!header.is_object()) safetensors_fail("header", "must be a JSON object", header.dump());

        std::vector<const tensor_info*> by_offset;
        for (auto it = header.begin(); it != header.end(); ++it) {
            const std::string& name = it.key();
            if (name == "__metadata__") {
                if (!it->is_object())
                    safetensors_fail("__metadata__", "must be an object", it->dump());
                metadata_ = *it;
                continue;
            }
            tensors_[name] = parse_tensor(name, *it, data_size);
            by_offset.push_back(&tensors_[name]);
        }
        // Byte ranges must not overlap (a tensor writing over another is a corrupt file).
        std::sort(by_offset.begin(), by_offset.end(),
                  [](const tensor_info* a, const tensor_info* b) { return a->begin < b->begin; });
        for (std::size_t i = 1; i < by_offset.size(); ++i)
            if (by_offset[i]->begin < by_offset[i - 1]->end)
                safetensors_fail(by_offset[i]->name + ".data_offsets",
                                 "must not overlap " + by_offset[i - 1]->name + " (which ends at " +
                                     std::to_string(by_offset[i - 1]->end) + ")",
                                 "[" + std::to_string(by_offset[i]->begin) + ", " +
                                     std::to_string(by_offset[i]->end) + "]");
    }

    static tensor_info parse_tensor(const std::string& name, const nlohmann::json& j,
                                    std::uint64_t data_size) {
        if (!j.is_object()) safetensors_fail(name, "must be an object", j.dump());
        tensor_info t;
        t.name = name;
        const auto dt = j.find("dtype");
        if (dt == j.end()) safetensors_fail(name + ".dtype", "is missing", "nothing");
        if (!dt->is_string()) safetensors_fail(name + ".dtype", "must be a string", dt->dump());
        const std::string d = dt->get<std::string>();
        if (d == "BF16")
            t.type = dtype::bf16;
        else if (d == "F16")
            t.type = dtype::f16;
        else if (d == "F32")
            t.type = dtype::f32;
        else
            safetensors_fail(name + ".dtype", "must be BF16, F16 or F32", "\"" + d + "\"");

        const auto sh = j.find("shape");
        if (sh == j.end()) safetensors_fail(name + ".shape", "is missing", "nothing");
        if (!sh->is_array()) safetensors_fail(name + ".shape", "must be an array", sh->dump());
        std::int64_t elements = 1;
        for (const auto& dim : *sh) {
            if (!dim.is_number_integer() || dim.get<std::int64_t>() < 0 ||
                dim.get<std::int64_t>() > detail::max_elements)
                safetensors_fail(name + ".shape", "must hold integers in [0, 2^40]", sh->dump());
            const std::int64_t v = dim.get<std::int64_t>();
            t.shape.push_back(v);
            // elements <= 2^40 and v <= 2^40: the product is checked without overflow.
            if (v != 0 && elements > detail::max_elements / v)
                safetensors_fail(name + ".shape", "must have at most 2^40 elements", sh->dump());
            elements *= v;
        }

        const auto off = j.find("data_offsets");
        if (off == j.end()) safetensors_fail(name + ".data_offsets", "is missing", "nothing");
        if (!off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
            !(*off)[1].is_number_unsigned())
            safetensors_fail(name + ".data_offsets", "must be [begin, end], integers >= 0",
                             off->dump());
        t.begin = (*off)[0].get<std::uint64_t>();
        t.end = (*off)[1].get<std::uint64_t>();
        if (t.begin > t.end)
            safetensors_fail(name + ".data_offsets", "must have begin <= end", off->dump());
        if (t.end > data_size)
            safetensors_fail(
                name + ".data_offsets",
                "must lie inside the data section (" + std::to_string(data_size) + " bytes)",
                off->dump());
        const std::uint64_t expected = std::uint64_t(elements) * dtype_size(t.type);
        if (t.end - t.begin != expected)
            safetensors_fail(name + ".data_offsets",
                             "must span shape x dtype size = " + std::to_string(expected) +
                                 " bytes (" + format_shape(t.shape) + " " + dtype_name(t.type) +
                                 ")",
                             off->dump() + ", " + std::to_string(t.end - t.begin) + " bytes");
        return t;
    }

    std::vector<unsigned char> bytes_;
    std::uint64_t data_start_ = 0;
    std::map<std::string, tensor_info> tensors_;
    nlohmann::json metadata_;
};

}  // namespace long_context
