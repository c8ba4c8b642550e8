// SPDX-License-Identifier: Apache-2.0
/// \file
/// What every scaling method produces (rope_frequencies: inv_freq per pair plus the attention
/// factor) and the cos/sin tables built from it. Kernels see only these two types, never the
/// scaling method.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "config.hpp"
#include "error.hpp"
#include "layout.hpp"

namespace ropekit {

/// Rotary frequencies of one model configuration: the output of every scaling method.
///
/// Pair `i` (0 <= i < rotary_dim/2) of a token at position `p` is rotated by the angle
/// `p * inv_freq[i]`. Which two channels form pair `i` is the layout's business
/// (see rope_layout). Channels `[rotary_dim, head_dim)` are never rotated (partial rotary).
///
/// **attention_factor is not part of the rotation.** Hugging Face multiplies cos and sin by it,
/// for q and for k, so the attention logits are multiplied by `attention_factor^2`. ropekit
/// keeps rotations pure (rotating by a then by b equals rotating by a + b, and re-rotating cached
/// keys never rescales them); the engine applies the factor once, to the softmax scale:
/// `softmax_scale = attention_factor * attention_factor / sqrt(head_dim)` (see logit_scale()).
struct rope_frequencies {
    std::vector<float> inv_freq;  ///< radians per position, one per pair (rotary_dim/2 entries)
    float attention_factor = 1.0f;  ///< HF's factor on cos and sin (YaRN mscale, LongRoPE)
    int head_dim = 0;               ///< channels per head
    int rotary_dim = 0;             ///< rotated channels, even, <= head_dim
    rope_layout layout = rope_layout::neox;  ///< which channels form a pair

    /// Number of rotation pairs, rotary_dim / 2.
    int pairs() const noexcept { return rotary_dim / 2; }

    /// Multiplier for the attention logits equivalent to HF's scaled cos/sin on q and k:
    /// `attention_factor^2`.
    double logit_scale() const noexcept {
        return double(attention_factor) * double(attention_factor);
    }

    /// Throws ropekit::error unless the fields are consistent: rotary_dim even and > 0,
    /// rotary_dim <= head_dim, inv_freq has rotary_dim/2 finite entries, attention_factor finite
    /// and > 0.
    void validate() const {
        detail::require(rotary_dim > 0 && rotary_dim % 2 == 0, "rotary_dim",
                        "must be even and > 0", rotary_dim);
        detail::require(head_dim >= rotary_dim, "head_dim", "must be >= rotary_dim", head_dim);
        detail::require(inv_freq.size() == std::size_t(rotary_dim / 2), "inv_freq",
                        "must have rotary_dim/2 entries", inv_freq.size());
        for (float f : inv_freq) detail::require(std::isfinite(f), "inv_freq", "must be finite", f);
        detail::require_finite_positive(attention_factor, "attention_factor");
    }
};

namespace detail {

/// cos and sin of `position * inv_freq`, accurate to a few 1e-7 absolute for any position with
/// |position| < 2^29, whatever its size.
///
/// Why not `cosf(float(position) * inv_freq)` as Hugging Face does: the float32 product has an
/// error of up to ulp(angle)/2, about 2e-3 rad at position 131071, and the error grows linearly
/// with the position. Here the product is formed in double, where it is exact (a 24-bit mantissa
/// times an integer below 2^29 fits in 53 bits), reduced to [-pi, pi] with a two-part 2*pi
/// (Cody-Waite; the fma makes `angle - k * two_pi_hi` exact), and only the reduced angle is
/// rounded to float, which costs at most 2^-24 * pi ~ 1.9e-7 rad.
ROPEKIT_ALWAYS_INLINE void accurate_cos_sin(double position, float inv_freq, float& cos_out,
                                            float& sin_out) noexcept {
    constexpr double two_pi_hi = 6.283185307179586;        // 2*pi rounded to double
    constexpr double two_pi_lo = 2.4492935982947064e-16;   // 2*pi - two_pi_hi
    constexpr double inv_two_pi = 0.15915494309189535;
    const double angle = position * double(inv_freq);
    const double k = std::nearbyint(angle * inv_two_pi);
    const double reduced = std::fma(-k, two_pi_hi, angle) - k * two_pi_lo;
    const float r = float(reduced);
    cos_out = std::cos(r);
    sin_out = std::sin(r);
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
    /// Throws ropekit::error for invalid frequencies or a negative count.
    static cos_sin_table for_range(const rope_frequencies& freqs, std::int64_t first_position,
                                   std::int64_t count) {
        freqs.validate();
        detail::require(count >= 0, "count", "must be >= 0", count);
        cos_sin_table t(freqs, first_position, count, true);
        for (std::int64_t r = 0; r < count; ++r) t.fill_row(r, double(first_position + r), freqs);
        return t;
    }

    /// List table: row r holds the angles of `positions[r]` (any values, negative allowed, e.g.
    /// deltas for re-rotating cached keys). `positions` may be null when count is 0.
    template <class Int>
    static cos_sin_table for_positions(const rope_frequencies& freqs, const Int* positions,
                                       std::int64_t count) {
        static_assert(std::is_same_v<Int, std::int32_t> || std::is_same_v<Int, std::int64_t>,
                      "positions are int32 or int64");
        freqs.validate();
        detail::require(count >= 0, "count", "must be >= 0", count);
        detail::require(count == 0 || positions != nullptr, "positions",
                        "must not be null with a non-zero count", count);
        cos_sin_table t(freqs, 0, count, false);
        for (std::int64_t r = 0; r < count; ++r) t.fill_row(r, double(positions[r]), freqs);
        return t;
    }

    /// Rotation pairs per row (rotary_dim / 2).
    int pairs() const noexcept { return pairs_; }
    /// Rotated channels (2 * pairs()).
    int rotary_dim() const noexcept { return 2 * pairs_; }
    /// Channel order the table was built for.
    rope_layout layout() const noexcept { return layout_; }
    /// Floats between the starts of consecutive rows (2 * pairs()).
    std::ptrdiff_t row_stride() const noexcept { return 2 * std::ptrdiff_t(pairs_); }
    /// Number of rows.
    std::int64_t rows() const noexcept { return rows_; }
    /// True for a range table (rows indexed by position).
    bool is_range() const noexcept { return is_range_; }
    /// Position of row 0 of a range table (0 for a list table).
    std::int64_t first_position() const noexcept { return first_position_; }
    /// True when a range table has a row for `position`.
    bool contains(std::int64_t position) const noexcept {
        return is_range_ && position >= first_position_ && position - first_position_ < rows_;
    }
    /// Row of `position` in a range table; throws ropekit::error when there is none.
    std::int64_t row_of(std::int64_t position) const {
        detail::require(contains(position), "position", "is outside the cos/sin table", position);
        return position - first_position_;
    }
    /// Start of row r: pairs() cosines, then pairs() sines.
    const float* row(std::int64_t r) const {
        ROPEKIT_ASSERT(r >= 0 && r < rows_, "cos_sin_table row out of range");
        return data_.data() + r * row_stride();
    }
    /// The cosines of row r.
    const float* cos_row(std::int64_t r) const { return row(r); }
    /// The sines of row r.
    const float* sin_row(std::int64_t r) const { return row(r) + pairs_; }
    /// All rows, rows() * row_stride() floats.
    const float* data() const noexcept { return data_.data(); }

private:
    cos_sin_table(const rope_frequencies& freqs, std::int64_t first, std::int64_t count,
                  bool is_range)
        : pairs_(freqs.pairs()),
          layout_(freqs.layout),
          rows_(count),
          first_position_(first),
          is_range_(is_range),
          data_(std::size_t(count) * std::size_t(2 * freqs.pairs())) {}

    void fill_row(std::int64_t r, double position, const rope_frequencies& freqs) {
        float* c = data_.data() + r * row_stride();
        float* s = c + pairs_;
        for (int i = 0; i < pairs_; ++i) detail::accurate_cos_sin(position, freqs.inv_freq[i], c[i], s[i]);
    }

    int pairs_ = 0;
    rope_layout layout_ = rope_layout::neox;
    std::int64_t rows_ = 0;
    std::int64_t first_position_ = 0;
    bool is_range_ = true;
    std::vector<float> data_;
};

}  // namespace ropekit
