// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for M-RoPE (include/ropekit/mrope.hpp): get_rope_index (Qwen2-VL, Qwen2.5-VL,
// Qwen3-VL) on sequences of text / image / video segments decoded from the input, with extreme
// options and segment fields (tokens_per_second and second_per_grid_t of 1e39, 1e-45, NaN, inf,
// negative; grids and lengths near 2^20, 2^28, INT64 limits), then validate_mrope_call and
// apply_mrope / apply_mrope_qk on the ids it built (or contiguous / raw ids), with random
// mrope_section and table geometry. Each view lies in a malloc'd buffer of exactly its span, so
// ASan sees any access past it. A ropekit::error is the expected answer to bad input. Findings:
//  - anything else escaping, a sanitizer report (a NaN or inf cast to int64 is UB), a
//    ROPEKIT_ASSERT (asserts are on: the validators let through a call the kernel rejects);
//  - an accepted get_rope_index whose ids differ from an independent transcription of HF's
//    construction as mrope.hpp documents it, or break its invariants: every id in [0, 2^29),
//    the three ids of a text token equal, rope_delta = max id + 1 - tokens;
//  - an accepted apply_mrope that writes outside its tokens' rotated channels, whose text tokens
//    differ bit for bit from apply_rope at the same position, or whose other tokens' pairs differ
//    from apply_rope at the position of the pair's axis by more than the storage's rounding.
//
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
//       -Iinclude tests/fuzz/fuzz_mrope.cpp -o /tmp/fuzz_mrope
//   /tmp/fuzz_mrope -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 /tmp/mrope_corpus \
//       tests/fuzz/corpus/mrope
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "ropekit/mrope.hpp"
#include "ropekit/rope.hpp"
#include "ropekit/table.hpp"

namespace {

using ropekit::head_view;
using ropekit::mrope_index;
using ropekit::mrope_index_options;
using ropekit::mrope_model;
using ropekit::mrope_positions;
using ropekit::mrope_segment;

// Accepted sequences are capped at this many tokens (the ids take 24 bytes each and every
// input must run in milliseconds); larger requests still reach the validators with a
// max_tokens lowered to the cap.
constexpr std::int64_t max_accepted_tokens = std::int64_t(1) << 14;
// Tokens a view of the kernel part may have, and rows of its table.
constexpr std::int64_t max_view_tokens = 48;
constexpr std::int64_t max_table_rows = 1024;

[[noreturn]] void finding(const char* what) {
    std::fprintf(stderr, "fuzz_mrope finding: %s\n", what);
    std::abort();
}

constexpr double inf = std::numeric_limits<double>::infinity();

/// A double that is often one the validators must think about: beyond float32, subnormal in
/// float32 or in double, 0 and -0, NaN, infinities, negative.
double pick_double(FuzzedDataProvider& in, double usual) {
    static constexpr double edges[] = {1e39,
                                       -1e39,
                                       1e-45,
                                       1e-39,
                                       1e-46,
                                       5e-324,
                                       1e-300,
                                       1e300,
                                       1e200,
                                       1e-200,
                                       3.4028234663852886e38,
                                       3.4028235677973366e38,
                                       std::numeric_limits<double>::max(),
                                       std::numeric_limits<double>::quiet_NaN(),
                                       inf,
                                       -inf,
                                       0.0,
                                       -0.0,
                                       -1.0,
                                       0.5,
                                       1.0,
                                       2.0,
                                       1.0 / 3.0,
                                       25.0,
                                       536870912.0,
                                       1e9};
    switch (in.ConsumeIntegralInRange<int>(0, 5)) {
        case 0:
        case 1:
            return edges[in.ConsumeIntegralInRange<std::size_t>(0, std::size(edges) - 1)];
        case 2:
            return in.ConsumeFloatingPointInRange<double>(0.0, 100.0);
        case 3:
            return in.ConsumeFloatingPoint<double>();
        default:
            return usual;
    }
}

std::int64_t pick_int(FuzzedDataProvider& in, std::int64_t lo, std::int64_t hi) {
    static constexpr std::int64_t edges[] = {0,
                                             -1,
                                             1,
                                             (std::int64_t(1) << 20),
                                             (std::int64_t(1) << 20) + 1,
                                             (std::int64_t(1) << 28),
                                             (std::int64_t(1) << 28) + 1,
                                             (std::int64_t(1) << 29) - 1,
                                             (std::int64_t(1) << 29),
                                             std::numeric_limits<std::int64_t>::max(),
                                             std::numeric_limits<std::int64_t>::min(),
                                             std::numeric_limits<std::int32_t>::max()};
    switch (in.ConsumeIntegralInRange<int>(0, 7)) {
        case 0:
            return edges[in.ConsumeIntegralInRange<std::size_t>(0, std::size(edges) - 1)];
        case 1:
            return in.ConsumeIntegral<std::int64_t>();
        default:
            return in.ConsumeIntegralInRange<std::int64_t>(lo, hi);
    }
}

/// A grid side: usually a small multiple of the merge size, sometimes anything.
std::int64_t pick_side(FuzzedDataProvider& in, std::int64_t m) {
    if (in.ConsumeIntegralInRange<int>(0, 5) != 0)
        return std::max<std::int64_t>(m, 1) * in.ConsumeIntegralInRange<std::int64_t>(1, 6);
    const std::int64_t g = std::int64_t(1) << 20;
    switch (in.ConsumeIntegralInRange<int>(0, 2)) {
        case 0:
            return g - (m > 0 ? g % m : 0);  // the largest accepted multiple
        case 1:
            return g + std::max<std::int64_t>(m, 1);
        default:
            return pick_int(in, -2, 12);
    }
}

/// Tokens of one segment if every field is in the range get_rope_index accepts, else -1; used
/// only to decide whether the sequence would be too large to run (saturating, no overflow).
std::int64_t plausible_tokens(const mrope_segment& s, std::int64_t m) {
    if (s.what == mrope_segment::kind::text) return s.length >= 0 ? s.length : -1;
    if (m < 1) m = 1;
    for (std::int64_t g : s.grid_thw)
        if (g < 1 || g > (std::int64_t(1) << 20)) return -1;
    return s.grid_thw[0] * (s.grid_thw[1] / m) * (s.grid_thw[2] / m);  // < 2^60
}

/// float(x) without the undefined conversion of a double beyond float's range: +-inf there,
/// which is what the hardware (and torch's float32 tensor) gives.
float to_f32(double x) {
    if (std::isnan(x)) return std::numeric_limits<float>::quiet_NaN();
    // The largest double that still rounds to FLT_MAX is FLT_MAX + half an ulp (exclusive).
    if (std::fabs(x) >= 0x1.ffffffp127) return x > 0 ? INFINITY : -INFINITY;
    return float(x);
}

/// HF's get_rope_index as mrope.hpp documents it, written out independently; nullopt when an id
/// reaches 2^29 or a temporal id is not a finite float below 2^62 (the library must refuse).
std::optional<mrope_index> expected_index(const std::vector<mrope_segment>& segs,
                                          const mrope_index_options& o) {
    const std::int64_t limit = ropekit::table_position_limit;
    mrope_index r;
    std::vector<std::int64_t> t_ids, h_ids, w_ids;
    std::int64_t next = 0;
    for (const mrope_segment& s : segs) {
        if (s.what == mrope_segment::kind::text) {
            for (std::int64_t j = 0; j < s.length; ++j) {
                t_ids.push_back(next + j);
                h_ids.push_back(next + j);
                w_ids.push_back(next + j);
            }
            next += s.length;
            if (next - 1 >= limit && s.length > 0) return std::nullopt;
            continue;
        }
        const std::int64_t m = o.spatial_merge_size;
        const std::int64_t gt = s.grid_thw[0], gh = s.grid_thw[1] / m, gw = s.grid_thw[2] / m;
        const bool video = s.what == mrope_segment::kind::video;
        // Qwen3-VL cuts a video into grids of one frame each, whose ids follow one another.
        const bool per_frame = video && o.model == mrope_model::qwen3_vl;
        for (std::int64_t b = 0; b < (per_frame ? gt : 1); ++b) {
            std::int64_t top = std::max(gh, gw) - 1;
            for (std::int64_t f = 0; f < (per_frame ? 1 : gt); ++f) {
                std::int64_t tid = f;
                if (o.model == mrope_model::qwen2_5_vl) {
                    // torch: arange(t) * second_per_grid_t * tokens_per_second in float32.
                    const float v =
                        video ? float(f) * to_f32(s.second_per_grid_t) * to_f32(o.tokens_per_second)
                              : 0.0f;
                    if (!(v >= 0.0f && v < 0x1p62f)) return std::nullopt;
                    tid = std::int64_t(v);
                }
                top = std::max(top, tid);
                for (std::int64_t y = 0; y < gh; ++y)
                    for (std::int64_t x = 0; x < gw; ++x) {
                        t_ids.push_back(next + tid);
                        h_ids.push_back(next + y);
                        w_ids.push_back(next + x);
                    }
            }
            if (next + top >= limit) return std::nullopt;
            next += top + 1;
        }
    }
    r.tokens = std::int64_t(t_ids.size());
    r.position_ids = t_ids;
    r.position_ids.insert(r.position_ids.end(), h_ids.begin(), h_ids.end());
    r.position_ids.insert(r.position_ids.end(), w_ids.begin(), w_ids.end());
    r.rope_delta = next - r.tokens;
    return r;
}

/// Invariants of an accepted get_rope_index, and agreement with the transcription.
void check_index(const std::vector<mrope_segment>& segs, const mrope_index_options& o,
                 const mrope_index& r) {
    if (r.tokens < 0 || r.tokens > o.max_tokens ||
        r.position_ids.size() != std::size_t(3 * r.tokens))
        finding("get_rope_index: token count and ids disagree");
    std::int64_t max_id = -1;
    for (std::int64_t id : r.position_ids) {
        if (id < 0 || id >= ropekit::table_position_limit)
            finding("get_rope_index: an id outside [0, 2^29)");
        max_id = std::max(max_id, id);
    }
    if (r.tokens > 0 && r.rope_delta != max_id + 1 - r.tokens)
        finding("get_rope_index: rope_delta != max id + 1 - tokens");
    std::int64_t t = 0;
    for (const mrope_segment& s : segs) {
        if (s.what != mrope_segment::kind::text) {
            t += plausible_tokens(s, o.spatial_merge_size);
            continue;
        }
        for (std::int64_t j = 0; j < s.length; ++j, ++t)
            if (r.at(0, t) != r.at(1, t) || r.at(1, t) != r.at(2, t))
                finding("get_rope_index: a text token with different ids on the three axes");
    }
    if (t != r.tokens) finding("get_rope_index: tokens != the segments' tokens");
    const std::optional<mrope_index> e = expected_index(segs, o);
    if (!e) finding("get_rope_index accepted a sequence whose ids overflow 2^29 or a float32 id");
    if (e->tokens != r.tokens || e->position_ids != r.position_ids) {
        for (std::size_t i = 0; i < r.position_ids.size() && i < e->position_ids.size(); ++i)
            if (r.position_ids[i] != e->position_ids[i]) {
                std::fprintf(stderr, "id %zu (axis %lld token %lld): %lld, expected %lld\n", i,
                             (long long)(std::int64_t(i) / std::max<std::int64_t>(r.tokens, 1)),
                             (long long)(std::int64_t(i) % std::max<std::int64_t>(r.tokens, 1)),
                             (long long)r.position_ids[i], (long long)e->position_ids[i]);
                break;
            }
        finding("get_rope_index: ids differ from the transcription of HF's construction");
    }
    if (e->rope_delta != r.rope_delta) finding("get_rope_index: rope_delta differs");
}

/// One exact-size allocation of `n` elements (at least one byte, so the pointer is unique).
template <class T>
struct buffer {
    T* data;
    std::int64_t n;
    explicit buffer(std::int64_t elements) : n(elements) {
        data = static_cast<T*>(std::malloc(std::size_t(std::max<std::int64_t>(n, 1)) * sizeof(T)));
    }
    ~buffer() { std::free(data); }
    buffer(const buffer&) = delete;
    buffer& operator=(const buffer&) = delete;
};

/// A view of `tokens` x `heads` x `head_dim` in one of the shapes an engine uses, without data
/// yet (the caller sizes the buffer from its span).
template <class T>
head_view<T> make_view(FuzzedDataProvider& in, std::int64_t tokens, int heads, int head_dim) {
    switch (in.ConsumeIntegralInRange<int>(0, 3)) {
        case 0:
            return head_view<T>::head_major(nullptr, heads, tokens, head_dim);
        case 1:
            return head_view<T>::padded(
                nullptr, tokens, heads, head_dim,
                std::ptrdiff_t(heads) * head_dim + in.ConsumeIntegralInRange<int>(0, 9));
        default:
            return head_view<T>::packed(nullptr, tokens, heads, head_dim);
    }
}

/// |got - want| allowed for a pair rotated by the same cos/sin through another code path: the
/// float kernels may contract into FMAs differently, 16-bit storage rounds once more.
template <class T>
bool close(float got, float want) {
    if (std::isnan(want)) return std::isnan(got);
    const double ulp = std::is_same_v<T, float>           ? 0x1p-21
                       : std::is_same_v<T, ropekit::half> ? 0x1p-10
                                                          : 0x1p-7;
    return std::fabs(double(got) - double(want)) <= ulp * (1.0 + std::fabs(double(want)));
}

/// The kernel part: validate_mrope_call, then apply_mrope (or apply_mrope_qk) against apply_rope
/// token by token and axis by axis.
template <class T>
void run_kernel(FuzzedDataProvider& in, const std::optional<mrope_index>& index) {
    // Frequencies and geometry: small, occasionally partial, offset or with a wider NeoX span.
    ropekit::rope_frequencies f;
    const int pairs = in.ConsumeIntegralInRange<int>(1, 24);
    f.rotary_dim = 2 * pairs;
    f.layout = in.ConsumeBool() ? ropekit::rope_layout::neox : ropekit::rope_layout::gptj;
    if (f.layout == ropekit::rope_layout::neox && in.ConsumeIntegralInRange<int>(0, 3) == 0)
        f.pair_span = pairs + in.ConsumeIntegralInRange<int>(0, 3);
    f.rotary_offset =
        in.ConsumeIntegralInRange<int>(0, 3) == 0 ? in.ConsumeIntegralInRange(0, 5) : 0;
    f.head_dim = f.rotary_offset + f.rotated_extent() + in.ConsumeIntegralInRange<int>(0, 6);
    const double base = in.ConsumeBool() ? 1e6 : in.ConsumeFloatingPointInRange(2.0, 1e7);
    for (int i = 0; i < pairs; ++i)
        f.inv_freq.push_back(float(std::pow(base, -2.0 * i / f.rotary_dim)));

    ropekit::mrope_sections sec;
    sec.layout =
        in.ConsumeBool() ? ropekit::mrope_layout::contiguous : ropekit::mrope_layout::interleaved;
    if (in.ConsumeIntegralInRange<int>(0, 4) != 0) {  // sums to pairs
        const int a = in.ConsumeIntegralInRange(0, pairs);
        const int b = in.ConsumeIntegralInRange(0, pairs - a);
        sec.section = {a, b, pairs - a - b};
        if (in.ConsumeBool()) std::swap(sec.section[0], sec.section[2]);
    } else {
        for (int& s : sec.section) s = int(pick_int(in, -2, 40));
    }

    // The ids: get_rope_index's, or contiguous, or raw ids with their own axis stride.
    std::vector<std::int64_t> raw64;
    std::vector<std::int32_t> raw32;
    std::int64_t n_ids = max_view_tokens;  // tokens the ids cover
    mrope_positions pos = mrope_positions::contiguous(0);
    std::int64_t max_id = 0;
    switch (index ? in.ConsumeIntegralInRange<int>(0, 3) : in.ConsumeIntegralInRange<int>(1, 3)) {
        case 0:
            pos = index->positions();
            n_ids = index->tokens;
            for (std::int64_t id : index->position_ids) max_id = std::max(max_id, id);
            break;
        case 1: {
            const std::int64_t start = pick_int(in, -3, 300);
            pos = mrope_positions::contiguous(start);
            max_id = start < 0 ? 0 : start > (INT64_MAX >> 1) ? INT64_MAX >> 1 : start + n_ids;
            break;
        }
        default: {
            n_ids = in.ConsumeIntegralInRange<std::int64_t>(0, max_view_tokens);
            const std::ptrdiff_t stride = in.ConsumeIntegralInRange<std::ptrdiff_t>(0, 3) == 0
                                              ? 0
                                              : n_ids + in.ConsumeIntegralInRange(0, 3);
            const std::size_t count = std::size_t(2 * stride + n_ids);
            const bool wide = in.ConsumeBool();
            for (std::size_t i = 0; i < count; ++i) {
                const std::int64_t id = in.ConsumeIntegralInRange<int>(0, 15) == 0
                                            ? pick_int(in, -3, 300)
                                            : in.ConsumeIntegralInRange<std::int64_t>(0, 300);
                raw64.push_back(id);
                raw32.push_back(std::int32_t(id));
                max_id = std::max(max_id, std::min<std::int64_t>(id, INT32_MAX));
            }
            const bool null_ids = in.ConsumeIntegralInRange<int>(0, 15) == 0;
            if (wide)
                pos = mrope_positions::ids(null_ids ? nullptr : raw64.data(), stride);
            else
                pos = mrope_positions::ids(null_ids ? nullptr : raw32.data(), stride);
            break;
        }
    }

    // A range table, usually covering the ids (rows are capped: a far one just gets rejected).
    std::int64_t first = in.ConsumeIntegralInRange<std::int64_t>(-3, 3);
    std::int64_t rows = std::min(max_table_rows, max_id + 1 - first);
    if (in.ConsumeIntegralInRange<int>(0, 4) == 0) {
        first = pick_int(in, -4, 400);
        rows = in.ConsumeIntegralInRange<std::int64_t>(-1, max_table_rows);
    }
    ropekit::cos_sin_table table;
    if (in.ConsumeIntegralInRange<int>(0, 15) != 0) {
        table = ropekit::cos_sin_table::for_range(f, first, rows);
    } else {  // a list table: M-RoPE must refuse it
        std::vector<std::int64_t> list(8);
        for (std::size_t i = 0; i < list.size(); ++i) list[i] = std::int64_t(i);
        table = ropekit::cos_sin_table::for_positions(f, list.data(), std::int64_t(list.size()));
    }

    const std::int64_t tokens =
        std::min<std::int64_t>(n_ids, in.ConsumeIntegralInRange<std::int64_t>(0, max_view_tokens));
    const int heads = in.ConsumeIntegralInRange<int>(0, 3);
    const int head_dim =
        in.ConsumeIntegralInRange<int>(0, 7) == 0 ? in.ConsumeIntegralInRange(1, 70) : f.head_dim;
    head_view<T> xs = make_view<T>(in, tokens, heads, head_dim);
    const bool qk = in.ConsumeBool();
    const int k_heads = qk ? in.ConsumeIntegralInRange<int>(0, 2) : 0;
    head_view<T> ks = head_view<T>::packed(nullptr, tokens, k_heads, head_dim);
    const std::int64_t t0 = in.ConsumeIntegralInRange<std::int64_t>(-1, tokens);
    const std::int64_t t1 =
        in.ConsumeBool() ? tokens : in.ConsumeIntegralInRange<std::int64_t>(t0 - 1, tokens + 1);

    // Buffers of exactly the views' spans (span() on a placeholder address: it reads nothing).
    static T placeholder[1];
    head_view<T> probe = xs, kprobe = ks;
    probe.data = placeholder;
    kprobe.data = placeholder;
    const std::int64_t xn = probe.span(), kn = kprobe.span();
    buffer<T> xb(xn), kb(kn);
    for (std::int64_t i = 0; i < xn; ++i)
        xb.data[i] = ropekit::from_float<T>(in.ConsumeFloatingPointInRange<float>(-4.0f, 4.0f));
    for (std::int64_t i = 0; i < kn; ++i) kb.data[i] = ropekit::from_float<T>(float(i % 7) - 3.0f);
    xs.data = xb.data;
    ks.data = k_heads > 0 && tokens > 0 ? kb.data : nullptr;
    const std::vector<T> x_before(xb.data, xb.data + xn), k_before(kb.data, kb.data + kn);

    if (qk)
        ropekit::validate_mrope_call(table, sec, xs, ks, pos, t0, t1);
    else
        ropekit::validate_mrope_call(table, sec, xs, pos, t0, t1);
    if (qk)
        ropekit::apply_mrope_qk(table, sec, xs, ks, pos, t0, t1);
    else
        ropekit::apply_mrope(table, sec, xs, pos, t0, t1);

    // Expected: per token and axis, apply_rope at that axis's id on a copy of the token's rows.
    const int span = f.neox_pair_span();
    auto channels = [&](int p, int& c0, int& c1) {
        c0 = f.rotary_offset + (f.layout == ropekit::rope_layout::neox ? p : 2 * p);
        c1 = f.layout == ropekit::rope_layout::neox ? c0 + span : c0 + 1;
    };
    auto check_view = [&](const head_view<T>& v, const std::vector<T>& before, const T* base) {
        std::vector<unsigned char> checked(before.size(), 0);
        std::vector<T> row(std::size_t(std::max(v.head_dim, 1)));
        for (std::int64_t t = t0; t < t1; ++t) {
            const std::int64_t ids[3] = {pos.at(0, t), pos.at(1, t), pos.at(2, t)};
            const bool text = ids[0] == ids[1] && ids[1] == ids[2];
            for (int h = 0; h < v.heads; ++h) {
                const std::size_t at = std::size_t(v.at(t, h) - base);
                for (int a = 0; a < 3; ++a) {
                    if (a > 0 && text) break;
                    std::memcpy(row.data(), &before[at], sizeof(T) * std::size_t(v.head_dim));
                    ropekit::apply_rope(table, ropekit::packed_view(row.data(), 1, 1, v.head_dim),
                                        ropekit::positions::constant(ids[a]), 0, 1);
                    if (text) {
                        if (std::memcmp(row.data(), v.at(t, h), sizeof(T) * row.size()) != 0)
                            finding("apply_mrope: a text token differs from apply_rope");
                        for (int c = 0; c < v.head_dim; ++c) checked[at + std::size_t(c)] = 1;
                        continue;
                    }
                    for (int p = 0; p < pairs; ++p) {
                        if (int(sec.axis_of_pair(p)) != a) continue;
                        int c0, c1;
                        channels(p, c0, c1);
                        for (int c : {c0, c1}) {
                            if (!close<T>(ropekit::to_float(v.at(t, h)[c]),
                                          ropekit::to_float(row[std::size_t(c)]))) {
                                std::fprintf(stderr,
                                             "token %lld head %d pair %d axis %d channel %d: "
                                             "%.9g, apply_rope at %lld gives %.9g\n",
                                             (long long)t, h, p, a, c,
                                             double(ropekit::to_float(v.at(t, h)[c])),
                                             (long long)ids[a],
                                             double(ropekit::to_float(row[std::size_t(c)])));
                                finding("apply_mrope: a pair differs from apply_rope at its axis");
                            }
                            checked[at + std::size_t(c)] = 1;
                        }
                    }
                }
            }
        }
        // Everything else (other tokens, pass-through channels, padding) is untouched.
        for (std::size_t i = 0; i < before.size(); ++i)
            if (!checked[i] && std::memcmp(&before[i], base + i, sizeof(T)) != 0)
                finding("apply_mrope wrote an element outside its tokens' rotated channels");
    };
    check_view(xs, x_before, xb.data);
    if (qk) check_view(ks, k_before, kb.data);
}

void run(FuzzedDataProvider& in) {
    mrope_index_options o;
    o.model = mrope_model(in.ConsumeIntegralInRange<int>(0, 2));
    static constexpr int merges[] = {2, 2, 2, 1, 3, 4, 14, 1024, 0, -1, 1025};
    o.spatial_merge_size =
        in.ConsumeIntegralInRange<int>(0, 7) == 0
            ? int(pick_int(in, -2, 2000))
            : merges[in.ConsumeIntegralInRange<std::size_t>(0, std::size(merges) - 1)];
    o.tokens_per_second = pick_double(in, 2.0);
    o.max_tokens = in.ConsumeIntegralInRange<int>(0, 3) == 0 ? pick_int(in, -2, 5000) : 4096;

    std::vector<mrope_segment> segs(in.ConsumeIntegralInRange<std::size_t>(0, 8));
    const std::int64_t m = o.spatial_merge_size;
    for (auto& s : segs) {
        switch (in.ConsumeIntegralInRange<int>(0, 2)) {
            case 0:
                s = mrope_segment::text(in.ConsumeBool() ? in.ConsumeIntegralInRange(0, 40)
                                                         : pick_int(in, -2, 300));
                break;
            case 1:
                s = mrope_segment::image(in.ConsumeIntegralInRange<int>(0, 7) == 0
                                             ? pick_side(in, 1)
                                             : in.ConsumeIntegralInRange(1, 2),
                                         pick_side(in, m), pick_side(in, m));
                break;
            default:
                s = mrope_segment::video(in.ConsumeIntegralInRange<int>(0, 5) == 0
                                             ? pick_side(in, 1)
                                             : in.ConsumeIntegralInRange(1, 6),
                                         pick_side(in, m), pick_side(in, m),
                                         pick_double(in, in.ConsumeBool() ? 1.0 : 0.5));
                break;
        }
    }
    // Keep an accepted sequence small: lower max_tokens when the segments ask for more.
    std::int64_t plausible = 0;
    for (const auto& s : segs) {
        const std::int64_t n = plausible_tokens(s, m);
        if (n > 0)
            plausible =
                std::min(plausible + std::min(n, max_accepted_tokens + 1), max_accepted_tokens + 1);
    }
    if (plausible > max_accepted_tokens && o.max_tokens > max_accepted_tokens)
        o.max_tokens = max_accepted_tokens;

    const bool null_segments = !segs.empty() && in.ConsumeIntegralInRange<int>(0, 31) == 0;
    std::optional<mrope_index> index;
    try {
        index = ropekit::get_rope_index(null_segments ? nullptr : segs.data(), segs.size(), o);
    } catch (const ropekit::error&) {
        // the expected outcome for bad input
    }
    if (index) check_index(segs, o, *index);

    try {
        switch (in.ConsumeIntegralInRange<int>(0, 2)) {
            case 0:
                run_kernel<float>(in, index);
                break;
            case 1:
                run_kernel<ropekit::bfloat16>(in, index);
                break;
            default:
                run_kernel<ropekit::half>(in, index);
                break;
        }
    } catch (const ropekit::error&) {
        // the expected outcome for bad input
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    run(in);
    return 0;
}
