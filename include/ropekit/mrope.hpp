// SPDX-License-Identifier: Apache-2.0
/// \file
/// Multimodal RoPE (M-RoPE, Qwen2-VL / Qwen2.5-VL / Qwen3-VL): each token has three position
/// ids (temporal, height, width) and each rotation pair takes its angle from one of them.
#pragma once

#include <array>
#include <string>

#include "abi.hpp"
#include "error.hpp"

ROPEKIT_BEGIN_NAMESPACE

/// How the pairs are assigned to the three axes.
enum class mrope_layout {
    /// Qwen2-VL / Qwen2.5-VL: contiguous sections, pairs [0, s0) temporal, [s0, s0 + s1) height,
    /// [s0 + s1, s0 + s1 + s2) width (HF `apply_multimodal_rotary_pos_emb`, which splits the
    /// doubled `mrope_section * 2` over cat(freqs, freqs): both halves of a NeoX pair agree).
    contiguous,
    /// Qwen3-VL: interleaved T H W T H W ..., pair p is height when p % 3 == 1 and p < 3 * s1,
    /// width when p % 3 == 2 and p < 3 * s2, temporal otherwise (HF `apply_interleaved_mrope`).
    interleaved,
};

/// The position axis of M-RoPE.
enum class mrope_axis { temporal = 0, height = 1, width = 2 };

/// "contiguous" or "interleaved".
constexpr const char* to_string(mrope_layout layout) noexcept {
    return layout == mrope_layout::contiguous ? "contiguous" : "interleaved";
}

/// A config's `mrope_section` (pairs per axis, temporal / height / width) and its layout.
struct mrope_sections {
    std::array<int, 3> section{};  ///< pairs per axis: temporal, height, width
    mrope_layout layout = mrope_layout::contiguous;  ///< how the pairs are assigned

    /// The axis whose position rotates pair `p` (0 <= p < pairs).
    ROPEKIT_ALWAYS_INLINE constexpr mrope_axis axis_of_pair(int p) const noexcept {
        if (layout == mrope_layout::contiguous) {
            if (p < section[0]) return mrope_axis::temporal;
            if (p < section[0] + section[1]) return mrope_axis::height;
            return mrope_axis::width;
        }
        if (p % 3 == 1 && p < 3 * section[1]) return mrope_axis::height;
        if (p % 3 == 2 && p < 3 * section[2]) return mrope_axis::width;
        return mrope_axis::temporal;
    }

    /// Throws ropekit::error (field `mrope_section`) unless every section is >= 0 and they sum
    /// to `pairs` (rotary_dim / 2), as HF requires; the interleaved layout also needs
    /// 3 * s1 <= pairs + 1 and 3 * s2 <= pairs + 2 (the strided slices stay inside the pairs).
    ROPEKIT_ALWAYS_INLINE void validate(int pairs) const {
        for (int s : section)
            detail::require(s >= 0 && s <= (1 << 15), "mrope_section",
                            "entries must be in [0, 32768]", s);
        const int sum = section[0] + section[1] + section[2];
        if (sum != pairs)
            detail::fail("mrope_section", "must sum to rotary_dim / 2",
                         "[" + std::to_string(section[0]) + ", " + std::to_string(section[1]) +
                             ", " + std::to_string(section[2]) + "] sums to " +
                             std::to_string(sum) + ", rotary_dim / 2 = " + std::to_string(pairs));
        if (layout == mrope_layout::interleaved) {
            detail::require(3 * section[1] <= pairs + 1, "mrope_section",
                            "height section too long for the interleaved layout (3 * s1 must be "
                            "<= rotary_dim / 2 + 1)",
                            section[1]);
            detail::require(3 * section[2] <= pairs + 2, "mrope_section",
                            "width section too long for the interleaved layout (3 * s2 must be "
                            "<= rotary_dim / 2 + 2)",
                            section[2]);
        }
    }
};

ROPEKIT_END_NAMESPACE
