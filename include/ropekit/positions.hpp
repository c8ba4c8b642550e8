// SPDX-License-Identifier: Apache-2.0
/// \file
/// Where the tokens of a call sit: `positions` (contiguous, constant, int32 / int64 ids, table
/// rows), shared by the rotary kernels, attention and the M-RoPE paths, and the cold-path walks
/// that validate them.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>

#include "config.hpp"
#include "error.hpp"

ROPEKIT_BEGIN_NAMESPACE

/// The position of each token of a call.
///
/// - contiguous(start): token t is at start + t (prefill, decode).
/// - ids(p): token t is at p[t] (int32 or int64; any order, repeats and negative values allowed);
///   the pointer indexes the view's tokens, so p[token_begin] is the first one used.
/// - constant(v): every token at v (a uniform delta for re-rotating keys).
/// - table_rows(): with a list table (cos_sin_table::for_positions), token t uses row t.
///
/// Table-free sources are accurate for |position| < 2^29 (table_free_position_limit). Kernels
/// only ROPEKIT_ASSERT positions; validate_positions() checks untrusted ones on the cold path,
/// and validate_rope_call() checks them together with the view and the token range.
class positions {
  public:
    /// How positions are given.
    enum class kind { contiguous, constant, ids32, ids64, table_rows };

    /// Token t is at start + t.
    ROPEKIT_ALWAYS_INLINE static positions contiguous(std::int64_t start = 0) noexcept {
        return positions(kind::contiguous, start, nullptr);
    }
    /// Every token is at `value`.
    ROPEKIT_ALWAYS_INLINE static positions constant(std::int64_t value) noexcept {
        return positions(kind::constant, value, nullptr);
    }
    /// Token t is at ids[t].
    ROPEKIT_ALWAYS_INLINE static positions ids(const std::int32_t* ids) noexcept {
        return positions(kind::ids32, 0, ids);
    }
    /// Token t is at ids[t].
    ROPEKIT_ALWAYS_INLINE static positions ids(const std::int64_t* ids) noexcept {
        return positions(kind::ids64, 0, ids);
    }
    /// Token t uses row t of a list table.
    ROPEKIT_ALWAYS_INLINE static positions table_rows() noexcept {
        return positions(kind::table_rows, 0, nullptr);
    }

    /// How the positions are given.
    ROPEKIT_ALWAYS_INLINE kind which() const noexcept { return kind_; }
    /// The id array (ids32 / ids64), else null.
    ROPEKIT_ALWAYS_INLINE const void* id_data() const noexcept { return ids_; }

    /// Position of token t (for table_rows: t, the row).
    ROPEKIT_ALWAYS_INLINE std::int64_t at(std::int64_t t) const noexcept {
        switch (kind_) {
            case kind::contiguous:  // (wraps instead of overflowing; validate_positions rejects it)
                return std::int64_t(std::uint64_t(value_) + std::uint64_t(t));
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
    ROPEKIT_ALWAYS_INLINE positions(kind k, std::int64_t v, const void* ids) noexcept
        : kind_(k), value_(v), ids_(ids) {}
    kind kind_;
    std::int64_t value_;
    const void* ids_;
};

// Cold-path validators: their code depends on the compile flags (see abi.hpp).
namespace detail {
ROPEKIT_BEGIN_ISA_NAMESPACE

[[noreturn]] inline void position_error(std::int64_t token, std::int64_t position,
                                        const std::string& what) {
    ROPEKIT_THROW(error("positions", "positions: token " + format_value(token) + " (position " +
                                         format_value(position) + ") " + what));
#if !ROPEKIT_HAS_EXCEPTIONS
    std::abort();
#endif
}

/// Cold-path checks shared by both validate_positions overloads: a valid token range and
/// non-null ids. Returns false for an empty range (nothing else to check).
inline bool validate_positions_common(const positions& pos, std::int64_t t0, std::int64_t t1) {
    if (t0 < 0 || t1 < t0)
        fail("token_range", "must satisfy 0 <= token_begin <= token_end",
             "[" + format_value(t0) + ", " + format_value(t1) + ")");
    if (t0 == t1) return false;
    const bool ids = pos.which() == positions::kind::ids32 || pos.which() == positions::kind::ids64;
    if (ids && pos.id_data() == nullptr)
        fail("positions", "ids must not be null with a non-zero token count", t1 - t0);
    return true;
}

/// Calls `check(t, position)` (which throws) for the first token of [t0, t1) whose position is
/// outside [lo, hi]: a loop over ids, one test for a constant, and for contiguous positions
/// (monotone) two tests, computed without signed overflow.
template <class Check>
void for_each_position(const positions& pos, std::int64_t t0, std::int64_t t1, std::int64_t lo,
                       std::int64_t hi, Check&& check) {
    if (pos.which() == positions::kind::contiguous) {
        const std::int64_t start = pos.at(0);
        // Positions start + t0 .. start + t1 - 1 must lie in [lo, hi]. Work in the offsets
        // t - t0 so that every intermediate fits in int64.
        if (start > 0 && t0 > std::numeric_limits<std::int64_t>::max() - start)
            position_error(t0, pos.at(t0), "overflows int64");
        const std::int64_t first = start + t0;  // position of token t0
        if (first < lo || first > hi) check(t0, first);
        // Tokens t0 .. t0 + room fit (callers keep hi - lo and hi + 1 inside int64).
        const std::int64_t room = hi - first;
        if (t1 - 1 - t0 > room) check(t0 + room + 1, hi + 1);
        return;
    }
    for (std::int64_t t = t0; t < t1; ++t) {
        const std::int64_t p = pos.at(t);
        if (p < lo || p > hi) check(t, p);
        if (pos.which() == positions::kind::constant) return;  // one value for all tokens
    }
}

ROPEKIT_END_ISA_NAMESPACE
}  // namespace detail

ROPEKIT_END_NAMESPACE
