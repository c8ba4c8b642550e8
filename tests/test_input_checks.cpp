// SPDX-License-Identifier: Apache-2.0
// No plausible wrong number: every floating-point parameter of a front door, and every numeric
// config key that ends up as a float, is rejected with its field's name when it is NaN, infinite
// or beyond float32 (where C++'s double -> float conversion is undefined or gives inf, and 0 * inf
// turns a whole output into NaN with no error); a rule whose meaning fixes its mask refuses any
// other; both config readers derive a layer's head size the same way; the ABI version follows
// the CHANGELOG. Each case of the first part reproduces a value that used to get through.
#include "test_support.hpp"

#include <ropekit/attention.hpp>
#include <ropekit/attention_temperature.hpp>
#include <ropekit/mrope.hpp>
#include <ropekit/position_rules.hpp>
#include <ropekit/scaling.hpp>
#include <ropekit/sink_cache.hpp>
#include <ropekit/version.hpp>

#if ROPEKIT_TEST_HAVE_JSON
#include <ropekit/config_json.hpp>
#endif

#include <cmath>
#include <cstdint>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

namespace {

void expect_error(const std::function<void()>& f, const std::string& field,
                  const std::string& text = "") {
    ropekit_test::expect_error<ropekit::error>(f, field, text);
}

/// Values no float parameter may take: NaN, the infinities, and finite doubles float32 cannot
/// hold (their conversion to float is undefined behaviour; in practice inf).
const double bad_floats[] = {std::numeric_limits<double>::quiet_NaN(),
                             std::numeric_limits<double>::infinity(),
                             -std::numeric_limits<double>::infinity(),
                             1e39,
                             -1e39,
                             std::numeric_limits<double>::max()};

}  // namespace

// ---- Issue 24 item 1: Qwen2.5-VL's temporal ids from doubles beyond float32 ----------------

TEST_CASE("get_rope_index rejects tokens_per_second and second_per_grid_t beyond float32",
          "[mrope][input]") {
    ropekit::mrope_index_options o;
    o.model = ropekit::mrope_model::qwen2_5_vl;
    const std::vector<ropekit::mrope_segment> video = {ropekit::mrope_segment::text(3),
                                                       ropekit::mrope_segment::video(2, 4, 4)};
    // Before: frame 0's id was long(0 * float(1e39)) = long(NaN): UB, INT64_MIN at -O2.
    for (double v : bad_floats) {
        INFO("tokens_per_second = " << v);
        o.tokens_per_second = v;
        expect_error([&] { (void)ropekit::get_rope_index(video, o); }, "tokens_per_second");
    }
    o.tokens_per_second = 1e-50;  // > 0 in double, 0 in float32: every frame at id 0
    expect_error([&] { (void)ropekit::get_rope_index(video, o); }, "tokens_per_second");
    o.tokens_per_second = 2.0;
    for (double v : bad_floats) {
        INFO("second_per_grid_t = " << v);
        auto segs = video;
        segs[1].second_per_grid_t = v;
        expect_error([&] { (void)ropekit::get_rope_index(segs, o); }, "second_per_grid_t");
    }
    // Found by fuzz_mrope: each factor fits float32, the float32 product of frame 2 does not
    // (2 x 3e38 = inf before the x 1e-45), and int64(inf) was undefined behaviour.
    {
        auto o2 = o;
        o2.tokens_per_second = 1e-45;
        auto segs = video;
        segs[1] = ropekit::mrope_segment::video(3, 4, 4, 3e38);
        expect_error([&] { (void)ropekit::get_rope_index(segs, o2); }, "position_ids");
    }
    // The in-range values still give HF's ids: frame f at long(f * 0.5 * 2) after 3 text tokens.
    auto segs = video;
    segs[1].second_per_grid_t = 0.5;
    const auto idx = ropekit::get_rope_index(segs, o);
    REQUIRE(idx.tokens == 3 + 2 * 2 * 2);
    CHECK(idx.position_ids[3] == 3);      // frame 0, temporal axis
    CHECK(idx.position_ids[3 + 4] == 4);  // frame 1
}

// ---- Issue 24 item 2: Llama 4 temperature with attn_scale beyond float32 -------------------

TEST_CASE("attention_temperature rejects scales whose factor is not finite", "[input]") {
    for (double v : bad_floats) {
        INFO("value " << v);
        ropekit::attention_temperature t;
        t.attn_scale = v;
        expect_error([&] { t.validate(); }, "attn_scale");
        t = {};
        t.floor_scale = v;
        expect_error([&] { t.validate(); }, "floor_scale");
    }
    // Fits float32, yet log(2^62 / 8192 + 1) * 3e38 overflows: scale_at would be inf at the far
    // positions the kernels accept.
    ropekit::attention_temperature big;
    big.attn_scale = 3e38;
    expect_error([&] { big.validate(); }, "attn_scale", "2^62");
    // Before: validate() passed 1e39 and scale_at(0) was log(1) * inf = NaN.
    ropekit::attention_temperature llama4;
    CHECK_NOTHROW(llama4.validate());
    CHECK(llama4.scale_at(0) == 1.0f);
    CHECK(std::isfinite(llama4.scale_at(ropekit::attention_position_limit - 1)));
}

// ---- Issue 24 item 3: soft-cap and the other floats at the attention front door ------------

TEST_CASE("attention rejects a logit_softcap that is subnormal, NaN or infinite", "[input]") {
    const int D = 16;
    std::vector<float> q(D, 0.25f), k(2 * D, 0.5f), v(2 * D, 1.0f), o(D, 0.0f);
    auto run = [&](float cap) {
        auto p = ropekit::attention_params::with_softmax_scale(0.25);
        p.logit_softcap = cap;
        ropekit::attention(ropekit::packed_view<const float>(q.data(), 1, 1, D),
                           ropekit::packed_view<const float>(k.data(), 2, 1, D),
                           ropekit::packed_view<const float>(v.data(), 2, 1, D),
                           ropekit::packed_view(o.data(), 1, 1, D), ropekit::causal_mask{}, p);
    };
    // Before: 1e-40 (subnormal) was accepted, 1/cap = inf and the output came back NaN.
    for (float cap :
         {1e-40f, std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::quiet_NaN(),
          std::numeric_limits<float>::infinity(), -1.0f}) {
        INFO("logit_softcap = " << cap);
        expect_error([&] { run(cap); }, "logit_softcap");
    }
    run(std::numeric_limits<float>::min());  // the smallest normal cap is a valid (tiny) cap
    for (float x : o) CHECK(std::isfinite(x));
    run(0.0f);  // no cap
    for (float x : o) CHECK(x == Approx(1.0f));
}

TEST_CASE("sink_attention rejects a subnormal logit_softcap like attention does", "[input]") {
    const int D = 16;
    ropekit::rope_params geometry;
    geometry.head_dim = D;
    geometry.rotary_dim = D;
    const auto freqs = ropekit::default_rope{}.frequencies(geometry);
    ropekit::sink_cache<float> cache(freqs, {1, D, 2, 4});
    std::vector<float> q(D, 0.25f), k(D, 0.5f), v(D, 1.0f), o(D);
    cache.append(ropekit::packed_view<const float>(k.data(), 1, 1, D),
                 ropekit::packed_view<const float>(v.data(), 1, 1, D));
    ropekit::sink_workspace<float> ws(cache, 1);
    ropekit::sink_partial partial(1, D);
    auto run = [&](float cap) {
        auto p = ropekit::attention_params::for_model(freqs);
        p.logit_softcap = cap;
        ropekit::sink_attention(cache, ropekit::packed_view<const float>(q.data(), 1, 1, D),
                                ropekit::packed_view(o.data(), 1, 1, D), p, ws, partial);
    };
    // Before: the sink cache's own check let a subnormal cap through (NaN outputs).
    expect_error([&] { run(1e-40f); }, "logit_softcap");
    CHECK_NOTHROW(run(30.0f));
    for (float x : o) CHECK(std::isfinite(x));
}

TEST_CASE("attention_params constructors reject scales beyond float32", "[input]") {
    for (double v : bad_floats) {
        INFO("value " << v);
        expect_error([&] { (void)ropekit::attention_params::with_softmax_scale(v); },
                     "softmax_scale");
        expect_error(
            [&] { (void)ropekit::attention_params::with_softmax_scale(1.0).with_scaling(v); },
            "scaling");
    }
    // Found by fuzz_position_rules: a scale near float's maximum overflowed the scores (NaN).
    expect_error([&] { (void)ropekit::attention_params::with_softmax_scale(3e38); },
                 "softmax_scale", "65536");
    CHECK_NOTHROW(ropekit::attention_params::with_softmax_scale(65536.0));
    // Positive in double, 0 in float: the scores would all be 0 with no error.
    expect_error([&] { (void)ropekit::attention_params::with_softmax_scale(1e-50); },
                 "softmax_scale");
}

TEST_CASE("leaky_rerope rejects k beyond float32", "[input]") {
    for (double v : bad_floats) {
        INFO("k = " << v);
        ropekit::leaky_rerope r;
        r.k = v;
        expect_error([&] { r.validate(); }, "k");
    }
}

// ---- The probe: every float key of every scaling method, from the methods' own key lists -----

namespace {

template <class M, class = void>
struct has_original_context : std::false_type {};
template <class M>
struct has_original_context<M, std::void_t<decltype(M::original_max_position)>> : std::true_type {};

/// A valid instance of M for the probe (each key in turn is then spoiled).
template <class M>
M valid_method() {
    M m{};
    if constexpr (has_original_context<M>::value) m.original_max_position = 4096;
    if constexpr (std::is_same_v<M, ropekit::longrope_scaling>) {
        m.long_factor.assign(32, 1.5);  // rotary_dim / 2 entries
        m.short_factor.assign(32, 1.0);
        m.factor = 4.0;
    }
    return m;
}

/// What a bad value is written as for a member of type T.
template <class T>
void spoil(T& member, double v) {
    if constexpr (std::is_same_v<T, double> || std::is_same_v<T, std::optional<double>>)
        member = v;
    else if constexpr (std::is_same_v<T, std::vector<double>>)
        member[member.size() / 2] = v;
}

template <class T>
constexpr bool is_float_key_v =
    std::is_same_v<T, double> || std::is_same_v<T, std::optional<double>> ||
    std::is_same_v<T, std::vector<double>>;

}  // namespace

TEST_CASE("every float key of every scaling method rejects NaN, inf and beyond-float32 values",
          "[input][scaling]") {
    ropekit::rope_params params;
    params.head_dim = 64;
    params.rotary_dim = 64;
    int probed = 0;
    ropekit::detail::for_each_method([&](auto tag) {
        using M = typename decltype(tag)::type;
        ropekit::detail::for_each_key_of<M>([&](const auto& key) {
            using T = typename std::decay_t<decltype(key)>::value_type;
            if constexpr (is_float_key_v<T>) {
                const M base = valid_method<M>();
                INFO(M::rope_type << "." << key.name);
                REQUIRE_NOTHROW(base.validate(params));
                for (double v : bad_floats) {
                    INFO("value " << v);
                    M m = base;
                    spoil(m.*key.member, v);
                    expect_error([&] { m.validate(params); }, std::string(key.member_name()));
                }
                ++probed;
            }
        });
    });
    CHECK(probed >= 12);  // the floats of linear, ntk, dynamic, yarn, llama3, longrope, ...
    // The shared geometry's floats.
    for (double v : bad_floats) {
        ropekit::rope_params p = params;
        p.base = v;
        if (!std::isnan(v) && v < 0) continue;  // -inf / -1e39 fail "base > 1" first, same field
        expect_error([&] { p.validate(); }, "base");
    }
}

// ---- Found by fuzz_position_rules: a table asked about a far position -----------------------

TEST_CASE("cos_sin_table::contains answers for every int64 without overflow", "[input]") {
    ropekit::rope_params geometry;
    geometry.head_dim = 16;
    geometry.rotary_dim = 16;
    const auto freqs = ropekit::default_rope{}.frequencies(geometry);
    constexpr std::int64_t lo = std::numeric_limits<std::int64_t>::min();
    constexpr std::int64_t hi = std::numeric_limits<std::int64_t>::max();
    // Before: 0 - INT64_MIN (an empty table may start anywhere) and INT64_MAX - (-5) overflowed
    // (UBSan in the position rules' validator, reached with ReRoPE under a full mask).
    const auto empty = ropekit::cos_sin_table::for_range(freqs, lo, 0);
    CHECK_FALSE(empty.contains(0));
    CHECK_FALSE(empty.contains(hi));
    const auto t = ropekit::cos_sin_table::for_range(freqs, -5, 10);
    CHECK_FALSE(t.contains(hi));
    CHECK_FALSE(t.contains(lo));
    CHECK(t.contains(-5));
    CHECK(t.contains(4));
    CHECK_FALSE(t.contains(5));
}

// ---- Issue 24 item 9: a rule whose meaning fixes the mask ------------------------------------

TEST_CASE("streaming_llm accepts only its own mask", "[input][rules]") {
    const int D = 16, n = 12;
    ropekit::rope_params geometry;
    geometry.head_dim = D;
    geometry.rotary_dim = D;
    const ropekit::rope_frequencies freqs = ropekit::default_rope{}.frequencies(geometry);
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, 64);
    std::vector<float> q(n * D, 0.1f), k(n * D, 0.2f), v(n * D, 0.3f), o(n * D);
    const ropekit::streaming_llm rule{2, 4};
    auto run = [&](const auto& mask) {
        ropekit::position_rule_attention(ropekit::packed_view<const float>(q.data(), n, 1, D),
                                         ropekit::packed_view<const float>(k.data(), n, 1, D),
                                         ropekit::packed_view<const float>(v.data(), n, 1, D),
                                         ropekit::packed_view(o.data(), n, 1, D), mask,
                                         ropekit::attention_params::for_model(freqs), rule, freqs,
                                         table);
    };
    // Before: causal_mask ran and gave wrong numbers (+0.14 nats at 256 tokens on a real model).
    expect_error([&] { run(ropekit::causal_mask{}); }, "mask", "rule.mask()");
    expect_error([&] { run(ropekit::sliding_window_mask{4}); }, "mask", "rule.mask()");
    expect_error([&] { run(ropekit::sink_window_mask{1, 4}); }, "mask", "rule.mask()");
    expect_error([&] { run(ropekit::sink_window_mask{2, 5}); }, "mask", "rule.mask()");
    CHECK_NOTHROW(run(rule.mask()));
    // Found by fuzz_position_rules: a query far past 2^29 was accepted and its sink scores were
    // wrong (LSE 1.37e12 against 1.39 at 2^62 - 2): the far rotation is exact only below 2^29.
    std::vector<std::int64_t> kpos(n), qpos(n);
    for (int j = 0; j < n; ++j) kpos[j] = qpos[j] = (std::int64_t(1) << 40) + j;
    auto far = [&](std::int64_t shift) {
        auto p = ropekit::attention_params::for_model(freqs);
        for (int j = 0; j < n; ++j) kpos[j] = qpos[j] = shift + j;
        p.q_positions = ropekit::positions::ids(qpos.data());
        p.k_positions = ropekit::positions::ids(kpos.data());
        ropekit::position_rule_attention(ropekit::packed_view<const float>(q.data(), n, 1, D),
                                         ropekit::packed_view<const float>(k.data(), n, 1, D),
                                         ropekit::packed_view<const float>(v.data(), n, 1, D),
                                         ropekit::packed_view(o.data(), n, 1, D), rule.mask(), p,
                                         rule, freqs, table);
    };
    expect_error([&] { far(std::int64_t(1) << 40); }, "positions", "2^29");
    CHECK_NOTHROW(far(std::int64_t(1) << 28));
    // The rules without a mask of their own take any mask.
    CHECK(ropekit::detail::rule_accepts_mask(ropekit::rerope{8}, ropekit::full_mask{}));
    CHECK(ropekit::detail::rule_accepts_mask(ropekit::self_extend{8, 2}, ropekit::causal_mask{}));
    CHECK(ropekit::detail::rule_accepts_mask(ropekit::leaky_rerope{8, 4.0},
                                             ropekit::sliding_window_mask{16}));
}

// ---- Issue 24 item 10: the ABI version follows the CHANGELOG ---------------------------------

TEST_CASE("version.hpp is the CHANGELOG's newest version", "[version]") {
    std::ifstream in(std::string(ROPEKIT_SOURCE_DIR) + "/CHANGELOG.md");
    REQUIRE(in);
    const std::regex heading(R"(^## (\d+)\.(\d+)\.(\d+)\b.*)");
    std::string line;
    std::smatch m;
    bool found = false;
    while (std::getline(in, line))
        if (std::regex_match(line, m, heading)) {
            found = true;
            break;
        }
    REQUIRE(found);
    INFO("CHANGELOG heading: " << line);
    CHECK(std::stoi(m[1]) == ROPEKIT_VERSION_MAJOR);
    CHECK(std::stoi(m[2]) == ROPEKIT_VERSION_MINOR);
    CHECK(std::stoi(m[3]) == ROPEKIT_VERSION_PATCH);
    // The ABI namespace is spelled from the same macros.
    std::ostringstream ns;
    ns << 'v' << ROPEKIT_VERSION_MAJOR << '_' << ROPEKIT_VERSION_MINOR;
    CHECK(std::string(ropekit::abi_namespace()) == ns.str());
}

#if ROPEKIT_TEST_HAVE_JSON

// ---- Issue 24 items 2, 3: the config reader's floats ---------------------------------------

TEST_CASE("config keys that become floats are checked against float32", "[input][config]") {
    auto expect_config_error = [](const std::string& extra, const std::string& field) {
        const std::string text = R"({"model_type": "gemma2", "num_hidden_layers": 2,
            "head_dim": 64, "sliding_window": 128, "rope_theta": 10000.0, )" +
                                 extra + "}";
        INFO(text);
        expect_error([&] { (void)ropekit::parse_model_config(text); }, field);
    };
    // Before: 1e-50 became logit_softcap 0 (no cap, silently), 1e39 inf.
    for (const char* v : {"1e-50", "1e39", "1e-40"})
        expect_config_error(std::string(R"("attn_logit_softcapping": )") + v,
                            "attn_logit_softcapping");
    // Found by fuzz_model_config: each factor fits, the DeepSeek product (1.2e-38^-0.5 x
    // get_mscale(40, 1e17)^2 = 1.2e52) did not, and was handed to the engine as the scale.
    expect_error(
        [&] {
            (void)ropekit::parse_model_config(R"({"model_type": "deepseek_v3",
                "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "num_attention_heads": 8,
                "max_position_embeddings": 163840, "query_pre_attn_scalar": 1.2e-38,
                "rope_scaling": {"rope_type": "yarn", "factor": 40,
                "original_max_position_embeddings": 4096, "mscale_all_dim": 1e17}})");
        },
        "mscale_all_dim");
    // query_pre_attn_scalar ** -0.5 must be a float32 scale too.
    for (const char* v : {"1e-300", "1e39"})
        expect_config_error(std::string(R"("query_pre_attn_scalar": )") + v,
                            "query_pre_attn_scalar");
    // Before: attn_scale 1e39 passed and scale_at(p) was NaN below floor_scale.
    const std::string llama4 = R"({"model_type": "llama4_text", "num_hidden_layers": 4,
        "head_dim": 64, "attention_chunk_size": 8192, "rope_theta": 500000.0, )";
    expect_error([&] { (void)ropekit::parse_model_config(llama4 + R"("attn_scale": 1e39})"); },
                 "attn_scale");
    expect_error([&] { (void)ropekit::parse_model_config(llama4 + R"("floor_scale": 1e39})"); },
                 "floor_scale");
    const auto ok = ropekit::parse_model_config(llama4 + R"("attn_scale": 0.1})");
    REQUIRE(ok.layer(3).temperature);
    CHECK(ok.layer(3).temperature->attn_scale == 0.1);
}

// ---- Issue 24 item 8: both readers derive a layer's head size once ---------------------------

namespace {

void require_same_layer(const ropekit::model_rope_config& one, const ropekit::layer_config& all) {
    CHECK(one.params.head_dim == all.rope.params.head_dim);
    CHECK(one.params.rotary_dim == all.rope.params.rotary_dim);
    CHECK(one.params.base == all.rope.params.base);
    CHECK(one.scaling.index() == all.rope.scaling.index());
    CHECK(one.frequencies().inv_freq == all.rope.frequencies().inv_freq);
}

}  // namespace

TEST_CASE("global_head_dim: config_from_json and model_config_from_json agree on every layer type",
          "[config]") {
    // Before: the per-layer reader gave chunked_attention layers global_head_dim (512) and
    // config_from_json(layer_type "chunked_attention") head_dim (128).
    const auto root = nlohmann::json::parse(R"({"model_type": "gemma4_text",
        "num_hidden_layers": 3, "head_dim": 128, "global_head_dim": 512,
        "layer_types": ["sliding_attention", "chunked_attention", "full_attention"],
        "sliding_window": 512, "attention_chunk_size": 8192, "rope_theta": 10000.0})");
    const auto all = ropekit::model_config_from_json(root);
    REQUIRE(all.types.size() == 3);
    for (const auto& t : all.types) {
        INFO("layer type " << t.layer_type);
        ropekit::config_json_options o;
        o.layer_type = t.layer_type;
        require_same_layer(ropekit::config_from_json(root, o), t);
        // HF's Gemma 4: head_dim = global_head_dim on every layer that is not sliding.
        CHECK(t.head_dim == (t.layer_type == "sliding_attention" ? 128 : 512));
    }
}

TEST_CASE("both readers agree on every shipped config and each of its layer types", "[config]") {
    const char* files[] = {"tests/data/cohere.json",
                           "tests/data/deepseek_v2_lite.json",
                           "tests/data/deepseek_v3_neox.json",
                           "tests/data/gemma3_text.json",
                           "tests/data/glm4.json",
                           "tests/data/gpt_oss.json",
                           "tests/data/gptj.json",
                           "tests/data/legacy_type_linear.json",
                           "tests/data/llama2_dynamic.json",
                           "tests/data/llama2_ntk.json",
                           "tests/data/llama31_8b.json",
                           "tests/data/phi2_partial.json",
                           "tests/data/phi35_longrope.json",
                           "tests/data/pythia_neox.json",
                           "tests/data/qwen25_yarn.json",
                           "tests/data/qwen2_vl.json",
                           "tests/data/v5_per_layer.json",
                           "tests/data/v5_rope_parameters.json"};
    std::vector<std::string> paths;
    for (const char* f : files) paths.push_back(std::string(ROPEKIT_SOURCE_DIR) + "/" + f);
    for (const char* f :
         {"deepseek_v3", "default", "dynamic", "gemma3", "gemma4", "gpt_oss", "linear", "llama3",
          "llama4", "longrope", "ntk", "qwen2_5_vl", "qwen3_vl", "yarn"})
        paths.push_back(std::string(ROPEKIT_SOURCE_DIR) + "/examples/configs/" + f + ".json");
    int compared = 0;
    for (const auto& path : paths) {
        INFO(path);
        std::ifstream in(path);
        REQUIRE(in);
        std::stringstream text;
        text << in.rdbuf();
        const auto root = nlohmann::json::parse(text.str());
        ropekit::model_layers_config all;
        try {
            all = ropekit::model_config_from_json(root);
        } catch (const ropekit::error& e) {
            // A RoPE-only test config without the attention keys a layer type needs
            // (sliding_window): nothing per layer to compare.
            INFO(e.what());
            CHECK(e.field() == "sliding_window");
            continue;
        }
        for (const auto& t : all.types) {
            INFO("layer type " << t.layer_type);
            ropekit::config_json_options o;
            o.layer_type = t.layer_type;
            require_same_layer(ropekit::config_from_json(root, o), t);
            ++compared;
        }
    }
    CHECK(compared >= int(paths.size()));  // at least one layer type per file on average
}

#endif  // ROPEKIT_TEST_HAVE_JSON
