// Cleanup of a migrated legacy table (`cdcflow migrate --cleanup`, README
// "Migrating a legacy outbox"): deletes legacy rows whose event is migrated
// and verified and whose created_at is older than the retention, in small
// transactions, while the application keeps writing to the table. The only
// code that writes to the legacy database.
//
// A row is deleted only when:
//   - it maps, and its created_at is older than now - older_than;
//   - the map holds its event, and the outbox row at the map's seq carries
//     the row's event id with the checksum of the row as it is now, or that
//     seq was deleted by the outbox's retention (cdcflow_outbox_retired) and
//     the map's checksum is the row's;
//   - it is not the table's highest id, checked again inside the DELETE
//     (`id < (SELECT max(id) ...)`): legacy_outbox.id has no AUTOINCREMENT, so
//     SQLite would give a deleted highest id to the application's next row,
//     whose event id would then be one already migrated;
//   - it did not change between the check and the delete (read again inside
//     the delete's transaction).
// Per batch: the batch's map rows are marked cleaned_at in the target (and
// committed) before the legacy rows are deleted; a crash between leaves a
// marked row that still exists, which verify treats as normal.
//
// Internal (not installed): include as "migrate/cleanup.hpp".
// Thread-safety: one call uses its connections as SQLite allows (one thread).
#pragma once

#include "migrate/verify.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <thread>

namespace cdcflow::migrate {

// Runs `fn` (one transaction, or one set of reads) until it succeeds: a
// locked database (the application writing, a checkpoint, another cdcflow)
// is waited for with a growing pause, up to `patience` in all, `notice`
// told once; any other error, or a lock that outlasts it, throws (one line).
// Cleanup runs every transaction through it, `cdcflow migrate` its reads
// before and after the run.
template <typename F>
void retry_while_locked(std::chrono::milliseconds patience, const char *what,
                        const std::function<void(const std::string &)> &notice, F &&fn) {
    const auto started = std::chrono::steady_clock::now();
    auto pause = std::chrono::milliseconds(10);
    bool told = false;
    for (;;) {
        try {
            fn();
            return;
        } catch (const Error &e) {
            if (e.status() != CDCFLOW_ERR_RETRY) throw;
            const auto waited = std::chrono::steady_clock::now() - started;
            if (waited >= patience)
                throw Error(
                    CDCFLOW_ERR_IO,
                    std::string(e.what()) + "; gave up " + what + " after " +
                        std::to_string(std::chrono::duration_cast<std::chrono::seconds>(waited).count()) +
                        " s of locks");
            if (!told && notice) {
                notice(std::string(what) + ": " + e.what() + "; retrying");
                told = true;
            }
            std::this_thread::sleep_for(pause);
            pause = std::min(pause * 2, std::chrono::milliseconds(1000));
        }
    }
}

struct CleanupOptions {
    int64_t older_than_us = 0;           // rows with created_at before now - this go
    int64_t now_us = 0;                  // 0: the wall clock at the start
    int64_t batch = 500;                 // rows per delete transaction
    std::chrono::milliseconds pause{20}; // between batches: the application's writers get in
    // How long one transaction keeps retrying a locked database (busy
    // timeout plus backoff) before the cleanup gives up with an error.
    std::chrono::milliseconds lock_patience{std::chrono::minutes(2)};
    std::function<bool()> stop;                      // asked between batches; true: stop there
    std::function<void(const std::string &)> notice; // a locked database being retried...
};

struct CleanupReport {
    uint64_t deleted = 0;
    // Rows kept, by reason ("younger than the retention", "unmappable",
    // "not migrated", "event missing", "event differs", "the highest id",
    // "changed during cleanup").
    std::map<std::string, uint64_t> kept;
    uint64_t marked = 0; // map rows marked cleaned_at by this run
    bool stopped = false;
    uint64_t kept_total() const;
};

// `dbs.legacy` and `dbs.target` must be read-write connections; the outbox
// is only read. Throws cdcflow::Error (one line) on a database error or a
// lock that outlasted lock_patience; what was deleted until then stays
// deleted (and marked).
CleanupReport cleanup(Databases dbs, const MigrationSpec &spec, const CleanupOptions &opts);

} // namespace cdcflow::migrate
