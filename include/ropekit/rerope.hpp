// SPDX-License-Identifier: Apache-2.0
/// \file
/// Compatibility header: ReRoPE and Leaky ReRoPE now live in position_rules.hpp with the other
/// relative-position rules (Self-Extend, StreamingLLM). Include that instead.
#pragma once

#include "position_rules.hpp"
