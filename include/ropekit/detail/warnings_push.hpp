// SPDX-License-Identifier: Apache-2.0
/// \file
/// Opens the diagnostic scope of a SIMD kernel header; detail/warnings_pop.hpp closes it. No
/// include guard: every kernel header includes the pair around its code (nlohmann's
/// macro_scope / macro_unscope pattern), so the suppression never leaks into user code.
///
/// GCC 12's -Wmaybe-uninitialized fires inside the AVX-512 intrinsics themselves (their
/// `_mm512_undefined_ps()` pass-through operand, GCC PR 105593) wherever xsimd inlines them.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
