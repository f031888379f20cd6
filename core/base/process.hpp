// The process's own resource figures, read from /proc: the one place the
// host (the soft memory limit) and the process metrics
// (process_resident_memory_bytes) read them from, so that both report the
// same number.
//
// Internal (not installed). Thread-safety: every function may be called
// from any thread.
#pragma once

#include <cstdint>

namespace cdcflow::base {

// Resident memory of this process in bytes (/proc/self/statm's resident
// pages x the page size): what the kernel counts against a memory limit,
// shared library pages included. 0 when it cannot be read (no /proc). One
// open/read/close: cheap enough for a few calls a second, not per event.
uint64_t resident_bytes() noexcept;

} // namespace cdcflow::base
