#include "sqlite_sink.hpp"

#include "base/text.hpp"
#include "base/utf8.hpp"

#include <filesystem>
#include <iterator>
#include <utility>

namespace cdcflow::sqlite_sink {

void acquire(std::unique_ptr<ownership::Lease> &lease, const std::string &database, const std::string &name,
             const cdcflow_ownership &req, cdcflow::Context ctx) {
    if (!lease) {
        ownership::LeaseOptions opt;
        opt.database = database;
        opt.name = name;
        opt.lease_ms = req.lease_ms;
        opt.on_lost = [ctx](const std::string &m) { ctx.ownership_lost(m); };
        opt.warn = [ctx](const std::string &m) { ctx.warn(m); };
        lease = std::make_unique<ownership::Lease>(std::move(opt));
    }
    ownership::Lease::Attempt a = lease->try_acquire();
    if (!a.owned) throw Error(CDCFLOW_ERR_OWNED, a.text);
    ctx.info(a.text);
}

void set_durability(sqlite::Db &db, const std::string &path, bool sync_full, bool create_schema,
                    cdcflow::Context ctx) {
    db.exec(sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
    if (create_schema) {
        if (std::string mode = db.switch_to_wal(); mode != "wal")
            ctx.warn(sqlite::database_label(path) + " stays in journal_mode '" + mode +
                     "' (WAL is recommended)");
    } else if (std::string mode = db.journal_mode(); mode != "wal") {
        ctx.info(sqlite::database_label(path) + " is in journal_mode '" + mode +
                 "'; WAL is strongly recommended (readers and this sink then do not block each other)");
    }
}

bool open_if_created(sqlite::Db &db, const std::string &path, int busy_timeout_ms) {
    std::error_code ec;
    if (!db && std::filesystem::exists(path, ec))
        db = sqlite::Db(path, SQLITE_OPEN_READWRITE, busy_timeout_ms);
    return static_cast<bool>(db);
}

void refuse_name_of(sqlite::Db &db, const std::string &path, const char *table, const std::string &name,
                    const char *whose) {
    if (!db.has_table(table)) return;
    sqlite::Stmt s(db, std::string("SELECT 1 FROM ") + table + " WHERE name = ?1 LIMIT 1");
    s.bind(1, std::string_view(name));
    if (s.step())
        throw Error(CDCFLOW_ERR_CONFIG, "checkpoint_name: " + sqlite::database_label(path) + ": '" +
                                            base::text(name) + "' is the checkpoint of " + whose +
                                            ": give this pipeline a checkpoint_name of its own");
}

void report_checkpoint(sqlite::Db &db, const std::string &path, int busy_timeout_ms, const std::string &name,
                       const std::function<void(const cdcflow_position &)> &emit) {
    if (!open_if_created(db, path, busy_timeout_ms) || !db.has_table("cdcflow_checkpoints")) return;
    refuse_name_of(db, path, "cdcflow_migration_progress", name, "a migration (cdcflow_migration_progress)");
    sqlite::Stmt s(db, "SELECT \"partition\", position FROM cdcflow_checkpoints WHERE name = ?1");
    s.bind(1, std::string_view(name));
    while (s.step())
        emit(cdcflow_position{cdcflow::str(s.text(0)), s.int64(1)});
}

bool event_text_ok(const cdcflow_event &e, bool payload_is_text, std::string &reason) {
    if (e.event_id.len == 0) {
        reason = "event id is empty";
        return false;
    }
    static constexpr std::pair<const char *, cdcflow_str cdcflow_event::*> kText[] = {
        {"event id", &cdcflow_event::event_id},
        {"aggregate type", &cdcflow_event::aggregate_type},
        {"aggregate id", &cdcflow_event::aggregate_id},
        {"event type", &cdcflow_event::event_type},
        {"payload", &cdcflow_event::payload}};
    for (size_t i = 0; i < std::size(kText) - (payload_is_text ? 0 : 1); ++i) {
        std::string_view v = sv(e.*kText[i].second);
        if (base::valid_utf8(v)) continue;
        reason.assign(kText[i].first).append(" is not valid UTF-8: ");
        base::append_quoted(reason, v, {'"', 64, true});
        return false;
    }
    return true;
}

void truncate_wal(sqlite::Db &db) noexcept {
    try {
        if (db && db.journal_mode() == "wal") {
            sqlite3_busy_timeout(db.raw(), 200);
            sqlite3_wal_checkpoint_v2(db.raw(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
        }
    } catch (...) { // best effort, and noexcept: memory running out for the mode's text included
    }
}

} // namespace cdcflow::sqlite_sink
