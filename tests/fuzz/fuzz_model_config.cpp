// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the per-layer config reader (include/ropekit/config_json.hpp:
// model_config_from_json / parse_model_config) and the single-layer one, config_from_json(root,
// options) with every layer_type. The input is config.json text (seeded with the real configs
// of tests/data and examples/configs); when it parses to an object, a second document is derived
// from it with one to four edits chosen by the input's last bytes (FuzzedDataProvider reads
// integers from the end, so trailing whitespace steers the edits while the text stays a valid
// config): a number anywhere replaced by an edge value (beyond float32, subnormal in float32,
// 1e-300, 2^63, negative, fractional where an integer is due), a key the readers know set to one
// (softcapping, query_pre_attn_scalar, temperature tuning, head sizes, windows, rope_theta, the
// method dict's factors), or a layer map made up. Both documents go through every reader.
//
// A thrown ropekit::error is the expected outcome for bad input; anything else escaping (or a
// crash, a sanitizer report, a hang, a huge allocation) is a finding, and so is an accepted
// result with a number an engine would silently compute garbage from:
//  - a float field that is not finite in float32 or, where it must be positive, rounds to 0
//    there (layer scaling, attn_logit_softcapping as attention_params takes it: 0 or a normal
//    float, temperature floor_scale / attn_scale and scale_at() up to 2^62, rope_theta, every
//    double of the scaling method by its config_keys(), inv_freq and the attention factor);
//  - layer metadata that contradicts itself (head_dim vs the RoPE's, a window on the wrong layer
//    type, a layer index past the types, kv heads not dividing q heads, M-RoPE sections that do
//    not validate);
//  - config_from_json(root, {layer_type = T}) failing or disagreeing (head_dim, geometry, method,
//    frequencies, M-RoPE, context lengths) with model_config_from_json(root)'s entry for T, for
//    every T the model has;
//  - frequencies, a cos/sin table or attention_params built from an accepted result throwing
//    anything but ropekit::error.
//
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
//       -Iinclude tests/fuzz/fuzz_model_config.cpp -o /tmp/fuzz_model_config
//   /tmp/fuzz_model_config -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
//       /tmp/mc_corpus tests/fuzz/corpus/model_config
#if __has_include(<nlohmann/json.hpp>)  // tests/fuzz/CMakeLists.txt builds every target
#include <fuzzer/FuzzedDataProvider.h>

#include <ropekit/attention.hpp>
#include <ropekit/config_json.hpp>
#include <ropekit/table.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace {

using json = nlohmann::json;

[[noreturn]] void finding(const char* what, const std::string& detail = {}) {
    std::fprintf(stderr, "fuzz_model_config finding: %s %s\n", what, detail.c_str());
    std::abort();
}

/// Finite in float32 (a double beyond FLT_MAX would become inf, the cast itself UB).
bool fits_f32(double v) {
    return std::isfinite(v) && std::fabs(v) <= double(std::numeric_limits<float>::max());
}
/// Finite in float32 and still > 0 once rounded to it.
bool positive_f32(double v) {
    return fits_f32(v) && v > 0.0 && float(v) > 0.0f;
}

void check_f32(double v, const std::string& what) {
    if (!fits_f32(v)) finding("not finite in float32:", what + " = " + std::to_string(v));
}

/// Every double of scaling method `m`, by its config_keys(): HF turns each into a float32.
template <class M>
void check_method(const M& m) {
    ropekit::detail::for_each_key_of<M>([&](const auto& key) {
        using T = typename std::decay_t<decltype(key)>::value_type;
        const std::string name(key.name);
        const T& v = m.*key.member;
        if constexpr (std::is_same_v<T, double>) {
            check_f32(v, name);
        } else if constexpr (std::is_same_v<T, std::optional<double>>) {
            if (v) check_f32(*v, name);
        } else if constexpr (std::is_same_v<T, std::vector<double>>) {
            for (double x : v) check_f32(x, name);
        }
    });
}

void check_frequencies(const ropekit::rope_frequencies& f) {
    for (float v : f.inv_freq)
        if (!(std::isfinite(v) && v > 0.0f)) finding("inv_freq not finite and > 0");
    if (!(std::isfinite(f.attention_factor) && f.attention_factor > 0.0f))
        finding("attention_factor not finite and > 0");
}

/// One model_rope_config: its numbers, then frequencies, tables and the softmax scale built from
/// it (ropekit::error allowed there: a combination may still be refused).
void check_rope(const ropekit::model_rope_config& c, std::optional<double> scaling) {
    const ropekit::rope_params& p = c.params;
    if (!(fits_f32(p.base) && p.base > 1.0)) finding("rope base not in (1, FLT_MAX]");
    if (p.head_dim <= 0 || p.head_dim > ropekit::rope_params::max_head_dim || p.rotary_dim <= 0 ||
        p.rotary_dim % 2 != 0 || p.rotary_dim > p.head_dim)
        finding("rope geometry out of range");
    std::visit([](const auto& m) { check_method(m); }, c.scaling);
    if (c.mrope) {
        try {
            c.mrope->validate(p.rotary_dim / 2);
        } catch (const ropekit::error&) {
            finding("accepted mrope_section does not validate");
        }
    }
    const std::int64_t ctx =
        std::clamp<std::int64_t>(c.max_position_embeddings.value_or(4096), 1, ropekit::max_seq_len);
    for (const std::optional<std::int64_t> seq_len :
         {std::optional<std::int64_t>{}, std::optional<std::int64_t>{1},
          std::optional<std::int64_t>{ctx},
          std::optional<std::int64_t>{std::min(2 * ctx, ropekit::max_seq_len)}}) {
        try {
            const ropekit::rope_frequencies f = c.frequencies(seq_len);
            check_frequencies(f);
            const auto t0 = ropekit::cos_sin_table::for_range(f, 0, 4);
            const std::int64_t last = std::min<std::int64_t>(ctx, ropekit::table_position_limit);
            const auto t1 = ropekit::cos_sin_table::for_range(f, last - 4, 4);
            for (const auto* t : {&t0, &t1})
                for (std::int64_t r = 0; r < t->rows(); ++r)
                    for (std::int64_t i = 0; i < t->row_stride(); ++i) {
                        const float x = t->data()[r * t->row_stride() + i];
                        if (!(std::fabs(x) <= 1.0f + 1e-6f)) finding("table entry not in [-1, 1]");
                    }
            if (scaling) {
                const auto ap = ropekit::attention_params::for_model(f).with_scaling(*scaling);
                if (!(std::isfinite(ap.softmax_scale()) && ap.softmax_scale() > 0.0f))
                    finding("softmax_scale not finite and > 0");
            }
        } catch (const ropekit::error&) {
            // a combination the builders refuse
        }
    }
}

/// The per-layer invariants.
void check_layers(const ropekit::model_layers_config& m) {
    if (m.num_layers() == 0 || m.num_layers() > std::size_t(ropekit::max_model_layers) ||
        m.types.empty())
        finding("layer count out of range");
    for (std::size_t i : m.layer_type_index)
        if (i >= m.types.size()) finding("layer_type_index past the types");
    for (const ropekit::layer_config& t : m.types) {
        const std::string& lt = t.layer_type;
        if (lt != "full_attention" && lt != "sliding_attention" && lt != "chunked_attention")
            finding("unknown layer_type accepted:", lt);
        if (t.head_dim != t.rope.params.head_dim) finding("head_dim != rope.params.head_dim");
        if (t.v_head_dim <= 0 || t.v_head_dim > ropekit::rope_params::max_head_dim)
            finding("v_head_dim out of range");
        if (!positive_f32(t.scaling))
            finding("scaling not finite and > 0 in float32:", std::to_string(t.scaling));
        if (t.sliding_window.has_value() != (lt == "sliding_attention") ||
            (t.sliding_window && *t.sliding_window <= 0))
            finding("sliding_window on the wrong layer type or <= 0");
        if (t.attention_chunk_size.has_value() != (lt == "chunked_attention") ||
            (t.attention_chunk_size && *t.attention_chunk_size <= 0))
            finding("attention_chunk_size on the wrong layer type or <= 0");
        if (t.attn_logit_softcapping) {
            // What attention_params::logit_softcap takes: a normal float32 > 0 (0 is "no cap").
            const double cap = *t.attn_logit_softcapping;
            if (!(fits_f32(cap) && float(cap) >= std::numeric_limits<float>::min()))
                finding("attn_logit_softcapping not a normal float32 > 0:", std::to_string(cap));
        }
        if (t.num_attention_heads && *t.num_attention_heads <= 0) finding("num_attention_heads");
        if (t.num_key_value_heads && *t.num_key_value_heads <= 0) finding("num_key_value_heads");
        if (t.num_attention_heads && t.num_key_value_heads &&
            *t.num_attention_heads % *t.num_key_value_heads != 0)
            finding("num_key_value_heads does not divide num_attention_heads");
        if (t.temperature) {
            if (t.use_rope) finding("temperature on a RoPE layer");
            check_f32(t.temperature->floor_scale, "floor_scale");
            check_f32(t.temperature->attn_scale, "attn_scale");
            for (std::int64_t pos : {std::int64_t(0), std::int64_t(8191), std::int64_t(1) << 20,
                                     std::int64_t(1) << 40, (std::int64_t(1) << 62) - 1}) {
                const float s = t.temperature->scale_at(pos);
                if (!(std::isfinite(s) && s >= 1.0f))
                    finding("temperature scale_at not finite and >= 1 at", std::to_string(pos));
            }
        }
        check_rope(t.rope, t.scaling);
    }
    (void)ropekit::layer_map_summary(m);
}

/// What config_from_json and model_config_from_json must agree on for one layer type.
void check_same(const ropekit::model_rope_config& a, const ropekit::layer_config& b,
                const std::string& type) {
    const ropekit::rope_params &x = a.params, &y = b.rope.params;
    auto differ = [&](const char* what) {
        finding("config_from_json and model_config_from_json disagree on",
                std::string(what) + " for layer type " + type);
    };
    if (x.head_dim != b.head_dim) differ("head_dim");
    if (x.base != y.base) differ("base");
    if (x.head_dim != y.head_dim || x.rotary_dim != y.rotary_dim || x.layout != y.layout ||
        x.frequency_dim != y.frequency_dim || x.pair_span != y.pair_span ||
        x.rotary_offset != y.rotary_offset)
        differ("geometry");
    if (a.rope_type != b.rope.rope_type || a.scaling.index() != b.rope.scaling.index())
        differ("rope_type");
    if (a.max_position_embeddings != b.rope.max_position_embeddings ||
        a.original_max_position_embeddings != b.rope.original_max_position_embeddings)
        differ("context lengths");
    if (a.mrope.has_value() != b.rope.mrope.has_value() ||
        (a.mrope &&
         (a.mrope->section != b.rope.mrope->section || a.mrope->layout != b.rope.mrope->layout)))
        differ("mrope");
    std::optional<ropekit::rope_frequencies> fa, fb;
    try {
        fa = a.frequencies();
    } catch (const ropekit::error&) {
    }
    try {
        fb = b.frequencies();
    } catch (const ropekit::error&) {
    }
    if (fa.has_value() != fb.has_value()) differ("whether the frequencies build");
    if (fa && (fa->inv_freq != fb->inv_freq || fa->attention_factor != fb->attention_factor))
        differ("frequencies");
}

/// Every reader on one document.
void check_document(const json& root, std::optional<ropekit::rope_layout> layout) {
    ropekit::config_json_options options;
    options.layout = layout;
    std::optional<ropekit::model_layers_config> model;
    try {
        model = ropekit::model_config_from_json(root, options);
    } catch (const ropekit::error&) {
        // the expected outcome for bad input
    }
    if (model) check_layers(*model);
    for (const char* type :
         {"", "full_attention", "sliding_attention", "chunked_attention", "no_such_type"}) {
        ropekit::config_json_options o = options;
        o.layer_type = type;
        std::optional<ropekit::model_rope_config> single;
        try {
            single = ropekit::config_from_json(root, o);
        } catch (const ropekit::error&) {
            // the expected outcome for bad input
        }
        if (single) check_rope(*single, std::nullopt);
        if (!model) continue;
        for (const ropekit::layer_config& t : model->types) {
            if (t.layer_type != type) continue;
            if (!single)
                finding("config_from_json refuses a layer type model_config_from_json reads:",
                        type);
            check_same(*single, t, type);
        }
    }
}

/// An edge value for a number of a config.
json edge_value(FuzzedDataProvider& in, const json* old) {
    static const double doubles[] = {1e39,
                                     -1e39,
                                     3.4028234663852886e38,
                                     3.4028235677973366e38,
                                     1e38,
                                     1e-39,
                                     1.1754943508222875e-38,
                                     1e-45,
                                     1e-46,
                                     1e-50,
                                     5e-324,
                                     1e-300,
                                     1e300,
                                     std::numeric_limits<double>::max(),
                                     0.0,
                                     -0.0,
                                     -1.0,
                                     0.5,
                                     1.5,
                                     1.0,
                                     2.0,
                                     0.1,
                                     8192.0,
                                     1e9,
                                     9007199254740993.0};
    static const std::int64_t ints[] = {0,
                                        -1,
                                        1,
                                        2,
                                        3,
                                        7,
                                        64,
                                        128,
                                        256,
                                        65536,
                                        65537,
                                        16384,
                                        16385,
                                        std::int64_t(1) << 29,
                                        std::int64_t(1) << 32,
                                        (std::int64_t(1) << 32) + 1,
                                        std::numeric_limits<std::int64_t>::max(),
                                        std::numeric_limits<std::int64_t>::min()};
    switch (in.ConsumeIntegralInRange<int>(0, 6)) {
        case 0:
            return doubles[in.ConsumeIntegralInRange<std::size_t>(0, std::size(doubles) - 1)];
        case 1:  // any magnitude: products of two in-range values can still leave float32
            return (in.ConsumeBool() ? 1.0 : -1.0) *
                   std::pow(10.0, in.ConsumeIntegralInRange<int>(-46, 40));
        case 2:
            return ints[in.ConsumeIntegralInRange<std::size_t>(0, std::size(ints) - 1)];
        case 3:
            return std::numeric_limits<std::uint64_t>::max() -
                   in.ConsumeIntegralInRange<std::uint64_t>(0, 2);
        case 4:
            if (old && old->is_number()) {  // a nearby value: scaled or shifted
                const double v = old->get<double>();
                const double f = in.ConsumeFloatingPointInRange<double>(-4.0, 4.0);
                if (in.ConsumeBool() || !(std::fabs(v) < 1e18)) return json(v * f);
                return json(std::int64_t(v) + std::int64_t(f));
            }
            return json(in.ConsumeFloatingPoint<double>());
        case 5:
            return in.ConsumeBool() ? json(in.ConsumeBool()) : json(nullptr);
        default:
            return doubles[in.ConsumeIntegralInRange<std::size_t>(0, std::size(doubles) - 1)];
    }
}

/// Pointers to the numbers of `v` (a few per array: LongRoPE lists hold hundreds).
void numbers(json& v, int depth, std::vector<json*>& out) {
    if (v.is_number()) {
        out.push_back(&v);
        return;
    }
    if (depth > 4) return;
    if (v.is_object()) {
        for (auto& item : v) numbers(item, depth + 1, out);
    } else if (v.is_array()) {
        for (std::size_t i = 0; i < v.size() && i < 6; ++i) numbers(v[i], depth + 1, out);
    }
}

/// The language model's object (text_config in a multimodal config), as the readers pick it.
json& language_model(json& root) {
    if (!root.contains("num_attention_heads") && !root.contains("head_dim") &&
        root.contains("text_config") && root["text_config"].is_object())
        return root["text_config"];
    return root;
}

/// The method dict the readers would take, created when there is none.
json& method_dict(FuzzedDataProvider& in, json& top) {
    for (const char* key : {"rope_scaling", "rope_parameters"}) {
        if (!top.contains(key) || !top[key].is_object() || top[key].empty()) continue;
        json& d = top[key];
        if (d.contains("rope_type") || d.contains("type") || !d.begin()->is_object()) return d;
        auto it = d.begin();  // nested per layer type: one of them
        std::advance(it, in.ConsumeIntegralInRange<std::size_t>(0, d.size() - 1));
        // Only the first entry was checked to be an object: another may be a string, and the
        // caller indexes the result by key.
        if (it->is_object()) return *it;
        return d;
    }
    static const char* const types[] = {"default",  "linear", "dynamic", "yarn",        "llama3",
                                        "longrope", "ntk",    "mrope",   "proportional"};
    top["rope_parameters"] = json::object(
        {{"rope_type", types[in.ConsumeIntegralInRange<std::size_t>(0, std::size(types) - 1)]}});
    return top["rope_parameters"];
}

/// Applies one to four edits to `root`.
void perturb(FuzzedDataProvider& in, json& root) {
    static const char* const top_keys[] = {"query_pre_attn_scalar",
                                           "attn_logit_softcapping",
                                           "attn_scale",
                                           "floor_scale",
                                           "attn_temperature_tuning",
                                           "rope_theta",
                                           "rope_local_base_freq",
                                           "head_dim",
                                           "global_head_dim",
                                           "partial_rotary_factor",
                                           "sliding_window",
                                           "attention_chunk_size",
                                           "num_attention_heads",
                                           "num_key_value_heads",
                                           "num_global_key_value_heads",
                                           "attention_k_eq_v",
                                           "v_head_dim",
                                           "qk_rope_head_dim",
                                           "qk_nope_head_dim",
                                           "max_position_embeddings",
                                           "original_max_position_embeddings",
                                           "num_hidden_layers",
                                           "sliding_window_pattern",
                                           "no_rope_layer_interval",
                                           "hidden_size",
                                           "rotary_dim",
                                           "rotary_pct"};
    static const char* const dict_keys[] = {"factor",
                                            "beta_fast",
                                            "beta_slow",
                                            "mscale",
                                            "mscale_all_dim",
                                            "attention_factor",
                                            "low_freq_factor",
                                            "high_freq_factor",
                                            "alpha",
                                            "rope_theta",
                                            "partial_rotary_factor",
                                            "original_max_position_embeddings",
                                            "truncate"};
    static const char* const model_types[] = {"llama4_text", "gemma2",      "gemma3_text",
                                              "gemma4_text", "deepseek_v3", "qwen3_vl"};
    static const char* const layer_types[] = {"full_attention", "sliding_attention",
                                              "chunked_attention"};
    const int edits = in.ConsumeIntegralInRange<int>(1, 4);
    for (int e = 0; e < edits; ++e) {
        json& top = language_model(root);
        switch (in.ConsumeIntegralInRange<int>(0, 6)) {
            case 0:
            case 1: {  // a number anywhere
                std::vector<json*> found;
                numbers(root, 0, found);
                if (found.empty()) break;
                json* v = found[in.ConsumeIntegralInRange<std::size_t>(0, found.size() - 1)];
                *v = edge_value(in, v);
                break;
            }
            case 2:
            case 3: {  // a key of the language model
                const char* key =
                    top_keys[in.ConsumeIntegralInRange<std::size_t>(0, std::size(top_keys) - 1)];
                const json* old = top.contains(key) ? &top[key] : nullptr;
                top[key] = edge_value(in, old);
                break;
            }
            case 4: {  // a key of the method dict
                json& d = method_dict(in, top);
                const char* key =
                    dict_keys[in.ConsumeIntegralInRange<std::size_t>(0, std::size(dict_keys) - 1)];
                const json* old = d.contains(key) ? &d[key] : nullptr;
                d[key] = edge_value(in, old);
                break;
            }
            case 5: {  // a layer map of its own
                const std::size_t n = in.ConsumeIntegralInRange<std::size_t>(1, 8);
                json types = json::array(), rope = json::array();
                for (std::size_t i = 0; i < n; ++i) {
                    types.push_back(layer_types[in.ConsumeIntegralInRange<std::size_t>(0, 2)]);
                    rope.push_back(in.ConsumeIntegralInRange<int>(0, 1));
                }
                top["num_hidden_layers"] = n;
                if (in.ConsumeBool()) top["layer_types"] = types;
                if (in.ConsumeBool()) top["no_rope_layers"] = rope;
                if (in.ConsumeBool()) top["attention_chunk_size"] = 8192;
                if (in.ConsumeBool()) top["sliding_window"] = 4096;
                break;
            }
            default:
                top["model_type"] = model_types[in.ConsumeIntegralInRange<std::size_t>(
                    0, std::size(model_types) - 1)];
                break;
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    // The text readers first: their only outcomes are a result or ropekit::error.
    try {
        (void)ropekit::parse_model_config(text);
    } catch (const ropekit::error&) {
        // the expected outcome for bad input
    }
    json root;
    try {
        root = ropekit::detail::json_config::parse_text(text);
    } catch (const ropekit::error&) {
        return 0;
    }
    FuzzedDataProvider in(data, size);
    std::optional<ropekit::rope_layout> layout;
    if (in.ConsumeIntegralInRange<int>(0, 7) == 0)
        layout = in.ConsumeBool() ? ropekit::rope_layout::neox : ropekit::rope_layout::gptj;
    check_document(root, layout);
    if (!root.is_object()) return 0;
    perturb(in, root);
    check_document(root, layout);
    return 0;
}
#else
#include <cstddef>
#include <cstdint>

// Built without nlohmann/json: nothing to fuzz.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t*, std::size_t) {
    return 0;
}
#endif
