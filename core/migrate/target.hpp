// A migration pipeline's databases and its reads around a run, for the two
// that migrate and verify: `cdcflow migrate` / `cdcflow verify` (tools/cdcflow)
// and the embedded host (core/embed, Host::migrate / Host::verify). Moved
// out of the CLI so that both read the same pipeline the same way.
//
// Internal (not installed): include as "migrate/target.hpp".
// Thread-safety: plain functions; each opens its own connections.
#pragma once

#include "migrate/verify.hpp"

#include "pipeline.hpp"

#include <cdcflow/status.hpp>

#include <chrono>
#include <functional>
#include <string>

namespace cdcflow::migrate {

// Where the migration's databases are, from the checked pipeline.
struct Target {
    MigrationSpec spec;
    std::string legacy_db;
    std::string target_db; // the outbox's database too
    std::string cleanup_older_than;
    std::string older_than_at; // "file:line:col" of the key, for messages
};

// The migration's stages (the first migrator and outbox_sink). An error
// (kConfig, exit 3) names the file.
Result<Target> target_of(const host::PipelineDef &def);

// Read-only opens never create a file; a missing one is named (Error, I/O).
sqlite::Db open_db(const std::string &path, bool write);

// The databases, opened as a command needs them. The outbox is the
// target's connection (one snapshot).
struct Connections {
    sqlite::Db legacy, target;
    Databases dbs() { return {legacy, target, target}; }
};
Connections open_all(const Target &t, bool write);

// "3, 7, 9, ..." (the ellipsis when `count` is more than listed).
std::string ids_list(const std::vector<int64_t> &ids, uint64_t count);

// How long the reads before and after a run wait for a locked database
// (the application, another migrate), as cleanup's transactions do.
constexpr std::chrono::milliseconds kLockPatience = std::chrono::minutes(2);

// Before a run: the legacy rows still to migrate, and the target's counts
// and progress. `mismatch` non-empty: the target was migrated under another
// namespace (going on would migrate the rest under other event ids).
// Throws Error (one line) when a database cannot be read.
struct BeforeRun {
    uint64_t total = 0;
    TargetCounts counts;
    Progress progress;
    std::string mismatch;
};
BeforeRun read_before(const Target &t, const std::function<void(const std::string &)> &notice);

// After a run: the target's counts and progress, and the legacy rows at or
// below the progress point that are neither migrated nor recorded (the
// first `limit`). Throws Error.
struct AfterRun {
    TargetCounts counts;
    Progress progress;
    ReportClass missing;
};
AfterRun read_after(const Target &t, const std::function<void(const std::string &)> &notice,
                    size_t limit = 10);

// This run's share of what the target holds after it: what this process
// wrote (the sink's `applied` and `rejected` events), not the target's
// growth since before the run (a second migrate that waited as a standby
// while the first did the work would otherwise claim all of it); by
// reason class only when all the growth of unmappable rows is this run's.
struct RunShare {
    uint64_t migrated = 0;
    uint64_t unmappable = 0;
    std::map<std::string, uint64_t, std::less<>> reasons;
};
RunShare run_share(const TargetCounts &before, const TargetCounts &now, uint64_t applied, uint64_t rejected);

// The failure when rows at or below the progress point are missing
// (AfterRun::missing.count > 0), one line.
std::string missing_message(const ReportClass &missing);

// `cdcflow verify`: the report, read-only. Throws Error (kConfig: the
// target's schema is not the migration's).
VerifyReport verify_target(const Target &t, const VerifyOptions &vo);

} // namespace cdcflow::migrate
