// SPDX-License-Identifier: Apache-2.0
// ctest of safetensors.hpp: a well-formed file reads back exactly (BF16, F16, F32, the
// little-endian byte order) and every malformed one throws load_error naming the field at
// fault. Exits 1 listing each failed case.
#include "safetensors.hpp"

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace {

using long_context::load_error;
using long_context::safetensors_file;
using bytes = std::vector<unsigned char>;

int failures = 0;

void expect(bool ok, const std::string& what) {
    if (!ok) {
        std::printf("FAIL: %s\n", what.c_str());
        ++failures;
    }
}

/// A file: the 8-byte little-endian length of `header`, the header, then `data`.
bytes make_file(const std::string& header, const bytes& data, std::uint64_t length = ~0ull) {
    if (length == ~0ull) length = header.size();
    bytes out;
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<unsigned char>(length >> (8 * i)));
    out.insert(out.end(), header.begin(), header.end());
    out.insert(out.end(), data.begin(), data.end());
    return out;
}

/// Runs `f`, which must throw load_error whose field is `field` and whose message contains
/// `text`.
void expect_error(const std::string& name, const std::string& field, const std::function<void()>& f,
                  const std::string& text = "") {
    try {
        f();
        expect(false, name + ": no error (expected field " + field + ")");
    } catch (const load_error& e) {
        expect(e.field() == field && std::string(e.what()).find(text) != std::string::npos,
               name + ": field \"" + e.field() + "\", expected \"" + field + "\" with \"" + text +
                   "\" (" + e.what() + ")");
    }
}

void expect_parse_error(const std::string& name, const std::string& field, const bytes& file,
                        const std::string& text = "") {
    expect_error(
        name, field, [&] { safetensors_file::parse(file); }, text);
}

}  // namespace

int main() {
    // A good file: a BF16 [2, 2], an F16 [3] and an F32 scalar-like [1], with metadata.
    // bf16 0x3f80 = 1, 0xc000 = -2, 0x3f00 = 0.5, 0x0001 = the smallest subnormal (2^-133);
    // f16 0x3c00 = 1, 0x0001 = 2^-24 (subnormal), 0xfc00 = -inf; f32 0x40490fdb = pi.
    const bytes data = {0x80, 0x3f, 0x00, 0xc0, 0x00, 0x3f, 0x01, 0x00,  // a
                        0x00, 0x3c, 0x01, 0x00, 0x00, 0xfc,              // b
                        0xdb, 0x0f, 0x49, 0x40};                         // c
    const std::string good =
        R"({"__metadata__": {"format": "pt"},)"
        R"( "a": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},)"
        R"( "b": {"dtype": "F16", "shape": [3], "data_offsets": [8, 14]},)"
        R"( "c": {"dtype": "F32", "shape": [1], "data_offsets": [14, 18]}}   )";
    try {
        const safetensors_file f = safetensors_file::parse(make_file(good, data));
        const auto a = f.read_f32("a", {2, 2});
        expect(a == std::vector<float>{1.0f, -2.0f, 0.5f, 0x1p-133f}, "BF16 values");
        const auto b = f.read_f32("b", {3});
        expect(b[0] == 1.0f && b[1] == 0x1p-24f && b[2] == -INFINITY, "F16 values");
        const auto c = f.read_f32("c", {1});
        expect(c[0] == 3.14159274101257324f, "F32 value");
        expect(f.metadata().value("format", "") == "pt", "metadata");
        expect(f.tensors().size() == 3, "three tensors");
        expect_error("wrong shape", "a.shape", [&] { f.read_f32("a", {4}); });
        expect_error("missing tensor", "tensor", [&] { f.read_f32("model.norm.weight", {2}); });
    } catch (const load_error& e) {
        expect(false, std::string("good file: ") + e.what());
    }

    expect_parse_error("shorter than 8 bytes", "header_length", bytes{1, 0, 0});
    expect_parse_error("length beyond the file", "header_length", make_file("{}", {}, 1000),
                       "exceeds the file");
    expect_parse_error("length > 100 MB", "header_length",
                       make_file("{}", {}, 0x4141414141414141ull), "100 MB");
    expect_parse_error("zero length", "header_length", make_file("", {}));
    expect_parse_error("not JSON", "header", make_file("{\"a\": ", {}));
    expect_parse_error("not an object", "header", make_file("[1, 2]", {}));
    expect_parse_error("metadata not an object", "__metadata__",
                       make_file(R"({"__metadata__": 3})", {}));
    expect_parse_error(
        "unknown dtype", "x.dtype",
        make_file(R"({"x": {"dtype": "I8", "shape": [2], "data_offsets": [0, 2]}})", bytes(2)));
    expect_parse_error(
        "F64 unsupported", "x.dtype",
        make_file(R"({"x": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}})", bytes(8)));
    expect_parse_error("dtype missing", "x.dtype",
                       make_file(R"({"x": {"shape": [1], "data_offsets": [0, 4]}})", bytes(4)));
    expect_parse_error(
        "negative dim", "x.shape",
        make_file(R"({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", bytes(4)));
    expect_parse_error("huge shape", "x.shape",
                       make_file(R"({"x": {"dtype": "F32", "shape": [1099511627776, 1099511627776],
                   "data_offsets": [0, 4]}})",
                                 bytes(4)));
    expect_parse_error(
        "offsets out of range", "x.data_offsets",
        make_file(R"({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", bytes(4)));
    expect_parse_error(
        "begin > end", "x.data_offsets",
        make_file(R"({"x": {"dtype": "F32", "shape": [0], "data_offsets": [4, 0]}})", bytes(4)));
    expect_parse_error(
        "offsets not matching shape x dtype", "x.data_offsets",
        make_file(R"({"x": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 8]}})", bytes(8)));
    expect_parse_error(
        "offsets not integers", "x.data_offsets",
        make_file(R"({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", bytes(4)));
    expect_parse_error("overlap", "y.data_offsets",
                       make_file(R"({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                      "y": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                                 bytes(8)));
    expect_error("missing file", "path",
                 [] { safetensors_file::open("/nonexistent/model.safetensors"); });

    std::printf("%s (%d failures)\n", failures ? "FAILED" : "all safetensors checks passed",
                failures);
    return failures ? 1 : 0;
}
