// event_payload (plugin.h, ABI 3): an event's payload parsed as JSON once per
// pipeline. The first stage that asks parses the whole text with simdjson
// On-Demand, checking it as strictly as a DOM parse would (UTF-8, syntax,
// depth, trailing content), and stores the top-level fields as spans into
// the event's own payload bytes; later stages get the stored result.
//
// Thread-safety: one parser per thread; a batch belongs to one stage at a
// time, so its stored results need no lock.
#pragma once

#include "batch.hpp"

#include <cdcflow/plugin.h>

namespace cdcflow::host {

// OK, ERR_NOT_FOUND (index past the batch), ERR_NOMEM. out->struct_size is
// the caller's: only that much of the result is written.
cdcflow_status event_payload(Batch &b, uint32_t index, cdcflow_payload *out);

} // namespace cdcflow::host
