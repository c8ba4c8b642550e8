// SPDX-License-Identifier: Apache-2.0
/// \file
/// head_view: the one non-owning strided `tokens x heads x head_dim` view ropekit's kernels take
/// (q, k, v, o, cached keys), with its overlap check.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include "config.hpp"
#include "error.hpp"
#include "storage.hpp"

ROPEKIT_BEGIN_NAMESPACE

/// Largest number of bytes a head_view may span, from its first element to one past its last:
/// 2^50 (1 PiB), above any real allocation. The bound keeps every offset a kernel or validator
/// forms (a row start, and one stride past the last row) far from wrapping the address space.
inline constexpr std::int64_t max_view_bytes = std::int64_t(1) << 50;

namespace detail {

/// a * b for counts and strides, saturated to PTRDIFF_MAX (and -1 for a negative factor): the
/// named view constructors are noexcept and must not overflow, and a saturated stride always
/// fails validate() (the span exceeds max_view_bytes).
constexpr std::ptrdiff_t saturating_product(std::int64_t a, std::int64_t b) noexcept {
    if (a < 0 || b < 0) return -1;
    constexpr std::int64_t max = std::numeric_limits<std::ptrdiff_t>::max();
    if (a != 0 && b > max / a) return max;
    return std::ptrdiff_t(a * b);
}

/// Why a strided view is unusable, or null. Counts must be non-negative, head_dim > 0, data
/// non-null when there is a row, and the rows must not overlap: the smaller stride must be at
/// least head_dim, and the larger at least the extent of the rows the smaller one spans. The
/// stride of a dimension of count 1 is never used. Every product is checked before it is formed
/// (strides near 2^63 would wrap), and the span must fit in max_view_bytes.
/// \param elem_size sizeof the element type
/// \param values_per_element values one element holds (32 for block_q8_0, else 1): head_dim
/// counts values and must be a multiple of it, the strides and the span count elements
/// \param span_out when not null and the view is usable: elements from `data` to one past the
/// last element of the view (0 for an empty view)
/// \tparam Tag the calling kernel's architecture (void elsewhere): a kernel TU built with AVX
/// flags then emits its own copy, never one the linker could pick for a baseline caller.
template <class Tag = void>
const char* view_problem(const void* data, std::int64_t tokens, int heads, int head_dim,
                         std::ptrdiff_t token_stride, std::ptrdiff_t head_stride,
                         std::size_t elem_size, std::int64_t* span_out = nullptr,
                         int values_per_element = 1) noexcept {
    if (tokens < 0) return "tokens must be >= 0";
    if (heads < 0) return "heads must be >= 0";
    if (head_dim <= 0) return "head_dim must be > 0";
    if (values_per_element > 1 && head_dim % values_per_element != 0)
        return "head_dim must be a multiple of 32 (the values of one block_q8_0)";
    // From here on head_dim is the row's length in elements (blocks for block_q8_0).
    if (values_per_element > 1) head_dim /= values_per_element;
    if (tokens == 0 || heads == 0) {
        if (span_out) *span_out = 0;
        return nullptr;
    }
    if (data == nullptr) return "data must not be null with a non-zero count";
    const std::int64_t max_elems = max_view_bytes / std::int64_t(elem_size ? elem_size : 1);
    const bool many_tokens = tokens > 1, many_heads = heads > 1;
    if (many_heads && head_stride < head_dim) return "head_stride must be >= head_dim";
    if (many_tokens && token_stride < head_dim) return "token_stride must be >= head_dim";
    // Offsets of the last token's and the last head's rows; both strides are >= head_dim > 0
    // where they are used, so the divisions below are safe and nothing overflows.
    std::int64_t token_span = 0, head_span = 0;
    if (many_tokens) {
        if (std::int64_t(token_stride) > max_elems / (tokens - 1))
            return "spans more than max_view_bytes (2^50 bytes): token_stride or tokens too large";
        token_span = (tokens - 1) * std::int64_t(token_stride);
    }
    if (many_heads) {
        if (std::int64_t(head_stride) > max_elems / (heads - 1))
            return "spans more than max_view_bytes (2^50 bytes): head_stride or heads too large";
        head_span = std::int64_t(heads - 1) * std::int64_t(head_stride);
    }
    // Each term is <= max_elems <= 2^50: the sum cannot overflow.
    const std::int64_t span = token_span + head_span + head_dim;
    if (span > max_elems) return "spans more than max_view_bytes (2^50 bytes)";
    if (many_tokens && many_heads) {
        // Nested layout: one stride must step over all rows of the other.
        const bool heads_inner = head_stride <= token_stride;
        const std::int64_t inner_span = heads_inner ? head_span : token_span;
        const std::ptrdiff_t outer = heads_inner ? token_stride : head_stride;
        if (std::int64_t(outer) < inner_span + head_dim)
            return "token and head strides make rows overlap";
    }
    if (span_out) *span_out = span;
    return nullptr;
}
}  // namespace detail

/// Non-owning view of `tokens x heads` rows of `head_dim` elements, with element strides:
/// row (t, h) starts at `data + t * token_stride + h * head_stride` (see at()), and its
/// `head_dim` elements are contiguous.
///
/// For T = block_q8_0 (8-bit K/V blocks, storage.hpp) `head_dim` still counts values, a
/// multiple of 32, while the strides count blocks: a row is head_dim / 32 blocks (row_elements()),
/// and the named constructors below compute the strides in blocks.
///
/// **Build views with the named constructors**, never by passing the six fields positionally
/// (two swapped strides still describe non-overlapping rows, so validate() cannot tell, and
/// the kernels then write outside the buffer):
///
///     layout                       constructor                          token_stride   head_stride
///     [tokens][heads][dim]         packed(data, tokens, heads, dim)     heads*dim      dim
///     [heads][tokens][dim]         head_major(data, heads, tokens, dim) dim            tokens*dim
///     [tokens][row_stride] rows    padded(data, tokens, heads, dim, rs) rs             dim
///     packed QKV rows              qkv_layout{hq, hk, dim}.q/k/v(...)   (hq+2hk)*dim   dim
///
/// and check a view against its allocation with validate(extent) (or qkv_layout::elements()).
/// Rows must not overlap (see validate()); a view spans at most max_view_bytes. Positional
/// aggregate initialisation still compiles, for code that computed its strides already.
/// A `head_view<T>` converts implicitly to `head_view<const T>`.
/// \tparam T element type (float, bfloat16, half for the kernels), possibly const
template <class T>
struct head_view {
    T* data = nullptr;                ///< row (0, 0)
    std::int64_t tokens = 0;          ///< number of tokens
    int heads = 0;                    ///< number of heads
    int head_dim = 0;                 ///< channels per head (rotary_dim of them are rotated)
    std::ptrdiff_t token_stride = 0;  ///< elements between tokens
    std::ptrdiff_t head_stride = 0;   ///< elements between heads

    /// A packed `[tokens][heads][head_dim]` tensor (same as packed_view()):
    ///
    ///     data -> | t0h0 | t0h1 | ... | t0h(H-1) | t1h0 | t1h1 | ...     each cell head_dim
    ///
    /// \param data element (0, 0, 0)
    /// \param tokens number of tokens
    /// \param heads number of heads
    /// \param head_dim channels per head
    ROPEKIT_ALWAYS_INLINE static head_view packed(T* data, std::int64_t tokens, int heads,
                                                  int head_dim) noexcept {
        const int row = row_elements(head_dim);
        return {data, tokens, heads, head_dim, detail::saturating_product(heads, row), row};
    }

    /// A head-major `[heads][tokens][head_dim]` tensor (a per-head KV cache, or q transposed
    /// for attention). Note the argument order follows the memory order: heads first.
    ///
    ///     data -> | h0t0 | h0t1 | ... | h0t(T-1) | h1t0 | h1t1 | ...     each cell head_dim
    ///
    /// \param data element (head 0, token 0, channel 0)
    /// \param heads number of heads
    /// \param tokens number of tokens (the allocated tokens per head: the head stride is
    /// tokens * head_dim; narrow a longer cache with tokens_slice())
    /// \param head_dim channels per head
    ROPEKIT_ALWAYS_INLINE static head_view head_major(T* data, int heads, std::int64_t tokens,
                                                      int head_dim) noexcept {
        const int row = row_elements(head_dim);
        return {data, tokens, heads, head_dim, row, detail::saturating_product(tokens, row)};
    }

    /// Token rows of `row_stride` elements, each holding `heads` packed heads followed by
    /// padding (alignment, or other tensors the call must not touch):
    ///
    ///     data -> | t0h0 | t0h1 | ... | t0h(H-1) | pad | t1h0 | ...     row_stride per token
    ///
    /// \param data element (0, 0, 0)
    /// \param tokens number of tokens
    /// \param heads number of heads
    /// \param head_dim channels per head
    /// \param row_stride elements between tokens, >= heads * head_dim (checked by validate())
    ROPEKIT_ALWAYS_INLINE static head_view padded(T* data, std::int64_t tokens, int heads,
                                                  int head_dim,
                                                  std::ptrdiff_t row_stride) noexcept {
        return {data, tokens, heads, head_dim, row_stride, row_elements(head_dim)};
    }

    /// Elements of one row: head_dim, or head_dim / 32 blocks for block_q8_0 (a head_dim that
    /// is not a multiple of 32 there fails validate()).
    ROPEKIT_ALWAYS_INLINE static constexpr int row_elements(int head_dim) noexcept {
        return head_dim / values_per_element_v<T>;
    }

    /// Start of row (t, h): `data + t * token_stride + h * head_stride`. No bounds check.
    /// \param t token index, 0 <= t < tokens
    /// \param h head index, 0 <= h < heads
    ROPEKIT_ALWAYS_INLINE T* at(std::int64_t t, int h) const noexcept {
        return data + t * token_stride + std::ptrdiff_t(h) * head_stride;
    }

    /// Read-only view of the same rows (only for a non-const T).
    template <class U = T, std::enable_if_t<std::is_same_v<U, T> && !std::is_const_v<U>, int> = 0>
    ROPEKIT_ALWAYS_INLINE operator head_view<const U>() const noexcept {
        return {data, tokens, heads, head_dim, token_stride, head_stride};
    }

    /// Heads [head_begin, head_end) of this view (for splitting heads over threads).
    /// \pre 0 <= head_begin <= head_end <= heads (checked with ROPEKIT_ASSERT)
    ROPEKIT_ALWAYS_INLINE head_view heads_slice(int head_begin, int head_end) const {
        ROPEKIT_ASSERT(0 <= head_begin && head_begin <= head_end && head_end <= heads,
                       "head range outside the view");
        head_view v = *this;
        v.data = heads > 0 && tokens > 0 && data && head_begin < heads
                     ? data + std::ptrdiff_t(head_begin) * head_stride
                     : data;
        v.heads = head_end - head_begin;
        return v;
    }

    /// Tokens [token_begin, token_end) of this view, as a view of their own (token 0 of the
    /// result is token token_begin here).
    /// \pre 0 <= token_begin <= token_end <= tokens (checked with ROPEKIT_ASSERT)
    ROPEKIT_ALWAYS_INLINE head_view tokens_slice(std::int64_t token_begin,
                                                 std::int64_t token_end) const {
        ROPEKIT_ASSERT(0 <= token_begin && token_begin <= token_end && token_end <= tokens,
                       "token range outside the view");
        head_view v = *this;
        v.data = heads > 0 && tokens > 0 && data && token_begin < tokens
                     ? data + token_begin * token_stride
                     : data;
        v.tokens = token_end - token_begin;
        return v;
    }

    /// Elements from `data` to one past the view's last element (0 for an empty view): the
    /// smallest allocation, counted from `data`, that holds the view. Throws like validate().
    ROPEKIT_ALWAYS_INLINE std::int64_t span() const {
        std::int64_t n = 0;
        check(detail::view_problem(data, tokens, heads, head_dim, token_stride, head_stride,
                                   sizeof(T), &n, values_per_element_v<T>));
        return n;
    }

    /// Throws ropekit::error (field `head_view`, naming every field's value) unless counts
    /// are non-negative, head_dim > 0, data is non-null when there is a row, no two rows
    /// overlap, and the view spans at most max_view_bytes.
    ROPEKIT_ALWAYS_INLINE void validate() const { (void)span(); }

    /// validate(), and that the view lies inside an allocation of `extent` elements starting
    /// at `data` (e.g. `buffer.size()` for a view at `buffer.data()`): catches swapped or
    /// too-large strides and counts, which validate() alone cannot see.
    /// \param extent elements available from `data` on
    ROPEKIT_ALWAYS_INLINE void validate(std::size_t extent) const {
        const std::int64_t n = span();
        if (std::uint64_t(n) > std::uint64_t(extent))
            detail::fail("head_view", "does not fit its buffer: it spans more elements than extent",
                         "span=" + detail::format_value(n) +
                             " extent=" + detail::format_value(extent) + " " + fields());
    }

  private:
    ROPEKIT_ALWAYS_INLINE std::string fields() const {
        return "tokens=" + detail::format_value(tokens) + " heads=" + detail::format_value(heads) +
               " head_dim=" + detail::format_value(head_dim) +
               " token_stride=" + detail::format_value(token_stride) +
               " head_stride=" + detail::format_value(head_stride);
    }
    ROPEKIT_ALWAYS_INLINE void check(const char* why) const {
        if (why) detail::fail("head_view", why, fields());
    }
};

/// The packed QKV buffer of a fused projection: per token one row of `q_heads` q heads, then
/// `kv_heads` k heads, then `kv_heads` v heads, then `row_padding` unused elements:
///
///     token t: | q0 | q1 | ... | q(hq-1) | k0 | ... | k(hk-1) | v0 | ... | v(hk-1) | pad |
///              ^ qkv + t * row_stride()   ^ + hq*dim           ^ + (hq+hk)*dim
///
/// q(), k() and v() give the three views of one buffer with the strides computed here, so an
/// engine never spells them out (nor swaps them). Check the buffer with validate(extent).
struct qkv_layout {
    int q_heads = 0;                 ///< query heads per token
    int kv_heads = 0;                ///< key heads per token (= value heads)
    int head_dim = 0;                ///< channels per head (q, k and v alike)
    std::ptrdiff_t row_padding = 0;  ///< unused elements at the end of each token's row

    /// Elements between tokens: (q_heads + 2 * kv_heads) * head_dim + row_padding (saturated
    /// to PTRDIFF_MAX for absurd values, which validate() rejects).
    ROPEKIT_ALWAYS_INLINE std::ptrdiff_t row_stride() const noexcept {
        const std::ptrdiff_t heads = std::ptrdiff_t(q_heads) + 2 * std::ptrdiff_t(kv_heads);
        const std::ptrdiff_t packed = detail::saturating_product(heads, head_dim);
        if (packed < 0 || row_padding < 0) return -1;
        const std::ptrdiff_t max = std::numeric_limits<std::ptrdiff_t>::max();
        return packed > max - row_padding ? max : packed + row_padding;
    }

    /// Elements a buffer of `tokens` rows holds (tokens * row_stride()), saturated like
    /// row_stride().
    ROPEKIT_ALWAYS_INLINE std::ptrdiff_t elements(std::int64_t tokens) const noexcept {
        return detail::saturating_product(tokens, row_stride());
    }

    /// The q heads of `tokens` rows of the buffer at `qkv`.
    template <class T>
    ROPEKIT_ALWAYS_INLINE head_view<T> q(T* qkv, std::int64_t tokens) const noexcept {
        return {qkv, tokens, q_heads, head_dim, row_stride(), head_dim};
    }
    /// The k heads of `tokens` rows of the buffer at `qkv`.
    template <class T>
    ROPEKIT_ALWAYS_INLINE head_view<T> k(T* qkv, std::int64_t tokens) const noexcept {
        return {offset(qkv, q_heads), tokens, kv_heads, head_dim, row_stride(), head_dim};
    }
    /// The v heads of `tokens` rows of the buffer at `qkv`.
    template <class T>
    ROPEKIT_ALWAYS_INLINE head_view<T> v(T* qkv, std::int64_t tokens) const noexcept {
        return {offset(qkv, std::int64_t(q_heads) + kv_heads),
                tokens,
                kv_heads,
                head_dim,
                row_stride(),
                head_dim};
    }

    /// Throws ropekit::error (naming the field) unless q_heads, kv_heads and head_dim are > 0,
    /// row_padding >= 0 and one row spans at most max_view_bytes of float.
    ROPEKIT_ALWAYS_INLINE void validate() const {
        detail::require(q_heads > 0, "q_heads", "must be > 0", q_heads);
        detail::require(kv_heads > 0, "kv_heads", "must be > 0", kv_heads);
        detail::require(head_dim > 0, "head_dim", "must be > 0", head_dim);
        detail::require(row_padding >= 0, "row_padding", "must be >= 0", row_padding);
        detail::require(row_stride() <= max_view_bytes / std::int64_t(sizeof(float)), "row_stride",
                        "must span at most max_view_bytes", row_stride());
    }

    /// validate(), and that `tokens` rows fit in a buffer of `extent` elements.
    /// \param tokens rows the views will claim
    /// \param extent elements of the buffer
    ROPEKIT_ALWAYS_INLINE void validate(std::int64_t tokens, std::size_t extent) const {
        validate();
        detail::require(tokens >= 0, "tokens", "must be >= 0", tokens);
        detail::require(std::uint64_t(elements(tokens)) <= std::uint64_t(extent), "extent",
                        "is smaller than tokens * row_stride()", extent);
    }

  private:
    // Start of head `heads_before` of token 0. A null buffer gets no offset added, and an
    // offset no buffer can have gives null (which the view's validate() rejects) instead of a
    // wrapped pointer.
    template <class T>
    ROPEKIT_ALWAYS_INLINE T* offset(T* qkv, std::int64_t heads_before) const noexcept {
        const std::ptrdiff_t off = detail::saturating_product(heads_before, head_dim);
        if (!qkv || off < 0 || off > max_view_bytes / std::int64_t(sizeof(T))) return nullptr;
        return qkv + off;
    }
};

/// View of a packed `[tokens][heads][head_dim]` array (token_stride = heads * head_dim,
/// head_stride = head_dim); T is deduced, so a `const float*` gives a `head_view<const float>`.
/// \param data element (0, 0, 0)
/// \param tokens number of tokens
/// \param heads number of heads
/// \param head_dim channels per head
template <class T>
head_view<T> packed_view(T* data, std::int64_t tokens, int heads, int head_dim) noexcept {
    return head_view<T>::packed(data, tokens, heads, head_dim);
}

ROPEKIT_END_NAMESPACE
