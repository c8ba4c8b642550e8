// SPDX-License-Identifier: Apache-2.0
/// \file
/// Llama 4's attention temperature tuning (Nakanishi 2025, arXiv:2501.19399, "scalable-softmax"):
/// on the layers without RoPE (NoPE), each query is multiplied by a factor that grows with the
/// log of its position, so attention stays selective at long range where no rotation tells
/// near keys from far ones.
#pragma once

#include <cmath>
#include <cstdint>

#include "abi.hpp"
#include "error.hpp"

ROPEKIT_BEGIN_NAMESPACE

/// The query scale of Llama 4's NoPE layers (config keys `attn_temperature_tuning`,
/// `floor_scale`, `attn_scale`): `scale(p) = log(floor((p + 1) / floor_scale) + 1) * attn_scale
/// + 1`, which is exactly 1 for the first floor_scale - 1 positions. HF applies it to q on the
/// layers whose `no_rope_layers` entry is 0, in float32 (as scale_at does).
struct attention_temperature {
    double floor_scale = 8192.0;  ///< positions per step of the floor (Llama 4: 8192)
    double attn_scale = 0.1;      ///< the log's multiplier (Llama 4: 0.1)

    /// The factor for the query at `position` (>= 0), computed in float32 like HF's torch code.
    ROPEKIT_ALWAYS_INLINE float scale_at(std::int64_t position) const noexcept {
        const float steps = std::floor((float(position) + 1.0f) / float(floor_scale));
        return std::log(steps + 1.0f) * float(attn_scale) + 1.0f;
    }

    /// Throws ropekit::error unless floor_scale is >= 1 and attn_scale >= 0, both finite in
    /// float32 (scale_at computes in float32: a larger double would be inf and the factor
    /// `log(1) * inf` NaN), and the factor stays finite up to the last position the kernels
    /// accept (2^62 - 1).
    ROPEKIT_ALWAYS_INLINE void validate() const {
        detail::require(detail::fits_f32(floor_scale) && floor_scale >= 1.0, "floor_scale",
                        "must be >= 1 and finite in float32", floor_scale);
        detail::require(detail::fits_f32(attn_scale) && attn_scale >= 0.0, "attn_scale",
                        "must be >= 0 and finite in float32", attn_scale);
        // The factor grows with the position: its largest value is at the last one.
        detail::require(std::isfinite(scale_at((std::int64_t(1) << 62) - 1)), "attn_scale",
                        "must keep scale_at(p) finite for every position below 2^62", attn_scale);
    }
};

ROPEKIT_END_NAMESPACE
