// SPDX-License-Identifier: Apache-2.0
/// \file
/// paged_view: one sequence's K (or V) in a paged cache, the way serving engines keep it: a
/// pool of pages of `page_size` tokens each, and a per-sequence block table of int32 page ids
/// (vLLM's `block_table`, FlashInfer's `kv_indices`; SGLang's per-token slot table is a page size
/// of 1). The attention kernels read it exactly as they read a head_view, one page-long run of
/// rows at a time (attention.hpp: attention / attention_blocked take either).
///
/// Two page layouts, both named by what FlashInfer calls them:
///
///     layout        constructor       page holds                        token_stride head_stride
///     token-major   token_major(...)  [page_size][heads][head_dim] (NHD) heads*row       row
///     head-major    head_major(...)   [heads][page_size][head_dim] (HND) row page_size*row
///
/// where row = head_dim (or head_dim / 32 blocks for block_q8_0), and pages are page_stride
/// elements apart in the pool (page_size * heads * row for both named layouts; an engine whose
/// pages hold K and V together passes its own page stride through `strided`).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include "config.hpp"
#include "error.hpp"
#include "storage.hpp"
#include "view.hpp"

ROPEKIT_BEGIN_NAMESPACE

/// Largest page size a paged_view accepts (tokens per page): 2^20, far above the 16 to 256
/// engines use, so that a page's offsets stay small.
inline constexpr int max_page_size = 1 << 20;

/// One sequence's K or V rows in a paged cache: token t of the sequence, head h, is row
/// `(t % page_size, h)` of page `block_table[t / page_size]`. Non-owning, like head_view.
/// Build it with a named constructor and check it with validate() (the front doors do).
/// \tparam T element type (float, bfloat16, half or block_q8_0), possibly const
template <class T>
struct paged_view {
    T* pool = nullptr;                          ///< element 0 of page 0 of the pool
    std::int64_t pool_pages = 0;                ///< pages in the pool: every id must be below
    int page_size = 0;                          ///< tokens per page, >= 1
    const std::int32_t* block_table = nullptr;  ///< page ids of tokens [i P, (i + 1) P), i >= 0
    std::int64_t tokens = 0;                    ///< tokens of the sequence
    int heads = 0;                              ///< K/V heads
    int head_dim = 0;                           ///< channels per head
    std::ptrdiff_t page_stride = 0;             ///< elements between pages
    std::ptrdiff_t token_stride = 0;            ///< elements between tokens of a page
    std::ptrdiff_t head_stride = 0;             ///< elements between heads of a page

    /// Pages of `[page_size][heads][head_dim]` (token-major, FlashInfer's NHD; vLLM's CPU
    /// cache).
    /// \param pool element 0 of page 0
    /// \param pool_pages pages in the pool
    /// \param page_size tokens per page
    /// \param heads K/V heads
    /// \param head_dim channels per head
    /// \param block_table ceil(tokens / page_size) page ids
    /// \param tokens tokens of the sequence
    ROPEKIT_ALWAYS_INLINE static paged_view token_major(T* pool, std::int64_t pool_pages,
                                                        int page_size, int heads, int head_dim,
                                                        const std::int32_t* block_table,
                                                        std::int64_t tokens) noexcept {
        const int row = head_view<T>::row_elements(head_dim);
        const std::ptrdiff_t token = detail::saturating_product(heads, row);
        return {pool,   pool_pages, page_size, block_table,
                tokens, heads,      head_dim,  detail::saturating_product(page_size, token),
                token,  row};
    }

    /// Pages of `[heads][page_size][head_dim]` (head-major, FlashInfer's HND).
    /// Parameters as token_major.
    ROPEKIT_ALWAYS_INLINE static paged_view head_major(T* pool, std::int64_t pool_pages,
                                                       int page_size, int heads, int head_dim,
                                                       const std::int32_t* block_table,
                                                       std::int64_t tokens) noexcept {
        const int row = head_view<T>::row_elements(head_dim);
        const std::ptrdiff_t head = detail::saturating_product(page_size, row);
        return {pool,   pool_pages, page_size, block_table,
                tokens, heads,      head_dim,  detail::saturating_product(heads, head),
                row,    head};
    }

    /// Any page layout given by its three strides (elements): e.g. pages that hold K and V
    /// together, `page_stride` = 2 x the K part.
    ROPEKIT_ALWAYS_INLINE static paged_view strided(T* pool, std::int64_t pool_pages, int page_size,
                                                    int heads, int head_dim,
                                                    const std::int32_t* block_table,
                                                    std::int64_t tokens, std::ptrdiff_t page_stride,
                                                    std::ptrdiff_t token_stride,
                                                    std::ptrdiff_t head_stride) noexcept {
        return {pool,  pool_pages, page_size,   block_table,  tokens,
                heads, head_dim,   page_stride, token_stride, head_stride};
    }

    /// Pages the block table must hold for `tokens`: ceil(tokens / page_size).
    ROPEKIT_ALWAYS_INLINE std::int64_t blocks() const noexcept {
        return page_size > 0 ? (tokens + page_size - 1) / page_size : 0;
    }

    /// Start of row (t, h). No bounds check.
    ROPEKIT_ALWAYS_INLINE T* at(std::int64_t t, int h) const noexcept {
        const std::int64_t b = t / page_size;
        return pool + std::ptrdiff_t(block_table[b]) * page_stride +
               (t - b * page_size) * token_stride + std::ptrdiff_t(h) * head_stride;
    }

    /// Tokens from t on that lie in t's page (at token_stride from each other).
    ROPEKIT_ALWAYS_INLINE std::int64_t run(std::int64_t t) const noexcept {
        return page_size - t % page_size;
    }

    /// Read-only view of the same rows (only for a non-const T).
    template <class U = T, std::enable_if_t<std::is_same_v<U, T> && !std::is_const_v<U>, int> = 0>
    ROPEKIT_ALWAYS_INLINE operator paged_view<const U>() const noexcept {
        return {pool,  pool_pages, page_size,   block_table,  tokens,
                heads, head_dim,   page_stride, token_stride, head_stride};
    }

    /// Throws ropekit::error (field `paged_view`, or `block_table` naming the entry) unless:
    /// tokens >= 0 (< 2^62); 1 <= page_size <= max_page_size; one page is a valid
    /// `page_size x heads x head_dim` view whose rows do not overlap; pages do not overlap
    /// (page_stride at least a page's span) and the pool spans at most max_view_bytes; the
    /// block table is not null when there are tokens and its blocks() ids are all in
    /// [0, pool_pages). Reads blocks() table entries. Pages shared between sequences, or listed
    /// twice, are allowed (a common prefix): the kernels only read them.
    ROPEKIT_ALWAYS_INLINE void validate() const {
        detail::require(tokens >= 0 && tokens < attention_position_limit, "paged_view",
                        "tokens must be in [0, 2^62)", tokens);
        detail::require(page_size >= 1 && page_size <= max_page_size, "paged_view",
                        "page_size must be in [1, 2^20]", page_size);
        detail::require(pool_pages >= 0, "paged_view", "pool_pages must be >= 0", pool_pages);
        std::int64_t page_span = 0;
        const char* why =
            detail::view_problem(pool_pages > 0 ? static_cast<const void*>(pool) : nullptr,
                                 pool_pages > 0 ? page_size : 0, heads, head_dim, token_stride,
                                 head_stride, sizeof(T), &page_span, values_per_element_v<T>);
        if (why) detail::fail("paged_view", why, fields());
        if (pool_pages > 1) {
            detail::require(page_stride >= page_span, "paged_view",
                            "page_stride must be at least one page's span (pages overlap)",
                            page_stride);
            const std::int64_t max_elems = max_view_bytes / std::int64_t(sizeof(T));
            detail::require(pool_pages - 1 <= (max_elems - page_span) / page_stride, "paged_view",
                            "the pool must span at most max_view_bytes", pool_pages);
        }
        if (tokens == 0) return;
        detail::require(pool != nullptr && block_table != nullptr, "paged_view",
                        "pool and block_table must not be null with tokens", tokens);
        const std::int64_t n = blocks();
        for (std::int64_t b = 0; b < n; ++b)
            if (block_table[b] < 0 || block_table[b] >= pool_pages)
                detail::fail("block_table", "entries must be pages of the pool, in [0, pool_pages)",
                             "entry " + detail::format_value(b) + " = " +
                                 detail::format_value(block_table[b]) +
                                 ", pool_pages = " + detail::format_value(pool_pages));
    }

  private:
    ROPEKIT_ALWAYS_INLINE std::string fields() const {
        return "pool_pages=" + detail::format_value(pool_pages) +
               " page_size=" + detail::format_value(page_size) +
               " tokens=" + detail::format_value(tokens) + " heads=" + detail::format_value(heads) +
               " head_dim=" + detail::format_value(head_dim) +
               " page_stride=" + detail::format_value(page_stride) +
               " token_stride=" + detail::format_value(token_stride) +
               " head_stride=" + detail::format_value(head_stride);
    }
};

namespace detail::attn {
/// Keys from t on in one stride run of a K/V view: the rest of a contiguous view, the rest of
/// t's page in a paged one. The drivers cut decode chunks and zero-copy tiles at run ends.
template <class T>
ROPEKIT_ALWAYS_INLINE std::int64_t run_length(const head_view<T>& v, std::int64_t t) noexcept {
    return v.tokens - t;
}
template <class T>
ROPEKIT_ALWAYS_INLINE std::int64_t run_length(const paged_view<T>& v, std::int64_t t) noexcept {
    return v.run(t);
}
/// Elements from row t to the row the decode loop prefetches while it reads t, about `ahead`
/// keys later: t + ahead in a contiguous view; in a paged one, the same slot of the page that
/// many keys on (so one offset serves every row of t's run), or 0 past the sequence's end.
template <class T>
ROPEKIT_ALWAYS_INLINE std::ptrdiff_t prefetch_ahead(const head_view<T>& v, std::int64_t,
                                                    std::int64_t ahead) noexcept {
    return std::ptrdiff_t(ahead) * v.token_stride;
}
template <class T>
ROPEKIT_ALWAYS_INLINE std::ptrdiff_t prefetch_ahead(const paged_view<T>& v, std::int64_t t,
                                                    std::int64_t ahead) noexcept {
    const std::int64_t target = t + (ahead + v.page_size - 1) / v.page_size * v.page_size;
    if (target >= v.tokens) return 0;
    return v.at(target, 0) - v.at(t, 0);
}
}  // namespace detail::attn

ROPEKIT_END_NAMESPACE
