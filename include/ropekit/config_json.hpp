// SPDX-License-Identifier: Apache-2.0
/// \file
/// Optional: reads the RoPE settings of a Hugging Face `config.json` into rope_params and a
/// rope_scaling (needs nlohmann/json; link ropekit::config_json).
///
/// What is read (see docs/scaling.md for the full table). Where keys compete, HF v5's
/// `convert_rope_params_to_dict` / `standardize_rope_params` decide, not "newest form wins":
/// - the method dict: a non-null, non-empty `rope_scaling` (v4) wins over `rope_parameters`
///   (v5; may be nested per layer type), as HF's `rope_scaling or rope_parameters`; `rope_type`
///   or the legacy key `type`; `mrope` (Qwen2-VL) is default RoPE for the frequencies, and
///   `mrope_section` / `mrope_interleaved` give model_rope_config::mrope;
/// - `rope_theta` (in the dict, else top level, else GPT-NeoX's `rotary_emb_base`, else 10000);
/// - `partial_rotary_factor`: top level (or GPT-NeoX's `rotary_pct`) overwrites the dict's, else
///   the dict's, or GPT-J's `rotary_dim`; `head_dim`, else `hidden_size / num_attention_heads`
///   (or `n_embd / n_head`); MLA (`qk_rope_head_dim`, DeepSeek-V2/V3, Kimi-K2): RoPE over
///   qk_rope_head_dim channels at rotary_offset qk_nope_head_dim of a qk_nope + qk_rope head;
///   `rope_type: "proportional"` (Gemma 4): rope_params::proportional();
/// - `max_position_embeddings` (or `n_positions`); `original_max_position_embeddings`: for
///   yarn, longrope and llama3 the top-level value (Phi-3 style) wins over the dict's;
/// - the pair layout: `rope_interleave`, else `model_type` (interleaved for GPT-J, CodeGen,
///   DeepSeek-V2/V3, Kimi-K2, Cohere, GLM, ChatGLM, Helium, Llama 4), else NeoX rotate-half;
/// - Gemma-3's `rope_local_base_freq`: the sliding-window layers' base, chosen with
///   config_json_options::layer_type; Gemma 4's `global_head_dim` for every named layer type but
///   "sliding_attention" (HF's `not is_sliding`).
/// model_config_from_json reads every layer type at once, with what each layer's attention
/// needs (head sizes, softmax scaling, window, chunk, soft-capping, temperature tuning).
/// Every failure is a ropekit::error whose field() is the key at fault as written in the file
/// (`rope_scaling.factor`), also for values checked by the scaling types themselves.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "attention_temperature.hpp"
#include "error.hpp"
#include "mrope.hpp"
#include "scaling.hpp"

ROPEKIT_BEGIN_NAMESPACE

/// The RoPE part of a model configuration.
struct model_rope_config {
    rope_params params;                     ///< base, head_dim, rotary_dim, layout
    rope_scaling scaling = default_rope{};  ///< the method and its parameters
    std::string rope_type = "default";      ///< the rope_type string as written in the file
    std::optional<std::int64_t> max_position_embeddings;  ///< as read, if present
    /// Top level (wins for yarn, longrope, llama3, as HF), else the dict's; as read.
    std::optional<std::int64_t> original_max_position_embeddings;
    /// M-RoPE (Qwen2-VL / Qwen2.5-VL `mrope_section`, Qwen3-VL interleaved): the pairs per
    /// position axis, validated against rotary_dim / 2; unset for 1-D RoPE.
    std::optional<mrope_sections> mrope;
    /// Keys read but ignored, defaults and overrides applied, guesses made (layout, M-RoPE).
    std::vector<std::string> warnings;

    // Spelled out so that they are always inlined: the per-layer reader move-assigns configs, and
    // clang emitted the implicit move assignment out of line with flag-dependent (AVX) code, one
    // copy per ISA flag set under the same name (tests/abi/check_symbols.py).
    /// The default configuration (default RoPE, no geometry).
    ROPEKIT_ALWAYS_INLINE model_rope_config() = default;
    /// Copies.
    ROPEKIT_ALWAYS_INLINE model_rope_config(const model_rope_config&) = default;
    /// Moves.
    ROPEKIT_ALWAYS_INLINE model_rope_config(model_rope_config&&) = default;
    /// Copies.
    ROPEKIT_ALWAYS_INLINE model_rope_config& operator=(const model_rope_config&) = default;
    /// Moves.
    ROPEKIT_ALWAYS_INLINE model_rope_config& operator=(model_rope_config&&) = default;
    /// Destroys.
    ROPEKIT_ALWAYS_INLINE ~model_rope_config() = default;

    /// The frequencies at sequence length `seq_len` (only dynamic NTK and LongRoPE use it).
    ROPEKIT_ALWAYS_INLINE rope_frequencies
    frequencies(std::optional<std::int64_t> seq_len = {}) const {
        return make_frequencies(params, scaling, seq_len);
    }
};

/// Choices the file itself cannot express.
struct config_json_options {
    /// Which layer type to read. For a v5 `rope_parameters` dict nested per layer type
    /// (`full_attention`, `sliding_attention`): that entry; empty means the only one, else an
    /// error. For a v4 config with Gemma-3's `rope_local_base_freq`: "sliding_attention" gives
    /// those layers' default RoPE at that base (HF applies no scaling there), anything else the
    /// global layers' settings; empty reads the global layers and warns.
    std::string layer_type;
    /// Pair layout. Unset: the top-level `rope_interleave` key if present (DeepSeek-V3 style),
    /// else interleaved (gptj) for the `model_type`s whose HF modeling code pairs adjacent
    /// channels (gptj, codegen, deepseek_v2, deepseek_v3, kimi_k2, cohere, cohere2, glm, glm4,
    /// chatglm, helium), else NeoX rotate-half, with a warning when `model_type` is one ropekit
    /// does not know (a file without `model_type` is taken as hand-written: no warning).
    std::optional<rope_layout> layout;
};

/// The most layers model_config_from_json accepts (num_hidden_layers, layer_types,
/// no_rope_layers): 2^14, a hundred times today's deepest models (DeepSeek-V3: 61, Llama 4
/// Behemoth: 120); a larger count is a corrupt file, refused before anything is allocated.
inline constexpr std::int64_t max_model_layers = std::int64_t(1) << 14;

/// One layer type of a model: its RoPE and what its attention needs besides the frequencies.
/// An engine builds the softmax scale as
/// `attention_params::for_model(cfg.frequencies()).with_scaling(cfg.scaling)`.
struct layer_config {
    /// HF's layer type: "full_attention", "sliding_attention" or "chunked_attention".
    std::string layer_type;
    /// False for Llama 4's NoPE layers (`no_rope_layers[i] == 0`): q and k are not rotated and
    /// `rope` only describes the other layers.
    bool use_rope = true;
    model_rope_config rope;  ///< the frequencies' configuration (params, method, M-RoPE)
    /// q/k channels per head: head_dim, Gemma 4's global_head_dim on the layers that are not
    /// sliding_attention, or
    /// MLA's qk_nope_head_dim + qk_rope_head_dim. Equal to rope.params.head_dim.
    int head_dim = 0;
    int v_head_dim = 0;  ///< v channels per head: MLA's v_head_dim, else head_dim
    std::optional<std::int64_t> num_attention_heads;  ///< q heads, as read
    /// k/v heads: `num_key_value_heads`; Gemma 4's full-attention layers with
    /// `attention_k_eq_v` use `num_global_key_value_heads` (and v = k).
    std::optional<std::int64_t> num_key_value_heads;
    /// The `1/sqrt(head_dim)` part of the softmax scale, as the HF attention module sets its
    /// `scaling`: `head_dim ** -0.5`; Gemma 2/3 `query_pre_attn_scalar ** -0.5`; Gemma 4 1 (its
    /// q/k norms); DeepSeek-V2/V3 and Kimi-K2 (MLA with YaRN's mscale_all_dim)
    /// `qk_head_dim ** -0.5 * yarn_get_mscale(factor, mscale_all_dim) ** 2`.
    double scaling = 1.0;
    std::optional<std::int64_t> sliding_window;        ///< sliding_attention layers
    std::optional<std::int64_t> attention_chunk_size;  ///< chunked_attention layers (Llama 4)
    std::optional<double> attn_logit_softcapping;      ///< Gemma 2: `cap * tanh(s / cap)`
    /// Llama 4's query scale on NoPE layers (attn_temperature_tuning), unset elsewhere.
    std::optional<attention_temperature> temperature;

    // Spelled out so that they are always inlined: the implicit ones are emitted out of line
    // (std::vector<layer_config> growth) with flag-dependent code, one copy per ISA flag set
    // under the same name (tests/abi/check_symbols.py).
    /// An empty layer type.
    ROPEKIT_ALWAYS_INLINE layer_config() = default;
    /// Copies.
    ROPEKIT_ALWAYS_INLINE layer_config(const layer_config&) = default;
    /// Moves.
    ROPEKIT_ALWAYS_INLINE layer_config(layer_config&&) = default;
    /// Copies.
    ROPEKIT_ALWAYS_INLINE layer_config& operator=(const layer_config&) = default;
    /// Moves.
    ROPEKIT_ALWAYS_INLINE layer_config& operator=(layer_config&&) = default;
    /// Destroys.
    ROPEKIT_ALWAYS_INLINE ~layer_config() = default;

    /// The frequencies at sequence length `seq_len` (rope.frequencies()).
    ROPEKIT_ALWAYS_INLINE rope_frequencies
    frequencies(std::optional<std::int64_t> seq_len = {}) const {
        return rope.frequencies(seq_len);
    }
};

/// Every layer type of a model and which layer has which (model_config_from_json).
struct model_layers_config {
    std::vector<layer_config> types;  ///< distinct layer types, in order of first appearance
    /// Per layer (num_hidden_layers entries): the index into `types`.
    std::vector<std::size_t> layer_type_index;
    std::string model_type;  ///< as written (empty if absent)
    /// Warnings of every layer type (prefixed with the type) and of the layer map.
    std::vector<std::string> warnings;

    /// Number of layers.
    ROPEKIT_ALWAYS_INLINE std::size_t num_layers() const noexcept {
        return layer_type_index.size();
    }
    /// The configuration of layer `i`; throws ropekit::error (field `layer`) when out of range.
    ROPEKIT_ALWAYS_INLINE const layer_config& layer(std::size_t i) const {
        detail::require(i < layer_type_index.size(), "layer", "must be < num_hidden_layers", i);
        return types[layer_type_index[i]];
    }
};

namespace detail {
namespace json_config {
ROPEKIT_BEGIN_ISA_NAMESPACE

using json = nlohmann::json;

[[noreturn]] inline void fail(const std::string& field, const std::string& what) {
    ROPEKIT_THROW(error(field, field + " " + what));
#if !ROPEKIT_HAS_EXCEPTIONS
    std::abort();
#endif
}

/// `v.dump()` that never throws: invalid UTF-8 (a string cut for a message, or one in a DOM the
/// caller built) becomes U+FFFD instead of nlohmann's type_error 316.
inline std::string dump_text(const json& v) {
    return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

/// Appends a short rendering of `v` to `out`: at most 2 levels and about `budget` characters.
/// Not json::dump(): that recurses once per level, and a value nested 10^6 deep (which
/// config_from_json may be given directly) would overflow the stack while a message is built.
inline void show_into(const json& v, int depth, std::size_t budget, std::string& out) {
    if (out.size() > budget) return;
    if (!v.is_structured()) {
        if (v.is_string()) {
            const auto& str = v.get_ref<const std::string&>();
            out += dump_text(json(str.size() > budget ? str.substr(0, budget) : str));
        } else {
            out += dump_text(v);
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
            if (obj) out += dump_text(json(it.key())) + ": ";
            show_into(*it, depth + 1, budget, out);
        }
    }
    out += obj ? '}' : ']';
}

/// `v` for an error message, cut to 60 characters.
inline std::string show(const json& v) {
    std::string s;
    show_into(v, 0, 64, s);
    if (s.size() > 60) s = s.substr(0, 57) + "...";
    return s;
}

/// The value at `key` unless absent or null (Python's `dict.get(key)` is None for both).
inline const json* find(const json& obj, const char* key) {
    if (!obj.is_object()) return nullptr;
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return nullptr;
    return &*it;
}

inline std::optional<double> number(const json& obj, const char* key, const std::string& where) {
    const json* v = find(obj, key);
    if (!v) return std::nullopt;
    if (!v->is_number()) fail(where + key, "must be a number (got " + show(*v) + ")");
    return v->get<double>();
}

inline std::optional<std::int64_t> integer(const json& obj, const char* key,
                                           const std::string& where) {
    const json* v = find(obj, key);
    if (!v) return std::nullopt;
    // uint64 above 2^63 - 1 would wrap to a negative int64 ("got -64")
    if (v->is_number_unsigned() &&
        v->get<std::uint64_t>() > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
        fail(where + key, "must be an integer below 2^63 (got " + show(*v) + ")");
    if (v->is_number_integer()) return v->get<std::int64_t>();
    if (v->is_number_float()) {
        const double d = v->get<double>();
        if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return std::int64_t(d);
    }
    fail(where + key, "must be an integer (got " + show(*v) + ")");
}

inline std::vector<double> number_list(const json& obj, const char* key, const std::string& where) {
    const json* v = find(obj, key);
    if (!v) fail(where + key, "is missing (required for this rope_type)");
    if (!v->is_array()) fail(where + key, "must be a list of numbers (got " + show(*v) + ")");
    std::vector<double> out;
    for (const auto& x : *v) {
        if (!x.is_number()) fail(where + key, "must contain only numbers (got " + show(x) + ")");
        out.push_back(x.get<double>());
    }
    return out;
}

/// model_types whose HF modeling code pairs adjacent channels (2i, 2i+1): GPT-J/CodeGen
/// rotate_every_two, DeepSeek-V2 and Llama 4 view_as_complex on (..., -1, 2), DeepSeek-V3/Kimi-K2
/// (rope_interleave, default true), Cohere/GLM/Helium rotate_half over x[..., ::2] / x[..., 1::2]
/// with repeat_interleave, ChatGLM's (..., rot_dim/2, 2) reshape.
inline bool interleaved_model_type(const std::string& t) {
    for (const char* k : {"gptj", "codegen", "deepseek_v2", "deepseek_v3", "kimi_k2", "cohere",
                          "cohere2", "glm", "glm4", "chatglm", "helium", "llama4", "llama4_text"})
        if (t == k) return true;
    return false;
}

/// model_types known to use NeoX rotate-half (cat(freqs, freqs) + rotate_half); anything else
/// gets the same layout but a warning, because a wrong guess gives fluent garbage.
inline bool neox_model_type(const std::string& t) {
    for (const char* k : {"llama",
                          "gemma4_text",
                          "mistral",
                          "mixtral",
                          "ministral",
                          "qwen2",
                          "qwen2_moe",
                          "qwen3",
                          "qwen3_moe",
                          "qwen2_vl",
                          "qwen2_5_vl",
                          "gemma",
                          "gemma2",
                          "gemma3",
                          "gemma3_text",
                          "phi",
                          "phi3",
                          "phimoe",
                          "gpt_neox",
                          "gpt_oss",
                          "starcoder2",
                          "olmo",
                          "olmo2",
                          "stablelm",
                          "granite",
                          "granitemoe",
                          "internlm2",
                          "exaone",
                          "falcon",
                          "persimmon",
                          "mistral3",
                          "smollm3",
                          "nemotron",
                          "deepseek",
                          "baichuan",
                          "yi",
                          "gemma4",
                          "qwen3_vl",
                          "qwen3_vl_text",
                          "qwen3_vl_moe",
                          "qwen3_vl_moe_text",
                          "qwen2_5_vl_text",
                          "qwen2_vl_text"})
        if (t == k) return true;
    return false;
}

/// Where each value the scaling types check came from: validate() names its own member
/// (`factor`), the reader's user needs the key as written (`rope_scaling.factor`).
struct value_sources {
    /// One member and the key path it was read from.
    struct entry {
        std::string member;  ///< validate()'s name
        std::string path;    ///< the key as written in the file
        std::string suffix;  ///< appended to the message (how a derived value was derived)
    };
    std::vector<entry> entries;  ///< in reading order

    /// Records (or replaces) where `member` came from.
    void set(std::string_view member, std::string path, std::string suffix = {}) {
        for (auto& e : entries)
            if (e.member == member) {
                e.path = std::move(path);
                e.suffix = std::move(suffix);
                return;
            }
        entries.push_back({std::string(member), std::move(path), std::move(suffix)});
    }
};

/// Rethrows an error from the scaling types' validate() with the file's key path.
[[noreturn]] inline void rethrow_with_path(const error& e, const value_sources& src) {
    std::string path(e.field());  // rotary_dim, head_dim, base: not keys of the dict
    std::string suffix;
    for (const auto& s : src.entries)
        if (s.member == e.field()) {
            path = s.path;
            suffix = s.suffix;
        }
    // The scaling types write "ropekit: <member> <requirement> (got <value>)"; keep that text
    // (scripts match it) and add the key path, which becomes field().
    std::string what = e.what();
    if (what.rfind("ropekit: ", 0) == 0) what = what.substr(9);
    ROPEKIT_THROW(error(path, what + ", from " + path + suffix));
#if !ROPEKIT_HAS_EXCEPTIONS
    std::abort();
#endif
}

/// Phase 1: the object holding the language model's settings (multimodal configs keep them in
/// text_config).
inline const json& language_model_config(const json& root) {
    if (!root.is_object()) fail("config.json", "must be a JSON object (got " + show(root) + ")");
    if (!find(root, "num_attention_heads") && !find(root, "head_dim") &&
        find(root, "text_config") && root["text_config"].is_object())
        return root["text_config"];
    return root;
}

/// The method dict chosen by phase 2, and the key prefix its values are reported with.
struct rope_dict {
    const json* dict = nullptr;  ///< null: no dict (default RoPE)
    std::string where;           ///< "rope_scaling." or "rope_parameters[.layer]."
    bool nested = false;         ///< a v5 dict per layer type
};

/// Phase 2: the method dict. HF v5's convert_rope_params_to_dict does `rope_scaling or
/// rope_parameters`: a non-null, non-empty rope_scaling wins, even next to rope_parameters.
inline rope_dict find_rope_dict(const json& top, const config_json_options& options,
                                std::vector<std::string>& warn) {
    rope_dict out;
    const json* rs = find(top, "rope_scaling");
    if (rs && !rs->is_object())
        fail("rope_scaling", "must be an object or null (got " + show(*rs) + ")");
    const json* rp = find(top, "rope_parameters");
    if (rp && !rp->is_object())
        fail("rope_parameters", "must be an object (got " + show(*rp) + ")");
    if (rs && !rs->empty()) {
        out.where = "rope_scaling.";
        out.dict = rs;
        if (rp && !rp->empty())
            warn.push_back(
                "rope_parameters: ignored, rope_scaling is set and wins (HF's "
                "convert_rope_params_to_dict uses `rope_scaling or rope_parameters`)");
        return out;
    }
    if (!rp) return out;
    out.where = "rope_parameters.";
    out.dict = rp;
    if (rp->contains("rope_type") || rp->contains("type") || rp->empty() ||
        !rp->begin()->is_object())
        return out;
    out.nested = true;  // per layer type
    std::string chosen = options.layer_type;
    if (chosen.empty()) {
        if (rp->size() != 1) {
            std::string keys;
            for (auto it = rp->begin(); it != rp->end(); ++it)
                keys += (keys.empty() ? "" : ", ") + it.key();
            fail("rope_parameters", "is per layer type (" + keys + "): choose one with layer_type");
        }
        chosen = rp->begin().key();
    }
    const json* sub = find(*rp, chosen.c_str());
    if (!sub || !sub->is_object()) fail("rope_parameters." + chosen, "is missing or not an object");
    out.dict = sub;
    out.where = "rope_parameters." + chosen + ".";
    return out;
}

/// Phase 3, Gemma-3 (v4 configs): sliding-window layers use default RoPE at
/// rope_local_base_freq, the global layers rope_theta and the dict. One table cannot be both,
/// so the caller chooses; true when the local layers were chosen.
inline bool read_local_layers(const json& top, const rope_dict& rd,
                              const config_json_options& options, std::vector<std::string>& warn) {
    if (rd.nested) return false;
    const auto local = number(top, "rope_local_base_freq", "");
    if (!local) return false;
    if (options.layer_type == "sliding_attention") {
        if (!(std::isfinite(*local) && *local > 1.0))
            fail("rope_local_base_freq", "must be finite and > 1 (got " + show(json(*local)) + ")");
        return true;
    }
    if (options.layer_type.empty())
        warn.push_back("rope_local_base_freq: sliding-window layers use default RoPE at base " +
                       show(json(*local)) +
                       ", not this table (the global layers'); choose with "
                       "config_json_options::layer_type (\"sliding_attention\" or "
                       "\"full_attention\")");
    return false;
}

/// Phase 4: the rope_type string (or the legacy key `type`); "default" without a dict.
inline std::string read_rope_type(const json* dict, const std::string& where) {
    if (!dict) return "default";
    const json* t = find(*dict, "rope_type");
    if (!t) t = find(*dict, "type");  // legacy key
    if (!t) fail(where + "rope_type", "is missing (also looked for the legacy key 'type')");
    if (!t->is_string()) fail(where + "rope_type", "must be a string (got " + show(*t) + ")");
    return t->get<std::string>();
}

/// Phase 5: base, head_dim, rotary_dim and pair layout.
/// `global_layer`: a non-sliding layer of a model with `global_head_dim` (Gemma 4), whose
/// heads (and so its proportional RoPE, HF's head_dim_key="global_head_dim") are that size.
inline rope_params read_geometry(const json& top, const json& d, const std::string& where,
                                 bool local_layers, const config_json_options& options,
                                 std::vector<std::string>& warn, bool proportional = false,
                                 bool global_layer = false) {
    std::optional<double> theta;
    if (local_layers) {
        theta = number(top, "rope_local_base_freq", "");
    } else {
        theta = number(d, "rope_theta", where);
        if (!theta) theta = number(top, "rope_theta", "");
        if (!theta) theta = number(top, "rotary_emb_base", "");
    }
    if (!theta) {
        theta = 10000.0;
        warn.push_back("rope_theta: missing, using 10000 (HF's default)");
    }
    if (!(std::isfinite(*theta) && *theta > 1.0))
        fail("rope_theta", "must be finite and > 1 (got " + show(json(*theta)) + ")");
    if (!fits_f32(*theta))  // HF's pow runs on a float32 base
        fail(local_layers ? "rope_local_base_freq" : "rope_theta",
             "must be finite in float32 (<= 3.4028234663852886e+38; got " + show(json(*theta)) +
                 ")");
    // HF's standardize_rope_params overwrites the dict's partial_rotary_factor with the config
    // attribute, so the top-level value wins.
    std::optional<double> prf = number(top, "partial_rotary_factor", "");
    if (!prf) prf = number(top, "rotary_pct", "");
    if (const auto dict_prf = number(d, "partial_rotary_factor", where)) {
        if (!prf)
            prf = dict_prf;
        else if (*prf != *dict_prf)
            warn.push_back(where + "partial_rotary_factor: " + show(json(*dict_prf)) +
                           " overridden by the top-level " + show(json(*prf)) +
                           " (HF's standardize_rope_params)");
    }
    // MLA models (DeepSeek-V2/V3, Kimi-K2) rotate only the qk_rope_head_dim channels that
    // follow the qk_nope_head_dim ones: HF's rope sees head_dim = qk_rope_head_dim, the q/k head
    // is their sum (see the rotary_offset below).
    std::optional<std::int64_t> head_dim = integer(top, "qk_rope_head_dim", "");
    const bool mla = head_dim.has_value();
    std::optional<std::int64_t> nope;
    if (mla) {
        nope = integer(top, "qk_nope_head_dim", "");
        if (nope && (*nope < 0 || *nope > rope_params::max_head_dim))
            fail("qk_nope_head_dim", "must be in [0, 65536] (got " + std::to_string(*nope) + ")");
    }
    if (!head_dim && global_layer) head_dim = integer(top, "global_head_dim", "");
    if (!head_dim) head_dim = integer(top, "head_dim", "");
    if (!head_dim) {
        auto hidden = integer(top, "hidden_size", "");
        auto heads = integer(top, "num_attention_heads", "");
        if (!hidden || !heads) {
            hidden = integer(top, "n_embd", "");
            heads = integer(top, "n_head", "");
        }
        if (!hidden || !heads)
            fail("head_dim", "is missing (and so are hidden_size / num_attention_heads)");
        if (*heads <= 0)
            fail("num_attention_heads", "must be > 0 (got " + std::to_string(*heads) + ")");
        head_dim = *hidden / *heads;  // HF: hidden_size // num_attention_heads
    }
    if (*head_dim <= 0 || *head_dim > rope_params::max_head_dim)
        fail("head_dim", "must be in (0, 65536] (got " + std::to_string(*head_dim) + ")");

    // Pair layout: a wrong guess gives fluent garbage (PITFALLS #16), so say when it is a guess.
    std::optional<rope_layout> layout = options.layout;
    if (!layout) {
        if (const json* ri = find(top, "rope_interleave")) {
            if (!ri->is_boolean())
                fail("rope_interleave", "must be true or false (got " + show(*ri) + ")");
            layout = ri->get<bool>() ? rope_layout::gptj : rope_layout::neox;
        } else if (const json* mt = find(top, "model_type"); mt && mt->is_string()) {
            const auto t = mt->get<std::string>();
            layout = interleaved_model_type(t) ? rope_layout::gptj : rope_layout::neox;
            if (t == "chatglm")  // remote code: rot_dim = kv_channels / 2, base 10000 * rope_ratio
                warn.push_back(
                    "model_type: \"chatglm\" rotates kv_channels/2 channels at base "
                    "10000 * rope_ratio (remote code); ropekit does not read those keys, check "
                    "rotary_dim and base");
            if (!interleaved_model_type(t) && !neox_model_type(t))
                warn.push_back("model_type: \"" + t +
                               "\" is not known to ropekit, pair layout assumed neox "
                               "(rotate-half); check the model's apply_rotary_pos_emb and set "
                               "config_json_options::layout if it pairs adjacent channels");
        } else {
            layout = rope_layout::neox;
        }
    }
    rope_params p;
    if (proportional) {
        p = rope_params::proportional(int(*head_dim), prf.value_or(1.0), *theta, *layout);
    } else if (auto rd = integer(top, "rotary_dim", ""); rd && !prf) {  // GPT-J / CodeGen
        if (*rd <= 0 || *rd > *head_dim)
            fail("rotary_dim", "must be in (0, head_dim] (got " + std::to_string(*rd) + ")");
        p.base = *theta;
        p.head_dim = int(*head_dim);
        p.rotary_dim = int(*rd);
        p.layout = *layout;
        p.validate();
    } else {
        p = rope_params::from_partial_rotary_factor(int(*head_dim), prf.value_or(1.0), *theta,
                                                    *layout);
    }
    if (mla && nope && *nope > 0) {
        // The frequencies are those of the qk_rope_head_dim slice; only where it sits changes.
        if (*nope + *head_dim > rope_params::max_head_dim)
            fail("qk_nope_head_dim", "+ qk_rope_head_dim must be <= 65536 (got " +
                                         std::to_string(*nope + *head_dim) + ")");
        p.head_dim = int(*nope + *head_dim);
        p.rotary_offset = int(*nope);
        p.validate();
    }
    return p;
}

/// What phases 6 and 7 read the method's keys from.
struct method_source {
    const json& top;  ///< the language model's config
    const json& d;    ///< the method dict (empty object when there is none)
    std::string where;
    bool nested = false;
    std::string rope_type;  ///< as written
    std::optional<std::int64_t> max_pos;
    std::optional<std::int64_t> dict_orig;  ///< the dict's original_max_position_embeddings
    std::optional<std::int64_t> top_orig;   ///< the top level's (Phi-3 style; not for nested)
};

/// The member type without std::optional: what one JSON value is read as.
template <class T>
struct stored_as {
    using type = T;
};
template <class T>
struct stored_as<std::optional<T>> {
    using type = T;
};

/// The value at `key` read as T (double, std::int64_t, bool, std::vector<double>); nullopt if
/// absent or null; ropekit::error naming the key for a wrong type.
template <class T>
std::optional<T> read_value(const json& d, const std::string& key, const std::string& where) {
    if constexpr (std::is_same_v<T, double>) {
        return number(d, key.c_str(), where);
    } else if constexpr (std::is_same_v<T, std::int64_t>) {
        return integer(d, key.c_str(), where);
    } else if constexpr (std::is_same_v<T, bool>) {
        const json* v = find(d, key.c_str());
        if (!v) return std::nullopt;
        if (!v->is_boolean()) fail(where + key, "must be true or false (got " + show(*v) + ")");
        return v->get<bool>();
    } else {
        static_assert(std::is_same_v<T, std::vector<double>>, "unsupported config_key type");
        if (!find(d, key.c_str())) return std::nullopt;
        return number_list(d, key.c_str(), where);
    }
}

/// Whether M's original context follows HF's standardize_rope_params (yarn, longrope, llama3):
/// then the top-level original_max_position_embeddings overwrites the dict's.
template <class M>
bool top_original_wins() {
    bool wins = false;
    for_each_key_of<M>([&](const auto& key) {
        wins = wins || key.rule == key_rule::original_context ||
               key.rule == key_rule::original_context_required;
    });
    return wins;
}

/// Keys every dict may hold besides the method's own.
inline bool common_dict_key(const std::string& k) {
    return k == "rope_type" || k == "type" || k == "rope_theta" || k == "partial_rotary_factor";
}

/// Warns about dict keys M does not know, and emits the notes of M's ignored keys.
template <class M>
void check_keys(const method_source& m, std::vector<std::string>& warn) {
    const auto keys = M::config_keys();
    for (auto it = m.d.begin(); it != m.d.end(); ++it) {
        bool known = common_dict_key(it.key());
        std::apply(
            [&](const auto&... k) {
                auto one = [&](const auto& key) {
                    if constexpr (std::is_same_v<std::decay_t<decltype(key)>, ignored_key>)
                        known = known || it.key() == key.name;
                    else
                        known = known || (key.rule != key_rule::max_position &&
                                          (it.key() == key.name ||
                                           (!key.alias.empty() && it.key() == key.alias)));
                };
                (one(k), ...);
            },
            keys);
        if (!known)
            warn.push_back(m.where + it.key() + ": not used by rope_type \"" + m.rope_type +
                           "\" (ignored)");
    }
    std::apply(
        [&](const auto&... k) {
            auto one = [&](const auto& key) {
                if constexpr (std::is_same_v<std::decay_t<decltype(key)>, ignored_key>)
                    if (!key.note.empty() && find(m.d, std::string(key.name).c_str()))
                        warn.push_back(m.where + std::string(key.name) + ": " +
                                       std::string(key.note));
            };
            (one(k), ...);
        },
        keys);
}

/// The original context length and the key it came from (phase 6): for methods that follow
/// standardize_rope_params the top level wins, else the dict's value wins.
inline std::optional<std::int64_t> resolve_original(const method_source& m, bool top_wins,
                                                    std::string& path,
                                                    std::vector<std::string>& warn) {
    if (m.top_orig && (top_wins || !m.dict_orig)) {
        path = "original_max_position_embeddings";
        if (m.dict_orig && *m.dict_orig != *m.top_orig)
            warn.push_back(m.where + "original_max_position_embeddings: " +
                           std::to_string(*m.dict_orig) + " overridden by the top-level " +
                           std::to_string(*m.top_orig) + " (HF's standardize_rope_params)");
        return m.top_orig;
    }
    if (m.dict_orig) {
        path = m.where + "original_max_position_embeddings";
        return m.dict_orig;
    }
    path = "max_position_embeddings";
    return std::nullopt;
}

/// Whether M has `static void not_extended(M&)` (needed by key_rule::extension_ratio).
template <class M, class = void>
struct has_not_extended : std::false_type {};
template <class M>
struct has_not_extended<M, std::void_t<decltype(M::not_extended(std::declval<M&>()))>>
    : std::true_type {};

/// Reads one key of M into `out` (phase 7).
template <class M, class T>
void read_key(const config_key<M, T>& key, const method_source& m,
              const std::optional<std::int64_t>& orig, const std::string& orig_path, M& out,
              value_sources& src, std::vector<std::string>& warn) {
    using V = typename stored_as<T>::type;
    const std::string name(key.name);
    std::string path = m.where + name;
    auto assign = [&](const V& v) { out.*key.member = v; };
    const std::string missing_ratio =
        "is missing (and max_position_embeddings / original_max_position_embeddings cannot "
        "replace it)";
    switch (key.rule) {
        case key_rule::original_context:
        case key_rule::original_context_required:
        case key_rule::max_position: {
            if constexpr (std::is_same_v<V, std::int64_t>) {
                if (key.rule == key_rule::max_position) {
                    if (!m.max_pos)
                        fail("max_position_embeddings",
                             "is missing (" + std::string(key.note) + ")");
                    assign(*m.max_pos);
                    path = "max_position_embeddings";
                } else if (orig) {
                    assign(*orig);
                    path = orig_path;
                } else if (key.rule == key_rule::original_context && m.max_pos) {
                    assign(*m.max_pos);
                    path = "max_position_embeddings";
                } else if (key.rule == key_rule::original_context) {
                    fail("max_position_embeddings", "is missing (" + std::string(key.note) + ")");
                } else {
                    fail(path,
                         "is missing (required for rope_type " + std::string(M::rope_type) + ")");
                }
            }
            break;
        }
        case key_rule::context_ratio:
        case key_rule::extension_ratio: {
            if constexpr (std::is_same_v<V, double>) {
                if (auto v = read_value<V>(m.d, name, m.where)) {
                    assign(*v);  // an explicit factor wins (HF #38224, fixed by #40320)
                } else if (orig && m.max_pos) {
                    const double derived = double(*m.max_pos) / double(*orig);  // Phi-3: 32
                    src.set(key.member_name(), path,
                            " (derived from max_position_embeddings / "
                            "original_max_position_embeddings)");
                    if (key.rule == key_rule::context_ratio || derived >= 1.0) {
                        assign(derived);  // context_ratio: < 1 stays an error (validate)
                    } else {
                        // HF: `factor <= 1` gives attention factor 1; the frequencies do not use
                        // it.
                        warn.push_back(path +
                                       ": derived from max_position_embeddings / "
                                       "original_max_position_embeddings = " +
                                       show(json(derived)) +
                                       " < 1 (no extension); attention factor 1, as HF");
                        if constexpr (has_not_extended<M>::value) M::not_extended(out);
                    }
                    return;
                } else if (key.rule == key_rule::context_ratio) {
                    fail(path, missing_ratio);
                }
            }
            break;
        }
        default: {
            auto v = read_value<V>(m.d, name, m.where);
            if (!v && !key.alias.empty()) {
                v = read_value<V>(m.d, std::string(key.alias), m.where);
                if (v) path = m.where + std::string(key.alias);
            }
            if (key.rule == key_rule::required && !v)
                fail(m.where + name, "is missing (required for this rope_type)");
            if constexpr (std::is_same_v<V, double>)
                if (key.rule == key_rule::python_or && v && *v == 0.0) v.reset();
            if (v) assign(*v);
            break;
        }
    }
    src.set(key.member_name(), path);
}

/// Phase 7: M from its config_keys(), recording where each value came from.
template <class M>
M read_method(const method_source& m, model_rope_config& out, value_sources& src) {
    check_keys<M>(m, out.warnings);
    std::string orig_path;
    out.original_max_position_embeddings =
        resolve_original(m, top_original_wins<M>(), orig_path, out.warnings);
    M method{};
    for_each_key_of<M>([&](const auto& key) {
        read_key(key, m, out.original_max_position_embeddings, orig_path, method, src,
                 out.warnings);
    });
    return method;
}

/// Phase 8: M-RoPE's `mrope_section` (3 pair counts: temporal, height, width) and its layout:
/// interleaved for Qwen3-VL (`mrope_interleaved: true`, or a qwen3_vl model_type, whose HF code
/// always interleaves), else contiguous (Qwen2-VL, Qwen2.5-VL).
inline std::optional<mrope_sections> read_mrope(const json& root, const json& top, const json& d,
                                                const std::string& where, bool mrope_type,
                                                std::vector<std::string>& warn) {
    const json* ms = find(d, "mrope_section");
    const json* mi = find(d, "mrope_interleaved");
    if (!ms) {
        if (mrope_type || mi)
            warn.push_back(where +
                           "mrope_section: missing; M-RoPE needs it, the frequencies are 1-D "
                           "default RoPE's (text-only positions are exact)");
        return std::nullopt;
    }
    if (!ms->is_array() || ms->size() != 3)
        fail(where + "mrope_section",
             "must be a list of 3 integers (temporal, height, width; got " + show(*ms) + ")");
    mrope_sections out;
    for (std::size_t i = 0; i < 3; ++i) {
        const json& v = (*ms)[i];
        const std::string key = where + "mrope_section[" + std::to_string(i) + "]";
        if (!v.is_number_integer() || v.get<std::int64_t>() < 0 ||
            v.get<std::int64_t>() > (1 << 15))
            fail(key, "must be an integer in [0, 32768] (got " + show(v) + ")");
        out.section[i] = int(v.get<std::int64_t>());
    }
    bool interleaved = false;
    if (mi) {
        if (!mi->is_boolean())
            fail(where + "mrope_interleaved", "must be true or false (got " + show(*mi) + ")");
        interleaved = mi->get<bool>();
    }
    for (const json* cfg : {&top, &root})
        if (const json* mt = find(*cfg, "model_type");
            mt && mt->is_string() && mt->get<std::string>().rfind("qwen3_vl", 0) == 0) {
            if (mi && !interleaved)
                warn.push_back(where +
                               "mrope_interleaved: false, but Qwen3-VL's HF code always "
                               "interleaves; interleaved used");
            interleaved = true;
        }
    out.layout = interleaved ? mrope_layout::interleaved : mrope_layout::contiguous;
    return out;
}

/// The RoPE configuration of one layer type (config_from_json, model_config_from_json).
inline model_rope_config read_rope_config(const json& root, const config_json_options& options,
                                          bool global_layer) {
    const json& top = language_model_config(root);
    model_rope_config out;
    auto& warn = out.warnings;
    const rope_dict rd = find_rope_dict(top, options, warn);
    const bool local_layers = read_local_layers(top, rd, options, warn);
    const json empty = json::object();
    const json* dict = local_layers ? nullptr : rd.dict;
    const json& d = dict ? *dict : empty;
    out.rope_type = read_rope_type(dict, rd.where);

    // M-RoPE (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): default frequencies, split over three position
    // axes (temporal, height, width) at apply time by mrope_sections.
    const bool mrope = out.rope_type == "mrope";
    const auto method = scaling_for_rope_type(mrope ? "default" : out.rope_type);
    if (!method)
        fail(rd.where + "rope_type",
             "is unknown: \"" + out.rope_type + "\" (known: " + known_rope_types() + ", mrope)");

    const bool proportional = std::holds_alternative<proportional_rope>(*method);
    out.params = read_geometry(top, d, rd.where, local_layers, options, warn, proportional,
                               global_layer && !local_layers);
    out.mrope = read_mrope(root, top, d, rd.where, mrope, warn);

    // Phase 6: the context lengths the methods refer to.
    out.max_position_embeddings = integer(top, "max_position_embeddings", "");
    if (!out.max_position_embeddings) out.max_position_embeddings = integer(top, "n_positions", "");
    const method_source src_keys{
        top,
        d,
        rd.where,
        rd.nested,
        out.rope_type,
        out.max_position_embeddings,
        integer(d, "original_max_position_embeddings", rd.where),
        rd.nested ? std::nullopt : integer(top, "original_max_position_embeddings", "")};

    // Phase 7: the method's keys, by the method's own description.
    value_sources src;
    std::visit(
        [&](const auto& tag) {
            using M = std::decay_t<decltype(tag)>;
            out.scaling = read_method<M>(src_keys, out, src);
        },
        *method);
    src.set("mrope_section", rd.where + "mrope_section");
#if ROPEKIT_HAS_EXCEPTIONS
    try {
        validate(out.params, out.scaling);
        if (out.mrope) out.mrope->validate(out.params.rotary_dim / 2);
    } catch (const error& e) {
        rethrow_with_path(e, src);
    }
#else
    validate(out.params, out.scaling);
    if (out.mrope) out.mrope->validate(out.params.rotary_dim / 2);
#endif
    return out;
}

/// The layer types model_config_from_json knows (HF's mask functions for them).
inline bool known_layer_type(const std::string& t) {
    return t == "full_attention" || t == "sliding_attention" || t == "chunked_attention";
}

/// A list of `n` entries at `key` (layer_types, no_rope_layers), bounded by max_model_layers
/// and, when known, equal to num_hidden_layers.
inline const json* layer_list(const json& top, const char* key, std::optional<std::int64_t> n) {
    const json* v = find(top, key);
    if (!v) return nullptr;
    if (!v->is_array()) fail(key, "must be a list (got " + show(*v) + ")");
    if (v->empty() || std::int64_t(v->size()) > max_model_layers)
        fail(key, "must have 1 to 16384 entries (ropekit::max_model_layers; got " +
                      std::to_string(v->size()) + ")");
    if (n && std::int64_t(v->size()) != *n)
        fail(key, "must have num_hidden_layers = " + std::to_string(*n) + " entries (got " +
                      std::to_string(v->size()) + ")");
    return v;
}

/// True when `model_type` (of the language model or the root) starts with `prefix`.
inline bool model_type_is(const std::string& model_type, const char* prefix) {
    return model_type.rfind(prefix, 0) == 0;
}

/// Whether a layer of type `layer_type` takes `global_head_dim` (Gemma 4): HF's attention sets
/// `head_dim = global_head_dim if not is_sliding and global_head_dim else head_dim`, so every
/// named layer type but "sliding_attention" does. The one derivation both readers use.
inline bool uses_global_head_dim(const std::string& layer_type) {
    return !layer_type.empty() && layer_type != "sliding_attention";
}

/// A number > 0 at `key` that is still > 0 and finite as a float32 (the type every consumer
/// turns it into: 1e-50 would become 0 and 1e39 inf), or nullopt. `normal`: also a normal
/// float32, for a divisor (a subnormal's reciprocal is inf).
inline std::optional<double> positive_number(const json& top, const char* key,
                                             bool normal = false) {
    const auto v = number(top, key, "");
    if (v && !(normal ? normal_positive_f32(*v) : positive_f32(*v)))
        fail(key, std::string("must be > 0 and a finite ") + (normal ? "normal " : "") +
                      "float32 (got " + show(json(*v)) + ")");
    return v;
}

/// An integer > 0 at `key`, or nullopt.
inline std::optional<std::int64_t> positive_integer(const json& top, const char* key) {
    const auto v = integer(top, key, "");
    if (v && *v <= 0) fail(key, "must be > 0 (got " + std::to_string(*v) + ")");
    return v;
}

/// The per-layer type names and use_rope flags: `layer_types` if given, else as HF's config
/// classes derive them (Gemma 2 alternates, Gemma 3 `sliding_window_pattern` (default 6), Gemma 4
/// pattern 6 with the last layer full, Llama 4 from `no_rope_layers`), else all full_attention.
inline void read_layer_map(const json& top, const std::string& model_type,
                           std::vector<std::string>& names, std::vector<bool>& rope,
                           std::vector<std::string>& warn) {
    std::optional<std::int64_t> n = integer(top, "num_hidden_layers", "");
    if (!n) n = integer(top, "n_layer", "");
    if (n && (*n <= 0 || *n > max_model_layers))
        fail("num_hidden_layers",
             "must be in [1, 16384] (ropekit::max_model_layers; got " + std::to_string(*n) + ")");
    const bool llama4 = model_type_is(model_type, "llama4");
    const json* types = layer_list(top, "layer_types", n);
    const json* no_rope = layer_list(top, "no_rope_layers", n);
    if (!n) n = types ? std::int64_t(types->size()) : no_rope ? std::int64_t(no_rope->size()) : 0;
    if (*n == 0) {
        warn.push_back("num_hidden_layers: missing, one layer assumed");
        n = 1;
    }
    const std::size_t count = std::size_t(*n);
    // Without num_hidden_layers the two lists must still agree with each other.
    for (const auto& [list, key] :
         {std::pair{types, "layer_types"}, std::pair{no_rope, "no_rope_layers"}})
        if (list && list->size() != count)
            fail(key, "must have " + std::to_string(count) +
                          " entries, as the other per-layer list (got " +
                          std::to_string(list->size()) + ")");
    // Llama 4: no_rope_layers[i] is 1 where layer i uses RoPE; the default is every
    // no_rope_layer_interval-th layer (4) without (HF's Llama4TextConfig).
    rope.assign(count, true);
    if (no_rope) {
        for (std::size_t i = 0; i < count; ++i) {
            const json& v = (*no_rope)[i];
            if (!(v.is_number_integer() || v.is_boolean()))
                fail("no_rope_layers[" + std::to_string(i) + "]",
                     "must be 0 or 1 (got " + show(v) + ")");
            rope[i] = v.is_boolean() ? v.get<bool>() : v.get<std::int64_t>() != 0;
        }
    } else if (llama4) {
        std::int64_t interval = integer(top, "no_rope_layer_interval", "").value_or(4);
        if (interval <= 0)
            fail("no_rope_layer_interval", "must be > 0 (got " + std::to_string(interval) + ")");
        for (std::size_t i = 0; i < count; ++i) rope[i] = (std::int64_t(i) + 1) % interval != 0;
    }
    names.assign(count, "full_attention");
    if (types) {
        for (std::size_t i = 0; i < count; ++i) {
            const json& v = (*types)[i];
            const std::string key = "layer_types[" + std::to_string(i) + "]";
            if (!v.is_string()) fail(key, "must be a string (got " + show(v) + ")");
            names[i] = v.get<std::string>();
            if (!known_layer_type(names[i]))
                fail(key, "is unknown: " + show(v) +
                              " (known: full_attention, sliding_attention, chunked_attention)");
        }
        return;
    }
    std::optional<std::int64_t> pattern = integer(top, "sliding_window_pattern", "");
    if (pattern && *pattern <= 0)
        fail("sliding_window_pattern", "must be > 0 (got " + std::to_string(*pattern) + ")");
    if (!pattern && model_type_is(model_type, "gemma2")) pattern = 2;
    if (!pattern && (model_type_is(model_type, "gemma3") || model_type_is(model_type, "gemma4")))
        pattern = 6;
    if (pattern) {
        for (std::size_t i = 0; i < count; ++i)
            names[i] = (std::int64_t(i) + 1) % *pattern ? "sliding_attention" : "full_attention";
        if (model_type_is(model_type, "gemma4")) names.back() = "full_attention";
    } else if (llama4) {
        for (std::size_t i = 0; i < count; ++i)
            names[i] = rope[i] ? "chunked_attention" : "full_attention";
    }
}

/// The attention extras of one layer type.
inline void read_layer_attention(const json& top, const std::string& model_type, layer_config& c) {
    const rope_params& p = c.rope.params;
    c.head_dim = p.head_dim;
    c.v_head_dim = c.head_dim;
    if (const auto v = positive_integer(top, "v_head_dim")) {
        if (*v > rope_params::max_head_dim)
            fail("v_head_dim", "must be <= 65536 (got " + std::to_string(*v) + ")");
        c.v_head_dim = int(*v);
    }
    c.num_attention_heads = positive_integer(top, "num_attention_heads");
    c.num_key_value_heads = positive_integer(top, "num_key_value_heads");
    if (c.layer_type != "sliding_attention") {
        const json* kv_eq = find(top, "attention_k_eq_v");
        if (kv_eq && !kv_eq->is_boolean())
            fail("attention_k_eq_v", "must be true or false (got " + show(*kv_eq) + ")");
        if (kv_eq && kv_eq->get<bool>())
            if (const auto g = positive_integer(top, "num_global_key_value_heads"))
                c.num_key_value_heads = g;
    }
    if (c.num_attention_heads && c.num_key_value_heads &&
        *c.num_attention_heads % *c.num_key_value_heads != 0)
        fail("num_key_value_heads", "must divide num_attention_heads (got " +
                                        std::to_string(*c.num_key_value_heads) + " for " +
                                        std::to_string(*c.num_attention_heads) + " heads)");
    if (const auto q = positive_number(top, "query_pre_attn_scalar")) {  // Gemma 2 / 3
        c.scaling = std::pow(*q, -0.5);
        if (!positive_f32(c.scaling))
            fail("query_pre_attn_scalar",
                 "must give a scale q ** -0.5 that is finite and > 0 in "
                 "float32 (got " +
                     show(json(*q)) + ")");
    } else if (model_type_is(model_type, "gemma4"))  // q_norm / k_norm instead of a scale
        c.scaling = 1.0;
    else
        c.scaling = std::pow(double(c.head_dim), -0.5);
    // DeepSeek-V2/V3's attention (and Kimi-K2, which runs it): the softmax scale carries
    // yarn_get_mscale(factor, mscale_all_dim)^2 on top of the qk head's -0.5 power.
    if (find(top, "qk_rope_head_dim"))  // MLA
        if (const auto* y = std::get_if<yarn_scaling>(&c.rope.scaling))
            if (y->mscale_all_dim && *y->mscale_all_dim != 0.0) {
                c.scaling *= y->deepseek_softmax_factor();
                // Each factor fits float32; their product need not (1.2e-38^-0.5 x 1e17^2).
                if (!positive_f32(c.scaling))
                    fail("mscale_all_dim",
                         "makes the softmax scale (query_pre_attn_scalar ** -0.5 or head_dim ** "
                         "-0.5, times get_mscale(factor, mscale_all_dim)^2) leave float32 (got " +
                             show(json(c.scaling)) + ")");
            }
    if (c.layer_type == "sliding_attention") {
        c.sliding_window = positive_integer(top, "sliding_window");
        if (!c.sliding_window)
            fail("sliding_window", "is missing (sliding_attention layers need it)");
    }
    if (c.layer_type == "chunked_attention") {
        c.attention_chunk_size = positive_integer(top, "attention_chunk_size");
        if (!c.attention_chunk_size)
            fail("attention_chunk_size", "is missing (chunked_attention layers need it)");
    }
    // attention_params::logit_softcap is a float the kernels divide by.
    c.attn_logit_softcapping = positive_number(top, "attn_logit_softcapping", true);
    // Llama 4: temperature tuning on the NoPE layers (HF's default: on).
    bool tuning = false;
    if (const json* t = find(top, "attn_temperature_tuning")) {
        if (t->is_boolean())
            tuning = t->get<bool>();
        else if (t->is_number())
            tuning = t->get<double>() != 0.0;
        else
            fail("attn_temperature_tuning",
                 "must be true, false or a number (got " + show(*t) + ")");
    } else {
        tuning = model_type_is(model_type, "llama4");
    }
    if (tuning && !c.use_rope) {
        attention_temperature t;
        t.floor_scale = number(top, "floor_scale", "").value_or(t.floor_scale);
        t.attn_scale = number(top, "attn_scale", "").value_or(t.attn_scale);
        t.validate();  // fields floor_scale / attn_scale: the keys themselves
        c.temperature = t;
    }
}

ROPEKIT_END_ISA_NAMESPACE
}  // namespace json_config
}  // namespace detail

ROPEKIT_BEGIN_ISA_NAMESPACE

/// Reads the RoPE configuration from a parsed config.json object. Throws ropekit::error naming
/// the key for missing required keys, wrong types, unknown rope_type and invalid values. With a
/// named `options.layer_type` other than "sliding_attention" a Gemma 4 config's
/// `global_head_dim` is the head size, as model_config_from_json gives that layer type
/// (uses_global_head_dim: one derivation for both).
inline model_rope_config config_from_json(const nlohmann::json& root,
                                          const config_json_options& options = {}) {
    return detail::json_config::read_rope_config(
        root, options, detail::json_config::uses_global_head_dim(options.layer_type));
}

/// Reads every layer type of a parsed config.json: one layer_config per distinct (layer type,
/// use_rope) pair and the layer -> type map. Per-type RoPE comes from a v5 `rope_parameters`
/// dict nested per layer type, or Gemma 3's v4 `rope_local_base_freq` (sliding layers), else the
/// one method dict; Gemma 4's full-attention layers use `global_head_dim`. `options.layer_type`
/// is ignored (every type is read); `options.layout` applies to all. Throws ropekit::error
/// naming the key (`layer_types[3]`, `rope_parameters.sliding_attention.rope_theta`,
/// `sliding_window`).
inline model_layers_config model_config_from_json(const nlohmann::json& root,
                                                  const config_json_options& options = {}) {
    namespace jc = detail::json_config;
    const jc::json& top = jc::language_model_config(root);
    model_layers_config out;
    for (const jc::json* cfg : {&top, &root})
        if (const jc::json* mt = jc::find(*cfg, "model_type"); mt && mt->is_string()) {
            out.model_type = mt->get<std::string>();
            break;
        }
    std::vector<std::string> names;
    std::vector<bool> rope;
    jc::read_layer_map(top, out.model_type, names, rope, out.warnings);
    // Gemma 4 keys that change the attention beyond what layer_config describes.
    if (const jc::json* b = jc::find(top, "use_bidirectional_attention"))
        out.warnings.push_back("use_bidirectional_attention: " + jc::show(*b) +
                               " (HF: \"all\" makes every layer non-causal and uses "
                               "sliding_window // 2 + 1; \"vision\" for image tokens); not "
                               "reflected in layer_config");
    if (const auto shared = jc::integer(top, "num_kv_shared_layers", ""); shared && *shared > 0)
        out.warnings.push_back("num_kv_shared_layers: the last " + std::to_string(*shared) +
                               " layers reuse earlier layers' K/V (HF's Gemma 4); not reflected "
                               "in layer_config");
    out.layer_type_index.resize(names.size());
    for (std::size_t i = 0; i < names.size(); ++i) {
        std::size_t k = 0;
        while (k < out.types.size() &&
               !(out.types[k].layer_type == names[i] && out.types[k].use_rope == rope[i]))
            ++k;
        if (k == out.types.size()) {
            layer_config c;
            c.layer_type = names[i];
            c.use_rope = rope[i];
            config_json_options o = options;
            o.layer_type = names[i];
            c.rope = jc::read_rope_config(root, o, jc::uses_global_head_dim(names[i]));
            jc::read_layer_attention(top, out.model_type, c);
            for (const auto& w : c.rope.warnings) out.warnings.push_back("[" + names[i] + "] " + w);
            out.types.push_back(std::move(c));
        }
        out.layer_type_index[i] = k;
    }
    return out;
}

ROPEKIT_END_ISA_NAMESPACE

/// The largest config.json ropekit reads: 64 MiB (the largest real ones, with long LongRoPE
/// lists or vocabularies inlined, are a few hundred KiB).
inline constexpr std::size_t max_config_json_bytes = std::size_t(64) << 20;

/// The deepest nesting of arrays and objects ropekit accepts in a config.json: 512 levels (real
/// configs use 3). Deeper input is refused before parsing: nlohmann's DOM would keep one heap
/// node per level and its recursive dump() would overflow the stack.
inline constexpr int max_config_json_depth = 512;

namespace detail {
namespace json_config {
ROPEKIT_BEGIN_ISA_NAMESPACE

/// The nesting depth of JSON text, counting brackets outside strings; stops counting above
/// `limit` (the parser reports malformed text itself).
inline int nesting_depth(std::string_view text, int limit) {
    int depth = 0, deepest = 0;
    bool in_string = false, escaped = false;
    for (char c : text) {
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            deepest = std::max(deepest, ++depth);
            if (deepest > limit) return deepest;
        } else if (c == ']' || c == '}') {
            --depth;
        }
    }
    return deepest;
}

/// The contents of the file at `path`, at most max_config_json_bytes. Throws ropekit::error
/// naming `field` for a missing or unreadable file, a directory or other non-regular file
/// (/dev/zero, a FIFO) and a file over the limit; `cannot_open` is the message for the first.
inline std::string read_config_file(const std::string& path, const std::string& field,
                                    const std::string& cannot_open) {
    std::error_code ec;
    const auto st = std::filesystem::status(path, ec);
    if (ec || !std::filesystem::exists(st)) fail(field, cannot_open);
    if (std::filesystem::is_directory(st))
        fail(field, "is a directory, not a config.json: \"" + path + "\"");
    if (!std::filesystem::is_regular_file(st))
        fail(field, "is not a regular file: \"" + path + "\"");
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(field, cannot_open);
    std::string text;
    char buf[1 << 16];
    // Read in chunks and stop past the limit: a regular file can still grow (or be a /proc
    // file reporting size 0), so the size from stat() is not trusted.
    while (in.read(buf, sizeof buf) || in.gcount() > 0) {
        text.append(buf, std::size_t(in.gcount()));
        if (text.size() > max_config_json_bytes)
            fail(field, "is larger than 64 MiB (ropekit::max_config_json_bytes): \"" + path + "\"");
    }
    if (in.bad()) fail(field, "cannot be read: \"" + path + "\"");
    return text;
}

/// Parses config.json text into a DOM; every failure is a ropekit::error with field
/// "config.json": over the size or depth limit, malformed, or a number beyond double (1e400,
/// which nlohmann reports as out_of_range, not parse_error).
inline json parse_text(std::string_view text) {
    if (text.size() > max_config_json_bytes)
        fail("config.json", "is larger than 64 MiB (ropekit::max_config_json_bytes; got " +
                                std::to_string(text.size()) + " bytes)");
    if (nesting_depth(text, max_config_json_depth) > max_config_json_depth)
        fail("config.json",
             "nests arrays/objects deeper than 512 levels "
             "(ropekit::max_config_json_depth)");
    json j = json::parse(text.begin(), text.end(), nullptr, false);
    if (!j.is_discarded()) return j;
    // Parse again with exceptions only to get the position for the message.
    std::string detail_msg = "is not valid JSON";
#if ROPEKIT_HAS_EXCEPTIONS
    try {
        const json again = json::parse(text.begin(), text.end());
        (void)again;
    } catch (const json::exception& e) {
        detail_msg += ": " + std::string(e.what());
    }
#endif
    fail("config.json", detail_msg);
}

ROPEKIT_END_ISA_NAMESPACE
}  // namespace json_config
}  // namespace detail

ROPEKIT_BEGIN_ISA_NAMESPACE

/// Parses config.json text. Malformed JSON, text over max_config_json_bytes or nested deeper
/// than max_config_json_depth is a ropekit::error with field "config.json".
inline model_rope_config parse_config_json(std::string_view text,
                                           const config_json_options& options = {}) {
    return config_from_json(detail::json_config::parse_text(text), options);
}

/// Reads and parses the config.json at `path`. A missing file, a directory or other
/// non-regular file and a file over max_config_json_bytes are a ropekit::error with field
/// "path".
inline model_rope_config load_config_json(const std::string& path,
                                          const config_json_options& options = {}) {
    return parse_config_json(
        detail::json_config::read_config_file(path, "path", "cannot be opened: \"" + path + "\""),
        options);
}

/// The layer map in a few words: runs of equal layers ("0-4 sliding_attention, 5
/// full_attention, ..."); a map that repeats with a period (Gemma's 5:1) is shown as one period,
/// the repeat count and the layers that break it ("0-4 sliding_attention, 5 full_attention;
/// repeats every 6 layers (30 layers); layer 29 full_attention").
inline std::string layer_map_summary(const model_layers_config& m) {
    const auto& idx = m.layer_type_index;
    const std::size_t n = idx.size();
    auto label = [&](std::size_t t) {
        const layer_config& c = m.types[t];
        return c.layer_type + (c.use_rope ? "" : " (NoPE)");
    };
    auto runs = [&](std::size_t from, std::size_t to) {
        std::string out;
        for (std::size_t i = from; i < to;) {
            std::size_t j = i;
            while (j + 1 < to && idx[j + 1] == idx[i]) ++j;
            out += (out.empty() ? "" : ", ") + std::to_string(i) +
                   (j > i ? "-" + std::to_string(j) : std::string()) + " " + label(idx[i]);
            i = j + 1;
        }
        return out;
    };
    std::size_t run_count = 0;
    for (std::size_t i = 0; i < n; ++i) run_count += (i == 0 || idx[i] != idx[i - 1]);
    if (run_count <= 6) return runs(0, n) + " (" + std::to_string(n) + " layers)";
    // The shortest period that every layer but at most 3 follows.
    for (std::size_t period = 2; period <= n / 2; ++period) {
        std::vector<std::size_t> breaks;
        for (std::size_t i = period; i < n && breaks.size() <= 3; ++i)
            if (idx[i] != idx[i % period]) breaks.push_back(i);
        if (breaks.size() > 3) continue;
        std::string out = runs(0, period) + "; repeats every " + std::to_string(period) +
                          " layers (" + std::to_string(n) + " layers)";
        for (std::size_t b : breaks) out += "; layer " + std::to_string(b) + " " + label(idx[b]);
        return out;
    }
    return runs(0, n) + " (" + std::to_string(n) + " layers)";
}

/// Parses config.json text into every layer type (model_config_from_json); the same limits and
/// errors as parse_config_json.
inline model_layers_config parse_model_config(std::string_view text,
                                              const config_json_options& options = {}) {
    return model_config_from_json(detail::json_config::parse_text(text), options);
}

/// Reads the config.json at `path` into every layer type; the same errors as load_config_json.
inline model_layers_config load_model_config(const std::string& path,
                                             const config_json_options& options = {}) {
    return parse_model_config(
        detail::json_config::read_config_file(path, "path", "cannot be opened: \"" + path + "\""),
        options);
}

ROPEKIT_END_ISA_NAMESPACE
ROPEKIT_END_NAMESPACE
