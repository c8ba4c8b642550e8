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
inline rope_params read_geometry(const json& top, const json& d, const std::string& where,
                                 bool local_layers, const config_json_options& options,
                                 std::vector<std::string>& warn) {
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
    // MLA models (DeepSeek-V2/V3) rotate only the qk_rope_head_dim part of each head.
    std::optional<std::int64_t> head_dim = integer(top, "qk_rope_head_dim", "");
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
    if (auto rd = integer(top, "rotary_dim", ""); rd && !prf) {  // GPT-J / CodeGen
        if (*rd <= 0 || *rd > *head_dim)
            fail("rotary_dim", "must be in (0, head_dim] (got " + std::to_string(*rd) + ")");
        rope_params p;
        p.base = *theta;
        p.head_dim = int(*head_dim);
        p.rotary_dim = int(*rd);
        p.layout = *layout;
        p.validate();
        return p;
    }
    return rope_params::from_partial_rotary_factor(int(*head_dim), prf.value_or(1.0), *theta,
                                                   *layout);
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

ROPEKIT_END_ISA_NAMESPACE
}  // namespace json_config
}  // namespace detail

ROPEKIT_BEGIN_ISA_NAMESPACE

/// Reads the RoPE configuration from a parsed config.json object. Throws ropekit::error naming
/// the key for missing required keys, wrong types, unknown rope_type and invalid values.
inline model_rope_config config_from_json(const nlohmann::json& root,
                                          const config_json_options& options = {}) {
    namespace jc = detail::json_config;
    using jc::json;
    const json& top = jc::language_model_config(root);
    model_rope_config out;
    auto& warn = out.warnings;
    const jc::rope_dict rd = jc::find_rope_dict(top, options, warn);
    const bool local_layers = jc::read_local_layers(top, rd, options, warn);
    const json empty = json::object();
    const json* dict = local_layers ? nullptr : rd.dict;
    const json& d = dict ? *dict : empty;
    out.rope_type = jc::read_rope_type(dict, rd.where);

    // M-RoPE (Qwen2-VL, Qwen2.5-VL): HF computes default frequencies and splits the rotary
    // channels over three position axes (temporal, height, width) at apply time.
    const bool mrope = out.rope_type == "mrope";
    if (mrope || jc::find(d, "mrope_section"))
        warn.push_back(rd.where +
                       "mrope_section: M-RoPE's split of the rotary channels over 3 position axes "
                       "is not applied by ropekit (frequencies are default RoPE's; text-only "
                       "positions, where the 3 axes agree, are exact)");
    const auto method = scaling_for_rope_type(mrope ? "default" : out.rope_type);
    if (!method)
        jc::fail(rd.where + "rope_type", "is unknown: \"" + out.rope_type +
                                             "\" (known: " + known_rope_types() + ", mrope)");

    out.params = jc::read_geometry(top, d, rd.where, local_layers, options, warn);

    // Phase 6: the context lengths the methods refer to.
    out.max_position_embeddings = jc::integer(top, "max_position_embeddings", "");
    if (!out.max_position_embeddings)
        out.max_position_embeddings = jc::integer(top, "n_positions", "");
    const jc::method_source src_keys{
        top,
        d,
        rd.where,
        rd.nested,
        out.rope_type,
        out.max_position_embeddings,
        jc::integer(d, "original_max_position_embeddings", rd.where),
        rd.nested ? std::nullopt : jc::integer(top, "original_max_position_embeddings", "")};

    // Phase 7: the method's keys, by the method's own description.
    jc::value_sources src;
    std::visit(
        [&](const auto& tag) {
            using M = std::decay_t<decltype(tag)>;
            out.scaling = jc::read_method<M>(src_keys, out, src);
        },
        *method);
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

ROPEKIT_END_ISA_NAMESPACE
ROPEKIT_END_NAMESPACE
