// The sinks' checkpoint table (DESIGN.md, "cdcflow's own bookkeeping"): one
// row per (sink checkpoint name, partition), next to the data the sink
// writes, so that the checkpoint commits in the same transaction. One DDL for
// every SQLite sink (projection_sink, outbox_sink), so that two sinks sharing
// a database never create two different tables under one name.
//
// Thread-safety: constants only.
#pragma once

namespace cdcflow::sqlite {

// "partition" is quoted: it is an SQL keyword (window functions).
inline constexpr const char *kCheckpointsDdl = "CREATE TABLE IF NOT EXISTS cdcflow_checkpoints(name TEXT, "
                                               "\"partition\" TEXT, position INTEGER NOT NULL, "
                                               "updated_at INTEGER, PRIMARY KEY(name, \"partition\"))";

// Moves a checkpoint forward, never back: ?1 name, ?2 partition, ?3 position,
// ?4 updated_at (wall clock, microseconds). changes() is 0 when the stored
// position is already at or past ?3.
inline constexpr const char *kCheckpointUpsertSql =
    "INSERT INTO cdcflow_checkpoints(name, \"partition\", position, updated_at) VALUES(?1, ?2, ?3, ?4) "
    "ON CONFLICT(name, \"partition\") DO UPDATE SET position = excluded.position, "
    "updated_at = excluded.updated_at WHERE excluded.position > cdcflow_checkpoints.position";

} // namespace cdcflow::sqlite
