// SPDX-License-Identifier: Apache-2.0
/// \file
/// Naive double-precision rotary embedding: the oracle the SIMD kernels are tested against,
/// public so engines can use it in their own golden tests. Slow on purpose, obviously right.
#pragma once

#include "abi.hpp"

#include <cmath>
#include <cstdint>
#include <vector>

#include "mrope.hpp"
#include "rope.hpp"

ROPEKIT_BEGIN_NAMESPACE

/// Rotates the pairs of one row (no other channel is touched) by the angles `angles[i]` of pairs
/// i = 0 .. rotary_dim/2 - 1, in double, then rounds to float and to T. Pair i is channels
/// (offset + i, offset + i + span) for neox and (offset + 2i, offset + 2i + 1) for gptj; span 0
/// means rotary_dim / 2.
template <class T>
void rotate_row_reference(rope_layout layout, int rotary_dim, T* row, const double* angles,
                          int span = 0, int offset = 0) {
    const int half = rotary_dim / 2;
    const int d = span > 0 ? span : half;
    for (int i = 0; i < half; ++i) {
        const int i0 = offset + (layout == rope_layout::neox ? i : 2 * i);
        const int i1 = offset + (layout == rope_layout::neox ? i + d : 2 * i + 1);
        const double a = double(to_float(row[i0])), b = double(to_float(row[i1]));
        const double c = std::cos(angles[i]), s = std::sin(angles[i]);
        row[i0] = from_float<T>(float(a * c - b * s));
        row[i1] = from_float<T>(float(b * c + a * s));
    }
}

/// Reference for apply_rope / rerotate_keys (table-free or table: both mean the exact angles
/// `pos(t) * inv_freq[i]`, here in double with double cos/sin) on tokens [token_begin, token_end),
/// with the geometry (pair_span, rotary_offset) of `freqs`.
template <class T>
void apply_rope_reference(const rope_frequencies& freqs, head_view<T> x, const positions& pos,
                          std::int64_t token_begin, std::int64_t token_end) {
    std::vector<double> angles(std::size_t(freqs.pairs()));
    for (std::int64_t t = token_begin; t < token_end; ++t) {
        const double p = double(pos.at(t));
        for (int i = 0; i < freqs.pairs(); ++i)
            angles[std::size_t(i)] = p * double(freqs.inv_freq[std::size_t(i)]);
        for (int h = 0; h < x.heads; ++h)
            rotate_row_reference(freqs.layout, freqs.rotary_dim,
                                 x.data + t * x.token_stride + h * x.head_stride, angles.data(),
                                 freqs.neox_pair_span(), freqs.rotary_offset);
    }
}

/// Reference for rebase_keys: token t rotated by `pos(t) * (to.inv_freq[i] - from.inv_freq[i])`.
template <class T>
void rebase_keys_reference(const rope_frequencies& from, const rope_frequencies& to, head_view<T> k,
                           const positions& pos, std::int64_t token_begin, std::int64_t token_end) {
    std::vector<double> angles(std::size_t(to.pairs()));
    for (std::int64_t t = token_begin; t < token_end; ++t) {
        const double p = double(pos.at(t));
        for (std::size_t i = 0; i < angles.size(); ++i)
            angles[i] = p * double(to.inv_freq[i]) - p * double(from.inv_freq[i]);
        for (int h = 0; h < k.heads; ++h)
            rotate_row_reference(to.layout, to.rotary_dim,
                                 k.data + t * k.token_stride + h * k.head_stride, angles.data(),
                                 to.neox_pair_span(), to.rotary_offset);
    }
}

/// Reference for apply_mrope: pair p of token t rotated by `pos.at(sections.axis_of_pair(p), t)
/// * inv_freq[p]` in double, with the geometry of `freqs` (the frequencies the table was built
/// from).
template <class T>
void apply_mrope_reference(const rope_frequencies& freqs, const mrope_sections& sections,
                           head_view<T> x, const mrope_positions& pos, std::int64_t token_begin,
                           std::int64_t token_end) {
    std::vector<double> angles(std::size_t(freqs.pairs()));
    for (std::int64_t t = token_begin; t < token_end; ++t) {
        for (int i = 0; i < freqs.pairs(); ++i) {
            const int axis = int(sections.axis_of_pair(i));
            angles[std::size_t(i)] =
                double(pos.at(axis, t)) * double(freqs.inv_freq[std::size_t(i)]);
        }
        for (int h = 0; h < x.heads; ++h)
            rotate_row_reference(freqs.layout, freqs.rotary_dim,
                                 x.data + t * x.token_stride + h * x.head_stride, angles.data(),
                                 freqs.neox_pair_span(), freqs.rotary_offset);
    }
}

ROPEKIT_END_NAMESPACE
