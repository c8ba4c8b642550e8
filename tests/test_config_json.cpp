// SPDX-License-Identifier: Apache-2.0
// config.json import (include/ropekit/config_json.hpp) over configs modelled on real models,
// malformed input, and the rope-inspect command line (examples/rope_inspect/rope_inspect.hpp,
// the code examples/rope_inspect/rope_inspect.cpp runs).
#include "test_support.hpp"

#if ROPEKIT_TEST_HAVE_JSON

#include <ropekit/config_json.hpp>
#include <ropekit/inspect.hpp>

#include "rope_inspect.hpp"  // examples/rope_inspect/: the rope-inspect command line

#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <variant>
#include <vector>

using namespace ropekit;

namespace {

std::string data(const std::string& file) {
    return std::string(ROPEKIT_TEST_DATA_DIR) + "/" + file;
}

/// Requires a ropekit::error whose field() is `field` and whose message contains `text`.
void expect_error(const std::function<void()>& f, const std::string& field,
                  const std::string& text) {
    ropekit_test::expect_error<ropekit::error>(f, field, text);
}

void expect_parse_error(const std::string& json_text, const std::string& field,
                        const std::string& text) {
    INFO("config: " << json_text);
    expect_error([&] { (void)parse_config_json(json_text); }, field, text);
}

bool has_warning(const model_rope_config& c, const std::string& needle) {
    for (const auto& w : c.warnings)
        if (w.find(needle) != std::string::npos) return true;
    return false;
}

struct inspect_result {
    int status;
    std::string out, err;
};
inspect_result inspect(const std::vector<std::string>& args) {
    std::ostringstream out, err;
    const int status = rope_inspect::run(args, out, err);
    return {status, out.str(), err.str()};
}

}  // namespace

TEST_CASE("Llama-3.1-8B: llama3 scaling with the HF band counts") {
    const auto c = load_config_json(data("llama31_8b.json"));
    CHECK(c.rope_type == "llama3");
    CHECK(c.params.head_dim == 128);
    CHECK(c.params.rotary_dim == 128);
    CHECK(c.params.base == 500000.0);
    CHECK(c.params.layout == rope_layout::neox);
    CHECK(c.max_position_embeddings == 131072);
    const auto& l = std::get<llama3_scaling>(c.scaling);
    CHECK(l.factor == 8.0);
    CHECK(l.low_freq_factor == 1.0);
    CHECK(l.high_freq_factor == 4.0);
    CHECK(l.original_max_position == 8192);
    CHECK(c.frequencies().inv_freq == l.frequencies(c.params).inv_freq);
    CHECK(c.warnings.empty());
}

TEST_CASE("YaRN configs: Qwen2.5 (legacy type), gpt-oss (truncate false), DeepSeek-V2 (mscale)") {
    const auto q = load_config_json(data("qwen25_yarn.json"));
    CHECK(q.rope_type == "yarn");
    const auto& qy = std::get<yarn_scaling>(q.scaling);
    CHECK(qy.factor == 4.0);
    CHECK(qy.original_max_position == 32768);
    CHECK(qy.truncate);
    CHECK(q.params.base == 1e6);
    CHECK(q.params.head_dim == 128);  // 3584 / 28
    CHECK(attention_factor(q.scaling) == 0.1 * std::log(4.0) + 1.0);

    const auto g = load_config_json(data("gpt_oss.json"));
    const auto& gy = std::get<yarn_scaling>(g.scaling);
    CHECK(!gy.truncate);
    CHECK(g.params.head_dim == 64);  // head_dim key wins over 2880 / 64
    const auto r = gy.correction_range(g.params);
    CHECK(r.low == Approx(8.092779115512402).epsilon(1e-14));
    CHECK(r.high == Approx(17.39802450158856).epsilon(1e-14));
    CHECK(g.frequencies().attention_factor == float(0.1 * std::log(32.0) + 1.0));

    const auto ds = load_config_json(data("deepseek_v2_lite.json"));
    const auto& dy = std::get<yarn_scaling>(ds.scaling);
    // MLA: the q/k head is qk_nope_head_dim + qk_rope_head_dim (not 2048 / 16), the rotated
    // qk_rope_head_dim channels follow the 128 nope ones.
    CHECK(ds.params.head_dim == 192);
    CHECK(ds.params.rotary_dim == 64);
    CHECK(ds.params.rotary_offset == 128);
    CHECK(ds.frequencies().rotary_offset == 128);
    CHECK(dy.factor == 40.0);
    CHECK(dy.mscale == 0.707);
    CHECK(dy.mscale_all_dim == 0.707);
    CHECK(attention_factor(ds.scaling) ==
          1.0);  // the ratio; DeepSeek's softmax mscale^2 is not RoPE
}

TEST_CASE("v5 rope_parameters: theta inside the dict, explicit factor wins, per layer type") {
    const auto c = load_config_json(data("v5_rope_parameters.json"));
    CHECK(c.params.base == 1e6);
    const auto& y = std::get<yarn_scaling>(c.scaling);
    CHECK(y.factor == 4.0);  // not 40960 / 32768
    CHECK(y.original_max_position == 32768);
    // Without a factor, max_position_embeddings / original_max_position_embeddings stands in.
    const auto derived = parse_config_json(R"({"head_dim": 64, "max_position_embeddings": 131072,
        "rope_parameters": {"rope_type": "yarn", "rope_theta": 150000, "original_max_position_embeddings": 4096}})");
    CHECK(std::get<yarn_scaling>(derived.scaling).factor == 32.0);

    expect_error([] { (void)load_config_json(data("v5_per_layer.json")); }, "rope_parameters",
                 "full_attention");
    config_json_options full;
    full.layer_type = "full_attention";
    const auto f = load_config_json(data("v5_per_layer.json"), full);
    CHECK(std::get<linear_scaling>(f.scaling).factor == 8.0);
    CHECK(f.params.base == 1e6);
    CHECK(f.params.head_dim == 256);
    config_json_options sliding;
    sliding.layer_type = "sliding_attention";
    const auto s = load_config_json(data("v5_per_layer.json"), sliding);
    CHECK(s.rope_type == "default");
    CHECK(s.params.base == 10000.0);
    config_json_options missing;
    missing.layer_type = "chunked_attention";
    expect_error([&] { (void)load_config_json(data("v5_per_layer.json"), missing); },
                 "rope_parameters.chunked_attention", "missing");
    // Both present: HF v5's `rope_scaling or rope_parameters` takes the non-null rope_scaling
    // (the rope_parameters dict, with its rope_theta, is ignored with a warning).
    const auto both = parse_config_json(R"({"head_dim": 64, "rope_theta": 10000,
        "rope_scaling": {"type": "linear", "factor": 2.0},
        "rope_parameters": {"rope_type": "linear", "factor": 3.0, "rope_theta": 20000}})");
    CHECK(std::get<linear_scaling>(both.scaling).factor == 2.0);
    CHECK(both.params.base == 10000.0);
    CHECK(has_warning(both, "rope_parameters: ignored"));
}

TEST_CASE("LongRoPE (Phi-3.5): top-level original length, factor from the length ratio") {
    const auto c = load_config_json(data("phi35_longrope.json"));
    const auto& l = std::get<longrope_scaling>(c.scaling);
    CHECK(c.params.head_dim == 96);
    CHECK(l.short_factor.size() == 48);
    CHECK(l.long_factor.size() == 48);
    CHECK(l.original_max_position == 4096);
    CHECK(l.factor == 32.0);  // derived: max_position_embeddings / original
    CHECK(attention_factor(c.scaling) == Approx(1.1902380714238083).epsilon(1e-15));
    CHECK(c.frequencies(4096).inv_freq == l.frequencies(c.params).inv_freq);
    CHECK(c.frequencies(4097).inv_freq != c.frequencies(4096).inv_freq);
    // The Phi-3 era name "su" is longrope; per-set mscales are reported as ignored.
    const auto su = parse_config_json(R"({"head_dim": 4, "max_position_embeddings": 8192,
        "original_max_position_embeddings": 4096,
        "rope_scaling": {"type": "su", "short_factor": [1, 1], "long_factor": [2, 3],
                         "short_mscale": 1.1, "long_mscale": 1.2}})");
    CHECK(su.rope_type == "su");
    CHECK(std::string(name(su.scaling)) == "longrope");
    CHECK(has_warning(su, "short_mscale"));
}

TEST_CASE("partial rotary and old names: Phi-2, Pythia (GPT-NeoX), GPT-J") {
    const auto phi2 = load_config_json(data("phi2_partial.json"));
    CHECK(phi2.params.head_dim == 80);
    CHECK(phi2.params.rotary_dim == 32);  // int(80 * 0.4)
    CHECK(phi2.rope_type == "default");
    const auto neox = load_config_json(data("pythia_neox.json"));
    CHECK(neox.params.head_dim == 256);
    CHECK(neox.params.rotary_dim == 64);  // rotary_pct 0.25
    CHECK(neox.params.base == 10000.0);   // rotary_emb_base
    CHECK(neox.warnings.empty());
    const auto gptj = load_config_json(data("gptj.json"));
    CHECK(gptj.params.layout == rope_layout::gptj);
    CHECK(gptj.params.head_dim == 256);  // n_embd / n_head
    CHECK(gptj.params.rotary_dim == 64);
    CHECK(gptj.max_position_embeddings == 2048);  // n_positions
    config_json_options neox_layout;
    neox_layout.layout = rope_layout::neox;
    CHECK(load_config_json(data("gptj.json"), neox_layout).params.layout == rope_layout::neox);
}

TEST_CASE("legacy 'type', dynamic NTK's L0, NTK alpha read from factor, warnings") {
    const auto lin = load_config_json(data("legacy_type_linear.json"));
    CHECK(std::get<linear_scaling>(lin.scaling).factor == 4.0);
    CHECK(has_warning(lin, "rope_theta"));  // missing: HF's default 10000
    CHECK(lin.params.base == 10000.0);
    const auto dyn = load_config_json(data("llama2_dynamic.json"));
    const auto& d = std::get<dynamic_ntk_scaling>(dyn.scaling);
    CHECK(d.factor == 2.0);
    CHECK(d.original_max_position == 4096);  // max_position_embeddings, as HF
    CHECK(dyn.frequencies(4096).inv_freq == default_rope{}.frequencies(dyn.params).inv_freq);
    const auto ntk = load_config_json(data("llama2_ntk.json"));
    CHECK(std::get<ntk_scaling>(ntk.scaling).alpha == 8.0);
    const auto with_orig = parse_config_json(R"({"head_dim": 64, "max_position_embeddings": 2048,
        "rope_scaling": {"rope_type": "dynamic", "factor": 2, "original_max_position_embeddings": 1024,
                         "unknown_key": 1}})");
    CHECK(std::get<dynamic_ntk_scaling>(with_orig.scaling).original_max_position == 2048);
    CHECK(has_warning(with_orig, "original_max_position_embeddings: ignored"));
    CHECK(has_warning(with_orig, "unknown_key"));
    // null rope_scaling, betas given as 0 (Python `or`: the defaults), text_config nesting
    const auto betas =
        parse_config_json(R"({"text_config": {"head_dim": 64, "max_position_embeddings": 4096,
        "rope_scaling": {"rope_type": "yarn", "factor": 8, "beta_fast": 0, "beta_slow": null}}})");
    CHECK(std::get<yarn_scaling>(betas.scaling).beta_fast == 32.0);
    CHECK(std::get<yarn_scaling>(betas.scaling).beta_slow == 1.0);
    CHECK(std::get<yarn_scaling>(betas.scaling).original_max_position == 4096);
}

TEST_CASE("the shipped example configs cover every method once") {
    std::set<std::string> seen;
    for (const char* f : {"default", "linear", "ntk", "dynamic", "yarn", "llama3", "longrope"}) {
        const auto c =
            load_config_json(std::string(ROPEKIT_SOURCE_DIR) + "/examples/configs/" + f + ".json");
        CHECK(std::string(name(c.scaling)) == f);
        seen.insert(std::string(name(c.scaling)));
        CHECK_NOTHROW(c.frequencies(1 << 20));
    }
    CHECK(seen.size() == 7);
}

TEST_CASE("malformed configs: one ropekit::error per class, naming the key") {
    expect_error([] { (void)load_config_json(data("malformed.json")); }, "config.json",
                 "not valid JSON");
    expect_error([] { (void)load_config_json(data("no_such_file.json")); }, "path",
                 "no_such_file.json");
    expect_parse_error("[1, 2]", "config.json", "object");
    expect_parse_error(R"({"hidden_size": 4096})", "head_dim", "missing");
    expect_parse_error(R"({"head_dim": "128"})", "head_dim", "integer");
    expect_parse_error(R"({"head_dim": 63})", "rotary_dim", "63");
    expect_parse_error(R"({"head_dim": 0})", "head_dim", "0");
    expect_parse_error(R"({"hidden_size": 4096, "num_attention_heads": 0})", "num_attention_heads",
                       "0");
    expect_parse_error(R"({"head_dim": 128, "rope_theta": -5})", "rope_theta", "-5");
    expect_parse_error(R"({"head_dim": 128, "partial_rotary_factor": 1.5})",
                       "partial_rotary_factor", "1.5");
    expect_parse_error(R"({"head_dim": 128, "rope_scaling": "yarn"})", "rope_scaling", "yarn");
    expect_parse_error(R"({"head_dim": 128, "rope_scaling": {"factor": 2}})",
                       "rope_scaling.rope_type", "missing");
    expect_parse_error(R"({"head_dim": 128, "rope_scaling": {"rope_type": 7}})",
                       "rope_scaling.rope_type", "7");
    expect_parse_error(R"({"head_dim": 128, "rope_scaling": {"rope_type": "foo"}})",
                       "rope_scaling.rope_type", "\"foo\"");
    expect_parse_error(R"({"head_dim": 128, "rope_scaling": {"rope_type": "linear"}})",
                       "rope_scaling.factor", "missing");
    expect_parse_error(
        R"({"head_dim": 128, "rope_scaling": {"rope_type": "linear", "factor": "abc"}})",
        "rope_scaling.factor", "\"abc\"");
    expect_parse_error(
        R"({"head_dim": 128, "rope_scaling": {"rope_type": "linear", "factor": 0.5}})",
        "rope_scaling.factor", "0.5");
    expect_parse_error(
        R"({"head_dim": 128, "rope_scaling": {"rope_type": "dynamic", "factor": 2}})",
        "max_position_embeddings", "missing");
    expect_parse_error(R"({"head_dim": 128, "rope_scaling": {"rope_type": "yarn", "factor": 2}})",
                       "max_position_embeddings", "missing");
    expect_parse_error(R"({"head_dim": 128, "max_position_embeddings": 4096,
        "rope_scaling": {"rope_type": "yarn", "factor": 2, "beta_fast": 1, "beta_slow": 2}})",
                       "rope_scaling.beta_fast", "1");
    expect_parse_error(R"({"head_dim": 128, "max_position_embeddings": 4096,
        "rope_scaling": {"rope_type": "yarn", "factor": 2, "truncate": "no"}})",
                       "rope_scaling.truncate", "\"no\"");
    expect_parse_error(R"({"head_dim": 128, "max_position_embeddings": 4096,
        "rope_scaling": {"rope_type": "yarn", "factor": 2, "original_max_position_embeddings": 1.5}})",
                       "rope_scaling.original_max_position_embeddings", "1.5");
    expect_parse_error(R"({"head_dim": 128, "rope_scaling": {"rope_type": "llama3", "factor": 8,
        "high_freq_factor": 4, "original_max_position_embeddings": 8192}})",
                       "rope_scaling.low_freq_factor", "missing");
    expect_parse_error(R"({"head_dim": 128, "rope_scaling": {"rope_type": "llama3", "factor": 8,
        "low_freq_factor": 4, "high_freq_factor": 1, "original_max_position_embeddings": 8192}})",
                       "rope_scaling.low_freq_factor", "4");
    expect_parse_error(R"({"head_dim": 128, "rope_scaling": {"rope_type": "llama3", "factor": 8,
        "low_freq_factor": 1, "high_freq_factor": 4}})",
                       "rope_scaling.original_max_position_embeddings", "missing");
    expect_parse_error(R"({"head_dim": 4, "max_position_embeddings": 4096,
        "rope_scaling": {"type": "longrope", "factor": 2, "short_factor": [1, 1, 1], "long_factor": [1, 2]}})",
                       "rope_scaling.short_factor", "3");
    expect_parse_error(R"({"head_dim": 4, "max_position_embeddings": 4096,
        "rope_scaling": {"type": "longrope", "factor": 2, "short_factor": 1, "long_factor": [1, 2]}})",
                       "rope_scaling.short_factor", "list");
    expect_parse_error(R"({"head_dim": 4, "max_position_embeddings": 4096,
        "rope_scaling": {"type": "longrope", "factor": 2, "short_factor": [1, "x"], "long_factor": [1, 2]}})",
                       "rope_scaling.short_factor", "\"x\"");
    expect_parse_error(R"({"head_dim": 4, "max_position_embeddings": 4096,
        "rope_scaling": {"type": "longrope", "short_factor": [1, 1], "long_factor": [1, 2]}})",
                       "rope_scaling.factor", "missing");
    expect_parse_error(R"({"head_dim": 128, "rope_scaling": {"rope_type": "ntk"}})",
                       "rope_scaling.alpha", "missing");
    expect_parse_error(R"({"head_dim": 128, "rope_parameters": [1]})", "rope_parameters", "[1]");
}

namespace {

/// One valid config per method, every key given (what the description-driven tests start from).
/// A method added to rope_scaling without an entry here fails the test below.
const std::map<std::string, std::string>& full_configs() {
    static const std::map<std::string, std::string> configs = {
        {"default", R"({"rope_type": "default"})"},
        {"linear", R"({"rope_type": "linear", "factor": 2.0})"},
        {"ntk", R"({"rope_type": "ntk", "alpha": 2.0})"},
        {"dynamic", R"({"rope_type": "dynamic", "factor": 2.0})"},
        {"yarn", R"({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2048,
                     "beta_fast": 16.0, "beta_slow": 2.0, "attention_factor": 1.5, "mscale": 1.0,
                     "mscale_all_dim": 1.0, "truncate": false})"},
        {"llama3", R"({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 2048})"},
        {"longrope", R"({"rope_type": "longrope", "short_factor": [1.0, 1.5, 2.0, 2.5],
                         "long_factor": [2.0, 3.0, 4.0, 5.0], "original_max_position_embeddings":
                         2048, "attention_factor": 1.2, "factor": 4.0})"},
        {"proportional", R"({"rope_type": "proportional", "factor": 2.0})"}};
    return configs;
}

model_rope_config parse_with_dict(const nlohmann::json& dict) {
    nlohmann::json cfg = {{"head_dim", 8}, {"max_position_embeddings", 8192}};
    cfg["rope_scaling"] = dict;
    return config_from_json(cfg);
}

}  // namespace

TEST_CASE("the reader, rope-inspect and the error paths follow each method's config_keys()") {
    const std::string help = inspect({"--help"}).out;
    detail::for_each_method([&](auto tag) {
        using M = typename decltype(tag)::type;
        INFO("rope_type " << M::rope_type);
        CHECK(help.find(std::string(M::rope_type)) != std::string::npos);
        const auto entry = full_configs().find(std::string(M::rope_type));
        REQUIRE(entry != full_configs().end());
        const nlohmann::json dict = nlohmann::json::parse(entry->second);
        const model_rope_config c = parse_with_dict(dict);
        REQUIRE(std::holds_alternative<M>(c.scaling));
        CHECK(!has_warning(c, "not used by rope_type"));
        const nlohmann::json reported = rope_inspect::method_parameters(c.scaling);
        std::size_t reported_keys = 0;
        std::apply(
            [&](const auto&... k) {
                auto one = [&](const auto& key) {
                    if constexpr (!std::is_same_v<std::decay_t<decltype(key)>, ignored_key>) {
                        const std::string key_name(key.name);
                        INFO("key " << key_name);
                        ++reported_keys;
                        // rope-inspect reports the value read, under validate()'s member name.
                        CHECK(reported.contains(std::string(key.member_name())));
                        CHECK(reported[std::string(key.member_name())] ==
                              rope_inspect::to_json_value(std::get<M>(c.scaling).*key.member));
                        if (key.rule == key_rule::max_position) return;  // not a dict key
                        CHECK(help.find(rope_inspect::flag_for_key(key.name)) != std::string::npos);
                        // A wrongly typed value is an error naming the key as written.
                        nlohmann::json bad = dict;
                        bad[key_name] = "x";
                        expect_error([&] { (void)parse_with_dict(bad); },
                                     "rope_scaling." + key_name, "\"x\"");
                        if (key.rule == key_rule::required) {
                            nlohmann::json missing = dict;
                            missing.erase(key_name);
                            if (!key.alias.empty()) missing.erase(std::string(key.alias));
                            expect_error([&] { (void)parse_with_dict(missing); },
                                         "rope_scaling." + key_name, "missing");
                        }
                    }
                };
                (one(k), ...);
            },
            M::config_keys());
        std::size_t derived = 0;
        if constexpr (detail::has_derived_values<M>::value)
            derived = std::tuple_size_v<decltype(M::derived_values())>;
        CHECK(reported.size() == reported_keys + derived);
    });
    CHECK(full_configs().size() == std::variant_size_v<rope_scaling>);
    // The derived flag of a key works like the short one kept for compatibility.
    const auto longer = inspect({"--rope-type", "yarn", "--head-dim", "64", "--factor", "2",
                                 "--original-max-position-embeddings", "1024", "--json"});
    REQUIRE(longer.status == 0);
    CHECK(nlohmann::json::parse(longer.out)["parameters"]["original_max_position"] == 1024);
}

TEST_CASE("pair layout: interleaved model types, rope_interleave, unknown model types") {
    // DeepSeek-V2 pairs adjacent channels (view_as_complex on reshape(..., -1, 2)).
    const auto ds = load_config_json(data("deepseek_v2_lite.json"));
    CHECK(ds.params.layout == rope_layout::gptj);
    // Cohere: rotate_half over x[..., ::2] / x[..., 1::2]; GLM-4: the same, half the head rotated.
    const auto cohere = load_config_json(data("cohere.json"));
    CHECK(cohere.params.layout == rope_layout::gptj);
    CHECK(cohere.params.head_dim == 128);
    CHECK(cohere.warnings.empty());
    const auto glm = load_config_json(data("glm4.json"));
    CHECK(glm.params.layout == rope_layout::gptj);
    CHECK(glm.params.rotary_dim == 64);
    for (const char* t : {"deepseek_v3", "kimi_k2", "cohere2", "glm", "chatglm", "helium"}) {
        INFO("model_type " << t);
        const auto c =
            parse_config_json(std::string(R"({"head_dim": 64, "model_type": ")") + t + "\"}");
        CHECK(c.params.layout == rope_layout::gptj);
    }
    // DeepSeek-V3's rope_interleave: false keeps rotate-half, true (its default) interleaves.
    const auto v3 = load_config_json(data("deepseek_v3_neox.json"));
    CHECK(v3.params.layout == rope_layout::neox);
    CHECK(v3.params.rotary_dim == 64);
    CHECK(parse_config_json(R"({"head_dim": 64, "model_type": "llama", "rope_interleave": true})")
              .params.layout == rope_layout::gptj);
    expect_parse_error(R"({"head_dim": 64, "rope_interleave": "yes"})", "rope_interleave",
                       "\"yes\"");
    // The option still wins over the file.
    config_json_options neox;
    neox.layout = rope_layout::neox;
    CHECK(load_config_json(data("cohere.json"), neox).params.layout == rope_layout::neox);
    // A model_type ropekit does not know: neox, with a warning; none at all (hand-written): no
    // warning; a known NeoX model: no warning.
    const auto unknown = parse_config_json(R"({"head_dim": 64, "model_type": "brand_new_arch"})");
    CHECK(unknown.params.layout == rope_layout::neox);
    CHECK(has_warning(unknown, "layout assumed neox"));
    CHECK(parse_config_json(R"({"head_dim": 64, "rope_theta": 10000})").warnings.empty());
    CHECK(load_config_json(data("llama31_8b.json")).warnings.empty());
    config_json_options chosen;
    chosen.layout = rope_layout::neox;
    CHECK(parse_config_json(
              R"({"head_dim": 64, "rope_theta": 1e4, "model_type": "brand_new_arch"})", chosen)
              .warnings.empty());
}

TEST_CASE(
    "precedence as HF v5: rope_scaling over rope_parameters, top-level original length "
    "and partial_rotary_factor over the dict's") {
    const auto both = load_config_json(data("precedence_rope_scaling_wins.json"));
    CHECK(std::get<linear_scaling>(both.scaling).factor == 2.0);
    CHECK(both.params.base == 10000.0);
    CHECK(has_warning(both, "rope_parameters: ignored"));
    // An empty rope_scaling is falsy in Python: rope_parameters is used.
    const auto empty_rs = parse_config_json(R"({"head_dim": 64, "rope_scaling": {},
        "rope_parameters": {"rope_type": "linear", "factor": 3.0}})");
    CHECK(std::get<linear_scaling>(empty_rs.scaling).factor == 3.0);

    const auto orig = load_config_json(data("precedence_top_original_max.json"));
    CHECK(std::get<llama3_scaling>(orig.scaling).original_max_position == 8192);
    CHECK(orig.original_max_position_embeddings == 8192);
    CHECK(has_warning(orig, "4096 overridden by the top-level 8192"));
    // The same holds for yarn and longrope; dynamic NTK never reads it.
    const auto yarn = parse_config_json(R"({"head_dim": 64, "max_position_embeddings": 32768,
        "original_max_position_embeddings": 8192,
        "rope_scaling": {"rope_type": "yarn", "original_max_position_embeddings": 4096}})");
    CHECK(std::get<yarn_scaling>(yarn.scaling).original_max_position == 8192);
    CHECK(std::get<yarn_scaling>(yarn.scaling).factor == 4.0);  // 32768 / 8192
    const auto lr = parse_config_json(R"({"head_dim": 4, "max_position_embeddings": 8192,
        "original_max_position_embeddings": 2048,
        "rope_scaling": {"type": "longrope", "short_factor": [1, 1], "long_factor": [2, 3],
                         "original_max_position_embeddings": 4096}})");
    CHECK(std::get<longrope_scaling>(lr.scaling).original_max_position == 2048);
    CHECK(std::get<longrope_scaling>(lr.scaling).factor == 4.0);

    const auto prf = load_config_json(data("precedence_top_partial.json"));
    CHECK(prf.params.rotary_dim == 32);  // int(80 * 0.4), not int(80 * 0.5)
    CHECK(has_warning(prf, "partial_rotary_factor: 0.5 overridden by the top-level 0.4"));
}

TEST_CASE("derived LongRoPE factor below 1: attention factor 1 as HF; explicit below 1 errs") {
    const auto lr = parse_config_json(R"({"head_dim": 4, "max_position_embeddings": 2048,
        "original_max_position_embeddings": 4096,
        "rope_scaling": {"type": "longrope", "short_factor": [1, 1], "long_factor": [2, 3]}})");
    const auto& l = std::get<longrope_scaling>(lr.scaling);
    CHECK(!l.factor.has_value());
    CHECK(attention_factor(lr.scaling) == 1.0);
    CHECK(has_warning(lr, "derived from max_position_embeddings"));
    CHECK_NOTHROW(lr.frequencies(8192));
    // An explicit attention_factor is kept.
    const auto af = parse_config_json(R"({"head_dim": 4, "max_position_embeddings": 2048,
        "original_max_position_embeddings": 4096,
        "rope_scaling": {"type": "longrope", "short_factor": [1, 1], "long_factor": [2, 3],
                         "attention_factor": 1.25}})");
    CHECK(attention_factor(af.scaling) == 1.25);
    expect_parse_error(R"({"head_dim": 4, "max_position_embeddings": 4096,
        "rope_scaling": {"type": "longrope", "factor": 0.5, "short_factor": [1, 1], "long_factor": [2, 3]}})",
                       "rope_scaling.factor", "0.5");
    // YaRN's factor changes the frequencies, so a derived one below 1 stays an error, saying so.
    expect_parse_error(R"({"head_dim": 64, "max_position_embeddings": 2048,
        "rope_parameters": {"rope_type": "yarn", "original_max_position_embeddings": 4096}})",
                       "rope_parameters.factor",
                       "(derived from max_position_embeddings / original_max_position_embeddings)");
    // Values the scaling types reject carry the key as written in the file.
    expect_parse_error(R"({"head_dim": 64, "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "yarn", "factor": 0.25}})",
                       "rope_parameters.factor", "0.25");
    expect_parse_error(
        R"({"head_dim": 64, "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 0.5}}})",
        "rope_parameters.full_attention.factor", "from rope_parameters.full_attention.factor");
    expect_parse_error(R"({"head_dim": 64, "rope_scaling": {"rope_type": "ntk", "factor": 0.5}})",
                       "rope_scaling.factor", "0.5");
    expect_parse_error(R"({"head_dim": 64, "max_position_embeddings": 0,
        "rope_scaling": {"rope_type": "dynamic", "factor": 2}})",
                       "max_position_embeddings", "0");
    expect_parse_error(R"({"head_dim": 4, "max_position_embeddings": 4096,
        "rope_scaling": {"type": "longrope", "factor": 2, "short_factor": [1, 1], "long_factor": [1, 2],
                         "attention_factor": -1}})",
                       "rope_scaling.attention_factor", "-1");
}

TEST_CASE("M-RoPE (Qwen2-VL): default frequencies and the mrope_section on the config") {
    const auto c = load_config_json(data("qwen2_vl.json"));
    CHECK(c.rope_type == "mrope");
    CHECK(std::holds_alternative<default_rope>(c.scaling));
    CHECK(c.params.base == 1e6);
    CHECK(c.params.rotary_dim == 128);
    REQUIRE(c.mrope);
    CHECK(c.mrope->section == std::array<int, 3>{16, 24, 24});
    CHECK(c.mrope->layout == mrope_layout::contiguous);
    CHECK(!has_warning(c, "mrope_section"));
    CHECK(!has_warning(c, "not used by rope_type"));
    CHECK(c.frequencies().inv_freq == default_rope{}.frequencies(c.params).inv_freq);
    // Qwen2.5-VL's later spelling: type default plus mrope_section.
    const auto d = parse_config_json(R"({"head_dim": 128, "model_type": "qwen2_5_vl",
        "rope_scaling": {"type": "default", "mrope_section": [16, 24, 24]}})");
    CHECK(std::holds_alternative<default_rope>(d.scaling));
    REQUIRE(d.mrope);
    CHECK(d.mrope->layout == mrope_layout::contiguous);
    CHECK(!has_warning(d, "mrope"));
    // Qwen3-VL: mrope_interleaved (and its model_type) give the interleaved T/H/W assignment.
    const auto e = parse_config_json(R"({"head_dim": 128, "rope_scaling": {"rope_type": "default",
        "mrope_section": [24, 20, 20], "mrope_interleaved": true}})");
    REQUIRE(e.mrope);
    CHECK(e.mrope->layout == mrope_layout::interleaved);
    CHECK(!has_warning(e, "not used by rope_type"));
    const auto f = parse_config_json(R"({"model_type": "qwen3_vl", "text_config": {"head_dim": 128,
        "model_type": "qwen3_vl_text", "rope_scaling": {"rope_type": "default",
        "mrope_section": [24, 20, 20]}}})");
    REQUIRE(f.mrope);
    CHECK(f.mrope->layout == mrope_layout::interleaved);
    // Named errors: the sum, the entries, the shape, the flag.
    expect_parse_error(R"({"head_dim": 128, "rope_scaling": {"type": "mrope",
        "mrope_section": [16, 24, 16]}})",
                       "rope_scaling.mrope_section", "sum");
    expect_parse_error(R"({"head_dim": 128, "rope_scaling": {"type": "mrope",
        "mrope_section": [16, -1, 24]}})",
                       "rope_scaling.mrope_section[1]", "-1");
    expect_parse_error(R"({"head_dim": 128, "rope_scaling": {"type": "mrope",
        "mrope_section": [64, 64]}})",
                       "rope_scaling.mrope_section", "3 integers");
    expect_parse_error(R"({"head_dim": 128, "rope_scaling": {"type": "default",
        "mrope_section": [24, 20, 20], "mrope_interleaved": 1}})",
                       "rope_scaling.mrope_interleaved", "1");
    // Interleaved: 3 * s1 must fit the pairs (3 * 30 > 64 + 1).
    expect_parse_error(R"({"head_dim": 128, "rope_scaling": {"type": "default",
        "mrope_section": [4, 30, 30], "mrope_interleaved": true}})",
                       "rope_scaling.mrope_section", "interleaved");
}

TEST_CASE("Gemma-3 v4 config: rope_local_base_freq through layer_type") {
    // Without a choice: the global layers' table, and a warning naming the other base.
    const auto global = load_config_json(data("gemma3_text.json"));
    CHECK(std::get<linear_scaling>(global.scaling).factor == 8.0);
    CHECK(global.params.base == 1e6);
    CHECK(has_warning(global, "rope_local_base_freq"));
    config_json_options sliding;
    sliding.layer_type = "sliding_attention";
    const auto local = load_config_json(data("gemma3_text.json"), sliding);
    CHECK(std::holds_alternative<default_rope>(local.scaling));  // HF: no scaling there
    CHECK(local.params.base == 10000.0);
    CHECK(local.params.head_dim == 256);
    CHECK(local.warnings.empty());
    config_json_options full;
    full.layer_type = "full_attention";
    const auto f = load_config_json(data("gemma3_text.json"), full);
    CHECK(std::get<linear_scaling>(f.scaling).factor == 8.0);
    CHECK(f.params.base == 1e6);
    CHECK(f.warnings.empty());
    // rope-inspect passes --layer-type through.
    auto r = inspect(
        {"--config", data("gemma3_text.json"), "--layer-type", "sliding_attention", "--json"});
    REQUIRE(r.status == 0);
    CHECK(nlohmann::json::parse(r.out)["base"] == 10000.0);
}

TEST_CASE("rope-inspect: flags land in the dict that wins") {
    auto r =
        inspect({"--config", data("precedence_rope_scaling_wins.json"), "--factor", "5", "--json"});
    REQUIRE(r.status == 0);
    CHECK(nlohmann::json::parse(r.out)["parameters"]["factor"] == 5.0);
}

TEST_CASE("rope-inspect: LongRoPE factor null when not given") {
    auto r = inspect({"--rope-type", "longrope", "--head-dim", "4", "--original-max-position",
                      "4096", "--short-factor", "1,1", "--long-factor", "2,3", "--attention-factor",
                      "1.5", "--json"});
    REQUIRE(r.status == 0);
    const auto j = nlohmann::json::parse(r.out);
    CHECK(j["parameters"]["factor"].is_null());
    CHECK(j["attention_factor"] == 1.5);
}

TEST_CASE("rope-inspect: JSON report, text report, SVG, exit codes") {
    const std::string yarn_cfg = std::string(ROPEKIT_SOURCE_DIR) + "/examples/configs/yarn.json";
    auto r = inspect({"--config", yarn_cfg, "--json"});
    REQUIRE(r.status == 0);
    const auto j = nlohmann::json::parse(r.out);  // exactly one JSON object
    REQUIRE(j.is_object());
    CHECK(j["rope_type"] == "yarn");
    CHECK(j["rotary_dim"] == 64);
    CHECK(j["attention_factor"].get<double>() == Approx(0.1 * std::log(32.0) + 1.0));
    const auto freqs = load_config_json(yarn_cfg).frequencies();
    REQUIRE(j["inv_freq"].size() == freqs.inv_freq.size());
    for (std::size_t i = 0; i < freqs.inv_freq.size(); ++i)  // 9 digits round-trip a float32
        CHECK(float(j["inv_freq"][i].get<double>()) == freqs.inv_freq[i]);
    CHECK(j["wavelength"].size() == freqs.inv_freq.size());
    CHECK(j["parameters"]["truncate"] == false);

    // seq_len selects LongRoPE's set; text report names the method and the attention factor
    const std::string lr_cfg = std::string(ROPEKIT_SOURCE_DIR) + "/examples/configs/longrope.json";
    auto lr = inspect({"--config", lr_cfg, "--seq-len", "5000", "--json"});
    REQUIRE(lr.status == 0);
    CHECK(nlohmann::json::parse(lr.out)["parameters"]["uses_long_factor"] == true);
    auto text = inspect({"--config", lr_cfg});
    REQUIRE(text.status == 0);
    CHECK(text.out.find("longrope") != std::string::npos);
    CHECK(text.out.find("attention_factor") != std::string::npos);

    // flags without a file, and flags overriding a file
    auto flags = inspect({"--rope-type", "yarn", "--factor", "4", "--head-dim", "128", "--base",
                          "1e6", "--original-max-position", "32768", "--json"});
    REQUIRE(flags.status == 0);
    const auto fj = nlohmann::json::parse(flags.out);
    CHECK(fj["base"] == 1e6);
    CHECK(fj["parameters"]["factor"] == 4.0);
    auto over = inspect({"--config", yarn_cfg, "--truncate", "true", "--json"});
    REQUIRE(over.status == 0);
    CHECK(nlohmann::json::parse(over.out)["parameters"]["truncate"] == true);
    auto other =
        inspect({"--config", yarn_cfg, "--rope-type", "linear", "--factor", "2", "--json"});
    REQUIRE(other.status == 0);
    CHECK(nlohmann::json::parse(other.out)["rope_type"] == "linear");

    // --svg writes a self-contained picture: both curves, axis labels, legend
    const std::string svg_path = "test_config_json_wavelengths.svg";
    auto s = inspect({"--config", yarn_cfg, "--svg", svg_path});
    REQUIRE(s.status == 0);
    std::ifstream in(svg_path);
    std::stringstream svg;
    svg << in.rdbuf();
    const std::string pic = svg.str();
    CHECK(pic.rfind("<svg", 0) == 0);
    std::size_t polylines = 0;
    for (std::size_t p = pic.find("<polyline"); p != std::string::npos;
         p = pic.find("<polyline", p + 1))
        ++polylines;
    CHECK(polylines == 2);
    CHECK(pic.find("pair index") != std::string::npos);
    CHECK(pic.find("default RoPE") != std::string::npos);
    CHECK(pic.find("original context 4096") != std::string::npos);
    std::remove(svg_path.c_str());

    // bad input: message on stderr naming the field, exit status 2
    auto bad = [](const std::vector<std::string>& args, const std::string& needle) {
        const auto res = inspect(args);
        INFO("stderr: " << res.err);
        CHECK(res.status == 2);
        CHECK(res.out.empty());
        CHECK(res.err.find(needle) != std::string::npos);
    };
    bad({}, "--config");
    bad({"--config", data("malformed.json")}, "not valid JSON");
    bad({"--config", data("does_not_exist.json")}, "cannot open");
    bad({"--rope-type", "warp", "--head-dim", "64"}, "warp");
    bad({"--rope-type", "linear", "--factor", "0.5", "--head-dim", "64"}, "0.5");
    bad({"--head-dim", "63"}, "63");
    bad({"--head-dim", "x64"}, "x64");
    bad({"--config", yarn_cfg, "--seq-len", "-3"}, "-3");
    bad({"--config", yarn_cfg, "--bogus"}, "--bogus");
    bad({"--config"}, "needs a value");
    bad({"--config", yarn_cfg, "--layout", "diagonal"}, "diagonal");
    bad({"--config", yarn_cfg, "--svg", "/nonexistent_dir/x.svg"}, "--svg");
    CHECK(inspect({"--help"}).status == 0);
}

TEST_CASE("hardening: other exceptions never escape the reader") {
    // A number beyond double threw nlohmann's out_of_range, even under an unused key.
    expect_parse_error(R"({"head_dim": 64, "unused": 1e400})", "config.json", "1e400");
    // A wrongly typed value nested 10^6 deep overflowed the stack while the message was built.
    const std::string deep = std::string(1000000, '[') + std::string(1000000, ']');
    expect_parse_error(R"({"head_dim": )" + deep + "}", "config.json", "deeper than 512");
    nlohmann::json cfg = nlohmann::json::object();  // a DOM built by the caller, moved (copies
    cfg["head_dim"] = nlohmann::json::parse(deep);  // of it recurse once per level)
    expect_error([&] { (void)config_from_json(cfg); }, "head_dim", "[[[...]]]");
    // uint64 values printed as negative ("got -64").
    expect_parse_error(R"({"head_dim": 18446744073709551552})", "head_dim", "18446744073709551552");
    expect_parse_error(R"({"head_dim": 64, "max_position_embeddings": 18446744073709551552})",
                       "max_position_embeddings", "18446744073709551552");
}

TEST_CASE("fuzz finding: error messages cut a UTF-8 sequence, which dump() rejected") {
    // fuzz_config_json: a top-level string whose 4-byte character straddles the 60-character
    // message cut threw nlohmann's type_error 316 ("incomplete UTF-8 string").
    const std::string crash =
        "\"beta_facomhg" + std::string(48, '6') + "pt,\xf0\xa0\x90\x84m*st \"";
    expect_parse_error(crash, "config.json", "must be a JSON object");
    // A DOM built by the caller may hold invalid UTF-8 anywhere.
    nlohmann::json cfg = nlohmann::json::object();
    cfg["head_dim"] = std::string("\xff\xfe");
    expect_error([&] { (void)config_from_json(cfg); }, "head_dim", "must be an integer");
    // rope-inspect's JSON report quotes the path as given, which need not be UTF-8.
    const std::string odd = "test_config_json_\xff.json";
    {
        std::ofstream f(odd);
        f << R"({"head_dim": 64})";
    }
    const auto r = inspect({"--config", odd, "--json"});
    CHECK(r.status == 0);
    CHECK(nlohmann::json::parse(r.out).is_object());
    std::remove(odd.c_str());
}

TEST_CASE("hardening: values that overflow float32 name their key") {
    expect_parse_error(R"({"head_dim": 64, "rope_theta": 3.5e38})", "rope_theta", "3.5e+38");
    expect_parse_error(
        R"({"head_dim": 64, "rope_scaling": {"rope_type": "linear", "factor": 1e39}})",
        "rope_scaling.factor", "float32");
    expect_parse_error(R"({"head_dim": 64, "rope_scaling": {"rope_type": "ntk", "factor": 1e300}})",
                       "rope_scaling.factor", "1e+300");
    expect_parse_error(R"({"head_dim": 64, "rope_scaling": {"rope_type": "ntk", "alpha": 1e277}})",
                       "rope_scaling.alpha", "1e+277");
    expect_parse_error(R"({"head_dim": 4, "max_position_embeddings": 4096,
        "rope_scaling": {"type": "longrope", "factor": 2, "short_factor": [1, 1], "long_factor": [1e39, 2]}})",
                       "rope_scaling.long_factor", "float32");
    // A YaRN attention_factor of 1e39 failed later, in rope_frequencies, without its key path.
    expect_parse_error(R"({"head_dim": 64, "max_position_embeddings": 4096,
        "rope_scaling": {"rope_type": "yarn", "factor": 2, "attention_factor": 1e39}})",
                       "rope_scaling.attention_factor", "float32");
    expect_parse_error(R"({"head_dim": 64, "max_position_embeddings": 4096,
        "rope_scaling": {"rope_type": "yarn", "factor": 2, "mscale": 1, "mscale_all_dim": 1e198}})",
                       "rope_scaling.mscale_all_dim", "1e+198");
    // Messages that blamed the wrong key.
    expect_parse_error(R"({"head_dim": 128, "partial_rotary_factor": 0.001})",
                       "partial_rotary_factor", "0.001");
    expect_parse_error(R"({"head_dim": 128, "rope_scaling": {"rope_type": "llama3", "factor": 8,
        "low_freq_factor": 1, "high_freq_factor": 0, "original_max_position_embeddings": 8192}})",
                       "rope_scaling.high_freq_factor", "0");
    expect_parse_error(R"({"head_dim": 65538})", "head_dim", "65538");
}

TEST_CASE("hardening: file reads are bounded and rope-inspect exits 2 on every bad input") {
    auto bad = [](const std::vector<std::string>& args, const std::string& needle) {
        const auto res = inspect(args);
        INFO("args[0..]: " << args.front() << " stderr: " << res.err);
        CHECK(res.status == 2);
        CHECK(res.out.empty());
        CHECK(res.err.find(needle) != std::string::npos);
    };
    // /dev/zero was read without bound; a directory was "not valid JSON".
    bad({"--config", "/dev/zero"}, "not a regular file");
    bad({"--config", ROPEKIT_TEST_DATA_DIR}, "is a directory");
    expect_error([] { (void)load_config_json("/dev/zero"); }, "path", "not a regular file");
    expect_error([] { (void)load_config_json(ROPEKIT_TEST_DATA_DIR); }, "path", "is a directory");
    {
        const std::string big = "test_config_json_big.json";
        {
            std::ofstream f(big, std::ios::binary);
            f.seekp(std::streamoff(max_config_json_bytes));  // sparse: 64 MiB + 1 byte
            f.put(' ');
        }
        expect_error([&] { (void)load_config_json(big); }, "path", "64 MiB");
        bad({"--config", big}, "64 MiB");
        std::remove(big.c_str());
    }
    bad({"--config", data("malformed.json")}, "not valid JSON");
    // A per-layer entry that is not an object, with --layer-type and a flag: was a type_error.
    const std::string layers = "test_config_json_layers.json";
    {
        std::ofstream f(layers);
        f << R"({"head_dim": 64, "rope_parameters": {"full_attention": {"rope_type": "default"},
                 "sliding_attention": 5}})";
    }
    bad({"--config", layers, "--layer-type", "sliding_attention", "--factor", "2"},
        "rope_parameters.sliding_attention");
    bad({"--config", layers, "--layer-type", "missing_layer", "--factor", "2"},
        "rope_parameters.missing_layer");
    std::remove(layers.c_str());
    // A wrongly typed rope_scaling is reported, not replaced by the flags' dict.
    const std::string typed = "test_config_json_typed.json";
    {
        std::ofstream f(typed);
        f << R"({"head_dim": 64, "rope_scaling": "yarn"})";
    }
    bad({"--config", typed, "--factor", "2"}, "rope_scaling");
    std::remove(typed.c_str());
    // Parameters whose combination underflows float32: exit 2, not `inf` in --json or an
    // endless --svg.
    bad({"--rope-type", "linear", "--factor", "1e38", "--base", "1e30", "--head-dim", "64",
         "--json"},
        "inv_freq");
    bad({"--rope-type", "linear", "--factor", "1e38", "--base", "1e30", "--head-dim", "64", "--svg",
         "test_config_json_never.svg"},
        "inv_freq");
    bad({"--rope-type", "ntk", "--alpha", "1e300", "--head-dim", "64", "--json"}, "alpha");
    bad({"--rope-type", "dynamic", "--factor", "2", "--max-position", "4096", "--head-dim", "64",
         "--seq-len", "99999999999"},
        "seq_len");
}

TEST_CASE("rope-inspect: extreme valid parameters give finite JSON and a finite SVG") {
    // The largest base and head_dim accepted: wavelengths span ~38 decades.
    auto r = inspect({"--rope-type", "default", "--base", "3.4e38", "--head-dim", "65536",
                      "--rotary-dim", "65536", "--json", "--svg", "test_config_json_big.svg"});
    REQUIRE(r.status == 0);
    const auto j = nlohmann::json::parse(r.out);  // throws on inf / nan
    for (const auto& w : j["wavelength"]) CHECK(std::isfinite(w.get<double>()));
    std::ifstream in("test_config_json_big.svg");
    std::stringstream svg;
    svg << in.rdbuf();
    CHECK(svg.str().find("</svg>") != std::string::npos);
    std::remove("test_config_json_big.svg");
}

#else
TEST_CASE("config.json import needs nlohmann/json (not found at configure time)") {
    SUCCEED();
}
#endif
