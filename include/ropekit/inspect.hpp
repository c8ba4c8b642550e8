// SPDX-License-Identifier: Apache-2.0
/// \file
/// What a scaling method holds, read from the method's own description (its `config_keys()`
/// and `derived_values()`, scaling.hpp): its parameters under the names validate() uses, the
/// values derived from them at a sequence length, and the original context it refers to.
/// The rope-inspect example (examples/rope_inspect/) prints its reports from these; they need
/// no JSON library.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>

#include "abi.hpp"
#include "scaling.hpp"

ROPEKIT_BEGIN_NAMESPACE

namespace detail {

/// Whether M reports derived values (`static constexpr auto derived_values()`).
template <class M, class = void>
struct has_derived_values : std::false_type {};
template <class M>
struct has_derived_values<M, std::void_t<decltype(M::derived_values())>> : std::true_type {};

}  // namespace detail

ROPEKIT_BEGIN_ISA_NAMESPACE

/// Calls `f(name, value)` for every parameter of the method `scaling` holds: first one call per
/// config key (config_keys(), not its ignored_keys, in that order) with the member it sets,
/// named as validate() names it (config_key::member_name(): `original_max_position` for the key
/// `original_max_position_embeddings`); then one call per derived value (derived_values(), e.g.
/// LongRoPE's `uses_long_factor`) with its value at `seq_len`.
/// \param scaling the method
/// \param seq_len the sequence length the derived values are computed for (none: unknown)
/// \param f called as `f(std::string_view name, const auto& value)`; `value` has the member's
///          type (double, std::int64_t, bool, std::optional<double> (empty: not given and not
///          derivable) or std::vector<double>), or the derived value's (bool or double)
template <class F>
void for_each_parameter(const rope_scaling& scaling, std::optional<std::int64_t> seq_len, F&& f) {
    std::visit(
        [&](const auto& m) {
            using M = std::decay_t<decltype(m)>;
            detail::for_each_key_of<M>(
                [&](const auto& key) { f(std::string_view(key.member_name()), m.*key.member); });
            if constexpr (detail::has_derived_values<M>::value)
                std::apply(
                    [&](const auto&... v) {
                        (f(std::string_view(v.name), (m.*v.function)(seq_len)), ...);
                    },
                    M::derived_values());
        },
        scaling);
}

/// The original (pre-training) context the method refers to, if it has one: the member set by
/// its original-context key, `original_max_position` (YaRN, Llama 3, LongRoPE; dynamic NTK's
/// L0, read from `max_position_embeddings`); nullopt for methods without one (default, linear,
/// NTK, proportional).
/// \param scaling the method
inline std::optional<std::int64_t> original_context(const rope_scaling& scaling) {
    std::optional<std::int64_t> out;
    std::visit(
        [&](const auto& m) {
            using M = std::decay_t<decltype(m)>;
            detail::for_each_key_of<M>([&](const auto& key) {
                if (key.rule == key_rule::original_context ||
                    key.rule == key_rule::original_context_required ||
                    key.rule == key_rule::max_position) {
                    if constexpr (std::is_same_v<std::decay_t<decltype(m.*key.member)>,
                                                 std::int64_t>)
                        out = m.*key.member;
                }
            });
        },
        scaling);
    return out;
}

ROPEKIT_END_ISA_NAMESPACE
ROPEKIT_END_NAMESPACE
