// SPDX-License-Identifier: Apache-2.0
// The 2025-26 families through the config reader: proportional RoPE (Gemma 4), per-layer
// configurations (Gemma 2/3/4, gpt-oss, Llama 4), M-RoPE sections (Qwen2.5-VL, Qwen3-VL), MLA
// slices and DeepSeek's softmax scale, against torch-made golden data
// (tests/data/hf_golden_families.inc from tests/data/generate_hf_golden.py) and the shipped
// example configs.
#include "test_support.hpp"

#if ROPEKIT_TEST_HAVE_JSON

#include <ropekit/attention.hpp>
#include <ropekit/config_json.hpp>

#include "rope_inspect.hpp"  // examples/rope_inspect/: the rope-inspect command line

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

using namespace ropekit;

namespace {

template <class Call>
std::string thrown_field(Call&& call) {
    return ropekit_test::thrown_field<ropekit::error>(std::forward<Call>(call));
}

/// Distance in float32 ulps between two finite floats of the same sign.
std::int64_t ulp_distance(float a, float b) {
    std::int32_t ia, ib;
    std::memcpy(&ia, &a, 4);
    std::memcpy(&ib, &b, 4);
    return std::llabs(std::int64_t(ia) - std::int64_t(ib));
}

std::string example(const std::string& file) {
    return std::string(ROPEKIT_SOURCE_DIR) + "/examples/configs/" + file;
}

/// Requires a ropekit::error whose field() is `field` and whose message contains `text`.
void expect_error(const std::function<void()>& f, const std::string& field,
                  const std::string& text) {
    ropekit_test::expect_error<ropekit::error>(f, field, text);
}

void expect_model_error(const std::string& text, const std::string& field,
                        const std::string& what) {
    INFO("config: " << text);
    expect_error([&] { (void)parse_model_config(text); }, field, what);
}

struct family_case {
    const char* name;
    const char* config;
    const char* layer_type;
    std::vector<double> inv_freq;  ///< as HF returns it (proportional: zero tail included)
    double attention_factor;
    double scaling;
};

const std::vector<family_case>& family_cases() {
    static const std::vector<family_case> cases = {
#include "data/hf_golden_families.inc"
    };
    return cases;
}

const layer_config& type_named(const model_layers_config& m, const std::string& t) {
    for (const auto& c : m.types)
        if (c.layer_type == t && c.use_rope) return c;
    FAIL("no layer type " << t);
    return m.types.front();
}

/// HF's cos/sin for channel `c` of the head from its inv_freq (zero tail included), in double:
/// NeoX heads use cat(freqs, freqs) over the rotated slice, GPT-J pairs adjacent channels.
void hf_channel(const std::vector<double>& hf_inv, const rope_frequencies& f, int c,
                double position, double& cos_out, double& sin_out) {
    const int rel = c - f.rotary_offset;
    const int n = int(hf_inv.size());
    cos_out = 1.0;
    sin_out = 0.0;
    if (rel < 0 || rel >= 2 * n) return;  // outside HF's rotated slice
    const int j = f.layout == rope_layout::neox ? rel % n : rel / 2;
    cos_out = std::cos(position * hf_inv[std::size_t(j)]);
    sin_out = std::sin(position * hf_inv[std::size_t(j)]);
}

/// ropekit's cos/sin for channel `c`: the table row of its pair, or the identity for a channel
/// the geometry leaves alone.
void ropekit_channel(const cos_sin_table& t, std::int64_t row, const rope_frequencies& f, int c,
                     double& cos_out, double& sin_out) {
    const int rel = c - f.rotary_offset;
    int pair = -1;
    if (f.layout == rope_layout::neox) {
        if (rel >= 0 && rel < f.pairs())
            pair = rel;
        else if (rel >= f.neox_pair_span() && rel < f.neox_pair_span() + f.pairs())
            pair = rel - f.neox_pair_span();
    } else if (rel >= 0 && rel < f.rotary_dim) {
        pair = rel / 2;
    }
    cos_out = pair < 0 ? 1.0 : double(t.cos_row(row)[pair]);
    sin_out = pair < 0 ? 0.0 : double(t.sin_row(row)[pair]);
}

}  // namespace

TEST_CASE("families: inv_freq within 2 ulps of HF, cos/sin within 1e-6, softmax scaling") {
    std::int64_t worst = 0;
    for (const auto& g : family_cases()) {
        INFO(g.name);
        const model_layers_config m = parse_model_config(g.config);
        const layer_config& c = type_named(m, g.layer_type);
        const rope_frequencies f = c.frequencies();
        // HF's zeros are exactly the pairs ropekit's geometry leaves out.
        std::size_t rotated = 0;
        while (rotated < g.inv_freq.size() && g.inv_freq[rotated] != 0.0) ++rotated;
        for (std::size_t j = rotated; j < g.inv_freq.size(); ++j) CHECK(g.inv_freq[j] == 0.0);
        REQUIRE(f.inv_freq.size() == rotated);
        for (std::size_t j = 0; j < rotated; ++j) {
            const auto d = ulp_distance(f.inv_freq[j], float(g.inv_freq[j]));
            INFO("pair " << j << ": " << f.inv_freq[j] << " vs torch " << g.inv_freq[j]);
            CHECK(d <= 2);
            worst = std::max(worst, d);
        }
        CHECK(std::fabs(double(f.attention_factor) - g.attention_factor) <=
              1e-6 * g.attention_factor);
        CHECK(std::fabs(c.scaling - g.scaling) <= 4e-16 * g.scaling);
        // The whole head, channel by channel, at positions up to the longest context: the
        // table against the float64 truth cos(p * inv_freq) laid out the way HF lays out the
        // head (its zero tail included), so a wrong pair_span / offset / layout shows. The truth
        // uses ropekit's inv_freq: a 1-ulp difference alone moves the angle at p = 10^6 by ~1e-2.
        std::vector<double> truth_inv = g.inv_freq;
        for (std::size_t j = 0; j < rotated; ++j) truth_inv[j] = double(f.inv_freq[j]);
        const std::vector<std::int64_t> positions = {0, 1, 7, 100, 4095, 32768, 131071, 1000000};
        const auto table =
            cos_sin_table::for_positions(f, positions.data(), std::int64_t(positions.size()));
        double err = 0.0;
        for (std::size_t r = 0; r < positions.size(); ++r)
            for (int ch = 0; ch < f.head_dim; ++ch) {
                double hc, hs, rc, rs;
                hf_channel(truth_inv, f, ch, double(positions[r]), hc, hs);
                ropekit_channel(table, std::int64_t(r), f, ch, rc, rs);
                err = std::max({err, std::fabs(hc - rc), std::fabs(hs - rs)});
            }
        CHECK(err <= 1e-6);
    }
    WARN("families golden: " << family_cases().size() << " cases, worst " << worst << " ulp");
    CHECK(family_cases().size() >= 30);
}

TEST_CASE("proportional RoPE: the geometry HF's formula implies") {
    const rope_params p = rope_params::proportional(512, 0.25, 1e6);
    CHECK(p.rotary_dim == 128);  // int(0.25 * 512 // 2) = 64 pairs
    CHECK(p.frequency_dim == 512);
    CHECK(p.pair_span == 256);
    CHECK(p.exponent_dim() == 512);
    const rope_params q = rope_params::proportional(256, 0.25, 1e6);
    CHECK(q.rotary_dim == 64);
    CHECK(q.pair_span == 128);
    // Factor 1: the whole head, which is ordinary RoPE over head_dim.
    const rope_params full = rope_params::proportional(256, 1.0, 1e4);
    CHECK(full.rotary_dim == 256);
    CHECK(proportional_rope{}.frequencies(full).inv_freq ==
          default_rope{}
              .frequencies(rope_params::from_partial_rotary_factor(256, 1.0, 1e4))
              .inv_freq);
    // Python's float floor division: 0.3 * 100 // 2 = 15.0 (0.3 * 100 = 30.000000000000004).
    CHECK(rope_params::proportional(100, 0.3).rotary_dim == 30);
    // GPT-J pairs are adjacent: the rotated pairs are the first channels, no span.
    CHECK(rope_params::proportional(256, 0.25, 1e4, rope_layout::gptj).pair_span == 0);
    // factor divides every frequency (one float32 division, as HF's in-place /=).
    const auto f1 = proportional_rope{1.0}.frequencies(p);
    const auto f8 = proportional_rope{8.0}.frequencies(p);
    for (std::size_t i = 0; i < f1.inv_freq.size(); ++i)
        CHECK(f8.inv_freq[i] == f1.inv_freq[i] / 8);
    // default and linear honour frequency_dim (the same exponents); the other methods refuse.
    CHECK(default_rope{}.frequencies(p).inv_freq == f1.inv_freq);
    CHECK(linear_scaling{8.0}.frequencies(p).inv_freq == f8.inv_freq);
    CHECK(thrown_field([&] { (void)ntk_scaling{2.0}.frequencies(p); }) == "frequency_dim");
    CHECK(thrown_field([&] {
              (void)dynamic_ntk_scaling{2.0, 4096}.frequencies(p, 9000);
          }) == "frequency_dim");
    CHECK(thrown_field([&] { (void)yarn_scaling{4.0, 4096}.frequencies(p); }) == "frequency_dim");
    CHECK(thrown_field([&] { (void)llama3_scaling{}.frequencies(p); }) == "frequency_dim");
    // Bad input names the parameter.
    CHECK(thrown_field([] { (void)rope_params::proportional(256, 0.001); }) ==
          "partial_rotary_factor");
    CHECK(thrown_field([] { (void)rope_params::proportional(256, 0.0); }) ==
          "partial_rotary_factor");
    CHECK(thrown_field([] { (void)rope_params::proportional(255, 0.25); }) == "head_dim");
    CHECK(thrown_field([&] { (void)proportional_rope{0.0}.frequencies(p); }) == "factor");
    CHECK(thrown_field([&] { (void)proportional_rope{1e300}.frequencies(p); }) == "factor");
}

TEST_CASE("Gemma 3 (v4 keys): two layer types, 5:1, rope_local_base_freq, query_pre_attn_scalar") {
    const auto m = load_model_config(example("gemma3.json"));
    REQUIRE(m.num_layers() == 34);
    REQUIRE(m.types.size() == 2);
    for (std::size_t i = 0; i < m.num_layers(); ++i)
        CHECK(m.layer(i).layer_type == ((i + 1) % 6 ? "sliding_attention" : "full_attention"));
    const auto& s = type_named(m, "sliding_attention");
    const auto& f = type_named(m, "full_attention");
    CHECK(std::holds_alternative<default_rope>(s.rope.scaling));
    CHECK(s.rope.params.base == 10000.0);
    CHECK(std::get<linear_scaling>(f.rope.scaling).factor == 8.0);
    CHECK(f.rope.params.base == 1e6);
    CHECK(s.sliding_window == 1024);
    CHECK(!f.sliding_window);
    CHECK(s.scaling == std::pow(256.0, -0.5));
    CHECK(!s.attn_logit_softcapping);  // null in the file
    CHECK(layer_map_summary(m) ==
          "0-4 sliding_attention, 5 full_attention; repeats every 6 layers (34 layers)");
    CHECK(m.warnings.empty());
    CHECK(thrown_field([&] { (void)m.layer(34); }) == "layer");
}

TEST_CASE("Gemma 4: proportional full layers on global_head_dim, default sliding layers") {
    const auto m = load_model_config(example("gemma4.json"));
    REQUIRE(m.types.size() == 2);
    const auto& f = type_named(m, "full_attention");
    const auto& s = type_named(m, "sliding_attention");
    CHECK(std::holds_alternative<proportional_rope>(f.rope.scaling));
    CHECK(f.head_dim == 512);
    CHECK(f.rope.params.rotary_dim == 128);
    CHECK(f.rope.params.frequency_dim == 512);
    CHECK(f.frequencies().pair_span == 256);
    CHECK(s.head_dim == 256);
    CHECK(s.rope.params.rotary_dim == 256);
    CHECK(s.sliding_window == 512);
    CHECK(f.scaling == 1.0);  // q/k norms instead of a 1/sqrt(d) scale
    CHECK(s.scaling == 1.0);
    CHECK(m.layer(29).layer_type == "full_attention");
    CHECK(f.num_attention_heads == 8);
    CHECK(f.num_key_value_heads == 2);
    // attention_k_eq_v: the full layers' k (= v) heads are num_global_key_value_heads.
    const auto kv = parse_model_config(R"({"model_type": "gemma4_text", "num_hidden_layers": 6,
        "head_dim": 256, "global_head_dim": 512, "sliding_window": 1024,
        "num_attention_heads": 32, "num_key_value_heads": 16, "num_global_key_value_heads": 4,
        "attention_k_eq_v": true,
        "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
        "rope_theta": 1000000.0}}})");
    CHECK(type_named(kv, "full_attention").num_key_value_heads == 4);
    CHECK(type_named(kv, "sliding_attention").num_key_value_heads == 16);
    CHECK(m.warnings.empty());  // num_kv_shared_layers 0: nothing to say
    // The single-layer API reads the same layer type when asked for it.
    config_json_options o;
    o.layer_type = "full_attention";
    const auto one = load_config_json(example("gemma4.json"), o);
    CHECK(one.params.head_dim == 512);
    CHECK(one.frequencies().inv_freq == f.frequencies().inv_freq);
    // Without layer_types: HF's 5:1 pattern with the last layer forced to full attention.
    const auto d = parse_model_config(R"({"model_type": "gemma4_text", "num_hidden_layers": 8,
        "head_dim": 256, "global_head_dim": 512, "sliding_window": 512,
        "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
        "rope_theta": 1000000.0}}})");
    CHECK(d.layer(5).layer_type == "full_attention");
    CHECK(d.layer(6).layer_type == "sliding_attention");
    CHECK(d.layer(7).layer_type == "full_attention");
}

TEST_CASE("Gemma 2: alternating layers, logit soft-capping, query_pre_attn_scalar") {
    const auto m = parse_model_config(R"({"model_type": "gemma2", "num_hidden_layers": 42,
        "head_dim": 256, "hidden_size": 3584, "num_attention_heads": 16, "sliding_window": 4096,
        "attn_logit_softcapping": 50.0, "query_pre_attn_scalar": 224, "rope_theta": 10000.0})");
    CHECK(m.layer(0).layer_type == "sliding_attention");
    CHECK(m.layer(1).layer_type == "full_attention");
    for (const auto& c : m.types) {
        CHECK(c.attn_logit_softcapping == 50.0);
        CHECK(c.scaling == std::pow(224.0, -0.5));
    }
    CHECK(layer_map_summary(m) ==
          "0 sliding_attention, 1 full_attention; repeats every 2 layers (42 layers)");
}

TEST_CASE("gpt-oss: layer_types, sliding_window 128, YaRN without truncation") {
    const auto m = load_model_config(example("gpt_oss.json"));
    REQUIRE(m.num_layers() == 24);
    const auto& s = type_named(m, "sliding_attention");
    CHECK(s.sliding_window == 128);
    CHECK(!std::get<yarn_scaling>(s.rope.scaling).truncate);
    CHECK(s.scaling == 0.125);
    CHECK(type_named(m, "full_attention").frequencies().inv_freq == s.frequencies().inv_freq);
}

TEST_CASE("Llama 4: chunked RoPE layers, NoPE layers with temperature tuning, interleaved") {
    const auto m = load_model_config(example("llama4.json"));
    REQUIRE(m.types.size() == 2);
    const auto& rope_layers = m.types[0];
    const auto& nope = m.types[1];
    CHECK(rope_layers.layer_type == "chunked_attention");
    CHECK(rope_layers.use_rope);
    CHECK(rope_layers.attention_chunk_size == 8192);
    CHECK(!rope_layers.temperature);
    CHECK(rope_layers.rope.params.layout == rope_layout::gptj);  // view_as_complex pairs
    CHECK(nope.layer_type == "full_attention");
    CHECK(!nope.use_rope);
    REQUIRE(nope.temperature);
    CHECK(nope.temperature->floor_scale == 8192);
    CHECK(nope.temperature->attn_scale == 0.1);
    for (std::size_t i = 0; i < m.num_layers(); ++i)
        CHECK(m.layer(i).use_rope == ((i + 1) % 4 != 0));
    // Scout's llama3 scaling has low_freq_factor == high_freq_factor: a step, no blended band.
    const auto& l3 = std::get<llama3_scaling>(rope_layers.rope.scaling);
    CHECK(l3.low_freq_factor == l3.high_freq_factor);
    const auto f = rope_layers.frequencies();
    const auto base = default_rope{}.frequencies(rope_layers.rope.params);
    for (std::size_t i = 0; i < f.inv_freq.size(); ++i) {
        const double wavelen = 2 * 3.141592653589793 / base.inv_freq[i];
        CHECK(f.inv_freq[i] == (wavelen > 8192 ? base.inv_freq[i] / 16.0f : base.inv_freq[i]));
    }
    // Without layer_types and no_rope_layers: HF's defaults (every 4th layer NoPE).
    const auto d = parse_model_config(R"({"model_type": "llama4_text", "num_hidden_layers": 8,
        "head_dim": 128, "attention_chunk_size": 8192, "rope_theta": 500000.0})");
    CHECK(d.layer(3).layer_type == "full_attention");
    CHECK(!d.layer(3).use_rope);
    CHECK(d.layer(3).temperature);  // attn_temperature_tuning defaults to on
    CHECK(d.layer(4).layer_type == "chunked_attention");
}

TEST_CASE("DeepSeek-V3 MLA: 192-channel q/k head, rotary slice at 128, mscale^2 softmax scale") {
    const auto m = load_model_config(example("deepseek_v3.json"));
    REQUIRE(m.types.size() == 1);
    const auto& c = m.types[0];
    CHECK(c.head_dim == 192);
    CHECK(c.v_head_dim == 128);
    CHECK(c.rope.params.rotary_dim == 64);
    CHECK(c.rope.params.rotary_offset == 128);
    CHECK(c.rope.params.layout == rope_layout::gptj);
    const double mscale = 0.1 * std::log(40.0) + 1.0;
    CHECK(c.scaling == Approx(std::pow(192.0, -0.5) * mscale * mscale).epsilon(1e-15));
    // The engine's softmax scale: the frequencies' own factor (1 here: mscale / mscale_all_dim)
    // times cfg.scaling.
    const auto f = c.frequencies();
    CHECK(f.head_dim == 192);
    const auto params = attention_params::for_model(f).with_scaling(c.scaling);
    CHECK(params.softmax_scale() == float(c.scaling * f.logit_scale()));
    // Frequencies are those of the 64-channel slice, unchanged by where it sits.
    rope_params slice = c.rope.params;
    slice.head_dim = 64;
    slice.rotary_offset = 0;
    CHECK(f.inv_freq == make_frequencies(slice, c.rope.scaling).inv_freq);
    // Without mscale_all_dim the scale is the plain qk_head_dim ** -0.5.
    const auto plain = parse_model_config(R"({"model_type": "deepseek_v3", "qk_nope_head_dim": 128,
        "qk_rope_head_dim": 64, "v_head_dim": 128, "max_position_embeddings": 163840,
        "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096}})");
    CHECK(plain.types[0].scaling == std::pow(192.0, -0.5));
}

TEST_CASE("Qwen2.5-VL and Qwen3-VL: mrope_section and its layout on the config") {
    const auto q25 = load_model_config(example("qwen2_5_vl.json"));
    REQUIRE(q25.types[0].rope.mrope);
    CHECK(q25.types[0].rope.mrope->section == std::array<int, 3>{16, 24, 24});
    CHECK(q25.types[0].rope.mrope->layout == mrope_layout::contiguous);
    CHECK(!q25.types[0].sliding_window);  // use_sliding_window false: no sliding layers
    const auto q3 = load_model_config(example("qwen3_vl.json"));
    REQUIRE(q3.types[0].rope.mrope);
    CHECK(q3.types[0].rope.mrope->section == std::array<int, 3>{24, 20, 20});
    CHECK(q3.types[0].rope.mrope->layout == mrope_layout::interleaved);
    CHECK(q3.types[0].rope.params.base == 5e6);
    for (const auto& w : q3.warnings) CHECK(w.find("mrope") == std::string::npos);
}

TEST_CASE("per-layer reader: bad keys get a named error, counts are bounded") {
    const std::string geom = R"("head_dim": 64, "sliding_window": 128, )";
    expect_model_error("{" + geom +
                           R"("num_hidden_layers": 4, "layer_types": ["full_attention",
        "sliding_attention", "full_attention", "mamba"]})",
                       "layer_types[3]", "unknown");
    expect_model_error("{" + geom + R"("num_hidden_layers": 4, "layer_types": ["full_attention"]})",
                       "layer_types", "num_hidden_layers = 4");
    expect_model_error("{" + geom + R"("layer_types": ["full_attention", 7]})", "layer_types[1]",
                       "7");
    expect_model_error("{" + geom +
                           R"("layer_types": ["full_attention", "full_attention"],
        "no_rope_layers": [1]})",
                       "no_rope_layers", "as the other per-layer list");
    expect_model_error("{" + geom + R"("layer_types": "full_attention"})", "layer_types", "list");
    expect_model_error("{" + geom + R"("num_hidden_layers": 1000000000000})", "num_hidden_layers",
                       "16384");
    expect_model_error("{" + geom + R"("num_hidden_layers": 0})", "num_hidden_layers", "0");
    expect_model_error(R"({"head_dim": 64, "layer_types": ["sliding_attention"]})",
                       "sliding_window", "missing");
    expect_model_error(R"({"head_dim": 64, "layer_types": ["chunked_attention"]})",
                       "attention_chunk_size", "missing");
    expect_model_error("{" + geom + R"("sliding_window_pattern": 0, "num_hidden_layers": 4})",
                       "sliding_window_pattern", "0");
    expect_model_error("{" + geom + R"("num_hidden_layers": 3, "no_rope_layers": [1, "x", 1]})",
                       "no_rope_layers[1]", "\"x\"");
    expect_model_error("{" + geom +
                           R"("layer_types": ["sliding_attention", "full_attention"],
        "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": "big"},
                            "full_attention": {"rope_type": "default"}}})",
                       "rope_parameters.sliding_attention.rope_theta", "\"big\"");
    expect_model_error("{" + geom +
                           R"("layer_types": ["sliding_attention", "full_attention"],
        "rope_parameters": {"sliding_attention": {"rope_type": "default"}}})",
                       "rope_parameters.full_attention", "missing");
    expect_model_error("{" + geom +
                           R"("layer_types": ["full_attention"],
        "rope_parameters": {"full_attention": {"rope_type": "proportional", "factor": -2}}})",
                       "rope_parameters.full_attention.factor", "-2");
    expect_model_error(R"({"head_dim": 64, "attn_logit_softcapping": -1})",
                       "attn_logit_softcapping", "-1");
    expect_model_error(R"({"head_dim": 64, "query_pre_attn_scalar": 0})", "query_pre_attn_scalar",
                       "0");
    expect_model_error(R"({"head_dim": 64, "v_head_dim": -3})", "v_head_dim", "-3");
    expect_model_error(R"({"head_dim": 64, "num_attention_heads": 8, "num_key_value_heads": 3})",
                       "num_key_value_heads", "divide");
    expect_model_error(R"({"model_type": "llama4_text", "head_dim": 64, "num_hidden_layers": 4,
        "attention_chunk_size": 8192, "floor_scale": 0})",
                       "floor_scale", "0");
    expect_model_error(R"({"qk_rope_head_dim": 64, "qk_nope_head_dim": -1})", "qk_nope_head_dim",
                       "-1");
    expect_model_error(R"({"head_dim": 64, "layer_types": [], "sliding_window": 4})", "layer_types",
                       "1 to 16384");
}

TEST_CASE("rope-inspect reads every shipped config: each layer type and the layer map") {
    for (const char* file :
         {"gemma3.json", "gemma4.json", "qwen2_5_vl.json", "qwen3_vl.json", "deepseek_v3.json",
          "llama4.json", "gpt_oss.json", "default.json", "linear.json", "ntk.json", "dynamic.json",
          "yarn.json", "llama3.json", "longrope.json"}) {
        INFO(file);
        std::ostringstream out, err;
        const int status = rope_inspect::run({"--config", example(file), "--layers"}, out, err);
        INFO(err.str());
        CHECK(status == 0);
        CHECK(out.str().find("layers ") != std::string::npos);
        CHECK(out.str().find("head_dim        q/k") != std::string::npos);
    }
    std::ostringstream out, err;
    CHECK(rope_inspect::run({"--config", example("gemma4.json")}, out, err) == 0);
    CHECK(out.str().find("[full_attention]") != std::string::npos);  // chosen by itself
    CHECK(out.str().find("frequency_dim 512") != std::string::npos);
    CHECK(out.str().find("span 256") != std::string::npos);
}

#else
TEST_CASE("config families need nlohmann/json (not found at configure time)") {
    SUCCEED();
}
#endif
