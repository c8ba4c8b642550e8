// SPDX-License-Identifier: Apache-2.0
/// \file
/// Umbrella header: everything public in ropekit except the optional config.json reader
/// (ropekit/config_json.hpp, which needs nlohmann/json).
#pragma once

#include "arch.hpp"
#include "attention.hpp"
#include "attention_reference.hpp"
#include "attention_temperature.hpp"
#include "attention_types.hpp"
#include "config.hpp"
#include "error.hpp"
#include "inspect.hpp"
#include "layout.hpp"
#include "mask.hpp"
#include "mrope.hpp"
#include "paged_view.hpp"
#include "position_rules.hpp"
#include "positions.hpp"
#include "rope.hpp"
#include "rope_reference.hpp"
#include "scaling.hpp"
#include "sink_cache.hpp"
#include "storage.hpp"
#include "table.hpp"
#include "version.hpp"
#include "view.hpp"
