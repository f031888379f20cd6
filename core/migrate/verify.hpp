// The migration's integrity report (`cdcflow verify`, README "Migrating a
// legacy outbox"): every legacy row, every map entry and every outbox row
// put in exactly the classes below, read-only on every database.
//
// How it reads (one pass over each table, no per-row query, no per-row
// string): the target's progress, map and skipped rows and the outbox (one
// read transaction when the outbox is in the target database) are loaded
// into flat vectors with ids as 16-byte values; the legacy table is then read
// once in id order and merged with them. About 60 bytes of memory per outbox
// row and per map entry; for a million rows a few seconds.
//
// Internal (not installed): include as "migrate/verify.hpp".
// Thread-safety: one call uses its connections as SQLite allows (one thread).
#pragma once

#include "migrate/mapping.hpp"
#include "migrate/progress.hpp"
#include "migrate/uuid5.hpp"

#include "outbox/schema.hpp"

#include "common/sqlite.hpp"

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace cdcflow::migrate {

// One class of the report: how many, and the first ones by legacy id (and,
// for outbox rows that name no legacy row, by outbox seq).
struct ReportClass {
    uint64_t count = 0;
    std::vector<int64_t> ids;  // legacy ids, ascending, at most the limit
    std::vector<int64_t> seqs; // outbox seqs of rows without a legacy id, at most the limit
};

struct VerifyOptions {
    size_t limit = 10;               // ids (and seqs) listed per class
    bool allow_other_events = false; // the application's own events in the outbox are fine
};

// Where a migration's tables are, and how to read them (from the pipeline's
// migrator and outbox_sink stages).
struct MigrationSpec {
    LegacySchema legacy;
    Uuid ns{};
    outbox::OutboxSchema outbox;
    std::string migration = "legacy-migration"; // the outbox_sink's checkpoint_name
    // The migrator's gap_watch_ms, in microseconds: a persisted open gap
    // older than this is closed (the migrator closed it, and a closed set is
    // committed only with the next migrated row), so a row there is missing,
    // not "not yet migrated". nullopt: the persisted set as it is.
    std::optional<int64_t> gap_watch_us;
};

// Connections to the three databases: `outbox` may be the same Db as
// `target` (the usual case: one read snapshot for both).
struct Databases {
    sqlite::Db &legacy;
    sqlite::Db &target;
    sqlite::Db &outbox;
};

struct VerifyReport {
    std::string migration;
    // The progress point: the last legacy id migrated in order (nullopt: the
    // migration never committed), its open gaps, and how far the outbox's
    // retention deleted (nullopt: never).
    std::optional<int64_t> last_legacy_id;
    std::vector<Gap> open_gaps;
    std::optional<int64_t> retired_up_to;

    uint64_t legacy_rows = 0;
    ReportClass migrated;         // legacy rows (or cleaned ones) whose event is in the outbox
    ReportClass unmappable;       // recorded as unmappable (fine)
    ReportClass missing;          // should have an event or a record and has neither
    ReportClass not_yet;          // above the progress point or in an open gap
    ReportClass unexpected;       // a map entry or a v5 event that matches no legacy row
    ReportClass duplicates;       // an event id in the outbox more than once
    ReportClass order;            // in-order events whose seqs do not rise with the legacy ids
    ReportClass late;             // migrated out of order after a gap filled (fine)
    ReportClass mismatches;       // the event differs from its legacy row (or the map's checksum)
    ReportClass retired;          // deleted by the outbox's retention after commit (fine)
    ReportClass cleaned;          // legacy row deleted by cleanup, its event verified then (fine)
    ReportClass other;            // outbox rows of no migration (the application's own)
    ReportClass other_migrations; // events of another migration into the same outbox (fine)
    // Unmappable rows by reason class (reason_class()).
    std::map<std::string, uint64_t, std::less<>> unmappable_reasons;

    bool allow_other_events = false;
    // Every legacy row migrated intact (or retired or cleaned) or recorded
    // as unmappable, and nothing else wrong.
    bool ok() const;
    // The classes that make it fail, each with its first ids: "2 missing
    // (legacy ids 5, 7); 1 content mismatch (legacy id 9)". "" when ok().
    std::string failure_summary() const;
    // The report for people, several lines, each ending in '\n'.
    std::string text() const;
    // One JSON object (README, "verify --json").
    std::string json() const;
};

// Throws cdcflow::Error (one line, naming the database) when a database
// cannot be read or a table lacks a column; a target without the
// migration's tables reads as a migration that never ran.
VerifyReport verify(Databases dbs, const MigrationSpec &spec, const VerifyOptions &opts);

// Does the legacy table have the spec's columns? Throws cdcflow::Error:
// CDCFLOW_ERR_CONFIG naming the missing table or column (and its config
// key), or the database's own error (locked: CDCFLOW_ERR_RETRY).
void check_legacy(sqlite::Db &legacy, const LegacySchema &schema);

// migrate's quick check: every legacy id at or below the progress point is
// in the map or recorded as unmappable, except those in open gaps (ids only,
// no content). The ids that are not (count and the first `limit`).
ReportClass quick_check(Databases dbs, const MigrationSpec &spec, size_t limit);

// Whether the migration's events were written under `spec.ns`: the newest
// map entry whose outbox row still exists is compared with uuid5(ns, its
// legacy id). "" when it matches or nothing is there to compare; else one
// line naming the legacy id and both event ids. A namespace changed between
// two runs would put the rest of the table under other ids (verify: every
// earlier row missing, every earlier event unexpected).
std::string namespace_mismatch(sqlite::Db &target, const MigrationSpec &spec);

// The target's progress row of a migration (zeros when there is none).
struct Progress {
    bool exists = false;
    std::optional<int64_t> last_legacy_id;
    std::vector<Gap> gaps;
    int64_t migrated = 0, skipped = 0, late = 0;
};
Progress read_progress(sqlite::Db &target, const std::string &migration);

// Counts in the target database: map entries, late ones, and unmappable
// rows by reason class (for migrate's summary before and after a run).
struct TargetCounts {
    uint64_t migrated = 0, late = 0, unmappable = 0;
    std::map<std::string, uint64_t, std::less<>> reasons;
};
TargetCounts count_target(sqlite::Db &target, const std::string &migration);

// Legacy rows with an id above `after` (all of them for nullopt), through
// the id index.
uint64_t count_legacy_after(sqlite::Db &legacy, const LegacySchema &schema, std::optional<int64_t> after);

} // namespace cdcflow::migrate
