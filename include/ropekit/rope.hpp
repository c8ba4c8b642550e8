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
/// Channels [rotary_dim, head_dim) of every head are never read or written.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "arch.hpp"
#include "config.hpp"
#include "detail/rope_kernels.hpp"
#include "error.hpp"
#include "layout.hpp"
#include "storage.hpp"
#include "table.hpp"

namespace ropekit {

namespace detail {
/// Why a strided view is unusable, or null. Rows must not overlap: the smaller stride must be
/// at least head_dim, and the larger at least the extent of the rows the smaller one spans.
inline const char* view_problem(const void* data, std::int64_t tokens, int heads, int head_dim,
                                std::ptrdiff_t token_stride, std::ptrdiff_t head_stride) noexcept {
    if (tokens < 0) return "tokens must be >= 0";
    if (heads < 0) return "heads must be >= 0";
    if (head_dim <= 0) return "head_dim must be > 0";
    if (tokens == 0 || heads == 0) return nullptr;
    if (data == nullptr) return "data must not be null with a non-zero count";
    const bool many_tokens = tokens > 1, many_heads = heads > 1;
    if (many_heads && head_stride < head_dim) return "head_stride must be >= head_dim";
    if (many_tokens && token_stride < head_dim) return "token_stride must be >= head_dim";
    if (many_tokens && many_heads) {
        // Nested layout: one stride must step over all rows of the other.
        const bool heads_inner = head_stride <= token_stride;
        const std::ptrdiff_t inner = heads_inner ? head_stride : token_stride;
        const std::int64_t inner_count = heads_inner ? heads : tokens;
        const std::ptrdiff_t outer = heads_inner ? token_stride : head_stride;
        if (std::int64_t(outer) < (inner_count - 1) * std::int64_t(inner) + head_dim)
            return "token and head strides make rows overlap";
    }
    return nullptr;
}
}  // namespace detail

/// Non-owning view of `tokens x heads` rows of `head_dim` elements, with element strides:
/// row (t, h) starts at `data + t * token_stride + h * head_stride`.
///
///     [tokens][heads][dim]     token_stride = heads * dim,      head_stride = dim
///     [heads][tokens][dim]     token_stride = dim,              head_stride = tokens * dim
///     padded rows              strides larger than the packed ones
///     packed QKV (q part)      token_stride = (hq + 2 hk) * dim, head_stride = dim, data = qkv
///     packed QKV (k part)      same strides, data = qkv + hq * dim
///
/// Rows must not overlap (see validate()).
template <class T>
struct head_view {
    T* data = nullptr;                ///< row (0, 0)
    std::int64_t tokens = 0;          ///< number of tokens
    int heads = 0;                    ///< number of heads
    int head_dim = 0;                 ///< channels per head (rotary_dim of them are rotated)
    std::ptrdiff_t token_stride = 0;  ///< elements between tokens
    std::ptrdiff_t head_stride = 0;   ///< elements between heads

    /// A packed `[tokens][heads][head_dim]` tensor.
    static head_view packed(T* data, std::int64_t tokens, int heads, int head_dim) noexcept {
        return {data, tokens, heads, head_dim, std::ptrdiff_t(heads) * head_dim, head_dim};
    }

    /// Heads [head_begin, head_end) of this view (for splitting heads over threads).
    head_view heads_slice(int head_begin, int head_end) const {
        ROPEKIT_ASSERT(0 <= head_begin && head_begin <= head_end && head_end <= heads,
                       "head range outside the view");
        head_view v = *this;
        v.data = heads > 0 && data ? data + std::ptrdiff_t(head_begin) * head_stride : data;
        v.heads = head_end - head_begin;
        return v;
    }

    /// Throws ropekit::error (naming the field and value) unless counts are non-negative,
    /// head_dim > 0, data is non-null when there is a row, and no two rows overlap.
    void validate() const {
        if (const char* why =
                detail::view_problem(data, tokens, heads, head_dim, token_stride, head_stride)) {
            detail::fail("head_view", why,
                         "tokens=" + detail::format_value(tokens) +
                             " heads=" + detail::format_value(heads) +
                             " head_dim=" + detail::format_value(head_dim) +
                             " token_stride=" + detail::format_value(token_stride) +
                             " head_stride=" + detail::format_value(head_stride));
        }
    }
};

/// The position of each token of a call.
///
/// - contiguous(start): token t is at start + t (prefill, decode).
/// - ids(p): token t is at p[t] (int32 or int64; any order, repeats and negative values allowed);
///   the pointer indexes the view's tokens, so p[token_begin] is the first one used.
/// - constant(v): every token at v (a uniform delta for re-rotating keys).
/// - table_rows(): with a list table (cos_sin_table::for_positions), token t uses row t.
///
/// Table-free sources are accurate for |position| < 2^29.
class positions {
  public:
    /// How positions are given.
    enum class kind { contiguous, constant, ids32, ids64, table_rows };

    /// Token t is at start + t.
    static positions contiguous(std::int64_t start = 0) noexcept {
        return positions(kind::contiguous, start, nullptr);
    }
    /// Every token is at `value`.
    static positions constant(std::int64_t value) noexcept {
        return positions(kind::constant, value, nullptr);
    }
    /// Token t is at ids[t].
    static positions ids(const std::int32_t* ids) noexcept {
        return positions(kind::ids32, 0, ids);
    }
    /// Token t is at ids[t].
    static positions ids(const std::int64_t* ids) noexcept {
        return positions(kind::ids64, 0, ids);
    }
    /// Token t uses row t of a list table.
    static positions table_rows() noexcept { return positions(kind::table_rows, 0, nullptr); }

    /// How the positions are given.
    kind which() const noexcept { return kind_; }
    /// The id array (ids32 / ids64), else null.
    const void* id_data() const noexcept { return ids_; }

    /// Position of token t (for table_rows: t, the row).
    std::int64_t at(std::int64_t t) const noexcept {
        switch (kind_) {
            case kind::contiguous:
                return value_ + t;
            case kind::constant:
                return value_;
            case kind::ids32:
                return static_cast<const std::int32_t*>(ids_)[t];
            case kind::ids64:
                return static_cast<const std::int64_t*>(ids_)[t];
            case kind::table_rows:
                return t;
        }
        return 0;
    }

  private:
    positions(kind k, std::int64_t v, const void* ids) noexcept : kind_(k), value_(v), ids_(ids) {}
    kind kind_;
    std::int64_t value_;
    const void* ids_;
};

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

template <class T>
bool check_view(const head_view<T>& v, int rotary_dim) {
    static_assert(is_storage_type_v<T>, "ropekit storage is float, bfloat16 or half");
    const bool view_ok = detail::view_problem(v.data, v.tokens, v.heads, v.head_dim, v.token_stride,
                                              v.head_stride) == nullptr;
    ROPEKIT_ASSERT(view_ok, "invalid head_view (null data, bad counts or overlapping strides)");
    const bool even = rotary_dim > 0 && rotary_dim % 2 == 0;
    ROPEKIT_ASSERT(even, "rotary_dim must be even and > 0");
    const bool fits = rotary_dim <= v.head_dim;
    ROPEKIT_ASSERT(fits, "rotary_dim must be <= head_dim");
    return view_ok && even && fits;
}

inline bool check_range(std::int64_t tokens, std::int64_t t0, std::int64_t t1) {
    const bool ok = 0 <= t0 && t0 <= t1 && t1 <= tokens;
    ROPEKIT_ASSERT(ok, "token range outside the view");
    return ok;
}

inline bool check_positions(const positions& pos, std::int64_t t0, std::int64_t t1) {
    const bool ok =
        t0 == t1 ||
        (pos.which() != positions::kind::ids32 && pos.which() != positions::kind::ids64) ||
        pos.id_data() != nullptr;
    ROPEKIT_ASSERT(ok, "position ids must not be null with a non-zero count");
    return ok;
}

template <class Arch, class T>
void run_with_table(const cos_sin_table& table, const rope_target<T>* targets, int n_targets,
                    const positions& pos, std::int64_t t0, std::int64_t t1) {
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
    rope_run<Arch, T>(
        pairs, table.layout(), targets, n_targets, t0, t1, [](int, int, rope_scratch&) {},
        [&](std::int64_t t, int p0, int, rope_scratch&, const float*& c, const float*& s) {
            const std::int64_t r = rows ? t : pos.at(t) - first;
            const bool in_table = r >= 0 && r < n_rows;
            ROPEKIT_ASSERT(in_table, "position outside the cos/sin table");
            if (!in_table) return false;  // (NDEBUG) the token is left as it is
            c = base + r * stride + p0;
            s = c + pairs;
            return true;
        });
}

template <class Arch, class T>
void run_table_free(const rope_frequencies& freqs, const float* inv_from,
                    const rope_target<T>* targets, int n_targets, const positions& pos,
                    std::int64_t t0, std::int64_t t1) {
    const bool sizes_ok = freqs.inv_freq.size() == std::size_t(freqs.pairs());
    ROPEKIT_ASSERT(sizes_ok, "inv_freq must have rotary_dim/2 entries");
    const bool kind_ok = pos.which() != positions::kind::table_rows;
    ROPEKIT_ASSERT(kind_ok, "positions::table_rows() needs a list table");
    if (!sizes_ok || !kind_ok) return;
    table_free_angles<Arch> angles{freqs.inv_freq.data(), inv_from};
    rope_run<Arch, T>(
        freqs.pairs(), freqs.layout, targets, n_targets, t0, t1,
        [&](int p0, int n, rope_scratch& sc) { angles.prepare(p0, n, sc); },
        [&](std::int64_t t, int, int n, rope_scratch& sc, const float*& c, const float*& s) {
            angles.compute(double(pos.at(t)), n, sc);
            c = sc.cos;
            s = sc.sin;
            return true;
        });
}

template <class T>
rope_target<T> target_of(const head_view<T>& v) noexcept {
    return {v.data, v.tokens > 0 ? v.heads : 0, v.token_stride, v.head_stride};
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Architecture-explicit kernels (what runtime-dispatching engines instantiate per TU).

/// Rotates tokens [token_begin, token_end) of `x` in place with angles from `table`
/// (a range table looked up by position, or a list table with positions::table_rows()).
/// The layout and rotary_dim are the table's.
/// \pre rotary_dim <= x.head_dim, every position inside a range table, token range in the view.
template <class Arch, class T>
void apply_rope(const cos_sin_table& table, head_view<T> x, const positions& pos,
                std::int64_t token_begin, std::int64_t token_end) {
    detail::check_arch<Arch>();
    if (!detail::check_range(x.tokens, token_begin, token_end)) return;
    if (token_begin == token_end || x.heads == 0) return;
    if (!detail::check_view(x, table.rotary_dim())) return;
    if (!detail::check_positions(pos, token_begin, token_end)) return;
    const detail::rope_target<T> tg = detail::target_of(x);
    detail::run_with_table<Arch, T>(table, &tg, 1, pos, token_begin, token_end);
}

/// Table-free: rotates tokens [token_begin, token_end) of `x` by `position * inv_freq[i]`,
/// computed on the fly (exact double product and reduction, ~0.5 ulp float cos/sin).
/// \pre freqs.rotary_dim <= x.head_dim, |position| < 2^29.
template <class Arch, class T>
void apply_rope(const rope_frequencies& freqs, head_view<T> x, const positions& pos,
                std::int64_t token_begin, std::int64_t token_end) {
    detail::check_arch<Arch>();
    if (!detail::check_range(x.tokens, token_begin, token_end)) return;
    if (token_begin == token_end || x.heads == 0) return;
    if (!detail::check_view(x, freqs.rotary_dim)) return;
    if (!detail::check_positions(pos, token_begin, token_end)) return;
    const detail::rope_target<T> tg = detail::target_of(x);
    detail::run_table_free<Arch, T>(freqs, nullptr, &tg, 1, pos, token_begin, token_end);
}

/// Fused q and k (GQA: any head counts): the angles of a token are fetched or computed once and
/// applied to all its q heads and k heads.
/// \pre q.tokens == k.tokens; the rest as apply_rope.
template <class Arch, class T>
void apply_rope_qk(const cos_sin_table& table, head_view<T> q, head_view<T> k, const positions& pos,
                   std::int64_t token_begin, std::int64_t token_end) {
    detail::check_arch<Arch>();
    const bool same_tokens = q.tokens == k.tokens;
    ROPEKIT_ASSERT(same_tokens, "q and k must have the same number of tokens");
    if (!same_tokens || !detail::check_range(q.tokens, token_begin, token_end)) return;
    if (token_begin == token_end) return;
    if (!detail::check_view(q, table.rotary_dim()) || !detail::check_view(k, table.rotary_dim()))
        return;
    if (!detail::check_positions(pos, token_begin, token_end)) return;
    const detail::rope_target<T> tg[2] = {detail::target_of(q), detail::target_of(k)};
    detail::run_with_table<Arch, T>(table, tg, 2, pos, token_begin, token_end);
}

/// Fused table-free q and k (see apply_rope_qk above).
template <class Arch, class T>
void apply_rope_qk(const rope_frequencies& freqs, head_view<T> q, head_view<T> k,
                   const positions& pos, std::int64_t token_begin, std::int64_t token_end) {
    detail::check_arch<Arch>();
    const bool same_tokens = q.tokens == k.tokens;
    ROPEKIT_ASSERT(same_tokens, "q and k must have the same number of tokens");
    if (!same_tokens || !detail::check_range(q.tokens, token_begin, token_end)) return;
    if (token_begin == token_end) return;
    if (!detail::check_view(q, freqs.rotary_dim) || !detail::check_view(k, freqs.rotary_dim))
        return;
    if (!detail::check_positions(pos, token_begin, token_end)) return;
    const detail::rope_target<T> tg[2] = {detail::target_of(q), detail::target_of(k)};
    detail::run_table_free<Arch, T>(freqs, nullptr, tg, 2, pos, token_begin, token_end);
}

/// Moves already-rotated keys from the frequencies `from` to the frequencies `to` (e.g. one
/// dynamic-NTK base to another): token t is rotated by `pos(t) * (to.inv_freq[i] -
/// from.inv_freq[i])`, so a key rotated for position p under `from` becomes the key rotated
/// for p under `to`. Norms are preserved; nothing rescales the keys.
/// \pre from and to have the same rotary_dim and layout.
template <class Arch, class T>
void rebase_keys(const rope_frequencies& from, const rope_frequencies& to, head_view<T> k,
                 const positions& pos, std::int64_t token_begin, std::int64_t token_end) {
    detail::check_arch<Arch>();
    const bool same = from.rotary_dim == to.rotary_dim && from.layout == to.layout &&
                      from.inv_freq.size() == to.inv_freq.size();
    ROPEKIT_ASSERT(same, "rebase_keys: from and to must have the same rotary_dim and layout");
    if (!same || !detail::check_range(k.tokens, token_begin, token_end)) return;
    if (token_begin == token_end || k.heads == 0) return;
    if (!detail::check_view(k, to.rotary_dim)) return;
    if (!detail::check_positions(pos, token_begin, token_end)) return;
    const detail::rope_target<T> tg = detail::target_of(k);
    detail::run_table_free<Arch, T>(to, from.inv_freq.data(), &tg, 1, pos, token_begin, token_end);
}

/// Re-rotates cached (already rotated) keys by a per-token delta, table-free: context shift,
/// StreamingLLM eviction. `deltas` are positions (positions::constant(d) for a uniform shift,
/// positions::ids(...) per token); rotating by a then by b equals rotating by a + b, the inverse
/// of a shift by d is the shift by -d, and the keys are never rescaled.
template <class Arch, class T>
void rerotate_keys(const rope_frequencies& freqs, head_view<T> k, const positions& deltas,
                   std::int64_t token_begin, std::int64_t token_end) {
    apply_rope<Arch, T>(freqs, k, deltas, token_begin, token_end);
}

/// Re-rotates cached keys by deltas taken from a table: a range table indexed by the delta, or
/// a list table of per-token deltas (cos_sin_table::for_positions) with positions::table_rows().
template <class Arch, class T>
void rerotate_keys(const cos_sin_table& delta_table, head_view<T> k, const positions& deltas,
                   std::int64_t token_begin, std::int64_t token_end) {
    apply_rope<Arch, T>(delta_table, k, deltas, token_begin, token_end);
}

// ---------------------------------------------------------------------------------------------
// Front doors: the caller's compile flags (ropekit::default_arch).

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
    apply_rope<default_arch, T>(freqs, k, deltas, token_begin, token_end);
}
/// rerotate_keys<default_arch> (deltas from a table) on tokens [token_begin, token_end).
template <class T>
void rerotate_keys(const cos_sin_table& delta_table, head_view<T> k, const positions& deltas,
                   std::int64_t token_begin, std::int64_t token_end) {
    apply_rope<default_arch, T>(delta_table, k, deltas, token_begin, token_end);
}
/// rebase_keys<default_arch> on tokens [token_begin, token_end).
template <class T>
void rebase_keys(const rope_frequencies& from, const rope_frequencies& to, head_view<T> k,
                 const positions& pos, std::int64_t token_begin, std::int64_t token_end) {
    rebase_keys<default_arch, T>(from, to, k, pos, token_begin, token_end);
}

}  // namespace ropekit

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
        ::ropekit::head_view<T>, const ::ropekit::positions&, std::int64_t, std::int64_t);

/// Declares (extern template) the rope kernels of architecture ARCH for float, bfloat16 and
/// half, so a translation unit built without ARCH's compile flags can call
/// `ropekit::apply_rope<ARCH>(...)` while the code lives in a TU built with them (which uses
/// ROPEKIT_INSTANTIATE_ROPE_KERNELS(ARCH)). rerotate_keys forwards to apply_rope and is covered.
#define ROPEKIT_DECLARE_ROPE_KERNELS(ARCH)                            \
    ROPEKIT_ROPE_KERNELS_FOR_TYPE_(extern, ARCH, float)               \
    ROPEKIT_ROPE_KERNELS_FOR_TYPE_(extern, ARCH, ::ropekit::bfloat16) \
    ROPEKIT_ROPE_KERNELS_FOR_TYPE_(extern, ARCH, ::ropekit::half)

/// Explicitly instantiates the rope kernels of ARCH for float, bfloat16 and half. Put it in a
/// translation unit compiled with ARCH's flags (e.g. -mavx2 -mfma for xsimd::fma3<xsimd::avx2>).
#define ROPEKIT_INSTANTIATE_ROPE_KERNELS(ARCH)                  \
    ROPEKIT_ROPE_KERNELS_FOR_TYPE_(, ARCH, float)               \
    ROPEKIT_ROPE_KERNELS_FOR_TYPE_(, ARCH, ::ropekit::bfloat16) \
    ROPEKIT_ROPE_KERNELS_FOR_TYPE_(, ARCH, ::ropekit::half)
