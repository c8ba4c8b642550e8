// SPDX-License-Identifier: Apache-2.0
// head_view (ropekit/view.hpp): the named constructors for the layouts engines use, the packed
// QKV layout, and validate() / validate(extent) on overlapping, swapped and overflowing strides.
#include "test_support.hpp"

#include <ropekit/storage.hpp>
#include <ropekit/view.hpp>

#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

using ropekit::head_view;
using ropekit::qkv_layout;

namespace {
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const ropekit::error& e) {
        return std::string(e.field()) + ": " + e.what();
    }
    return "no error";
}
bool has(const std::string& s, const char* part) {
    return s.find(part) != std::string::npos;
}
constexpr std::ptrdiff_t max_ptrdiff = std::numeric_limits<std::ptrdiff_t>::max();
}  // namespace

TEST_CASE("named constructors give the strides of each layout", "[view]") {
    std::vector<float> buf(3 * 4 * 8 + 5);
    float* d = buf.data();
    const auto p = head_view<float>::packed(d, 3, 4, 8);
    CHECK((p.token_stride == 32 && p.head_stride == 8 && p.span() == 96));
    const auto hm = head_view<float>::head_major(d, 4, 3, 8);  // [h][t][d]
    CHECK((hm.tokens == 3 && hm.heads == 4 && hm.token_stride == 8 && hm.head_stride == 24));
    CHECK(hm.at(2, 3) == d + 3 * 24 + 2 * 8);
    CHECK(hm.span() == 96);
    const auto pad = head_view<float>::padded(d, 3, 4, 8, 33);  // one element of padding per row
    CHECK((pad.token_stride == 33 && pad.head_stride == 8 && pad.span() == 2 * 33 + 32));
    CHECK_NOTHROW(pad.validate(buf.size()));
    CHECK(has(error_of([&] { head_view<float>::padded(d, 3, 4, 8, 31).validate(); }), "overlap"));
    // tokens_slice: a window of a longer head-major cache.
    const auto w = hm.tokens_slice(1, 3);
    CHECK((w.tokens == 2 && w.at(0, 2) == hm.at(1, 2) && w.at(1, 3) == hm.at(2, 3)));
    CHECK_THROWS_AS(hm.tokens_slice(2, 4), ropekit_test::assert_failure);
    // Absurd sizes saturate instead of overflowing, and then fail validation.
    const auto huge = head_view<float>::head_major(d, 2, max_ptrdiff / 2, 8);
    CHECK(huge.head_stride == max_ptrdiff);
    CHECK_THROWS_AS(huge.validate(), ropekit::error);
    static_assert(std::is_aggregate_v<head_view<float>>, "positional aggregates still compile");
}

TEST_CASE("qkv_layout: q, k and v views of one packed QKV buffer", "[view]") {
    const qkv_layout l{4, 2, 8, 3};  // rows: 4 q heads, 2 k, 2 v, 3 padding = 67 elements
    CHECK(l.row_stride() == 8 * 8 + 3);
    std::vector<ropekit::bfloat16> buf(std::size_t(l.elements(5)));
    ropekit::bfloat16* d = buf.data();
    const auto q = l.q(d, 5), k = l.k(d, 5), v = l.v(d, 5);
    CHECK((q.data == d && q.heads == 4 && q.token_stride == 67 && q.head_stride == 8));
    CHECK((k.data == d + 32 && k.heads == 2 && k.token_stride == 67 && k.head_stride == 8));
    CHECK((v.data == d + 48 && v.heads == 2 && v.token_stride == 67 && v.head_stride == 8));
    CHECK(k.at(3, 1) == d + 3 * 67 + 32 + 8);
    CHECK_NOTHROW(l.validate(5, buf.size()));
    CHECK_NOTHROW(q.validate(buf.size()));
    CHECK_NOTHROW(k.validate(buf.size() - 32));
    CHECK_NOTHROW(v.validate(buf.size() - 48));
    CHECK(has(error_of([&] { l.validate(6, buf.size()); }), "extent"));
    CHECK(has(error_of([] { qkv_layout{4, 0, 8}.validate(); }), "kv_heads"));
    CHECK(has(error_of([] { qkv_layout{4, 2, 8, -1}.validate(); }), "row_padding"));
    // Overflowing layouts saturate (no UB in the noexcept accessors) and are rejected.
    const qkv_layout absurd{std::numeric_limits<int>::max(), std::numeric_limits<int>::max(),
                            std::numeric_limits<int>::max()};
    CHECK(absurd.row_stride() == max_ptrdiff);
    CHECK(has(error_of([&] { absurd.validate(); }), "row_stride"));
    CHECK(absurd.k(d, 1).data == nullptr);  // an offset no buffer has: null, never wrapped
    CHECK_THROWS_AS(absurd.k(d, 1).validate(), ropekit::error);
    // Null or empty buffers get no offset added.
    CHECK(l.k(static_cast<float*>(nullptr), 0).data == nullptr);
}

TEST_CASE("validate(extent) catches the swapped strides of a packed QKV buffer", "[view]") {
    // The case: q of a packed QKV buffer (4 q + 2 k + 2 v heads of 8) with its two
    // strides swapped still describes non-overlapping rows for few tokens, so validate() alone
    // passes; the view reaches past the buffer, and only the extent check can see it.
    const qkv_layout l{4, 2, 8};
    std::vector<float> buf(std::size_t(l.elements(3)));  // 3 * 64 floats
    const auto q = l.q(buf.data(), 3);
    const head_view<float> swapped{buf.data(), 3, 4, 8, q.head_stride, q.token_stride};
    CHECK_NOTHROW(swapped.validate());  // rows do not overlap...
    CHECK(swapped.span() > std::int64_t(buf.size()));
    const std::string e = error_of([&] { swapped.validate(buf.size()); });
    CHECK(has(e, "head_view: ropekit: head_view does not fit its buffer"));
    CHECK(has(e, "extent=192"));
    CHECK(has(e, "token_stride=8 head_stride=64"));
    CHECK_NOTHROW(q.validate(buf.size()));
}

TEST_CASE("validate(): overlapping rows, and strides whose products overflow", "[view]") {
    std::vector<float> buf(4 * 64);
    float* d = buf.data();
    // Rows overlap: token stride of one head with two heads per token.
    CHECK(has(error_of([&] { head_view<float>{d, 4, 2, 64, 64, 64}.validate(); }), "overlap"));
    CHECK(has(error_of([&] { head_view<float>{d, 4, 2, 64, 128, 100}.validate(); }), "overlap"));
    // A stride >= 2^62 on a dimension that is used: once passed (the larger stride only had to
    // step over the smaller one's rows), then the kernels wrote 2^64 bytes away.
    CHECK(has(
        error_of([&] { head_view<float>{d, 3, 2, 64, 64, std::ptrdiff_t(1) << 62}.validate(); }),
        "max_view_bytes"));
    // (heads - 1) * head_stride overflowed int64 inside validate() itself (UB; it wrapped
    // negative and the overlap test passed).
    CHECK(has(error_of([&] {
                  head_view<float>{d, 2, 4, 64, max_ptrdiff, std::ptrdiff_t(1) << 62}.validate();
              }),
              "max_view_bytes"));
    CHECK(has(error_of([&] {
                  head_view<float>{d, std::int64_t(1) << 40, 1, 64, std::ptrdiff_t(1) << 40, 0}
                      .validate();
              }),
              "max_view_bytes"));
    // A stride of a dimension of count 1 is never used, whatever its value.
    CHECK_NOTHROW(head_view<float>{d, 1, 1, 64, max_ptrdiff, -5}.validate(64));
    CHECK_NOTHROW(head_view<float>{d, 4, 1, 64, 64, max_ptrdiff}.validate(buf.size()));
    // Empty views may be null.
    CHECK_NOTHROW(head_view<float>{nullptr, 0, 4, 64, 0, 0}.validate(0));
    CHECK_NOTHROW(head_view<float>{nullptr, 7, 0, 64, 0, 0}.validate(0));
    CHECK(head_view<float>{nullptr, 7, 0, 64, 0, 0}.span() == 0);
    CHECK(has(error_of([&] { head_view<float>{nullptr, 1, 1, 64, 64, 64}.validate(); }), "null"));
    CHECK(has(error_of([&] { head_view<float>{d, 1, 1, 0, 0, 0}.validate(); }), "head_dim"));
    CHECK(has(error_of([&] { head_view<float>{d, -1, 1, 8, 8, 8}.validate(); }), "tokens"));
    // The bound is in bytes: 2^50 / sizeof(T) elements.
    const std::ptrdiff_t max_floats = ropekit::max_view_bytes / 4;
    CHECK_NOTHROW(head_view<float>{d, 2, 1, 64, max_floats - 64, 0}.validate());
    CHECK_THROWS_AS((head_view<float>{d, 2, 1, 64, max_floats - 63, 0}.validate()), ropekit::error);
    CHECK_NOTHROW(head_view<ropekit::half>{nullptr, 0, 1, 64, 2 * max_floats, 0}.validate());
    CHECK_NOTHROW(head_view<ropekit::half>{reinterpret_cast<ropekit::half*>(d), 2, 1, 64,
                                           2 * max_floats - 64, 0}
                      .validate());
}
