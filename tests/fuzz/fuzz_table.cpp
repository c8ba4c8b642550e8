// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: scaling parameters and table requests decoded from the input, through
// make_frequencies / a raw rope_frequencies, cos_sin_table::for_range / for_positions and
// validate_positions. A ropekit::error is the expected answer to bad input; anything else
// escaping (std::bad_alloc, a crash, a sanitizer report) is a finding, and so is a table the
// builders accept whose entries are not cosines and sines (|value| > 1 + 1e-6 or not finite).
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <vector>

#include "ropekit/rope.hpp"
#include "ropekit/scaling.hpp"
#include "ropekit/table.hpp"

namespace {

// Tables this target builds for real (the cap itself, 2^31 floats, is exercised by counts that
// must be rejected): the fuzzer runs with -malloc_limit_mb=2048.
constexpr std::int64_t max_built_floats = std::int64_t(1) << 22;

// An int64 that is often at a boundary: small, near 2^29, near INT64 limits, or raw.
std::int64_t interesting_int64(FuzzedDataProvider& in) {
    constexpr std::int64_t lim = ropekit::table_position_limit;
    constexpr std::int64_t big = std::numeric_limits<std::int64_t>::max();
    switch (in.ConsumeIntegralInRange<int>(0, 7)) {
        case 0:
            return in.ConsumeIntegralInRange<std::int64_t>(-300, 300);
        case 1:
            return lim + in.ConsumeIntegralInRange<std::int64_t>(-300, 300);
        case 2:
            return -lim + in.ConsumeIntegralInRange<std::int64_t>(-300, 300);
        case 3:
            return big - in.ConsumeIntegralInRange<std::int64_t>(0, 300);
        case 4:
            return std::numeric_limits<std::int64_t>::min() +
                   in.ConsumeIntegralInRange<std::int64_t>(0, 300);
        case 5:
            return (std::int64_t(1) << in.ConsumeIntegralInRange<int>(0, 62)) +
                   in.ConsumeIntegralInRange<std::int64_t>(-2, 2);
        default:
            return in.ConsumeIntegral<std::int64_t>();
    }
}

double interesting_double(FuzzedDataProvider& in) {
    switch (in.ConsumeIntegralInRange<int>(0, 4)) {
        case 0:
            return in.ConsumeFloatingPointInRange<double>(0.5, 64.0);
        case 1:
            return in.ConsumeFloatingPointInRange<double>(1.0, 1e7);
        case 2:
            return double(in.ConsumeIntegralInRange<int>(-4, 4));
        case 3:
            return std::numeric_limits<double>::quiet_NaN();
        default:
            return in.ConsumeFloatingPoint<double>();
    }
}

ropekit::rope_frequencies decode_frequencies(FuzzedDataProvider& in) {
    ropekit::rope_params p;
    p.rotary_dim = in.ConsumeBool() ? 2 * in.ConsumeIntegralInRange<int>(-1, 300)
                                    : in.ConsumeIntegralInRange<int>(-4, 1 << 17);
    p.head_dim = p.rotary_dim + in.ConsumeIntegralInRange<int>(-2, 64);
    p.base = in.ConsumeBool() ? in.ConsumeFloatingPointInRange<double>(1.0, 1e7)
                              : interesting_double(in);
    p.layout = in.ConsumeBool() ? ropekit::rope_layout::neox : ropekit::rope_layout::gptj;
    const int method = in.ConsumeIntegralInRange<int>(0, 6);
    if (method == 6) {  // raw fields, as an engine filling the struct itself
        ropekit::rope_frequencies f;
        f.rotary_dim = p.rotary_dim;
        f.head_dim = p.head_dim;
        f.layout = p.layout;
        f.attention_factor = float(interesting_double(in));
        const std::size_t n = in.ConsumeIntegralInRange<std::size_t>(0, 512);
        for (std::size_t i = 0; i < n; ++i)
            f.inv_freq.push_back(in.ConsumeBool() ? float(interesting_double(in))
                                                  : in.ConsumeFloatingPointInRange<float>(0, 2));
        return f;
    }
    ropekit::rope_scaling s;
    switch (method) {
        case 0:
            s = ropekit::default_rope{};
            break;
        case 1:
            s = ropekit::linear_scaling{interesting_double(in)};
            break;
        case 2: {
            ropekit::yarn_scaling y;
            y.factor = interesting_double(in);
            y.original_max_position = interesting_int64(in);
            y.beta_fast = interesting_double(in);
            y.beta_slow = interesting_double(in);
            y.truncate = in.ConsumeBool();
            s = y;
            break;
        }
        case 3: {
            ropekit::llama3_scaling l;
            l.factor = interesting_double(in);
            l.low_freq_factor = interesting_double(in);
            l.high_freq_factor = interesting_double(in);
            l.original_max_position = interesting_int64(in);
            s = l;
            break;
        }
        case 4: {
            ropekit::dynamic_ntk_scaling d;
            d.factor = interesting_double(in);
            d.original_max_position = interesting_int64(in);
            s = d;
            break;
        }
        default: {
            ropekit::ntk_scaling n;
            n.alpha = interesting_double(in);
            s = n;
            break;
        }
    }
    std::optional<std::int64_t> seq_len;
    if (in.ConsumeBool()) seq_len = interesting_int64(in);
    return ropekit::make_frequencies(p, s, seq_len);
}

void check_table(const ropekit::cos_sin_table& t) {
    const std::int64_t n = t.rows() * t.row_stride();
    for (std::int64_t i = 0; i < n; ++i) {
        const float v = t.data()[i];
        if (!(std::fabs(v) <= 1.0f + 1e-6f)) {
            std::fprintf(stderr, "table entry %lld is %g, not a cosine or sine\n", (long long)i,
                         double(v));
            std::abort();
        }
    }
}

void run(FuzzedDataProvider& in) {
    const ropekit::rope_frequencies freqs = decode_frequencies(in);
    const std::int64_t floats_per_row = 2 * std::int64_t(freqs.inv_freq.size());
    const bool want_range = in.ConsumeBool();
    std::int64_t first = interesting_int64(in);
    std::int64_t count = in.ConsumeBool() ? in.ConsumeIntegralInRange<std::int64_t>(-2, 4096)
                                          : interesting_int64(in);
    if (want_range) {
        // A request the builder would accept and that is too large to build here is skipped;
        // every other one (too large for the cap, or out of the position bound) must throw.
        const bool would_be_big =
            count > 0 && floats_per_row > 0 && count > max_built_floats / floats_per_row;
        const bool within_cap =
            floats_per_row > 0 && count <= ropekit::table_max_floats / floats_per_row;
        if (would_be_big && within_cap && first >= -ropekit::table_position_limit &&
            first < ropekit::table_position_limit && count <= ropekit::table_position_limit - first)
            return;
        const auto t = ropekit::cos_sin_table::for_range(freqs, first, count);
        check_table(t);
        // validate_positions over positions decoded from the rest of the input.
        const std::int64_t t0 = in.ConsumeIntegralInRange<std::int64_t>(0, 64);
        const std::int64_t t1 = t0 + in.ConsumeIntegralInRange<std::int64_t>(-1, 64);
        std::vector<std::int64_t> ids(std::size_t(std::max<std::int64_t>(t1, 0)));
        for (auto& id : ids)
            id = in.ConsumeBool() ? first + in.ConsumeIntegralInRange<std::int64_t>(-2, 66)
                                  : interesting_int64(in);
        const int kind = in.ConsumeIntegralInRange<int>(0, 3);
        const ropekit::positions pos =
            kind == 0   ? ropekit::positions::contiguous(interesting_int64(in))
            : kind == 1 ? ropekit::positions::constant(interesting_int64(in))
            : kind == 2 ? ropekit::positions::ids(ids.data())
                        : ropekit::positions::table_rows();
        ropekit::validate_positions(t, pos, t0, t1);
        // Accepted: every position of the range has a row (what the kernel will look up).
        for (std::int64_t tok = t0; tok < t1; ++tok)
            if (!t.contains(pos.at(tok))) {
                std::fprintf(stderr, "validate_positions passed token %lld outside the table\n",
                             (long long)tok);
                std::abort();
            }
        return;
    }
    // List table over positions from the input.
    count = in.ConsumeIntegralInRange<std::int64_t>(-1, 1024);
    if (in.ConsumeBool() && count > 0 && floats_per_row > 0) {
        // A count that claims more rows than there are positions must be rejected by the size
        // cap before a single position is read.
        const std::int64_t huge = interesting_int64(in);
        if (huge > ropekit::table_max_floats / floats_per_row) {
            std::vector<std::int32_t> one(1, 0);
            try {
                (void)ropekit::cos_sin_table::for_positions(freqs, one.data(), huge);
            } catch (const ropekit::error&) {
                return;
            }
            std::fprintf(stderr, "for_positions accepted a count above the size cap\n");
            std::abort();
        }
    }
    if (count > 0 && floats_per_row > 0 && count > max_built_floats / floats_per_row) return;
    std::vector<std::int64_t> ids(std::size_t(std::max<std::int64_t>(count, 0)));
    for (auto& id : ids)
        id = in.ConsumeBool() ? in.ConsumeIntegralInRange<std::int64_t>(-70000, 70000)
                              : interesting_int64(in);
    if (in.ConsumeBool()) {
        std::vector<std::int32_t> ids32(ids.size());
        for (std::size_t i = 0; i < ids.size(); ++i) ids32[i] = std::int32_t(ids[i]);
        check_table(ropekit::cos_sin_table::for_positions(freqs, ids32.data(), count));
    } else {
        const auto t = ropekit::cos_sin_table::for_positions(freqs, ids.data(), count);
        check_table(t);
        ropekit::validate_positions(t, ropekit::positions::table_rows(), 0,
                                    in.ConsumeIntegralInRange<std::int64_t>(0, count + 1));
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    try {
        run(in);
    } catch (const ropekit::error&) {
        // the documented answer to bad input
    }
    return 0;
}
