// What every SQLite sink (projection_sink, outbox_sink) does the same way
// around its own transaction: the one owner's claim on its checkpoint, the
// durability settings of its connection, reopening a database that appeared
// while it waited as a standby, and the clean stop's WAL truncation.
//
// Thread-safety: as the sink that calls them (one thread at a time).
#pragma once

#include "common/ownership.hpp"
#include "common/sqlite.hpp"

#include <cdcflow/sdk.hpp>

#include <functional>
#include <memory>
#include <string>

namespace cdcflow::sqlite_sink {

// One owner per checkpoint (common/ownership.hpp): the lease is made on the
// first call (its own connection and renewal thread); each call is one
// attempt. Throws Error(CDCFLOW_ERR_OWNED) naming the owner while another
// live process holds it; logs how this process got it otherwise.
void acquire(std::unique_ptr<ownership::Lease> &lease, const std::string &database, const std::string &name,
             const cdcflow_ownership &req, cdcflow::Context ctx);

// synchronous=FULL or NORMAL (with WAL, NORMAL: a committed batch survives a
// process crash, not a power loss), and WAL when the sink may change the
// file (create_schema): readers and the sink's commits then do not block
// each other. A file that stays in another journal mode is a warning
// (create_schema) or an info line (not ours to change).
void set_durability(sqlite::Db &db, const std::string &path, bool sync_full, bool create_schema,
                    cdcflow::Context ctx);

// checkpoint() before start(): the database may have appeared since create()
// (another host made it while this one waited as a standby); reading
// "nothing" then would start over from the beginning. Opens it when it now
// exists; false when there is still none.
bool open_if_created(sqlite::Db &db, const std::string &path, int busy_timeout_ms);

// A sink's checkpoint() on cdcflow_checkpoints: each partition's stored
// position under `name`, to emit. Nothing before start() created the
// database (from the start); the database is opened when it appeared since
// create() (open_if_created). A migration's checkpoint of the same name is
// refused (refuse_name_of): resuming from legacy ids would skip events.
void report_checkpoint(sqlite::Db &db, const std::string &path, int busy_timeout_ms, const std::string &name,
                       const std::function<void(const cdcflow_position &)> &emit);

// One checkpoint name, one kind of pipeline: a projection's checkpoint and
// a migration's progress under one name in one file would overwrite each
// other's positions (offsets vs legacy ids), and a resume would skip events.
// Throws Error(CDCFLOW_ERR_CONFIG) naming checkpoint_name when `table` (if
// it exists) has a row whose `name` is `name`; `whose` says what that row
// belongs to ("a migration (cdcflow_migration_progress)").
void refuse_name_of(sqlite::Db &db, const std::string &path, const char *table, const std::string &name,
                    const char *whose);

// What a sink refuses to write whatever stage ran before it: an empty event
// id, and text fields that are not valid UTF-8 (every client downstream
// could no longer read the row); the payload too when `payload_is_text`.
// false: `reason` says which ("aggregate id is not valid UTF-8: "...").
bool event_text_ok(const cdcflow_event &e, bool payload_is_text, std::string &reason);

// A clean stop leaves a self-contained file behind: the WAL copied back and
// emptied. Best effort: a busy reader only means the next open (or the last
// connection to close) finishes the job, so it does not wait long.
void truncate_wal(sqlite::Db &db) noexcept;

} // namespace cdcflow::sqlite_sink
