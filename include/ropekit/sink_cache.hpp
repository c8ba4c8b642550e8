// SPDX-License-Identifier: Apache-2.0
/// \file
/// A per-layer StreamingLLM KV cache (Xiao et al. 2023, "Efficient Streaming Language Models
/// with Attention Sinks", arXiv:2309.17453): `n_sink` attention sinks (the first tokens of the
/// stream) plus the `window` most recent tokens, in constant memory, and one decode step over
/// it, built from the library's own parts: keys are written by rope_store (rotated and
/// converted, or quantised, in one pass), values by the same conversion, and the decode step is
/// the streaming_llm rule's kernel (position_rule_attention_blocked) where the rule does
/// anything, attention_blocked where it is the identity, split over keys and merged by
/// merge_attention_row.
///
/// Semantics (the `streaming_llm` rule of position_rules.hpp): StreamingLLM rotates by the
/// position *in the cache*. After the token at stream position i is appended, with
/// `c = n_sink + window - 1`, a query at i sees
///   - window key j (i - window < j <= i) at distance `i - j`, and
///   - sink s (s < n_sink) at distance `min(i, c) - s`.
///
/// Slot layout: slots [0, n_sink) hold the sinks (stream positions 0 .. n_sink - 1), slots
/// [n_sink, n_sink + window) are a ring buffer for the window: stream position j >= n_sink
/// lives in slot `n_sink + (j - n_sink) % window`. Evicting the oldest window token is
/// overwriting its slot; nothing moves, nothing is allocated after construction. The cache
/// keeps each slot's key position (key_positions(): what the stored key is, or is to be,
/// rotated at), updated incrementally, so the decode step reads it as positions::ids.
///
/// Three ways to keep the keys (key_storage), all implemented, tested against the same
/// from-scratch definition and measured by bench/bench_streaming.cpp. The figures are from
/// before the decode moved onto the rule kernel and the stores onto rope_store (then, for
/// rotated_once, the query rotated twice and two attention calls plus an LSE merge per part;
/// scalar conversions on append), not re-measured since: n_sink 4, window 1020, 32 q / 8 kv
/// heads, head_dim 128, f32, 4 layers, one thread, AMD EPYC VM with AVX-512, g++ 12 -O3
/// -march=native; preliminary medians of 5, time per token for all 4 layers at stream position
/// 10^6; docs/streaming.md has the full table:
///   - `unrotated`: keys stored raw and rotated at their cache positions when read, i.e. every
///     decode step rotates a copy of the whole cache's keys (a table of the n_sink + window
///     cache positions suffices; for float keys the copy and the rotation are one rope_store
///     pass): 1768 us, 1.42x the default.
///   - `rotated_at_slot`: keys rotated at their cache position; every eviction moves every
///     window key one position down, so the whole window is re-rotated by -1 each step
///     (llama.cpp's K-shift, ropekit::rerotate_keys): 1990 us, 1.60x the default (1.21x when
///     the three strategies alternate and every step reads K/V from DRAM); with 16-bit storage
///     each key is also re-rounded up to `window` times (pitfall 20).
///   - `rotated_once` (**the default**, because it is the fastest): keys rotated once at their
///     stream position when appended and never touched again, except for an exact re-base
///     every `rebase_interval` tokens: 1245 us (803 tokens/s); over position 10^4, 1.03x in the
///     same run (over_pos10k). Per step it reads K and V once and writes one key, the least a
///     decode step can do; the others add a pass over K.
///
/// Decode. The query arrives raw and is rotated (table-free, copied and rotated in one
/// rope_store pass) at query_position(). Then, per part of the keys, one kernel call:
///   - `rotated_once`: position_rule_attention_blocked with the rule streaming_llm{n_sink,
///     window} and its mask, q at `i' = i - offset` and each key at its stored position
///     (key_positions(): sinks at s, window keys at j - offset). Window keys are near
///     (`i - j < window`) and get the plain product; the sinks, when far, get the rule's far q,
///     q rotated by `min(i', c) - i'`, i.e. distance `min(i', c) - s = min(i, c) - s` (i' >= c
///     once there are evictions, i' = i before). That is StreamingLLM exactly, in one pass over
///     the part's keys: no second query rotation, no sink partial, no merge inside a part.
///   - `rotated_at_slot` and `unrotated`: every key sits at its cache position and the query at
///     its own, `min(i, c)`, which is also the rule's far q position: in cache coordinates the
///     rule is the identity (its far product would repeat the near one on the sink chunk, and
///     the key positions would change at every eviction). So these use attention_blocked with
///     full_mask (every cached key is visible, key order does not matter), the rule's kernel
///     path with the identity folded in; `unrotated` first rotates this part's keys into the
///     workspace.
///
/// Storage: float, bfloat16, half, or block_q8_0 (ggml's 8-bit blocks: K and V rows quantised
/// per 32 values, head_dim a multiple of 32). Float math throughout; one rounding per stored
/// value where the strategy allows it. With block_q8_0:
///   - `rotated_once`: supported. A key is quantised once when stored (rope_store rotates in
///     float and quantises) and once more at each re-base it lives through (dequantised,
///     rotated by the re-base delta in float, quantised again by rope_store); the constructor
///     requires rebase_interval >= window, which makes that at most once: two roundings per key
///     at most, never an accumulation.
///   - `unrotated`: supported. Raw keys are quantised once; every decode step dequantises this
///     part's keys, rotates them at their cache positions and quantises the copy (attention
///     reads K and V of one storage type). Two roundings, the second redone from the stored
///     raw key each step, so nothing accumulates (the same count as 16-bit unrotated).
///   - `rotated_at_slot`: rejected (field `keys`). It re-rotates the whole window on every
///     eviction: quantised keys would be re-quantised up to `window` times, the error
///     accumulating with every eviction (pitfall 20), and the rotation would need a
///     dequantise / requantise pass over K per step on top.
///
/// Re-base (rotated_once): the table-free rotation is accurate for |position| < 2^29, and a
/// stream may be longer. So the window keys are kept at `j - offset`, where
/// `offset(i) = 0` for i <= c, else `floor((i - c) / rebase_interval) * rebase_interval`:
/// whenever the newest position crosses a multiple of rebase_interval past c, every window key
/// is rotated by `-(offset_new - offset_old)` (ropekit::rerotate_keys, the angle computed exactly
/// in double; block_q8_0: dequantise, rope_store by the delta), which lands the window back at
/// positions n_sink .. c. Stored positions stay in [n_sink, c + rebase_interval) forever. The
/// re-base is a pure rotation (norms preserved) and its cost, one window rotation per
/// rebase_interval tokens, is negligible.
///
/// Threads: the decode step splits over keys (sink_attention_part, an index `part` of `parts`,
/// caller-owned sink_workspace and sink_partial per part, no thread creation, no allocation, no
/// throw) and sink_attention_merge combines the parts (merge_attention_row). sink_attention /
/// sink_decode_step are the validating front doors on the calling thread.
///
/// A prefill longer than the cache in one call is position_rule_attention with streaming_llm
/// (attention.hpp); this header is the decode side.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "arch.hpp"
#include "attention.hpp"
#include "error.hpp"
#include "mask.hpp"
#include "position_rules.hpp"
#include "positions.hpp"
#include "rope.hpp"
#include "storage.hpp"
#include "table.hpp"
#include "view.hpp"

ROPEKIT_BEGIN_NAMESPACE

/// How a sink_cache keeps its keys (see the file comment for the measured costs).
enum class key_storage {
    unrotated,        ///< raw keys, rotated at their cache positions on every read
    rotated_at_slot,  ///< rotated at the cache position, window re-rotated on every eviction
    rotated_once      ///< rotated at the stream position once; periodic exact re-base (default)
};

/// Largest number of values one K store of a sink_cache may hold, `n_kv_heads x head_dim x
/// (n_sink + window)` (its V store holds as many): 2^30, i.e. 4 GiB per store in float (8 GiB
/// for K and V of one layer), 2 GiB in bfloat16 or half, 1.06 GiB in block_q8_0. No real
/// StreamingLLM cache comes near it: the paper's caches hold 256 to 4096 tokens, and even the
/// widest RoPE key row in use without GQA, 64 heads x 128 (LLaMA-65B), fits a 2^17-token window
/// (a GQA row of 8 x 128, 2^20 tokens). The bound is in values, not bytes, so one set of options
/// is valid for every storage type. The constructor checks it by division, before allocating
/// anything: the product of an int, 256 and 2^28 can pass 2^64 and wrap (2^30 heads x 256 x
/// 2^26 slots is 0 values), and a corrupt count (a config's sliding_window, say) must get a
/// ropekit::error, not std::bad_alloc. sink_partial and sink_workspace bound `n_heads x
/// head_dim` by it too.
inline constexpr std::int64_t sink_cache_max_values = std::int64_t(1) << 30;

namespace detail::sink {

/// Throws ropekit::error unless `n_heads x head_dim` (both > 0) is at most
/// sink_cache_max_values: the field is head_dim when it breaks the bound on its own.
ROPEKIT_ALWAYS_INLINE void require_row(int n_heads, int head_dim) {
    detail::require(n_heads > 0, "n_heads", "must be > 0", n_heads);
    detail::require(head_dim > 0 && head_dim <= sink_cache_max_values, "head_dim",
                    "must be in [1, sink_cache_max_values = 2^30]", head_dim);
    detail::require(n_heads <= sink_cache_max_values / head_dim, "n_heads",
                    "must keep n_heads x head_dim <= sink_cache_max_values (2^30 values)", n_heads);
}

/// Converts the heads of one float token `src` to the rows of `dst` (one token, same heads and
/// head_dim): nearest even for bfloat16 / half, quantize_block_q8_0 per block of 32 for
/// block_q8_0. These are the conversions rope_store applies to its pass-through channels
/// (rope_store_kernels.hpp; SIMD on a vector Arch, bit-identical with storage.hpp's from_float
/// and quantize_q8_0), for the rows nothing rotates: values, and unrotated keys.
template <class Arch, class KV>
ROPEKIT_ALWAYS_INLINE void convert_token(const head_view<const float>& src,
                                         const head_view<KV>& dst) noexcept {
    const int D = dst.head_dim;
    for (int h = 0; h < dst.heads; ++h) {
        const float* x = src.at(0, h);
        KV* y = dst.at(0, h);
        if constexpr (std::is_same_v<KV, block_q8_0>) {
            for (int b = 0; b < D / q8_0_block_values; ++b)
                detail::quantize_block_q8_0_arch<Arch>(x + b * q8_0_block_values, y[b]);
        } else {
            detail::store_convert_run<Arch, KV>(x, y, D);
        }
    }
}

/// block_q8_0 only: the keys of slots [t0, t0 + n) of `k` dequantised into `dst`, head-major
/// `[heads][n][head_dim]` floats (storage.hpp's dequantize_q8_0: exact).
template <class Arch>
ROPEKIT_ALWAYS_INLINE void dequantize_slots(const head_view<const block_q8_0>& k, std::int64_t t0,
                                            std::int64_t n, float* dst) noexcept {
    const int D = k.head_dim;
    for (int h = 0; h < k.heads; ++h)
        for (std::int64_t t = 0; t < n; ++t)
            dequantize_q8_0(
                k.at(t0 + t, h),
                dst + (std::size_t(h) * std::size_t(n) + std::size_t(t)) * std::size_t(D), D);
}

/// Size of the workspace buffer an unrotated block_q8_0 decode dequantises keys into, a few
/// slots at a time: this many floats (64 KB, so it stays in L2), rounded down to whole slots,
/// and at least one slot.
inline constexpr std::int64_t dequantized_values = 16384;

}  // namespace detail::sink

/// Construction parameters of a sink_cache.
struct sink_cache_options {
    int n_kv_heads = 0;                                    ///< key / value heads, > 0
    int head_dim = 0;                                      ///< channels per head, in [1, 256]
    std::int64_t n_sink = 4;                               ///< attention sinks kept, >= 0
    std::int64_t window = 1020;                            ///< recent tokens kept (query included)
    key_storage keys = key_storage::rotated_once;          ///< key storage strategy
    std::int64_t rebase_interval = std::int64_t(1) << 20;  ///< rotated_once: tokens per re-base
};

/// A per-layer StreamingLLM cache of `n_sink + window` slots of K and V, each
/// `n_kv_heads x head_dim` values of KV (float, bfloat16, half or block_q8_0). See the file
/// comment.
///
/// Not thread-safe for writes: append from one thread, then run the decode parts (which only
/// read the cache) on as many threads as wanted.
/// \tparam KV storage type of K and V: float, bfloat16, half or block_q8_0 (head_dim a multiple
/// of 32; key_storage rotated_once or unrotated, see the file comment)
template <class KV>
class sink_cache {
    static_assert(is_kv_storage_type_v<KV>,
                  "sink_cache storage is float, bfloat16, half or block_q8_0");
    static constexpr bool quantised = std::is_same_v<KV, block_q8_0>;

  public:
    /// Validates and allocates everything the cache will ever use. Throws ropekit::error naming
    /// the field, before allocating anything: `n_kv_heads` (<= 0), `head_dim` (not in [1, 256];
    /// block_q8_0: not a multiple of 32), `n_sink` (< 0), `window` (< 1, or n_sink + window >=
    /// 2^28), a store of more than sink_cache_max_values values (`n_sink` or `window` when one
    /// KV head would already exceed it, else `n_kv_heads`), `keys` (rotated_at_slot with
    /// block_q8_0), `rebase_interval` (< 1 or c + rebase_interval >= 2^29; block_q8_0 with
    /// rotated_once: < window), or the frequencies' own fields (rope_frequencies::validate),
    /// `head_dim` when freqs.head_dim differs from options.head_dim.
    /// \param freqs the model's frequencies (any scaling method; copied)
    /// \param opt shape and strategy
    ROPEKIT_ALWAYS_INLINE sink_cache(const rope_frequencies& freqs, const sink_cache_options& opt)
        : opt_(opt), freqs_(freqs) {
        detail::require(opt.n_kv_heads > 0, "n_kv_heads", "must be > 0", opt.n_kv_heads);
        detail::require(opt.head_dim > 0 && opt.head_dim <= detail::attn::max_rule_head_dim,
                        "head_dim", "must be in [1, 256]", opt.head_dim);
        if constexpr (quantised)
            detail::require(opt.head_dim % q8_0_block_values == 0, "head_dim",
                            "must be a multiple of 32 with block_q8_0 storage (K and V rows are "
                            "quantised per block of 32 values)",
                            opt.head_dim);
        detail::require(opt.n_sink >= 0 && opt.n_sink < max_slots, "n_sink", "must be in [0, 2^28)",
                        opt.n_sink);
        detail::require(opt.window >= 1 && opt.window < max_slots - opt.n_sink, "window",
                        "must be >= 1 with n_sink + window < 2^28", opt.window);
        require_size(opt);
        freqs.validate();
        detail::require(freqs.head_dim == opt.head_dim, "head_dim",
                        "of the frequencies must equal the cache's head_dim", freqs.head_dim);
        // The cache rotates keys and queries itself with the ordinary (partial) rotary of the
        // first rotary_dim channels: a slice at an offset or a wider NeoX span is rejected.
        detail::require(freqs.rotary_offset == 0, "rotary_offset", "must be 0 for the sink cache",
                        freqs.rotary_offset);
        detail::require(freqs.ordinary_geometry(), "pair_span",
                        "must be 0 or rotary_dim / 2 for the sink cache", freqs.pair_span);
        if constexpr (quantised)
            detail::require(opt.keys != key_storage::rotated_at_slot, "keys",
                            "must be rotated_once or unrotated with block_q8_0 storage: "
                            "rotated_at_slot re-rotates the window on every eviction, which "
                            "re-quantises each key up to `window` times (pitfall 20)",
                            "rotated_at_slot");
        const std::int64_t c = opt.n_sink + opt.window - 1;
        detail::require(
            opt.rebase_interval >= 1 && opt.rebase_interval < table_free_position_limit - c,
            "rebase_interval", "must be >= 1 with n_sink + window + rebase_interval <= 2^29",
            opt.rebase_interval);
        const std::int64_t hi = detail::max_accurate_position(freqs.inv_freq);
        detail::require(c + opt.rebase_interval <= hi, "rebase_interval",
                        "keeps positions beyond the frequencies' accurate range", hi);
        if constexpr (quantised)
            detail::require(
                opt.keys != key_storage::rotated_once || opt.rebase_interval >= opt.window,
                "rebase_interval",
                "must be >= window with block_q8_0 keys: each re-base re-quantises "
                "the window's keys, and a key may live through one re-base at most "
                "(pitfall 20)",
                opt.rebase_interval);
        row_ = std::size_t(opt.n_kv_heads) * std::size_t(opt.head_dim);
        const std::size_t n = std::size_t(slots()) * row_ / std::size_t(values_per_element_v<KV>);
        k_.assign(n, KV{});
        v_.assign(n, KV{});
        slot_pos_.assign(std::size_t(slots()), -1);
        key_pos_.assign(std::size_t(slots()), -1);
        if (quantised && opt.keys == key_storage::rotated_once) tmp_.assign(row_, 0.0f);
        // unrotated: the rows of the cache positions; otherwise the rule kernel's table, empty
        // (the one far-q row a decode call needs, a rotation by c - i', is computed accurately).
        table_ =
            cos_sin_table::for_range(freqs, 0, opt.keys == key_storage::unrotated ? slots() : 0);
    }

    /// The options the cache was built with.
    ROPEKIT_ALWAYS_INLINE const sink_cache_options& options() const noexcept { return opt_; }
    /// The frequencies (a copy of the constructor's).
    ROPEKIT_ALWAYS_INLINE const rope_frequencies& frequencies() const noexcept { return freqs_; }
    /// A range cos/sin table of the frequencies: for key_storage::unrotated the rows of cache
    /// positions [0, slots()), otherwise empty (what the rule kernel is given; it computes the
    /// rows it needs).
    ROPEKIT_ALWAYS_INLINE const cos_sin_table& cache_table() const noexcept { return table_; }
    /// n_sink + window.
    ROPEKIT_ALWAYS_INLINE std::int64_t slots() const noexcept { return opt_.n_sink + opt_.window; }
    /// Stream position of the next token to append (= tokens appended so far).
    ROPEKIT_ALWAYS_INLINE std::int64_t next_position() const noexcept { return next_; }
    /// Sink slots filled: min(next_position(), n_sink). They are slots [0, sink_count()).
    ROPEKIT_ALWAYS_INLINE std::int64_t sink_count() const noexcept {
        return std::min(next_, opt_.n_sink);
    }
    /// Window slots filled: min(window, max(0, next_position() - n_sink)); they are slots
    /// [n_sink, n_sink + window_count()), in ring order.
    ROPEKIT_ALWAYS_INLINE std::int64_t window_count() const noexcept {
        return std::min(opt_.window, std::max<std::int64_t>(0, next_ - opt_.n_sink));
    }
    /// All slots' keys, `slots() x n_kv_heads x head_dim` (only the filled ones are meaningful),
    /// stored as key_storage says. Memory is head-major, `[n_kv_heads][slots][head_dim]`: the
    /// keys of one head are contiguous, so the attention's walk over them stays on few pages
    /// (with `[slot][head][dim]` each row of a head sat on its own 4 KB page; head-major cut the
    /// benchmark's time per token by 7% for rotated_once, 14% and 17% for the other two).
    /// block_q8_0: the strides count blocks (view.hpp).
    ROPEKIT_ALWAYS_INLINE head_view<const KV> keys() const noexcept {
        return head_view<const KV>::head_major(k_.data(), opt_.n_kv_heads, slots(), opt_.head_dim);
    }
    /// All slots' values, `slots() x n_kv_heads x head_dim`, head-major like keys().
    ROPEKIT_ALWAYS_INLINE head_view<const KV> values() const noexcept {
        return head_view<const KV>::head_major(v_.data(), opt_.n_kv_heads, slots(), opt_.head_dim);
    }
    /// Stream position of the token in `slot`, or -1 for an empty slot.
    ROPEKIT_ALWAYS_INLINE std::int64_t stream_position(std::int64_t slot) const noexcept {
        return slot_pos_[std::size_t(slot)];
    }
    /// The per-slot stream positions (slots() entries, -1 for an empty slot).
    ROPEKIT_ALWAYS_INLINE const std::int64_t* stream_positions() const noexcept {
        return slot_pos_.data();
    }
    /// Last appended stream position, next_position() - 1 (-1 when empty).
    ROPEKIT_ALWAYS_INLINE std::int64_t last_position() const noexcept { return next_ - 1; }
    /// StreamingLLM position in the cache of the filled slot `slot` (what the rule rotates it
    /// at): s for a sink, `j - max(0, i - c)` for window token j, i = last_position().
    ROPEKIT_ALWAYS_INLINE std::int64_t cache_position(std::int64_t slot) const noexcept {
        const std::int64_t j = slot_pos_[std::size_t(slot)];
        return j < opt_.n_sink ? j : j - shift(last_position());
    }
    /// Cache position of the last appended token (the query's): min(i, c).
    ROPEKIT_ALWAYS_INLINE std::int64_t query_cache_position() const noexcept {
        return last_position() - shift(last_position());
    }
    /// rotated_once: what window positions are offset by (see the file comment); 0 otherwise.
    ROPEKIT_ALWAYS_INLINE std::int64_t rotation_offset() const noexcept {
        return opt_.keys == key_storage::rotated_once ? offset(last_position()) : 0;
    }
    /// Position the stored key of filled slot `slot` is rotated at: cache_position(slot) for
    /// rotated_at_slot, `stream_position - rotation_offset()` (sinks: their position) for
    /// rotated_once, and for unrotated the position a reader must rotate it at,
    /// cache_position(slot) (the stored key itself is raw).
    ROPEKIT_ALWAYS_INLINE std::int64_t key_position(std::int64_t slot) const noexcept {
        const std::int64_t j = slot_pos_[std::size_t(slot)];
        return rot_pos(j, last_position());
    }
    /// key_position() of every slot (slots() entries, -1 for an empty slot), kept up to date by
    /// every append: the key positions of a kernel call over the cache, as
    /// `positions::ids(cache.key_positions())` (what the rotated_once decode passes as
    /// k_positions, and the unrotated one rotates at).
    ROPEKIT_ALWAYS_INLINE const std::int64_t* key_positions() const noexcept {
        return key_pos_.data();
    }
    /// Position the query of the last token must be rotated at for the window keys (all keys
    /// for unrotated and rotated_at_slot): key_position of its own slot. The decode step rotates
    /// it there; for rotated_once the rule kernel derives the sinks' rotation from it.
    ROPEKIT_ALWAYS_INLINE std::int64_t query_position() const noexcept {
        return rot_pos(last_position(), last_position());
    }
    /// Position the query must be scored at against the sink keys: min(i, c) (the rule's far
    /// q).
    ROPEKIT_ALWAYS_INLINE std::int64_t sink_query_position() const noexcept {
        return query_cache_position();
    }

    /// Appends a chunk of tokens (raw, unrotated k projections and v, as float views of
    /// `tokens x n_kv_heads x head_dim`) at stream positions next_position() onwards, evicting
    /// the oldest window tokens. Only the tokens that survive the chunk are converted and
    /// stored, so a chunk longer than the cache costs what its surviving part costs. No
    /// allocation. Throws ropekit::error naming the field (`k`/`v` shapes, `tokens`) before
    /// changing anything.
    /// \tparam Arch architecture of the rotation kernels (default: the caller's flags)
    template <class Arch = default_arch>
    ROPEKIT_ALWAYS_INLINE void append(head_view<const float> k, head_view<const float> v) {
        check_chunk(k, v, k.tokens);
        detail::require(next_ <= std::numeric_limits<std::int64_t>::max() / 2 - k.tokens, "tokens",
                        "stream position overflows", next_);
        append_unchecked<Arch>(k, v);
    }

    /// Hot-path append (preconditions ROPEKIT_ASSERTed, no throw, no allocation): as append().
    /// Not `noexcept`, like every ropekit kernel, so that an engine's (or the tests')
    /// ROPEKIT_ASSERT may throw.
    template <class Arch = default_arch>
    ROPEKIT_ALWAYS_INLINE void append_unchecked(head_view<const float> k,
                                                head_view<const float> v) {
        const bool ok = k.tokens == v.tokens && k.heads == opt_.n_kv_heads &&
                        v.heads == opt_.n_kv_heads && k.head_dim == opt_.head_dim &&
                        v.head_dim == opt_.head_dim && (k.tokens == 0 || (k.data && v.data));
        ROPEKIT_ASSERT(ok, "sink_cache::append: k/v shapes do not match the cache");
        if (!ok || k.tokens == 0) return;
        const std::int64_t first = next_, m = k.tokens;
        const std::int64_t i_old = next_ - 1, i_new = next_ + m - 1;
        // 1. Move the surviving window keys from the state at i_old to the state at i_new:
        // their key positions change by `delta` (rotated_once: when the re-base offset changes;
        // the others: by the evictions), and the keys stored rotated are rotated by it
        // (rotated_at_slot's K-shift, rotated_once's re-base). (Slots about to be overwritten
        // are moved too: harmless, and one contiguous call.)
        const std::int64_t delta = opt_.keys == key_storage::rotated_once
                                       ? offset(i_old) - offset(i_new)
                                       : shift(i_old) - shift(i_new);
        const std::int64_t wc = window_count();
        if (delta != 0 && wc > 0) {
            if (opt_.keys != key_storage::unrotated) rotate_window_keys<Arch>(delta, wc);
            for (std::int64_t s = opt_.n_sink; s < opt_.n_sink + wc; ++s)
                key_pos_[std::size_t(s)] += delta;
        }
        // 2. Store the chunk tokens that survive at i_new: the sinks, and the last `window`.
        next_ = i_new + 1;
        const std::int64_t keep_from = std::max(first, i_new - opt_.window + 1);
        for (std::int64_t j = first; j <= i_new; ++j) {
            if (j >= opt_.n_sink && j < keep_from) continue;  // evicted within the chunk
            store<Arch>(slot_of(j), j, k.tokens_slice(j - first, j - first + 1),
                        v.tokens_slice(j - first, j - first + 1), rot_pos(j, i_new));
        }
    }

    /// One decode step's append: the new token's raw k and v (1 token each).
    template <class Arch = default_arch>
    ROPEKIT_ALWAYS_INLINE void append_token(head_view<const float> k, head_view<const float> v) {
        detail::require(k.tokens == 1, "k.tokens", "must be 1 for append_token", k.tokens);
        append<Arch>(k, v);
    }

    /// Empties the cache (the stream restarts at position 0). No allocation.
    ROPEKIT_ALWAYS_INLINE void clear() noexcept {
        next_ = 0;
        std::fill(slot_pos_.begin(), slot_pos_.end(), std::int64_t(-1));
        std::fill(key_pos_.begin(), key_pos_.end(), std::int64_t(-1));
    }

    /// Rebuilds the cache of a stream whose next position is `next_position`, from the raw k/v
    /// of the tokens it holds: `sink_k/sink_v` the first min(next_position, n_sink) tokens of
    /// the stream, `window_k/window_v` the last min(window, max(0, next_position - n_sink))
    /// tokens, oldest first. The result is the same state (offset and re-base schedule
    /// included) as appending the whole stream would give: restoring a session from raw
    /// snapshots, or starting a benchmark at stream position 10^6 without streaming 10^6
    /// tokens. Throws ropekit::error naming the field.
    template <class Arch = default_arch>
    ROPEKIT_ALWAYS_INLINE void restore(head_view<const float> sink_k, head_view<const float> sink_v,
                                       head_view<const float> window_k,
                                       head_view<const float> window_v,
                                       std::int64_t next_position) {
        detail::require(
            next_position >= 0 && next_position <= std::numeric_limits<std::int64_t>::max() / 2,
            "next_position", "must be in [0, 2^62]", next_position);
        const std::int64_t ns = std::min(next_position, opt_.n_sink);
        const std::int64_t nw =
            std::min(opt_.window, std::max<std::int64_t>(0, next_position - opt_.n_sink));
        check_chunk(sink_k, sink_v, ns);
        check_chunk(window_k, window_v, nw);
        clear();
        next_ = next_position;
        const std::int64_t i = next_position - 1;
        for (std::int64_t s = 0; s < ns; ++s)
            store<Arch>(slot_of(s), s, sink_k.tokens_slice(s, s + 1), sink_v.tokens_slice(s, s + 1),
                        rot_pos(s, i));
        for (std::int64_t t = 0; t < nw; ++t) {
            const std::int64_t j = next_position - nw + t;
            store<Arch>(slot_of(j), j, window_k.tokens_slice(t, t + 1),
                        window_v.tokens_slice(t, t + 1), rot_pos(j, i));
        }
    }

  private:
    static constexpr std::int64_t max_slots = std::int64_t(1) << 28;

    // n_kv_heads x head_dim x slots <= sink_cache_max_values without forming the product,
    // which can wrap. With slots < 2^28 and head_dim <= 256 (checked first) slots x head_dim
    // stays below 2^36. The field named is the one that breaks the bound on its own: n_sink or
    // window when even one KV head would not fit, else n_kv_heads.
    ROPEKIT_ALWAYS_INLINE static void require_size(const sink_cache_options& o) {
        constexpr std::int64_t max = sink_cache_max_values;
        const std::int64_t d = o.head_dim, slots = o.n_sink + o.window;
        constexpr const char* rule =
            "must keep n_kv_heads x head_dim x (n_sink + window) <= sink_cache_max_values "
            "(2^30 values per K or V store)";
        if (o.n_sink * d > max) fail_size("n_sink", rule, o, o.n_sink);
        if (slots * d > max) fail_size("window", rule, o, o.window);
        if (o.n_kv_heads > max / (slots * d)) fail_size("n_kv_heads", rule, o, o.n_kv_heads);
    }
    // Cold: the message also shows the three factors, since any of them may be the corrupt one.
    [[noreturn]] ROPEKIT_ALWAYS_INLINE static void fail_size(const char* field, const char* rule,
                                                             const sink_cache_options& o,
                                                             std::int64_t value) {
        detail::fail(field,
                     (std::string(rule) + "; here " + std::to_string(o.n_kv_heads) + " x " +
                      std::to_string(o.head_dim) + " x " + std::to_string(o.n_sink + o.window))
                         .c_str(),
                     value);
    }

    ROPEKIT_ALWAYS_INLINE void check_chunk(const head_view<const float>& k,
                                           const head_view<const float>& v,
                                           std::int64_t tokens) const {
        detail::require(k.tokens == tokens, "k.tokens", "must be the expected token count",
                        k.tokens);
        detail::require(v.tokens == k.tokens, "v.tokens", "must equal k.tokens", v.tokens);
        detail::require(k.heads == opt_.n_kv_heads, "k.heads", "must equal n_kv_heads", k.heads);
        detail::require(v.heads == opt_.n_kv_heads, "v.heads", "must equal n_kv_heads", v.heads);
        detail::require(k.head_dim == opt_.head_dim, "k.head_dim", "must equal head_dim",
                        k.head_dim);
        detail::require(v.head_dim == opt_.head_dim, "v.head_dim", "must equal head_dim",
                        v.head_dim);
        k.validate();
        v.validate();
    }

    /// Evictions so far at last position i: the cache position of window token j is j - shift.
    ROPEKIT_ALWAYS_INLINE std::int64_t shift(std::int64_t i) const noexcept {
        return std::max<std::int64_t>(0, i - (slots() - 1));
    }
    /// rotated_once: the window's position offset at last position i (the re-base schedule).
    ROPEKIT_ALWAYS_INLINE std::int64_t offset(std::int64_t i) const noexcept {
        const std::int64_t c = slots() - 1;
        return i <= c ? 0 : (i - c) / opt_.rebase_interval * opt_.rebase_interval;
    }
    /// Position the key of stream token j is (to be) rotated at when i is the last token.
    ROPEKIT_ALWAYS_INLINE std::int64_t rot_pos(std::int64_t j, std::int64_t i) const noexcept {
        if (j < opt_.n_sink) return j;
        return opt_.keys == key_storage::rotated_once ? j - offset(i) : j - shift(i);
    }
    ROPEKIT_ALWAYS_INLINE std::int64_t slot_of(std::int64_t j) const noexcept {
        return j < opt_.n_sink ? j : opt_.n_sink + (j - opt_.n_sink) % opt_.window;
    }
    /// The rows of `slot` in store `x` (k_ or v_), as a one-token view.
    ROPEKIT_ALWAYS_INLINE head_view<KV> slot_rows(std::vector<KV>& x, std::int64_t slot) noexcept {
        return head_view<KV>::head_major(x.data(), opt_.n_kv_heads, slots(), opt_.head_dim)
            .tokens_slice(slot, slot + 1);
    }
    /// Rotates the keys of window slots [n_sink, n_sink + wc) by `delta` in place: the
    /// table-free rerotate_keys (exact angle) for float and 16-bit keys; block_q8_0 keys (only
    /// rotated_once's re-base reaches here: rotated_at_slot is rejected) are dequantised into
    /// tmp_ slot by slot and written back by rope_store, rotated and quantised in one pass.
    template <class Arch>
    ROPEKIT_ALWAYS_INLINE void rotate_window_keys(std::int64_t delta, std::int64_t wc) {
        if constexpr (quantised) {
            const head_view<const float> row =
                head_view<const float>::packed(tmp_.data(), 1, opt_.n_kv_heads, opt_.head_dim);
            for (std::int64_t s = opt_.n_sink; s < opt_.n_sink + wc; ++s) {
                detail::sink::dequantize_slots<Arch>(keys(), s, 1, tmp_.data());
                rope_store<Arch, KV>(freqs_, row, slot_rows(k_, s), positions::constant(delta), 0,
                                     1);
            }
        } else {
            const head_view<KV> window =
                head_view<KV>::head_major(k_.data(), opt_.n_kv_heads, slots(), opt_.head_dim)
                    .tokens_slice(opt_.n_sink, slots());
            rerotate_keys<Arch, KV>(freqs_, window, positions::constant(delta), 0, wc);
        }
    }
    /// Stores one token (k1 / v1: one-token float views) in `slot`: the key rotated at
    /// `position` and converted (rope_store: one rounding, after the rotation in float), or
    /// converted raw (unrotated); the value converted.
    template <class Arch>
    ROPEKIT_ALWAYS_INLINE void store(std::int64_t slot, std::int64_t j,
                                     const head_view<const float>& k1,
                                     const head_view<const float>& v1, std::int64_t position) {
        if (opt_.keys == key_storage::unrotated)
            detail::sink::convert_token<Arch, KV>(k1, slot_rows(k_, slot));
        else
            rope_store<Arch, KV>(freqs_, k1, slot_rows(k_, slot), positions::constant(position), 0,
                                 1);
        detail::sink::convert_token<Arch, KV>(v1, slot_rows(v_, slot));
        slot_pos_[std::size_t(slot)] = j;
        key_pos_[std::size_t(slot)] = position;
    }

    sink_cache_options opt_;
    rope_frequencies freqs_;
    cos_sin_table table_;
    std::size_t row_ = 0;  // values of one slot's K (or V) row, n_kv_heads x head_dim
    std::int64_t next_ = 0;
    std::vector<KV> k_, v_;
    std::vector<std::int64_t> slot_pos_;  // stream position per slot, -1 empty
    std::vector<std::int64_t> key_pos_;   // key_position per slot, -1 empty
    std::vector<float> tmp_;              // block_q8_0 rotated_once: one slot's keys, dequantised
};

/// One part's partial attention result (one query token): `o` is `n_heads x head_dim`, `lse`
/// `n_heads`, normalised over that part's keys. Caller-owned, one per part; allocated once.
struct sink_partial {
    int n_heads = 0;         ///< query heads
    int head_dim = 0;        ///< channels per head
    std::vector<float> o;    ///< partial output, [n_heads][head_dim]
    std::vector<float> lse;  ///< log-sum-exp of each head's scaled scores (-inf: no key)
    /// Allocates for `n_heads x head_dim`. Throws ropekit::error, before allocating, for
    /// non-positive sizes and for `n_heads x head_dim` above sink_cache_max_values (field
    /// `head_dim` when it alone exceeds the bound, else `n_heads`).
    ROPEKIT_ALWAYS_INLINE sink_partial(int n_heads_, int head_dim_)
        : n_heads(n_heads_), head_dim(head_dim_) {
        detail::sink::require_row(n_heads_, head_dim_);
        o.assign(std::size_t(n_heads_) * std::size_t(head_dim_), 0.0f);
        lse.assign(std::size_t(n_heads_), -std::numeric_limits<float>::infinity());
    }
    /// The output as a one-token view.
    ROPEKIT_ALWAYS_INLINE head_view<float> view() noexcept {
        return head_view<float>::packed(o.data(), 1, n_heads, head_dim);
    }
};

/// Scratch of one decode part on one thread for caches of one shape: the attention tile
/// workspace, the rotated query and, for unrotated keys, the keys rotated at their cache
/// positions (block_q8_0: and a few slots' keys dequantised). Allocate one per worker thread,
/// reuse it for every layer and step.
/// \tparam KV the cache's storage type
template <class KV>
struct sink_workspace {
    int n_heads = 0;                            ///< query heads it was sized for
    int head_dim = 0;                           ///< channels per head
    std::int64_t slots = 0;                     ///< cache slots it was sized for
    std::unique_ptr<attention_workspace> attn;  ///< attention tiles (~1 MB)
    std::vector<float> q_window;                ///< q rotated at query_position()
    std::vector<KV> k_rotated;                  ///< unrotated: keys rotated for this step
    std::vector<float> k_dequantized;           ///< unrotated block_q8_0: a few slots' raw keys
    /// Sized for `cache`'s shape and `n_heads` query heads (a multiple of n_kv_heads, with
    /// `n_heads x head_dim` at most sink_cache_max_values). Throws ropekit::error (field
    /// `n_heads`) before allocating anything; the rotated keys of an unrotated cache are as
    /// large as its K store, which its constructor bounded.
    ROPEKIT_ALWAYS_INLINE sink_workspace(const sink_cache<KV>& cache, int n_heads_)
        : n_heads(checked_heads(cache, n_heads_)),
          head_dim(cache.options().head_dim),
          slots(cache.slots()),
          attn(std::make_unique<attention_workspace>()) {
        q_window.assign(std::size_t(n_heads_) * std::size_t(head_dim), 0.0f);
        if (cache.options().keys == key_storage::unrotated) {
            const std::size_t row = std::size_t(cache.options().n_kv_heads) * std::size_t(head_dim);
            k_rotated.assign(std::size_t(slots) * row / std::size_t(values_per_element_v<KV>),
                             KV{});
            if constexpr (std::is_same_v<KV, block_q8_0>) {
                const std::int64_t rows = std::clamp<std::int64_t>(
                    detail::sink::dequantized_values / std::int64_t(row), 1, slots);
                k_dequantized.assign(std::size_t(rows) * row, 0.0f);
            }
        }
    }

  private:
    // Runs first (n_heads is the first member), so a bad count allocates nothing, not even the
    // 1 MB attention workspace.
    ROPEKIT_ALWAYS_INLINE static int checked_heads(const sink_cache<KV>& cache, int n) {
        detail::require(n > 0 && n % cache.options().n_kv_heads == 0, "n_heads",
                        "must be a positive multiple of n_kv_heads", n);
        detail::sink::require_row(n, cache.options().head_dim);
        return n;
    }
};

namespace detail::sink {

/// Hot-path check of a decode part: shapes, part index, the workspace and partial built for
/// them, a usable query view (rope_store reads it), params carrying the frequencies' attention
/// factor (the rule kernel's precondition; the front door says so with an error), no learned
/// sinks, a non-empty cache.
template <class Arch, class KV>
bool part_ok(const sink_cache<KV>& cache, const head_view<const float>& q,
             const attention_params& p, int part, int parts, const sink_workspace<KV>& ws,
             const sink_partial& out) noexcept {
    const sink_cache_options& o = cache.options();
    const std::size_t row = std::size_t(o.n_kv_heads) * std::size_t(o.head_dim);
    const bool q_ok =
        q.tokens == 1 && q.data != nullptr && q.head_dim == o.head_dim && q.heads > 0 &&
        q.heads % o.n_kv_heads == 0 &&
        detail::view_problem<Arch>(q.data, q.tokens, q.heads, q.head_dim, q.token_stride,
                                   q.head_stride, sizeof(float)) == nullptr;
    const bool unrotated_ok = o.keys != key_storage::unrotated ||
                              (ws.k_rotated.size() == std::size_t(cache.slots()) * row /
                                                          std::size_t(values_per_element_v<KV>) &&
                               (!std::is_same_v<KV, block_q8_0> || ws.k_dequantized.size() >= row));
    return q_ok && parts >= 1 && part >= 0 && part < parts && ws.n_heads == q.heads &&
           ws.head_dim == o.head_dim && ws.slots == cache.slots() && ws.attn != nullptr &&
           ws.q_window.size() == std::size_t(q.heads) * std::size_t(o.head_dim) && unrotated_ok &&
           out.n_heads == q.heads && out.head_dim == o.head_dim && p.softmax_scale() > 0.0f &&
           detail::attn::logit_scale_matches<Arch>(p, cache.frequencies()) &&
           p.sink_logits == nullptr && cache.next_position() > 0;
}

/// unrotated: the keys of slots [b, e) rotated at their cache positions (key_positions(), rows
/// of cache_table()) into ws.k_rotated.
template <class Arch, class KV>
void rotate_for_read(const sink_cache<KV>& cache, sink_workspace<KV>& ws, std::int64_t b,
                     std::int64_t e) {
    const sink_cache_options& o = cache.options();
    const head_view<const KV> k = cache.keys();
    const head_view<KV> kr =
        head_view<KV>::head_major(ws.k_rotated.data(), o.n_kv_heads, cache.slots(), o.head_dim);
    const std::int64_t* pos = cache.key_positions();
    const cos_sin_table& table = cache.cache_table();
    if constexpr (std::is_same_v<KV, float>) {
        // Copy and rotate in one pass.
        rope_store<Arch, float>(table, k, kr, positions::ids(pos), b, e);
    } else if constexpr (std::is_same_v<KV, block_q8_0>) {
        // rope_store reads float rows: dequantise a few slots at a time, then rotate and
        // quantise them into the copy.
        const std::int64_t row = std::int64_t(o.n_kv_heads) * o.head_dim;
        const std::int64_t per_pass = std::int64_t(ws.k_dequantized.size()) / row;
        for (std::int64_t t0 = b; t0 < e; t0 += per_pass) {
            const std::int64_t n = std::min(per_pass, e - t0);
            dequantize_slots<Arch>(k, t0, n, ws.k_dequantized.data());
            const head_view<const float> src = head_view<const float>::head_major(
                ws.k_dequantized.data(), o.n_kv_heads, n, o.head_dim);
            rope_store<Arch, KV>(table, src, kr.tokens_slice(t0, t0 + n), positions::ids(pos + t0),
                                 0, n);
        }
    } else {
        // 16-bit: rope_store reads float rows, so the stored rows are copied and the copy is
        // rotated in place (in float, one rounding).
        for (int h = 0; h < o.n_kv_heads; ++h)
            std::memcpy(kr.at(b, h), k.at(b, h),
                        std::size_t(e - b) * std::size_t(o.head_dim) * sizeof(KV));
        apply_rope<Arch, KV>(table, kr, positions::ids(pos), b, e);
    }
}

}  // namespace detail::sink

/// Part `part` of `parts` of one decode step's attention over `cache` (hot path: no thread
/// creation, no allocation, no throw; preconditions are ROPEKIT_ASSERTs and, with them compiled
/// out, a failed one writes an empty partial). The token at cache.last_position() must already
/// be appended. `q` is that token's raw (unrotated) query, `1 x n_heads x head_dim`; it is
/// rotated here (table-free) at query_position(). The window keys are split by split_keys over
/// the parts; part 0 also takes the sinks (the slots right before the window's). Writes `out`
/// (partial output and LSE over this part's keys); combine the parts with
/// sink_attention_merge. Parts may run concurrently, each with its own `ws` and `out`.
/// \param params softmax scale (attention_params::for_model(cache.frequencies()), or
///        with_scaling: the frequencies' attention factor is required); positions and lse in it
///        are ignored, learned sink_logits must be null
template <class Arch, class KV>
void sink_attention_part(Arch, const sink_cache<KV>& cache, head_view<const float> q,
                         const attention_params& params, int part, int parts,
                         sink_workspace<KV>& ws, sink_partial& out) {
    ROPEKIT_TRACE_KERNEL("sink_attention_part", Arch::name());
    const bool ok = detail::sink::part_ok<Arch, KV>(cache, q, params, part, parts, ws, out);
    ROPEKIT_ASSERT(ok, "sink_attention_part: inconsistent shapes, part, params, or empty cache");
    std::fill(out.o.begin(), out.o.end(), 0.0f);
    std::fill(out.lse.begin(), out.lse.end(), -std::numeric_limits<float>::infinity());
    if (!ok) return;
    const sink_cache_options& opt = cache.options();
    const int H = q.heads, D = opt.head_dim;
    // This part's keys, one range of slots: its window slots n_sink + [wr.begin, wr.end) and,
    // for part 0, the sinks [0, sink_count()) right before them (a window slot is filled only
    // once every sink is).
    const key_range wr = split_keys(cache.window_count(), parts, part);
    const std::int64_t b = part == 0 ? 0 : opt.n_sink + wr.begin;
    const std::int64_t e =
        wr.end > wr.begin ? opt.n_sink + wr.end : (part == 0 ? cache.sink_count() : b);
    if (e <= b) return;  // no key in this part: the empty partial
    // The query, copied and rotated in one pass.
    const head_view<float> qr = head_view<float>::packed(ws.q_window.data(), 1, H, D);
    rope_store<Arch, float>(cache.frequencies(), q, qr, positions::constant(cache.query_position()),
                            0, 1);
    attention_params p = params;
    p.lse = out.lse.data();
    p.query_index_offset = -1;
    const head_range heads{0, H};
    const query_range queries{0, 1};
    const key_range keys{b, e};
    if (opt.keys == key_storage::rotated_once) {
        // The streaming_llm rule over the stored positions: q at i' = i - offset, window keys
        // at j - offset (near: distance i - j), sinks at s (far once i' - s >= window: the
        // kernel rotates q by min(i', c) - i' for them). One pass over the part's keys.
        p.q_positions = positions::constant(cache.query_position());
        p.k_positions = positions::ids(cache.key_positions());
        const streaming_llm rule{opt.n_sink, opt.window};
        const sink_window_mask mask = rule.mask();
        position_rule_attention_blocked(
            Arch{}, head_view<const float>(qr), cache.keys(), cache.values(), out.view(), mask, p,
            rule, cache.frequencies(), cache.cache_table(), heads, queries, keys, *ws.attn);
        return;
    }
    // rotated_at_slot / unrotated: keys at their cache positions and q at min(i, c), the rule's
    // far q position itself, so the rule is the identity here (see the file comment): plain
    // attention, every cached key visible, positions unused.
    p.q_positions.reset();
    p.k_positions.reset();
    head_view<const KV> k = cache.keys();
    if (opt.keys == key_storage::unrotated) {
        detail::sink::rotate_for_read<Arch, KV>(cache, ws, b, e);
        k = head_view<const KV>::head_major(ws.k_rotated.data(), opt.n_kv_heads, cache.slots(), D);
    }
    attention_blocked(Arch{}, head_view<const float>(qr), k, cache.values(), out.view(),
                      full_mask{}, p, heads, queries, keys, *ws.attn);
}

/// Combines the `n_parts` partials of one decode step (in part order) into `o`
/// (`1 x n_heads x head_dim`) and, when `lse` is not null, the rows' LSE (n_heads floats), by
/// merge_attention_row. Hot path: no allocation, no throw; inconsistent shapes are a
/// ROPEKIT_ASSERT and, with it compiled out, write nothing.
template <class Arch>
void sink_attention_merge(Arch, const sink_partial* partials, int n_parts, head_view<float> o,
                          float* lse = nullptr) {
    bool ok = partials != nullptr && n_parts >= 1 && o.tokens == 1 && o.data != nullptr;
    for (int p = 0; ok && p < n_parts; ++p)
        ok = partials[p].n_heads == o.heads && partials[p].head_dim == o.head_dim;
    ROPEKIT_ASSERT(ok, "sink_attention_merge: inconsistent shapes");
    if (!ok) return;
    const int D = o.head_dim;
    for (int h = 0; h < o.heads; ++h) {
        float* row = o.at(0, h);
        std::memcpy(row, partials[0].o.data() + std::size_t(h) * std::size_t(D),
                    std::size_t(D) * sizeof(float));
        float l = partials[0].lse[std::size_t(h)];
        for (int p = 1; p < n_parts; ++p)
            merge_attention_row(row, l, partials[p].o.data() + std::size_t(h) * std::size_t(D),
                                partials[p].lse[std::size_t(h)], D);
        if (lse) lse[h] = l;
    }
}

ROPEKIT_BEGIN_ISA_NAMESPACE

/// Front door: validates (ropekit::error naming the field) and runs the decode step's
/// attention over `cache` on the calling thread (sink_attention_part with one part, then
/// sink_attention_merge). `q` is the raw query of the last appended token.
/// \param partial scratch partial (n_heads x head_dim)
template <class KV>
void sink_attention(const sink_cache<KV>& cache, head_view<const float> q, head_view<float> o,
                    const attention_params& params, sink_workspace<KV>& ws, sink_partial& partial) {
    const sink_cache_options& opt = cache.options();
    q.validate();
    o.validate();
    detail::require(q.tokens == 1, "q.tokens", "must be 1 (one decode step)", q.tokens);
    detail::require(o.tokens == 1, "o.tokens", "must be 1 (one decode step)", o.tokens);
    detail::require(q.head_dim == opt.head_dim, "head_dim", "of q must equal the cache's",
                    q.head_dim);
    detail::require(o.head_dim == opt.head_dim, "head_dim", "of o must equal the cache's",
                    o.head_dim);
    detail::require(q.heads > 0 && q.heads % opt.n_kv_heads == 0, "n_heads",
                    "must be a positive multiple of n_kv_heads", q.heads);
    detail::require(o.heads == q.heads, "o.heads", "must equal q.heads", o.heads);
    detail::require(params.head_dim() == 0 || params.head_dim() == opt.head_dim, "head_dim",
                    "must equal that of the frequencies attention_params were built from",
                    params.head_dim());
    detail::require(detail::attn::logit_scale_matches<detail::isa_tag>(params, cache.frequencies()),
                    "logit_scale",
                    "of attention_params must be the frequencies' logit_scale(): build them "
                    "with attention_params::for_model(freqs)",
                    params.logit_scale());
    detail::attn::validate_logit_softcap(params);
    detail::require(params.sink_logits == nullptr, "sink_logits",
                    "must be null (StreamingLLM sinks are tokens of the cache)", "non-null");
    detail::require(
        ws.n_heads == q.heads && ws.slots == cache.slots() && ws.head_dim == opt.head_dim,
        "workspace", "must be built for this cache and n_heads", ws.n_heads);
    detail::require(partial.n_heads == q.heads && partial.head_dim == opt.head_dim, "partial",
                    "must be built for n_heads x head_dim", partial.n_heads);
    detail::require(cache.next_position() > 0, "cache", "is empty: append the token first",
                    cache.next_position());
    sink_attention_part(default_arch{}, cache, q, params, 0, 1, ws, partial);
    sink_attention_merge(default_arch{}, &partial, 1, o, params.lse);
}

/// Front door of one decode step for a layer: appends the new token's raw k and v
/// (`1 x n_kv_heads x head_dim` each) to `cache`, then sink_attention with its raw query.
template <class KV>
void sink_decode_step(sink_cache<KV>& cache, head_view<const float> q, head_view<const float> k,
                      head_view<const float> v, head_view<float> o, const attention_params& params,
                      sink_workspace<KV>& ws, sink_partial& partial) {
    cache.template append_token<default_arch>(k, v);
    sink_attention(cache, q, o, params, ws, partial);
}

ROPEKIT_END_ISA_NAMESPACE

ROPEKIT_END_NAMESPACE

/// \cond INTERNAL
#define ROPEKIT_SINK_KERNELS_(PREFIX, ARCH, KV)                                       \
    PREFIX template void ropekit::sink_attention_part<ARCH, KV>(                      \
        ARCH, const ::ropekit::sink_cache<KV>&, ::ropekit::head_view<const float>,    \
        const ::ropekit::attention_params&, int, int, ::ropekit::sink_workspace<KV>&, \
        ::ropekit::sink_partial&);                                                    \
    PREFIX template void ropekit::sink_attention_merge<ARCH>(                         \
        ARCH, const ::ropekit::sink_partial*, int, ::ropekit::head_view<float>, float*);
/// \endcond

/// Declares (extern template) the decode-step kernels (sink_attention_part for storage KV,
/// sink_attention_merge) of architecture ARCH, so a translation unit built without ARCH's flags
/// can call them while the code lives in a TU built with those flags, which uses
/// ROPEKIT_INSTANTIATE_SINK_KERNELS(ARCH, KV). The attention kernels they call are instantiated
/// there too. (sink_cache::append_unchecked<ARCH> is always inlined: call it from the ARCH TU.)
#define ROPEKIT_DECLARE_SINK_KERNELS(ARCH, KV) ROPEKIT_SINK_KERNELS_(extern, ARCH, KV)

/// Explicitly instantiates the decode-step kernels of ARCH for KV (see
/// ROPEKIT_DECLARE_SINK_KERNELS). Put it in a translation unit compiled with ARCH's flags.
#define ROPEKIT_INSTANTIATE_SINK_KERNELS(ARCH, KV) ROPEKIT_SINK_KERNELS_(, ARCH, KV)
