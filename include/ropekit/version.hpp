// SPDX-License-Identifier: Apache-2.0
/// \file
/// Library version; CMake parses these three lines, so keep their form.
#pragma once

#define ROPEKIT_VERSION_MAJOR 0
#define ROPEKIT_VERSION_MINOR 3
#define ROPEKIT_VERSION_PATCH 0

/// Version as one integer, `major * 10000 + minor * 100 + patch`.
#define ROPEKIT_VERSION \
    (ROPEKIT_VERSION_MAJOR * 10000 + ROPEKIT_VERSION_MINOR * 100 + ROPEKIT_VERSION_PATCH)
