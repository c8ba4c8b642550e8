// SPDX-License-Identifier: Apache-2.0
/// \file
/// Attention mask policies: which keys each query sees, exactly, plus the conservative tile
/// classification and key-range hints the blocked kernel uses to skip hidden tiles.
///
/// Every mask is a small value type with three functions (the concept the kernels rely on):
///
/// - `bool visible(q_pos, q_index, k_pos, k_index)`: the exact visible set. `q_pos`/`k_pos`
///   are token positions (what RoPE rotates by), `k_index` is the key's row in the K/V arrays
///   and `q_index` is the query's row in the same sequence (queries are the last n_q tokens of
///   the key sequence unless attention_params::query_index_offset says otherwise).
/// - `tile_visibility classify(const block_bounds&)`: for a block of queries x a tile of keys,
///   `none` if no pair is visible (the tile is skipped), `all` if every pair is (no per-element
///   masking) and `partial` otherwise. It may answer `partial` when unsure, never wrongly
///   `none` or `all`.
/// - `int key_ranges(const block_bounds&, index_range out[2])`: up to two key-index ranges that
///   contain every key visible to the query block, assuming key positions equal key indices
///   (the kernel only uses it then). Tiles outside them are never visited, which is what makes
///   the cost of sinks + window constant per query.
///
/// Masks compose by writing a new policy: they are a dozen lines each.
#pragma once

#include <algorithm>
#include <cstdint>

#include "error.hpp"

ROPEKIT_BEGIN_NAMESPACE

/// A half-open range [begin, end) of indices (tokens, heads or keys).
struct index_range {
    std::int64_t begin = 0;  ///< first index
    std::int64_t end = 0;    ///< one past the last index
    /// Number of indices (0 when empty; at most INT64_MAX, without overflow for any bounds).
    ROPEKIT_ALWAYS_INLINE constexpr std::int64_t size() const noexcept {
        return end > begin ? std::int64_t(std::min<std::uint64_t>(
                                 std::uint64_t(end) - std::uint64_t(begin), INT64_MAX))
                           : 0;
    }
};

/// Largest |position| attention accepts, and the largest query row (query_index_offset + n_q)
/// and mask window: below 2^62 the difference of two positions, and a position minus a window,
/// fit in int64, so no mask arithmetic overflows. attention() checks positions and offsets, and
/// the masks' validate() their windows.
inline constexpr std::int64_t attention_position_limit = std::int64_t(1) << 62;

/// What a mask says about a whole tile of (query, key) pairs.
enum class tile_visibility {
    none,     ///< no pair visible: the tile is skipped
    partial,  ///< some pairs visible: per-element masking
    all       ///< every pair visible: no masking
};

/// Bounds of a query block and a key tile, inclusive.
struct block_bounds {
    std::int64_t q_pos_min, q_pos_max;      ///< query positions
    std::int64_t q_index_min, q_index_max;  ///< query rows in the key sequence
    std::int64_t k_pos_min, k_pos_max;      ///< key positions
    std::int64_t k_index_min, k_index_max;  ///< key rows
};

namespace detail {
/// Classification of `0 <= q_pos - k_pos < window` (window may be "infinite": causal).
ROPEKIT_ALWAYS_INLINE tile_visibility classify_distance(const block_bounds& b,
                                                        std::int64_t window) noexcept {
    const std::int64_t dmin = b.q_pos_min - b.k_pos_max;
    const std::int64_t dmax = b.q_pos_max - b.k_pos_min;
    if (dmax < 0 || dmin >= window) return tile_visibility::none;
    if (dmin >= 0 && dmax < window) return tile_visibility::all;
    return tile_visibility::partial;
}
constexpr std::int64_t no_window = INT64_MAX;
}  // namespace detail

/// Every key is visible to every query (encoders, cross-attention).
struct full_mask {
    /// Nothing to check (every mask has validate(); attention() calls it).
    ROPEKIT_ALWAYS_INLINE void validate() const noexcept {}
    /// Always true.
    ROPEKIT_ALWAYS_INLINE bool visible(std::int64_t, std::int64_t, std::int64_t,
                                       std::int64_t) const noexcept {
        return true;
    }
    /// Always `all`.
    ROPEKIT_ALWAYS_INLINE tile_visibility classify(const block_bounds&) const noexcept {
        return tile_visibility::all;
    }
    /// All keys.
    ROPEKIT_ALWAYS_INLINE int key_ranges(const block_bounds&, index_range out[2]) const noexcept {
        out[0] = {0, INT64_MAX};
        return 1;
    }
};

/// Causal: key j is visible to query i when `k_pos <= q_pos`.
struct causal_mask {
    /// Nothing to check (every mask has validate(); attention() calls it).
    ROPEKIT_ALWAYS_INLINE void validate() const noexcept {}
    /// `k_pos <= q_pos`.
    ROPEKIT_ALWAYS_INLINE bool visible(std::int64_t q_pos, std::int64_t, std::int64_t k_pos,
                                       std::int64_t) const noexcept {
        return k_pos <= q_pos;
    }
    /// Exact for position bounds.
    ROPEKIT_ALWAYS_INLINE tile_visibility classify(const block_bounds& b) const noexcept {
        return detail::classify_distance(b, detail::no_window);
    }
    /// Keys [0, q_pos_max].
    ROPEKIT_ALWAYS_INLINE int key_ranges(const block_bounds& b, index_range out[2]) const noexcept {
        out[0] = {0, b.q_pos_max + 1};
        return 1;
    }
};

/// Sliding window of `window` keys including the query itself: key j is visible to query i when
/// `0 <= q_pos - k_pos < window` (Mistral, gpt-oss `sliding_window`; window = 1 sees only
/// itself). Pitfall 26: the window counts the diagonal.
struct sliding_window_mask {
    std::int64_t window = 4096;  ///< keys visible per query, in [1, 2^62]

    /// Throws ropekit::error unless 1 <= window <= 2^62 (attention_position_limit).
    ROPEKIT_ALWAYS_INLINE void validate() const {
        detail::require(window >= 1 && window <= attention_position_limit, "window",
                        "must be in [1, 2^62]", window);
    }
    /// `0 <= q_pos - k_pos < window`.
    ROPEKIT_ALWAYS_INLINE bool visible(std::int64_t q_pos, std::int64_t, std::int64_t k_pos,
                                       std::int64_t) const noexcept {
        const std::int64_t d = q_pos - k_pos;
        return d >= 0 && d < window;
    }
    /// Exact for position bounds.
    ROPEKIT_ALWAYS_INLINE tile_visibility classify(const block_bounds& b) const noexcept {
        return detail::classify_distance(b, window);
    }
    /// Keys [q_pos_min - window + 1, q_pos_max].
    ROPEKIT_ALWAYS_INLINE int key_ranges(const block_bounds& b, index_range out[2]) const noexcept {
        out[0] = {std::max<std::int64_t>(0, b.q_pos_min - window + 1), b.q_pos_max + 1};
        return 1;
    }
};

/// The first `n_sink` rows of the key sequence plus a sliding window: key j is visible to
/// query i when `k_pos <= q_pos` and (`k_index < n_sink` or `q_pos - k_pos < window`). The
/// sinks are selected by *row* (whatever positions they carry), the window by position; sinks
/// stay causal, so during prefill query 0 does not see sink key 3.
///
/// **This mask alone is not StreamingLLM** (Xiao et al. 2023). StreamingLLM also rotates q and
/// k at their *cache-slot* positions (a query sees the sinks at positions 0..n_sink-1 and the
/// window right after them), not at their positions in the original text. Used with the text
/// positions, the sinks sit thousands of positions away from the query, far outside what the
/// model was trained on: on a real model that gave NLL 2.8-3.4 where StreamingLLM gives 1.53.
/// Use it only with cache-slot positions (keys at their cache row, the default) for both the
/// rotation and the mask.
struct sink_window_mask {
    std::int64_t n_sink = 4;     ///< first key rows always visible (>= 0)
    std::int64_t window = 1020;  ///< recent keys visible, including the query itself, [1, 2^62]

    /// Throws ropekit::error unless n_sink >= 0 and 1 <= window <= 2^62.
    ROPEKIT_ALWAYS_INLINE void validate() const {
        detail::require(n_sink >= 0, "n_sink", "must be >= 0", n_sink);
        detail::require(window >= 1 && window <= attention_position_limit, "window",
                        "must be in [1, 2^62]", window);
    }
    /// `k_pos <= q_pos && (k_index < n_sink || q_pos - k_pos < window)`.
    ROPEKIT_ALWAYS_INLINE bool visible(std::int64_t q_pos, std::int64_t, std::int64_t k_pos,
                                       std::int64_t k_index) const noexcept {
        const std::int64_t d = q_pos - k_pos;
        return d >= 0 && (k_index < n_sink || d < window);
    }
    /// Causal classification for sink tiles, window classification beyond, `partial` (or the
    /// sure answer) for a tile that straddles the last sink.
    ROPEKIT_ALWAYS_INLINE tile_visibility classify(const block_bounds& b) const noexcept {
        const tile_visibility causal = detail::classify_distance(b, detail::no_window);
        const tile_visibility win = detail::classify_distance(b, window);
        if (b.k_index_max < n_sink) return causal;
        if (b.k_index_min >= n_sink) return win;
        if (causal == tile_visibility::none) return tile_visibility::none;
        if (win == tile_visibility::all) return tile_visibility::all;
        return tile_visibility::partial;
    }
    /// Sinks [0, n_sink) and the window [q_pos_min - window + 1, q_pos_max] (merged when they
    /// touch).
    ROPEKIT_ALWAYS_INLINE int key_ranges(const block_bounds& b, index_range out[2]) const noexcept {
        const index_range sinks{0, std::min(n_sink, b.q_pos_max + 1)};
        const index_range win{std::max<std::int64_t>(0, b.q_pos_min - window + 1), b.q_pos_max + 1};
        if (sinks.size() == 0) {
            out[0] = win;
            return 1;
        }
        if (win.begin <= sinks.end) {
            out[0] = {0, std::max(sinks.end, win.end)};
            return 1;
        }
        out[0] = sinks;
        out[1] = win;
        return 2;
    }
};

/// Chunked local attention (Llama 4 `attention_chunk_size`, HF masking_utils' chunked overlay
/// on the causal mask): key j is visible to query i when `k_pos <= q_pos` and both lie in the
/// same chunk, `floor(q_pos / C) == floor(k_pos / C)`. Positions are the cache positions HF
/// compares (no left padding here), so a query sees at most C keys: the key-range hint starts
/// at its chunk, and the cost per query is O(C), not O(n).
struct chunked_mask {
    std::int64_t attention_chunk_size = 8192;  ///< C, tokens per chunk, in [1, 2^62]

    /// Throws ropekit::error unless 1 <= attention_chunk_size <= 2^62.
    ROPEKIT_ALWAYS_INLINE void validate() const {
        detail::require(
            attention_chunk_size >= 1 && attention_chunk_size <= attention_position_limit,
            "attention_chunk_size", "must be in [1, 2^62]", attention_chunk_size);
    }
    /// Chunk of position `pos`: floor(pos / C), also for negative positions.
    ROPEKIT_ALWAYS_INLINE std::int64_t chunk(std::int64_t pos) const noexcept {
        const std::int64_t c = pos / attention_chunk_size;
        return c * attention_chunk_size > pos ? c - 1 : c;
    }
    /// `k_pos <= q_pos && chunk(k_pos) == chunk(q_pos)`.
    ROPEKIT_ALWAYS_INLINE bool visible(std::int64_t q_pos, std::int64_t, std::int64_t k_pos,
                                       std::int64_t) const noexcept {
        return k_pos <= q_pos && chunk(k_pos) == chunk(q_pos);
    }
    /// Causal classification when the whole block and tile lie in one chunk, `none` when every
    /// key lies in an earlier chunk than every query (or after it), else `partial`.
    ROPEKIT_ALWAYS_INLINE tile_visibility classify(const block_bounds& b) const noexcept {
        const tile_visibility causal = detail::classify_distance(b, detail::no_window);
        if (causal == tile_visibility::none) return causal;
        const std::int64_t q0 = chunk(b.q_pos_min), q1 = chunk(b.q_pos_max);
        const std::int64_t k0 = chunk(b.k_pos_min), k1 = chunk(b.k_pos_max);
        if (k1 < q0) return tile_visibility::none;
        if (q0 == q1 && k0 == q0 && k1 == q0) return causal;
        return tile_visibility::partial;
    }
    /// Keys [chunk start of q_pos_min, q_pos_max].
    ROPEKIT_ALWAYS_INLINE int key_ranges(const block_bounds& b, index_range out[2]) const noexcept {
        out[0] = {std::max<std::int64_t>(0, chunk(b.q_pos_min) * attention_chunk_size),
                  b.q_pos_max + 1};
        return 1;
    }
};

/// Parallel context windows (Ratner et al. 2023, "PCW"): the sequence is split by index into
/// context windows [0, e0), [e0, e1), ..., [e_{n-1}, e_n) followed by task tokens [e_n, ...).
/// A context token sees the earlier tokens of its own window only; a task token sees every
/// earlier token (all windows and earlier task tokens). Causality is by index:
/// visible when `k_index <= q_index` and (same window, or the query is a task token).
/// Positions restart per window (the caller passes them; see attention_params::q_positions /
/// k_positions and tests/isa/test_attention.cpp for the convention).
struct parallel_context_mask {
    const std::int64_t* window_ends = nullptr;  ///< n_windows increasing ends e0 < e1 < ...
    std::int64_t n_windows = 0;                 ///< number of context windows

    /// Throws ropekit::error unless n_windows >= 0, window_ends is not null with windows, and
    /// the ends are positive and strictly increasing (no empty window).
    ROPEKIT_ALWAYS_INLINE void validate() const {
        detail::require(n_windows >= 0, "n_windows", "must be >= 0", n_windows);
        detail::require(n_windows == 0 || window_ends != nullptr, "window_ends",
                        "must not be null with windows", n_windows);
        std::int64_t prev = 0;
        for (std::int64_t w = 0; w < n_windows; ++w) {
            detail::require(window_ends[w] > prev, "window_ends",
                            "must be positive and strictly increasing", window_ends[w]);
            prev = window_ends[w];
        }
    }
    /// Index of the window containing `index`, or n_windows for a task token.
    ROPEKIT_ALWAYS_INLINE std::int64_t segment(std::int64_t index) const noexcept {
        return std::int64_t(std::upper_bound(window_ends, window_ends + n_windows, index) -
                            window_ends);
    }
    /// `k_index <= q_index && (segment(k) == segment(q) || q is a task token)`.
    ROPEKIT_ALWAYS_INLINE bool visible(std::int64_t, std::int64_t q_index, std::int64_t,
                                       std::int64_t k_index) const noexcept {
        if (k_index > q_index) return false;
        const std::int64_t sq = segment(q_index);
        return sq == n_windows || segment(k_index) == sq;
    }
    /// By index bounds: causal-by-index when all queries are task tokens or everything lies
    /// in one window, `none` when every key lies in earlier windows than every (context)
    /// query, else `partial`.
    ROPEKIT_ALWAYS_INLINE tile_visibility classify(const block_bounds& b) const noexcept {
        block_bounds by_index = b;
        by_index.q_pos_min = b.q_index_min;
        by_index.q_pos_max = b.q_index_max;
        by_index.k_pos_min = b.k_index_min;
        by_index.k_pos_max = b.k_index_max;
        const tile_visibility causal = detail::classify_distance(by_index, detail::no_window);
        if (causal == tile_visibility::none) return causal;
        const std::int64_t sq0 = segment(b.q_index_min), sq1 = segment(b.q_index_max);
        if (sq0 == n_windows) return causal;
        const std::int64_t sk0 = segment(b.k_index_min), sk1 = segment(b.k_index_max);
        if (sq0 == sq1 && sk0 == sq0 && sk1 == sq0) return causal;
        if (sq1 < n_windows && sk1 < sq0) return tile_visibility::none;
        return tile_visibility::partial;
    }
    /// Keys [0, q_index_max].
    ROPEKIT_ALWAYS_INLINE int key_ranges(const block_bounds& b, index_range out[2]) const noexcept {
        out[0] = {0, b.q_index_max + 1};
        return 1;
    }
};

ROPEKIT_END_NAMESPACE
