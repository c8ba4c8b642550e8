// SPDX-License-Identifier: Apache-2.0
/// \file
/// How rotation pairs sit inside a head: NeoX (rotate-half) or GPT-J (interleaved).
#pragma once

#include "abi.hpp"

#include <optional>
#include <string_view>

ROPEKIT_BEGIN_NAMESPACE

/// Which channels form a rotation pair. Same frequencies, different channel order; a model
/// converted for one and run with the other produces fluent garbage, so every kernel takes the
/// layout explicitly.
///
/// With `rotary_dim = 8` (pairs p0..p3, c = first element of a pair, s = second), channels
/// past rotary_dim (`.`) are never touched:
///
///     neox  (HF rotate_half, ggml NEOX):   [c0 c1 c2 c3 s0 s1 s2 s3 . . .]  pair i = (i, i +
///     rotary_dim/2) gptj  (Meta/GPT-J, ggml NORMAL):     [c0 s0 c1 s1 c2 s2 c3 s3 . . .]  pair i =
///     (2i, 2i + 1)
enum class rope_layout {
    neox,  ///< rotate-half: pair i is channels (i, i + rotary_dim/2)
    gptj,  ///< interleaved: pair i is channels (2i, 2i + 1)
};

/// "neox" or "gptj".
constexpr std::string_view to_string(rope_layout layout) noexcept {
    return layout == rope_layout::neox ? "neox" : "gptj";
}

/// Parses "neox" / "gptj" (also the aliases "rotate_half", "half", "interleaved", "normal").
/// Returns nullopt for anything else; never throws.
constexpr std::optional<rope_layout> parse_rope_layout(std::string_view s) noexcept {
    if (s == "neox" || s == "rotate_half" || s == "half") return rope_layout::neox;
    if (s == "gptj" || s == "interleaved" || s == "normal") return rope_layout::gptj;
    return std::nullopt;
}

ROPEKIT_END_NAMESPACE
