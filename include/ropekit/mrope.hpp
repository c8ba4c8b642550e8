// SPDX-License-Identifier: Apache-2.0
/// \file
/// Multimodal RoPE (M-RoPE, Qwen2-VL / Qwen2.5-VL / Qwen3-VL): each token has three position
/// ids (temporal, height, width) and each rotation pair takes its angle from one of them.
///
/// - mrope_sections: a config's `mrope_section` and the pair-to-axis layout;
/// - mrope_positions: three ids per token, laid out like HF's `position_ids` of shape (3, seq);
/// - apply_mrope / apply_mrope_qk: the rotary kernels with each pair's angle gathered from its
///   axis's row of a range cos_sin_table (validate_mrope_call checks untrusted input);
/// - get_rope_index: HF's position-id construction for a sequence of text, image and video
///   segments, and the decode offset (`mrope_position_deltas`).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "abi.hpp"
#include "error.hpp"
#include "rope.hpp"

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
    std::array<int, 3> section{};                    ///< pairs per axis: temporal, height, width
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

/// The three position ids of each token of an M-RoPE call (temporal, height, width).
///
/// - ids(p, axis_stride): token t's id on axis a is `p[a * axis_stride + t]`, HF's
///   `position_ids` of shape (3, seq) for one sequence (axis_stride = seq; get_rope_index builds
///   them). int32 or int64; the pointer indexes the view's tokens like positions::ids.
/// - contiguous(start): text only, all three ids of token t are start + t (decode after a
///   prompt: start = cache position + get_rope_index's rope_delta).
class mrope_positions {
  public:
    /// How the ids are given.
    enum class kind { contiguous, ids32, ids64 };

    /// All three ids of token t are start + t.
    ROPEKIT_ALWAYS_INLINE static mrope_positions contiguous(std::int64_t start = 0) noexcept {
        return mrope_positions(kind::contiguous, start, nullptr, 0);
    }
    /// Token t's id on axis a is ids[a * axis_stride + t].
    ROPEKIT_ALWAYS_INLINE static mrope_positions ids(const std::int32_t* ids,
                                                     std::ptrdiff_t axis_stride) noexcept {
        return mrope_positions(kind::ids32, 0, ids, axis_stride);
    }
    /// Token t's id on axis a is ids[a * axis_stride + t].
    ROPEKIT_ALWAYS_INLINE static mrope_positions ids(const std::int64_t* ids,
                                                     std::ptrdiff_t axis_stride) noexcept {
        return mrope_positions(kind::ids64, 0, ids, axis_stride);
    }

    /// How the ids are given.
    ROPEKIT_ALWAYS_INLINE kind which() const noexcept { return kind_; }
    /// The id array (ids32 / ids64), else null.
    ROPEKIT_ALWAYS_INLINE const void* id_data() const noexcept { return ids_; }
    /// Elements from one axis's ids to the next's.
    ROPEKIT_ALWAYS_INLINE std::ptrdiff_t axis_stride() const noexcept { return stride_; }

    /// Id of token t on `axis` (0 temporal, 1 height, 2 width).
    ROPEKIT_ALWAYS_INLINE std::int64_t at(int axis, std::int64_t t) const noexcept {
        switch (kind_) {
            case kind::contiguous:  // (wraps instead of overflowing; the validator rejects it)
                return std::int64_t(std::uint64_t(value_) + std::uint64_t(t));
            case kind::ids32:
                return static_cast<const std::int32_t*>(ids_)[axis * stride_ + t];
            case kind::ids64:
                return static_cast<const std::int64_t*>(ids_)[axis * stride_ + t];
        }
        return 0;
    }

  private:
    ROPEKIT_ALWAYS_INLINE mrope_positions(kind k, std::int64_t v, const void* ids,
                                          std::ptrdiff_t stride) noexcept
        : kind_(k), value_(v), ids_(ids), stride_(stride) {}
    kind kind_;
    std::int64_t value_;
    const void* ids_;
    std::ptrdiff_t stride_;
};

namespace detail {

/// The hot-path form of mrope_sections::validate (no throw): sections >= 0 summing to `pairs`,
/// and the interleaved strides inside the pairs.
template <class Arch>
bool mrope_sections_ok(const mrope_sections& sec, int pairs) noexcept {
    const auto& s = sec.section;
    if (s[0] < 0 || s[1] < 0 || s[2] < 0 || s[0] > (1 << 15) || s[1] > (1 << 15) ||
        s[2] > (1 << 15) || s[0] + s[1] + s[2] != pairs)
        return false;
    return sec.layout == mrope_layout::contiguous ||
           (3 * s[1] <= pairs + 1 && 3 * s[2] <= pairs + 2);
}

/// Per pass: for the interleaved layout, 1.0f / 0.0f lane masks of the pairs of the pass that
/// take the height (`mh`) and the width (`mw`) row; temporal elsewhere. Built once per call and
/// pass, so the per-token gather is three row loads and two selects, no per-pair branch.
template <class Arch>
void mrope_build_masks(const mrope_sections& sec, int p0, int n, float* mh, float* mw) noexcept {
    for (int i = 0; i < n; ++i) {
        const mrope_axis a = sec.axis_of_pair(p0 + i);
        mh[i] = a == mrope_axis::height ? 1.0f : 0.0f;
        mw[i] = a == mrope_axis::width ? 1.0f : 0.0f;
    }
    for (int i = n; i < n + 16; ++i) mh[i] = mw[i] = 0.0f;  // the lanes of a partial batch
}

/// Gathers the interleaved cos (or sin) of pairs [0, n) of the pass from the rows of the three
/// axes (already offset to the pass): out[i] = mh[i] ? rh[i] : mw[i] ? rw[i] : rt[i].
template <class Arch>
ROPEKIT_ALWAYS_INLINE void mrope_blend(const float* rt, const float* rh, const float* rw,
                                       const float* mh, const float* mw, int n,
                                       float* out) noexcept {
    int i = 0;
#if ROPEKIT_HAS_XSIMD
    if constexpr (is_simd_arch<Arch>) {
        using B = xsimd::batch<float, Arch>;
        constexpr int w = int(B::size);
        const B zero(0.0f);
        for (; i + w <= n; i += w) {
            const B v =
                xsimd::select(B::load_aligned(mh + i) != zero, B::load_unaligned(rh + i),
                              xsimd::select(B::load_aligned(mw + i) != zero,
                                            B::load_unaligned(rw + i), B::load_unaligned(rt + i)));
            v.store_aligned(out + i);
        }
        if (i < n) {  // partial loads: the rows may end at the end of the table
            const std::size_t m = std::size_t(n - i);
            const B v = xsimd::select(B::load_aligned(mh + i) != zero,
                                      simd::load_as_float_partial<Arch>(rh + i, m),
                                      xsimd::select(B::load_aligned(mw + i) != zero,
                                                    simd::load_as_float_partial<Arch>(rw + i, m),
                                                    simd::load_as_float_partial<Arch>(rt + i, m)));
            v.store_aligned(out + i);
        }
        return;
    }
#endif
    for (; i < n; ++i) out[i] = mh[i] != 0.0f ? rh[i] : mw[i] != 0.0f ? rw[i] : rt[i];
}

/// The M-RoPE pass over tokens [t0, t1): a token whose three ids are equal (text) uses its
/// table row directly, exactly the 1-D kernel's path; any other token gets each pair's cos/sin
/// from the row of the pair's axis, gathered into the scratch (contiguous sections: three
/// contiguous copies; interleaved: mrope_blend), then the same rotate_token.
template <class Arch, class T>
void run_mrope(const cos_sin_table& table, const mrope_sections& sec, const rope_target<T>* targets,
               int n_targets, const mrope_positions& pos, std::int64_t t0, std::int64_t t1) {
    const int pairs = table.pairs();
    const float* base = table.data();
    const std::ptrdiff_t stride = table.row_stride();
    const std::uint64_t first = std::uint64_t(table.first_position());
    const std::uint64_t n_rows = std::uint64_t(table.rows());
    const rope_geometry geo =
        geometry_of<Arch>(pairs, table.pair_span(), table.rotary_offset(), table.layout());
    const bool interleaved = sec.layout == mrope_layout::interleaved;
    // Contiguous sections: pair bounds of the three axes.
    const int b1 = sec.section[0], b2 = sec.section[0] + sec.section[1];
    auto prepare_pass = [&](int p0, int n, mrope_scratch& sc) {
        if (interleaved) mrope_build_masks<Arch>(sec, p0, n, sc.mrope_h, sc.mrope_w);
    };
    auto lookup = [&](std::int64_t t, int p0, int n, mrope_scratch& sc, const float*& c,
                      const float*& s) {
        const std::int64_t pt = pos.at(0, t), ph = pos.at(1, t), pw = pos.at(2, t);
        // (Differences modulo 2^64, as run_with_table: no signed overflow for any id.)
        const std::uint64_t rt = std::uint64_t(pt) - first, rh = std::uint64_t(ph) - first,
                            rw = std::uint64_t(pw) - first;
        const bool in_table = rt < n_rows && rh < n_rows && rw < n_rows;
        ROPEKIT_ASSERT(in_table, "M-RoPE position outside the cos/sin table");
        if (!in_table) return false;  // (NDEBUG) the token is left as it is
        const float* row_t = base + std::ptrdiff_t(rt) * stride;
        if (pt == ph && ph == pw) {  // text: the 1-D path, bit for bit
            c = row_t + p0;
            s = c + pairs;
            return true;
        }
        const float* row_h = base + std::ptrdiff_t(rh) * stride;
        const float* row_w = base + std::ptrdiff_t(rw) * stride;
        if (interleaved) {
            mrope_blend<Arch>(row_t + p0, row_h + p0, row_w + p0, sc.mrope_h, sc.mrope_w, n,
                              sc.cos);
            mrope_blend<Arch>(row_t + pairs + p0, row_h + pairs + p0, row_w + pairs + p0,
                              sc.mrope_h, sc.mrope_w, n, sc.sin);
        } else {
            const float* rows[3] = {row_t, row_h, row_w};
            const int lo[3] = {0, b1, b2}, hi[3] = {b1, b2, pairs};
            for (int a = 0; a < 3; ++a) {
                const int from = std::max(lo[a], p0), to = std::min(hi[a], p0 + n);
                if (from >= to) continue;
                const std::size_t bytes = std::size_t(to - from) * sizeof(float);
                std::memcpy(sc.cos + (from - p0), rows[a] + from, bytes);
                std::memcpy(sc.sin + (from - p0), rows[a] + pairs + from, bytes);
            }
        }
        c = sc.cos;
        s = sc.sin;
        return true;
    };
    rope_run<Arch, T, decltype(prepare_pass)&, decltype(lookup)&, mrope_scratch>(
        geo, targets, n_targets, t0, t1, prepare_pass, lookup);
}

template <class Arch>
bool check_mrope_positions(const mrope_positions& pos, std::int64_t t0, std::int64_t t1) {
    const bool ok =
        t0 == t1 || pos.which() == mrope_positions::kind::contiguous || pos.id_data() != nullptr;
    ROPEKIT_ASSERT(ok, "M-RoPE position ids must not be null with a non-zero count");
    return ok;
}

template <class Arch>
bool check_mrope_table(const cos_sin_table& table, const mrope_sections& sec) {
    const bool range = table.is_range();
    ROPEKIT_ASSERT(range, "M-RoPE needs a range table (positions are looked up by value)");
    const bool sections = mrope_sections_ok<Arch>(sec, table.pairs());
    ROPEKIT_ASSERT(sections, "mrope_section must be >= 0 and sum to rotary_dim / 2");
    return range && sections;
}

}  // namespace detail

// Cold-path validators (their code depends on the compile flags, see abi.hpp).
ROPEKIT_BEGIN_ISA_NAMESPACE

/// Cold-path check of the M-RoPE positions of tokens [token_begin, token_end) against a range
/// `table`: ids not null, every id of every axis inside the table. Throws ropekit::error
/// (field `positions`, naming the token, the axis and the id).
inline void validate_mrope_positions(const cos_sin_table& table, const mrope_positions& pos,
                                     std::int64_t token_begin, std::int64_t token_end) {
    if (token_begin < 0 || token_end < token_begin)
        detail::fail(
            "token_range", "must satisfy 0 <= token_begin <= token_end",
            "[" + detail::format_value(token_begin) + ", " + detail::format_value(token_end) + ")");
    if (token_begin == token_end) return;
    if (!table.is_range())
        detail::fail("table", "must be a range table (for_range) for M-RoPE", "a list table");
    if (pos.which() != mrope_positions::kind::contiguous && pos.id_data() == nullptr)
        detail::fail("positions", "ids must not be null with a non-zero token count",
                     token_end - token_begin);
    const std::int64_t lo = table.first_position();
    const std::int64_t n = table.rows();
    if (n == 0) detail::fail("positions", "is outside the cos/sin table (it has no rows)", lo);
    const std::int64_t hi = lo + (n - 1);  // (the builders keep |position| < 2^29)
    static const char* const axis_name[3] = {"temporal", "height", "width"};
    auto bad = [&](std::int64_t t, int a, std::int64_t p) {
        detail::fail("positions",
                     ("must be inside the cos/sin table [" + detail::format_value(lo) + ", " +
                      detail::format_value(hi + 1) + ")")
                         .c_str(),
                     "token " + detail::format_value(t) + " " + axis_name[a] + " id " +
                         detail::format_value(p));
    };
    if (pos.which() == mrope_positions::kind::contiguous) {
        const std::int64_t start = pos.at(0, 0);
        if (start > 0 && token_begin > std::numeric_limits<std::int64_t>::max() - start)
            detail::fail("positions", "overflows int64", start);
        const std::int64_t first = start + token_begin;
        if (first < lo || first > hi) bad(token_begin, 0, first);
        if (token_end - 1 - token_begin > hi - first) bad(token_begin + hi - first + 1, 0, hi + 1);
        return;
    }
    for (std::int64_t t = token_begin; t < token_end; ++t)
        for (int a = 0; a < 3; ++a) {
            const std::int64_t p = pos.at(a, t);
            if (p < lo || p > hi) bad(t, a, p);
        }
}

/// The one cold-path check of everything apply_mrope(table, sections, x, pos, token_begin,
/// token_end) needs: a non-empty range table, `sections` valid for its pairs
/// (mrope_sections::validate, field `mrope_section`), the view and the token range (as
/// validate_rope_call, including the geometry: field `rotated_extent`), and every id inside
/// the table (validate_mrope_positions). Throws ropekit::error naming the field.
/// \param table the range table the kernel call will use
/// \param sections the model's mrope_section and layout
/// \param x the view the kernel call will rotate
/// \param pos the three ids per token
/// \param token_begin first token of the call
/// \param token_end one past the last token of the call
template <class T>
void validate_mrope_call(const cos_sin_table& table, const mrope_sections& sections,
                         const head_view<T>& x, const mrope_positions& pos,
                         std::int64_t token_begin, std::int64_t token_end) {
    detail::require(table.pairs() > 0, "table", "must have rotary_dim > 0 (built by for_range)",
                    table.rotary_dim());
    sections.validate(table.pairs());
    detail::validate_call_views<T>(detail::call_geometry_of(table), x, nullptr, token_begin,
                                   token_end);
    validate_mrope_positions(table, pos, token_begin, token_end);
}

/// validate_mrope_call for apply_mrope_qk(table, sections, q, k, pos, ...): both views, and
/// q.tokens == k.tokens. An empty k (heads 0, data may be null) is fine.
template <class T>
void validate_mrope_call(const cos_sin_table& table, const mrope_sections& sections,
                         const head_view<T>& q, const head_view<T>& k, const mrope_positions& pos,
                         std::int64_t token_begin, std::int64_t token_end) {
    detail::require(table.pairs() > 0, "table", "must have rotary_dim > 0 (built by for_range)",
                    table.rotary_dim());
    sections.validate(table.pairs());
    detail::validate_call_views<T>(detail::call_geometry_of(table), q, &k, token_begin, token_end);
    validate_mrope_positions(table, pos, token_begin, token_end);
}

ROPEKIT_END_ISA_NAMESPACE

/// Rotates tokens [token_begin, token_end) of `x` in place with M-RoPE: pair p of token t is
/// rotated by the angle of id `pos.at(sections.axis_of_pair(p), t)`, looked up in the range
/// `table` (built from the text model's frequencies, e.g. base 1e6 for Qwen2-VL; its geometry
/// and layout apply as in apply_rope). A token whose three ids are equal gets exactly
/// apply_rope's result, bit for bit, and the same speed; others gather their angles per pass.
/// \pre a range table; sections valid for table.pairs(); every id inside the table; the rest as
/// apply_rope. ROPEKIT_ASSERTed only; in release builds a bad table, sections, view or token
/// range skips the call and a token with an id outside the table is left unrotated. Check
/// untrusted input first with validate_mrope_call(table, sections, x, pos, token_begin,
/// token_end).
template <class Arch, class T>
void apply_mrope(const cos_sin_table& table, const mrope_sections& sections, head_view<T> x,
                 const mrope_positions& pos, std::int64_t token_begin, std::int64_t token_end) {
    detail::check_arch<Arch>();
    ROPEKIT_TRACE_KERNEL("apply_mrope", Arch::name());
    if (!detail::check_range<Arch>(x.tokens, token_begin, token_end)) return;
    if (token_begin == token_end || x.heads == 0) return;
    if (!detail::check_mrope_table<Arch>(table, sections)) return;
    if (!detail::check_view<Arch>(x, table)) return;
    if (!detail::check_mrope_positions<Arch>(pos, token_begin, token_end)) return;
    const detail::rope_target<T> tg = detail::target_of<Arch>(x, table.rotary_offset());
    detail::run_mrope<Arch, T>(table, sections, &tg, 1, pos, token_begin, token_end);
}

/// Fused q and k M-RoPE (GQA: any head counts): a token's angles are gathered once and applied
/// to all its q and k heads.
/// \pre q.tokens == k.tokens; the rest as apply_mrope.
template <class Arch, class T>
void apply_mrope_qk(const cos_sin_table& table, const mrope_sections& sections, head_view<T> q,
                    head_view<T> k, const mrope_positions& pos, std::int64_t token_begin,
                    std::int64_t token_end) {
    detail::check_arch<Arch>();
    ROPEKIT_TRACE_KERNEL("apply_mrope_qk", Arch::name());
    const bool same_tokens = q.tokens == k.tokens;
    ROPEKIT_ASSERT(same_tokens, "q and k must have the same number of tokens");
    if (!same_tokens || !detail::check_range<Arch>(q.tokens, token_begin, token_end)) return;
    if (token_begin == token_end) return;
    if (!detail::check_mrope_table<Arch>(table, sections)) return;
    if (!detail::check_view<Arch>(q, table) || !detail::check_view<Arch>(k, table)) return;
    if (!detail::check_mrope_positions<Arch>(pos, token_begin, token_end)) return;
    detail::rope_target<T> tg[2];
    const int n = detail::targets_of<Arch>(q, k, tg, table.rotary_offset());
    if (n > 0) detail::run_mrope<Arch, T>(table, sections, tg, n, pos, token_begin, token_end);
}

ROPEKIT_BEGIN_ISA_NAMESPACE

/// apply_mrope<default_arch> on tokens [token_begin, token_end).
template <class T>
void apply_mrope(const cos_sin_table& table, const mrope_sections& sections, head_view<T> x,
                 const mrope_positions& pos, std::int64_t token_begin, std::int64_t token_end) {
    apply_mrope<default_arch, T>(table, sections, x, pos, token_begin, token_end);
}
/// apply_mrope<default_arch> on all tokens of `x`.
template <class T>
void apply_mrope(const cos_sin_table& table, const mrope_sections& sections, head_view<T> x,
                 const mrope_positions& pos) {
    apply_mrope<default_arch, T>(table, sections, x, pos, 0, x.tokens);
}
/// apply_mrope_qk<default_arch> on tokens [token_begin, token_end).
template <class T>
void apply_mrope_qk(const cos_sin_table& table, const mrope_sections& sections, head_view<T> q,
                    head_view<T> k, const mrope_positions& pos, std::int64_t token_begin,
                    std::int64_t token_end) {
    apply_mrope_qk<default_arch, T>(table, sections, q, k, pos, token_begin, token_end);
}

ROPEKIT_END_ISA_NAMESPACE

// ---------------------------------------------------------------------------------------------
// Position ids for a sequence of text, image and video segments (HF's get_rope_index).

/// The model family whose get_rope_index semantics to follow.
enum class mrope_model {
    /// Qwen2-VL: a vision segment's temporal id is its frame index.
    qwen2_vl,
    /// Qwen2.5-VL: a video's temporal id of frame k is `long(k * second_per_grid_t *
    /// tokens_per_second)` (float32 product, truncated); an image's is 0.
    qwen2_5_vl,
    /// Qwen3-VL: a video is split into its frames, each a grid of temporal size 1 whose ids
    /// continue after the previous frame's (the temporal information is in the timestamp text
    /// tokens between frames); images as Qwen2-VL.
    qwen3_vl,
};

/// One run of tokens of a sequence: text, or the placeholder tokens of one image or video.
struct mrope_segment {
    /// What the run is.
    enum class kind { text, image, video };
    kind what = kind::text;   ///< what the run is
    std::int64_t length = 0;  ///< text: number of tokens
    /// image / video: HF's `image_grid_thw` / `video_grid_thw` row, in patches before the
    /// spatial merge (the run has t * (h / merge) * (w / merge) tokens).
    std::array<std::int64_t, 3> grid_thw{};
    /// Qwen2.5-VL video: seconds per temporal grid step (HF `second_per_grid_ts`, 1 when absent).
    double second_per_grid_t = 1.0;

    /// `n` text tokens (including the vision start / end and timestamp tokens around a segment).
    ROPEKIT_ALWAYS_INLINE static mrope_segment text(std::int64_t n) noexcept {
        mrope_segment s;
        s.length = n;
        return s;
    }
    /// One image of grid (t, h, w).
    ROPEKIT_ALWAYS_INLINE static mrope_segment image(std::int64_t t, std::int64_t h,
                                                     std::int64_t w) noexcept {
        mrope_segment s;
        s.what = kind::image;
        s.grid_thw = {t, h, w};
        return s;
    }
    /// One video of grid (t, h, w).
    ROPEKIT_ALWAYS_INLINE static mrope_segment video(std::int64_t t, std::int64_t h, std::int64_t w,
                                                     double second_per_grid_t = 1.0) noexcept {
        mrope_segment s;
        s.what = kind::video;
        s.grid_thw = {t, h, w};
        s.second_per_grid_t = second_per_grid_t;
        return s;
    }
};

/// How get_rope_index builds the ids.
struct mrope_index_options {
    mrope_model model = mrope_model::qwen2_vl;  ///< whose semantics
    int spatial_merge_size = 2;  ///< `vision_config.spatial_merge_size` (2 in every Qwen-VL)
    /// Qwen2.5-VL `vision_config.tokens_per_second` (2 in the released checkpoints).
    double tokens_per_second = 2.0;
    /// Largest sequence accepted (field `tokens` beyond it): the ids take 24 bytes per token.
    std::int64_t max_tokens = std::int64_t(1) << 24;
};

/// The output of get_rope_index.
struct mrope_index {
    /// The (3, tokens) ids, axis-major: temporal ids, then height, then width (HF's
    /// `position_ids[:, 0, :]`).
    std::vector<std::int64_t> position_ids;
    std::int64_t tokens = 0;  ///< sequence length
    /// HF's `mrope_position_deltas`: max id + 1 - tokens. Decode token i (0-based over the whole
    /// sequence, i >= tokens) has all three ids i + rope_delta, i.e. the 1-D position
    /// `mrope_positions::contiguous(tokens + rope_delta)` for the first generated token.
    std::int64_t rope_delta = 0;

    /// The ids as kernel positions (token t of the sequence is view token t).
    ROPEKIT_ALWAYS_INLINE mrope_positions positions() const noexcept {
        return mrope_positions::ids(position_ids.data(), std::ptrdiff_t(tokens));
    }
    /// Id of token t on `axis`.
    ROPEKIT_ALWAYS_INLINE std::int64_t at(int axis, std::int64_t t) const {
        return position_ids[std::size_t(axis * tokens + t)];
    }
};

namespace detail {
ROPEKIT_BEGIN_ISA_NAMESPACE

/// Largest grid side get_rope_index accepts: far above any image (a 2^20-patch side is a
/// 14.7-megapixel-wide image) and small enough that t * h * w cannot overflow int64.
inline constexpr std::int64_t mrope_max_grid = std::int64_t(1) << 20;

/// Tokens of one segment after validating it (named errors; no arithmetic overflow).
inline std::int64_t mrope_segment_tokens(const mrope_segment& s, const mrope_index_options& o,
                                         std::size_t index) {
    const std::string at = "segment " + format_value(index) + ": ";
    if (s.what == mrope_segment::kind::text) {
        if (s.length < 0 || s.length > o.max_tokens)
            fail("length", "of a text segment must be in [0, max_tokens]",
                 at + format_value(s.length));
        return s.length;
    }
    const std::int64_t m = o.spatial_merge_size;
    for (int a = 0; a < 3; ++a) {
        const std::int64_t g = s.grid_thw[std::size_t(a)];
        if (g <= 0 || g > mrope_max_grid)
            fail("grid_thw", "entries must be in [1, 2^20]",
                 at + "grid_thw[" + format_value(a) + "] = " + format_value(g));
        if (a > 0 && g % m != 0)
            fail("grid_thw", "height and width must be multiples of spatial_merge_size",
                 at + "grid_thw[" + format_value(a) + "] = " + format_value(g) +
                     ", spatial_merge_size = " + format_value(m));
    }
    // HF multiplies in float32: a double beyond it would become inf and frame 0's id
    // long(0 * inf) (undefined behaviour; INT64_MIN in practice).
    if (s.what == mrope_segment::kind::video && o.model == mrope_model::qwen2_5_vl &&
        !(fits_f32(s.second_per_grid_t) && s.second_per_grid_t >= 0.0))
        fail("second_per_grid_t", "must be >= 0 and finite in float32",
             at + format_value(s.second_per_grid_t));
    const std::int64_t n = s.grid_thw[0] * (s.grid_thw[1] / m) * (s.grid_thw[2] / m);  // < 2^60
    if (n > o.max_tokens)
        fail("tokens", "of one segment must be <= max_tokens", at + format_value(n));
    return n;
}

ROPEKIT_END_ISA_NAMESPACE
}  // namespace detail

ROPEKIT_BEGIN_ISA_NAMESPACE

/// Builds the (3, n) M-RoPE position ids of a sequence of segments and the decode offset, as
/// HF's `get_rope_index` of Qwen2-VL / Qwen2.5-VL / Qwen3-VL does for one unpadded sequence:
/// text tokens get the same id on all three axes, one more than the previous token's largest
/// id; a vision segment of grid (t, h, w) and merge size m has t * (h/m) * (w/m) tokens in
/// (frame, row, column) order whose ids are start + (temporal id, row, column), start being one
/// more than the largest id before it (temporal id: see mrope_model).
///
/// Validates everything before allocating: spatial_merge_size in [1, 1024], max_tokens in
/// [0, 2^28], grid entries in [1, 2^20] with h and w multiples of the merge size (field
/// `grid_thw`), text lengths >= 0 (`length`), at most max_tokens tokens in all (`tokens`),
/// Qwen2.5-VL's second_per_grid_t >= 0 and tokens_per_second > 0, both finite in float32 (HF's
/// product is a float32 one), and
/// every id below 2^29, the range cos_sin_table serves (`position_ids`).
/// \param segments the runs of the sequence, in order
/// \param count number of segments
/// \param options model family, merge size, limits
inline mrope_index get_rope_index(const mrope_segment* segments, std::size_t count,
                                  const mrope_index_options& options) {
    const mrope_index_options& o = options;
    detail::require(o.spatial_merge_size >= 1 && o.spatial_merge_size <= 1024, "spatial_merge_size",
                    "must be in [1, 1024]", o.spatial_merge_size);
    detail::require(o.max_tokens >= 0 && o.max_tokens <= (std::int64_t(1) << 28), "max_tokens",
                    "must be in [0, 2^28]", o.max_tokens);
    if (o.model == mrope_model::qwen2_5_vl)
        detail::require_positive_f32(o.tokens_per_second, "tokens_per_second");
    detail::require(count == 0 || segments != nullptr, "segments",
                    "must not be null with a non-zero count", count);
    std::int64_t total = 0;
    for (std::size_t i = 0; i < count; ++i) {
        total += detail::mrope_segment_tokens(segments[i], o, i);  // each <= max_tokens <= 2^28
        if (total > o.max_tokens)
            detail::fail("tokens", "of the sequence must be <= max_tokens", total);
    }
    mrope_index r;
    r.tokens = total;
    r.position_ids.resize(std::size_t(3 * total));
    std::int64_t* ids_t = r.position_ids.data();
    std::int64_t* ids_h = ids_t + total;
    std::int64_t* ids_w = ids_h + total;
    const std::int64_t limit = table_position_limit;  // ids must stay below 2^29
    std::int64_t next = 0;                            // one more than the largest id so far
    std::int64_t k = 0;                               // tokens written
    auto too_large = [&](std::size_t seg, double id) {
        detail::fail(
            "position_ids", "must stay below 2^29 (table_position_limit)",
            "segment " + detail::format_value(seg) + " reaches " + detail::format_value(id));
    };
    for (std::size_t i = 0; i < count; ++i) {
        const mrope_segment& s = segments[i];
        if (s.what == mrope_segment::kind::text) {
            if (s.length > 0 && next + s.length - 1 >= limit)
                too_large(i, double(next + s.length - 1));
            for (std::int64_t j = 0; j < s.length; ++j, ++k)
                ids_t[k] = ids_h[k] = ids_w[k] = next + j;
            next += s.length;
            continue;
        }
        const std::int64_t m = o.spatial_merge_size;
        const std::int64_t gt = s.grid_thw[0], gh = s.grid_thw[1] / m, gw = s.grid_thw[2] / m;
        const bool video = s.what == mrope_segment::kind::video;
        // Qwen3-VL: each video frame is its own grid of temporal size 1.
        const bool per_frame = video && o.model == mrope_model::qwen3_vl;
        const std::int64_t blocks = per_frame ? gt : 1, frames = per_frame ? 1 : gt;
        for (std::int64_t b = 0; b < blocks; ++b) {
            std::int64_t max_t = 0;
            for (std::int64_t f = 0; f < frames; ++f) {
                std::int64_t tid = f;
                if (o.model == mrope_model::qwen2_5_vl) {
                    if (!video) {
                        tid = 0;  // HF: second_per_grid_t = 0 for images
                    } else {
                        // HF: arange(t) * second_per_grid_t * tokens_per_second in float32,
                        // then .long() (truncation toward zero).
                        // The check is on that float32 product itself: it overflows where the
                        // exact one does not (frame 2 x 3e38 x 1e-45), and int64(inf) is UB.
                        const float v =
                            float(f) * float(s.second_per_grid_t) * float(o.tokens_per_second);
                        if (!(std::isfinite(v) && double(next) + double(v) < double(limit)))
                            too_large(i, double(next) + double(v));
                        tid = std::int64_t(v);
                    }
                }
                max_t = std::max(max_t, tid);
                for (std::int64_t y = 0; y < gh; ++y)
                    for (std::int64_t x = 0; x < gw; ++x, ++k) {
                        ids_t[k] = next + tid;
                        ids_h[k] = next + y;
                        ids_w[k] = next + x;
                    }
            }
            const std::int64_t top = next + std::max(max_t, std::max(gh, gw) - 1);
            if (top >= limit) too_large(i, double(top));
            next = top + 1;
        }
    }
    r.rope_delta = next - total;
    return r;
}

/// get_rope_index over a vector of segments.
inline mrope_index get_rope_index(const std::vector<mrope_segment>& segments,
                                  const mrope_index_options& options) {
    return get_rope_index(segments.data(), segments.size(), options);
}

ROPEKIT_END_ISA_NAMESPACE

ROPEKIT_END_NAMESPACE
