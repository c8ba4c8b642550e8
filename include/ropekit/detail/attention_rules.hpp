// SPDX-License-Identifier: Apache-2.0
/// \file
/// The rule-specific part of the blocked attention kernel (attention_kernel.hpp): how each
/// relative-position rule of position_rules.hpp turns into at most two q rotations and two k
/// rotations. The kernel asks the rule, per tile, whether it needs the near product, the far
/// one or both; this header answers "which cos|sin row" for each operand, so the kernel itself
/// has no per-rule branches beyond the far key kind.
///
/// Per rule (i: query position, j: key position):
///
/// | rule          | inputs    | near q | near k | far q                          | far k         |
/// |---------------|-----------|--------|--------|--------------------------------|---------------|
/// | rerope        | unrotated | R_i    | R_j    | R_w (one row per call)         | identity      |
/// | leaky_rerope  | unrotated | R_i    | R_j    | R_{(i + w(k-1))/k} (accurate)  | R_{j/k}       |
/// | self_extend   | unrotated | R_i    | R_j    | table row floor(i/G) + w - w/G | row floor(j/G)|
/// | streaming_llm | rotated   | given  | given  | given q times R_{min(i,c) - i} | given k       |
///
/// StreamingLLM's far q rotation is by a non-positive delta, the conjugate (sin negated) of the
/// table row at `i - min(i, c)`; rows outside the table are computed accurately instead, so a
/// table need not cover them. Self-Extend's far rows fall back the same way in the kernel (the
/// front door still requires the table to cover them, as it does every other position).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "../config.hpp"
#include "../mask.hpp"
#include "../position_rules.hpp"
#include "../table.hpp"
#include "rope_kernels.hpp"

ROPEKIT_BEGIN_NAMESPACE
namespace detail::attn {

/// No rotation inside the kernel (Q and K arrive rotated, or the model has no RoPE).
struct no_rotation {};

/// A relative-position rule fused into the kernel, with the model's frequencies and a range
/// cos/sin table of them (engines keep one per model).
template <class Rule>
struct rule_rotation {
    using rule_type = Rule;  ///< rerope, leaky_rerope, self_extend or streaming_llm
    Rule rule;
    const rope_frequencies* freqs;
    const cos_sin_table* table;
};

/// The 0.2 name of rule_rotation (ReRoPE and Leaky ReRoPE only then).
template <class Rule>
using rerope_rotation = rule_rotation<Rule>;

/// Whether Rule is one of the four rules the kernel knows.
template <class Rule>
inline constexpr bool is_position_rule_v =
    std::is_same_v<Rule, rerope> || std::is_same_v<Rule, leaky_rerope> ||
    std::is_same_v<Rule, self_extend> || std::is_same_v<Rule, streaming_llm>;

template <class Rule>
inline constexpr bool is_leaky_v = std::is_same_v<Rule, leaky_rerope>;

/// What the kernel needs to know about its position policy at compile time.
template <class Pos>
struct pos_traits {
    static constexpr bool rule = false;           ///< a rule: two products per tile at most
    static constexpr bool rotate_inputs = false;  ///< the kernel rotates q and k at i and j
    static constexpr far_key_rotation far_keys = far_key_rotation::same;
};
template <class Rule>
struct pos_traits<rule_rotation<Rule>> {
    static_assert(is_position_rule_v<Rule>,
                  "Rule is ropekit::rerope, leaky_rerope, self_extend or streaming_llm");
    static constexpr bool rule = true;
    static constexpr bool rotate_inputs = Rule::inputs == rule_inputs::unrotated;
    static constexpr far_key_rotation far_keys = Rule::far_keys;
};

/// cos|sin of `position * inv_freq` for every pair, accurate (see detail::accurate_cos_sin).
template <class Arch>
inline void accurate_row(double position, const float* inv_freq, int pairs, float* cs) noexcept {
    for (int i = 0; i < pairs; ++i) accurate_cos_sin(position, inv_freq[i], cs[i], cs[pairs + i]);
}

/// The table row of `position` (which the caller checked is in the table).
template <class Arch>
ROPEKIT_ALWAYS_INLINE const float* table_row_at(const cos_sin_table& t,
                                                std::int64_t position) noexcept {
    return t.data() + (position - t.first_position()) * t.row_stride();
}

/// cos|sin at an integer `position`: the table row when the table has it, else computed
/// accurately into `tmp` (the kernel never reads outside the table).
template <class Arch>
ROPEKIT_ALWAYS_INLINE const float* row_or_accurate(const cos_sin_table& t,
                                                   const rope_frequencies& f, std::int64_t position,
                                                   float* tmp) noexcept {
    if (t.contains(position)) return table_row_at<Arch>(t, position);
    accurate_row<Arch>(double(position), f.inv_freq.data(), f.pairs(), tmp);
    return tmp;
}

/// The cos|sin row the far q of query position i is rotated by, or null for no rotation (the
/// far q equals the near one: StreamingLLM inside the cache). `tmp` holds a computed row
/// (2 * pairs floats). ReRoPE's constant row is the kernel's (prepared once per call), so it
/// is passed in as `cap`.
template <class Arch, class Rule>
ROPEKIT_ALWAYS_INLINE const float* far_q_row(const rule_rotation<Rule>& rot, std::int64_t i,
                                             const float* cap, float* tmp) noexcept {
    const rope_frequencies& f = *rot.freqs;
    if constexpr (std::is_same_v<Rule, rerope>) {
        (void)i, (void)tmp;
        return cap;
    } else if constexpr (std::is_same_v<Rule, leaky_rerope>) {
        (void)cap;
        accurate_row<Arch>(rot.rule.far_q_position(i), f.inv_freq.data(), f.pairs(), tmp);
        return tmp;
    } else if constexpr (std::is_same_v<Rule, self_extend>) {
        (void)cap;
        return row_or_accurate<Arch>(*rot.table, f, rot.rule.far_q_index(i), tmp);
    } else {
        // StreamingLLM: q arrives rotated at i; the far score wants it at min(i, c), so rotate
        // by the delta min(i, c) - i <= 0: the conjugate of the row at i - min(i, c).
        (void)cap;
        const std::int64_t back = i - std::min(i, rot.rule.cache_size() - 1);
        if (back == 0) return nullptr;
        const int pairs = f.pairs();
        if (rot.table->contains(back)) {
            const float* row = table_row_at<Arch>(*rot.table, back);
            for (int p = 0; p < pairs; ++p) {
                tmp[p] = row[p];
                tmp[pairs + p] = -row[pairs + p];
            }
        } else {
            accurate_row<Arch>(-double(back), f.inv_freq.data(), pairs, tmp);
        }
        return tmp;
    }
}

/// Self-Extend's far key row of key position j (an integer table row, or computed into tmp).
template <class Arch>
ROPEKIT_ALWAYS_INLINE const float* far_k_row(const rule_rotation<self_extend>& rot, std::int64_t j,
                                             float* tmp) noexcept {
    return row_or_accurate<Arch>(*rot.table, *rot.freqs, rot.rule.far_k_index(j), tmp);
}

/// Whether the mask hides every far pair of a tile (then the kernel skips the far product on
/// it: its far pairs get -inf from the per-element mask, which such a tile always applies,
/// because a mask never calls a tile with hidden pairs `all`). False unless known:
template <class Arch, class Rule, class Mask>
ROPEKIT_ALWAYS_INLINE bool far_pairs_hidden(const Rule&, const Mask&,
                                            const block_bounds&) noexcept {
    return false;
}
/// a sliding window no wider than the rule's window hides every far pair (i - j >= window);
template <class Arch, class Rule>
ROPEKIT_ALWAYS_INLINE bool far_pairs_hidden(const Rule& r, const sliding_window_mask& m,
                                            const block_bounds&) noexcept {
    return m.window <= r.window;
}
/// sinks + a window no wider than the rule's: far pairs are visible only for the sink rows, so
/// a tile past them has none. This is what keeps StreamingLLM at the plain kernel's cost: the
/// band tiles at the window edge compute one product, and only sink tiles the far one.
template <class Arch, class Rule>
ROPEKIT_ALWAYS_INLINE bool far_pairs_hidden(const Rule& r, const sink_window_mask& m,
                                            const block_bounds& b) noexcept {
    return m.window <= r.window && b.k_index_min >= m.n_sink;
}

}  // namespace detail::attn
ROPEKIT_END_NAMESPACE
