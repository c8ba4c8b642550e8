// SPDX-License-Identifier: Apache-2.0
// ctest of safetensors.hpp: a well-formed file reads back exactly (BF16, F16, F32, the
// little-endian byte order) and every malformed one throws load_error naming the field at
// fault (never another exception type), with a message of bounded length. Exits 1 listing each
// failed case.
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
        std::fflush(stdout);  // kept if a later case crashes
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

/// Longest message a load_error may carry: a 200 KB value in the file must not be copied into
/// it whole.
constexpr std::size_t max_message = 400;

/// Runs `f`, which must throw load_error whose field is `field` and whose message contains
/// `text` and is at most max_message long. Any other exception is a failure too (issue 24:
/// nlohmann's out_of_range escaped the reader), reported by type and cut to max_message.
void expect_error(const std::string& name, const std::string& field, const std::function<void()>& f,
                  const std::string& text = "") {
    try {
        f();
        expect(false, name + ": no error (expected field " + field + ")");
    } catch (const load_error& e) {
        const std::string what = e.what();
        expect(e.field() == field && what.find(text) != std::string::npos,
               name + ": field \"" + e.field().substr(0, max_message) + "\", expected \"" + field +
                   "\" with \"" + text + "\" (" + what.substr(0, max_message) + ")");
        expect(what.size() <= max_message,
               name + ": message of " + std::to_string(what.size()) + " characters");
    } catch (const std::exception& e) {
        expect(false, name + ": not a load_error: " + std::string(e.what()).substr(0, max_message));
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
    expect_error("a directory", "path", [] { safetensors_file::open("/"); });

    // Issue 24 item 5: numbers beyond double are nlohmann's out_of_range, not parse_error.
    expect_parse_error(
        "number beyond double in a shape", "header",
        make_file(R"({"x": {"dtype": "F32", "shape": [1e400], "data_offsets": [0, 4]}})", bytes(4)),
        "1e400");
    expect_parse_error("number beyond double in the metadata", "header",
                       make_file(R"({"__metadata__": {"v": 5E0505}})", {}), "5E0505");
    // Item 6: what is shown of a value is bounded: a 200 KB array, a 100 KB tensor name, a 100 KB
    // dtype.
    std::string wide = "[0";
    for (int i = 0; i < 100000; ++i) wide += ",1";
    wide += "]";
    expect_parse_error("200 KB array header", "header", make_file(wide, {}), "[0, 1, 1");
    std::string wide_shape = "[";
    for (int i = 0; i < 100000; ++i) wide_shape += "1,";
    wide_shape += "-1]";
    expect_parse_error("200 KB shape", "x.shape",
                       make_file(R"({"x": {"dtype": "F32", "shape": )" + wide_shape +
                                     R"(, "data_offsets": [0, 4]}})",
                                 bytes(4)),
                       "[1, 1, 1");
    const std::string long_name(100000, 'n');
    expect_parse_error("100 KB tensor name", long_name + ".dtype",
                       make_file("{\"" + long_name + R"(": {"dtype": "I8"}})", {}), "nnnn");
    expect_parse_error("100 KB dtype", "x.dtype",
                       make_file(R"({"x": {"dtype": ")" + long_name + R"(", "shape": [1]}})", {}),
                       "BF16, F16 or F32");
    // Item 6: 100000 nested arrays (200 KB) are valid JSON; dumping them into the message
    // recursed once per level and overflowed the stack. Refused by depth, named.
    const std::string deep = std::string(100000, '[') + std::string(100000, ']');
    expect_parse_error("100000 nested arrays", "header", make_file(deep, {}), "deeper than 64");
    expect_parse_error("100000 nested arrays in a tensor", "header",
                       make_file(R"({"x": )" + deep + "}", {}), "deeper than 64");

    std::printf("%s (%d failures)\n", failures ? "FAILED" : "all safetensors checks passed",
                failures);
    return failures ? 1 : 0;
}
