// SPDX-License-Identifier: Apache-2.0
/// \file
/// Closes the diagnostic scope detail/warnings_push.hpp opened (no include guard, see there).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
