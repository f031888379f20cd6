// See event_lines.hpp.
#include "event_lines.hpp"

#include "base/text.hpp" // base::append_quoted: one way to quote untrusted bytes in a reason
#include "json_type.hpp" // rules::json_type_name: every reason names JSON types alike

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <utility>

namespace cdcflow::produce {

namespace {

constexpr size_t kReadChunk = size_t{1} << 20;

// The fields of one input line.
enum Field : unsigned { kId, kAggregateType, kAggregateId, kType, kPayload, kTimestamp, kFieldCount };
constexpr std::string_view kFieldNames[kFieldCount] = {"id",   "aggregatetype", "aggregateid",
                                                       "type", "payload",       "timestamp"};

bool type_error(unsigned f, const char *expected, simdjson::dom::element_type got, std::string *why) {
    why->assign(kFieldNames[f]).append(": expected ").append(expected).append(", got ");
    why->append(rules::json_type_name(got));
    return false;
}

} // namespace

// ---- LineReader ------------------------------------------------------------

LineReader::LineReader(int fd) : fd_(fd) {
    grow(4 * kReadChunk);
}

LineReader::Got LineReader::next(std::string_view *line, const std::function<int()> &idle_ms,
                                 const std::function<void()> &idle) {
    for (;;) {
        if (const void *nl = std::memchr(buf_.get() + begin_, '\n', end_ - begin_)) {
            size_t at = static_cast<const char *>(nl) - buf_.get();
            *line = std::string_view(buf_.get() + begin_, at - begin_);
            begin_ = at + 1;
            if (skipping_) {
                skipping_ = false;
                return Got::kTooLong;
            }
            return Got::kLine;
        }
        if (eof_) {
            if (begin_ == end_) return Got::kEnd;
            *line = std::string_view(buf_.get() + begin_, end_ - begin_);
            begin_ = end_;
            if (skipping_) {
                skipping_ = false;
                return Got::kTooLong;
            }
            return Got::kLine;
        }
        // No complete line: make room, then read.
        if (begin_ > 0) {
            std::memmove(buf_.get(), buf_.get() + begin_, end_ - begin_);
            end_ -= begin_;
            begin_ = 0;
        }
        if (end_ == cap_) {
            if (cap_ < kMaxLineBytes + 1) {
                grow(std::min(2 * cap_, kMaxLineBytes + 1));
            } else {
                skipping_ = true; // drop what we have; the rest of the line follows
                end_ = 0;
            }
        }
        if (int ms = idle_ms ? idle_ms() : -1; ms >= 0) {
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, ms) == 0) {
                if (idle) idle();
                continue;
            }
        }
        ssize_t n = ::read(fd_, buf_.get() + end_, std::min(kReadChunk, cap_ - end_));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            error_ = errno;
            return Got::kError;
        }
        if (n == 0) eof_ = true;
        end_ += static_cast<size_t>(n);
    }
}

void LineReader::grow(size_t cap) {
    std::unique_ptr<char[]> bigger(new char[cap + simdjson::SIMDJSON_PADDING]);
    if (buf_) std::memcpy(bigger.get(), buf_.get(), end_);
    std::memset(bigger.get() + cap, 0, simdjson::SIMDJSON_PADDING);
    buf_ = std::move(bigger);
    cap_ = cap;
}

// ---- EventLineParser -------------------------------------------------------

EventLineParser::EventLineParser() {
    if (dom_.allocate(64 * 1024) != simdjson::SUCCESS) throw std::bad_alloc();
}

bool EventLineParser::parse(std::string_view line, OutboxEvent *ev, std::string *why) {
    // A whole-document DOM parse, runtime-dispatched to the CPU's best kernel
    // (simdjson's On Demand API runs the kernel chosen at compile time: the
    // portable fallback in a generic x86-64 build). It validates the whole
    // line and gives the reasons. Grow geometrically, not to each new maximum.
    if (line.size() > dom_.capacity() &&
        dom_.allocate(std::max(line.size(), 2 * dom_.capacity())) != simdjson::SUCCESS)
        throw std::bad_alloc();
    simdjson::dom::element root;
    if (auto err = dom_.parse(line.data(), line.size(), false).get(root)) {
        why->assign("not valid JSON: ").append(simdjson::error_message(err));
        return false;
    }
    simdjson::dom::object obj;
    if (root.get_object().get(obj)) {
        why->assign("not a JSON object (got ").append(rules::json_type_name(root.type())).append(")");
        return false;
    }
    *ev = OutboxEvent();
    unsigned seen = 0;
    size_t index = 0, payload_index = 0;
    for (simdjson::dom::key_value_pair kv : obj) {
        unsigned f = 0;
        while (f < kFieldCount && kv.key != kFieldNames[f])
            ++f;
        if (f == kFieldCount) {
            why->assign("unknown field ");
            base::append_quoted(*why, kv.key, {'"', 60});
            why->append(" (known: id, aggregatetype, aggregateid, type, payload, timestamp)");
            return false;
        }
        if (seen & (1u << f)) {
            why->assign("duplicate field \"").append(kFieldNames[f]).append("\"");
            return false;
        }
        seen |= 1u << f;
        simdjson::dom::element_type t = kv.value.type();
        if ((f == kId || f == kTimestamp) && t == simdjson::dom::element_type::NULL_VALUE) {
            seen &= ~(1u << f); // null: as if absent
        } else if (f == kPayload) {
            if (t != simdjson::dom::element_type::OBJECT) return type_error(f, "a JSON object", t, why);
            payload_index = index;
        } else if (f == kTimestamp) {
            // The writer checks the range (OutboxWriterOptions).
            if (t == simdjson::dom::element_type::UINT64) {
                why->assign("timestamp: ")
                    .append(std::to_string(kv.value.get_uint64().value_unsafe()))
                    .append(" is more than 9223372036854775807 (microseconds since the epoch)");
                return false;
            }
            if (t != simdjson::dom::element_type::INT64)
                return type_error(f, "an integer (microseconds since the epoch)", t, why);
            ev->timestamp_us = kv.value.get_int64().value_unsafe();
        } else {
            if (t != simdjson::dom::element_type::STRING) return type_error(f, "a string", t, why);
            std::string_view s = kv.value.get_string().value_unsafe();
            if (f == kId && s.empty()) {
                why->assign("id: is empty (leave it out to have one generated)");
                return false;
            }
            switch (f) {
            case kId:
                ev->id = s;
                break;
            case kAggregateType:
                ev->aggregate_type = s;
                break;
            case kAggregateId:
                ev->aggregate_id = s;
                break;
            default:
                ev->type = s;
                break;
            }
        }
        ++index;
    }
    for (unsigned f : {kAggregateType, kAggregateId, kType, kPayload})
        if (!(seen & (1u << f))) {
            why->assign("missing field \"").append(kFieldNames[f]).append("\"");
            return false;
        }
    return payload_text(line, payload_index, &ev->payload, why);
}

// The DOM keeps no source offsets, and re-serializing the payload would
// change what the producer wrote (spacing, number spelling), so the payload's
// own bytes come from a second, On Demand pass over the line that the DOM has
// just validated: it only walks to the index-th member. (Measured: this pass
// is not what bounds `produce`; SQLite is, see tools/bench/bench_produce.cpp.)
bool EventLineParser::payload_text(std::string_view line, size_t index, std::string_view *out,
                                   std::string *why) {
    simdjson::ondemand::document doc;
    simdjson::ondemand::object obj;
    auto err = raw_.iterate(line.data(), line.size(), line.size() + simdjson::SIMDJSON_PADDING).get(doc);
    if (!err) err = doc.get_object().get(obj);
    if (!err) {
        size_t i = 0;
        for (auto field : obj) {
            simdjson::ondemand::field kv;
            if ((err = std::move(field).get(kv))) break;
            if (i++ != index) continue; // the iteration skips a member that is not read
            simdjson::ondemand::object payload;
            std::string_view raw;
            if ((err = kv.value().get_object().get(payload)) || (err = payload.raw_json().get(raw))) break;
            // raw_json() runs to the next token: drop the whitespace before it.
            while (!raw.empty() &&
                   (raw.back() == ' ' || raw.back() == '\t' || raw.back() == '\n' || raw.back() == '\r'))
                raw.remove_suffix(1);
            *out = raw;
            return true;
        }
    }
    // Unreachable for a line the DOM parser accepted; said rather than assumed.
    why->assign("not valid JSON: ").append(err ? simdjson::error_message(err) : "payload not found");
    return false;
}

} // namespace cdcflow::produce
