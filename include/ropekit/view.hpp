// SPDX-License-Identifier: Apache-2.0
/// \file
/// head_view: the one non-owning strided `tokens x heads x head_dim` view ropekit's kernels take
/// (q, k, v, o, cached keys), with its overlap check.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "config.hpp"
#include "error.hpp"

ROPEKIT_BEGIN_NAMESPACE

namespace detail {
/// Why a strided view is unusable, or null. Rows must not overlap: the smaller stride must be
/// at least head_dim, and the larger at least the extent of the rows the smaller one spans.
/// \tparam Tag the calling kernel's architecture (void elsewhere): a kernel TU built with AVX
/// flags then emits its own copy, never one the linker could pick for a baseline caller.
template <class Tag = void>
const char* view_problem(const void* data, std::int64_t tokens, int heads, int head_dim,
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
/// row (t, h) starts at `data + t * token_stride + h * head_stride` (see at()), and its
/// `head_dim` elements are contiguous.
///
///     [tokens][heads][dim]     token_stride = heads * dim,      head_stride = dim  (packed_view)
///     [heads][tokens][dim]     token_stride = dim,              head_stride = tokens * dim
///     padded rows              strides larger than the packed ones
///     packed QKV (q part)      token_stride = (hq + 2 hk) * dim, head_stride = dim, data = qkv
///     packed QKV (k part)      same strides, data = qkv + hq * dim
///
/// Rows must not overlap (see validate()). A `head_view<T>` converts implicitly to
/// `head_view<const T>`.
/// \tparam T element type (float, bfloat16, half for the kernels), possibly const
template <class T>
struct head_view {
    T* data = nullptr;                ///< row (0, 0)
    std::int64_t tokens = 0;          ///< number of tokens
    int heads = 0;                    ///< number of heads
    int head_dim = 0;                 ///< channels per head (rotary_dim of them are rotated)
    std::ptrdiff_t token_stride = 0;  ///< elements between tokens
    std::ptrdiff_t head_stride = 0;   ///< elements between heads

    /// A packed `[tokens][heads][head_dim]` tensor (same as packed_view()).
    /// \param data element (0, 0, 0)
    /// \param tokens number of tokens
    /// \param heads number of heads
    /// \param head_dim channels per head
    static head_view packed(T* data, std::int64_t tokens, int heads, int head_dim) noexcept {
        return {data, tokens, heads, head_dim, std::ptrdiff_t(heads) * head_dim, head_dim};
    }

    /// Start of row (t, h): `data + t * token_stride + h * head_stride`. No bounds check.
    /// \param t token index, 0 <= t < tokens
    /// \param h head index, 0 <= h < heads
    T* at(std::int64_t t, int h) const noexcept {
        return data + t * token_stride + std::ptrdiff_t(h) * head_stride;
    }

    /// Read-only view of the same rows (only for a non-const T).
    template <class U = T, std::enable_if_t<std::is_same_v<U, T> && !std::is_const_v<U>, int> = 0>
    operator head_view<const U>() const noexcept {
        return {data, tokens, heads, head_dim, token_stride, head_stride};
    }

    /// Heads [head_begin, head_end) of this view (for splitting heads over threads).
    /// \pre 0 <= head_begin <= head_end <= heads (checked with ROPEKIT_ASSERT)
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
