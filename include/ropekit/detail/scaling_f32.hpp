// SPDX-License-Identifier: Apache-2.0
/// \file
/// Float32 arithmetic that rounds exactly like one PyTorch float32 tensor operation, so the
/// scaling methods can reproduce Hugging Face's inv_freq step by step.
#pragma once

#include "../abi.hpp"

#include <cmath>

ROPEKIT_BEGIN_NAMESPACE
namespace detail {
namespace f32 {
ROPEKIT_BEGIN_ISA_NAMESPACE

// Why double and back: a float32 operation done in double and rounded once to float gives the
// correctly rounded float32 result for + - * / (53 >= 2*24 + 2, Figueroa 1995), exactly what
// one torch float32 kernel returns. Writing the steps in plain float would let the compiler
// contract `a * b + c` into an fma under -ffp-contract=fast (GCC's default in GNU mode), which
// rounds once instead of twice and no longer matches torch. The conversion to float between the
// steps is a rounding the compiler must keep, so no contraction can happen here.

/// float32(x): how torch turns a Python float scalar into a float32 operand.
inline float round(double x) noexcept {
    return static_cast<float>(x);
}
/// a * b rounded to float32.
inline float mul(float a, float b) noexcept {
    return round(double(a) * double(b));
}
/// a + b rounded to float32.
inline float add(float a, float b) noexcept {
    return round(double(a) + double(b));
}
/// a - b rounded to float32.
inline float sub(float a, float b) noexcept {
    return round(double(a) - double(b));
}
/// a / b rounded to float32.
inline float div(float a, float b) noexcept {
    return round(double(a) / double(b));
}
/// torch's `scalar / tensor` is `tensor.reciprocal() * scalar` (Tensor.__rtruediv__), two
/// roundings, not one division; `1.0 / t` is just the reciprocal.
inline float rdiv(double scalar, float t) noexcept {
    return mul(div(1.0f, t), round(scalar));
}
/// base ** e in float32 with a float32 base: the double pow has < 1 double ulp of error, so the
/// final rounding is the correctly rounded float32 power except within 2^-29 of a tie (torch's
/// own float32 pow is within 1 ulp of that).
inline float pow(float base, float e) noexcept {
    return round(std::pow(double(base), double(e)));
}

ROPEKIT_END_ISA_NAMESPACE
}  // namespace f32
}  // namespace detail
ROPEKIT_END_NAMESPACE
