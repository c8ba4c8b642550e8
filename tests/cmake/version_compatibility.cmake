cmake_minimum_required(VERSION 3.14)
# Loads the installed ropekitConfigVersion.cmake the way find_package does and checks the 0.x
# rule: find_package(ropekit MAJOR.MINOR) accepts this release; the minor before and after do
# not (a minor version may break the API while the major version is 0); from 1.0 on, only the
# major version must match.
foreach(_var VERSION_FILE MAJOR MINOR PATCH)
  if(NOT DEFINED ${_var})
    message(FATAL_ERROR "version_compatibility.cmake: -D${_var}=... is required")
  endif()
endforeach()
if(NOT EXISTS "${VERSION_FILE}")
  message(FATAL_ERROR "no version file at ${VERSION_FILE}")
endif()

# find_package sets these before including the file; CMAKE_SIZEOF_VOID_P is unset in -P mode,
# which ARCH_INDEPENDENT version files do not read.
function(check_request want_major want_minor expect)
  set(PACKAGE_FIND_NAME ropekit)
  set(PACKAGE_FIND_VERSION "${want_major}.${want_minor}")
  set(PACKAGE_FIND_VERSION_MAJOR ${want_major})
  set(PACKAGE_FIND_VERSION_MINOR ${want_minor})
  set(PACKAGE_FIND_VERSION_PATCH 0)
  set(PACKAGE_FIND_VERSION_COUNT 2)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
  include("${VERSION_FILE}")
  if(expect AND NOT PACKAGE_VERSION_COMPATIBLE)
    message(FATAL_ERROR "find_package(ropekit ${PACKAGE_FIND_VERSION}) rejects ${PACKAGE_VERSION}")
  elseif(NOT expect AND PACKAGE_VERSION_COMPATIBLE)
    message(FATAL_ERROR "find_package(ropekit ${PACKAGE_FIND_VERSION}) accepts ${PACKAGE_VERSION}")
  endif()
  message(STATUS "find_package(ropekit ${PACKAGE_FIND_VERSION}) vs ${PACKAGE_VERSION}: "
                 "compatible=${PACKAGE_VERSION_COMPATIBLE} (expected ${expect})")
endfunction()

check_request(${MAJOR} ${MINOR} TRUE)
math(EXPR _next "${MINOR} + 1")
if(MAJOR EQUAL 0)
  check_request(0 ${_next} FALSE)
  if(MINOR GREATER 0)
    math(EXPR _prev "${MINOR} - 1")
    check_request(0 ${_prev} FALSE)
  endif()
else()
  check_request(${MAJOR} 0 TRUE)
  math(EXPR _next_major "${MAJOR} + 1")
  check_request(${_next_major} 0 FALSE)
endif()
