// SPDX-License-Identifier: Apache-2.0
/// \file
/// Which instruction set the kernels use, and how an engine chooses.
///
/// Every kernel is a template on an architecture tag `Arch`: an xsimd architecture
/// (`xsimd::sse2`, `xsimd::fma3<xsimd::avx2>`, `xsimd::avx512bw`, ...) or ropekit::scalar_arch.
/// The front doors (functions without an Arch argument) use ropekit::default_arch, which is
/// whatever the *consumer's* compile flags enable (xsimd::default_arch), so a header-only
/// build never executes an instruction the compiler was not told it may use. Engines that ship
/// one binary for several CPUs compile one translation unit per architecture and pick at run
/// time; see examples/runtime_dispatch.
///
/// Define ROPEKIT_NO_SIMD before including ropekit (or build without xsimd) to use the scalar
/// kernels everywhere.
#pragma once

#include "config.hpp"
#include "detail/xsimd_compat.hpp"

ROPEKIT_BEGIN_NAMESPACE

/// Architecture tag for the portable scalar kernels (no xsimd needed).
struct scalar_arch {
    /// Name used in logs and benchmark labels.
    static constexpr const char* name() noexcept { return "scalar"; }
};

#if ROPEKIT_HAS_XSIMD
/// The architecture the front-door functions use: the best one the compile flags enable.
using default_arch = xsimd::default_arch;
#else
/// The architecture the front-door functions use: scalar (no SIMD support compiled in).
using default_arch = scalar_arch;
#endif

/// Name of an architecture tag ("scalar", "sse2", "fma3+avx2", "avx512bw", ...).
template <class Arch>
constexpr const char* arch_name() noexcept {
    return Arch::name();
}

ROPEKIT_END_NAMESPACE
