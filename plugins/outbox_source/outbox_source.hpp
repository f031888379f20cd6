// outbox_source: reads a transactional outbox table (Debezium outbox event
// router columns, DESIGN.md) from SQLite in `seq` order, resumes after the
// sink's checkpoint, and optionally deletes rows once they have been
// committed downstream for a retention period (counted from the commit,
// never from a row's timestamp). It replays (ABI 3) the rows up to the
// checkpoint that the pipeline's stateful transforms need to rebuild their
// state, and its retention never deletes those. See README.md.
//
// Thread-safety: driven by one thread at a time (plugin.h); the connections
// are used only from the thread that currently drives the instance.
#pragma once

#include "commit_timeline.hpp"
#include "common/sqlite.hpp"

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
        {"table", CDCFLOW_CONFIG_STRING, "outbox", 0, "outbox table name"},
        {"seq_column", CDCFLOW_CONFIG_STRING, "seq", 0,
         "source position: INTEGER PRIMARY KEY AUTOINCREMENT (never reused after cleanup)"},
        {"id_column", CDCFLOW_CONFIG_STRING, "id", 0, "event id column"},
        {"aggregate_type_column", CDCFLOW_CONFIG_STRING, "aggregatetype", 0, "aggregate type column"},
        {"aggregate_id_column", CDCFLOW_CONFIG_STRING, "aggregateid", 0, "aggregate id column"},
        {"type_column", CDCFLOW_CONFIG_STRING, "type", 0, "event type column"},
        {"payload_column", CDCFLOW_CONFIG_STRING, "payload", 0, "JSON payload column"},
        {"timestamp_column", CDCFLOW_CONFIG_STRING, "timestamp", 0,
         "event time column, microseconds since epoch"},
        {"version_column", CDCFLOW_CONFIG_STRING, "", 0,
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
    // The newest req.max_events rows up to the checkpoint (partition ""),
    // oldest first, one batch per call; true once they are all handed out.
    // Sets req.truncated when retention (or anyone) deleted rows that were
    // asked for. Remembers max_events: retention keeps that many rows.
    bool replay(cdcflow_replay &req, cdcflow::Batch &batch);
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
    // The config key and message for the first missing table or column.
    std::optional<std::pair<const char *, std::string>> missing_column();
    void create_schema();
    void prepare();
    // "SELECT <the event columns> FROM <table>": shared by poll and replay.
    std::string select_columns() const;
    // Appends the row `st` is on; false when the batch is full. A bad
    // version is rejected when `reject_bad_version`, else read as none.
    bool append_row(sqlite::Stmt &st, cdcflow::Batch &batch, bool reject_bad_version);
    // One short read: appends rows after last_seq_; returns how many.
    uint32_t read_rows(cdcflow::Batch &batch);
    // The first replay call: where the replay starts (one indexed query).
    // False when there is nothing to replay.
    bool begin_replay(cdcflow_replay &req, int64_t checkpoint);
    int64_t data_version();
    void maybe_cleanup();
    void update_lag(bool caught_up);

    // Config.
    std::string path_;
    std::string table_;
    std::string seq_col_, id_col_, agg_type_col_, agg_id_col_, type_col_, payload_col_, ts_col_;
    std::string version_col_; // empty: none
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
    sqlite::Stmt replay_select_; // set while a replay is under way

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
    // Replay: rows with replay_after_ < seq <= replay_upto_ are next.
    int64_t replay_after_ = 0, replay_upto_ = 0;
    // The most history any replay asked for: retention keeps at least this
    // many committed rows, so that the next start can replay them.
    uint64_t keep_rows_ = 0;

    cdcflow::Metric rows_read_, polls_, cleanup_deleted_, lag_, replayed_;
};

} // namespace cdcflow::outbox
