#include "aggregate_versions.hpp"

#include <cstring>

namespace cdcflow::projection {

// An integer key (stable across VACUUM) beside the unique (name, type, id):
// a cached row is then updated by a table lookup on its id, with no descent
// of the text index (which halved throughput when every event carried a
// version and the key was the text primary key).
const char *AggregateVersions::ddl() {
    return "CREATE TABLE IF NOT EXISTS cdcflow_aggregate_versions(id INTEGER PRIMARY KEY, name TEXT NOT "
           "NULL, "
           "aggregatetype TEXT NOT NULL, aggregateid TEXT NOT NULL, version INTEGER NOT NULL, "
           "UNIQUE(name, aggregatetype, aggregateid))";
}

void AggregateVersions::report_to(const cdcflow::Context &ctx) {
    entries_metric_ = ctx.cache_metric("versions", CDCFLOW_CACHE_ENTRIES);
    hits_metric_ = ctx.cache_metric("versions", CDCFLOW_CACHE_HITS);
    misses_metric_ = ctx.cache_metric("versions", CDCFLOW_CACHE_MISSES);
    ctx.cache_metric("versions", CDCFLOW_CACHE_CAPACITY).set(static_cast<int64_t>(cache_.capacity()));
    entries_metric_.set(static_cast<int64_t>(cache_.size()));
}

void AggregateVersions::publish() {
    hits_ += static_cast<uint64_t>(batch_hits_);
    misses_ += static_cast<uint64_t>(batch_misses_);
    hits_metric_.add(batch_hits_);
    misses_metric_.add(batch_misses_);
    batch_hits_ = batch_misses_ = 0;
    entries_metric_.set(static_cast<int64_t>(cache_.size()));
}

void AggregateVersions::open(sqlite::Db &db, std::string_view name) {
    db_ = &db;
    name_.assign(name);
}

void AggregateVersions::prepare() {
    if (!db_->has_table(kTable)) {
        // First versioned event on this database: the batch transaction
        // creates the table (and a rollback takes it away again).
        db_->exec(ddl());
        created_table_ = true;
        if (info_) info_("created table cdcflow_aggregate_versions for the events' aggregate versions");
    }
    select_ = db_->prepare("SELECT id, version FROM cdcflow_aggregate_versions WHERE name = ?1 AND "
                           "aggregatetype = ?2 AND aggregateid = ?3");
    // The key columns are compared too: a row deleted or replaced behind
    // the cache's back is then not updated by a stale id.
    update_ =
        db_->prepare("UPDATE cdcflow_aggregate_versions SET version = ?4 WHERE id = ?5 AND name = ?1 AND "
                     "aggregatetype = ?2 AND aggregateid = ?3");
    upsert_ =
        db_->prepare("INSERT INTO cdcflow_aggregate_versions(name, aggregatetype, aggregateid, version) "
                     "VALUES(?1, ?2, ?3, ?4) ON CONFLICT(name, aggregatetype, aggregateid) DO UPDATE SET "
                     "version = excluded.version RETURNING id");
}

void AggregateVersions::close() {
    select_ = {};
    update_ = {};
    upsert_ = {};
    db_ = nullptr;
    // A re-opened database may hold other versions: read them again.
    cache_.clear();
    touched_.clear();
    entries_metric_.set(0);
}

AggregateVersions::Entry *AggregateVersions::find(std::string_view aggregate_type,
                                                  std::string_view aggregate_id) {
    // The key is unambiguous: the type's length, the type, the id.
    const uint32_t type_len = static_cast<uint32_t>(aggregate_type.size());
    key_.assign(reinterpret_cast<const char *>(&type_len), sizeof type_len)
        .append(aggregate_type)
        .append(aggregate_id);
    Entry *n = cache_.find(key_);
    if (!n) {
        ++batch_misses_;
        if (!select_) prepare();
        // Pinned and touched before the read: if the read throws, the
        // rollback forgets the half-made node.
        n = cache_.insert(key_);
        n->pinned = true;
        touched_.push_back(n);
        select_.bind(1, std::string_view(name_)).bind(2, aggregate_type).bind(3, aggregate_id);
        sqlite::ResetOnExit guard{select_};
        if (select_.step()) {
            n->row.id = select_.int64(0);
            n->row.version = select_.int64(1);
        }
    } else {
        ++batch_hits_;
        if (!n->pinned) {
            n->pinned = true;
            touched_.push_back(n);
        }
    }
    return n;
}

void AggregateVersions::write_batch() {
    for (Entry *n : touched_) {
        if (!n->dirty) continue;
        std::string_view key = std::string_view(n->key).substr(sizeof(uint32_t));
        uint32_t type_len;
        std::memcpy(&type_len, n->key.data(), sizeof type_len);
        auto bind_key = [&](sqlite::Stmt &s) {
            s.bind(1, std::string_view(name_))
                .bind(2, key.substr(0, type_len))
                .bind(3, key.substr(type_len))
                .bind(4, n->row.version);
        };
        if (n->row.id != 0) {
            bind_key(update_);
            update_.bind(5, n->row.id);
            update_.run();
            if (update_.changes() == 1) continue;
        }
        bind_key(upsert_);
        sqlite::ResetOnExit guard{upsert_};
        n->row.id = upsert_.step() ? upsert_.int64(0) : 0;
    }
}

void AggregateVersions::batch_committed() {
    for (Entry *n : touched_)
        n->pinned = n->dirty = false;
    touched_.clear();
    created_table_ = false;
    cache_.trim();
    publish();
}

void AggregateVersions::batch_rolled_back() {
    // Forget what the batch touched; the next miss reads the committed state.
    for (Entry *n : touched_)
        cache_.erase(n);
    touched_.clear();
    if (created_table_) {
        // The rollback dropped the table the batch created: prepare (and
        // create) again when the retry needs it.
        select_ = {};
        update_ = {};
        upsert_ = {};
        created_table_ = false;
    }
    publish();
}

} // namespace cdcflow::projection
