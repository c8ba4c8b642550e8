// SPDX-License-Identifier: Apache-2.0
// ctest of model.hpp's readers (model_config::parse, model::load): a tiny well-formed model reads
// back exactly, and every malformed config.json or model.safetensors throws load_error naming
// the field (never another exception type) with a message of bounded length, before anything is
// allocated from the config's sizes. The files are written to a temporary directory. Exits 1
// listing each failed case.
#include "model.hpp"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace fs = std::filesystem;
using long_context::load_error;
using long_context::model;
using long_context::model_config;
using json = nlohmann::json;
using shape_list = std::vector<std::pair<std::string, std::vector<std::int64_t>>>;

int failures = 0;

void expect(bool ok, const std::string& what) {
    if (!ok) {
        std::printf("FAIL: %s\n", what.c_str());
        std::fflush(stdout);  // kept if a later case crashes
        ++failures;
    }
}

/// Longest message a load_error may carry: a 200 KB value in the file must not be copied into
/// it whole.
constexpr std::size_t max_message = 400;

/// Runs `f`, which must throw load_error whose field is `field` and whose message contains
/// `text` and is at most max_message long; any other exception is a failure.
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

/// The tiny model's config: hidden 4, one layer, 2 query heads and 1 K/V head of 2 channels,
/// SwiGLU width 3, vocabulary 5. `patch` overrides keys (RFC 7386 merge patch).
std::string config_text(const json& patch = json::object()) {
    json c = {{"hidden_size", 4},
              {"intermediate_size", 3},
              {"num_hidden_layers", 1},
              {"num_attention_heads", 2},
              {"num_key_value_heads", 1},
              {"head_dim", 2},
              {"max_position_embeddings", 16},
              {"rope_theta", 10000.0},
              {"rms_norm_eps", 1e-5},
              {"vocab_size", 5},
              {"bos_token_id", 0},
              {"tie_word_embeddings", false},
              {"hidden_act", "silu"}};
    c.merge_patch(patch);
    return c.dump();
}

/// The tiny model's tensors and shapes, in the order load_weights reads them.
shape_list tiny_shapes() {
    const std::string p = "model.layers.0.";
    return {{"model.embed_tokens.weight", {5, 4}},
            {p + "input_layernorm.weight", {4}},
            {p + "post_attention_layernorm.weight", {4}},
            {p + "self_attn.q_proj.weight", {4, 4}},
            {p + "self_attn.k_proj.weight", {2, 4}},
            {p + "self_attn.v_proj.weight", {2, 4}},
            {p + "self_attn.o_proj.weight", {4, 4}},
            {p + "mlp.gate_proj.weight", {3, 4}},
            {p + "mlp.up_proj.weight", {3, 4}},
            {p + "mlp.down_proj.weight", {4, 3}},
            {"model.norm.weight", {4}},
            {"lm_head.weight", {5, 4}}};
}

/// Element k of tensor number i of a file from safetensors_bytes: distinct in every tensor, so a
/// weight read from the wrong tensor or offset shows.
float value(std::size_t i, std::int64_t k) {
    return float(i) * 100.0f + float(k);
}

/// A safetensors file of F32 tensors with these shapes, tensor i holding value(i, k).
std::vector<unsigned char> safetensors_bytes(const shape_list& tensors) {
    json header = json::object();
    std::vector<unsigned char> data;
    for (std::size_t i = 0; i < tensors.size(); ++i) {
        std::int64_t n = 1;
        for (std::int64_t d : tensors[i].second) n *= d;
        const std::size_t begin = data.size();
        for (std::int64_t k = 0; k < n; ++k) {
            const float v = value(i, k);
            unsigned char b[4];
            std::memcpy(b, &v, 4);
            data.insert(data.end(), b, b + 4);
        }
        header[tensors[i].first] = {
            {"dtype", "F32"}, {"shape", tensors[i].second}, {"data_offsets", {begin, data.size()}}};
    }
    const std::string h = header.dump();
    std::vector<unsigned char> out;
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<unsigned char>(h.size() >> (8 * i)));
    out.insert(out.end(), h.begin(), h.end());
    out.insert(out.end(), data.begin(), data.end());
    return out;
}

template <class Bytes>
void write_file(const fs::path& path, const Bytes& bytes) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

/// A model directory `root`/`name` holding this config.json text and these tensors.
std::string model_dir(const fs::path& root, const std::string& name, const std::string& config,
                      const shape_list& tensors) {
    const fs::path dir = root / name;
    fs::create_directories(dir);
    write_file(dir / "config.json", config);
    write_file(dir / "model.safetensors", safetensors_bytes(tensors));
    return dir.string();
}

void expect_config_error(const std::string& name, const std::string& field, const std::string& text,
                         const std::string& message = "") {
    expect_error(
        name, field, [&] { model_config::parse(text); }, message);
}

}  // namespace

int main() {
    const fs::path root = fs::temp_directory_path() /
                          ("long_context_model_test-" + std::to_string(std::random_device{}()));
    fs::create_directories(root);

    // The tiny model reads back exactly: q, k and v rows stacked, gate then up, lm_head apart.
    try {
        const model m = model::load(model_dir(root, "good", config_text(), tiny_shapes()));
        expect(m.config.hidden_size == 4 && m.config.head_dim == 2 && m.config.vocab_size == 5,
               "config sizes");
        expect(m.embed(1, 2) == value(0, 6), "embed_tokens");
        expect(m.layers.size() == 1, "one layer");
        const long_context::layer_weights& w = m.layers[0];
        expect(w.input_norm(3) == value(1, 3) && w.post_norm(0) == value(2, 0), "norms");
        expect(w.qkv.rows() == 8 && w.qkv(3, 1) == value(3, 13) && w.qkv(4, 0) == value(4, 0) &&
                   w.qkv(7, 3) == value(5, 7),
               "q, k, v rows");
        expect(w.o(2, 1) == value(6, 9), "o_proj");
        expect(w.gate_up.rows() == 6 && w.gate_up(2, 3) == value(7, 11) &&
                   w.gate_up(3, 0) == value(8, 0),
               "gate, up rows");
        expect(w.down(3, 2) == value(9, 11), "down_proj");
        expect(m.norm(1) == value(10, 1) && m.lm_head(4, 3) == value(11, 19), "norm, lm_head");
    } catch (const std::exception& e) {
        expect(false, std::string("good model: ") + e.what());
    }
    try {  // tied: no lm_head.weight in the file
        shape_list tied = tiny_shapes();
        tied.pop_back();
        const model m = model::load(
            model_dir(root, "tied", config_text({{"tie_word_embeddings", true}}), tied));
        expect(m.lm_head == m.embed, "tied lm_head");
    } catch (const std::exception& e) {
        expect(false, std::string("tied model: ") + e.what());
    }

    // Issue 24 item 7: sizes inside the reader's bounds (vocab 2^20, hidden 2^16) once resized
    // the embedding to 2^36 floats (std::bad_alloc) before its shape was compared with the file.
    const std::string huge = config_text({{"vocab_size", 1 << 20},
                                          {"hidden_size", 1 << 16},
                                          {"intermediate_size", 1 << 20},
                                          {"num_attention_heads", 1},
                                          {"head_dim", 64}});
    expect_error(
        "vocab 2^20 x hidden 2^16 against a tiny file", "model.embed_tokens.weight.shape",
        [&] { model::load(model_dir(root, "huge", huge, tiny_shapes())); }, "[1048576, 65536]");
    shape_list last_wrong = tiny_shapes();
    last_wrong.back().second = {5, 3};
    expect_error(
        "wrong shape in the last tensor", "lm_head.weight.shape",
        [&] { model::load(model_dir(root, "last_wrong", config_text(), last_wrong)); },
        "must be [5, 4]");
    shape_list missing = tiny_shapes();
    missing.erase(missing.begin() + 5);
    expect_error(
        "missing v_proj", "tensor",
        [&] { model::load(model_dir(root, "missing", config_text(), missing)); },
        "model.layers.0.self_attn.v_proj.weight");
    fs::create_directories(root / "dir_config" / "config.json");
    expect_error(
        "config.json a directory", "config.json",
        [&] { model::load((root / "dir_config").string()); }, "regular file");
    const std::string dir_weights = model_dir(root, "dir_weights", config_text(), {});
    fs::remove(fs::path(dir_weights) / "model.safetensors");
    fs::create_directories(fs::path(dir_weights) / "model.safetensors");
    expect_error(
        "model.safetensors a directory", "path", [&] { model::load(dir_weights); },
        "model.safetensors");

    // Item 5: numbers beyond double are nlohmann's out_of_range, not parse_error; ropekit's
    // own errors (RoPE keys) come out as load_error too, under ropekit's field name.
    expect_config_error("rope_theta 1e400", "config.json",
                        R"({"hidden_size": 4, "rope_theta": 1e400})", "1e400");
    expect_config_error("rms_norm_eps 5E0505", "config.json",
                        R"({"rms_norm_eps": 5E0505, "hidden_size": 4})", "5E0505");
    expect_config_error("rope_theta -1", "rope_theta", config_text({{"rope_theta", -1}}),
                        "rope_theta");
    expect_config_error("rope_scaling present", "rope_scaling",
                        config_text({{"rope_scaling", {{"rope_type", "linear"}, {"factor", 2}}}}));
    expect_config_error("hidden_size a string", "hidden_size", config_text({{"hidden_size", "4"}}));
    expect_config_error("rms_norm_eps below float", "rms_norm_eps",
                        config_text({{"rms_norm_eps", 1e-300}}));

    // Item 6: what is shown of a value is bounded (a 200 KB array).
    std::string wide = "[0";
    for (int i = 0; i < 100000; ++i) wide += ",1";
    wide += "]";
    expect_config_error("200 KB config.json array", "config.json", wide, "[0, 1, 1");
    expect_config_error("200 KB hidden_size", "hidden_size", R"({"hidden_size": )" + wide + "}",
                        "[0, 1, 1");
    // Item 6: 100000 nested arrays are valid JSON; dumping them into the message recursed once
    // per level and overflowed the stack. Refused by depth, named.
    const std::string deep = std::string(100000, '[') + std::string(100000, ']');
    expect_config_error("100000 nested arrays", "config.json", deep, "deeper than 64");
    expect_config_error("100000 nested arrays in hidden_size", "config.json",
                        R"({"hidden_size": )" + deep + "}", "deeper than 64");

    std::error_code ec;
    fs::remove_all(root, ec);
    std::printf("%s (%d failures)\n", failures ? "FAILED" : "all model reader checks passed",
                failures);
    return failures ? 1 : 0;
}
