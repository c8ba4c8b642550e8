// SPDX-License-Identifier: Apache-2.0
// Include first in every test: turns ROPEKIT_ASSERT into an exception the tests can catch, so the
// hot-path precondition checks are tested in every build type (including NDEBUG).
#pragma once

#include <stdexcept>
#include <string>

namespace ropekit_test {
/// Thrown by ROPEKIT_ASSERT inside tests.
struct assert_failure : std::logic_error {
    using std::logic_error::logic_error;
};

/// The field() of the ropekit::error that `call()` throws, or "no error". (A template so that
/// this header needs no ropekit header: the tests include it first.)
template <class Error, class Call>
std::string thrown_field(Call&& call) {
    try {
        call();
    } catch (const Error& e) {
        return std::string(e.field());
    }
    return "no error";
}
}  // namespace ropekit_test

#define ROPEKIT_ASSERT(cond, msg) \
    ((cond) ? (void)0             \
            : throw ::ropekit_test::assert_failure(std::string("ROPEKIT_ASSERT: ") + (msg)))

#include "catch.hpp"

namespace ropekit_test {
/// Requires `f()` to throw an `Error` (ropekit::error) whose field() is `field` and whose
/// message contains `text`.
template <class Error, class F>
void expect_error(F&& f, const std::string& field, const std::string& text) {
    bool thrown = false;
    try {
        f();
    } catch (const Error& e) {
        thrown = true;
        INFO("message: " << e.what());
        CHECK(e.field() == field);
        CHECK(std::string(e.what()).find(text) != std::string::npos);
    }
    INFO("expected an error for field " << field);
    CHECK(thrown);
}
}  // namespace ropekit_test
