// SPDX-License-Identifier: Apache-2.0
/// \file
/// A small reader of Hugging Face's safetensors format: an 8-byte little-endian header length
/// N, N bytes of JSON (`{"name": {"dtype": "BF16", "shape": [r, c], "data_offsets": [b, e]},
/// ..., "__metadata__": {...}}`, offsets relative to the first byte after the header), then the
/// raw little-endian tensor data. BF16, F16 and F32 tensors are converted to float32 exactly.
///
/// Every malformed input is a load_error naming the field and the value, never another exception
/// (nlohmann's out_of_range for 1e400, a stack overflow in dump() for deep JSON): the JSON is
/// parsed by parse_json() below, which bounds the nesting, and values are shown in messages
/// through show(), which bounds the length. Nothing is allocated from a number read in the file
/// before it is checked against the file's real size: the header length is bounded by the file
/// (and by 100 MB), each tensor's byte range by the data section, and a tensor's element count
/// by its byte range.
#pragma once

#include <nlohmann/json.hpp>
#include <ropekit/storage.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <new>
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

namespace detail {

/// `s` cut to at most `n` characters (n >= 3), "..." marking the cut.
inline std::string cut(const std::string& s, std::size_t n) {
    return s.size() <= n ? s : s.substr(0, n - 3) + "...";
}

}  // namespace detail

/// Throws load_error "`source`: `field` `requirement` (got `value`)". The field() keeps the
/// whole name; the message shows at most about 350 characters of the three parts, as a tensor
/// name or a value from the file can be megabytes long.
[[noreturn]] inline void load_fail(const char* source, const std::string& field,
                                   const std::string& requirement, const std::string& value) {
    // The field's end names the part at fault (`.dtype`, `.data_offsets`): keep it.
    const std::string shown_field =
        field.size() <= 80 ? field : field.substr(0, 60) + "..." + field.substr(field.size() - 17);
    throw load_error(field, std::string(source) + ": " + shown_field + " " +
                                detail::cut(requirement, 140) + " (got " + detail::cut(value, 120) +
                                ")");
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

/// "[a, b, c]" for messages; past about 60 characters "[a, b, ...]" (a shape may hold any
/// number of 1s).
inline std::string format_shape(const std::vector<std::int64_t>& shape) {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) {
        if (s.size() > 60) return s + ", ...]";
        s += (i ? ", " : "") + std::to_string(shape[i]);
    }
    return s + "]";
}

namespace detail {

/// Appends a short rendering of `v` to `out`: at most 2 levels and about `budget` characters.
/// Not json::dump(), which copies a value of any size into the message (and recurses once per
/// level). Invalid UTF-8 from a string cut here becomes U+FFFD instead of nlohmann's type_error.
inline void show_into(const nlohmann::json& v, int depth, std::size_t budget, std::string& out) {
    const auto dump = [](const nlohmann::json& x) {
        return x.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    };
    if (out.size() > budget) return;
    if (!v.is_structured()) {
        if (v.is_string()) {
            const auto& str = v.get_ref<const std::string&>();
            out += dump(nlohmann::json(str.size() > budget ? str.substr(0, budget) : str));
        } else {
            out += dump(v);
        }
        return;
    }
    const bool obj = v.is_object();
    out += obj ? '{' : '[';
    if (depth >= 2 && !v.empty()) {
        out += "...";
    } else {
        bool first = true;
        for (auto it = v.begin(); it != v.end() && out.size() <= budget; ++it) {
            if (!first) out += ", ";
            first = false;
            if (obj) out += dump(nlohmann::json(it.key())) + ": ";
            show_into(*it, depth + 1, budget, out);
        }
    }
    out += obj ? '}' : ']';
}

/// `v` for an error message, cut to 60 characters.
inline std::string show(const nlohmann::json& v) {
    std::string s;
    show_into(v, 0, 64, s);
    return cut(s, 60);
}

/// Deepest nesting of arrays and objects accepted in a safetensors header or a config.json
/// (both use 3 levels), the idea of ropekit's max_config_json_depth: json::dump() recurses once
/// per level, and 200 KB of text holds 100000 levels, enough to overflow the stack.
inline constexpr int max_json_depth = 64;

/// Parses the JSON text [first, last) of `source` ("safetensors", "config.json"). Every failure
/// is a load_error with field `field`: malformed text, a number beyond double (1e400, which
/// nlohmann reports as out_of_range, not parse_error), nesting deeper than max_json_depth
/// (refused while parsing, before the level is built), a DOM that does not fit in memory.
template <class It>
nlohmann::json parse_json(const char* source, const std::string& field, It first, It last) {
    using json = nlohmann::json;
    const json::parser_callback_t bound_depth = [&](int depth, json::parse_event_t event, json&) {
        // depth counts the levels already open around this array/object.
        if ((event == json::parse_event_t::array_start ||
             event == json::parse_event_t::object_start) &&
            depth >= max_json_depth)
            load_fail(source, field,
                      "must not nest arrays/objects deeper than " + std::to_string(max_json_depth) +
                          " levels",
                      "level " + std::to_string(depth + 1));
        return true;
    };
    try {
        return json::parse(first, last, bound_depth);
    } catch (const json::exception& e) {
        load_fail(source, field, "must be valid JSON", e.what());
    } catch (const std::bad_alloc&) {
        load_fail(source, field, "does not fit in memory as a JSON document",
                  std::to_string(std::distance(first, last)) + " bytes");
    }
}

/// The whole content of the regular file at `path`, at most `max_bytes`. Throws load_error
/// (`source`, field `field`) for a missing or unreadable file, a directory or other non-regular
/// file (std::ifstream opens a directory and reports a size near 2^63: std::bad_alloc) and a
/// file over the limit or over the free memory.
inline std::vector<unsigned char> read_file(const char* source, const std::string& field,
                                            const std::string& path, std::uint64_t max_bytes) {
    const std::string shown = "\"" + path + "\"";
    std::error_code ec;
    const auto st = std::filesystem::status(path, ec);
    if (ec || !std::filesystem::exists(st)) load_fail(source, field, "cannot be opened", shown);
    if (!std::filesystem::is_regular_file(st))
        load_fail(source, field, "must be a regular file", shown);
    const std::uintmax_t size = std::filesystem::file_size(path, ec);
    if (ec) load_fail(source, field, "cannot be read", shown);
    if (size > max_bytes)
        load_fail(source, field, "must be at most " + std::to_string(max_bytes) + " bytes",
                  shown + ", " + std::to_string(size) + " bytes");
    std::vector<unsigned char> bytes;
    try {
        bytes.resize(static_cast<std::size_t>(size));
    } catch (const std::bad_alloc&) {
        load_fail(source, field, "does not fit in memory",
                  shown + ", " + std::to_string(size) + " bytes");
    }
    std::ifstream f(path, std::ios::binary);
    if (!f) load_fail(source, field, "cannot be opened", shown);
    // The size is from stat(): a file that shrank since is a short read, one that grew is read
    // up to the size seen.
    if (size > 0 && !f.read(reinterpret_cast<char*>(bytes.data()), std::streamsize(size)))
        load_fail(source, field, "cannot be read", shown);
    return bytes;
}

/// Largest header the reader accepts: 100 MB (the format's own limit; ours is a few KB).
inline constexpr std::uint64_t max_header_bytes = 100u * 1000u * 1000u;

/// Largest dimension / element count accepted (far above any tensor here; keeps products of
/// dimensions from overflowing before they are compared with the byte range).
inline constexpr std::int64_t max_elements = std::int64_t(1) << 40;

}  // namespace detail

/// A safetensors file held in memory: the parsed header and the raw bytes.
class safetensors_file {
  public:
    /// Reads and checks the file at `path`; throws load_error (field `path` when it is not a
    /// readable regular file or does not fit in memory) for any malformed content.
    static safetensors_file open(const std::string& path) {
        return parse(detail::read_file("safetensors", "path", path,
                                       std::numeric_limits<std::uint64_t>::max()));
    }

    /// Parses a whole file's bytes; throws load_error naming the field at fault, and no other
    /// exception.
    static safetensors_file parse(std::vector<unsigned char> bytes) {
        safetensors_file out;
        out.bytes_ = std::move(bytes);
        // parse_header checks a type before each get<>() and shows values through show(), so
        // nlohmann cannot throw there; this keeps the promise if a later change slips.
        try {
            out.parse_header();
        } catch (const nlohmann::json::exception& e) {
            safetensors_fail("header", "cannot be read", e.what());
        } catch (const std::bad_alloc&) {
            safetensors_fail("header", "does not fit in memory",
                             std::to_string(out.bytes_.size()) + " bytes");
        }
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

    /// The tensor `name`, checked to have exactly `shape`. Throws load_error naming
    /// `<name>.shape` for another shape, `tensor` when it is missing. A tensor that passes has
    /// its element count bounded by the file's size (parse checked its byte range).
    const tensor_info& check(const std::string& name,
                             const std::vector<std::int64_t>& shape) const {
        const tensor_info& t = info(name);
        if (t.shape != shape)
            safetensors_fail(name + ".shape", "must be " + format_shape(shape) + " for this model",
                             format_shape(t.shape));
        return t;
    }

    /// The tensor `name`, checked to have exactly `shape` (see check()), converted to float32
    /// into `out` (which must hold the product of `shape` floats).
    void read_f32(const std::string& name, const std::vector<std::int64_t>& shape,
                  float* out) const {
        const tensor_info& t = check(name, shape);
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

    /// read_f32 into a new vector, allocated only once the shape matched the file.
    std::vector<float> read_f32(const std::string& name,
                                const std::vector<std::int64_t>& shape) const {
        std::vector<float> out(static_cast<std::size_t>(check(name, shape).elements()));
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

        const nlohmann::json header =
            detail::parse_json("safetensors", "header", bytes_.begin() + 8,
                               bytes_.begin() + std::ptrdiff_t(data_start_));
        if (!header.is_object())
            safetensors_fail("header", "must be a JSON object", detail::show(header));

        std::vector<const tensor_info*> by_offset;
        for (auto it = header.begin(); it != header.end(); ++it) {
            const std::string& name = it.key();
            if (name == "__metadata__") {
                if (!it->is_object())
                    safetensors_fail("__metadata__", "must be an object", detail::show(*it));
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
                                 "must not overlap " + detail::cut(by_offset[i - 1]->name, 40) +
                                     " (which ends at " + std::to_string(by_offset[i - 1]->end) +
                                     ")",
                                 "[" + std::to_string(by_offset[i]->begin) + ", " +
                                     std::to_string(by_offset[i]->end) + "]");
    }

    static tensor_info parse_tensor(const std::string& name, const nlohmann::json& j,
                                    std::uint64_t data_size) {
        if (!j.is_object()) safetensors_fail(name, "must be an object", detail::show(j));
        tensor_info t;
        t.name = name;
        const auto dt = j.find("dtype");
        if (dt == j.end()) safetensors_fail(name + ".dtype", "is missing", "nothing");
        if (!dt->is_string())
            safetensors_fail(name + ".dtype", "must be a string", detail::show(*dt));
        const std::string d = dt->get<std::string>();
        if (d == "BF16")
            t.type = dtype::bf16;
        else if (d == "F16")
            t.type = dtype::f16;
        else if (d == "F32")
            t.type = dtype::f32;
        else
            safetensors_fail(name + ".dtype", "must be BF16, F16 or F32", detail::show(*dt));

        const auto sh = j.find("shape");
        if (sh == j.end()) safetensors_fail(name + ".shape", "is missing", "nothing");
        if (!sh->is_array())
            safetensors_fail(name + ".shape", "must be an array", detail::show(*sh));
        std::int64_t elements = 1;
        for (const auto& dim : *sh) {
            if (!dim.is_number_integer() || dim.get<std::int64_t>() < 0 ||
                dim.get<std::int64_t>() > detail::max_elements)
                safetensors_fail(name + ".shape", "must hold integers in [0, 2^40]",
                                 detail::show(*sh));
            const std::int64_t v = dim.get<std::int64_t>();
            t.shape.push_back(v);
            // elements <= 2^40 and v <= 2^40: the product is checked without overflow.
            if (v != 0 && elements > detail::max_elements / v)
                safetensors_fail(name + ".shape", "must have at most 2^40 elements",
                                 detail::show(*sh));
            elements *= v;
        }

        const auto off = j.find("data_offsets");
        if (off == j.end()) safetensors_fail(name + ".data_offsets", "is missing", "nothing");
        if (!off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
            !(*off)[1].is_number_unsigned())
            safetensors_fail(name + ".data_offsets", "must be [begin, end], integers >= 0",
                             detail::show(*off));
        t.begin = (*off)[0].get<std::uint64_t>();
        t.end = (*off)[1].get<std::uint64_t>();
        if (t.begin > t.end)
            safetensors_fail(name + ".data_offsets", "must have begin <= end", detail::show(*off));
        if (t.end > data_size)
            safetensors_fail(
                name + ".data_offsets",
                "must lie inside the data section (" + std::to_string(data_size) + " bytes)",
                detail::show(*off));
        const std::uint64_t expected = std::uint64_t(elements) * dtype_size(t.type);
        if (t.end - t.begin != expected)
            safetensors_fail(
                name + ".data_offsets",
                "must span shape x dtype size = " + std::to_string(expected) + " bytes (" +
                    format_shape(t.shape) + " " + dtype_name(t.type) + ")",
                detail::show(*off) + ", " + std::to_string(t.end - t.begin) + " bytes");
        return t;
    }

    std::vector<unsigned char> bytes_;
    std::uint64_t data_start_ = 0;
    std::map<std::string, tensor_info> tensors_;
    nlohmann::json metadata_;
};

}  // namespace long_context
