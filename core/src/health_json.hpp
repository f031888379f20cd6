// The bodies of /health and /ready, rendered from one HealthReport: one
// place for the JSON a host's endpoints answer, so that the CLI's server and
// an embedding application serve the same document.
//
// Thread-safety: pure functions.
#pragma once

#include "runtime.hpp"

#include <string>

namespace cdcflow::host {

// /health: {"pipeline","state","role","healthy","ready","owner" (standby
// only),"last_error" (when set),"stages":[{"id","plugin","kind","state",
// "breaker","retries","breaker_trips","last_error","last_error_at" (when
// set)}],"events","applied","rejected","duplicates","dropped","batches"}.
// Text from the store or a plugin (an owner, an error) is never allowed to
// break the JSON: invalid UTF-8 is replaced (U+FFFD).
std::string health_json(const HealthReport &h);

// Why /ready answers 503, "" when ready: "standby: <owner>", "starting",
// "stopping", "failed: <error>", "breaker open: stage '<id>'".
std::string ready_reason(const HealthReport &h);

// /ready: {"ready":true} or {"ready":false,"reason":ready_reason(h)}.
std::string ready_json(const HealthReport &h);

} // namespace cdcflow::host
