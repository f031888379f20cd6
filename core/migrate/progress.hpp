// The migration's contract between its parts: the migrator source, the
// outbox_sink, and the CLI's migrate, verify and cleanup. What travels with
// the events, what the sink commits with the rows, and what the checkpoint
// hands back to the source at the next start. README, "Migrating a legacy
// outbox", describes it for users.
//
// Events. Every event of the migrator has position.offset = its legacy id.
// position.partition is "" for rows handed out in id order (the offsets
// rise), and kLatePartition for a row that filled a gap after rows above it
// were already handed out (a late row: migrated out of order, recorded as
// such). The migrator rejects an unmappable row (batch.reject, with the
// mapping's reason) instead of leaving it out: the sink records it.
//
// Gaps. A hole between two legacy ids read in order (not before the first
// row ever read, unless the table was empty at the start: then from 1) is
// an open gap: a row there may still become visible (an
// application that assigns ids itself commits them out of order). The
// source watches open gaps for late rows, holds rows above a new gap back for
// its grace period in follow mode, and closes gaps that stayed empty longer
// than its watch period (or beyond its cap, oldest first). It tells the sink
// its current set of open gaps in the headers of the last event it hands out
// after the set changed: {"cdcflow_gaps":"<gaps_text>"}. The sink commits the
// last set it saw with the rows, and its checkpoint hands it back: one
// position {"", last in-order legacy id} and one per open gap
// {gap_partition(g), g.hi}.
//
// Tables in the target database (outbox_sink creates them; see the DDL):
// progress per migration, one map row per migrated event, one row per
// unmappable legacy row. Retention of the outbox (outbox_source) records how
// far it deleted in cdcflow_outbox_retired, so that verify reports deleted
// events as retired, not missing.
//
// Internal (not installed): include as "migrate/progress.hpp".
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace cdcflow::migrate {

inline constexpr std::string_view kLatePartition = "late";

// Legacy ids lo..hi (inclusive) not seen yet since opened_us (wall clock,
// microseconds: the watch period survives a restart).
struct Gap {
    int64_t lo = 0, hi = 0;
    int64_t opened_us = 0;
    bool operator==(const Gap &) const = default;
};

// "lo:hi@opened_us" joined by ',' ("" for no gaps); ids may be negative.
std::string gaps_text(std::span<const Gap> gaps);
// nullopt for malformed text (lo > hi included).
std::optional<std::vector<Gap>> parse_gaps(std::string_view text);

// The headers that carry a gap set from the source to the sink.
std::string gaps_header(std::span<const Gap> gaps);
// nullopt: `headers` is not a gap header (empty, or some other header);
// malformed gap text inside a gap header is nullopt too.
std::optional<std::vector<Gap>> gaps_from_header(std::string_view headers);

// A gap as a checkpoint position: partition "gap:<lo>@<opened_us>", offset hi.
std::string gap_partition(const Gap &g);
// nullopt: not a gap partition.
std::optional<Gap> gap_from_position(std::string_view partition, int64_t offset);

// Target database tables (CREATE TABLE IF NOT EXISTS; run together with the
// outbox's own DDL, in one transaction).
//
// cdcflow_migration_progress: one row per migration (the outbox_sink's
//   checkpoint_name): the last legacy id handed out in order and committed,
//   the open gaps (gaps_text), running totals (migrated, skipped
//   (unmappable), late), when it started and was last updated.
// cdcflow_migration_map: one row per migrated event: where the sink wrote it
//   (the outbox seq), its legacy id, its checksum (mapping.hpp), whether it
//   was late, and when cleanup deleted its legacy row.
// cdcflow_migration_skipped: one row per unmappable legacy row, with why.
extern const char *const kTargetDdl;
// Outbox database: how far outbox_source's retention deleted (per outbox table).
extern const char *const kRetiredDdl;

} // namespace cdcflow::migrate
