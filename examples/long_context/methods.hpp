// SPDX-License-Identifier: Apache-2.0
/// \file
/// The ten long-context methods the example evaluates, as small value descriptions with their
/// parameters at an evaluation length L (training length L0, s = L / L0), and the attention
/// step each one gives the model's forward pass, entirely through ropekit:
///
/// - none: default_rope, causal_mask (plain RoPE)
/// - linear: linear_scaling (PI), factor s
/// - ntk: ntk_scaling, alpha s
/// - dynamic: dynamic_ntk_scaling with seq_len = L, factor 2, L0
/// - yarn: yarn_scaling, factor s, L0, beta_fast 32 / beta_slow 1 (attention factor on the scale)
/// - rerope: position rule rerope, window 64
/// - leaky_rerope: position rule leaky_rerope, window 64, k = max(1, (L - 65) / 63)
/// - self_extend: position rule self_extend, window 64, group 1 (L = L0) or L / 64
/// - streaming_llm: position rule streaming_llm with its sink_window_mask, 4 sinks + window 124
/// - window: sliding_window_mask, 128 keys
///
/// The frequency methods rotate q and k in place (apply_rope_qk from a cos/sin table) and run
/// attention(); the relative-position rules take q and k unrotated (ReRoPE, Leaky ReRoPE,
/// Self-Extend) or rotated (StreamingLLM) and run position_rule_attention() with the plain
/// base frequencies.
#pragma once

#include <ropekit/attention.hpp>
#include <ropekit/mask.hpp>
#include <ropekit/position_rules.hpp>
#include <ropekit/rope.hpp>
#include <ropekit/scaling.hpp>
#include <ropekit/table.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace long_context {

/// The evaluated methods, in the table's order.
enum class method_id {
    none,
    linear,
    ntk,
    dynamic,
    yarn,
    rerope,
    leaky_rerope,
    self_extend,
    streaming_llm,
    window
};

/// Every method, in the table's order.
inline constexpr std::array<method_id, 10> all_methods = {
    method_id::none,          method_id::linear, method_id::ntk,          method_id::dynamic,
    method_id::yarn,          method_id::rerope, method_id::leaky_rerope, method_id::self_extend,
    method_id::streaming_llm, method_id::window};

/// The method's key (reference.json's spelling).
inline const char* method_name(method_id m) {
    switch (m) {
        case method_id::none:
            return "none";
        case method_id::linear:
            return "linear";
        case method_id::ntk:
            return "ntk";
        case method_id::dynamic:
            return "dynamic";
        case method_id::yarn:
            return "yarn";
        case method_id::rerope:
            return "rerope";
        case method_id::leaky_rerope:
            return "leaky_rerope";
        case method_id::self_extend:
            return "self_extend";
        case method_id::streaming_llm:
            return "streaming_llm";
        case method_id::window:
            return "window";
    }
    return "?";
}

/// The method named `name`, or nullopt.
inline std::optional<method_id> method_from_name(std::string_view name) {
    for (method_id m : all_methods)
        if (name == method_name(m)) return m;
    return std::nullopt;
}

/// Fixed settings shared by every length (the spec's numbers).
struct method_settings {
    std::int64_t train_length = 128;      ///< L0
    double dynamic_factor = 2.0;          ///< dynamic NTK's config factor
    std::int64_t rerope_window = 64;      ///< ReRoPE / Leaky ReRoPE / Self-Extend window w
    std::int64_t n_sink = 4;              ///< StreamingLLM sinks
    std::int64_t streaming_window = 124;  ///< StreamingLLM recent window (cache n_sink + this)
    std::int64_t window = 128;            ///< window-only attention: keys visible per query
};

/// Window-only attention, no sinks: query i sees keys with i - j < keys, at distance i - j.
struct window_only {
    std::int64_t keys = 128;  ///< visible keys per query, the query included
};

/// What sets the positions: a frequency scaling with plain causal attention (std::monostate),
/// or one of the relative-position rules, or window-only attention.
using position_method = std::variant<std::monostate, ropekit::rerope, ropekit::leaky_rerope,
                                     ropekit::self_extend, ropekit::streaming_llm, window_only>;

/// One method at one evaluation length: a value description (no tables yet).
struct method_spec {
    method_id id = method_id::none;
    std::int64_t length = 0;                                  ///< L, the window length evaluated
    ropekit::rope_scaling scaling = ropekit::default_rope{};  ///< the frequencies' method
    std::optional<std::int64_t> seq_len;  ///< dynamic NTK: the whole window's length
    position_method rule;                 ///< rule / mask beyond plain causal

    /// One line with the parameters ("yarn factor 4, L0 128, beta 32/1, attention factor ...").
    std::string describe() const {
        char buf[160];
        const auto& s = scaling;
        switch (id) {
            case method_id::none:
                return "plain RoPE";
            case method_id::linear:
                std::snprintf(buf, sizeof buf, "linear PI, factor %g",
                              std::get<ropekit::linear_scaling>(s).factor);
                return buf;
            case method_id::ntk:
                std::snprintf(buf, sizeof buf, "NTK-aware, alpha %g",
                              std::get<ropekit::ntk_scaling>(s).alpha);
                return buf;
            case method_id::dynamic:
                std::snprintf(buf, sizeof buf, "dynamic NTK, factor %g, seq_len %lld",
                              std::get<ropekit::dynamic_ntk_scaling>(s).factor,
                              static_cast<long long>(seq_len.value_or(0)));
                return buf;
            case method_id::yarn: {
                const auto& y = std::get<ropekit::yarn_scaling>(s);
                std::snprintf(buf, sizeof buf,
                              "YaRN, factor %g, L0 %lld, beta %g/%g, attention factor %.6f",
                              y.factor, static_cast<long long>(y.original_max_position),
                              y.beta_fast, y.beta_slow, y.resolved_attention_factor());
                return buf;
            }
            case method_id::rerope:
                std::snprintf(buf, sizeof buf, "ReRoPE, window %lld",
                              static_cast<long long>(std::get<ropekit::rerope>(rule).window));
                return buf;
            case method_id::leaky_rerope: {
                const auto& r = std::get<ropekit::leaky_rerope>(rule);
                std::snprintf(buf, sizeof buf, "Leaky ReRoPE, window %lld, k %.6g",
                              static_cast<long long>(r.window), r.k);
                return buf;
            }
            case method_id::self_extend: {
                const auto& r = std::get<ropekit::self_extend>(rule);
                std::snprintf(buf, sizeof buf, "Self-Extend, window %lld, group %lld",
                              static_cast<long long>(r.window), static_cast<long long>(r.group));
                return buf;
            }
            case method_id::streaming_llm: {
                const auto& r = std::get<ropekit::streaming_llm>(rule);
                std::snprintf(buf, sizeof buf, "StreamingLLM, %lld sinks + window %lld",
                              static_cast<long long>(r.n_sink), static_cast<long long>(r.window));
                return buf;
            }
            case method_id::window:
                std::snprintf(buf, sizeof buf, "window only, %lld keys, no sinks",
                              static_cast<long long>(std::get<window_only>(rule).keys));
                return buf;
        }
        return "?";
    }
};

/// Method `id` at evaluation length `length` (the spec's per-length parameters). Throws
/// ropekit::error (field `length`) for a length < 1.
inline method_spec make_method(method_id id, std::int64_t length, const method_settings& set = {}) {
    ropekit::detail::require(length >= 1, "length", "must be >= 1", length);
    method_spec m;
    m.id = id;
    m.length = length;
    const std::int64_t L0 = set.train_length;
    const double s = double(length) / double(L0);
    switch (id) {
        case method_id::none:
            break;
        case method_id::linear:
            m.scaling = ropekit::linear_scaling{std::max(1.0, s)};
            break;
        case method_id::ntk:
            m.scaling = ropekit::ntk_scaling{std::max(1.0, s)};
            break;
        case method_id::dynamic: {
            ropekit::dynamic_ntk_scaling d;
            d.factor = set.dynamic_factor;
            d.original_max_position = L0;
            m.scaling = d;
            m.seq_len = length;  // HF's forward over the window: the base for seq_len = L
            break;
        }
        case method_id::yarn: {
            ropekit::yarn_scaling y;
            y.factor = std::max(1.0, s);
            y.original_max_position = L0;
            y.beta_fast = 32.0;
            y.beta_slow = 1.0;
            y.truncate = true;  // attention factor: 0.1 ln(s) + 1 (resolved_attention_factor)
            m.scaling = y;
            break;
        }
        case method_id::rerope:
            m.rule = ropekit::rerope{set.rerope_window};
            break;
        case method_id::leaky_rerope: {
            // k such that the largest relative position, at distance L - 1, is L0 - 1.
            const double w = double(set.rerope_window);
            const double k = std::max(1.0, (double(length) - 1.0 - w) / (double(L0) - 1.0 - w));
            m.rule = ropekit::leaky_rerope{set.rerope_window, k};
            break;
        }
        case method_id::self_extend: {
            // Group 1 (plain) up to L0, then L / w: {256: 4, 512: 8, 1024: 16, 2048: 32}.
            const std::int64_t g =
                length <= L0 ? 1 : std::max<std::int64_t>(1, length / set.rerope_window);
            m.rule = ropekit::self_extend{set.rerope_window, g};
            break;
        }
        case method_id::streaming_llm:
            m.rule = ropekit::streaming_llm{set.n_sink, set.streaming_window};
            break;
        case method_id::window:
            m.rule = window_only{set.window};
            break;
    }
    return m;
}

/// A method at one length, ready for a model: its frequencies, a cos/sin table covering the
/// window's positions, the softmax scale (with YaRN's attention factor squared, as HF's cos
/// and sin scaled by it on q and k) and the attention step forward() plugs in per layer.
/// Immutable after construction; shared by every thread.
class method_attention {
  public:
    /// Builds the frequencies of `spec` for `rope` and a table for positions [0, spec.length).
    /// Throws ropekit::error for parameters ropekit rejects.
    method_attention(const method_spec& spec, const ropekit::rope_params& rope)
        : spec_(spec),
          freqs_(ropekit::make_frequencies(rope, spec.scaling, spec.seq_len)),
          table_(ropekit::cos_sin_table::for_range(freqs_, 0, spec.length)),
          params_(ropekit::attention_params::for_model(freqs_)) {}

    /// The description this was built from.
    const method_spec& spec() const noexcept { return spec_; }
    /// The frequencies (scaled for the frequency methods, plain for the rules).
    const ropekit::rope_frequencies& frequencies() const noexcept { return freqs_; }
    /// The softmax scale and attention factor.
    const ropekit::attention_params& params() const noexcept { return params_; }

    /// The attention step of forward(): q/k/v are the packed unrotated rows of `n` tokens at
    /// positions 0 .. n - 1 (n <= length); q and k may be rotated in place; writes the packed
    /// [n][hq * head_dim] output.
    void operator()(int /*layer*/, const ropekit::qkv_layout& layout, float* qkv, std::int64_t n,
                    float* out, ropekit::attention_workspace& ws) const {
        ropekit::detail::require(n >= 0 && n <= spec_.length, "tokens",
                                 "must be in [0, the method's length]", n);
        const float* cq = qkv;
        const auto q = layout.q(cq, n), k = layout.k(cq, n), v = layout.v(cq, n);
        const auto o = ropekit::packed_view(out, n, layout.q_heads, layout.head_dim);
        const ropekit::causal_mask causal;
        std::visit(
            [&](const auto& rule) {
                using R = std::decay_t<decltype(rule)>;
                if constexpr (std::is_same_v<R, std::monostate>) {
                    rotate(layout, qkv, n);
                    ropekit::attention(q, k, v, o, causal, params_, ws);
                } else if constexpr (std::is_same_v<R, window_only>) {
                    rotate(layout, qkv, n);
                    ropekit::attention(q, k, v, o, ropekit::sliding_window_mask{rule.keys}, params_,
                                       ws);
                } else if constexpr (std::is_same_v<R, ropekit::streaming_llm>) {
                    // Rotated at their own positions; the sinks are re-scored at their cache
                    // distance min(i, cache - 1) - j inside the kernel.
                    rotate(layout, qkv, n);
                    ropekit::position_rule_attention(q, k, v, o, rule.mask(), params_, rule, freqs_,
                                                     table_, ws);
                } else {
                    // ReRoPE, Leaky ReRoPE, Self-Extend: q and k unrotated.
                    ropekit::position_rule_attention(q, k, v, o, causal, params_, rule, freqs_,
                                                     table_, ws);
                }
            },
            spec_.rule);
    }

  private:
    void rotate(const ropekit::qkv_layout& layout, float* qkv, std::int64_t n) const {
        ropekit::apply_rope_qk(table_, layout.q(qkv, n), layout.k(qkv, n),
                               ropekit::positions::contiguous(0), 0, n);
    }

    method_spec spec_;
    ropekit::rope_frequencies freqs_;
    ropekit::cos_sin_table table_;
    ropekit::attention_params params_;
};

}  // namespace long_context
