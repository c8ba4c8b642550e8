// SPDX-License-Identifier: Apache-2.0
/// \file
/// ReRoPE and Leaky ReRoPE (J. Su, 2023, https://kexue.fm/archives/9708): rules that map the
/// distance between a query and a key to the relative position their score is computed at.
///
/// They change no frequency: the rotation tables stay those of the model's own scaling method.
/// What changes is the relative position attention sees. Within `window` tokens the score is
/// ordinary RoPE; beyond it ReRoPE clamps the distance to `window` and Leaky ReRoPE grows it
/// `k` times more slowly, so no query ever sees a distance much beyond what training covered.
/// The attention kernels take one of these types (see attention.hpp).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "error.hpp"

ROPEKIT_BEGIN_NAMESPACE

/// ReRoPE: relative position `min(i - j, window)` for query i and key j (i >= j).
struct rerope {
    std::int64_t window = 512;  ///< distances >= window are scored at exactly `window`

    /// Throws ropekit::error unless window > 0.
    ROPEKIT_ALWAYS_INLINE void validate() const {
        detail::require(window > 0, "window", "must be > 0", window);
    }

    /// The relative position the score of a pair at `distance = i - j` (>= 0) uses.
    ROPEKIT_ALWAYS_INLINE double relative_position(std::int64_t distance) const noexcept {
        return distance < window ? double(distance) : double(window);
    }
};

/// Leaky ReRoPE: relative position `i - j` inside the window, `window + (i - j - window) / k`
/// beyond it (continuous at the window edge; k -> infinity gives ReRoPE, k = 1 plain RoPE, so
/// an engine need not special-case a context within the training length).
struct leaky_rerope {
    std::int64_t window = 512;  ///< distances below this are ordinary RoPE
    double k = 16.0;            ///< slope divisor beyond the window, >= 1 (1: plain RoPE)

    /// Throws ropekit::error unless window > 0 and k is finite and >= 1.
    ROPEKIT_ALWAYS_INLINE void validate() const {
        detail::require(window > 0, "window", "must be > 0", window);
        detail::require(std::isfinite(k) && k >= 1.0, "k", "must be finite and >= 1", k);
    }

    /// The relative position the score of a pair at `distance = i - j` (>= 0) uses.
    ROPEKIT_ALWAYS_INLINE double relative_position(std::int64_t distance) const noexcept {
        return distance < window ? double(distance)
                                 : double(window) + double(distance - window) / k;
    }
};

ROPEKIT_END_NAMESPACE
