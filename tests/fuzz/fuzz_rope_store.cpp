// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the fused rotate-and-store (rope_store in include/ropekit/rope.hpp) into
// float, bfloat16, half and block_q8_0 destinations: geometry (partial, offset, wide NeoX span,
// rotary_dim past the one-pass limit), view shapes and strides of source and destination
// (packed, padded, head-major, arbitrary), token sub-ranges, positions (contiguous, constant,
// int32 / int64 ids, table rows) with both angle sources (range table, list table,
// table-free), and source values including NaN, infinities, float's extremes, half's overflow
// edge and subnormals. Every view lies in a malloc'd buffer of exactly its span, so ASan sees any
// access past it; bigger views only go through the validator. The call is made only after
// validate_rope_store_call accepted it; a ropekit::error from it is the expected answer to bad
// input. Findings:
//  - anything else escaping, a sanitizer report, a ROPEKIT_ASSERT (asserts are on: the
//    validator let through a call the kernel rejects);
//  - a destination that is not byte for byte what apply_rope on a float copy of the source
//    followed by from_float / quantize_q8_0 writes (what rope.hpp promises), including every
//    byte outside the call's tokens, which must keep its sentinel; the one latitude is the sign
//    and payload of a NaN stored as float / bfloat16 / half, which IEEE arithmetic leaves
//    unspecified (q8_0's poisoned block is fully specified and compared exactly);
//  - a source element that changed.
//
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
//       -Iinclude tests/fuzz/fuzz_rope_store.cpp -o /tmp/fuzz_rope_store
//   /tmp/fuzz_rope_store -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 /tmp/rs_corpus \
//       tests/fuzz/corpus/rope_store
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

#include "ropekit/rope.hpp"
#include "ropekit/storage.hpp"
#include "ropekit/table.hpp"
#include "ropekit/view.hpp"

namespace {

using ropekit::block_q8_0;
using ropekit::head_view;
using ropekit::positions;

// Largest view this target runs, in elements: bigger ones are validated, not run.
constexpr std::int64_t max_elements = std::int64_t(1) << 16;
constexpr unsigned char sentinel = 0xa5;

[[noreturn]] void finding(const char* what) {
    std::fprintf(stderr, "fuzz_rope_store finding: %s\n", what);
    std::abort();
}

std::int64_t pick_int(FuzzedDataProvider& in, std::int64_t lo, std::int64_t hi) {
    constexpr std::int64_t lim = ropekit::table_position_limit;
    switch (in.ConsumeIntegralInRange<int>(0, 9)) {
        case 0:
            return lim + in.ConsumeIntegralInRange<std::int64_t>(-3, 3);
        case 1:
            return -lim + in.ConsumeIntegralInRange<std::int64_t>(-3, 3);
        case 2:
            return std::numeric_limits<std::int64_t>::max() -
                   in.ConsumeIntegralInRange<std::int64_t>(0, 3);
        case 3:
            return std::numeric_limits<std::int64_t>::min() +
                   in.ConsumeIntegralInRange<std::int64_t>(0, 3);
        case 4:
            return in.ConsumeIntegral<std::int64_t>();
        default:
            return in.ConsumeIntegralInRange<std::int64_t>(lo, hi);
    }
}

/// A source value: usually moderate, sometimes one of the conversions' edge cases.
float pick_value(FuzzedDataProvider& in, bool wild) {
    static constexpr float edges[] = {std::numeric_limits<float>::quiet_NaN(),
                                      -std::numeric_limits<float>::quiet_NaN(),
                                      std::numeric_limits<float>::infinity(),
                                      -std::numeric_limits<float>::infinity(),
                                      std::numeric_limits<float>::max(),
                                      -std::numeric_limits<float>::max(),
                                      3e38f,
                                      1e38f,
                                      65504.0f,
                                      65519.99f,
                                      65520.0f,
                                      -65520.0f,
                                      127.0f * 65504.0f,
                                      127.0f * 65520.0f,
                                      1e-37f,
                                      4e-37f,
                                      1e-38f,
                                      1.4e-45f,
                                      0x1p-24f,
                                      0x1p-25f,
                                      0x1.8p-25f,
                                      0.0f,
                                      -0.0f,
                                      0.5f,
                                      1.0f};
    if (wild && in.ConsumeIntegralInRange<int>(0, 3) == 0)
        return edges[in.ConsumeIntegralInRange<std::size_t>(0, std::size(edges) - 1)];
    if (wild && in.ConsumeIntegralInRange<int>(0, 7) == 0) return in.ConsumeFloatingPoint<float>();
    return in.ConsumeFloatingPointInRange<float>(-8.0f, 8.0f);
}

/// One exact-size allocation filled with the sentinel byte (at least one element, so the
/// pointer is unique).
template <class T>
struct buffer {
    T* data;
    std::int64_t n;
    explicit buffer(std::int64_t elements) : n(elements) {
        const std::size_t bytes = std::size_t(std::max<std::int64_t>(n, 1)) * sizeof(T);
        data = static_cast<T*>(std::malloc(bytes));
        std::memset(static_cast<void*>(data), sentinel, bytes);
    }
    ~buffer() { std::free(data); }
    buffer(const buffer&) = delete;
    buffer& operator=(const buffer&) = delete;
    const unsigned char* bytes() const { return reinterpret_cast<const unsigned char*>(data); }
    std::size_t byte_size() const { return std::size_t(n) * sizeof(T); }
};

/// A view of `tokens` x `heads` x `head_dim` (values; strides in elements, blocks for q8_0),
/// without data yet: the caller sizes the buffer from its span.
template <class T>
head_view<T> make_view(FuzzedDataProvider& in, std::int64_t tokens, int heads, int head_dim) {
    const std::ptrdiff_t row = head_view<T>::row_elements(head_dim);
    switch (in.ConsumeIntegralInRange<int>(0, 5)) {
        case 0:
            return head_view<T>::head_major(nullptr, heads, tokens, head_dim);
        case 1:
            return head_view<T>::padded(
                nullptr, tokens, heads, head_dim,
                std::ptrdiff_t(std::max(heads, 0)) * row + in.ConsumeIntegralInRange<int>(0, 5));
        case 2: {  // head-major with spare tokens per head, narrowed to `tokens`
            head_view<T> v = head_view<T>::head_major(
                nullptr, heads,
                tokens + (tokens < max_elements ? in.ConsumeIntegralInRange(0, 3) : 0), head_dim);
            v.tokens = tokens;
            return v;
        }
        case 3: {  // anything: overlapping, zero or negative strides, near 2^62
            auto stride = [&](std::ptrdiff_t sane) -> std::ptrdiff_t {
                switch (in.ConsumeIntegralInRange<int>(0, 3)) {
                    case 0:
                        return sane + in.ConsumeIntegralInRange<std::ptrdiff_t>(-3, 8);
                    case 1:
                        return std::ptrdiff_t(1) << in.ConsumeIntegralInRange<int>(0, 62);
                    case 2:
                        return in.ConsumeIntegral<std::ptrdiff_t>();
                    default:
                        return sane;
                }
            };
            const std::ptrdiff_t ts = stride(std::ptrdiff_t(std::max(heads, 0)) * row);
            return head_view<T>{nullptr, tokens, heads, head_dim, ts, stride(row)};
        }
        default:
            return head_view<T>::packed(nullptr, tokens, heads, head_dim);
    }
}

/// Elements a view spans from its data pointer, computed on a placeholder address (span() reads
/// no memory); throws ropekit::error for an unusable view.
template <class T>
std::int64_t span_of(head_view<T> v) {
    static std::remove_const_t<T> placeholder[1];
    v.data = placeholder;
    return v.span();
}

/// The destination row of a rotated float row: every channel converted.
template <class Dst>
void convert_row(const float* row, Dst* out, int head_dim) {
    if constexpr (std::is_same_v<Dst, block_q8_0>)
        ropekit::quantize_q8_0(row, out, head_dim);
    else
        for (int j = 0; j < head_dim; ++j) out[j] = ropekit::from_float<Dst>(row[j]);
}

/// Whether two stored elements are the same NaN up to sign and payload.
template <class Dst>
bool both_nan(const unsigned char* a, const unsigned char* b) {
    if constexpr (std::is_same_v<Dst, block_q8_0>) {
        (void)a, (void)b;
        return false;
    } else {
        Dst x, y;
        std::memcpy(&x, a, sizeof x);
        std::memcpy(&y, b, sizeof y);
        return std::isnan(ropekit::to_float(x)) && std::isnan(ropekit::to_float(y));
    }
}

template <class Dst>
void run(FuzzedDataProvider& in) {
    constexpr bool q8 = std::is_same_v<Dst, block_q8_0>;
    // The frequencies: head_dim a multiple of 32 for q8_0 unless a mismatch is wanted.
    static constexpr int dims[] = {32, 64, 96, 128, 160, 256, 320, 576, 1056};
    int head_dim = in.ConsumeIntegralInRange<int>(0, 3) != 0
                       ? dims[in.ConsumeIntegralInRange<std::size_t>(0, std::size(dims) - 1)]
                       : in.ConsumeIntegralInRange<int>(-1, 600);
    if (!q8 && in.ConsumeBool()) head_dim = in.ConsumeIntegralInRange<int>(1, 80);
    ropekit::rope_frequencies f;
    f.head_dim = head_dim;
    f.layout = in.ConsumeBool() ? ropekit::rope_layout::neox : ropekit::rope_layout::gptj;
    const int max_pairs = std::max(1, head_dim / 2);
    f.rotary_dim = in.ConsumeIntegralInRange<int>(0, 15) == 0
                       ? in.ConsumeIntegralInRange<int>(-2, 1100)
                       : 2 * in.ConsumeIntegralInRange<int>(1, std::min(max_pairs, 300));
    if (in.ConsumeIntegralInRange<int>(0, 3) == 0) {
        const int spare = std::max(0, head_dim - f.rotary_dim);
        if (f.layout == ropekit::rope_layout::neox && in.ConsumeBool())
            f.pair_span = f.rotary_dim / 2 + in.ConsumeIntegralInRange<int>(0, spare);
        f.rotary_offset = in.ConsumeIntegralInRange<int>(0, spare);
    }
    const double base = in.ConsumeFloatingPointInRange<double>(2.0, 1e6);
    const bool raw_freqs = in.ConsumeIntegralInRange<int>(0, 15) == 0;
    for (int i = 0; i < f.rotary_dim / 2; ++i)
        f.inv_freq.push_back(raw_freqs ? in.ConsumeFloatingPoint<float>()
                                       : float(std::pow(base, -2.0 * i / f.rotary_dim)));

    const std::int64_t tokens = in.ConsumeIntegralInRange<int>(0, 15) == 0
                                    ? pick_int(in, -1, 600)
                                    : in.ConsumeIntegralInRange<std::int64_t>(0, 9);
    const int heads = in.ConsumeIntegralInRange<int>(-1, 4);
    const head_view<const float> sv0 = make_view<const float>(in, tokens, heads, head_dim);
    // Occasionally a destination of another shape: the validator must refuse it.
    const int perturb =
        in.ConsumeIntegralInRange<int>(0, 15) == 0 ? in.ConsumeIntegralInRange<int>(1, 3) : 0;
    head_view<Dst> dv =
        make_view<Dst>(in, tokens + (perturb == 1 && tokens < max_elements), heads + (perturb == 2),
                       head_dim + (perturb == 3 ? (q8 ? 32 : 1) : 0));
    const std::int64_t t0 = in.ConsumeIntegralInRange<std::int64_t>(-1, 10);
    const std::int64_t t1 =
        in.ConsumeBool() ? tokens : t0 + in.ConsumeIntegralInRange<std::int64_t>(-1, 10);

    // Positions: ids cover exactly the view's tokens (the pointer indexes them); a view too
    // large to run gets positions by value, or null ids.
    const bool small = tokens <= max_elements;
    const std::int64_t n_ids = small ? std::max<std::int64_t>(tokens, 0) : 0;
    std::vector<std::int64_t> ids64(std::size_t(std::max<std::int64_t>(n_ids, 1)));
    std::vector<std::int32_t> ids32(ids64.size());
    for (std::int64_t i = 0; i < n_ids; ++i) {
        ids64[std::size_t(i)] = in.ConsumeIntegralInRange<int>(0, 7) == 0
                                    ? pick_int(in, -50, 3000)
                                    : in.ConsumeIntegralInRange<std::int64_t>(0, 300);
        ids32[std::size_t(i)] = std::int32_t(ids64[std::size_t(i)]);
    }
    positions pos = positions::contiguous(0);
    switch (in.ConsumeIntegralInRange<int>(0, 5)) {
        case 0:
            pos = positions::contiguous(in.ConsumeBool() ? in.ConsumeIntegralInRange(0, 300)
                                                         : pick_int(in, -20, 300));
            break;
        case 1:
            pos = positions::constant(pick_int(in, -20, 300));
            break;
        case 2:
            pos = positions::ids(n_ids > 0 && small ? ids64.data() : nullptr);
            break;
        case 3:
            pos = positions::ids(n_ids > 0 && small ? ids32.data() : nullptr);
            break;
        case 4:
            pos = positions::table_rows();
            break;
        default:
            break;
    }

    // The angle source: a range table, a list table or none (table-free).
    const int source = in.ConsumeIntegralInRange<int>(0, 2);
    std::optional<ropekit::cos_sin_table> table;
    if (source == 0) {
        const std::int64_t first = in.ConsumeIntegralInRange<int>(0, 3) == 0
                                       ? pick_int(in, -20, 300)
                                       : in.ConsumeIntegralInRange<std::int64_t>(-5, 5);
        table = ropekit::cos_sin_table::for_range(f, first,
                                                  in.ConsumeIntegralInRange<std::int64_t>(0, 320));
    } else if (source == 1) {
        table = ropekit::cos_sin_table::for_positions(
            f, ids64.data(), in.ConsumeIntegralInRange<std::int64_t>(0, n_ids));
    }

    // Sizes first (ropekit::error for unusable views), then the validator; only views small
    // enough to allocate are run, bigger ones are validated on their placeholder address.
    const std::int64_t sn = span_of(sv0), dn = span_of(dv);
    if (sn > max_elements || dn > max_elements) {
        static float src_placeholder[1];
        static Dst dst_placeholder[1];
        head_view<const float> s = sv0;
        s.data = src_placeholder;
        dv.data = dst_placeholder;
        if (table)
            ropekit::validate_rope_store_call(*table, s, dv, pos, t0, t1);
        else
            ropekit::validate_rope_store_call(f, s, dv, pos, t0, t1);
        return;
    }
    buffer<float> src(sn);
    const bool wild = in.ConsumeBool();
    for (std::int64_t i = 0; i < sn; ++i) src.data[i] = pick_value(in, wild);
    head_view<const float> sv = sv0;
    sv.data = sn > 0 ? src.data : nullptr;
    buffer<Dst> actual(dn), expected(dn);
    dv.data = dn > 0 ? actual.data : nullptr;
    if (table)
        ropekit::validate_rope_store_call(*table, sv, dv, pos, t0, t1);
    else
        ropekit::validate_rope_store_call(f, sv, dv, pos, t0, t1);
    const std::vector<float> src_before(src.data, src.data + sn);

    // Expected: apply_rope on a packed float copy of the call's rows, then the conversion.
    std::vector<float> rot(std::size_t(std::max<std::int64_t>(sv.tokens, 0)) *
                           std::size_t(std::max(sv.heads, 0)) * std::size_t(head_dim));
    // (A view without heads may still claim 2^62 tokens: nothing to copy or convert then.)
    const std::int64_t rows = sv.heads > 0 ? sv.tokens : 0;
    for (std::int64_t t = 0; t < rows; ++t)
        for (int h = 0; h < sv.heads; ++h)
            std::memcpy(&rot[std::size_t((t * sv.heads + h) * head_dim)], sv.at(t, h),
                        sizeof(float) * std::size_t(head_dim));
    const auto rv =
        ropekit::packed_view(rot.empty() ? nullptr : rot.data(), sv.tokens, sv.heads, head_dim);
    if (table)
        ropekit::apply_rope(*table, rv, pos, t0, t1);
    else
        ropekit::apply_rope(f, rv, pos, t0, t1);
    head_view<Dst> ev = dv;
    ev.data = dn > 0 ? expected.data : nullptr;
    for (std::int64_t t = t0; t < std::min(t1, rows); ++t)
        for (int h = 0; h < sv.heads; ++h)
            convert_row(&rot[std::size_t((t * sv.heads + h) * head_dim)], ev.at(t, h), head_dim);

    if (table)
        ropekit::rope_store(*table, sv, dv, pos, t0, t1);
    else
        ropekit::rope_store(f, sv, dv, pos, t0, t1);

    if (sn > 0 && std::memcmp(src_before.data(), src.data, sizeof(float) * std::size_t(sn)) != 0)
        finding("rope_store wrote its source");
    const unsigned char* a = actual.bytes();
    const unsigned char* e = expected.bytes();
    constexpr std::size_t es = sizeof(Dst);
    for (std::size_t i = 0; i < actual.byte_size(); i += es) {
        if (std::memcmp(a + i, e + i, es) == 0 || both_nan<Dst>(a + i, e + i)) continue;
        std::fprintf(stderr,
                     "%s element %zu of %zu differs (head_dim %d rotary_dim %d span %d offset %d "
                     "%s, %s, tokens [%lld, %lld) of %lld, heads %d)\n",
                     ropekit::storage_name<Dst>(), i / es, actual.byte_size() / es, head_dim,
                     f.rotary_dim, f.pair_span, f.rotary_offset,
                     f.layout == ropekit::rope_layout::neox ? "neox" : "gptj",
                     source == 0   ? "range table"
                     : source == 1 ? "list table"
                                   : "table-free",
                     (long long)t0, (long long)t1, (long long)sv.tokens, sv.heads);
        if constexpr (q8) {
            const auto& x = reinterpret_cast<const block_q8_0*>(a)[i / es];
            const auto& y = reinterpret_cast<const block_q8_0*>(e)[i / es];
            std::fprintf(stderr, "  d %04x vs %04x\n", x.d.bits, y.d.bits);
            for (int j = 0; j < ropekit::q8_0_block_values; ++j)
                if (x.qs[j] != y.qs[j])
                    std::fprintf(stderr, "  qs[%d] %d vs %d\n", j, x.qs[j], y.qs[j]);
        }
        finding("rope_store differs from apply_rope + conversion");
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    try {
        switch (in.ConsumeIntegralInRange<int>(0, 3)) {
            case 0:
                run<float>(in);
                break;
            case 1:
                run<ropekit::bfloat16>(in);
                break;
            case 2:
                run<ropekit::half>(in);
                break;
            default:
                run<block_q8_0>(in);
                break;
        }
    } catch (const ropekit::error&) {
        // the expected outcome for bad input
    }
    return 0;
}
