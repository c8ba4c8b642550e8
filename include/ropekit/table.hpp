// SPDX-License-Identifier: Apache-2.0
/// \file
/// What every scaling method produces (rope_frequencies: inv_freq per pair plus the attention
/// factor) and the cos/sin tables built from it. Kernels see only these two types, never the
/// scaling method.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "config.hpp"
#include "error.hpp"
#include "layout.hpp"

ROPEKIT_BEGIN_NAMESPACE

/// Largest rotary_dim (and so 2 * pairs) rope_frequencies::validate() accepts: 65536, far
/// above any model (576 is the largest head in use); beyond it a value is a corrupt config.
inline constexpr int max_rotary_dim = 1 << 16;

/// Positions a cos_sin_table serves: |position| < 2^29 (and |position * inv_freq| < 2^29 when
/// some |inv_freq| > 1), the range in which detail::accurate_cos_sin is exact up to the final
/// rounding (the double product of a 24-bit inv_freq and a 29-bit integer is exact, and so is
/// the quarter-turn reduction). Past it the error grows with the position, and from about 2^55
/// the "cosines" are not even bounded (-8.7e12 at 2^62). The same bound as the table-free
/// kernels (ropekit::table_free_position_limit).
inline constexpr std::int64_t table_position_limit = std::int64_t(1) << 29;

/// Largest number of floats (rows() * row_stride()) a cos_sin_table may hold: 2^31 (8 GiB).
/// A config's max_position_embeddings or a corrupt count beyond it gets a ropekit::error
/// naming `count` before anything is allocated, not std::bad_alloc or a wrapped size.
inline constexpr std::int64_t table_max_floats = std::int64_t(1) << 31;

/// Rotary frequencies of one model configuration: the output of every scaling method.
///
/// Pair `i` (0 <= i < rotary_dim/2) of a token at position `p` is rotated by the angle
/// `p * inv_freq[i]`. Which two channels form pair `i` is the geometry's business:
///
/// - NeoX: channels `(rotary_offset + i, rotary_offset + i + neox_pair_span())`;
/// - GPT-J: channels `(rotary_offset + 2i, rotary_offset + 2i + 1)`.
///
/// Every other channel of the head is never read or written. With the defaults (offset 0, span
/// rotary_dim / 2) that is ordinary (partial) rotary: channels `[rotary_dim, head_dim)` pass
/// through. Two models need more:
/// - Gemma 4's proportional RoPE rotates the first pairs of a NeoX head whose halves span
///   head_dim / 2 (`pair_span = head_dim / 2`, rotary_dim < head_dim), so rotated and
///   pass-through channels interleave at that stride;
/// - DeepSeek's MLA rotates the last 64 channels of a 192-channel q/k head
///   (`rotary_offset = qk_nope_head_dim = 128`).
///
/// **attention_factor is not part of the rotation.** Hugging Face multiplies cos and sin by it,
/// for q and for k, so the attention logits are multiplied by `attention_factor^2`. ropekit
/// keeps rotations pure (rotating by a then by b equals rotating by a + b, and re-rotating cached
/// keys never rescales them); the engine applies the factor once, to the softmax scale:
/// `softmax_scale = attention_factor * attention_factor / sqrt(head_dim)` (see logit_scale()).
struct rope_frequencies {
    std::vector<float> inv_freq;    ///< radians per position, one per pair (rotary_dim/2 entries)
    float attention_factor = 1.0f;  ///< HF's factor on cos and sin (YaRN mscale, LongRoPE)
    int head_dim = 0;               ///< channels per head
    int rotary_dim = 0;             ///< rotated channels, even, <= head_dim
    rope_layout layout = rope_layout::neox;  ///< which channels form a pair
    /// NeoX only: channels from the first element of a pair to its second; 0 (the default) means
    /// rotary_dim / 2. GPT-J pairs are adjacent and take 0.
    int pair_span = 0;
    /// First rotated channel of the head (0 unless the rotary part is a slice at an offset).
    int rotary_offset = 0;

    /// Number of rotation pairs, rotary_dim / 2.
    ROPEKIT_ALWAYS_INLINE int pairs() const noexcept { return rotary_dim / 2; }

    /// NeoX channel distance within a pair: pair_span, or rotary_dim / 2 when it is 0.
    ROPEKIT_ALWAYS_INLINE int neox_pair_span() const noexcept {
        return pair_span > 0 ? pair_span : rotary_dim / 2;
    }

    /// Channels from rotary_offset to one past the last rotated channel: neox_pair_span() +
    /// pairs() for NeoX, rotary_dim for GPT-J.
    ROPEKIT_ALWAYS_INLINE int rotated_extent() const noexcept {
        return layout == rope_layout::neox ? neox_pair_span() + pairs() : rotary_dim;
    }

    /// True for the ordinary geometry (offset 0, NeoX span rotary_dim / 2).
    ROPEKIT_ALWAYS_INLINE bool ordinary_geometry() const noexcept {
        return rotary_offset == 0 && (pair_span == 0 || pair_span == rotary_dim / 2);
    }

    /// Multiplier for the attention logits equivalent to HF's scaled cos/sin on q and k:
    /// `attention_factor^2`.
    ROPEKIT_ALWAYS_INLINE double logit_scale() const noexcept {
        return double(attention_factor) * double(attention_factor);
    }

    /// Throws ropekit::error unless the fields are consistent: rotary_dim even, > 0 and
    /// <= max_rotary_dim, rotary_dim <= head_dim, inv_freq has rotary_dim/2 finite entries,
    /// attention_factor finite and > 0, pair_span 0 or (NeoX) >= pairs(), rotary_offset >= 0 and
    /// rotary_offset + rotated_extent() <= head_dim.
    ROPEKIT_ALWAYS_INLINE void validate() const {
        detail::require(rotary_dim > 0 && rotary_dim % 2 == 0, "rotary_dim", "must be even and > 0",
                        rotary_dim);
        detail::require(rotary_dim <= max_rotary_dim, "rotary_dim",
                        "must be <= max_rotary_dim (65536)", rotary_dim);
        detail::require(head_dim >= rotary_dim, "head_dim", "must be >= rotary_dim", head_dim);
        detail::require(pair_span == 0 || (layout == rope_layout::neox && pair_span >= pairs() &&
                                           pair_span <= max_rotary_dim),
                        "pair_span", "must be 0, or (NeoX only) >= rotary_dim / 2 and <= 65536",
                        pair_span);
        detail::require(rotary_offset >= 0 && rotary_offset <= max_rotary_dim, "rotary_offset",
                        "must be in [0, 65536]", rotary_offset);
        detail::require(rotary_offset + rotated_extent() <= head_dim, "head_dim",
                        "must be >= rotary_offset + the rotated extent (pair_span + rotary_dim / 2 "
                        "for NeoX, rotary_dim for GPT-J)",
                        head_dim);
        detail::require(inv_freq.size() == std::size_t(rotary_dim / 2), "inv_freq",
                        "must have rotary_dim/2 entries", inv_freq.size());
        for (float f : inv_freq) detail::require(std::isfinite(f), "inv_freq", "must be finite", f);
        detail::require_finite_positive(attention_factor, "attention_factor");
    }
};

namespace detail {

/// sin(r) and cos(r) for |r| <= pi/4 (plus a few ulps), in double: the Taylor series to r^13 and
/// r^12, whose remainders are below 1e-11 on that interval, far under float32's 6e-8. Plain
/// arithmetic, no library call, so a loop over pairs vectorises.
ROPEKIT_ALWAYS_INLINE void sin_cos_reduced(double r, double& s, double& c) noexcept {
    const double r2 = r * r;
    s = r + r * r2 *
                (-1.0 / 6 +
                 r2 * (1.0 / 120 +
                       r2 * (-1.0 / 5040 +
                             r2 * (1.0 / 362880 + r2 * (-1.0 / 39916800 + r2 / 6227020800.0)))));
    c = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24 +
                                 r2 * (-1.0 / 720 + r2 * (1.0 / 40320 + r2 * (-1.0 / 3628800 +
                                                                              r2 / 479001600.0)))));
}

/// cos and sin of `position * inv_freq`, within 1e-7 absolute of the exact value (measured
/// 3e-8 = 2^-25, the rounding of the result to float) whenever |position * inv_freq| < 2^29 and
/// position is an integer below 2^29 in magnitude (any real position works, with the product's
/// double rounding added).
///
/// Why not `cosf(float(position) * inv_freq)` as Hugging Face does: the float32 product has an
/// error of up to ulp(angle)/2, about 2e-3 rad at position 131071, growing linearly with the
/// position. Here the product is formed in double, where it is exact (a 24-bit mantissa times
/// an integer below 2^29 fits in 53 bits), and reduced by k quarter turns with a three-part
/// pi/2 (Cody-Waite): pio2_1 and pio2_2 have 24 significant bits, so `k * pio2_1` and
/// `k * pio2_2` are exact for |k| < 2^29, and `angle - k * pio2_1` is exact by Sterbenz's lemma.
/// The reduced angle stays in double; only the final cos/sin are rounded to float. No fma is
/// needed (fast on every x86-64 level, no libm call), and the row loop vectorises. Do not build
/// this with -ffast-math: re-associating the three-part subtraction undoes the reduction.
ROPEKIT_ALWAYS_INLINE void accurate_cos_sin(double position, float inv_freq, float& cos_out,
                                            float& sin_out) noexcept {
    constexpr double two_over_pi = 0x1.45f306dc9c883p-1;
    constexpr double pio2_1 = 0x1.921fb6p+0;           // pi/2 to 24 bits
    constexpr double pio2_2 = -0x1.777a5cp-25;         // the next 24 bits
    constexpr double pio2_3 = -0x1.ee59d9cceba40p-50;  // the rest, rounded to double
    const double angle = position * double(inv_freq);
    const double k = std::nearbyint(angle * two_over_pi);
    const double r = ((angle - k * pio2_1) - k * pio2_2) - k * pio2_3;
    double s, c;
    sin_cos_reduced(r, s, c);
    // Quadrant q = k mod 4, read from the bits of k + 1.5 * 2^52 (k is an integer below 2^51 in
    // magnitude, so the low mantissa bits hold k in two's complement): no float-to-int
    // conversion that could overflow, and integer selects keep the loop vectorisable.
    const double shifted = k + 0x1.8p52;
    std::uint64_t bits;
    std::memcpy(&bits, &shifted, sizeof bits);
    const unsigned q = unsigned(bits & 3u);
    const double cq = (q & 1u) ? s : c, sq = (q & 1u) ? c : s;  // rotate by q quarter turns
    const double cos_sign = 1.0 - double((q + 1u) & 2u);        // -1 for q = 1, 2
    const double sin_sign = 1.0 - double(q & 2u);               // -1 for q = 2, 3
    cos_out = float(cos_sign * cq);
    sin_out = float(sin_sign * sq);
}

/// Largest |position| whose angles are within the accuracy contract for every inv_freq of
/// `freqs`: table_position_limit - 1, or less when some |inv_freq| > 1 (then every
/// |position * inv_freq| must stay below 2^29 as well). Negative when no position qualifies
/// (an infinite inv_freq). Cold path (table builders, validate_positions).
inline std::int64_t max_accurate_position(const std::vector<float>& inv_freq) {
    double max_inv = 1.0;
    bool finite = true;  // a NaN or inf makes every position inaccurate
    for (float f : inv_freq) {
        finite = finite && std::isfinite(f);
        max_inv = std::max(max_inv, std::fabs(double(f)));
    }
    if (!finite) return -1;
    const double limit = double(table_position_limit) / max_inv;
    return std::int64_t(std::ceil(limit)) - 1;  // |p| <= result  <=>  |p| < limit
}

}  // namespace detail

/// cos and sin of `position * inv_freq[i]` for a set of positions, one row per position.
///
/// Row `r` holds `pairs()` cosines followed by `pairs()` sines (row_stride() = 2 * pairs()
/// floats), so one token's angles are one contiguous stream. A table is either a range table
/// (rows for positions first_position() .. first_position() + rows() - 1, looked up by
/// position) or a list table (rows for an arbitrary list of positions, looked up by row).
/// Tables are immutable after construction and safe to share between threads.
class cos_sin_table {
  public:
    cos_sin_table() = default;

    /// Range table for positions [first_position, first_position + count).
    /// Throws ropekit::error, before allocating, for invalid frequencies, a negative count, a
    /// table of more than table_max_floats floats (field `count`), or a position outside the
    /// accuracy bound, |position| < table_position_limit = 2^29 (field `first_position` for
    /// the first row, `count` for the last; see table_position_limit). An empty table
    /// (count 0) accepts any first_position.
    ROPEKIT_ALWAYS_INLINE static cos_sin_table for_range(const rope_frequencies& freqs,
                                                         std::int64_t first_position,
                                                         std::int64_t count) {
        freqs.validate();
        detail::require(count >= 0, "count", "must be >= 0", count);
        if (count > 0) {
            const std::int64_t hi = detail::max_accurate_position(freqs.inv_freq);
            detail::require(first_position >= -hi && first_position <= hi, "first_position",
                            "must satisfy |first_position| < 2^29 (table_position_limit; less "
                            "when an inv_freq exceeds 1): the angles are inaccurate beyond",
                            first_position);
            // hi - first_position is in [0, 2 * hi]: no overflow, unlike first_position + count.
            detail::require(count - 1 <= hi - first_position, "count",
                            "must keep first_position + count - 1 below 2^29 "
                            "(table_position_limit; less when an inv_freq exceeds 1)",
                            count);
            require_size(freqs, count);
        }
        cos_sin_table t(freqs, first_position, count, true);
        for (std::int64_t r = 0; r < count; ++r) t.fill_row(r, double(first_position + r), freqs);
        return t;
    }

    /// List table: row r holds the angles of `positions[r]` (any order, negative allowed, e.g.
    /// deltas for re-rotating cached keys; |position| < table_position_limit = 2^29, less when an
    /// inv_freq exceeds 1). `positions` may be null when count is 0. Throws ropekit::error,
    /// before allocating, for invalid frequencies, a negative count, more than
    /// table_max_floats floats (field `count`), or a position outside the bound (field
    /// `positions`, naming the index and the value).
    template <class Int>
    ROPEKIT_ALWAYS_INLINE static cos_sin_table for_positions(const rope_frequencies& freqs,
                                                             const Int* positions,
                                                             std::int64_t count) {
        static_assert(std::is_same_v<Int, std::int32_t> || std::is_same_v<Int, std::int64_t>,
                      "positions are int32 or int64");
        freqs.validate();
        detail::require(count >= 0, "count", "must be >= 0", count);
        detail::require(count == 0 || positions != nullptr, "positions",
                        "must not be null with a non-zero count", count);
        require_size(freqs, count);
        const std::int64_t hi = detail::max_accurate_position(freqs.inv_freq);
        for (std::int64_t r = 0; r < count; ++r) {
            const std::int64_t p = std::int64_t(positions[r]);
            if (p < -hi || p > hi)
                detail::fail(
                    "positions",
                    "must satisfy |position| < 2^29 (table_position_limit; less when an "
                    "inv_freq exceeds 1)",
                    "positions[" + detail::format_value(r) + "] = " + detail::format_value(p));
        }
        cos_sin_table t(freqs, 0, count, false);
        for (std::int64_t r = 0; r < count; ++r) t.fill_row(r, double(positions[r]), freqs);
        return t;
    }

    /// Rotation pairs per row (rotary_dim / 2).
    ROPEKIT_ALWAYS_INLINE int pairs() const noexcept { return pairs_; }
    /// Rotated channels (2 * pairs()).
    ROPEKIT_ALWAYS_INLINE int rotary_dim() const noexcept { return 2 * pairs_; }
    /// Channel order the table was built for.
    ROPEKIT_ALWAYS_INLINE rope_layout layout() const noexcept { return layout_; }
    /// NeoX channel distance within a pair (rope_frequencies::neox_pair_span()).
    ROPEKIT_ALWAYS_INLINE int pair_span() const noexcept { return pair_span_; }
    /// First rotated channel (rope_frequencies::rotary_offset).
    ROPEKIT_ALWAYS_INLINE int rotary_offset() const noexcept { return rotary_offset_; }
    /// Channels from rotary_offset() to one past the last rotated one
    /// (rope_frequencies::rotated_extent()).
    ROPEKIT_ALWAYS_INLINE int rotated_extent() const noexcept {
        return layout_ == rope_layout::neox ? pair_span_ + pairs_ : 2 * pairs_;
    }
    /// Floats between the starts of consecutive rows (2 * pairs()).
    ROPEKIT_ALWAYS_INLINE std::ptrdiff_t row_stride() const noexcept {
        return 2 * std::ptrdiff_t(pairs_);
    }
    /// Number of rows.
    ROPEKIT_ALWAYS_INLINE std::int64_t rows() const noexcept { return rows_; }
    /// True for a range table (rows indexed by position).
    ROPEKIT_ALWAYS_INLINE bool is_range() const noexcept { return is_range_; }
    /// Position of row 0 of a range table (0 for a list table).
    ROPEKIT_ALWAYS_INLINE std::int64_t first_position() const noexcept { return first_position_; }
    /// True when a range table has a row for `position` (any int64: the distance from the first
    /// row is taken in unsigned arithmetic, since `position - first_position()` overflows for
    /// far positions, and an empty table may start anywhere).
    ROPEKIT_ALWAYS_INLINE bool contains(std::int64_t position) const noexcept {
        return is_range_ && position >= first_position_ &&
               std::uint64_t(position) - std::uint64_t(first_position_) < std::uint64_t(rows_);
    }
    /// Row of `position` in a range table; throws ropekit::error when there is none.
    ROPEKIT_ALWAYS_INLINE std::int64_t row_of(std::int64_t position) const {
        detail::require(contains(position), "position", "is outside the cos/sin table", position);
        return position - first_position_;
    }
    /// Start of row r: pairs() cosines, then pairs() sines.
    ROPEKIT_ALWAYS_INLINE const float* row(std::int64_t r) const {
        ROPEKIT_ASSERT(r >= 0 && r < rows_, "cos_sin_table row out of range");
        return data_.data() + r * row_stride();
    }
    /// The cosines of row r.
    ROPEKIT_ALWAYS_INLINE const float* cos_row(std::int64_t r) const { return row(r); }
    /// The sines of row r.
    ROPEKIT_ALWAYS_INLINE const float* sin_row(std::int64_t r) const { return row(r) + pairs_; }
    /// All rows, rows() * row_stride() floats.
    ROPEKIT_ALWAYS_INLINE const float* data() const noexcept { return data_.data(); }

  private:
    // count * 2 * pairs <= table_max_floats, checked without forming the product (count may
    // be near 2^63; pairs <= max_rotary_dim / 2 after validate()).
    ROPEKIT_ALWAYS_INLINE static void require_size(const rope_frequencies& freqs,
                                                   std::int64_t count) {
        const std::int64_t stride = 2 * std::int64_t(freqs.pairs());
        detail::require(count <= table_max_floats / stride, "count",
                        "makes the table larger than table_max_floats (2^31 floats)", count);
    }

    ROPEKIT_ALWAYS_INLINE cos_sin_table(const rope_frequencies& freqs, std::int64_t first,
                                        std::int64_t count, bool is_range)
        : pairs_(freqs.pairs()),
          layout_(freqs.layout),
          pair_span_(freqs.neox_pair_span()),
          rotary_offset_(freqs.rotary_offset),
          rows_(count),
          first_position_(first),
          is_range_(is_range),
          data_(std::size_t(count) * std::size_t(2 * freqs.pairs())) {}

    ROPEKIT_ALWAYS_INLINE void fill_row(std::int64_t r, double position,
                                        const rope_frequencies& freqs) {
        float* ROPEKIT_RESTRICT c = data_.data() + r * row_stride();
        float* ROPEKIT_RESTRICT s = c + pairs_;
        const float* ROPEKIT_RESTRICT inv = freqs.inv_freq.data();
        for (int i = 0; i < pairs_; ++i) detail::accurate_cos_sin(position, inv[i], c[i], s[i]);
    }

    int pairs_ = 0;
    rope_layout layout_ = rope_layout::neox;
    int pair_span_ = 0;
    int rotary_offset_ = 0;
    std::int64_t rows_ = 0;
    std::int64_t first_position_ = 0;
    bool is_range_ = true;
    std::vector<float> data_;
};

ROPEKIT_END_NAMESPACE
