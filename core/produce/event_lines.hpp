// The producer's input: JSON lines, one event each (`cdcflow produce`).
//
//   {"id"?: str, "aggregatetype": str, "aggregateid": str, "type": str, "payload": {...}, "timestamp"?: int}
//
// LineReader cuts a file descriptor into lines; EventLineParser turns one
// line into an OutboxEvent or a one-line reason. Neither writes anything:
// the OutboxWriter checks the event (rules, timestamp range) and writes it.
//
// Thread-safety: one thread per object (both hold reusable buffers).
#pragma once

#include <cdcflow/outbox_writer.hpp>

#include <simdjson.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace cdcflow::produce {

constexpr size_t kMaxLineBytes = size_t{8} << 20; // longer lines are refused (8x the payload limit)

// Lines from a file descriptor, each followed in memory by at least
// SIMDJSON_PADDING readable bytes (so that EventLineParser parses them in
// place). A line longer than kMaxLineBytes is skipped and reported as too
// long. The last line needs no '\n'.
class LineReader {
public:
    explicit LineReader(int fd);

    enum class Got { kLine, kTooLong, kEnd, kError };

    // The next line (without its '\n') in *line, valid until the next call.
    // While no input arrives, idle() is called every idle_ms() milliseconds
    // (asked again each time; -1: just wait for input).
    Got next(std::string_view *line, const std::function<int()> &idle_ms, const std::function<void()> &idle);

    // The errno of the failed read (after Got::kError).
    int error() const { return error_; }

private:
    void grow(size_t cap);

    int fd_;
    std::unique_ptr<char[]> buf_;
    size_t cap_ = 0, begin_ = 0, end_ = 0;
    bool eof_ = false, skipping_ = false;
    int error_ = 0;
};

// Parses one input line into an OutboxEvent. The whole line is validated
// (JSON syntax and UTF-8); the payload is taken as the bytes the producer
// wrote, not re-serialized.
class EventLineParser {
public:
    EventLineParser();

    // On success fills *ev (views into the line and the parser's buffers,
    // valid until the next parse) and returns true; else returns false with
    // a one-line reason in *why, e.g. `missing field "aggregateid"`.
    // REQUIRES: SIMDJSON_PADDING readable bytes after the line (LineReader).
    bool parse(std::string_view line, OutboxEvent *ev, std::string *why);

private:
    bool payload_text(std::string_view line, size_t index, std::string_view *out, std::string *why);

    simdjson::dom::parser dom_;
    simdjson::ondemand::parser raw_; // only finds the payload's own bytes
};

} // namespace cdcflow::produce
