// migrator: a source that reads a legacy outbox table (DESIGN.md, "The legacy
// outbox") in id order and hands each row to the pipeline as a CDC outbox
// event (core/migrate/mapping.hpp), for outbox_sink to write into the CDC
// outbox. It only ever reads the application's database (read-only
// connection). It watches holes in the ids (gaps) for rows an application
// commits out of order, holds live rows behind a fresh gap back for a grace
// period, and hands a row that fills a gap late on partition "late"; the gap
// contract with the sink is core/migrate/progress.hpp's. See README.md.
//
// Thread-safety: driven by one thread at a time (plugin.h); the connection is
// used only from the thread that currently drives the instance.
#pragma once

#include "common/sqlite.hpp"
#include "migrate/mapping.hpp"
#include "migrate/progress.hpp"
#include "migrate/uuid5.hpp"

#include <cdcflow/sdk.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace cdcflow::migrate {

// The stage's config (cdcflow/sdk.hpp, "Declared config"); the host enforces
// types and bounds.
struct MigratorSettings {
    std::string database;
    std::string table, id_column, topic_column, key_column, type_column, body_column, created_at_column;
    std::string ns; // "namespace" (a C++ keyword)
    int64_t poll_interval_ms = 100;
    int64_t busy_timeout_ms = 5000;
    int64_t gap_grace_ms = 5000;
    int64_t gap_watch_ms = 600000;
    int64_t max_open_gaps = 1000;
    std::string cleanup_older_than;

    using S = MigratorSettings;
    static constexpr auto kParams = cdcflow::params(
        cdcflow::param("database", &S::database)
            .required()
            .describe(
                "path of the application's SQLite database holding the legacy outbox (opened read-only)"),
        cdcflow::param("table", &S::table).defaults_to(kDefaultLegacyTable).describe("legacy outbox table"),
        cdcflow::param("id_column", &S::id_column)
            .defaults_to(kLegacyColumns[0].default_name)
            .describe("legacy message id: an integer key, read in ascending order (the event's position)"),
        cdcflow::param("topic_column", &S::topic_column)
            .defaults_to(kLegacyColumns[1].default_name)
            .describe("becomes the event's aggregate type"),
        cdcflow::param("key_column", &S::key_column)
            .defaults_to(kLegacyColumns[2].default_name)
            .describe("becomes the event's aggregate id"),
        cdcflow::param("type_column", &S::type_column)
            .defaults_to(kLegacyColumns[3].default_name)
            .describe("becomes the event type"),
        cdcflow::param("body_column", &S::body_column)
            .defaults_to(kLegacyColumns[4].default_name)
            .describe("becomes the payload, as written (not parsed)"),
        cdcflow::param("created_at_column", &S::created_at_column)
            .defaults_to(kLegacyColumns[5].default_name)
            .describe("ISO 8601 date (no zone: UTC); becomes the event timestamp"),
        cdcflow::param("namespace", &S::ns)
            .defaults_to(kDefaultNamespace)
            .describe("UUID namespace of the event ids: uuid5(namespace, \"<legacy id>\"); a second legacy "
                      "table migrated into the same outbox needs its own"),
        cdcflow::param("poll_interval_ms", &S::poll_interval_ms)
            .defaults_to("100")
            .min("1")
            .max("60000")
            .describe("when caught up, how often to look for new rows; also the most often open gaps are "
                      "probed for late rows (milliseconds)"),
        cdcflow::param("busy_timeout_ms", &S::busy_timeout_ms)
            .defaults_to("5000")
            .min("0")
            .max("3600000")
            .describe(
                "SQLite busy timeout for reads (milliseconds); still locked after it: the host retries"),
        cdcflow::param("gap_grace_ms", &S::gap_grace_ms)
            .defaults_to("5000")
            .min("0")
            .max("3600000")
            .describe("rows above a new gap in ids written since the start are held back this long, so that "
                      "a row committed out of order still goes out in order (0: never hold back)"),
        cdcflow::param("gap_watch_ms", &S::gap_watch_ms)
            .defaults_to("600000")
            .min("0")
            .max("31622400000")
            .describe("an open gap is watched this long for a late row, then closed (milliseconds, wall "
                      "clock from when it opened, across restarts)"),
        cdcflow::param("max_open_gaps", &S::max_open_gaps)
            .defaults_to("1000")
            .min("0")
            .max("1000000")
            .describe("at most this many gaps are watched; beyond it the oldest are closed"),
        cdcflow::param("cleanup_older_than", &S::cleanup_older_than)
            .defaults_to("")
            .describe(
                "`cdcflow migrate --cleanup` deletes migrated, verified legacy rows whose created_at is "
                "older than this (30d, 12h, 90m; empty: only with --older-than)"));

    // The column keys in LegacyColumn order (migrate/mapping.hpp): the mapping
    // module owns the keys' names and defaults.
    static constexpr std::string S::*kColumnMembers[kLegacyColumnCount] = {
        &S::id_column,   &S::topic_column, &S::key_column,
        &S::type_column, &S::body_column,  &S::created_at_column};
};

static_assert([] {
    for (size_t i = 0; i < kLegacyColumnCount; ++i)
        if (std::string_view(cdcflow::key_of(MigratorSettings::kColumnMembers[i])) != kLegacyColumns[i].key)
            return false;
    return true;
}());

class Migrator : public cdcflow::Source {
public:
    static constexpr const char *kName = "migrator";
    static constexpr const char *kVersion = "1.0.0";
    static constexpr const char *kDescription =
        "reads a legacy outbox table in id order as CDC outbox events (UUIDv5 ids), watching gaps in the ids";
    using Settings = MigratorSettings;

    Migrator(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx);

    void start() override;
    // "" is the last legacy id handed out in order; gap positions
    // (progress.hpp) restore the open gaps.
    void seek(std::span<const cdcflow_position> positions) override;
    cdcflow::PollResult poll(cdcflow::Batch &batch, uint32_t wait_ms) override;
    void stop() override;

    // For tests.
    int64_t last_id() const { return last_; }
    const std::vector<Gap> &gaps() const { return gaps_; }
    bool holding() const { return hold_.has_value(); }
    int64_t start_max() const { return start_max_; }

    using Clock = std::chrono::steady_clock;
    // The monotonic clock of the grace period and of the rate limits, and
    // the wall clock of gap ages (microseconds); tests drive their own.
    void set_clocks(std::function<Clock::time_point()> now, std::function<int64_t()> wall_us) {
        now_ = std::move(now);
        wall_us_ = std::move(wall_us);
    }

private:
    // Rows above a hole that opened above start_max_ (the application is
    // writing) wait for up to gap_grace_ms: `above` is the first row held.
    struct Hold {
        int64_t above = 0;
        Clock::time_point since{};
    };
    enum class CloseWhy : uint8_t { kExpired, kOverCap };

    void open_reader();
    void warn_view(const cdcflow::Context &ctx);
    // Whether the id column was found to be a key (create(), or start() when
    // create() found the database locked).
    bool key_checked_ = false;
    std::string where() const; // "database '/path'"
    // One pass: gap upkeep, late rows, then rows in order. Appends to the
    // batch; returns how many events were appended.
    uint32_t fill(cdcflow::Batch &batch);
    uint32_t read_in_order(cdcflow::Batch &batch);
    uint32_t read_late(cdcflow::Batch &batch);
    // Appends the row `st` is on as an event (rejected with the mapping's
    // reason when it is unmappable); false when the batch is full.
    bool append_row(sqlite::Stmt &st, cdcflow::Batch &batch, bool late);
    void open_gap(int64_t lo, int64_t hi);
    void close_gaps(); // expired ones, then beyond max_open_gaps
    void note_closed(CloseWhy why, const Gap &g);
    void flush_close_warnings(bool force);
    int64_t data_version();
    void update_lag(bool caught_up);
    // How long the current hold still lasts (<= 0: over).
    Clock::duration hold_remaining() const;

    // Config.
    std::string path_;
    LegacySchema schema_;
    Uuid ns_{};
    int64_t poll_interval_ms_;
    int64_t busy_timeout_ms_;
    int64_t gap_grace_ms_;
    int64_t gap_watch_ms_;
    int64_t max_open_gaps_;

    sqlite::Db reader_; // read-only: the application's database is never written
    sqlite::Stmt select_, select_first_;
    sqlite::Stmt probe_; // rows inside one gap
    sqlite::Stmt data_version_;
    sqlite::Stmt max_id_;

    // Reading position: rows with id > last_ are next; INT64_MIN before the
    // first row ever read (no gap opens below the first row).
    int64_t last_ = INT64_MIN;
    bool have_last_ = false;
    // The highest id when the source started: holes below it are historical
    // (deleted rows) and hold nothing back.
    int64_t start_max_ = INT64_MIN;
    std::vector<Gap> gaps_;   // open gaps, ascending lo, disjoint, all below last_
    bool gaps_dirty_ = false; // the set changed since an event last carried it
    std::optional<Hold> hold_;
    int64_t held_rows_ = 0;
    // The last in-order read stopped with rows left (a full batch, or a hold).
    bool more_ = false;

    // Saved at the start of a poll: a failed poll is read again in full.
    int64_t saved_last_ = INT64_MIN;
    bool saved_have_last_ = false;
    std::vector<Gap> saved_gaps_;
    bool saved_dirty_ = false;
    std::optional<Hold> saved_hold_;
    int64_t saved_gap_check_version_ = -1;

    Clock::time_point next_gap_check_{};
    int64_t gap_check_version_ = -1; // data_version at the last complete gap probe
    Clock::time_point next_lag_probe_{};
    // The application deleted its newest rows (max(id) fell below last_):
    // SQLite gives those ids to its next messages, whose event ids are taken
    // by the migrated ones, so they cannot be migrated. top_low_ is the
    // lowest max(id) seen below last_ (INT64_MAX: none); check_top() says it
    // when it happens and names the ids when they are written again.
    void check_top();
    int64_t top_low_ = INT64_MAX;
    int64_t max_id_seen_ = INT64_MIN;
    Clock::duration slice_ = std::chrono::milliseconds(1);

    // Closed gaps are warned about once per class (expired, over the cap),
    // then summed up at most once a minute; holes among the rows that
    // existed at the start are only an info line, once.
    struct CloseLog {
        bool warned = false;
        bool told_historical = false;
        int64_t pending = 0; // closed since the last line
        int64_t live = 0;    // of them, gaps above start_max_
        Gap first{};
        Clock::time_point next_line{};
    };
    CloseLog close_log_[2];

    std::function<Clock::time_point()> now_ = [] { return Clock::now(); };
    std::function<int64_t()> wall_us_;

    // Reused per row: no allocation in the steady state.
    std::string reason_;
    MappedEvent mapped_{};
    std::vector<Gap> scratch_gaps_;
    std::string header_;

    cdcflow::Metric rows_read_, unmappable_, open_gaps_, late_rows_, held_back_, gaps_closed_;
    cdcflow::Metric lag_; // the host's cdcflow_source_lag_events{partition=""} (ABI 4)
};

} // namespace cdcflow::migrate
