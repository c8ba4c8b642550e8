// SPDX-License-Identifier: Apache-2.0
/// \file
/// Overridable macros: the hot-path assertion and the cold-path throw.
///
/// Kernels never throw: they check preconditions with ROPEKIT_ASSERT, which an engine may
/// define before including any ropekit header (to log, to abort in release builds, or to
/// compile the checks out). Table builders and config readers validate their input and throw
/// ropekit::error through ROPEKIT_THROW; with exceptions disabled that becomes an abort
/// carrying the same message.
#pragma once

#include <cstdio>
#include <cstdlib>

#include "abi.hpp"

#ifndef ROPEKIT_ASSERT
#include <cassert>
/// Precondition check on hot paths. Defaults to `assert` (compiled out under NDEBUG).
/// Define it before including ropekit to route failures elsewhere; `msg` is a string literal.
#define ROPEKIT_ASSERT(cond, msg) assert((cond) && (msg))
#endif

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
#define ROPEKIT_HAS_EXCEPTIONS 1
#else
#define ROPEKIT_HAS_EXCEPTIONS 0
#endif

#ifndef ROPEKIT_THROW
#if ROPEKIT_HAS_EXCEPTIONS
/// Raises a validation failure. `x` is a ropekit::error.
#define ROPEKIT_THROW(x) throw x
#else
#define ROPEKIT_THROW(x) \
    (std::fprintf(stderr, "ropekit: %s\n", (x).what()), std::fflush(stderr), std::abort())
#endif
#endif

#ifndef ROPEKIT_TRACE_KERNEL
/// Called on entry to every architecture-explicit kernel with the kernel's name and its
/// architecture's name (both string literals or `Arch::name()`): a hook for profilers and for
/// tests that check which kernel an engine's call reached (tests/abi). Empty by default. An
/// engine that defines it must define it identically in every translation unit (it becomes part
/// of the kernels' code).
#define ROPEKIT_TRACE_KERNEL(kernel_name, arch_name) ((void)0)
#endif

#if defined(__GNUC__) || defined(__clang__)
#define ROPEKIT_RESTRICT __restrict__
#define ROPEKIT_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ROPEKIT_RESTRICT
#define ROPEKIT_ALWAYS_INLINE inline
#endif

/// Unrolls the loop that follows completely. For loops with a compile-time trip count over the
/// register tiles of the micro-kernels: their accumulator arrays live in registers only once
/// every loop that indexes them is unrolled. GCC unrolls them at -O3 but not at -O2, where the
/// arrays went to the stack and the attention kernels ran 2.6x (prefill) to 3.7x (decode)
/// slower; the pragma makes the kernels independent of the engine's optimisation level.
#if defined(__clang__)
#define ROPEKIT_UNROLL _Pragma("unroll")
#elif defined(__GNUC__) && __GNUC__ >= 8
#define ROPEKIT_UNROLL _Pragma("GCC unroll 64")
#else
#define ROPEKIT_UNROLL
#endif
