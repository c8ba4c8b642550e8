// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the rotary front doors (apply_rope, apply_rope_qk, rerotate_keys,
// rebase_keys; table and table-free) with shapes, strides, token ranges and positions decoded
// from the input. Each view lies in a malloc'd buffer of exactly the elements the view claims
// (head_view::span(), or the whole qkv_layout buffer), so ASan sees any access past it. The
// call is made only after the cold-path validators the docs prescribe (validate(extent),
// validate_rope_call / validate_rebase_call) accepted it; a ropekit::error from them is the
// expected answer to bad input. Findings: a sanitizer report, a ROPEKIT_ASSERT (asserts are on:
// the validators let through a call the kernel rejects), any other exception, or a write to an
// element the call must not touch (outside the token range, past rotary_dim, other heads).
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "ropekit/rope.hpp"
#include "ropekit/table.hpp"
#include "ropekit/view.hpp"

namespace {

using ropekit::head_view;
using ropekit::positions;

// Largest buffer this target allocates, in elements: bigger views are validated, not run.
constexpr std::int64_t max_elements = std::int64_t(1) << 20;

[[noreturn]] void finding(const char* what) {
    std::fprintf(stderr, "fuzz_rope finding: %s\n", what);
    std::abort();
}

std::int64_t interesting_int64(FuzzedDataProvider& in) {
    constexpr std::int64_t lim = ropekit::table_free_position_limit;
    switch (in.ConsumeIntegralInRange<int>(0, 6)) {
        case 0:
            return in.ConsumeIntegralInRange<std::int64_t>(-100, 5000);
        case 1:
            return lim + in.ConsumeIntegralInRange<std::int64_t>(-70, 70);
        case 2:
            return -lim + in.ConsumeIntegralInRange<std::int64_t>(-70, 70);
        case 3:
            return std::numeric_limits<std::int64_t>::max() -
                   in.ConsumeIntegralInRange<std::int64_t>(0, 70);
        case 4:
            return (std::int64_t(1) << in.ConsumeIntegralInRange<int>(0, 62)) +
                   in.ConsumeIntegralInRange<std::int64_t>(-2, 2);
        default:
            return in.ConsumeIntegral<std::int64_t>();
    }
}

// A stride: usually sane, sometimes anything (negative, near 2^63).
std::ptrdiff_t decode_stride(FuzzedDataProvider& in, std::ptrdiff_t sane) {
    switch (in.ConsumeIntegralInRange<int>(0, 3)) {
        case 0:
            return sane;
        case 1:
            return sane + in.ConsumeIntegralInRange<std::ptrdiff_t>(-8, 64);
        case 2:
            return std::ptrdiff_t(1) << in.ConsumeIntegralInRange<int>(0, 62);
        default:
            return in.ConsumeIntegral<std::ptrdiff_t>();
    }
}

ropekit::rope_frequencies decode_freqs(FuzzedDataProvider& in, int head_dim) {
    ropekit::rope_frequencies f;
    f.rotary_dim = in.ConsumeBool() ? 2 * in.ConsumeIntegralInRange<int>(0, 300)
                                    : in.ConsumeIntegralInRange<int>(-2, 1100);
    f.head_dim = in.ConsumeBool() ? head_dim : f.rotary_dim;  // engines often disagree here
    f.layout = in.ConsumeBool() ? ropekit::rope_layout::neox : ropekit::rope_layout::gptj;
    const double base = in.ConsumeFloatingPointInRange<double>(2.0, 1e6);
    const bool raw = in.ConsumeIntegralInRange<int>(0, 7) == 0;
    for (int i = 0; i < f.rotary_dim / 2; ++i)
        f.inv_freq.push_back(raw ? in.ConsumeFloatingPoint<float>()
                                 : float(std::pow(base, -2.0 * i / f.rotary_dim)));
    if (in.ConsumeIntegralInRange<int>(0, 15) == 0 && !f.inv_freq.empty()) f.inv_freq.pop_back();
    f.attention_factor = in.ConsumeIntegralInRange<int>(0, 15) == 0 ? 0.0f : 1.0f;
    return f;
}

// One exact-size allocation, filled with a pattern, and the mask of elements a call may write.
template <class T>
struct buffer {
    T* data = nullptr;
    std::int64_t n = 0;
    std::vector<T> before;
    std::vector<unsigned char> writable;

    explicit buffer(std::int64_t elements) : n(elements) {
        data = static_cast<T*>(std::malloc(std::size_t(n > 0 ? n : 1) * sizeof(T)));
        before.resize(std::size_t(n));
        writable.assign(std::size_t(n), 0);
        for (std::int64_t i = 0; i < n; ++i) {
            data[i] = ropekit::from_float<T>(float(int(i % 13) - 6) * 0.25f);
            before[std::size_t(i)] = data[i];
        }
    }
    ~buffer() { std::free(data); }
    buffer(const buffer&) = delete;
    buffer& operator=(const buffer&) = delete;

    void allow(const head_view<T>& v, int rotary_dim, std::int64_t t0, std::int64_t t1) {
        for (std::int64_t t = t0; t < t1; ++t)
            for (int h = 0; h < v.heads; ++h)
                for (int c = 0; c < rotary_dim; ++c)
                    writable[std::size_t(v.at(t, h) + c - data)] = 1;
    }
    void check_untouched() const {
        for (std::int64_t i = 0; i < n; ++i)
            if (!writable[std::size_t(i)] &&
                std::memcmp(&data[i], &before[std::size_t(i)], sizeof(T)) != 0)
                finding("an element outside the call's rows and rotary channels changed");
    }
};

enum class shape { packed, head_major, padded, qkv, raw };

struct view_spec {
    shape kind;
    std::int64_t tokens;
    int heads, head_dim;
    std::ptrdiff_t extra;   // padded: row padding; qkv: kv heads
    std::ptrdiff_t ts, hs;  // raw
};

ropekit::qkv_layout layout_of(const view_spec& s) {
    return ropekit::qkv_layout{s.heads, int(s.extra), s.head_dim, s.extra & 3};
}

view_spec decode_view(FuzzedDataProvider& in) {
    view_spec s{};
    s.kind = shape(in.ConsumeIntegralInRange<int>(0, 4));
    s.tokens = in.ConsumeBool() ? in.ConsumeIntegralInRange<std::int64_t>(0, 24)
                                : in.ConsumeIntegralInRange<std::int64_t>(-1, 600);
    s.heads = in.ConsumeIntegralInRange<int>(-1, 12);
    s.head_dim = in.ConsumeBool() ? 2 * in.ConsumeIntegralInRange<int>(0, 80)
                                  : in.ConsumeIntegralInRange<int>(-1, 1100);
    s.extra = in.ConsumeIntegralInRange<std::ptrdiff_t>(-2, 40);
    s.ts = decode_stride(in, std::ptrdiff_t(std::max(s.heads, 0)) * s.head_dim);
    s.hs = decode_stride(in, s.head_dim);
    return s;
}

// The views of a call on the buffer at `base`: x (or q), and k too for a packed QKV buffer.
template <class T>
std::vector<head_view<T>> make_views(const view_spec& s, bool want_k, T* base) {
    std::vector<head_view<T>> views;
    switch (s.kind) {
        case shape::packed:
            views.push_back(head_view<T>::packed(base, s.tokens, s.heads, s.head_dim));
            break;
        case shape::head_major:
            views.push_back(head_view<T>::head_major(base, s.heads, s.tokens, s.head_dim));
            break;
        case shape::padded:
            views.push_back(
                head_view<T>::padded(base, s.tokens, s.heads, s.head_dim,
                                     std::ptrdiff_t(std::max(s.heads, 0)) * s.head_dim + s.extra));
            break;
        case shape::raw:
            views.push_back(head_view<T>{base, s.tokens, s.heads, s.head_dim, s.ts, s.hs});
            break;
        case shape::qkv: {
            const ropekit::qkv_layout l = layout_of(s);
            views.push_back(l.q(base, s.tokens));
            if (want_k) views.push_back(l.k(base, s.tokens));
            break;
        }
    }
    return views;
}

template <class T>
void run_typed(FuzzedDataProvider& in) {
    const view_spec s = decode_view(in);
    const int op = in.ConsumeIntegralInRange<int>(0, 3);  // apply, qk, rerotate, rebase
    const bool use_table = in.ConsumeBool();
    const bool want_k = op == 1;
    // Size the buffer: the view's span (computed on a placeholder address: span() reads no
    // memory, it only needs non-null data), or the whole packed QKV buffer.
    std::int64_t elements = 0;
    if (s.kind == shape::qkv) {
        const ropekit::qkv_layout l = layout_of(s);
        l.validate(s.tokens, std::size_t(max_elements));
        elements = l.elements(s.tokens);
    } else {
        static T placeholder[1];
        elements = make_views<T>(s, false, placeholder)[0].span();
        if (elements > max_elements) return;
    }
    buffer<T> buf(elements);
    std::vector<head_view<T>> views = make_views<T>(s, want_k, buf.data);
    for (const auto& v : views)
        v.validate(v.data ? std::size_t(elements - (v.data - buf.data)) : 0);
    // A k view of its own (separate allocation) when the layout is not packed QKV; with no
    // heads its data is null, as an engine passes for "no k".
    const bool own_k = want_k && views.size() == 1;
    const int k_heads = own_k ? in.ConsumeIntegralInRange<int>(0, 4) : 0;

    std::int64_t k_elements = 0;
    std::unique_ptr<buffer<T>> kbuf;
    head_view<T> k{};
    if (want_k) {
        if (own_k) {
            const head_view<T> probe =
                head_view<T>::packed(buf.data, views[0].tokens, k_heads, views[0].head_dim);
            k_elements = probe.span();
            kbuf = std::make_unique<buffer<T>>(k_elements);
            k = head_view<T>::packed(k_heads > 0 && views[0].tokens > 0 ? kbuf->data : nullptr,
                                     views[0].tokens, k_heads, views[0].head_dim);
            k.validate(std::size_t(k_elements));
        } else {
            k = views[1];
        }
    }
    const head_view<T> x = views[0];

    const ropekit::rope_frequencies freqs = decode_freqs(in, x.head_dim);
    const std::int64_t t0 = in.ConsumeIntegralInRange<std::int64_t>(-1, 30);
    const std::int64_t t1 =
        in.ConsumeBool() ? x.tokens : t0 + in.ConsumeIntegralInRange<std::int64_t>(-1, 30);
    // Ids: exactly x.tokens entries (the pointer indexes the view's tokens).
    const std::int64_t n_ids = std::max<std::int64_t>(x.tokens, 0);
    std::unique_ptr<std::int64_t[]> ids64(new std::int64_t[std::size_t(n_ids ? n_ids : 1)]);
    std::unique_ptr<std::int32_t[]> ids32(new std::int32_t[std::size_t(n_ids ? n_ids : 1)]);
    for (std::int64_t i = 0; i < n_ids; ++i) {
        ids64[i] = in.ConsumeBool() ? in.ConsumeIntegralInRange<std::int64_t>(-50, 5000)
                                    : interesting_int64(in);
        ids32[i] = std::int32_t(ids64[i]);
    }
    positions pos = positions::contiguous(0);
    switch (in.ConsumeIntegralInRange<int>(0, 4)) {
        case 0:
            pos = positions::contiguous(interesting_int64(in));
            break;
        case 1:
            pos = positions::constant(interesting_int64(in));
            break;
        case 2:
            pos = positions::ids(n_ids ? ids64.get() : nullptr);
            break;
        case 3:
            pos = positions::ids(n_ids ? ids32.get() : nullptr);
            break;
        default:
            pos = positions::table_rows();
            break;
    }

    if (op == 3) {  // rebase_keys: table-free only
        ropekit::rope_frequencies to = freqs;
        const float scale = in.ConsumeFloatingPointInRange<float>(0.25f, 4.0f);
        for (float& f : to.inv_freq) f *= scale;
        if (in.ConsumeIntegralInRange<int>(0, 7) == 0) to.layout = ropekit::rope_layout::gptj;
        ropekit::validate_rebase_call(freqs, to, x, pos, t0, t1);
        buf.allow(x, to.rotary_dim, t0, t1);
        ropekit::rebase_keys(freqs, to, x, pos, t0, t1);
        buf.check_untouched();
        return;
    }

    ropekit::cos_sin_table table;
    if (use_table) {
        if (in.ConsumeBool()) {
            const std::int64_t first = in.ConsumeBool()
                                           ? in.ConsumeIntegralInRange<std::int64_t>(-100, 5000)
                                           : interesting_int64(in);
            const std::int64_t count = in.ConsumeIntegralInRange<std::int64_t>(-1, 6000);
            table = ropekit::cos_sin_table::for_range(freqs, first, count);
        } else {
            const std::int64_t count = in.ConsumeIntegralInRange<std::int64_t>(0, n_ids);
            table = ropekit::cos_sin_table::for_positions(freqs, ids64.get(), count);
        }
    }
    const int rotary_dim = use_table ? table.rotary_dim() : freqs.rotary_dim;
    if (op == 1) {
        if (use_table)
            ropekit::validate_rope_call(table, x, k, pos, t0, t1);
        else
            ropekit::validate_rope_call(freqs, x, k, pos, t0, t1);
        buf.allow(x, rotary_dim, t0, t1);
        if (kbuf) kbuf->allow(k, rotary_dim, t0, t1);
        if (!kbuf) buf.allow(k, rotary_dim, t0, t1);
        if (use_table)
            ropekit::apply_rope_qk(table, x, k, pos, t0, t1);
        else
            ropekit::apply_rope_qk(freqs, x, k, pos, t0, t1);
        buf.check_untouched();
        if (kbuf) kbuf->check_untouched();
        return;
    }
    if (use_table)
        ropekit::validate_rope_call(table, x, pos, t0, t1);
    else
        ropekit::validate_rope_call(freqs, x, pos, t0, t1);
    buf.allow(x, rotary_dim, t0, t1);
    if (op == 0) {
        if (use_table)
            ropekit::apply_rope(table, x, pos, t0, t1);
        else
            ropekit::apply_rope(freqs, x, pos, t0, t1);
    } else {
        if (use_table)
            ropekit::rerotate_keys(table, x, pos, t0, t1);
        else
            ropekit::rerotate_keys(freqs, x, pos, t0, t1);
    }
    buf.check_untouched();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    try {
        switch (in.ConsumeIntegralInRange<int>(0, 2)) {
            case 0:
                run_typed<float>(in);
                break;
            case 1:
                run_typed<ropekit::bfloat16>(in);
                break;
            default:
                run_typed<ropekit::half>(in);
                break;
        }
    } catch (const ropekit::error&) {
        // the documented answer to bad input
    }
    return 0;
}
