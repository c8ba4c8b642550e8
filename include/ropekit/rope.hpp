// SPDX-License-Identifier: Apache-2.0
/// \file
/// Applying rotary position embeddings in place: strided q/k views, positions, the fused q+k
/// call for GQA, and re-rotation of cached keys by a delta or onto new frequencies.
///
/// Every kernel is a template on an architecture tag (`apply_rope<xsimd::avx2>(...)`); the
/// overloads without one use ropekit::default_arch, i.e. the caller's compile flags. The kernels
/// never allocate, never throw, check their preconditions with ROPEKIT_ASSERT, work on the
/// token range [token_begin, token_end) they are given (so an engine splits a call over its own
/// threads) and only read the shared table or frequencies (safe from many threads at once).
///
/// Math is float whatever the storage; bfloat16 and half results are rounded to nearest even.
/// Only the channels of the geometry's pairs are read or written (rope_frequencies: NeoX pair i
/// is channels (rotary_offset + i, rotary_offset + i + pair_span), GPT-J pair i is
/// (rotary_offset + 2i, rotary_offset + 2i + 1)); every other channel of every head is never
/// touched, so pass-through channels keep their bits (ordinary partial rotary: [rotary_dim,
/// head_dim); Gemma 4's proportional RoPE: the non-rotated pairs of both halves; DeepSeek's MLA:
/// the qk_nope_head_dim channels before the rotary slice).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <type_traits>

#include "arch.hpp"
#include "config.hpp"
#include "detail/rope_kernels.hpp"
#include "detail/rope_store_kernels.hpp"
#include "error.hpp"
#include "layout.hpp"
#include "positions.hpp"
#include "storage.hpp"
#include "table.hpp"
#include "view.hpp"

ROPEKIT_BEGIN_NAMESPACE

/// Largest |position| the table-free kernels handle exactly: below 2^29, `position *
/// inv_freq` (a 24-bit float times an integer) is exact in double and the quarter-turn
/// reduction is exact as well.
inline constexpr std::int64_t table_free_position_limit = std::int64_t(1) << 29;
static_assert(table_free_position_limit == table_position_limit,
              "tables and table-free kernels share one accuracy contract");

ROPEKIT_BEGIN_ISA_NAMESPACE

/// Cold-path check, for untrusted positions, of everything apply_rope / apply_rope_qk /
/// rerotate_keys(table) need from `pos` on tokens [token_begin, token_end) with `table`:
/// with a range table, every position is inside it; with a list table, `pos` is
/// positions::table_rows() and the table has at least token_end rows; ids are not null.
/// Throws ropekit::error naming the first offending token index and its position. Reads the
/// ids once; call it before the hot call (which only ROPEKIT_ASSERTs, see apply_rope).
/// \param table the table the kernel call will use
/// \param pos the positions the kernel call will use
/// \param token_begin first token of the call
/// \param token_end one past the last token of the call
inline void validate_positions(const cos_sin_table& table, const positions& pos,
                               std::int64_t token_begin, std::int64_t token_end) {
    if (!detail::validate_positions_common(pos, token_begin, token_end)) return;
    if (pos.which() == positions::kind::table_rows) {
        if (table.is_range())
            detail::fail("positions", "table_rows() needs a list table (for_positions)",
                         "a range table");
        if (token_end > table.rows())
            detail::position_error(
                std::max(token_begin, table.rows()), std::max(token_begin, table.rows()),
                "has no row: the list table has " + detail::format_value(table.rows()) + " rows");
        return;
    }
    if (!table.is_range())
        detail::fail("positions", "must be table_rows() with a list table", "positions by value");
    const std::int64_t lo = table.first_position();
    const std::int64_t n = table.rows();
    if (n == 0)
        detail::position_error(token_begin, pos.at(token_begin),
                               "is outside the cos/sin table (it has no rows)");
    // Last position of the table. The builders keep |position| < 2^29, so lo + (n - 1) fits;
    // the check keeps the arithmetic defined for any table all the same.
    if (lo > 0 && n - 1 > std::numeric_limits<std::int64_t>::max() - lo)
        detail::fail("table", "ends past INT64_MAX", lo);
    const std::int64_t hi = lo + (n - 1);
    detail::for_each_position(
        pos, token_begin, token_end, lo, hi, [&](std::int64_t t, std::int64_t p) {
            detail::position_error(t, p,
                                   "is outside the cos/sin table [" + detail::format_value(lo) +
                                       ", " + detail::format_value(hi + 1) + ")");
        });
}

/// Cold-path check, for untrusted positions (or deltas), of the table-free kernels
/// (apply_rope / apply_rope_qk / rerotate_keys / rebase_keys with rope_frequencies) on tokens
/// [token_begin, token_end): every |position| < 2^29 (table_free_position_limit) and, when
/// some |inv_freq| > 1, every |position * inv_freq| < 2^29 too; not positions::table_rows();
/// ids not null. Throws ropekit::error naming the first offending token index and its
/// position.
/// \param freqs the frequencies the kernel call will use
/// \param pos the positions (or deltas) the kernel call will use
/// \param token_begin first token of the call
/// \param token_end one past the last token of the call
inline void validate_positions(const rope_frequencies& freqs, const positions& pos,
                               std::int64_t token_begin, std::int64_t token_end) {
    if (!detail::validate_positions_common(pos, token_begin, token_end)) return;
    if (pos.which() == positions::kind::table_rows)
        detail::fail("positions", "table_rows() needs a list table, not rope_frequencies",
                     "table_rows()");
    bool big_inv = false;
    for (float f : freqs.inv_freq) big_inv = big_inv || !(std::fabs(f) <= 1.0f);
    // Largest accepted |position|: 2^29 - 1, or less when an inv_freq exceeds 1.
    const std::int64_t hi = detail::max_accurate_position(freqs.inv_freq);
    if (hi < 0)
        detail::fail("inv_freq", "must be finite (no position is accurate)", "a NaN or inf entry");
    detail::for_each_position(
        pos, token_begin, token_end, -hi, hi, [&](std::int64_t t, std::int64_t p) {
            detail::position_error(t, p,
                                   big_inv
                                       ? "is too large for the table-free kernels: |position * "
                                         "inv_freq| must be < 2^29"
                                       : "is too large for the table-free kernels: |position| must "
                                         "be < 2^29");
        });
}

ROPEKIT_END_ISA_NAMESPACE

namespace detail {
ROPEKIT_BEGIN_ISA_NAMESPACE

/// The channels a call rotates, for the validators: rotary_dim, and the reach
/// rotary_offset + rotated_extent (one past the last channel touched).
struct call_geometry {
    int rotary_dim;
    int offset;
    int extent;
};

/// The checks validate_rope_call shares between its overloads: the view, the token range
/// inside it, rotary_dim <= head_dim and rotary_offset + rotated_extent <= head_dim.
template <class T>
void validate_call_view(const char* name, const head_view<T>& v, const call_geometry& geo,
                        std::int64_t token_begin, std::int64_t token_end) {
    v.validate();
    if (v.tokens > 0 && v.heads > 0 && geo.rotary_dim > v.head_dim)
        fail("rotary_dim", "must be <= the view's head_dim",
             std::string(name) + ": rotary_dim=" + format_value(geo.rotary_dim) +
                 " head_dim=" + format_value(v.head_dim));
    if (v.tokens > 0 && v.heads > 0 && std::int64_t(geo.offset) + geo.extent > v.head_dim)
        fail("rotated_extent",
             "rotary_offset + rotated_extent (pair_span + rotary_dim / 2 for NeoX, rotary_dim "
             "for GPT-J) must be <= the view's head_dim",
             std::string(name) + ": rotary_offset=" + format_value(geo.offset) +
                 " rotated_extent=" + format_value(geo.extent) +
                 " head_dim=" + format_value(v.head_dim));
    if (token_begin < 0 || token_end < token_begin || token_end > v.tokens)
        fail("token_range", "must satisfy 0 <= token_begin <= token_end <= tokens",
             std::string(name) + ": [" + format_value(token_begin) + ", " +
                 format_value(token_end) + ") with tokens=" + format_value(v.tokens));
}

template <class T>
void validate_call_views(const call_geometry& geo, const head_view<T>& q, const head_view<T>* k,
                         std::int64_t token_begin, std::int64_t token_end) {
    validate_call_view(k ? "q" : "x", q, geo, token_begin, token_end);
    if (!k) return;
    if (q.tokens != k->tokens)
        fail("tokens", "of q and k must be equal",
             "q.tokens=" + format_value(q.tokens) + " k.tokens=" + format_value(k->tokens));
    validate_call_view("k", *k, geo, token_begin, token_end);
}

inline call_geometry call_geometry_of(const cos_sin_table& t) {
    return {t.rotary_dim(), t.rotary_offset(), t.rotated_extent()};
}
inline call_geometry call_geometry_of(const rope_frequencies& f) {
    return {f.rotary_dim, f.rotary_offset, f.rotated_extent()};
}

ROPEKIT_END_ISA_NAMESPACE
}  // namespace detail

ROPEKIT_BEGIN_ISA_NAMESPACE

/// The one cold-path check of everything a table kernel call needs, so that no call the
/// validators accept is then skipped or cut short by the kernel: the view (validate(), plus
/// validate(extent) yourself when the buffer size is known), the table (non-empty, rotary_dim
/// <= the view's head_dim: field `rotary_dim`; rotary_offset + rotated_extent <= head_dim: field
/// `rotated_extent`), the token range inside the view, and the positions
/// (validate_positions). Call it with the arguments of apply_rope(table, x, pos, token_begin,
/// token_end) or rerotate_keys(table, ...); throws ropekit::error naming the field.
/// \param table the table the kernel call will use
/// \param x the view the kernel call will rotate
/// \param pos the positions the kernel call will use
/// \param token_begin first token of the call
/// \param token_end one past the last token of the call
template <class T>
void validate_rope_call(const cos_sin_table& table, const head_view<T>& x, const positions& pos,
                        std::int64_t token_begin, std::int64_t token_end) {
    detail::require(table.pairs() > 0, "table",
                    "must have rotary_dim > 0 (built by for_range "
                    "or for_positions)",
                    table.rotary_dim());
    detail::validate_call_views<T>(detail::call_geometry_of(table), x, nullptr, token_begin,
                                   token_end);
    validate_positions(table, pos, token_begin, token_end);
}

/// validate_rope_call for apply_rope_qk(table, q, k, pos, token_begin, token_end): both
/// views as above, and q.tokens == k.tokens. An empty k (heads 0, data may be null) is fine.
template <class T>
void validate_rope_call(const cos_sin_table& table, const head_view<T>& q, const head_view<T>& k,
                        const positions& pos, std::int64_t token_begin, std::int64_t token_end) {
    detail::require(table.pairs() > 0, "table",
                    "must have rotary_dim > 0 (built by for_range "
                    "or for_positions)",
                    table.rotary_dim());
    detail::validate_call_views<T>(detail::call_geometry_of(table), q, &k, token_begin, token_end);
    validate_positions(table, pos, token_begin, token_end);
}

/// validate_rope_call for the table-free kernels: apply_rope(freqs, x, ...) and
/// rerotate_keys(freqs, x, deltas, ...). Also validates `freqs` (rope_frequencies::validate).
template <class T>
void validate_rope_call(const rope_frequencies& freqs, const head_view<T>& x, const positions& pos,
                        std::int64_t token_begin, std::int64_t token_end) {
    freqs.validate();
    detail::validate_call_views<T>(detail::call_geometry_of(freqs), x, nullptr, token_begin,
                                   token_end);
    validate_positions(freqs, pos, token_begin, token_end);
}

/// validate_rope_call for the table-free apply_rope_qk(freqs, q, k, ...).
template <class T>
void validate_rope_call(const rope_frequencies& freqs, const head_view<T>& q, const head_view<T>& k,
                        const positions& pos, std::int64_t token_begin, std::int64_t token_end) {
    freqs.validate();
    detail::validate_call_views<T>(detail::call_geometry_of(freqs), q, &k, token_begin, token_end);
    validate_positions(freqs, pos, token_begin, token_end);
}

/// validate_rope_call for rebase_keys(from, to, k, pos, ...): both frequency sets valid, with
/// the same rotary_dim, layout and geometry (pair span, rotary offset), and the positions
/// accurate for both.
template <class T>
void validate_rebase_call(const rope_frequencies& from, const rope_frequencies& to,
                          const head_view<T>& k, const positions& pos, std::int64_t token_begin,
                          std::int64_t token_end) {
    from.validate();
    detail::require(from.rotary_dim == to.rotary_dim, "rotary_dim", "of from and to must be equal",
                    from.rotary_dim);
    detail::require(from.layout == to.layout, "layout", "of from and to must be equal",
                    to_string(from.layout));
    detail::require(from.neox_pair_span() == to.neox_pair_span(), "pair_span",
                    "of from and to must be equal", from.pair_span);
    detail::require(from.rotary_offset == to.rotary_offset, "rotary_offset",
                    "of from and to must be equal", from.rotary_offset);
    validate_rope_call(to, k, pos, token_begin, token_end);
    validate_positions(from, pos, token_begin, token_end);
}

ROPEKIT_END_ISA_NAMESPACE

namespace detail {
ROPEKIT_BEGIN_ISA_NAMESPACE

/// The view checks of validate_rope_store_call: equal shapes (fields `tokens`, `heads`,
/// `head_dim`), a q8_0 head_dim that is a whole number of blocks (`head_dim`), the single-pass
/// limit (`rotary_dim`), then both views as validate_rope_call checks one.
template <class Dst>
void validate_store_views(const call_geometry& geo, const head_view<const float>& src,
                          const head_view<Dst>& dst, std::int64_t token_begin,
                          std::int64_t token_end) {
    require(src.tokens == dst.tokens, "tokens", "of src and dst must be equal",
            "src.tokens=" + format_value(src.tokens) + " dst.tokens=" + format_value(dst.tokens));
    require(src.heads == dst.heads, "heads", "of src and dst must be equal",
            "src.heads=" + format_value(src.heads) + " dst.heads=" + format_value(dst.heads));
    require(src.head_dim == dst.head_dim, "head_dim", "of src and dst must be equal",
            "src.head_dim=" + format_value(src.head_dim) +
                " dst.head_dim=" + format_value(dst.head_dim));
    if constexpr (std::is_same_v<Dst, block_q8_0>)
        require(dst.head_dim % q8_0_block_values == 0, "head_dim",
                "must be a multiple of 32 for a block_q8_0 destination", dst.head_dim);
    require(geo.rotary_dim <= 2 * rope_chunk_pairs, "rotary_dim",
            "must be <= 512 for rope_store (one pass of angles per token)", geo.rotary_dim);
    validate_call_view("src", src, geo, token_begin, token_end);
    validate_call_view("dst", dst, geo, token_begin, token_end);
}

ROPEKIT_END_ISA_NAMESPACE
}  // namespace detail

ROPEKIT_BEGIN_ISA_NAMESPACE

/// The one cold-path check of everything rope_store(table, src, dst, pos, token_begin,
/// token_end) needs: both views valid (validate(extent) them yourself when the buffer sizes are
/// known), src and dst with the same tokens, heads and head_dim, a block_q8_0 head_dim a
/// multiple of 32, the table non-empty with rotary_dim <= 512 and its geometry inside head_dim,
/// the token range inside the views and the positions inside the table (validate_positions).
/// Throws ropekit::error naming the field (`tokens`, `heads`, `head_dim`, `rotary_dim`,
/// `rotated_extent`, `token_range`, `head_view`, `table`, `positions`).
/// \param table the table the kernel call will use
/// \param src the float rows the call will read
/// \param dst the rows the call will write
/// \param pos the positions the kernel call will use
/// \param token_begin first token of the call
/// \param token_end one past the last token of the call
template <class Dst>
void validate_rope_store_call(const cos_sin_table& table, const head_view<const float>& src,
                              const head_view<Dst>& dst, const positions& pos,
                              std::int64_t token_begin, std::int64_t token_end) {
    detail::require(table.pairs() > 0, "table",
                    "must have rotary_dim > 0 (built by for_range or for_positions)",
                    table.rotary_dim());
    detail::validate_store_views(detail::call_geometry_of(table), src, dst, token_begin, token_end);
    validate_positions(table, pos, token_begin, token_end);
}

/// validate_rope_store_call for the table-free rope_store(freqs, src, dst, ...): also validates
/// `freqs` (rope_frequencies::validate) and the position bound of the table-free kernels.
template <class Dst>
void validate_rope_store_call(const rope_frequencies& freqs, const head_view<const float>& src,
                              const head_view<Dst>& dst, const positions& pos,
                              std::int64_t token_begin, std::int64_t token_end) {
    freqs.validate();
    detail::validate_store_views(detail::call_geometry_of(freqs), src, dst, token_begin, token_end);
    validate_positions(freqs, pos, token_begin, token_end);
}

ROPEKIT_END_ISA_NAMESPACE

namespace detail {

template <class Arch>
constexpr void check_arch() noexcept {
#if !ROPEKIT_HAS_XSIMD
    static_assert(std::is_same_v<Arch, scalar_arch>,
                  "without xsimd (or with ROPEKIT_NO_SIMD) only ropekit::scalar_arch exists");
#endif
}

// The precondition checks return whether the call may proceed: with ROPEKIT_ASSERT compiled out
// (NDEBUG) a violated precondition skips the work instead of reading or writing out of bounds.
// Every helper a kernel calls is a template on Arch, even where Arch is unused: see
// detail::find_rope_gap (per-ISA translation units must never share a non-template copy).

template <class Arch, class T>
bool check_view(const head_view<T>& v, int rotary_dim, int offset, int extent) {
    static_assert(is_storage_type_v<std::remove_const_t<T>>,
                  "ropekit storage is float, bfloat16 or half");
    const bool view_ok =
        detail::view_problem<Arch>(v.data, v.tokens, v.heads, v.head_dim, v.token_stride,
                                   v.head_stride, sizeof(T)) == nullptr;
    ROPEKIT_ASSERT(view_ok, "invalid head_view (null data, bad counts or overlapping strides)");
    const bool even = rotary_dim > 0 && rotary_dim % 2 == 0;
    ROPEKIT_ASSERT(even, "rotary_dim must be even and > 0");
    const bool geometry_ok = offset >= 0 && extent >= rotary_dim;
    ROPEKIT_ASSERT(geometry_ok, "rotary_offset must be >= 0 and the pair span >= rotary_dim / 2");
    const bool fits = (rotary_dim <= v.head_dim && std::int64_t(offset) + extent <= v.head_dim) ||
                      v.tokens == 0 || v.heads == 0;  // (nothing to rotate)
    ROPEKIT_ASSERT(fits, "rotary_offset + rotated_extent must be <= head_dim");
    return view_ok && even && geometry_ok && fits;
}

template <class Arch, class T>
bool check_view(const head_view<T>& v, const cos_sin_table& table) {
    return check_view<Arch>(v, table.rotary_dim(), table.rotary_offset(), table.rotated_extent());
}

template <class Arch, class T>
bool check_view(const head_view<T>& v, const rope_frequencies& f) {
    return check_view<Arch>(v, f.rotary_dim, f.rotary_offset, f.rotated_extent());
}

template <class Arch>
bool check_range(std::int64_t tokens, std::int64_t t0, std::int64_t t1) {
    const bool ok = 0 <= t0 && t0 <= t1 && t1 <= tokens;
    ROPEKIT_ASSERT(ok, "token range outside the view");
    return ok;
}

template <class Arch>
bool check_positions(const positions& pos, std::int64_t t0, std::int64_t t1) {
    const bool ok =
        t0 == t1 ||
        (pos.which() != positions::kind::ids32 && pos.which() != positions::kind::ids64) ||
        pos.id_data() != nullptr;
    ROPEKIT_ASSERT(ok, "position ids must not be null with a non-zero count");
    return ok;
}

/// rope_store's view checks (the apply_rope ones for two views): both views usable, the same
/// tokens, heads and head_dim, an even rotary_dim of at most 512 (one pass) and the geometry
/// inside head_dim. Returns whether the call may proceed.
template <class Arch, class Dst>
bool check_store_views(const head_view<const float>& src, const head_view<Dst>& dst, int rotary_dim,
                       int offset, int extent) {
    static_assert(is_kv_storage_type_v<Dst>,
                  "rope_store writes float, bfloat16, half or block_q8_0 (non-const)");
    const bool same =
        src.tokens == dst.tokens && src.heads == dst.heads && src.head_dim == dst.head_dim;
    ROPEKIT_ASSERT(same, "rope_store: src and dst must have the same tokens, heads and head_dim");
    const bool dst_ok = view_problem<Arch>(dst.data, dst.tokens, dst.heads, dst.head_dim,
                                           dst.token_stride, dst.head_stride, sizeof(Dst), nullptr,
                                           values_per_element_v<Dst>) == nullptr;
    ROPEKIT_ASSERT(dst_ok, "invalid head_view (null data, bad counts or overlapping strides)");
    const bool one_pass = rotary_dim <= 2 * rope_chunk_pairs;
    ROPEKIT_ASSERT(one_pass, "rope_store: rotary_dim must be <= 512");
    // The source view, the pair count and the geometry: apply_rope's own checks.
    const bool src_ok = check_view<Arch>(src, rotary_dim, offset, extent);
    return same && dst_ok && one_pass && src_ok;
}

/// The rows of a rope_store call, strides of unused dimensions zeroed (as target_of).
template <class Arch, class Dst>
store_target<Dst> store_target_of(const head_view<const float>& src,
                                  const head_view<Dst>& dst) noexcept {
    const bool many_t = src.tokens > 1, many_h = src.heads > 1;
    return {src.data,
            many_t ? src.token_stride : 0,
            many_h ? src.head_stride : 0,
            dst.data,
            many_t ? dst.token_stride : 0,
            many_h ? dst.head_stride : 0,
            src.heads,
            src.head_dim};
}

/// The table angle source, shared by apply_rope and rope_store: checks what the table needs
/// from `pos` (kind, rows) and calls `run(geometry, prepare, lookup)` with the rope_run
/// callables (see rope_run); a token whose position is outside a range table is skipped.
template <class Arch, class Run>
void with_table_source(const cos_sin_table& table, const positions& pos, std::int64_t t1,
                       Run&& run) {
    const bool rows = pos.which() == positions::kind::table_rows;
    const bool kind_ok = rows != table.is_range();
    ROPEKIT_ASSERT(kind_ok,
                   "range tables take positions, list tables take positions::table_rows()");
    const bool rows_ok = !rows || t1 <= table.rows();
    ROPEKIT_ASSERT(rows_ok, "list table has fewer rows than tokens");
    if (!kind_ok || !rows_ok) return;
    const int pairs = table.pairs();
    const float* base = table.data();
    const std::ptrdiff_t stride = table.row_stride();
    const std::int64_t first = table.first_position();
    const std::int64_t n_rows = table.rows();
    const rope_geometry geo =
        geometry_of<Arch>(pairs, table.pair_span(), table.rotary_offset(), table.layout());
    run(
        geo, [](int, int, rope_scratch&) {},
        [&](std::int64_t t, int p0, int, rope_scratch&, const float*& c, const float*& s) {
            // (Difference taken modulo 2^64: a position below `first` or more than 2^63 past it
            // comes out negative, so no signed overflow for any position.)
            const std::int64_t r =
                rows ? t : std::int64_t(std::uint64_t(pos.at(t)) - std::uint64_t(first));
            const bool in_table = r >= 0 && r < n_rows;
            ROPEKIT_ASSERT(in_table, "position outside the cos/sin table");
            if (!in_table) return false;  // (NDEBUG) the token is left as it is
            c = base + r * stride + p0;
            s = c + pairs;
            return true;
        });
}

/// The table-free angle source, shared by apply_rope, rebase_keys and rope_store: angles
/// `pos * (inv_freq - inv_from)` computed per token (reused while the position repeats).
template <class Arch, class Run>
void with_table_free_source(const rope_frequencies& freqs, const float* inv_from,
                            const positions& pos, Run&& run) {
    const bool sizes_ok = freqs.inv_freq.size() == std::size_t(freqs.pairs());
    ROPEKIT_ASSERT(sizes_ok, "inv_freq must have rotary_dim/2 entries");
    const bool kind_ok = pos.which() != positions::kind::table_rows;
    ROPEKIT_ASSERT(kind_ok, "positions::table_rows() needs a list table");
    if (!sizes_ok || !kind_ok) return;
    table_free_angles<Arch> angles{freqs.inv_freq.data(), inv_from};
    const rope_geometry geo =
        geometry_of<Arch>(freqs.pairs(), freqs.neox_pair_span(), freqs.rotary_offset, freqs.layout);
    run(
        geo, [&](int p0, int n, rope_scratch& sc) { angles.prepare(p0, n, sc); },
        [&](std::int64_t t, int, int n, rope_scratch& sc, const float*& c, const float*& s) {
            angles.compute(double(pos.at(t)), n, sc);
            c = sc.cos;
            s = sc.sin;
            return true;
        });
}

template <class Arch, class T>
void run_with_table(const cos_sin_table& table, const rope_target<T>* targets, int n_targets,
                    const positions& pos, std::int64_t t0, std::int64_t t1) {
    with_table_source<Arch>(table, pos, t1,
                            [&](const rope_geometry& geo, auto&& prepare, auto&& lookup) {
                                rope_run<Arch, T>(geo, targets, n_targets, t0, t1, prepare, lookup);
                            });
}

template <class Arch, class T>
void run_table_free(const rope_frequencies& freqs, const float* inv_from,
                    const rope_target<T>* targets, int n_targets, const positions& pos,
                    std::int64_t t0, std::int64_t t1) {
    with_table_free_source<Arch>(
        freqs, inv_from, pos, [&](const rope_geometry& geo, auto&& prepare, auto&& lookup) {
            rope_run<Arch, T>(geo, targets, n_targets, t0, t1, prepare, lookup);
        });
}

// The kernels add `t * token_stride` for every token of the range and step `row += head_stride`
// once past the last head. A stride the view never uses (its count is 1, or the view is empty)
// may be anything, even near 2^63, and an empty view may have null data: such strides become 0
// here, so no pointer arithmetic wraps or offsets a null pointer. A non-empty target starts at
// the geometry's first rotated channel (`offset`, checked <= head_dim by check_view).
template <class Arch, class T>
rope_target<T> target_of(const head_view<T>& v, int offset = 0) noexcept {
    if (v.tokens <= 0 || v.heads <= 0) return {v.data, 0, 0, 0};
    return {v.data + offset, v.heads, v.tokens > 1 ? v.token_stride : 0,
            v.heads > 1 ? v.head_stride : 0};
}

// The non-empty ones of q and k, in that order; returns how many. An empty view (k of a q-only
// call, often with null data) is left out entirely: the kernels add the pass offset and the
// token offset to every target's data before looking at its head count, and an offset added to
// a null pointer is undefined behaviour.
template <class Arch, class T>
int targets_of(const head_view<T>& q, const head_view<T>& k, rope_target<T> (&out)[2],
               int offset = 0) noexcept {
    int n = 0;
    if (q.tokens > 0 && q.heads > 0) out[n++] = target_of<Arch>(q, offset);
    if (k.tokens > 0 && k.heads > 0) out[n++] = target_of<Arch>(k, offset);
    return n;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Architecture-explicit kernels (what runtime-dispatching engines instantiate per TU).

/// Rotates tokens [token_begin, token_end) of `x` in place with angles from `table`
/// (a range table looked up by position, or a list table with positions::table_rows()).
/// The layout, rotary_dim and geometry (pair span, rotary offset) are the table's.
/// \pre rotary_offset + rotated_extent <= x.head_dim; [token_begin, token_end) inside the view;
/// with a range table every position inside it, with a list table `pos` is positions::table_rows()
/// and the table has >= token_end rows; ids not null. These are checked with ROPEKIT_ASSERT only.
/// **Release builds** (ROPEKIT_ASSERT compiled out, the default under NDEBUG): nothing is ever
/// read or written out of bounds, but nothing reports the error either. A token whose position
/// is outside a range table is silently left unrotated (the other tokens are rotated); a bad
/// view, token range, null ids, a list table with too few rows or a table kind that does not
/// match `pos` skips the whole call. Check untrusted input first with
/// validate_rope_call(table, x, pos, token_begin, token_end) (view, token range, rotary_dim
/// and positions in one call; validate(extent) checks the view against its buffer), which
/// throws ropekit::error naming the field, or the token and position.
template <class Arch, class T>
void apply_rope(const cos_sin_table& table, head_view<T> x, const positions& pos,
                std::int64_t token_begin, std::int64_t token_end) {
    detail::check_arch<Arch>();
    ROPEKIT_TRACE_KERNEL("apply_rope", Arch::name());
    if (!detail::check_range<Arch>(x.tokens, token_begin, token_end)) return;
    if (token_begin == token_end || x.heads == 0) return;
    if (!detail::check_view<Arch>(x, table)) return;
    if (!detail::check_positions<Arch>(pos, token_begin, token_end)) return;
    const detail::rope_target<T> tg = detail::target_of<Arch>(x, table.rotary_offset());
    detail::run_with_table<Arch, T>(table, &tg, 1, pos, token_begin, token_end);
}

/// Table-free: rotates tokens [token_begin, token_end) of `x` by `position * inv_freq[i]`,
/// computed on the fly (exact double product and reduction, ~0.5 ulp float cos/sin).
/// \pre freqs.rotary_offset + freqs.rotated_extent() <= x.head_dim; |position| < 2^29 (and
/// |position * inv_freq| < 2^29 if an inv_freq exceeds 1); the rest as the table overload. The
/// position bound is not checked at all, in any build: beyond it the angle's error grows with
/// |position| (measured up to 4e-7 rad at 2^32 and 0.5 rad at 2^52), and from about 2^55 the result
/// is not even a rotation (magnitudes blow up, up to inf). The other preconditions are
/// ROPEKIT_ASSERTed; in release builds a violation skips the whole call. Check untrusted input
/// first with validate_rope_call(freqs, x, pos, token_begin, token_end) (frequencies, view, token
/// range, rotary_dim and the position bound in one call), which throws ropekit::error naming the
/// field, or the token and position.
template <class Arch, class T>
void apply_rope(const rope_frequencies& freqs, head_view<T> x, const positions& pos,
                std::int64_t token_begin, std::int64_t token_end) {
    detail::check_arch<Arch>();
    ROPEKIT_TRACE_KERNEL("apply_rope", Arch::name());
    if (!detail::check_range<Arch>(x.tokens, token_begin, token_end)) return;
    if (token_begin == token_end || x.heads == 0) return;
    if (!detail::check_view<Arch>(x, freqs)) return;
    if (!detail::check_positions<Arch>(pos, token_begin, token_end)) return;
    const detail::rope_target<T> tg = detail::target_of<Arch>(x, freqs.rotary_offset);
    detail::run_table_free<Arch, T>(freqs, nullptr, &tg, 1, pos, token_begin, token_end);
}

/// Fused q and k (GQA: any head counts): the angles of a token are fetched or computed once and
/// applied to all its q heads and k heads.
/// \pre q.tokens == k.tokens; the rest as apply_rope.
template <class Arch, class T>
void apply_rope_qk(const cos_sin_table& table, head_view<T> q, head_view<T> k, const positions& pos,
                   std::int64_t token_begin, std::int64_t token_end) {
    detail::check_arch<Arch>();
    ROPEKIT_TRACE_KERNEL("apply_rope_qk", Arch::name());
    const bool same_tokens = q.tokens == k.tokens;
    ROPEKIT_ASSERT(same_tokens, "q and k must have the same number of tokens");
    if (!same_tokens || !detail::check_range<Arch>(q.tokens, token_begin, token_end)) return;
    if (token_begin == token_end) return;
    if (!detail::check_view<Arch>(q, table) || !detail::check_view<Arch>(k, table)) return;
    if (!detail::check_positions<Arch>(pos, token_begin, token_end)) return;
    detail::rope_target<T> tg[2];
    const int n = detail::targets_of<Arch>(q, k, tg, table.rotary_offset());
    if (n > 0) detail::run_with_table<Arch, T>(table, tg, n, pos, token_begin, token_end);
}

/// Fused table-free q and k (see apply_rope_qk above).
template <class Arch, class T>
void apply_rope_qk(const rope_frequencies& freqs, head_view<T> q, head_view<T> k,
                   const positions& pos, std::int64_t token_begin, std::int64_t token_end) {
    detail::check_arch<Arch>();
    ROPEKIT_TRACE_KERNEL("apply_rope_qk", Arch::name());
    const bool same_tokens = q.tokens == k.tokens;
    ROPEKIT_ASSERT(same_tokens, "q and k must have the same number of tokens");
    if (!same_tokens || !detail::check_range<Arch>(q.tokens, token_begin, token_end)) return;
    if (token_begin == token_end) return;
    if (!detail::check_view<Arch>(q, freqs) || !detail::check_view<Arch>(k, freqs)) return;
    if (!detail::check_positions<Arch>(pos, token_begin, token_end)) return;
    detail::rope_target<T> tg[2];
    const int n = detail::targets_of<Arch>(q, k, tg, freqs.rotary_offset);
    if (n > 0) detail::run_table_free<Arch, T>(freqs, nullptr, tg, n, pos, token_begin, token_end);
}

/// Moves already-rotated keys from the frequencies `from` to the frequencies `to` (e.g. one
/// dynamic-NTK base to another): token t is rotated by `pos(t) * (to.inv_freq[i] -
/// from.inv_freq[i])`, so a key rotated for position p under `from` becomes the key rotated
/// for p under `to`. Norms are preserved; nothing rescales the keys.
/// \pre from and to have the same rotary_dim and layout; |position| < 2^29 (unchecked, see
/// validate_rebase_call(from, to, k, pos, ...)); the rest as the table-free apply_rope.
template <class Arch, class T>
void rebase_keys(const rope_frequencies& from, const rope_frequencies& to, head_view<T> k,
                 const positions& pos, std::int64_t token_begin, std::int64_t token_end) {
    detail::check_arch<Arch>();
    ROPEKIT_TRACE_KERNEL("rebase_keys", Arch::name());
    const bool same = from.rotary_dim == to.rotary_dim && from.layout == to.layout &&
                      from.inv_freq.size() == to.inv_freq.size() &&
                      from.neox_pair_span() == to.neox_pair_span() &&
                      from.rotary_offset == to.rotary_offset;
    ROPEKIT_ASSERT(same,
                   "rebase_keys: from and to must have the same rotary_dim, layout and geometry");
    if (!same || !detail::check_range<Arch>(k.tokens, token_begin, token_end)) return;
    if (token_begin == token_end || k.heads == 0) return;
    if (!detail::check_view<Arch>(k, to)) return;
    if (!detail::check_positions<Arch>(pos, token_begin, token_end)) return;
    const detail::rope_target<T> tg = detail::target_of<Arch>(k, to.rotary_offset);
    detail::run_table_free<Arch, T>(to, from.inv_freq.data(), &tg, 1, pos, token_begin, token_end);
}

/// Re-rotates cached (already rotated) keys by a per-token delta, table-free: context shift,
/// StreamingLLM eviction. `deltas` are positions (positions::constant(d) for a uniform shift,
/// positions::ids(...) per token); rotating by a then by b equals rotating by a + b, the inverse
/// of a shift by d is the shift by -d, and the keys are never rescaled.
/// \pre as the table-free apply_rope: |delta| < 2^29, unchecked in every build (see
/// validate_rope_call(freqs, k, deltas, token_begin, token_end)).
template <class Arch, class T>
void rerotate_keys(const rope_frequencies& freqs, head_view<T> k, const positions& deltas,
                   std::int64_t token_begin, std::int64_t token_end) {
    apply_rope<Arch, T>(freqs, k, deltas, token_begin, token_end);
}

/// Re-rotates cached keys by deltas taken from a table: a range table indexed by the delta, or
/// a list table of per-token deltas (cos_sin_table::for_positions) with positions::table_rows().
/// \pre as the table apply_rope (release builds: see there; validate_positions checks).
template <class Arch, class T>
void rerotate_keys(const cos_sin_table& delta_table, head_view<T> k, const positions& deltas,
                   std::int64_t token_begin, std::int64_t token_end) {
    apply_rope<Arch, T>(delta_table, k, deltas, token_begin, token_end);
}

/// Fused rotate-and-store (rope + set_rows of an engine's KV cache): reads the float rows of
/// tokens [token_begin, token_end) of `src` (a k projection), rotates their pairs at `pos`
/// with angles from `table` (as apply_rope does: same geometry, layout and position kinds) and
/// writes every channel of those rows, rotated and pass-through alike, to `dst`: converted to
/// nearest even for bfloat16 / half, and for block_q8_0 quantised per block of 32 exactly as
/// quantize_block_q8_0 (bit-identical bytes, including its non-finite and tiny-block rules).
/// The result is bit-identical with apply_rope<Arch> on a float copy of `src` followed by that
/// conversion, in one pass over the memory instead of three. `src` is never written; other
/// tokens of `dst` are never touched.
/// \pre src and dst have the same tokens, heads and head_dim (values; for block_q8_0 a
/// multiple of 32, strides in blocks); rotary_dim <= 512; src and dst do not overlap; the rest
/// as apply_rope(table, ...). ROPEKIT_ASSERTed only: in release builds a violation writes
/// nothing (a token outside a range table is not written). Check untrusted input first with
/// validate_rope_store_call(table, src, dst, pos, token_begin, token_end).
/// \tparam Dst float, bfloat16, half or block_q8_0
template <class Arch, class Dst>
void rope_store(const cos_sin_table& table, head_view<const float> src, head_view<Dst> dst,
                const positions& pos, std::int64_t token_begin, std::int64_t token_end) {
    detail::check_arch<Arch>();
    ROPEKIT_TRACE_KERNEL("rope_store", Arch::name());
    if (!detail::check_range<Arch>(src.tokens, token_begin, token_end)) return;
    if (token_begin == token_end || src.heads == 0) return;
    if (!detail::check_store_views<Arch>(src, dst, table.rotary_dim(), table.rotary_offset(),
                                         table.rotated_extent()))
        return;
    if (!detail::check_positions<Arch>(pos, token_begin, token_end)) return;
    const detail::store_target<Dst> st = detail::store_target_of<Arch>(src, dst);
    detail::with_table_source<Arch>(
        table, pos, token_end,
        [&](const detail::rope_geometry& geo, auto&& prepare, auto&& lookup) {
            detail::rope_store_run<Arch, Dst>(geo, st, token_begin, token_end, prepare, lookup);
        });
}

/// Table-free fused rotate-and-store: angles `position * inv_freq[i]` computed on the fly, as
/// the table-free apply_rope (same accuracy and the same |position| < 2^29 contract).
/// \pre as rope_store(table, ...); check untrusted input with
/// validate_rope_store_call(freqs, src, dst, pos, token_begin, token_end).
/// \tparam Dst float, bfloat16, half or block_q8_0
template <class Arch, class Dst>
void rope_store(const rope_frequencies& freqs, head_view<const float> src, head_view<Dst> dst,
                const positions& pos, std::int64_t token_begin, std::int64_t token_end) {
    detail::check_arch<Arch>();
    ROPEKIT_TRACE_KERNEL("rope_store", Arch::name());
    if (!detail::check_range<Arch>(src.tokens, token_begin, token_end)) return;
    if (token_begin == token_end || src.heads == 0) return;
    if (!detail::check_store_views<Arch>(src, dst, freqs.rotary_dim, freqs.rotary_offset,
                                         freqs.rotated_extent()))
        return;
    if (!detail::check_positions<Arch>(pos, token_begin, token_end)) return;
    const detail::store_target<Dst> st = detail::store_target_of<Arch>(src, dst);
    detail::with_table_free_source<Arch>(
        freqs, nullptr, pos, [&](const detail::rope_geometry& geo, auto&& prepare, auto&& lookup) {
            detail::rope_store_run<Arch, Dst>(geo, st, token_begin, token_end, prepare, lookup);
        });
}

// ---------------------------------------------------------------------------------------------
// Front doors: the caller's compile flags (ropekit::default_arch).
ROPEKIT_BEGIN_ISA_NAMESPACE

/// apply_rope<default_arch> on tokens [token_begin, token_end).
template <class T>
void apply_rope(const cos_sin_table& table, head_view<T> x, const positions& pos,
                std::int64_t token_begin, std::int64_t token_end) {
    apply_rope<default_arch, T>(table, x, pos, token_begin, token_end);
}
/// apply_rope<default_arch> on all tokens of `x`.
template <class T>
void apply_rope(const cos_sin_table& table, head_view<T> x, const positions& pos) {
    apply_rope<default_arch, T>(table, x, pos, 0, x.tokens);
}
/// Table-free apply_rope<default_arch> on tokens [token_begin, token_end).
template <class T>
void apply_rope(const rope_frequencies& freqs, head_view<T> x, const positions& pos,
                std::int64_t token_begin, std::int64_t token_end) {
    apply_rope<default_arch, T>(freqs, x, pos, token_begin, token_end);
}
/// Table-free apply_rope<default_arch> on all tokens of `x`.
template <class T>
void apply_rope(const rope_frequencies& freqs, head_view<T> x, const positions& pos) {
    apply_rope<default_arch, T>(freqs, x, pos, 0, x.tokens);
}
/// apply_rope_qk<default_arch> on tokens [token_begin, token_end).
template <class T>
void apply_rope_qk(const cos_sin_table& table, head_view<T> q, head_view<T> k, const positions& pos,
                   std::int64_t token_begin, std::int64_t token_end) {
    apply_rope_qk<default_arch, T>(table, q, k, pos, token_begin, token_end);
}
/// Table-free apply_rope_qk<default_arch> on tokens [token_begin, token_end).
template <class T>
void apply_rope_qk(const rope_frequencies& freqs, head_view<T> q, head_view<T> k,
                   const positions& pos, std::int64_t token_begin, std::int64_t token_end) {
    apply_rope_qk<default_arch, T>(freqs, q, k, pos, token_begin, token_end);
}
/// rerotate_keys<default_arch> (table-free deltas) on tokens [token_begin, token_end).
template <class T>
void rerotate_keys(const rope_frequencies& freqs, head_view<T> k, const positions& deltas,
                   std::int64_t token_begin, std::int64_t token_end) {
    rerotate_keys<default_arch, T>(freqs, k, deltas, token_begin, token_end);
}
/// rerotate_keys<default_arch> (deltas from a table) on tokens [token_begin, token_end).
template <class T>
void rerotate_keys(const cos_sin_table& delta_table, head_view<T> k, const positions& deltas,
                   std::int64_t token_begin, std::int64_t token_end) {
    rerotate_keys<default_arch, T>(delta_table, k, deltas, token_begin, token_end);
}
/// rebase_keys<default_arch> on tokens [token_begin, token_end).
template <class T>
void rebase_keys(const rope_frequencies& from, const rope_frequencies& to, head_view<T> k,
                 const positions& pos, std::int64_t token_begin, std::int64_t token_end) {
    rebase_keys<default_arch, T>(from, to, k, pos, token_begin, token_end);
}
/// rope_store<default_arch> on tokens [token_begin, token_end).
template <class Dst>
void rope_store(const cos_sin_table& table, head_view<const float> src, head_view<Dst> dst,
                const positions& pos, std::int64_t token_begin, std::int64_t token_end) {
    rope_store<default_arch, Dst>(table, src, dst, pos, token_begin, token_end);
}
/// rope_store<default_arch> on all tokens of `src`.
template <class Dst>
void rope_store(const cos_sin_table& table, head_view<const float> src, head_view<Dst> dst,
                const positions& pos) {
    rope_store<default_arch, Dst>(table, src, dst, pos, 0, src.tokens);
}
/// Table-free rope_store<default_arch> on tokens [token_begin, token_end).
template <class Dst>
void rope_store(const rope_frequencies& freqs, head_view<const float> src, head_view<Dst> dst,
                const positions& pos, std::int64_t token_begin, std::int64_t token_end) {
    rope_store<default_arch, Dst>(freqs, src, dst, pos, token_begin, token_end);
}
/// Table-free rope_store<default_arch> on all tokens of `src`.
template <class Dst>
void rope_store(const rope_frequencies& freqs, head_view<const float> src, head_view<Dst> dst,
                const positions& pos) {
    rope_store<default_arch, Dst>(freqs, src, dst, pos, 0, src.tokens);
}

ROPEKIT_END_ISA_NAMESPACE
ROPEKIT_END_NAMESPACE

/// Expands `M(Arch, T)`-style explicit-instantiation lines of every Arch-templated rope kernel
/// for the storage type T. PREFIX is `extern` (declaration) or empty (definition).
#define ROPEKIT_ROPE_KERNELS_FOR_TYPE_(PREFIX, ARCH, T)                                           \
    PREFIX template void ropekit::apply_rope<ARCH, T>(                                            \
        const ::ropekit::cos_sin_table&, ::ropekit::head_view<T>, const ::ropekit::positions&,    \
        std::int64_t, std::int64_t);                                                              \
    PREFIX template void ropekit::apply_rope<ARCH, T>(                                            \
        const ::ropekit::rope_frequencies&, ::ropekit::head_view<T>, const ::ropekit::positions&, \
        std::int64_t, std::int64_t);                                                              \
    PREFIX template void ropekit::apply_rope_qk<ARCH, T>(                                         \
        const ::ropekit::cos_sin_table&, ::ropekit::head_view<T>, ::ropekit::head_view<T>,        \
        const ::ropekit::positions&, std::int64_t, std::int64_t);                                 \
    PREFIX template void ropekit::apply_rope_qk<ARCH, T>(                                         \
        const ::ropekit::rope_frequencies&, ::ropekit::head_view<T>, ::ropekit::head_view<T>,     \
        const ::ropekit::positions&, std::int64_t, std::int64_t);                                 \
    PREFIX template void ropekit::rebase_keys<ARCH, T>(                                           \
        const ::ropekit::rope_frequencies&, const ::ropekit::rope_frequencies&,                   \
        ::ropekit::head_view<T>, const ::ropekit::positions&, std::int64_t, std::int64_t);        \
    PREFIX template void ropekit::apply_mrope<ARCH, T>(                                           \
        const ::ropekit::cos_sin_table&, const ::ropekit::mrope_sections&,                        \
        ::ropekit::head_view<T>, const ::ropekit::mrope_positions&, std::int64_t, std::int64_t);  \
    PREFIX template void ropekit::apply_mrope_qk<ARCH, T>(                                        \
        const ::ropekit::cos_sin_table&, const ::ropekit::mrope_sections&,                        \
        ::ropekit::head_view<T>, ::ropekit::head_view<T>, const ::ropekit::mrope_positions&,      \
        std::int64_t, std::int64_t);

/// The explicit-instantiation lines of rope_store for ARCH and destination type DST.
#define ROPEKIT_ROPE_STORE_KERNELS_FOR_DST_(PREFIX, ARCH, DST)                               \
    PREFIX template void ropekit::rope_store<ARCH, DST>(                                     \
        const ::ropekit::cos_sin_table&, ::ropekit::head_view<const float>,                  \
        ::ropekit::head_view<DST>, const ::ropekit::positions&, std::int64_t, std::int64_t); \
    PREFIX template void ropekit::rope_store<ARCH, DST>(                                     \
        const ::ropekit::rope_frequencies&, ::ropekit::head_view<const float>,               \
        ::ropekit::head_view<DST>, const ::ropekit::positions&, std::int64_t, std::int64_t);

/// rope_store for every destination type (float, bfloat16, half, block_q8_0).
#define ROPEKIT_ROPE_STORE_KERNELS_(PREFIX, ARCH)                          \
    ROPEKIT_ROPE_STORE_KERNELS_FOR_DST_(PREFIX, ARCH, float)               \
    ROPEKIT_ROPE_STORE_KERNELS_FOR_DST_(PREFIX, ARCH, ::ropekit::bfloat16) \
    ROPEKIT_ROPE_STORE_KERNELS_FOR_DST_(PREFIX, ARCH, ::ropekit::half)     \
    ROPEKIT_ROPE_STORE_KERNELS_FOR_DST_(PREFIX, ARCH, ::ropekit::block_q8_0)

/// Declares (extern template) the rope kernels of architecture ARCH for float, bfloat16 and
/// half, so a translation unit built without ARCH's compile flags can call
/// `ropekit::apply_rope<ARCH>(...)` while the code lives in a TU built with them (which uses
/// ROPEKIT_INSTANTIATE_ROPE_KERNELS(ARCH)). rerotate_keys forwards to apply_rope and is covered;
/// the M-RoPE kernels (apply_mrope, apply_mrope_qk, ropekit/mrope.hpp) and rope_store (every
/// destination type, block_q8_0 included) are included.
#define ROPEKIT_DECLARE_ROPE_KERNELS(ARCH)                            \
    ROPEKIT_ROPE_KERNELS_FOR_TYPE_(extern, ARCH, float)               \
    ROPEKIT_ROPE_KERNELS_FOR_TYPE_(extern, ARCH, ::ropekit::bfloat16) \
    ROPEKIT_ROPE_KERNELS_FOR_TYPE_(extern, ARCH, ::ropekit::half)     \
    ROPEKIT_ROPE_STORE_KERNELS_(extern, ARCH)

/// Explicitly instantiates the rope kernels of ARCH for float, bfloat16 and half. Put it in a
/// translation unit compiled with ARCH's flags (e.g. -mavx2 -mfma for xsimd::fma3<xsimd::avx2>).
#define ROPEKIT_INSTANTIATE_ROPE_KERNELS(ARCH)                  \
    ROPEKIT_ROPE_KERNELS_FOR_TYPE_(, ARCH, float)               \
    ROPEKIT_ROPE_KERNELS_FOR_TYPE_(, ARCH, ::ropekit::bfloat16) \
    ROPEKIT_ROPE_KERNELS_FOR_TYPE_(, ARCH, ::ropekit::half)     \
    ROPEKIT_ROPE_STORE_KERNELS_(, ARCH)

// The M-RoPE kernels, named by the macros above (mrope.hpp includes this header first).
#include "mrope.hpp"
