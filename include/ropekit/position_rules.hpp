// SPDX-License-Identifier: Apache-2.0
/// \file
/// Relative-position rules: training-free long-context methods that change the *relative
/// position* a query-key score is computed at, not the frequencies. ReRoPE and Leaky ReRoPE
/// (J. Su, 2023, https://kexue.fm/archives/9708), Self-Extend (Jin et al. 2024, "LLM Maybe
/// LongLM", arXiv:2401.01325; llama.cpp's "group attention") and StreamingLLM's cache positions
/// (Xiao et al. 2023, "Efficient Streaming Language Models with Attention Sinks",
/// arXiv:2309.17453).
///
/// Every rule is a small value type with the same shape, which the fused attention kernel
/// (position_rule_attention in attention.hpp) and the naive reference rely on:
///
/// - `window`: a pair at distance `d = i - j` (query position i, key position j) is **near**
///   when `d < window` and **far** otherwise. Near pairs are scored as ordinary RoPE,
///   `(R_i q).(R_j k)`.
/// - `far_q_position(i)`, `far_k_position(j)`: far pairs are scored as
///   `(R_{far_q_position(i)} q).(R_{far_k_position(j)} k)`, i.e. at relative position
///   `far_q_position(i) - far_k_position(j)`. Positions may be fractional (Leaky ReRoPE).
/// - `inputs`: whether Q and K reach the kernel unrotated (it rotates them, at both positions)
///   or already rotated at i and j (rules whose far key position is j itself; the kernel only
///   re-rotates q for the far scores).
/// - `far_q`, `far_keys`: the form of the far rotations (far_query_rotation, far_key_rotation),
///   so the kernel computes only what each needs, once per call, per query or per key. These
///   two enums are the kernel's whole vocabulary: a rule whose far positions take one of
///   these forms is its struct and its tests, with no kernel change. The form names the hook
///   the kernel calls: `far_q_index(i)` (integer), `far_q_position(i)` (fixed, fractional),
///   `far_k_index(j)` (integer), `far_k_divisor()` (scaled).
/// - `validate()`: throws ropekit::error naming the field at fault.
/// - optionally `accepts_mask(mask)`: a rule whose meaning fixes the mask (StreamingLLM) refuses
///   any other; position_rule_attention then throws ropekit::error for field `mask`.
/// - optionally `validate_call(bounds, table)`: checks what only a call can tell, the far
///   positions its queries and keys reach (rule_call_bounds), against the cos/sin table the
///   kernel reads (Self-Extend's far rows must be table rows; StreamingLLM's far query rotation
///   must stay where a computed row is exact).
///
/// The rules change no frequency: the rotation tables stay those of the model's own scaling
/// method (any of scaling.hpp), and the attention factor stays in attention_params.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>

#include "error.hpp"
#include "mask.hpp"

ROPEKIT_BEGIN_NAMESPACE

/// How Q and K reach the attention kernel for a rule.
enum class rule_inputs {
    unrotated,  ///< raw projections: the kernel rotates q and k at both positions
    rotated     ///< rotated at their own positions i and j, as every engine does for RoPE
};

/// What the far key rotation is, relative to the near one (R_j).
enum class far_key_rotation {
    identity,  ///< R_0: the key unrotated (ReRoPE)
    same,      ///< R_j: the near rotation itself, only q differs (StreamingLLM)
    integer,   ///< R_m at an integer position m = far_k_index(j), a table row (Self-Extend)
    scaled     ///< R_{j / far_k_divisor()}: a fractional position (Leaky ReRoPE)
};

/// What the far query rotation is. With rotated inputs the kernel turns q, given at R_i, into
/// R_{far_q_index(i)} q by the difference of the two (a conjugate table row when negative).
enum class far_query_rotation {
    fixed,      ///< R_p with p = far_q_position(i) the same for every i: one row per call (ReRoPE)
    integer,    ///< R_m at an integer position m = far_q_index(i), a table row (Self-Extend,
                ///< StreamingLLM)
    fractional  ///< R_x at x = far_q_position(i), computed per query (Leaky ReRoPE)
};

/// The positions one call of a rule reaches, for its `validate_call` hook: query positions in
/// [q_min, q_max], key positions in [k_min, k_max] (the call has queries and keys), and the
/// largest |position| at which a computed cos/sin row is exact (max_accurate_position of the
/// model's frequencies).
struct rule_call_bounds {
    std::int64_t q_min = 0;                  ///< smallest query position
    std::int64_t q_max = 0;                  ///< largest query position
    std::int64_t k_min = 0;                  ///< smallest key position
    std::int64_t k_max = 0;                  ///< largest key position
    std::int64_t max_accurate_position = 0;  ///< see table.hpp max_accurate_position
};

namespace detail {
/// floor(a / b) for b > 0 and any sign of a (C++ division truncates toward zero).
ROPEKIT_ALWAYS_INLINE constexpr std::int64_t floor_div(std::int64_t a, std::int64_t b) noexcept {
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}
}  // namespace detail

/// ReRoPE: relative position `min(i - j, window)` for query i and key j (i >= j). Far pairs:
/// q rotated at `window`, k unrotated.
struct rerope {
    std::int64_t window = 512;  ///< distances >= window are scored at exactly `window`

    static constexpr rule_inputs inputs = rule_inputs::unrotated;             ///< see rule_inputs
    static constexpr far_query_rotation far_q = far_query_rotation::fixed;    ///< R_window
    static constexpr far_key_rotation far_keys = far_key_rotation::identity;  ///< R_0

    /// Throws ropekit::error unless 1 <= window <= 2^62.
    ROPEKIT_ALWAYS_INLINE void validate() const {
        detail::require(window > 0 && window <= attention_position_limit, "window",
                        "must be in [1, 2^62]", window);
    }
    /// q position of a far pair: the window.
    ROPEKIT_ALWAYS_INLINE double far_q_position(std::int64_t) const noexcept {
        return double(window);
    }
    /// k position of a far pair: 0 (unrotated).
    ROPEKIT_ALWAYS_INLINE double far_k_position(std::int64_t) const noexcept { return 0.0; }
    /// The relative position the score of a pair at `distance = i - j` (>= 0) uses.
    ROPEKIT_ALWAYS_INLINE double relative_position(std::int64_t distance) const noexcept {
        return distance < window ? double(distance) : double(window);
    }
};

/// Leaky ReRoPE: relative position `i - j` inside the window, `window + (i - j - window) / k`
/// beyond it (continuous at the window edge; k -> infinity gives ReRoPE, k = 1 plain RoPE, so
/// an engine need not special-case a context within the training length). Far pairs: q at
/// `(i + window (k - 1)) / k`, k at `j / k`.
struct leaky_rerope {
    std::int64_t window = 512;  ///< distances below this are ordinary RoPE
    double k = 16.0;            ///< slope divisor beyond the window, >= 1 (1: plain RoPE)

    static constexpr rule_inputs inputs = rule_inputs::unrotated;  ///< see rule_inputs
    static constexpr far_query_rotation far_q = far_query_rotation::fractional;  ///< see below
    static constexpr far_key_rotation far_keys = far_key_rotation::scaled;       ///< R_{j/k}

    /// Throws ropekit::error unless 1 <= window <= 2^62 and k is >= 1 and finite in float32 (the
    /// kernels' positions j / k are float32 rotations).
    ROPEKIT_ALWAYS_INLINE void validate() const {
        detail::require(window > 0 && window <= attention_position_limit, "window",
                        "must be in [1, 2^62]", window);
        detail::require(detail::fits_f32(k) && k >= 1.0, "k", "must be >= 1 and finite in float32",
                        k);
    }
    /// q position of a far pair: `(i + window (k - 1)) / k`.
    ROPEKIT_ALWAYS_INLINE double far_q_position(std::int64_t i) const noexcept {
        return (double(i) + double(window) * (k - 1.0)) / k;
    }
    /// k position of a far pair: `j / k`.
    ROPEKIT_ALWAYS_INLINE double far_k_position(std::int64_t j) const noexcept {
        return double(j) / k;
    }
    /// The divisor of the far key position (far_key_rotation::scaled): k.
    ROPEKIT_ALWAYS_INLINE double far_k_divisor() const noexcept { return k; }
    /// The relative position the score of a pair at `distance = i - j` (>= 0) uses.
    ROPEKIT_ALWAYS_INLINE double relative_position(std::int64_t distance) const noexcept {
        return distance < window ? double(distance)
                                 : double(window) + double(distance - window) / k;
    }
};

/// Self-Extend (Jin et al. 2024): ordinary RoPE within the neighbour window, grouped positions
/// beyond it. With neighbour window w and group size G, a pair at distance `i - j < w` is
/// scored at `i - j`; a farther one with q at `floor(i / G) + w - floor(w / G)` and k at
/// `floor(j / G)`, i.e. at relative position `floor(i/G) - floor(j/G) + w - floor(w/G)`, which
/// is continuous with the neighbour range up to the flooring (the shift `w - floor(w / G)` is
/// what makes a key just past the window land near distance w). This is the paper's equation
/// and the LongLM reference's decode path; its prefill path computes the shift as `w - w / G`
/// in floating point, which is the same whenever G divides w (every published setting: w 512
/// or 1024, G 4 to 16). Largest relative position seen at context n: about `n / G + w`.
struct self_extend {
    std::int64_t window = 1024;  ///< neighbour window w: distances below it are ordinary RoPE
    std::int64_t group = 8;      ///< group size G >= 1 (1: plain RoPE)

    static constexpr rule_inputs inputs = rule_inputs::unrotated;             ///< see rule_inputs
    static constexpr far_query_rotation far_q = far_query_rotation::integer;  ///< a table row
    static constexpr far_key_rotation far_keys = far_key_rotation::integer;   ///< R_{floor(j/G)}

    /// Throws ropekit::error unless 1 <= window <= 2^62 and 1 <= group <= 2^62.
    ROPEKIT_ALWAYS_INLINE void validate() const {
        detail::require(window > 0 && window <= attention_position_limit, "window",
                        "must be in [1, 2^62]", window);
        detail::require(group > 0 && group <= attention_position_limit, "group",
                        "must be in [1, 2^62]", group);
    }
    /// q position of a far pair: `floor(i / G) + w - floor(w / G)`.
    ROPEKIT_ALWAYS_INLINE double far_q_position(std::int64_t i) const noexcept {
        return double(far_q_index(i));
    }
    /// k position of a far pair: `floor(j / G)`.
    ROPEKIT_ALWAYS_INLINE double far_k_position(std::int64_t j) const noexcept {
        return double(far_k_index(j));
    }
    /// far_q_position as an integer (a table row).
    ROPEKIT_ALWAYS_INLINE std::int64_t far_q_index(std::int64_t i) const noexcept {
        return detail::floor_div(i, group) + window - window / group;
    }
    /// far_k_position as an integer (a table row).
    ROPEKIT_ALWAYS_INLINE std::int64_t far_k_index(std::int64_t j) const noexcept {
        return detail::floor_div(j, group);
    }
    /// The far rows a call reaches must be rows of `table`: far pairs exist only for
    /// i - j >= w, i.e. queries i >= k_min + w and keys j <= q_max - w, and both row maps are
    /// monotone, so the ends of those ranges bound the rows.
    template <class Table>
    void validate_call(const rule_call_bounds& b, const Table& table) const {
        if (b.q_max - b.k_min < window) return;  // no far pair
        const std::int64_t i0 = std::max(b.q_min, b.k_min + window);
        const std::int64_t j1 = std::min(b.k_max, b.q_max - window);
        for (std::int64_t row : {far_q_index(i0), far_q_index(b.q_max)})
            detail::require(table.contains(row), "table",
                            "must cover Self-Extend's far query rows floor(i/G) + w - floor(w/G)",
                            row);
        for (std::int64_t row : {far_k_index(b.k_min), far_k_index(j1)})
            detail::require(table.contains(row), "table",
                            "must cover Self-Extend's far key rows floor(j/G)", row);
    }
};

/// StreamingLLM's cache positions (Xiao et al. 2023) as a rule over *stream* positions. The
/// cache holds `n_sink` attention sinks (the first tokens of the stream) and the `window` most
/// recent tokens, the query included, and StreamingLLM rotates by the position *in the cache*:
/// sinks at 0 .. n_sink - 1, the window right after them, the query last, at
/// `n_sink + window - 1`. So a query at stream position i sees a window key j at distance
/// `i - j` (unchanged) and sink s at distance `min(i, n_sink + window - 1) - s`: far pairs
/// (`i - j >= window`, which under sink_window_mask are the sinks) have q at
/// `min(i, n_sink + window - 1)` and k at j itself. Q and K arrive rotated at their stream
/// positions, as any engine rotates them, and the cache can keep its keys rotated once.
///
/// Use it with `mask()` (sink_window_mask{n_sink, window}, key rows 0 .. n_sink - 1 being the
/// sinks) and stream positions: one prefill longer than the cache then gives StreamingLLM's
/// exact result, the way the paper evaluates it, and decode is the same rule with one query.
/// Distinct from gpt-oss's learned sink logits (attention_params::sink_logits), which are a
/// per-head logit with no key and no position.
struct streaming_llm {
    std::int64_t n_sink = 4;     ///< sink tokens kept at the start of the cache (>= 0)
    std::int64_t window = 1020;  ///< recent tokens kept, the query included, in [1, 2^62]

    static constexpr rule_inputs inputs = rule_inputs::rotated;               ///< see rule_inputs
    static constexpr far_query_rotation far_q = far_query_rotation::integer;  ///< min(i, c)
    static constexpr far_key_rotation far_keys = far_key_rotation::same;      ///< R_j

    /// Throws ropekit::error unless 0 <= n_sink, 1 <= window and n_sink + window <= 2^62.
    ROPEKIT_ALWAYS_INLINE void validate() const {
        detail::require(n_sink >= 0 && n_sink <= attention_position_limit, "n_sink",
                        "must be in [0, 2^62]", n_sink);
        detail::require(window >= 1 && window <= attention_position_limit - n_sink, "window",
                        "must be >= 1 with n_sink + window <= 2^62", window);
    }
    /// The cache size, `n_sink + window`; the query sits at cache position size() - 1.
    ROPEKIT_ALWAYS_INLINE std::int64_t cache_size() const noexcept { return n_sink + window; }
    /// q position of a far pair: `min(i, n_sink + window - 1)`.
    ROPEKIT_ALWAYS_INLINE double far_q_position(std::int64_t i) const noexcept {
        return double(far_q_index(i));
    }
    /// far_q_position as an integer.
    ROPEKIT_ALWAYS_INLINE std::int64_t far_q_index(std::int64_t i) const noexcept {
        return std::min(i, cache_size() - 1);
    }
    /// The far q is rotated back by i - (n_sink + window - 1); a row the table lacks is
    /// computed, exactly only up to max_accurate_position (2^29): further back the scores
    /// drift (1e-5 at 2^40) and then are garbage, with no error.
    template <class Table>
    void validate_call(const rule_call_bounds& b, const Table&) const {
        const std::int64_t back = b.q_max - far_q_index(b.q_max);
        detail::require(back <= b.max_accurate_position, "positions",
                        "must keep i - (n_sink + window - 1) below 2^29 with streaming_llm (the "
                        "far query's rotation is exact only there)",
                        b.q_max);
    }
    /// k position of a far pair: j (the near rotation).
    ROPEKIT_ALWAYS_INLINE double far_k_position(std::int64_t j) const noexcept { return double(j); }
    /// The mask the rule is meant for: sinks by key row, the window by position.
    ROPEKIT_ALWAYS_INLINE sink_window_mask mask() const noexcept {
        return sink_window_mask{n_sink, window};
    }
    /// Only mask() itself: the far q position assumes that every far key is a sink and that
    /// the window holds `window` keys, so any other mask gives plausible, wrong scores (causal:
    /// +0.14 nats at 256 tokens, +3.97 at 1024 on a real model).
    template <class Mask>
    ROPEKIT_ALWAYS_INLINE bool accepts_mask(const Mask& m) const noexcept {
        if constexpr (std::is_same_v<Mask, sink_window_mask>)
            return m.n_sink == n_sink && m.window == window;
        else
            return false;
    }
};

namespace detail {
template <class Rule, class Mask, class = void>
struct rule_has_mask_hook : std::false_type {};
template <class Rule, class Mask>
struct rule_has_mask_hook<
    Rule, Mask,
    std::void_t<decltype(std::declval<const Rule&>().accepts_mask(std::declval<const Mask&>()))>>
    : std::true_type {};

template <class Rule, class Table, class = void>
struct rule_has_call_hook : std::false_type {};
template <class Rule, class Table>
struct rule_has_call_hook<
    Rule, Table,
    std::void_t<decltype(std::declval<const Rule&>().validate_call(
        std::declval<const rule_call_bounds&>(), std::declval<const Table&>()))>> : std::true_type {
};

/// Runs the rule's `validate_call` hook when it has one (the others need no per-call check).
template <class Rule, class Table>
void validate_rule_call(const Rule& rule, const rule_call_bounds& bounds, const Table& table) {
    if constexpr (rule_has_call_hook<Rule, Table>::value) rule.validate_call(bounds, table);
}

template <class Rule, class = void>
struct is_position_rule : std::false_type {};
/// A position rule has the shape the file comment lists: a window, the two rotation forms,
/// the far positions and validate().
template <class Rule>
struct is_position_rule<
    Rule, std::void_t<decltype(std::declval<const Rule&>().window),
                      decltype(std::declval<const Rule&>().far_q_position(std::int64_t())),
                      decltype(std::declval<const Rule&>().far_k_position(std::int64_t())),
                      decltype(std::declval<const Rule&>().validate()), decltype(Rule::inputs),
                      decltype(Rule::far_q), decltype(Rule::far_keys)>>
    : std::bool_constant<
          std::is_same_v<std::remove_cv_t<decltype(Rule::inputs)>, rule_inputs> &&
          std::is_same_v<std::remove_cv_t<decltype(Rule::far_q)>, far_query_rotation> &&
          std::is_same_v<std::remove_cv_t<decltype(Rule::far_keys)>, far_key_rotation>> {};

/// Whether `rule` may run under `mask`: a rule whose meaning fixes its mask says so with
/// `bool accepts_mask(const Mask&)` (StreamingLLM); the others take any mask.
template <class Rule, class Mask>
ROPEKIT_ALWAYS_INLINE bool rule_accepts_mask(const Rule& rule, const Mask& mask) noexcept {
    if constexpr (rule_has_mask_hook<Rule, Mask>::value)
        return rule.accepts_mask(mask);
    else
        return true;
}
}  // namespace detail

/// Whether Rule is a relative-position rule the fused kernel can run (the shape the file
/// comment lists; detail::is_position_rule checks it member by member).
template <class Rule>
inline constexpr bool is_position_rule_v = detail::is_position_rule<Rule>::value;

/// The relative position rule `r` scores query position i against key position j at:
/// `i - j` when near (`i - j < r.window`), `far_q_position(i) - far_k_position(j)` otherwise.
template <class Rule>
ROPEKIT_ALWAYS_INLINE double rule_relative_position(const Rule& r, std::int64_t i,
                                                    std::int64_t j) noexcept {
    return i - j < r.window ? double(i - j) : r.far_q_position(i) - r.far_k_position(j);
}

ROPEKIT_END_NAMESPACE
