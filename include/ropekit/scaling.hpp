// SPDX-License-Identifier: Apache-2.0
/// \file
/// RoPE scaling methods (default, linear PI, NTK-aware, dynamic NTK, YaRN, Llama 3.1, LongRoPE) as
/// small value types that all produce the same rope_frequencies, equal to Hugging Face
/// transformers' `modeling_rope_utils.py`.
///
/// Precision contract. HF computes inv_freq with float32 tensor operations (pow, reciprocal,
/// blends) on top of float64 Python scalars. ropekit reproduces that formula step by step, every
/// float32 step correctly rounded (detail/scaling_f32.hpp) and every Python scalar step in double,
/// so the result is HF's formula evaluated exactly; torch's own float32 pow is within 1 ulp of
/// that, so ropekit matches HF within 2 float32 ulps (tests/data/hf_golden.inc, made by torch:
/// 99% bit-identical). Computing the ideal real-number value instead would be closer to the
/// math but further from HF: YaRN's float32 blend alone moves inv_freq by up to factor/2 ulps.
/// See docs/scaling.md for each method's formula, config keys and where engines differ.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "detail/scaling_f32.hpp"
#include "error.hpp"
#include "layout.hpp"
#include "table.hpp"

ROPEKIT_BEGIN_NAMESPACE

/// The longest sequence (and original context) ropekit accepts: 2^32 positions, 400 times the
/// longest context shipped today (10M tokens); beyond it HF's own float32 angles are meaningless.
inline constexpr std::int64_t max_seq_len = std::int64_t(1) << 32;

/// Parameters every method shares: the model's RoPE geometry.
struct rope_params {
    /// The largest head_dim (and so rotary_dim) accepted: 2^16 channels, 64 times the largest
    /// in use (DeepSeek's 192, Gemma's 256); it bounds every per-pair table at 2^15 entries.
    static constexpr int max_head_dim = 1 << 16;

    double base = 10000.0;  ///< rope_theta (ABF models just use a larger base)
    int head_dim = 0;       ///< channels per attention head
    int rotary_dim = 0;     ///< rotated channels (even, <= head_dim); the `dim` of every formula
    rope_layout layout = rope_layout::neox;  ///< which channels form a pair
    /// The `dim` in the exponent `2i / dim` when it is not rotary_dim; 0 (the default) means
    /// rotary_dim. Gemma 4's proportional RoPE divides by the full head_dim while rotating only
    /// the first pairs.
    int frequency_dim = 0;
    /// NeoX channel distance within a pair, 0 meaning rotary_dim / 2 (rope_frequencies::pair_span).
    int pair_span = 0;
    /// First rotated channel (rope_frequencies::rotary_offset; DeepSeek MLA: qk_nope_head_dim).
    int rotary_offset = 0;

    /// frequency_dim, or rotary_dim when it is 0.
    ROPEKIT_ALWAYS_INLINE int exponent_dim() const noexcept {
        return frequency_dim > 0 ? frequency_dim : rotary_dim;
    }

    /// Throws ropekit::error unless 0 < head_dim <= max_head_dim, rotary_dim is even, > 0 and
    /// <= head_dim, and base is > 1 and finite in float32 (HF's pow runs on a float32 base; a
    /// larger one is inf and would leave pairs with inv_freq 0, never rotating).
    ROPEKIT_ALWAYS_INLINE void validate() const {
        detail::require(head_dim > 0, "head_dim", "must be > 0", head_dim);
        detail::require(head_dim <= max_head_dim, "head_dim", "must be <= 65536", head_dim);
        detail::require(rotary_dim > 0 && rotary_dim % 2 == 0, "rotary_dim", "must be even and > 0",
                        rotary_dim);
        detail::require(rotary_dim <= head_dim, "rotary_dim", "must be <= head_dim", rotary_dim);
        detail::require(
            frequency_dim == 0 || (frequency_dim >= rotary_dim && frequency_dim <= max_head_dim &&
                                   frequency_dim % 2 == 0),
            "frequency_dim", "must be 0, or even, >= rotary_dim and <= 65536", frequency_dim);
        detail::require(pair_span == 0 || (layout == rope_layout::neox &&
                                           pair_span >= rotary_dim / 2 && pair_span <= head_dim),
                        "pair_span", "must be 0, or (NeoX only) >= rotary_dim / 2", pair_span);
        detail::require(rotary_offset >= 0 && rotary_offset <= head_dim, "rotary_offset",
                        "must be in [0, head_dim]", rotary_offset);
        {
            const int span = pair_span > 0 ? pair_span : rotary_dim / 2;
            const int extent = layout == rope_layout::neox ? span + rotary_dim / 2 : rotary_dim;
            detail::require(rotary_offset + extent <= head_dim, "head_dim",
                            "must be >= rotary_offset + the rotated extent (pair_span + "
                            "rotary_dim / 2 for NeoX, rotary_dim for GPT-J)",
                            head_dim);
        }
        detail::require(std::isfinite(base) && base > 1.0, "base", "must be finite and > 1", base);
        detail::require_fits_f32(base, "base");
    }

    /// Parameters with `rotary_dim = int(head_dim * partial_rotary_factor)`, truncated exactly as
    /// HF's Python `int()` does (Phi-2: 80 * 0.4 -> 32; NeoX: 128 * 0.25 -> 32). Throws
    /// ropekit::error unless 0 < partial_rotary_factor <= 1 and the result is valid; a factor
    /// below 1 that gives an invalid rotary_dim (0 or odd) is reported as partial_rotary_factor.
    ROPEKIT_ALWAYS_INLINE static rope_params from_partial_rotary_factor(
        int head_dim, double partial_rotary_factor, double base = 10000.0,
        rope_layout layout = rope_layout::neox) {
        detail::require(std::isfinite(partial_rotary_factor) && partial_rotary_factor > 0.0 &&
                            partial_rotary_factor <= 1.0,
                        "partial_rotary_factor", "must be in (0, 1]", partial_rotary_factor);
        rope_params p;
        p.base = base;
        p.head_dim = head_dim;
        p.rotary_dim = int(double(head_dim) * partial_rotary_factor);
        p.layout = layout;
        if (partial_rotary_factor < 1.0 && head_dim > 0 && head_dim <= max_head_dim &&
            (p.rotary_dim <= 0 || p.rotary_dim % 2 != 0))
            detail::fail(
                "partial_rotary_factor",
                ("must give an even rotary_dim > 0 (int(head_dim * "
                 "partial_rotary_factor) = " +
                 std::to_string(p.rotary_dim) + " for head_dim " + std::to_string(head_dim) + ")")
                    .c_str(),
                partial_rotary_factor);
        p.validate();
        return p;
    }

    /// Proportional RoPE's geometry (Gemma 4, proportional_rope): `rope_angles =
    /// int(partial_rotary_factor * head_dim // 2)` rotated pairs (Python's float floor division,
    /// exactly as HF), rotary_dim = 2 * rope_angles, frequency_dim = head_dim, and for NeoX
    /// pair_span = head_dim / 2 (GPT-J pairs are adjacent: the rotated pairs are simply the
    /// first ones). Throws ropekit::error unless 0 < partial_rotary_factor <= 1, head_dim is even
    /// and at least one pair rotates.
    ROPEKIT_ALWAYS_INLINE static rope_params proportional(int head_dim,
                                                          double partial_rotary_factor,
                                                          double base = 10000.0,
                                                          rope_layout layout = rope_layout::neox) {
        detail::require(std::isfinite(partial_rotary_factor) && partial_rotary_factor > 0.0 &&
                            partial_rotary_factor <= 1.0,
                        "partial_rotary_factor", "must be in (0, 1]", partial_rotary_factor);
        detail::require(head_dim > 0 && head_dim <= max_head_dim && head_dim % 2 == 0, "head_dim",
                        "must be even and in (0, 65536] for proportional RoPE", head_dim);
        const int rope_angles = int(std::floor(partial_rotary_factor * double(head_dim) / 2.0));
        detail::require(rope_angles > 0, "partial_rotary_factor",
                        "must rotate at least one pair (int(partial_rotary_factor * head_dim // 2) "
                        "is 0)",
                        partial_rotary_factor);
        rope_params p;
        p.base = base;
        p.head_dim = head_dim;
        p.rotary_dim = 2 * rope_angles;
        p.layout = layout;
        p.frequency_dim = head_dim;
        p.pair_span = layout == rope_layout::neox ? head_dim / 2 : 0;
        p.validate();
        return p;
    }
};

/// How the config reader (config_json.hpp) fills one member of a scaling method from the rope
/// dict of a config.json. The member's default member initializer is the key's default.
enum class key_rule {
    required,  ///< absent or null: error "is missing"
    optional,  ///< absent or null: the member keeps its default
    /// absent, null or 0: the default (Python's `get(key) or default`, YaRN's betas)
    python_or,
    /// absent: `max_position_embeddings / original context`, else error (YaRN's factor)
    context_ratio,
    /// as context_ratio, but a ratio below 1 (no extension) leaves the member unset and calls
    /// the method's `static void not_extended(Method&)`; absent and not derivable: unset
    /// (LongRoPE's factor, which only feeds the attention factor)
    extension_ratio,
    /// the original context: the top-level `original_max_position_embeddings` (Phi-3 style)
    /// wins over the dict's, else `max_position_embeddings`, else error (YaRN, LongRoPE)
    original_context,
    /// as original_context, without the `max_position_embeddings` fallback (Llama 3.1)
    original_context_required,
    /// the top-level `max_position_embeddings`, never the dict (dynamic NTK's L0, as HF)
    max_position,
};

/// One config key of a scaling method: where it goes and how it is read. Each method lists its
/// keys in `static constexpr auto config_keys()`; the config reader, rope-inspect's output and
/// flags, and the key paths of validation errors are all derived from that list.
/// \tparam Method the scaling struct \tparam T the member's type (double, std::int64_t, bool,
/// std::optional<double>, std::vector<double>)
template <class Method, class T>
struct config_key {
    using method_type = Method;  ///< the scaling struct
    using value_type = T;        ///< the member's type
    std::string_view name;       ///< the key in the rope dict, as HF writes it (`beta_fast`)
    T Method::*member;           ///< the member it sets
    key_rule rule = key_rule::optional;  ///< how an absent key is handled
    /// The member's name as validate() reports it, when it differs from `name`
    /// (`original_max_position`); rope-inspect prints the parameters under this name.
    std::string_view field = {};
    std::string_view alias = {};  ///< an older key read when `name` is absent (NTK: `factor`)
    std::string_view note = {};   ///< for a missing required value: why it is needed

    /// validate()'s name for the member.
    ROPEKIT_ALWAYS_INLINE constexpr std::string_view member_name() const noexcept {
        return field.empty() ? name : field;
    }
};

/// A key a method knows but does not use: no "not used by rope_type" warning, and `note` (if
/// not empty) as the warning instead.
struct ignored_key {
    std::string_view name;  ///< the key in the rope dict
    std::string_view note;  ///< the warning text; empty: silently accepted
};

/// A value rope-inspect reports next to the parameters, computed from the method and seq_len
/// (LongRoPE's `uses_long_factor`).
template <class Method, class F>
struct derived_value {
    std::string_view name;  ///< the name in the report
    F function;             ///< `bool/double (Method::*)(std::optional<std::int64_t>) const`
};

namespace detail {
// Cold-path helpers: their code depends on the compile flags (see abi.hpp).
ROPEKIT_BEGIN_ISA_NAMESPACE

inline void check_seq_len(std::optional<std::int64_t> seq_len) {
    if (!seq_len) return;
    require(*seq_len >= 0, "seq_len", "must be >= 0", *seq_len);
    require(*seq_len <= max_seq_len, "seq_len", "must be <= 2^32 (ropekit::max_seq_len)", *seq_len);
}

/// An original context length: > 0 and <= max_seq_len.
inline void require_context(std::int64_t v, const char* field) {
    require(v > 0, field, "must be > 0", v);
    require(v <= max_seq_len, field, "must be <= 2^32 (ropekit::max_seq_len)", v);
}

/// `dim / (dim - 2)`, the NTK exponent; needs dim > 2.
inline void require_ntk_dim(const rope_params& p) {
    require(p.rotary_dim > 2, "rotary_dim", "must be > 2 for NTK-aware scaling", p.rotary_dim);
}

inline void require_factor_at_least_one(double v, const char* field) {
    require(std::isfinite(v) && v >= 1.0, field, "must be finite and >= 1", v);
    require_fits_f32(v, field);
}

/// HF's `base ** (arange(0, dim, 2).float() / dim)`: float32 exponent 2i/dim, float32 base, one
/// float32 pow per pair.
/// `pairs` (default dim / 2) exponents: proportional RoPE takes fewer pairs than dim / 2.
inline std::vector<float> hf_pos_freqs(double base, int dim, int pairs = -1) {
    if (pairs < 0) pairs = dim / 2;
    std::vector<float> out(static_cast<std::size_t>(pairs));
    const float b = f32::round(base);
    for (int i = 0; i < pairs; ++i) out[std::size_t(i)] = f32::pow(b, float(2 * i) / float(dim));
    return out;
}

/// HF's default inv_freq, `1.0 / pos_freqs` (a float32 reciprocal).
inline std::vector<float> hf_default_inv_freq(double base, int dim, int pairs = -1) {
    std::vector<float> inv = hf_pos_freqs(base, dim, pairs);
    for (float& v : inv) v = f32::div(1.0f, v);
    return inv;
}

/// The default inv_freq of the geometry: rotary_dim / 2 pairs over the exponent denominator
/// exponent_dim() (rotary_dim, or Gemma 4's full head_dim).
inline std::vector<float> hf_geometry_inv_freq(const rope_params& p) {
    return hf_default_inv_freq(p.base, p.exponent_dim(), p.rotary_dim / 2);
}

/// The methods whose HF formula is written for one `dim` (NTK's `dim / (dim - 2)`, YaRN's
/// correction range, Llama 3.1's and LongRoPE's per-pair lists) reject a separate exponent
/// dimension rather than guess which of the two each occurrence of `dim` means.
inline void require_plain_exponent(const rope_params& p, std::string_view rope_type) {
    if (p.frequency_dim != 0 && p.frequency_dim != p.rotary_dim)
        fail("frequency_dim",
             ("must be 0 or rotary_dim for rope_type \"" + std::string(rope_type) +
              "\" (HF defines it for one dim; only default, linear and proportional take a "
              "separate exponent dimension)")
                 .c_str(),
             p.frequency_dim);
}

inline rope_frequencies make_rope_frequencies(const rope_params& p, std::vector<float> inv_freq,
                                              double attention_factor) {
    // Every check above keeps the parameters inside float32, but their combination can still
    // underflow (a large factor on a large base) or overflow: a pair with inv_freq 0 would never
    // rotate, so that is an error, not a table.
    for (std::size_t i = 0; i < inv_freq.size(); ++i)
        if (!(std::isfinite(inv_freq[i]) && inv_freq[i] > 0.0f))
            fail("inv_freq",
                 ("must be finite and > 0 for every pair; the parameters under/overflow float32 "
                  "at pair " +
                  std::to_string(i))
                     .c_str(),
                 inv_freq[i]);
    require_positive_f32(attention_factor, "attention_factor");
    rope_frequencies f;
    f.inv_freq = std::move(inv_freq);
    f.attention_factor = float(attention_factor);
    f.head_dim = p.head_dim;
    f.rotary_dim = p.rotary_dim;
    f.layout = p.layout;
    f.pair_span = p.pair_span;
    f.rotary_offset = p.rotary_offset;
    f.validate();
    return f;
}

/// The frequencies of linear PI and proportional RoPE: hf_geometry_inv_freq divided by `factor`
/// with one float32 division per pair (HF's in-place `inv_freq /= factor`), attention factor 1.
inline rope_frequencies hf_divided_frequencies(const rope_params& p, double factor) {
    std::vector<float> inv = hf_geometry_inv_freq(p);
    const float f = f32::round(factor);
    for (float& v : inv) v = f32::div(v, f);
    return make_rope_frequencies(p, std::move(inv), 1.0);
}

ROPEKIT_END_ISA_NAMESPACE
}  // namespace detail

/// Plain RoPE (Su et al. 2021): `inv_freq[i] = 1 / base^(2i/dim)`, attention factor 1.
struct default_rope {
    static constexpr std::string_view rope_type = "default";  ///< HF's rope_type string

    /// No keys; M-RoPE's `mrope_section` and `mrope_interleaved` are read by the config reader.
    ROPEKIT_ALWAYS_INLINE static constexpr auto config_keys() {
        return std::make_tuple(ignored_key{"mrope_section", ""},
                               ignored_key{"mrope_interleaved", ""});
    }

    /// Throws ropekit::error for invalid parameters.
    ROPEKIT_ALWAYS_INLINE void validate(const rope_params& p) const { p.validate(); }

    /// 1: plain RoPE does not scale the logits.
    ROPEKIT_ALWAYS_INLINE double resolved_attention_factor() const noexcept { return 1.0; }

    /// The frequencies (seq_len is ignored).
    ROPEKIT_ALWAYS_INLINE rope_frequencies
    frequencies(const rope_params& p, std::optional<std::int64_t> seq_len = {}) const {
        validate(p);
        detail::check_seq_len(seq_len);
        return detail::make_rope_frequencies(p, detail::hf_geometry_inv_freq(p), 1.0);
    }
};

/// Linear position interpolation (Chen et al. 2023, "PI"; kaiokendev's SuperHOT): every
/// frequency divided by `factor`, so position p rotates like default position p / factor.
struct linear_scaling {
    static constexpr std::string_view rope_type = "linear";  ///< HF's rope_type string
    double factor = 1.0;                                     ///< context extension ratio, >= 1

    /// `factor` is required.
    ROPEKIT_ALWAYS_INLINE static constexpr auto config_keys() {
        return std::make_tuple(config_key<linear_scaling, double>{"factor", &linear_scaling::factor,
                                                                  key_rule::required});
    }

    /// Throws ropekit::error for invalid parameters or factor < 1.
    ROPEKIT_ALWAYS_INLINE void validate(const rope_params& p) const {
        p.validate();
        detail::require_factor_at_least_one(factor, "factor");
    }

    /// 1: PI does not scale the logits.
    ROPEKIT_ALWAYS_INLINE double resolved_attention_factor() const noexcept { return 1.0; }

    /// `default_inv_freq / factor` (one float32 division, as HF's in-place `inv_freq /= factor`).
    ROPEKIT_ALWAYS_INLINE rope_frequencies
    frequencies(const rope_params& p, std::optional<std::int64_t> seq_len = {}) const {
        validate(p);
        detail::check_seq_len(seq_len);
        return detail::hf_divided_frequencies(p, factor);
    }
};

/// Static NTK-aware scaling (bloc97, r/LocalLLaMA, 2023): a larger base,
/// `base' = base * alpha^(dim/(dim-2))`, which leaves pair 0 alone and divides the last pair's
/// frequency by exactly alpha. HF's short-lived `rope_type: "ntk"` read `factor` as alpha.
struct ntk_scaling {
    static constexpr std::string_view rope_type = "ntk";  ///< HF's rope_type string
    double alpha = 1.0;                                   ///< NTK alpha, >= 1 (1 is default RoPE)

    /// `alpha`, required; HF's transient "ntk" type wrote it as `factor`.
    ROPEKIT_ALWAYS_INLINE static constexpr auto config_keys() {
        return std::make_tuple(config_key<ntk_scaling, double>{
            "alpha", &ntk_scaling::alpha, key_rule::required, {}, "factor"});
    }

    /// 1: NTK-aware scaling does not scale the logits.
    ROPEKIT_ALWAYS_INLINE double resolved_attention_factor() const noexcept { return 1.0; }

    /// Throws ropekit::error for invalid parameters, alpha < 1 or rotary_dim <= 2.
    ROPEKIT_ALWAYS_INLINE void validate(const rope_params& p) const {
        p.validate();
        detail::require_plain_exponent(p, rope_type);
        detail::require_ntk_dim(p);
        detail::require_factor_at_least_one(alpha, "alpha");
        detail::require(detail::fits_f32(scaled_base(p)), "alpha",
                        "makes the scaled base base * alpha^(dim/(dim-2)) overflow float32", alpha);
    }

    /// The scaled base `base * alpha^(dim/(dim-2))`, in double as HF's Python computes it.
    ROPEKIT_ALWAYS_INLINE double scaled_base(const rope_params& p) const {
        const double dim = p.rotary_dim;
        return p.base * std::pow(alpha, dim / (dim - 2.0));
    }

    /// Default frequencies of the scaled base.
    ROPEKIT_ALWAYS_INLINE rope_frequencies
    frequencies(const rope_params& p, std::optional<std::int64_t> seq_len = {}) const {
        validate(p);
        detail::check_seq_len(seq_len);
        return detail::make_rope_frequencies(
            p, detail::hf_default_inv_freq(scaled_base(p), p.rotary_dim), 1.0);
    }
};

/// Dynamic NTK (emozilla, 2023): NTK-aware scaling whose alpha follows the current sequence
/// length `s`: `base' = base * (factor * s / L0 - (factor - 1))^(dim/(dim-2))` for s > L0, and
/// plain RoPE for s <= L0.
///
/// A pure function of (parameters, seq_len): no hidden state. HF's model wrapper keeps the
/// largest length seen and only resets below L0 (FORMULAS.md section 2), and vLLM evaluates once
/// at s = factor * L0; an engine that wants either passes that length. seq_len is an integer and
/// base' is computed in double (HF's int path); HF's model passes a 0-d int64 tensor, which
/// computes base' in float32 and moves inv_freq by up to 2 ulps. At or below L0 the result is
/// default RoPE bit for bit (the multiplier is 1 in exact arithmetic).
struct dynamic_ntk_scaling {
    static constexpr std::string_view rope_type = "dynamic";  ///< HF's rope_type string
    double factor = 1.0;                                      ///< scaling factor, >= 1
    std::int64_t original_max_position = 0;  ///< L0; HF uses config.max_position_embeddings

    /// `factor` (required) and L0 from `max_position_embeddings`, as HF (a TODO there); the
    /// dict's `original_max_position_embeddings` is ignored with a warning.
    ROPEKIT_ALWAYS_INLINE static constexpr auto config_keys() {
        using k = dynamic_ntk_scaling;
        return std::make_tuple(
            config_key<k, double>{"factor", &k::factor, key_rule::required},
            config_key<k, std::int64_t>{"max_position_embeddings",
                                        &k::original_max_position,
                                        key_rule::max_position,
                                        "original_max_position",
                                        {},
                                        "dynamic NTK's original length"},
            ignored_key{"original_max_position_embeddings",
                        "ignored by dynamic NTK (HF uses max_position_embeddings as the original "
                        "length)"});
    }

    /// 1: dynamic NTK does not scale the logits.
    ROPEKIT_ALWAYS_INLINE double resolved_attention_factor() const noexcept { return 1.0; }

    /// Throws ropekit::error for invalid parameters, factor < 1, L0 <= 0 or rotary_dim <= 2.
    ROPEKIT_ALWAYS_INLINE void validate(const rope_params& p) const {
        p.validate();
        detail::require_plain_exponent(p, rope_type);
        detail::require_ntk_dim(p);
        detail::require_factor_at_least_one(factor, "factor");
        detail::require_context(original_max_position, "original_max_position");
    }

    /// The base used for sequence length `seq_len` (the plain base when seq_len <= L0 or absent).
    ROPEKIT_ALWAYS_INLINE double scaled_base(const rope_params& p,
                                             std::optional<std::int64_t> seq_len) const {
        if (!seq_len || *seq_len <= original_max_position) return p.base;
        const double dim = p.rotary_dim;
        const double s = double(*seq_len), l0 = double(original_max_position);
        return p.base * std::pow(factor * s / l0 - (factor - 1.0), dim / (dim - 2.0));
    }

    /// Default frequencies of scaled_base(p, seq_len).
    ROPEKIT_ALWAYS_INLINE rope_frequencies
    frequencies(const rope_params& p, std::optional<std::int64_t> seq_len = {}) const {
        validate(p);
        detail::check_seq_len(seq_len);
        const double b = scaled_base(p, seq_len);
        detail::require(detail::fits_f32(b), "seq_len",
                        "makes dynamic NTK's scaled base overflow float32 with this factor",
                        seq_len.value_or(0));
        return detail::make_rope_frequencies(p, detail::hf_default_inv_freq(b, p.rotary_dim), 1.0);
    }
};

/// YaRN (Peng et al. 2023, arXiv:2309.00071): pairs that rotate more than `beta_fast` times over
/// the original context keep their frequency, pairs that rotate less than `beta_slow` times are
/// divided by `factor` (linear PI), and a linear ramp over the pair index blends the ones in
/// between. The attention factor (the paper's sqrt(1/t)) is `0.1 ln(factor) + 1` unless given.
///
/// Follows HF's current `_compute_yarn_parameters`: `truncate` (default true) floors/ceils the
/// correction range, `mscale`/`mscale_all_dim` give the attention factor
/// `get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)` only when both are non-zero,
/// and an explicit attention_factor wins over both. DeepSeek-V2/V3 additionally multiply their
/// softmax scale by `get_mscale(factor, mscale_all_dim)^2` inside the attention module; that is
/// not part of RoPE and not included here.
struct yarn_scaling {
    static constexpr std::string_view rope_type = "yarn";  ///< HF's rope_type string
    double factor = 1.0;                                   ///< context extension ratio s, >= 1
    std::int64_t original_max_position = 0;                ///< L, the pre-training context
    double beta_fast = 32.0;                               ///< rotations above which a pair is kept
    double beta_slow = 1.0;                    ///< rotations below which a pair is interpolated
    std::optional<double> attention_factor{};  ///< explicit final attention factor (wins)
    std::optional<double> mscale{};            ///< DeepSeek-style mscale (0 or absent: unused)
    std::optional<double> mscale_all_dim{};    ///< DeepSeek-style mscale_all_dim
    bool truncate = true;                      ///< floor/ceil the correction range (gpt-oss: false)

    /// HF's keys; the betas use Python's `or` (0 means the default), a missing factor is
    /// `max_position_embeddings / original_max_position_embeddings` (HF #38224 / #40320).
    ROPEKIT_ALWAYS_INLINE static constexpr auto config_keys() {
        using k = yarn_scaling;
        using opt = std::optional<double>;
        return std::make_tuple(
            config_key<k, double>{"factor", &k::factor, key_rule::context_ratio},
            config_key<k, std::int64_t>{"original_max_position_embeddings",
                                        &k::original_max_position,
                                        key_rule::original_context,
                                        "original_max_position",
                                        {},
                                        "YaRN's original length"},
            config_key<k, double>{"beta_fast", &k::beta_fast, key_rule::python_or},
            config_key<k, double>{"beta_slow", &k::beta_slow, key_rule::python_or},
            config_key<k, opt>{"attention_factor", &k::attention_factor},
            config_key<k, opt>{"mscale", &k::mscale},
            config_key<k, opt>{"mscale_all_dim", &k::mscale_all_dim},
            config_key<k, bool>{"truncate", &k::truncate});
    }

    /// The ramp's ends, in pair indices: pairs <= low keep their frequency, pairs >= high are
    /// divided by factor.
    struct correction_range_t {
        double low;   ///< max(floor(dim(beta_fast)), 0) (no floor when !truncate)
        double high;  ///< min(ceil(dim(beta_slow)), dim - 1) (no ceil when !truncate)
    };

    /// Throws ropekit::error for invalid parameters: factor < 1, L <= 0, betas not > 0 and finite
    /// in float32, beta_fast <= beta_slow, a non-positive attention_factor, a negative mscale
    /// (every float beyond float32 too: HF's configs are float32 models).
    ROPEKIT_ALWAYS_INLINE void validate(const rope_params& p) const {
        p.validate();
        detail::require_plain_exponent(p, rope_type);
        detail::require_factor_at_least_one(factor, "factor");
        detail::require_context(original_max_position, "original_max_position");
        detail::require_positive_f32(beta_fast, "beta_fast");
        detail::require_positive_f32(beta_slow, "beta_slow");
        detail::require(beta_fast > beta_slow, "beta_fast", "must be > beta_slow", beta_fast);
        if (attention_factor) {
            detail::require_finite_positive(*attention_factor, "attention_factor");
            detail::require_positive_f32(*attention_factor, "attention_factor");
        }
        if (mscale)
            detail::require(detail::fits_f32(*mscale) && *mscale >= 0.0, "mscale",
                            "must be >= 0 and finite in float32", *mscale);
        if (mscale_all_dim)
            detail::require(detail::fits_f32(*mscale_all_dim) && *mscale_all_dim >= 0.0,
                            "mscale_all_dim", "must be >= 0 and finite in float32",
                            *mscale_all_dim);
        // The combinations: the mscale ratio is stored as a float32 attention factor, and
        // DeepSeek's softmax factor is squared.
        detail::require(detail::fits_f32(deepseek_softmax_factor()), "mscale_all_dim",
                        "makes get_mscale(factor, mscale_all_dim)^2 overflow float32",
                        mscale_all_dim.value_or(0.0));
        if (!attention_factor)
            detail::require(detail::positive_f32(resolved_attention_factor()), "mscale",
                            "gives an attention factor outside float32 (get_mscale(factor, "
                            "mscale) / get_mscale(factor, mscale_all_dim))",
                            mscale.value_or(0.0));
    }

    /// `get_mscale(s, m) = 1 if s <= 1 else 0.1 m ln(s) + 1` (DeepSeek's yarn_get_mscale).
    ROPEKIT_ALWAYS_INLINE static double get_mscale(double s, double m = 1.0) {
        return s <= 1.0 ? 1.0 : 0.1 * m * std::log(s) + 1.0;
    }

    /// The attention factor HF returns: explicit, else the mscale ratio when mscale and
    /// mscale_all_dim are both non-zero, else get_mscale(factor).
    ROPEKIT_ALWAYS_INLINE double resolved_attention_factor() const {
        if (attention_factor) return *attention_factor;
        const double m = mscale.value_or(0.0), m_all = mscale_all_dim.value_or(0.0);
        if (m != 0.0 && m_all != 0.0) return get_mscale(factor, m) / get_mscale(factor, m_all);
        return get_mscale(factor);
    }

    /// The extra softmax-scale multiplier DeepSeek-V2/V3-style attention applies on top of RoPE:
    /// `get_mscale(factor, mscale_all_dim)^2` (their `softmax_scale = d^-0.5 * mscale^2`, HF PR
    /// #47435). Not part of attention_factor and not applied by ropekit's tables; an engine
    /// running such a model multiplies its softmax scale by it. 1 without mscale_all_dim.
    ROPEKIT_ALWAYS_INLINE double deepseek_softmax_factor() const {
        const double m = get_mscale(factor, mscale_all_dim.value_or(0.0));
        return m * m;
    }

    /// YaRN's inverse-dimension formula: the (fractional) pair index whose wavelength fits
    /// `rotations` times into the original context, `dim ln(L / (2 pi r)) / (2 ln base)`.
    ROPEKIT_ALWAYS_INLINE static double correction_dim(double rotations, int dim, double base,
                                                       double context) {
        constexpr double pi = 3.141592653589793;
        return (double(dim) * std::log(context / (rotations * 2.0 * pi))) / (2.0 * std::log(base));
    }

    /// The ramp's ends for these parameters (see correction_range_t).
    ROPEKIT_ALWAYS_INLINE correction_range_t correction_range(const rope_params& p) const {
        const double ctx = double(original_max_position);
        double low = correction_dim(beta_fast, p.rotary_dim, p.base, ctx);
        double high = correction_dim(beta_slow, p.rotary_dim, p.base, ctx);
        if (truncate) {
            low = std::floor(low);
            high = std::ceil(high);
        }
        // The clamp is dim - 1 (HF), not dim/2 - 1; only indices < dim/2 are ever used.
        return {std::max(low, 0.0), std::min(high, double(p.rotary_dim - 1))};
    }

    /// The blended frequencies and resolved_attention_factor().
    ROPEKIT_ALWAYS_INLINE rope_frequencies
    frequencies(const rope_params& p, std::optional<std::int64_t> seq_len = {}) const {
        namespace f32 = detail::f32;
        validate(p);
        detail::check_seq_len(seq_len);
        const std::vector<float> pos = detail::hf_pos_freqs(p.base, p.rotary_dim);
        auto [low, high] = correction_range(p);
        if (low == high) high += 0.001;  // HF's guard; ggml uses max(0.001, high - low) instead
        const float low_f = f32::round(low), span_f = f32::round(high - low);
        const float s = f32::round(factor);
        std::vector<float> inv(pos.size());
        for (std::size_t j = 0; j < pos.size(); ++j) {
            const float extrapolated = f32::div(1.0f, pos[j]);
            const float interpolated = f32::div(1.0f, f32::mul(s, pos[j]));
            float ramp = f32::div(f32::sub(float(j), low_f), span_f);
            ramp = std::min(std::max(ramp, 0.0f), 1.0f);
            const float extrapolation_weight = f32::sub(1.0f, ramp);
            inv[j] = f32::add(f32::mul(interpolated, f32::sub(1.0f, extrapolation_weight)),
                              f32::mul(extrapolated, extrapolation_weight));
        }
        return detail::make_rope_frequencies(p, std::move(inv), resolved_attention_factor());
    }
};

/// Llama 3.1 scaling (Meta, 2024): pairs whose wavelength is shorter than
/// `L / high_freq_factor` keep their frequency, pairs longer than `L / low_freq_factor` are
/// divided by `factor`, and the band in between (inclusive at both ends) is blended by
/// `smooth = (L / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)`.
/// Attention factor 1. The wavelength is `2 pi / inv_freq` from the float32 default inv_freq, as
/// HF.
struct llama3_scaling {
    static constexpr std::string_view rope_type = "llama3";  ///< HF's rope_type string
    double factor = 8.0;                        ///< divisor of the low-frequency pairs, >= 1
    double low_freq_factor = 1.0;               ///< > 0
    double high_freq_factor = 4.0;              ///< > low_freq_factor
    std::int64_t original_max_position = 8192;  ///< L

    /// All four keys are required, as in HF.
    ROPEKIT_ALWAYS_INLINE static constexpr auto config_keys() {
        using k = llama3_scaling;
        return std::make_tuple(
            config_key<k, double>{"factor", &k::factor, key_rule::required},
            config_key<k, double>{"low_freq_factor", &k::low_freq_factor, key_rule::required},
            config_key<k, double>{"high_freq_factor", &k::high_freq_factor, key_rule::required},
            config_key<k, std::int64_t>{
                "original_max_position_embeddings", &k::original_max_position,
                key_rule::original_context_required, "original_max_position"});
    }

    /// 1: Llama 3.1 scaling does not scale the logits.
    ROPEKIT_ALWAYS_INLINE double resolved_attention_factor() const noexcept { return 1.0; }

    /// Throws ropekit::error for invalid parameters, factor < 1, a non-positive low_freq_factor,
    /// low_freq_factor > high_freq_factor or L <= 0.
    ROPEKIT_ALWAYS_INLINE void validate(const rope_params& p) const {
        p.validate();
        detail::require_plain_exponent(p, rope_type);
        detail::require_factor_at_least_one(factor, "factor");
        detail::require_finite_positive(low_freq_factor, "low_freq_factor");
        detail::require_positive_f32(low_freq_factor, "low_freq_factor");
        // high first: a high_freq_factor of 0 is high's fault, not "low >= high".
        detail::require_finite_positive(high_freq_factor, "high_freq_factor");
        detail::require_positive_f32(high_freq_factor, "high_freq_factor");
        // Llama 4 Scout ships low_freq_factor == high_freq_factor (1, 1): no blended band, a
        // step between kept and divided pairs. HF's blend would be 0/0 only for a wavelength
        // exactly on the edge; frequencies() rejects that case.
        detail::require(low_freq_factor <= high_freq_factor, "low_freq_factor",
                        "must be <= high_freq_factor", low_freq_factor);
        // The blend divides by the float32 band width: it must not round to 0.
        detail::require(low_freq_factor == high_freq_factor ||
                            static_cast<float>(high_freq_factor - low_freq_factor) > 0.0f,
                        "high_freq_factor",
                        "must equal low_freq_factor or exceed it by more than float32 can resolve",
                        high_freq_factor);
        detail::require_context(original_max_position, "original_max_position");
        // L / low_freq_factor is compared as a float32 wavelength.
        detail::require(
            detail::fits_f32(double(original_max_position) / low_freq_factor), "low_freq_factor",
            "makes original_max_position / low_freq_factor overflow float32", low_freq_factor);
    }

    /// The three-band frequencies.
    ROPEKIT_ALWAYS_INLINE rope_frequencies
    frequencies(const rope_params& p, std::optional<std::int64_t> seq_len = {}) const {
        namespace f32 = detail::f32;
        validate(p);
        detail::check_seq_len(seq_len);
        constexpr double two_pi = 2.0 * 3.141592653589793;
        const double ctx = double(original_max_position);
        // Python floats, compared against float32 tensors: torch rounds them to float32 first.
        const float low_wavelen = f32::round(ctx / low_freq_factor);
        const float high_wavelen = f32::round(ctx / high_freq_factor);
        const float f = f32::round(factor), lf = f32::round(low_freq_factor);
        const float band = f32::round(high_freq_factor - low_freq_factor);
        std::vector<float> inv = detail::hf_default_inv_freq(p.base, p.rotary_dim);
        for (float& v : inv) {
            const float wavelen = f32::rdiv(two_pi, v);
            const float scaled = wavelen > low_wavelen ? f32::div(v, f) : v;
            const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
            if (medium) {
                detail::require(band > 0.0f, "low_freq_factor",
                                "equals high_freq_factor and a pair's wavelength lies exactly on "
                                "the band edge (HF's smooth factor is 0/0 there)",
                                low_freq_factor);
                const float smooth = f32::div(f32::sub(f32::rdiv(ctx, wavelen), lf), band);
                v = f32::add(f32::div(f32::mul(f32::sub(1.0f, smooth), scaled), f),
                             f32::mul(smooth, scaled));
            } else {
                v = scaled;
            }
        }
        return detail::make_rope_frequencies(p, std::move(inv), 1.0);
    }
};

/// LongRoPE (Ding et al. 2024; Phi-3/3.5): per-pair rescale factors found by search,
/// `inv_freq[i] = 1 / (ext[i] * base^(2i/dim))`, with `ext = long_factor` when the sequence is
/// strictly longer than the original context and `short_factor` otherwise (also when seq_len is
/// absent). Attention factor `sqrt(1 + ln(factor) / ln(L))` unless given (1 when factor <= 1).
///
/// `factor` is optional so that "not given" is visible: Phi-3 derives it from the config
/// (`max_position_embeddings / original_max_position_embeddings` = 32, attention factor 1.1902).
/// With neither `factor` nor `attention_factor` set the attention factor is 1, which is right only
/// for a model that was not extended; set one of them (the config reader always does).
///
/// Switching sets changes every key's rotation: HF drops its cache and recomputes; an engine
/// that keeps a rotated KV cache must re-rotate it at the crossing.
struct longrope_scaling {
    static constexpr std::string_view rope_type = "longrope";  ///< HF's rope_type string
    std::vector<double> short_factor{};      ///< rotary_dim/2 factors, used for seq_len <= L
    std::vector<double> long_factor{};       ///< rotary_dim/2 factors, used for seq_len > L
    std::int64_t original_max_position = 0;  ///< L
    /// Context ratio for the default attention factor (Phi-3: max_pos / L); >= 1 when set.
    std::optional<double> factor{};
    std::optional<double> attention_factor{};  ///< explicit final attention factor (wins)

    /// Phi-3's legacy rope_type name.
    static constexpr std::array<std::string_view, 1> legacy_rope_types = {"su"};

    /// The factor lists are required; a missing factor is derived from the context lengths.
    ROPEKIT_ALWAYS_INLINE static constexpr auto config_keys() {
        using k = longrope_scaling;
        using opt = std::optional<double>;
        using list = std::vector<double>;
        return std::make_tuple(
            config_key<k, list>{"short_factor", &k::short_factor, key_rule::required},
            config_key<k, list>{"long_factor", &k::long_factor, key_rule::required},
            config_key<k, std::int64_t>{"original_max_position_embeddings",
                                        &k::original_max_position,
                                        key_rule::original_context,
                                        "original_max_position",
                                        {},
                                        "LongRoPE's original length"},
            config_key<k, opt>{"attention_factor", &k::attention_factor},
            config_key<k, opt>{"factor", &k::factor, key_rule::extension_ratio},
            ignored_key{"short_mscale", "per-set mscale is not part of HF's longrope (ignored)"},
            ignored_key{"long_mscale", "per-set mscale is not part of HF's longrope (ignored)"});
    }

    /// rope-inspect reports which factor set seq_len selects.
    ROPEKIT_ALWAYS_INLINE static constexpr auto derived_values() {
        return std::make_tuple(
            derived_value<longrope_scaling, decltype(&longrope_scaling::uses_long_factor)>{
                "uses_long_factor", &longrope_scaling::uses_long_factor});
    }

    /// A derived factor below 1 means the model was not extended: HF's `factor <= 1` branch,
    /// attention factor 1 (kept if given explicitly).
    ROPEKIT_ALWAYS_INLINE static void not_extended(longrope_scaling& s) {
        if (!s.attention_factor) s.attention_factor = 1.0;
    }

    /// Throws ropekit::error for invalid parameters, factor lists of the wrong length or with
    /// non-positive entries, factor < 1, L <= 0 or a non-positive attention_factor.
    ROPEKIT_ALWAYS_INLINE void validate(const rope_params& p) const {
        p.validate();
        detail::require_plain_exponent(p, rope_type);
        const std::size_t pairs = std::size_t(p.rotary_dim / 2);
        detail::require(short_factor.size() == pairs, "short_factor",
                        "must have rotary_dim/2 entries", short_factor.size());
        detail::require(long_factor.size() == pairs, "long_factor",
                        "must have rotary_dim/2 entries", long_factor.size());
        for (const auto* set : {&short_factor, &long_factor}) {
            const char* field = set == &short_factor ? "short_factor" : "long_factor";
            for (double v : *set) {
                detail::require_finite_positive(v, field);
                detail::require_positive_f32(v, field);  // HF rounds each entry to float32
            }
        }
        detail::require_context(original_max_position, "original_max_position");
        // No silent default: Phi-3 built by hand without its factor (32) would get attention
        // factor 1 instead of 1.19. The config reader always sets one or the other.
        detail::require(factor.has_value() || attention_factor.has_value(), "factor",
                        "is missing (and so is attention_factor; one is required)", "unset");
        if (factor) detail::require_factor_at_least_one(*factor, "factor");
        if (attention_factor) {
            detail::require_finite_positive(*attention_factor, "attention_factor");
            detail::require_positive_f32(*attention_factor, "attention_factor");
        }
    }

    /// True when `seq_len` selects long_factor (strictly above L).
    ROPEKIT_ALWAYS_INLINE bool uses_long_factor(
        std::optional<std::int64_t> seq_len) const noexcept {
        return seq_len && *seq_len > original_max_position;
    }

    /// The attention factor HF returns.
    ROPEKIT_ALWAYS_INLINE double resolved_attention_factor() const {
        if (attention_factor) return *attention_factor;
        // Unset factor counts as 1: no extension, HF's `factor <= 1` branch.
        const double f = factor.value_or(1.0);
        if (f <= 1.0) return 1.0;
        return std::sqrt(1.0 + std::log(f) / std::log(double(original_max_position)));
    }

    /// The frequencies for sequence length seq_len.
    ROPEKIT_ALWAYS_INLINE rope_frequencies
    frequencies(const rope_params& p, std::optional<std::int64_t> seq_len = {}) const {
        namespace f32 = detail::f32;
        validate(p);
        detail::check_seq_len(seq_len);
        const std::vector<double>& ext = uses_long_factor(seq_len) ? long_factor : short_factor;
        std::vector<float> inv = detail::hf_pos_freqs(p.base, p.rotary_dim);
        for (std::size_t i = 0; i < inv.size(); ++i)
            inv[i] = f32::div(1.0f, f32::mul(f32::round(ext[i]), inv[i]));
        return detail::make_rope_frequencies(p, std::move(inv), resolved_attention_factor());
    }
};

/// Proportional RoPE (Gemma 4's full-attention layers, HF `_compute_proportional_rope_parameters`):
/// the exponent runs over the whole head, `inv_freq[i] = 1 / base^(2i / head_dim)`, but only the
/// first `int(partial_rotary_factor * head_dim // 2)` pairs have a frequency; HF pads the rest with
/// zeros and divides every entry by `factor`. ropekit expresses the zero pairs as geometry instead
/// of as frequencies: rotary_dim = 2 * rotated pairs, frequency_dim = head_dim (the exponent's
/// denominator) and, for NeoX, pair_span = head_dim / 2 (HF's `cat(freqs, freqs)` over the whole
/// head pairs channel i with i + head_dim / 2). Build the parameters with
/// rope_params::proportional(); the pass-through channels are then never touched, which is what
/// HF's cos 1 / sin 0 gives. Attention factor 1.
struct proportional_rope {
    static constexpr std::string_view rope_type = "proportional";  ///< HF's rope_type string
    double factor = 1.0;  ///< divides every frequency (HF's `get("factor", 1.0)`)

    /// `factor`, optional.
    ROPEKIT_ALWAYS_INLINE static constexpr auto config_keys() {
        return std::make_tuple(config_key<proportional_rope, double>{
            "factor", &proportional_rope::factor, key_rule::optional});
    }

    /// 1: HF's attention_factor for proportional RoPE.
    ROPEKIT_ALWAYS_INLINE double resolved_attention_factor() const noexcept { return 1.0; }

    /// Throws ropekit::error for invalid parameters or a factor that is not > 0 in float32.
    ROPEKIT_ALWAYS_INLINE void validate(const rope_params& p) const {
        p.validate();
        detail::require_finite_positive(factor, "factor");
        detail::require_positive_f32(factor, "factor");
    }

    /// `1 / base^(2i / exponent_dim())` for the rotary_dim / 2 rotated pairs, then one float32
    /// division by factor (HF's in-place `inv_freq /= factor`, also when factor is 1).
    ROPEKIT_ALWAYS_INLINE rope_frequencies
    frequencies(const rope_params& p, std::optional<std::int64_t> seq_len = {}) const {
        validate(p);
        detail::check_seq_len(seq_len);
        return detail::hf_divided_frequencies(p, factor);
    }
};

/// Any scaling method: the one list of methods. Adding a method is its struct (rope_type,
/// config_keys(), validate(), frequencies(), resolved_attention_factor()), one entry here, and
/// its tests; the rope_type lookup, the config reader, rope-inspect and the error key paths
/// iterate over this list, and kernels never change. The order is not significant.
using rope_scaling =
    std::variant<default_rope, linear_scaling, ntk_scaling, dynamic_ntk_scaling, yarn_scaling,
                 llama3_scaling, longrope_scaling, proportional_rope>;

namespace detail {

/// Whether M lists legacy rope_type names (`static constexpr ... legacy_rope_types`).
template <class M, class = void>
struct has_legacy_rope_types : std::false_type {};
template <class M>
struct has_legacy_rope_types<M, std::void_t<decltype(M::legacy_rope_types)>> : std::true_type {};

/// True when `t` is M's rope_type or one of its legacy names.
template <class M>
constexpr bool names_method(std::string_view t) noexcept {
    if (t == M::rope_type) return true;
    if constexpr (has_legacy_rope_types<M>::value)
        for (std::string_view legacy : M::legacy_rope_types)
            if (t == legacy) return true;
    return false;
}

/// An empty value standing for the type T (`typename decltype(tag)::type` in a generic lambda).
template <class T>
struct type_tag {
    using type = T;  ///< the type
};

/// Calls `f(type_tag<M>{})` for every alternative M of rope_scaling, in order.
template <class F, std::size_t... I>
constexpr void for_each_method_impl(F&& f, std::index_sequence<I...>) {
    (f(type_tag<std::variant_alternative_t<I, rope_scaling>>{}), ...);
}
template <class F>
constexpr void for_each_method(F&& f) {
    for_each_method_impl(f, std::make_index_sequence<std::variant_size_v<rope_scaling>>{});
}

/// Calls `f(key)` for every config_key of method M (not its ignored_keys), in the order
/// M::config_keys() lists them: the one walk the config reader and rope-inspect share.
template <class M, class F>
constexpr void for_each_key_of(F&& f) {
    std::apply(
        [&](const auto&... k) {
            auto one = [&](const auto& key) {
                if constexpr (!std::is_same_v<std::decay_t<decltype(key)>, ignored_key>) f(key);
            };
            (one(k), ...);
        },
        M::config_keys());
}

/// False when two alternatives share a rope_type: the lookup would silently take the first.
template <std::size_t... I>
constexpr bool rope_types_unique(std::index_sequence<I...>) {
    constexpr std::string_view names[] = {
        std::variant_alternative_t<I, rope_scaling>::rope_type...};
    for (std::size_t a = 0; a < sizeof...(I); ++a)
        for (std::size_t b = a + 1; b < sizeof...(I); ++b)
            if (names[a] == names[b]) return false;
    return true;
}
static_assert(rope_types_unique(std::make_index_sequence<std::variant_size_v<rope_scaling>>{}),
              "two rope_scaling alternatives share a rope_type");

}  // namespace detail

ROPEKIT_BEGIN_ISA_NAMESPACE

/// HF's rope_type string of the method ("default", "linear", "ntk", "dynamic", "yarn", "llama3",
/// "longrope", "proportional").
inline std::string_view name(const rope_scaling& scaling) noexcept {
    return std::visit([](const auto& m) { return std::decay_t<decltype(m)>::rope_type; }, scaling);
}

/// A default-constructed method for an HF rope_type string or legacy name (Phi-3's "su" is
/// longrope); nullopt for anything else. Never throws.
inline std::optional<rope_scaling> scaling_for_rope_type(std::string_view rope_type) {
    std::optional<rope_scaling> out;
    detail::for_each_method([&](auto tag) {
        using M = typename decltype(tag)::type;
        if (!out && detail::names_method<M>(rope_type)) out.emplace(M{});
    });
    return out;
}

/// Every rope_type scaling_for_rope_type() accepts, legacy names included, comma-separated
/// ("default, linear, ..., longrope, su"), for messages and usage texts.
inline std::string known_rope_types() {
    std::string out;
    detail::for_each_method([&](auto tag) {
        using M = typename decltype(tag)::type;
        out += (out.empty() ? "" : ", ") + std::string(M::rope_type);
        if constexpr (detail::has_legacy_rope_types<M>::value)
            for (std::string_view legacy : M::legacy_rope_types) out += ", " + std::string(legacy);
    });
    return out;
}

/// Throws ropekit::error unless `scaling` is valid for `params`.
inline void validate(const rope_params& params, const rope_scaling& scaling) {
    std::visit([&](const auto& m) { m.validate(params); }, scaling);
}

/// The method's attention factor in double precision (rope_frequencies stores it as float):
/// YaRN's and LongRoPE's resolved factor, 1 for the others. Apply it once, on the softmax scale:
/// `scale = attention_factor^2 / sqrt(head_dim)` equals HF's cos/sin multiplied by it on q and k.
inline double attention_factor(const rope_scaling& scaling) {
    return std::visit([](const auto& m) { return m.resolved_attention_factor(); }, scaling);
}

/// The frequencies of `scaling` for `params`, at sequence length `seq_len` (only dynamic NTK and
/// LongRoPE look at it). A pure function; throws ropekit::error for invalid input.
inline rope_frequencies make_frequencies(const rope_params& params, const rope_scaling& scaling,
                                         std::optional<std::int64_t> seq_len = {}) {
    return std::visit([&](const auto& m) { return m.frequencies(params, seq_len); }, scaling);
}

ROPEKIT_END_ISA_NAMESPACE
ROPEKIT_END_NAMESPACE
