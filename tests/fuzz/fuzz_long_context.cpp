// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the long_context example's readers (examples/long_context/safetensors.hpp:
// safetensors_file::parse; model.hpp: model_config::parse, model::load_weights). Every input is
// read three ways:
//  - the whole input as a safetensors file (8-byte little-endian header length, header, data);
//  - the whole input as config.json text;
//  - split at its first two NUL bytes (JSON text holds no raw NUL) into config.json text, a
//    safetensors header (the 8-byte length is written from its size, so the fuzzer need not
//    find it) and the tensor data; when both parse, the weights are loaded for that config.
// A long_context::load_error is the expected answer to bad input; anything else escaping
// (nlohmann's exceptions, ropekit::error, std::bad_alloc, a stack overflow, a sanitizer report,
// an allocation over -malloc_limit_mb) is a finding, and so is a file the reader accepts whose
// tensors do not lie inside it or do not match their shape (checked with trap()).
//
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined \
//       -fno-sanitize-recover=undefined -Iinclude -Iexamples/long_context -I/usr/include/eigen3 \
//       -DROPEKIT_FUZZ_HAVE_LONG_CONTEXT=1 tests/fuzz/fuzz_long_context.cpp \
//       -o /tmp/fuzz_long_context
//   /tmp/fuzz_long_context -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
//       /tmp/lc_corpus tests/fuzz/corpus/long_context
#if defined(ROPEKIT_FUZZ_HAVE_LONG_CONTEXT)  // tests/fuzz/CMakeLists.txt: nlohmann and Eigen
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "model.hpp"
#include "safetensors.hpp"

namespace {

/// A broken invariant: stop here so libFuzzer records the input.
[[noreturn]] void trap() {
    __builtin_trap();
}

/// Every tensor of an accepted file lies inside the file, spans exactly its shape and reads
/// back (ASan checks the reads stay in the file's buffer; the byte ranges do not overlap, so
/// the floats read are bounded by the input's size).
void check_file(const long_context::safetensors_file& f, std::size_t file_size) {
    for (const auto& [name, t] : f.tensors()) {
        if (t.begin > t.end || t.end > file_size) trap();
        const std::int64_t n = t.elements();
        if (n < 0 || std::uint64_t(n) * long_context::dtype_size(t.type) != t.end - t.begin) trap();
        if (f.read_f32(name, t.shape).size() != std::size_t(n)) trap();
    }
}

std::optional<long_context::safetensors_file> parse_file(std::vector<unsigned char> bytes) {
    const std::size_t size = bytes.size();
    try {
        long_context::safetensors_file f = long_context::safetensors_file::parse(std::move(bytes));
        check_file(f, size);
        return f;
    } catch (const long_context::load_error&) {
        return std::nullopt;  // the expected outcome for bad input
    }
}

std::optional<long_context::model_config> parse_config(const std::string& text) {
    try {
        return long_context::model_config::parse(text);
    } catch (const long_context::load_error&) {
        return std::nullopt;
    }
}

/// The weights of an accepted config from an accepted file: every matrix has the config's size.
void load_weights(const long_context::model_config& c, const long_context::safetensors_file& f) {
    long_context::model m;
    m.config = c;
    try {
        m.load_weights(f);
    } catch (const long_context::load_error&) {
        return;
    }
    const Eigen::Index H = c.hidden_size, V = c.vocab_size;
    if (m.embed.rows() != V || m.embed.cols() != H || m.lm_head.rows() != V ||
        m.lm_head.cols() != H || m.norm.size() != H ||
        m.layers.size() != std::size_t(c.num_hidden_layers))
        trap();
    for (const auto& w : m.layers)
        if (w.qkv.rows() !=
                Eigen::Index(c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim ||
            w.gate_up.rows() != 2 * Eigen::Index(c.intermediate_size) ||
            w.down.cols() != w.gate_up.rows() / 2)
            trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::vector<unsigned char> whole(data, data + size);
    const std::string text(reinterpret_cast<const char*>(data), size);
    (void)parse_file(whole);
    (void)parse_config(text);

    const std::size_t nul1 = text.find('\0');
    if (nul1 == std::string::npos) return 0;
    const std::size_t nul2 = text.find('\0', nul1 + 1);
    const std::size_t header_end = nul2 == std::string::npos ? size : nul2;
    const std::size_t header_size = header_end - (nul1 + 1);
    std::vector<unsigned char> file;
    for (int i = 0; i < 8; ++i) file.push_back(static_cast<unsigned char>(header_size >> (8 * i)));
    file.insert(file.end(), whole.begin() + std::ptrdiff_t(nul1 + 1),
                whole.begin() + std::ptrdiff_t(header_end));
    if (nul2 != std::string::npos)
        file.insert(file.end(), whole.begin() + std::ptrdiff_t(nul2 + 1), whole.end());
    const std::optional<long_context::model_config> c = parse_config(text.substr(0, nul1));
    const std::optional<long_context::safetensors_file> f = parse_file(std::move(file));
    if (c && f) load_weights(*c, *f);
    return 0;
}
#else
#include <cstddef>
#include <cstdint>

// Built without nlohmann/json or Eigen: nothing to fuzz.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t*, std::size_t) {
    return 0;
}
#endif
