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
