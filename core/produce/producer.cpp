// See producer.hpp.
#include "producer.hpp"

#include "event_lines.hpp"

#include <string>

namespace cdcflow::produce {

ProduceOutcome produce_lines(int fd, OutboxWriter &writer, const ProduceHooks &hooks) {
    ProduceOutcome out;
    auto report = [&](uint64_t line_no, std::string_view reason) {
        if (hooks.refused) hooks.refused(line_no, reason);
    };
    auto progress = [&] {
        if (hooks.progress_ms >= 0 && hooks.progress) hooks.progress(out.lines, out.refused_here);
    };
    uint64_t first_buffered = 0; // the first line in the writer's buffer (0: empty)
    // A batch could not be written: say exactly which input is in the outbox.
    auto db_failure = [&](const OutboxStatus &st) {
        writer.discard();
        out.end = ProduceOutcome::End::kDbFailure;
        out.db_status = st;
        out.done_through_line = (first_buffered ? first_buffered : out.lines + 1) - 1;
        return out;
    };

    LineReader reader(fd);
    EventLineParser parser;
    OutboxEvent ev;
    std::string why;
    OutboxStatus idle_error;
    // While input pauses: keep the progress line alive and write what is
    // buffered, so that a slow stream's events do not wait for a full batch.
    auto idle = [&] {
        if (writer.metrics().buffered > 0) {
            OutboxStatus st = writer.flush();
            if (st.ok())
                first_buffered = 0;
            else if (idle_error.ok())
                idle_error = st;
        }
        progress();
    };
    auto idle_ms = [&] {
        return hooks.progress_ms >= 0 ? hooks.progress_ms : writer.metrics().buffered > 0 ? kIdleFlushMs : -1;
    };
    for (;;) {
        std::string_view line;
        LineReader::Got got = reader.next(&line, idle_ms, idle);
        if (!idle_error.ok()) return db_failure(idle_error);
        if (got == LineReader::Got::kEnd) break;
        if (got == LineReader::Got::kError) {
            out.end = ProduceOutcome::End::kReadError;
            out.read_errno = reader.error();
            break; // what was accepted is flushed below
        }
        ++out.lines;
        if (got == LineReader::Got::kTooLong) {
            ++out.refused_here;
            report(out.lines, "line longer than 8 MiB");
            continue;
        }
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.find_first_not_of(" \t") == std::string_view::npos) continue; // blank lines are not events
        if (!parser.parse(line, &ev, &why)) {
            ++out.refused_here;
            report(out.lines, why);
            continue;
        }
        ev.tag = out.lines;
        AppendResult r = writer.append(ev);
        if (!r.status.ok()) {
            if (r.status.code() != OutboxStatus::Code::kRefused) return db_failure(r.status);
            report(out.lines, r.status.message());
        } else if (!r.duplicate && first_buffered == 0) {
            first_buffered = out.lines;
        }
        if (!r.flush_status.ok()) return db_failure(r.flush_status);
        if (r.status.ok() && !r.duplicate && writer.metrics().buffered == 0) first_buffered = 0;
        if ((out.lines & 1023) == 0) progress();
    }
    if (OutboxStatus st = writer.flush(); !st.ok()) return db_failure(st);
    return out;
}

} // namespace cdcflow::produce
