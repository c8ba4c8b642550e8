// SPDX-License-Identifier: Apache-2.0
/// \file
/// Optional: reads the RoPE settings of a Hugging Face `config.json` into rope_params and a
/// rope_scaling (needs nlohmann/json; link ropekit::config_json).
///
/// What is read (see docs/scaling.md for the full table). Where keys compete, HF v5's
/// `convert_rope_params_to_dict` / `standardize_rope_params` decide, not "newest form wins":
/// - the method dict: a non-null, non-empty `rope_scaling` (v4) wins over `rope_parameters`
///   (v5; may be nested per layer type), as HF's `rope_scaling or rope_parameters`; `rope_type`
///   or the legacy key `type`; `mrope` (Qwen2-VL) is default RoPE for the frequencies;
/// - `rope_theta` (in the dict, else top level, else GPT-NeoX's `rotary_emb_base`, else 10000);
/// - `partial_rotary_factor`: top level (or GPT-NeoX's `rotary_pct`) overwrites the dict's, else
///   the dict's, or GPT-J's `rotary_dim`; `qk_rope_head_dim` (MLA: DeepSeek-V2/V3 rotate only
///   that part), else `head_dim`, else `hidden_size / num_attention_heads` (or `n_embd / n_head`);
/// - `max_position_embeddings` (or `n_positions`); `original_max_position_embeddings`: for
///   yarn, longrope and llama3 the top-level value (Phi-3 style) wins over the dict's;
/// - the pair layout: `rope_interleave`, else `model_type` (interleaved for GPT-J, CodeGen,
///   DeepSeek-V2/V3, Kimi-K2, Cohere, GLM, ChatGLM, Helium), else NeoX rotate-half;
/// - Gemma-3's `rope_local_base_freq`: the sliding-window layers' base, chosen with
///   config_json_options::layer_type.
/// Every failure is a ropekit::error whose field() is the key at fault as written in the file
/// (`rope_scaling.factor`), also for values checked by the scaling types themselves.
#pragma once

#include <cmath>
#include <cstdint>
#include <fstream>
#include <initializer_list>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "error.hpp"
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
    /// Keys read but ignored, defaults and overrides applied, guesses made (layout, M-RoPE).
    std::vector<std::string> warnings;

    /// The frequencies at sequence length `seq_len` (only dynamic NTK and LongRoPE use it).
    rope_frequencies frequencies(std::optional<std::int64_t> seq_len = {}) const {
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

namespace detail {
namespace json_config {

using json = nlohmann::json;

[[noreturn]] inline void fail(const std::string& field, const std::string& what) {
    ROPEKIT_THROW(error(field, field + " " + what));
#if !ROPEKIT_HAS_EXCEPTIONS
    std::abort();
#endif
}

inline std::string show(const json& v) {
    std::string s = v.dump();
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

inline double required(std::optional<double> v, const std::string& field) {
    if (!v) fail(field, "is missing (required for this rope_type)");
    return *v;
}

inline std::int64_t required_int(std::optional<std::int64_t> v, const std::string& field,
                                 const char* why) {
    if (!v) fail(field, std::string("is missing (") + why + ")");
    return *v;
}

/// Python truthiness for the YaRN betas: `get(k) or default` (0 falls back too).
inline double or_default(std::optional<double> v, double fallback) {
    return (v && *v != 0.0) ? *v : fallback;
}

inline void check_keys(const json& dict, const std::string& where, const std::string& type,
                       std::initializer_list<const char*> known, std::vector<std::string>& warn) {
    for (auto it = dict.begin(); it != dict.end(); ++it) {
        bool ok = it.key() == "rope_type" || it.key() == "type" || it.key() == "rope_theta" ||
                  it.key() == "partial_rotary_factor";
        for (const char* k : known) ok = ok || it.key() == k;
        if (!ok)
            warn.push_back(where + it.key() + ": not used by rope_type \"" + type + "\" (ignored)");
    }
}

/// model_types whose HF modeling code pairs adjacent channels (2i, 2i+1): GPT-J/CodeGen
/// rotate_every_two, DeepSeek-V2 view_as_complex on (..., -1, 2), DeepSeek-V3/Kimi-K2
/// (rope_interleave, default true), Cohere/GLM/Helium rotate_half over x[..., ::2] / x[..., 1::2]
/// with repeat_interleave, ChatGLM's (..., rot_dim/2, 2) reshape.
inline bool interleaved_model_type(const std::string& t) {
    for (const char* k : {"gptj", "codegen", "deepseek_v2", "deepseek_v3", "kimi_k2", "cohere",
                          "cohere2", "glm", "glm4", "chatglm", "helium"})
        if (t == k) return true;
    return false;
}

/// model_types known to use NeoX rotate-half (cat(freqs, freqs) + rotate_half); anything else
/// gets the same layout but a warning, because a wrong guess gives fluent garbage.
inline bool neox_model_type(const std::string& t) {
    for (const char* k :
         {"llama",     "llama4_text", "mistral",     "mixtral",  "ministral",  "qwen2",
          "qwen2_moe", "qwen3",       "qwen3_moe",   "qwen2_vl", "qwen2_5_vl", "gemma",
          "gemma2",    "gemma3",      "gemma3_text", "phi",      "phi3",       "phimoe",
          "gpt_neox",  "gpt_oss",     "starcoder2",  "olmo",     "olmo2",      "stablelm",
          "granite",   "granitemoe",  "internlm2",   "exaone",   "falcon",     "persimmon",
          "mistral3",  "smollm3",     "nemotron",    "deepseek", "baichuan",   "yi"})
        if (t == k) return true;
    return false;
}

/// Where a value the scaling types check came from: `validate()` names its own member
/// (`factor`), the reader's user needs the key as written (`rope_scaling.factor`).
struct value_sources {
    std::string where;         ///< "rope_scaling." or "rope_parameters[.layer]."
    std::string original_max;  ///< the key original_max_position came from
    std::string alpha = "alpha";
    bool factor_derived = false;  ///< factor = max_position_embeddings / original
};

/// Rethrows an error from the scaling types' validate() with the file's key path.
[[noreturn]] inline void rethrow_with_path(const error& e, const value_sources& src) {
    const std::string f(e.field());
    std::string path = f;  // rotary_dim, head_dim, base: not keys of the dict
    std::string suffix;
    if (f == "original_max_position") {
        path = src.original_max;
    } else if (f == "alpha") {
        path = src.where + src.alpha;
    } else if (f == "factor" || f == "beta_fast" || f == "beta_slow" || f == "attention_factor" ||
               f == "mscale" || f == "mscale_all_dim" || f == "low_freq_factor" ||
               f == "high_freq_factor" || f == "short_factor" || f == "long_factor") {
        path = src.where + f;
        if (f == "factor" && src.factor_derived)
            suffix = " (derived from max_position_embeddings / original_max_position_embeddings)";
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

}  // namespace json_config
}  // namespace detail

/// Reads the RoPE configuration from a parsed config.json object. Throws ropekit::error naming
/// the key for missing required keys, wrong types, unknown rope_type and invalid values.
inline model_rope_config config_from_json(const nlohmann::json& root_in,
                                          const config_json_options& options = {}) {
    namespace jc = detail::json_config;
    using jc::json;
    if (!root_in.is_object())
        jc::fail("config.json", "must be a JSON object (got " + jc::show(root_in) + ")");
    // Multimodal configs keep the language model's settings in text_config.
    const json* root = &root_in;
    if (!jc::find(root_in, "num_attention_heads") && !jc::find(root_in, "head_dim") &&
        jc::find(root_in, "text_config") && root_in["text_config"].is_object())
        root = &root_in["text_config"];
    const json& top = *root;
    model_rope_config out;
    auto& warn = out.warnings;

    // The method dict. HF v5's convert_rope_params_to_dict does `rope_scaling or
    // rope_parameters`: a non-null, non-empty rope_scaling wins, even next to rope_parameters.
    std::string where;
    const json* dict = nullptr;
    bool nested = false;  // v5 dict per layer type
    const json* rs = jc::find(top, "rope_scaling");
    if (rs && !rs->is_object())
        jc::fail("rope_scaling", "must be an object or null (got " + jc::show(*rs) + ")");
    const json* rp = jc::find(top, "rope_parameters");
    if (rp && !rp->is_object())
        jc::fail("rope_parameters", "must be an object (got " + jc::show(*rp) + ")");
    if (rs && !rs->empty()) {
        where = "rope_scaling.";
        dict = rs;
        if (rp && !rp->empty())
            warn.push_back(
                "rope_parameters: ignored, rope_scaling is set and wins (HF's "
                "convert_rope_params_to_dict uses `rope_scaling or rope_parameters`)");
    } else if (rp) {
        where = "rope_parameters.";
        dict = rp;
        if (!rp->contains("rope_type") && !rp->contains("type") && !rp->empty() &&
            rp->begin()->is_object()) {  // nested per layer type
            nested = true;
            std::string chosen = options.layer_type;
            if (chosen.empty()) {
                if (rp->size() != 1) {
                    std::string keys;
                    for (auto it = rp->begin(); it != rp->end(); ++it)
                        keys += (keys.empty() ? "" : ", ") + it.key();
                    jc::fail("rope_parameters",
                             "is per layer type (" + keys + "): choose one with layer_type");
                }
                chosen = rp->begin().key();
            }
            const json* sub = jc::find(*rp, chosen.c_str());
            if (!sub || !sub->is_object())
                jc::fail("rope_parameters." + chosen, "is missing or not an object");
            dict = sub;
            where = "rope_parameters." + chosen + ".";
        }
    }

    // Gemma-3 (v4 configs): sliding-window layers use default RoPE at rope_local_base_freq, the
    // global layers rope_theta and the dict. One table cannot be both, so the caller chooses.
    bool local_layers = false;
    if (!nested) {
        if (auto local = jc::number(top, "rope_local_base_freq", "")) {
            if (options.layer_type == "sliding_attention") {
                local_layers = true;
                if (!(std::isfinite(*local) && *local > 1.0))
                    jc::fail("rope_local_base_freq",
                             "must be finite and > 1 (got " + jc::show(json(*local)) + ")");
            } else if (options.layer_type.empty()) {
                warn.push_back(
                    "rope_local_base_freq: sliding-window layers use default RoPE at base " +
                    jc::show(json(*local)) +
                    ", not this table (the global layers'); choose with "
                    "config_json_options::layer_type (\"sliding_attention\" or "
                    "\"full_attention\")");
            }
        }
    }
    const json empty = json::object();
    const json& d = (dict && !local_layers) ? *dict : empty;

    if (dict && !local_layers) {
        const json* t = jc::find(d, "rope_type");
        if (!t) t = jc::find(d, "type");  // legacy key
        if (!t) jc::fail(where + "rope_type", "is missing (also looked for the legacy key 'type')");
        if (!t->is_string())
            jc::fail(where + "rope_type", "must be a string (got " + jc::show(*t) + ")");
        out.rope_type = t->get<std::string>();
    }
    // M-RoPE (Qwen2-VL, Qwen2.5-VL): HF computes default frequencies and splits the rotary
    // channels over three position axes (temporal, height, width) at apply time.
    const bool mrope = out.rope_type == "mrope";
    if (mrope || jc::find(d, "mrope_section"))
        warn.push_back(where +
                       "mrope_section: M-RoPE's split of the rotary channels over 3 position axes "
                       "is not applied by ropekit (frequencies are default RoPE's; text-only "
                       "positions, where the 3 axes agree, are exact)");
    const auto method = scaling_for_rope_type(mrope ? "default" : out.rope_type);
    if (!method)
        jc::fail(
            where + "rope_type",
            "is unknown: \"" + out.rope_type +
                "\" (known: default, linear, ntk, dynamic, yarn, llama3, longrope, su, mrope)");

    // Geometry.
    std::optional<double> theta;
    if (local_layers) {
        theta = jc::number(top, "rope_local_base_freq", "");
    } else {
        theta = jc::number(d, "rope_theta", where);
        if (!theta) theta = jc::number(top, "rope_theta", "");
        if (!theta) theta = jc::number(top, "rotary_emb_base", "");
    }
    if (!theta) {
        theta = 10000.0;
        warn.push_back("rope_theta: missing, using 10000 (HF's default)");
    }
    if (!(std::isfinite(*theta) && *theta > 1.0))
        jc::fail("rope_theta", "must be finite and > 1 (got " + jc::show(json(*theta)) + ")");
    // HF's standardize_rope_params overwrites the dict's partial_rotary_factor with the config
    // attribute, so the top-level value wins.
    std::optional<double> prf = jc::number(top, "partial_rotary_factor", "");
    if (!prf) prf = jc::number(top, "rotary_pct", "");
    if (const auto dict_prf = jc::number(d, "partial_rotary_factor", where)) {
        if (!prf)
            prf = dict_prf;
        else if (*prf != *dict_prf)
            warn.push_back(where + "partial_rotary_factor: " + jc::show(json(*dict_prf)) +
                           " overridden by the top-level " + jc::show(json(*prf)) +
                           " (HF's standardize_rope_params)");
    }
    // MLA models (DeepSeek-V2/V3) rotate only the qk_rope_head_dim part of each head.
    std::optional<std::int64_t> head_dim = jc::integer(top, "qk_rope_head_dim", "");
    if (!head_dim) head_dim = jc::integer(top, "head_dim", "");
    if (!head_dim) {
        auto hidden = jc::integer(top, "hidden_size", "");
        auto heads = jc::integer(top, "num_attention_heads", "");
        if (!hidden || !heads) {
            hidden = jc::integer(top, "n_embd", "");
            heads = jc::integer(top, "n_head", "");
        }
        if (!hidden || !heads)
            jc::fail("head_dim", "is missing (and so are hidden_size / num_attention_heads)");
        if (*heads <= 0)
            jc::fail("num_attention_heads", "must be > 0 (got " + std::to_string(*heads) + ")");
        head_dim = *hidden / *heads;  // HF: hidden_size // num_attention_heads
    }
    if (*head_dim <= 0 || *head_dim > (std::int64_t(1) << 24))
        jc::fail("head_dim", "must be in (0, 2^24] (got " + std::to_string(*head_dim) + ")");

    // Pair layout: a wrong guess gives fluent garbage (PITFALLS #16), so say when it is a guess.
    std::optional<rope_layout> layout = options.layout;
    if (!layout) {
        if (const json* ri = jc::find(top, "rope_interleave")) {
            if (!ri->is_boolean())
                jc::fail("rope_interleave", "must be true or false (got " + jc::show(*ri) + ")");
            layout = ri->get<bool>() ? rope_layout::gptj : rope_layout::neox;
        } else if (const json* mt = jc::find(top, "model_type"); mt && mt->is_string()) {
            const auto t = mt->get<std::string>();
            layout = jc::interleaved_model_type(t) ? rope_layout::gptj : rope_layout::neox;
            if (t == "chatglm")  // remote code: rot_dim = kv_channels / 2, base 10000 * rope_ratio
                warn.push_back(
                    "model_type: \"chatglm\" rotates kv_channels/2 channels at base "
                    "10000 * rope_ratio (remote code); ropekit does not read those keys, check "
                    "rotary_dim and base");
            if (!jc::interleaved_model_type(t) && !jc::neox_model_type(t))
                warn.push_back("model_type: \"" + t +
                               "\" is not known to ropekit, pair layout assumed neox "
                               "(rotate-half); check the model's apply_rotary_pos_emb and set "
                               "config_json_options::layout if it pairs adjacent channels");
        } else {
            layout = rope_layout::neox;
        }
    }
    if (auto rd = jc::integer(top, "rotary_dim", ""); rd && !prf) {  // GPT-J / CodeGen
        if (*rd <= 0 || *rd > *head_dim)
            jc::fail("rotary_dim", "must be in (0, head_dim] (got " + std::to_string(*rd) + ")");
        out.params.base = *theta;
        out.params.head_dim = int(*head_dim);
        out.params.rotary_dim = int(*rd);
        out.params.layout = *layout;
        out.params.validate();
    } else {
        out.params = rope_params::from_partial_rotary_factor(int(*head_dim), prf.value_or(1.0),
                                                             *theta, *layout);
    }

    out.max_position_embeddings = jc::integer(top, "max_position_embeddings", "");
    if (!out.max_position_embeddings)
        out.max_position_embeddings = jc::integer(top, "n_positions", "");
    const std::string type = out.rope_type;
    // HF's standardize_rope_params: for yarn, longrope and llama3 (one global dict) the
    // top-level original_max_position_embeddings (Phi-3 style) overwrites the dict's.
    const auto dict_orig = jc::integer(d, "original_max_position_embeddings", where);
    const auto top_orig =
        nested ? std::nullopt : jc::integer(top, "original_max_position_embeddings", "");
    jc::value_sources src;
    src.where = where;
    const std::size_t idx = method->index();
    const bool top_wins = idx == 4 || idx == 5 || idx == 6;  // yarn, llama3, longrope
    if (top_orig && (top_wins || !dict_orig)) {
        out.original_max_position_embeddings = top_orig;
        src.original_max = "original_max_position_embeddings";
        if (dict_orig && *dict_orig != *top_orig)
            warn.push_back(where + "original_max_position_embeddings: " +
                           std::to_string(*dict_orig) + " overridden by the top-level " +
                           std::to_string(*top_orig) + " (HF's standardize_rope_params)");
    } else if (dict_orig) {
        out.original_max_position_embeddings = dict_orig;
        src.original_max = where + "original_max_position_embeddings";
    }
    const auto max_pos = out.max_position_embeddings;
    const auto orig = out.original_max_position_embeddings;
    if (!orig) src.original_max = "max_position_embeddings";

    switch (idx) {
        case 0:  // default (and mrope)
            jc::check_keys(d, where, type, {"mrope_section"}, warn);
            out.scaling = default_rope{};
            break;
        case 1:  // linear
            jc::check_keys(d, where, type, {"factor"}, warn);
            out.scaling =
                linear_scaling{jc::required(jc::number(d, "factor", where), where + "factor")};
            break;
        case 2: {  // ntk: HF's transient "ntk" type read `factor` as alpha
            jc::check_keys(d, where, type, {"alpha", "factor"}, warn);
            auto alpha = jc::number(d, "alpha", where);
            if (!alpha) {
                alpha = jc::number(d, "factor", where);
                if (alpha) src.alpha = "factor";
            }
            out.scaling = ntk_scaling{jc::required(alpha, where + "alpha")};
            break;
        }
        case 3: {  // dynamic: L0 is max_position_embeddings, as in HF
            jc::check_keys(d, where, type, {"factor", "original_max_position_embeddings"}, warn);
            if (jc::find(d, "original_max_position_embeddings"))
                warn.push_back(where +
                               "original_max_position_embeddings: ignored by dynamic NTK (HF uses "
                               "max_position_embeddings as the original length)");
            dynamic_ntk_scaling s;
            s.factor = jc::required(jc::number(d, "factor", where), where + "factor");
            s.original_max_position = jc::required_int(max_pos, "max_position_embeddings",
                                                       "dynamic NTK's original length");
            src.original_max = "max_position_embeddings";
            out.scaling = s;
            break;
        }
        case 4: {  // yarn
            jc::check_keys(d, where, type,
                           {"factor", "original_max_position_embeddings", "beta_fast", "beta_slow",
                            "attention_factor", "mscale", "mscale_all_dim", "truncate"},
                           warn);
            yarn_scaling s;
            s.original_max_position = orig ? *orig
                                           : jc::required_int(max_pos, "max_position_embeddings",
                                                              "YaRN's original length");
            if (auto f = jc::number(d, "factor", where)) {
                s.factor = *f;  // an explicit factor wins (HF #38224, fixed by #40320)
            } else if (orig && max_pos) {
                s.factor = double(*max_pos) / double(*orig);
                src.factor_derived = true;  // < 1 stays an error: it would change inv_freq
            } else {
                jc::fail(where + "factor",
                         "is missing (and max_position_embeddings / "
                         "original_max_position_embeddings cannot replace it)");
            }
            s.beta_fast = jc::or_default(jc::number(d, "beta_fast", where), 32.0);
            s.beta_slow = jc::or_default(jc::number(d, "beta_slow", where), 1.0);
            s.attention_factor = jc::number(d, "attention_factor", where);
            s.mscale = jc::number(d, "mscale", where);
            s.mscale_all_dim = jc::number(d, "mscale_all_dim", where);
            if (const json* tr = jc::find(d, "truncate")) {
                if (!tr->is_boolean())
                    jc::fail(where + "truncate",
                             "must be true or false (got " + jc::show(*tr) + ")");
                s.truncate = tr->get<bool>();
            }
            out.scaling = s;
            break;
        }
        case 5: {  // llama3: all four keys are required, as in HF
            jc::check_keys(d, where, type,
                           {"factor", "low_freq_factor", "high_freq_factor",
                            "original_max_position_embeddings"},
                           warn);
            llama3_scaling s;
            s.factor = jc::required(jc::number(d, "factor", where), where + "factor");
            s.low_freq_factor =
                jc::required(jc::number(d, "low_freq_factor", where), where + "low_freq_factor");
            s.high_freq_factor =
                jc::required(jc::number(d, "high_freq_factor", where), where + "high_freq_factor");
            s.original_max_position = jc::required_int(
                orig, where + "original_max_position_embeddings", "required for rope_type llama3");
            out.scaling = s;
            break;
        }
        case 6: {  // longrope (and its Phi-3 name "su")
            jc::check_keys(d, where, type,
                           {"short_factor", "long_factor", "factor", "attention_factor",
                            "original_max_position_embeddings"},
                           warn);
            for (const char* k : {"short_mscale", "long_mscale"})
                if (jc::find(d, k))
                    warn.push_back(where + k +
                                   ": per-set mscale is not part of HF's longrope (ignored)");
            longrope_scaling s;
            s.short_factor = jc::number_list(d, "short_factor", where);
            s.long_factor = jc::number_list(d, "long_factor", where);
            s.original_max_position = orig ? *orig
                                           : jc::required_int(max_pos, "max_position_embeddings",
                                                              "LongRoPE's original length");
            s.attention_factor = jc::number(d, "attention_factor", where);
            if (auto f = jc::number(d, "factor", where)) {
                s.factor = *f;  // explicit: < 1 is an error (validate)
            } else if (orig && max_pos) {
                const double derived = double(*max_pos) / double(*orig);  // Phi-3: 32
                src.factor_derived = true;
                if (derived >= 1.0) {
                    s.factor = derived;
                } else {
                    // HF: `factor <= 1` gives attention factor 1; the frequencies do not use it.
                    warn.push_back(where +
                                   "factor: derived from max_position_embeddings / "
                                   "original_max_position_embeddings = " +
                                   jc::show(json(derived)) +
                                   " < 1 (no extension); attention factor 1, as HF");
                    if (!s.attention_factor) s.attention_factor = 1.0;
                }
            } else if (!s.attention_factor) {  // factor only feeds the attention factor
                jc::fail(where + "factor",
                         "is missing (and max_position_embeddings / "
                         "original_max_position_embeddings cannot replace it)");
            }
            out.scaling = s;
            break;
        }
        default:
            break;
    }
#if ROPEKIT_HAS_EXCEPTIONS
    try {
        validate(out.params, out.scaling);
    } catch (const error& e) {
        jc::rethrow_with_path(e, src);
    }
#else
    validate(out.params, out.scaling);
#endif
    return out;
}

/// Parses config.json text. Malformed JSON is a ropekit::error with field "config.json".
inline model_rope_config parse_config_json(std::string_view text,
                                           const config_json_options& options = {}) {
    nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
    if (j.is_discarded()) {
        // Parse again with exceptions only to get the position for the message.
        std::string detail_msg = "is not valid JSON";
#if ROPEKIT_HAS_EXCEPTIONS
        try {
            const nlohmann::json again = nlohmann::json::parse(text.begin(), text.end());
            (void)again;
        } catch (const nlohmann::json::parse_error& e) {
            detail_msg += ": " + std::string(e.what());
        }
#endif
        detail::json_config::fail("config.json", detail_msg);
    }
    return config_from_json(j, options);
}

/// Reads and parses the config.json at `path`; a missing file is a ropekit::error with field
/// "path".
inline model_rope_config load_config_json(const std::string& path,
                                          const config_json_options& options = {}) {
    std::ifstream in(path, std::ios::binary);
    if (!in) detail::json_config::fail("path", "cannot be opened: \"" + path + "\"");
    std::ostringstream ss;
    ss << in.rdbuf();
    return parse_config_json(ss.str(), options);
}

ROPEKIT_END_NAMESPACE
