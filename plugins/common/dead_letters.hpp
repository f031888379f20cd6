// The sinks' dead-letter table (DESIGN.md, "Dead letters"): every rejected
// event, whole, with the stage that rejected it and why. One DDL and one
// insert for every sink that keeps dead letters (projection_sink, kafka_sink),
// so that two sinks sharing a database never write two different tables
// under one name.
//
// Thread-safety: a DeadLetters belongs to its sink's connection and thread.
#pragma once

#include "common/sqlite.hpp"

#include <cdcflow/plugin.h>

#include <cstdint>
#include <string>

namespace cdcflow::sqlite {

inline constexpr const char *kDeadLettersDdl =
    "CREATE TABLE IF NOT EXISTS dead_letters(seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT, "
    "aggregatetype TEXT, aggregateid TEXT, type TEXT, payload TEXT, source_position TEXT, stage TEXT, "
    "reason TEXT, failed_at INTEGER)";

// The insert, prepared once on the sink's connection and run inside the
// sink's own transaction.
class DeadLetters {
public:
    void prepare(Db &db);
    // Event e (rejected: reject_stage and reject_reason set) as one row,
    // failed_at = now_us. The original bytes are kept exactly: text that is
    // not valid UTF-8 goes in as a BLOB, which every SQLite client reads back
    // as bytes instead of failing to decode it. source_position is the
    // offset alone for a one-partition source (an outbox), else
    // "partition@offset" (Kafka).
    void insert(const cdcflow_event &e, int64_t now_us);
    void reset() { insert_ = {}; }

private:
    Stmt insert_;
    std::string position_text_; // reused: no allocation per dead letter
};

} // namespace cdcflow::sqlite
