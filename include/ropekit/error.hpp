// SPDX-License-Identifier: Apache-2.0
/// \file
/// The one exception type ropekit throws, and helpers that name the offending field.
#pragma once

#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

#include "config.hpp"

ROPEKIT_BEGIN_NAMESPACE

/// Every validation failure in ropekit: bad scaling parameters, bad config.json, positions
/// outside a table. The message names the field and the value, e.g.
/// `ropekit: rotary_dim must be even and positive (got 63)`.
///
/// One type for every instruction-set configuration (abi.hpp), so an engine catches it whatever
/// translation unit threw it. Its code must therefore not depend on the compile flags: the
/// strings live in the standard library's reference-counted exception strings (whose code is
/// compiled once, in libstdc++ / libc++), and the one constructor that builds a message is
/// always inlined into the thrower.
class error : public std::invalid_argument {
  public:
    /// \param field the parameter or key at fault, as the user spells it (`rotary_dim`,
    /// `beta_fast`). \param message what is wrong, including the offending value.
    ROPEKIT_ALWAYS_INLINE error(const std::string& field, const std::string& message)
        : std::invalid_argument("ropekit: " + message), field_(field) {}

    /// The parameter or key the error is about.
    std::string_view field() const noexcept { return field_.what(); }

  private:
    std::runtime_error field_;  // (a std::string member would put its inline code in ~error)
};

namespace detail {
// Cold-path helpers: their code depends on the compile flags (abi.hpp).
ROPEKIT_BEGIN_ISA_NAMESPACE

/// Formats a value for an error message: integers as integers, doubles with enough digits to
/// round-trip, strings quoted.
template <class T>
std::string format_value(const T& v) {
    std::ostringstream os;
    if constexpr (std::is_floating_point_v<T>) {
        os.precision(17);
        os << v;
    } else if constexpr (std::is_convertible_v<T, std::string>) {
        os << '"' << std::string(v) << '"';
    } else {
        os << v;
    }
    return os.str();
}

/// Throws ropekit::error "`field` `requirement` (got `value`)".
template <class T>
[[noreturn]] void fail(const char* field, const char* requirement, const T& value) {
    ROPEKIT_THROW(error(
        field, std::string(field) + " " + requirement + " (got " + format_value(value) + ")"));
#if !ROPEKIT_HAS_EXCEPTIONS
    std::abort();
#endif
}

/// Checks a cold-path condition; on failure throws ropekit::error naming field and value.
template <class T>
void require(bool ok, const char* field, const char* requirement, const T& value) {
    if (!ok) fail(field, requirement, value);
}

/// Requires a finite, strictly positive number.
inline void require_finite_positive(double v, const char* field) {
    require(std::isfinite(v) && v > 0.0, field, "must be finite and > 0", v);
}

/// True when `v` is finite and rounds to a finite float32: HF turns every Python scalar into a
/// float32 operand, and converting a larger double to float is undefined behaviour in C++.
inline bool fits_f32(double v) noexcept {
    return std::isfinite(v) && std::fabs(v) <= double(std::numeric_limits<float>::max());
}

/// True when `v` fits float32 and is still > 0 after rounding (not flushed to 0).
inline bool positive_f32(double v) noexcept {
    return fits_f32(v) && v > 0.0 && static_cast<float>(v) > 0.0f;
}

/// Requires fits_f32(v): "must be finite in float32 (|v| <= 3.4028234663852886e+38)".
inline void require_fits_f32(double v, const char* field) {
    require(fits_f32(v), field, "must be finite in float32 (|value| <= 3.4028234663852886e+38)", v);
}

/// Requires positive_f32(v).
inline void require_positive_f32(double v, const char* field) {
    require(positive_f32(v), field,
            "must be > 0 and finite in float32 (rounds to neither 0 nor inf)", v);
}

/// True when `v` rounds to a positive *normal* float32 (>= 1.1754943508222875e-38): its
/// reciprocal is then finite too, which a divisor needs (a subnormal soft-cap has 1/cap = inf,
/// and 0 * inf is NaN).
inline bool normal_positive_f32(double v) noexcept {
    return fits_f32(v) && static_cast<float>(v) >= std::numeric_limits<float>::min();
}

/// Requires normal_positive_f32(v).
inline void require_normal_positive_f32(double v, const char* field) {
    require(normal_positive_f32(v), field,
            "must be > 0 and a normal float32 (1.1754943508222875e-38 to "
            "3.4028234663852886e+38)",
            v);
}

ROPEKIT_END_ISA_NAMESPACE
}  // namespace detail
ROPEKIT_END_NAMESPACE
