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
#include "outbox/schema.hpp"

#include <cdcflow/sdk.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>

namespace cdcflow::outbox {

// The stage's config: each key named once, bound to the member it fills
// (cdcflow/sdk.hpp, "Declared config"); the host enforces types and bounds.
struct OutboxSourceSettings {
    std::string database;
    std::string table, seq_column, id_column, aggregate_type_column, aggregate_id_column, type_column,
        payload_column, timestamp_column, version_column;
    int64_t poll_interval_ms = 10;
    int64_t busy_timeout_ms = 5000;
    int64_t retention_seconds = 0;
    int64_t cleanup_batch = 1000;
    bool create_schema = false;

    using S = OutboxSourceSettings;
    static constexpr auto kParams = cdcflow::params(
        cdcflow::param("database", &S::database)
            .required()
            .describe("path of the application's SQLite database holding the outbox"),
        cdcflow::param("table", &S::table).defaults_to(kDefaultTable).describe("outbox table name"),
        cdcflow::param("seq_column", &S::seq_column)
            .defaults_to(info(Column::kSeq).default_name)
            .describe("source position: INTEGER PRIMARY KEY AUTOINCREMENT (never reused after cleanup)"),
        cdcflow::param("id_column", &S::id_column)
            .defaults_to(info(Column::kId).default_name)
            .describe("event id column"),
        cdcflow::param("aggregate_type_column", &S::aggregate_type_column)
            .defaults_to(info(Column::kAggregateType).default_name)
            .describe("aggregate type column"),
        cdcflow::param("aggregate_id_column", &S::aggregate_id_column)
            .defaults_to(info(Column::kAggregateId).default_name)
            .describe("aggregate id column"),
        cdcflow::param("type_column", &S::type_column)
            .defaults_to(info(Column::kType).default_name)
            .describe("event type column"),
        cdcflow::param("payload_column", &S::payload_column)
            .defaults_to(info(Column::kPayload).default_name)
            .describe("JSON payload column"),
        cdcflow::param("timestamp_column", &S::timestamp_column)
            .defaults_to(info(Column::kTimestamp).default_name)
            .describe("event time column, microseconds since epoch"),
        cdcflow::param("version_column", &S::version_column)
            .defaults_to(info(Column::kVersion).default_name)
            .describe(
                "optional aggregate version column (INTEGER >= 0 or NULL); the sink then skips an event "
                "whose version is not above the last one applied for its aggregate. Empty: events carry "
                "no version"),
        cdcflow::param("poll_interval_ms", &S::poll_interval_ms)
            .defaults_to("10")
            .min("1")
            .max("60000")
            .describe("when caught up, how often to look for new rows (milliseconds)"),
        cdcflow::param("busy_timeout_ms", &S::busy_timeout_ms)
            .defaults_to("5000")
            .min("0")
            .max("3600000")
            .describe("SQLite busy timeout for reads (milliseconds)"),
        // The upper bound (a century) keeps seconds(retention_seconds) far from overflowing.
        cdcflow::param("retention_seconds", &S::retention_seconds)
            .defaults_to("0")
            .min("0")
            .max("3162240000")
            .describe(
                "0 keeps every row; else delete a row once it has been committed downstream for this "
                "long (counted from the commit, never from the row's timestamp; a restart counts as the "
                "commit again)"),
        cdcflow::param("cleanup_batch", &S::cleanup_batch)
            .defaults_to("1000")
            .min("1")
            .describe("at most this many rows per cleanup transaction"),
        cdcflow::param("create_schema", &S::create_schema)
            .defaults_to("false")
            .describe("create the outbox table and its id index if missing, and switch the database to WAL "
                      "(demos, tests)"));

    // The column keys in the outbox schema's order (outbox/schema.hpp): the
    // schema module owns the keys' names and defaults, these members hold
    // what the pipeline set.
    static constexpr std::string S::*kColumnMembers[kColumnCount] = {
        &S::seq_column,  &S::id_column,      &S::aggregate_type_column, &S::aggregate_id_column,
        &S::type_column, &S::payload_column, &S::timestamp_column,      &S::version_column};
};

// The keys this stage declares are the schema module's, in its order.
static_assert([] {
    for (size_t i = 0; i < kColumnCount; ++i)
        if (std::string_view(cdcflow::key_of(OutboxSourceSettings::kColumnMembers[i])) != kColumns[i].key)
            return false;
    return std::string_view(cdcflow::key_of(&OutboxSourceSettings::table)) == "table";
}());

class OutboxSource : public cdcflow::Source {
public:
    static constexpr const char *kName = "outbox_source";
    static constexpr const char *kVersion = "1.0.0";
    static constexpr const char *kDescription =
        "reads an SQLite outbox table in seq order (Debezium outbox columns)";
    using Settings = OutboxSourceSettings;

    OutboxSource(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx);

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
    // The config key (its member) and message for the first missing table or column.
    std::optional<std::pair<std::string Settings::*, std::string>> missing_column();
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
    // The highest seq the next cleanup deletes (its bounds), and the upsert
    // of cdcflow_outbox_retired in the same transaction (see maybe_cleanup).
    sqlite::Stmt cleanup_top_;
    sqlite::Stmt retired_;
    bool retired_table_ = false; // cdcflow_outbox_retired exists (created on the first cleanup)
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
    cdcflow::Metric unread_; // the host's cdcflow_source_lag_events{partition=""} (ABI 4)
};

} // namespace cdcflow::outbox
