// `cdcflow status`: a readable summary of a running host from its /health
// and /metrics endpoints (see README, "Command line").
#pragma once

#include "http/address.hpp"

#include <cstdint>
#include <optional>

namespace cdcflow::cli {

struct StatusOptions {
    http::Address addr;
    bool watch = false;               // refresh until SIGINT/SIGTERM
    std::optional<double> interval_s; // between readings (rates); watch default 1 s
    bool metrics = false;             // also print the raw /metrics page
    uint32_t timeout_ms = 3000;       // each request's whole deadline
};

// Exit codes: 0 healthy, 1 /health answered 503, 2 the host cannot be
// reached (or does not answer as a cdcflow host). --watch: 0 when ended by
// SIGINT/SIGTERM.
int run_status(const StatusOptions &o);

} // namespace cdcflow::cli
