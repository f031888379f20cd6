// outbox_source: reads a transactional outbox table (Debezium outbox event
// router columns, DESIGN.md) from SQLite in `seq` order, resumes after the
// sink's checkpoint, and optionally deletes rows once they have been
// committed downstream for a retention period (counted from the commit,
// never from a row's timestamp). See README.md.
//
// Thread-safety: driven by one thread at a time (plugin.h); the connections
// are used only from the thread that currently drives the instance.
#pragma once

#include "commit_timeline.hpp"
#include "common/sqlite.hpp"
#include "outbox/schema.hpp"

#include <cdcflow/sdk.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>

namespace cdcflow::outbox {

class OutboxSource : public cdcflow::Source {
public:
    static constexpr const char *kName = "outbox_source";
    static constexpr const char *kVersion = "1.0.0";
    static constexpr const char *kDescription =
        "reads an SQLite outbox table in seq order (Debezium outbox columns)";
    static constexpr cdcflow_config_key kConfig[] = {
        {"database", CDCFLOW_CONFIG_STRING, nullptr, 1, "path of the SQLite database holding the outbox"},
        // The table's and columns' keys and defaults are the outbox schema's
        // (outbox/schema.hpp), the same as the producer's.
        {"table", CDCFLOW_CONFIG_STRING, kDefaultTable, 0, "outbox table name"},
        {info(Column::kSeq).key, CDCFLOW_CONFIG_STRING, info(Column::kSeq).default_name, 0,
         "source position: INTEGER PRIMARY KEY AUTOINCREMENT (never reused after cleanup)"},
        {info(Column::kId).key, CDCFLOW_CONFIG_STRING, info(Column::kId).default_name, 0, "event id column"},
        {info(Column::kAggregateType).key, CDCFLOW_CONFIG_STRING, info(Column::kAggregateType).default_name,
         0, "aggregate type column"},
        {info(Column::kAggregateId).key, CDCFLOW_CONFIG_STRING, info(Column::kAggregateId).default_name, 0,
         "aggregate id column"},
        {info(Column::kType).key, CDCFLOW_CONFIG_STRING, info(Column::kType).default_name, 0,
         "event type column"},
        {info(Column::kPayload).key, CDCFLOW_CONFIG_STRING, info(Column::kPayload).default_name, 0,
         "JSON payload column"},
        {info(Column::kTimestamp).key, CDCFLOW_CONFIG_STRING, info(Column::kTimestamp).default_name, 0,
         "event time column, microseconds since epoch"},
        {info(Column::kVersion).key, CDCFLOW_CONFIG_STRING, info(Column::kVersion).default_name, 0,
         "optional aggregate version column (INTEGER >= 0 or NULL); the sink then skips an event whose "
         "version "
         "is not above the last one applied for its aggregate. Empty: events carry no version"},
        {"poll_interval_ms", CDCFLOW_CONFIG_INT, "10", 0,
         "when caught up, how often to look for new rows (milliseconds, >= 1)"},
        {"busy_timeout_ms", CDCFLOW_CONFIG_INT, "5000", 0, "SQLite busy timeout for reads (milliseconds)"},
        {"retention_seconds", CDCFLOW_CONFIG_INT, "0", 0,
         "0 keeps every row; else delete a row once it has been committed downstream for this long (counted "
         "from the commit, never from the row's timestamp; a restart counts as the commit again)"},
        {"cleanup_batch", CDCFLOW_CONFIG_INT, "1000", 0, "at most this many rows per cleanup transaction"},
        {"create_schema", CDCFLOW_CONFIG_BOOL, "false", 0,
         "create the outbox table and its id index if missing, and switch the database to WAL (demos, "
         "tests)"},
    };

    OutboxSource(const cdcflow::Config &cfg, cdcflow::Context ctx);

    void start() override;
    void seek(std::span<const cdcflow_position> positions) override;
    cdcflow::PollResult poll(cdcflow::Batch &batch, uint32_t wait_ms) override;
    void committed(std::span<const cdcflow_position> positions) override;
    void stop() override;

    // For tests and metrics: the last seq handed out / known committed.
    int64_t last_seq() const { return last_seq_; }
    int64_t committed_seq() const { return committed_seq_; }

    using Clock = std::chrono::steady_clock;
    // The monotonic clock retention is measured on; tests drive their own.
    void set_clock(std::function<Clock::time_point()> now) { now_ = std::move(now); }

private:
    void open_reader();
    // The config key and message for a missing table or column.
    std::optional<std::pair<const char *, std::string>> missing_column();
    void create_schema();
    void prepare();
    // One short read: appends rows after last_seq_; returns how many.
    uint32_t read_rows(cdcflow::Batch &batch);
    int64_t data_version();
    void maybe_cleanup();
    void update_lag(bool caught_up);

    // Config.
    std::string path_;
    outbox::OutboxSchema schema_; // the table and its column names (no version column: empty name)
    int64_t poll_interval_ms_;
    int64_t busy_timeout_ms_;
    int64_t retention_s_;
    int64_t cleanup_batch_;
    bool create_schema_;

    sqlite::Db reader_; // read-only: every poll
    sqlite::Db writer_; // read-write: only for create_schema / cleanup
    sqlite::Stmt select_;
    sqlite::Stmt data_version_;
    sqlite::Stmt max_seq_;
    sqlite::Stmt cleanup_;

    int64_t last_seq_ = INT64_MIN;      // rows with seq > this are next
    int64_t committed_seq_ = INT64_MIN; // durably committed by the sink
    // When positions became committed (retention counts from there), and
    // the due position up to which the last complete cleanup deleted.
    CommitTimeline commits_;
    int64_t cleaned_upto_ = INT64_MIN;
    std::function<Clock::time_point()> now_ = [] { return Clock::now(); };
    Clock::time_point next_cleanup_{};
    uint32_t cleanup_failures_ = 0;
    Clock::time_point next_lag_probe_{};
    // The next wait between looks while caught up: 1 ms after rows were
    // read, doubling up to poll_interval_ms (see kFirstSlice).
    Clock::duration slice_ = std::chrono::milliseconds(1);
    int64_t max_seq_seen_ = INT64_MIN;

    cdcflow::Metric rows_read_, polls_, cleanup_deleted_, lag_;
};

} // namespace cdcflow::outbox
