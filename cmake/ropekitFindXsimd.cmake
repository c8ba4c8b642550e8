# SPDX-License-Identifier: Apache-2.0
# Finds xsimd >= 8.1 of any major version and sets ropekit_xsimd_FOUND.
#
# No version in the find_package call: xsimd's ConfigVersion is SameMajorVersion, so asking for
# 8.1 would reject 13 or 14. The lower bound is checked here instead.
#
# Debian 12's xsimd 8.1 export lists a bare `xtl` in its link interface (xsimd's optional xtl
# support) without finding xtl, so a consumer links `-lxtl` and fails. Give that name a target:
# xtl's own if it is installed, an empty one otherwise (ropekit does not use xtl).
set(ropekit_xsimd_FOUND OFF)
find_package(xsimd CONFIG QUIET)
if(xsimd_FOUND AND xsimd_VERSION VERSION_GREATER_EQUAL 8.1)
  set(ropekit_xsimd_FOUND ON)
  get_target_property(_ropekit_xsimd_links xsimd INTERFACE_LINK_LIBRARIES)
  if(_ropekit_xsimd_links AND "xtl" IN_LIST _ropekit_xsimd_links AND NOT TARGET xtl)
    find_package(xtl CONFIG QUIET)
    if(NOT TARGET xtl)
      add_library(xtl INTERFACE IMPORTED GLOBAL)
    endif()
  endif()
endif()
