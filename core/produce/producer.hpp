// The loop of `cdcflow produce`: JSON lines from a file descriptor into an
// OutboxWriter (event_lines.hpp reads and parses, the writer checks, dedupes
// and writes in batched transactions). The command line, the progress line
// and the exit codes are the CLI's (tools/cdcflow/produce.cpp);
// tools/bench/bench_produce.cpp runs this same loop.
#pragma once

#include <cdcflow/outbox_writer.hpp>

#include <cstdint>
#include <functional>
#include <string_view>

namespace cdcflow::produce {

constexpr int kIdleFlushMs = 200; // input paused this long: write what is buffered (tail -f | produce)

struct ProduceHooks {
    // A line that is not written (not JSON, a missing field, refused by the
    // writer's checks), with a one-line reason. Lines are numbered from 1.
    // (What the database itself refuses while a batch is written reaches
    // OutboxWriterOptions::on_refused, with the line number as the event's tag.)
    std::function<void(uint64_t line_no, std::string_view reason)> refused;
    // Called every progress_ms while input pauses and every 1024 lines, when
    // progress_ms >= 0: `lines` read so far, `refused_here` refused before
    // reaching the writer.
    std::function<void(uint64_t lines, uint64_t refused_here)> progress;
    int progress_ms = -1;
};

struct ProduceOutcome {
    enum class End {
        kDone,      // end of input; everything accepted is written
        kReadError, // the input could not be read (read_errno); what was accepted is written
        kDbFailure, // a batch could not be written (db_status); see done_through_line
    };
    End end = End::kDone;
    uint64_t lines = 0;        // lines read
    uint64_t refused_here = 0; // lines refused before reaching the writer (not in its metrics)
    int read_errno = 0;
    OutboxStatus db_status;
    // kDbFailure: the input up to this line is done (written, a duplicate or
    // refused); the next line and all after it are not written (the writer's
    // buffer is discarded, so that it does not write them later after all).
    uint64_t done_through_line = 0;
};

// Reads `fd` to its end (or to the first database failure), appending each
// event line to `writer`, and flushes. Blank lines are not events; a '\r'
// before the '\n' is dropped.
ProduceOutcome produce_lines(int fd, OutboxWriter &writer, const ProduceHooks &hooks);

} // namespace cdcflow::produce
