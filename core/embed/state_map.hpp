// The state the embedded host reports, from the runtime's (Runtime::state).
//
// The runtime says "starting" whenever its stage threads are not running:
// before the first start, but also between the end of its stage threads and
// the run's end (runtime.cpp: running_ goes false before finished_ is set),
// which a subscriber saw as "running" -> "starting" -> "stopped" at the end
// of every drain. core/src/runtime.* is another engineer's file right now, so
// the host corrects it here: once a run was seen past "starting", it never
// reads "starting" again.
#pragma once

#include <string>

namespace cdcflow::embed {

// `runtime_state` as the host reports it. `*past_starting` remembers (per
// host, under its lock) that the run got past "starting"; `ending`: a drain
// run, or a stop was asked, so stage threads that ended mean the run is
// ending ("draining"); otherwise the runtime is between two attempts of a
// run that goes on ("running").
inline std::string host_state_after(const std::string &runtime_state, bool *past_starting, bool ending) {
    if (runtime_state == "starting" || runtime_state == "idle")
        return *past_starting && runtime_state == "starting" ? (ending ? "draining" : "running")
                                                             : runtime_state;
    // "standby" is not past starting: a standby that takes over starts.
    if (runtime_state != "standby") *past_starting = true;
    return runtime_state;
}

} // namespace cdcflow::embed
