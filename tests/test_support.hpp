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
}  // namespace ropekit_test

#define ROPEKIT_ASSERT(cond, msg) \
    ((cond) ? (void)0             \
            : throw ::ropekit_test::assert_failure(std::string("ROPEKIT_ASSERT: ") + (msg)))

#include "catch.hpp"
