# SPDX-License-Identifier: Apache-2.0
# ctest helper: runs COMMAND (a ;-list) and fails unless it exits with EXPECTED_EXIT and its
# stderr matches EXPECTED_STDERR (a regex). WILL_FAIL alone would also pass a crash.
#   cmake -DCOMMAND="prog;arg" -DEXPECTED_EXIT=2 -DEXPECTED_STDERR="regex" -P ropekitExpectExit.cmake
execute_process(COMMAND ${COMMAND} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc STREQUAL EXPECTED_EXIT)
  message(FATAL_ERROR "expected exit ${EXPECTED_EXIT}, got '${rc}'\nstdout: ${out}\nstderr: ${err}")
endif()
if(DEFINED EXPECTED_STDERR AND NOT err MATCHES "${EXPECTED_STDERR}")
  message(FATAL_ERROR "stderr does not match '${EXPECTED_STDERR}':\n${err}")
endif()
message(STATUS "exit ${rc}, stderr: ${err}")
