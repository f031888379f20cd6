// OutboxWriter: see cdcflow/outbox_writer.hpp for the contract.
//
// Dedupe and the application's transactions: the writer installs no SQLite
// hooks (a connection has one commit hook and one rollback hook, and taking
// them would silently break an application that uses them). An id appended
// inside an application transaction is cached as kPending with its rowid.
// When the same id comes again, the writer looks that row up on the
// connection: found (committed, or in the still-open transaction that will
// commit or roll back together with the retry) means duplicate; not found (a
// ROLLBACK or a ROLLBACK TO) means the id is forgotten and written again. The
// lookup is by rowid, so it costs one B-tree probe and only happens for
// retried ids.
//
// Conflicts and transactions: the insert is INSERT OR ABORT, which overrides
// any ON CONFLICT clause of the table's constraints (ROLLBACK, REPLACE,
// IGNORE, FAIL): a constraint failure undoes that one INSERT and nothing
// else, so a duplicate id never costs the batch or the application its
// transaction. Two things still end a transaction from inside an INSERT: a
// trigger's RAISE(ROLLBACK) and errors such as SQLITE_FULL. After every
// failed INSERT the writer therefore asks sqlite3_get_autocommit() whether
// its transaction still exists (see write_batch() and append_in_transaction()).
#include <cdcflow/outbox_writer.hpp>

#include "base/clock.hpp"
#include "base/text.hpp" // one way to quote untrusted bytes in a message
#include "base/utf8.hpp"
#include "circuit_breaker.hpp"
#include "id_cache.hpp"
#include "json_type.hpp"
#include "outbox/schema.hpp" // the table, its columns and DDL: shared with the outbox source
#include "sqlite/sqlite_util.hpp"
#include "uuid.hpp"

#include <simdjson.h>
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

namespace cdcflow {

void AppendResult::set_event_id(std::string_view id) {
    id_len_ = id.size();
    if (id.size() <= kInlineId)
        std::memcpy(id_, id.data(), id.size());
    else
        long_id_.assign(id);
}

const char *to_string(BreakerState s) {
    switch (s) {
    case BreakerState::kClosed:
        return "closed";
    case BreakerState::kOpen:
        return "open";
    case BreakerState::kHalfOpen:
        return "half_open";
    }
    return "?";
}

namespace {

using Code = OutboxStatus::Code;

using base::append_text;
using base::append_utc;
using base::valid_utf8;
using sqlite::quote_ident;
using sqlite::StmtPtr;

// A counter written by the writer's thread and read by metrics() on any
// thread: a relaxed load + store, no locked instruction on the hot path.
class Counter {
public:
    void add(uint64_t n = 1) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
    void set(uint64_t n) { v_.store(n, std::memory_order_relaxed); }
    uint64_t get() const { return v_.load(std::memory_order_relaxed); }

private:
    std::atomic<uint64_t> v_{0};
};

bool is_unique_violation(int rc) {
    return rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY;
}

// What one INSERT did.
enum class Inserted : uint8_t {
    kRow,       // the row is in, in the open transaction
    kDuplicate, // a UNIQUE or PRIMARY KEY constraint, and the table already holds the id
    kRefused,   // a CHECK, NOT NULL, other UNIQUE or a trigger refused the row, or a trigger ignored it
    kFailed,    // any other error
};

// Typical payloads never grow the envelope parser's buffers past this.
constexpr size_t kInitialJsonCapacity = 4096;

// "now + 1 day", "now + 90 s": the upper end of the timestamp range.
void append_now_plus(std::string &out, int64_t ms) {
    out.append("now");
    if (ms == 0) return;
    struct Unit {
        int64_t ms;
        const char *name;
    };
    static constexpr Unit kUnits[] = {
        {86'400'000, " day"}, {3'600'000, " h"}, {60'000, " min"}, {1000, " s"}};
    out.append(" + ");
    for (const Unit &u : kUnits)
        if (ms % u.ms == 0) {
            out.append(std::to_string(ms / u.ms)).append(u.name);
            if (u.ms == 86'400'000 && ms != u.ms) out += 's';
            return;
        }
    out.append(std::to_string(ms)).append(" ms");
}

} // namespace

struct OutboxWriter::Impl {
    // A buffered event: its strings live in `arena` at `off`, in field order.
    struct Buffered {
        size_t off;
        size_t id_len, at_len, ai_len, type_len, payload_len;
        int64_t timestamp_us;
        uint64_t tag;
        uint64_t handle; // its dedupe-cache entry
        // write_batch(): what the current attempt found (see there).
        enum class Settled : uint8_t { kNo, kRefused, kDuplicate, kDuplicateEnded } settled = Settled::kNo;
    };

    Impl(OutboxWriterOptions o, sqlite3 *conn, bool owns)
        : opt(std::move(o)), db(conn), owns_db(owns),
          cache(opt.dedupe_capacity, opt.dedupe_ttl_ms, random_seed()),
          breaker(opt.breaker_failures, opt.breaker_cooldown_ms) {
        if (opt.rules) validator.emplace(*opt.rules);
        const char *file = sqlite3_db_filename(db, "main");
        set_where(file && *file ? file : std::string_view());
        buffer.reserve(std::min<size_t>(opt.batch_size, 1 << 16));
        refused_at_flush.reserve(16);
    }

    ~Impl() {
        insert.reset();
        verify.reset();
        has_id.reset();
        if (owns_db) sqlite3_close_v2(db);
    }

    static uint64_t random_seed() {
        std::random_device rd;
        return (uint64_t{rd()} << 32) ^ rd();
    }

    int64_t now_ms() const {
        if (opt.monotonic_ms) return opt.monotonic_ms();
        return std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now().time_since_epoch())
            .count();
    }
    int64_t wall_us() const {
        if (opt.wall_us) return opt.wall_us();
        return base::wall_us();
    }

    // "database '/path'" (or "the database") for messages.
    void set_where(std::string_view path) { where = sqlite::database_label(path); }

    OutboxStatus db_error(int rc, std::string_view doing) {
        std::string msg = where;
        msg.append(": ");
        append_text(msg, sqlite3_errmsg(db));
        msg.append(" (");
        append_text(msg, doing); // SQL with the configured names
        msg.append(")");
        return OutboxStatus(Code::kDbError, std::move(msg), rc);
    }

    OutboxStatus insert_error(int rc) const {
        std::string msg = where;
        msg.append(": ").append(step_error).append(" (inserting into ");
        append_text(msg, quote_ident(opt.table));
        msg.append(")");
        return OutboxStatus(Code::kDbError, std::move(msg), rc);
    }

    OutboxStatus exec(const char *sql) {
        int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
        return rc == SQLITE_OK ? OutboxStatus() : db_error(sqlite3_extended_errcode(db), sql);
    }

    OutboxStatus prepare(const std::string &sql, StmtPtr *out, unsigned flags = SQLITE_PREPARE_PERSISTENT) {
        sqlite3_stmt *st = nullptr;
        int rc = sqlite3_prepare_v3(db, sql.c_str(), static_cast<int>(sql.size()), flags, &st, nullptr);
        if (rc != SQLITE_OK)
            return db_error(sqlite3_extended_errcode(db), std::string("preparing: ").append(sql, 0, 80));
        out->reset(st);
        return {};
    }

    OutboxStatus prepare_schema();
    bool check(const OutboxEvent &ev, std::string_view id, std::string *why);
    bool check_timestamp(int64_t ts, std::string *why);
    bool check_payload_json(std::string_view payload, std::string *why);
    // Binds and steps the insert. Anything but kRow leaves the extended
    // result code in step_rc and the reason in step_error. The caller checks
    // sqlite3_get_autocommit(): a failure may have ended the transaction.
    Inserted insert_row(std::string_view id, std::string_view at, std::string_view ai, std::string_view type,
                        std::string_view payload, int64_t ts);
    // One transaction for the whole buffer; see flush().
    OutboxStatus write_batch();
    OutboxEvent event_at(size_t i) const;
    void rollback();
    // Is the cache entry `h` for `id` a copy already written? Forgets it when
    // its row is gone (see the top of this file).
    bool already_written(uint64_t h, std::string_view id);
    void note_failure(const OutboxStatus &st, int64_t now) {
        db_failures.add();
        last_error = st.message();
        breaker.on_failure(now);
    }
    OutboxStatus fail_fast() {
        failed_fast.add();
        std::string msg = where;
        msg.append(": circuit breaker open (")
            .append(std::to_string(opt.breaker_failures))
            .append(" consecutive failures): failing fast for up to ")
            .append(std::to_string(opt.breaker_cooldown_ms))
            .append(" ms; last error: ")
            .append(last_error);
        return OutboxStatus(Code::kUnavailable, std::move(msg));
    }
    // Common front half of both appends: id, timestamp, rules, dedupe.
    // Returns false when `r` is final (refused or duplicate).
    bool admit(const OutboxEvent &ev, char *uuid_buf, std::string_view *id, int64_t *ts, AppendResult &r,
               int64_t now);
    void sync_gauges() {
        cached_ids.set(cache.size());
        buffered.set(buffer.size());
    }

    OutboxWriterOptions opt;
    sqlite3 *db;
    bool owns_db;
    std::string where; // "database '/path'" for messages
    StmtPtr insert, verify, has_id;
    std::optional<rules::Validator> validator;
    simdjson::dom::parser json; // the envelope's payload check when there are no rules
    std::unique_ptr<char[]> json_buf;
    size_t json_cap = 0;
    outbox::UuidGenerator uuids;
    outbox::IdCache cache;
    outbox::CircuitBreaker breaker;
    std::string arena;
    std::vector<Buffered> buffer;
    // Buffer indexes refused by a constraint, with why; reported once the batch commits.
    std::vector<std::pair<size_t, std::string>> refused_at_flush;
    std::string reason;
    std::string step_error; // one line of valid UTF-8 (append_text)
    int step_rc = 0;
    std::string last_error;

    Counter written, duplicates, refused, db_failures, failed_fast, batches, buffered, cached_ids;
};

namespace {

OutboxStatus check_options(const OutboxWriterOptions &o) {
    if (o.batch_size == 0) return {Code::kInvalidArgument, "batch_size must be at least 1"};
    if (o.max_timestamp_ahead_ms < 0)
        return {Code::kInvalidArgument, "max_timestamp_ahead_ms must not be negative"};
    const std::pair<const char *, const std::string *> names[] = {
        {"table", &o.table},
        {"id_column", &o.id_column},
        {"aggregate_type_column", &o.aggregate_type_column},
        {"aggregate_id_column", &o.aggregate_id_column},
        {"type_column", &o.type_column},
        {"payload_column", &o.payload_column},
        {"timestamp_column", &o.timestamp_column},
        {"seq_column", &o.seq_column},
    };
    for (const auto &[what, name] : names)
        if (name->empty()) return {Code::kInvalidArgument, std::string(what).append(" must not be empty")};
    return {};
}

} // namespace

OutboxStatus OutboxWriter::Impl::prepare_schema() {
    using outbox::Column;
    using Kind = outbox::SchemaProblem::Kind;
    outbox::OutboxSchema schema; // no version column: the producer writes none
    schema.table = opt.table;
    schema.name(Column::kSeq) = opt.seq_column;
    schema.name(Column::kId) = opt.id_column;
    schema.name(Column::kAggregateType) = opt.aggregate_type_column;
    schema.name(Column::kAggregateId) = opt.aggregate_id_column;
    schema.name(Column::kType) = opt.type_column;
    schema.name(Column::kPayload) = opt.payload_column;
    schema.name(Column::kTimestamp) = opt.timestamp_column;
    // What the writer fills in, in the INSERT's order. The seq column is the
    // table's own business (the writer only names it when creating the table).
    const std::initializer_list<Column> written = {Column::kId,          Column::kAggregateType,
                                                   Column::kAggregateId, Column::kType,
                                                   Column::kPayload,     Column::kTimestamp};
    outbox::SchemaProblem problem = schema.check(db, written);
    if (problem.kind == Kind::kNoTable && opt.create_schema) {
        if (auto st = exec(schema.create_sql().c_str()); !st.ok()) return st;
        problem = schema.check(db, written);
    }
    switch (problem.kind) {
    case Kind::kNone:
        break;
    case Kind::kNoTable:
        return {Code::kNotFound, where + " " + problem.message};
    case Kind::kNoColumn:
        return {Code::kInvalidArgument, where + ": " + problem.message};
    case Kind::kDbError:
        return {Code::kDbError, where + ": " + problem.message, problem.sqlite_rc};
    }
    const std::string t = schema.quoted_table();
    // OR ABORT: the table's own ON CONFLICT clauses do not apply (see the top).
    if (auto st = prepare(schema.insert_sql(written, "INSERT OR ABORT"), &insert); !st.ok()) return st;
    // The rowid is what makes the lookup cheap; a WITHOUT ROWID table has none.
    std::string sql = "SELECT 1 FROM ";
    sql.append(t).append(" WHERE rowid = ?1 AND ").append(schema.quoted(Column::kId)).append(" = ?2");
    if (auto st = prepare(sql, &verify); !st.ok()) {
        std::string msg = st.message();
        msg.append(": the outbox table must be a rowid table");
        return {Code::kInvalidArgument, std::move(msg)};
    }
    sql = "SELECT 1 FROM ";
    sql.append(t).append(" WHERE ").append(schema.quoted(Column::kId)).append(" = ?1 LIMIT 1");
    if (auto st = prepare(sql, &has_id); !st.ok()) return st;
    return {};
}

bool OutboxWriter::Impl::check(const OutboxEvent &ev, std::string_view id, std::string *why) {
    // The envelope first: cheap, and the rules do not check every part of it.
    const char *bad = ev.aggregate_type.empty() ? "aggregate type is empty"
                      : ev.aggregate_id.empty() ? "aggregate id is empty"
                      : ev.type.empty()         ? "event type is empty"
                                                : nullptr;
    if (bad) {
        why->assign(bad);
        return false;
    }
    // No invalid UTF-8 reaches a read model as text (the rules do not look
    // at the envelope's encoding; the payload is checked here too, so the
    // reason says so whether or not rules are set).
    const std::pair<const char *, std::string_view> texts[] = {{"event id", id},
                                                               {"aggregate type", ev.aggregate_type},
                                                               {"aggregate id", ev.aggregate_id},
                                                               {"event type", ev.type},
                                                               {"payload", ev.payload}};
    for (const auto &[name, text] : texts)
        if (!valid_utf8(text)) {
            why->assign(name).append(" is not valid UTF-8: ");
            base::append_quoted(*why, text);
            return false;
        }
    if (ev.timestamp_us && !check_timestamp(*ev.timestamp_us, why)) return false;
    if (validator)
        return validator->check({id, ev.aggregate_type, ev.aggregate_id, ev.type, ev.payload}, why);
    return check_payload_json(ev.payload, why);
}

bool OutboxWriter::Impl::check_timestamp(int64_t ts, std::string *why) {
    const int64_t ahead_ms = opt.max_timestamp_ahead_ms;
    const int64_t ahead_us = ahead_ms > INT64_MAX / 1000 ? INT64_MAX : ahead_ms * 1000;
    const int64_t now = wall_us();
    const int64_t max = now > INT64_MAX - ahead_us ? INT64_MAX : now + ahead_us;
    if (ts >= opt.min_timestamp_us && ts <= max) return true;
    why->assign("timestamp ").append(std::to_string(ts)).append(" (");
    append_utc(*why, ts);
    why->append(") is outside the allowed range ");
    append_utc(*why, opt.min_timestamp_us);
    why->append(" to ");
    append_utc(*why, max);
    why->append(" (");
    append_now_plus(*why, ahead_ms);
    why->append(")");
    return false;
}

bool OutboxWriter::Impl::check_payload_json(std::string_view payload, std::string *why) {
    // Without rules the payload must still be a JSON object: the outbox
    // source and the stages downstream rely on it. Same bound as the rules'
    // default max_payload_bytes, which also bounds the parser's memory.
    const size_t len = payload.size();
    if (len == 0) {
        why->assign("payload is empty (expected a JSON object)");
        return false;
    }
    if (len > rules::kDefaultMaxPayloadBytes) {
        why->assign("payload is ").append(std::to_string(len)).append(" bytes, more than ");
        why->append(std::to_string(rules::kDefaultMaxPayloadBytes));
        return false;
    }
    if (len + simdjson::SIMDJSON_PADDING > json_cap) {
        json_cap = std::max(len + simdjson::SIMDJSON_PADDING, std::max(2 * json_cap, kInitialJsonCapacity));
        json_buf.reset(new char[json_cap]);
    }
    std::memcpy(json_buf.get(), payload.data(), len);
    std::memset(json_buf.get() + len, 0, simdjson::SIMDJSON_PADDING);
    // Grow geometrically: left alone the parser reallocates for every
    // payload larger than the last.
    if (len > json.capacity()) {
        size_t cap = std::max(len, std::min<size_t>(2 * json.capacity(), rules::kDefaultMaxPayloadBytes));
        if (json.allocate(std::max(cap, kInitialJsonCapacity)) != simdjson::SUCCESS) throw std::bad_alloc();
    }
    simdjson::dom::element root;
    if (auto err = json.parse(json_buf.get(), len, false).get(root)) {
        why->assign("payload is not valid JSON: ").append(simdjson::error_message(err));
        return false;
    }
    if (!root.is_object()) {
        why->assign("payload is not a JSON object (got ")
            .append(rules::json_type_name(root.type()))
            .append(")");
        return false;
    }
    return true;
}

Inserted OutboxWriter::Impl::insert_row(std::string_view id, std::string_view at, std::string_view ai,
                                        std::string_view type, std::string_view payload, int64_t ts) {
    sqlite3_stmt *s = insert.get();
    // No copy: the bytes outlive the step (caller's event or the arena).
    auto text = [s](int i, std::string_view v) { sqlite::bind_text(s, i, v); };
    text(1, id);
    text(2, at);
    text(3, ai);
    text(4, type);
    text(5, payload);
    sqlite3_bind_int64(s, 6, ts);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) {
        sqlite3_reset(s);
        if (sqlite3_changes(db) == 1) return Inserted::kRow;
        // Done without a row: a BEFORE INSERT trigger's RAISE(IGNORE). Taken
        // for written, the event would be lost without a word.
        step_rc = SQLITE_CONSTRAINT_TRIGGER;
        step_error = "a trigger ignored the row (RAISE(IGNORE))";
        return Inserted::kRefused;
    }
    step_rc = sqlite3_extended_errcode(db);
    step_error.clear(); // SQLite's message, taken before the reset replaces it
    append_text(step_error, sqlite3_errmsg(db));
    sqlite3_reset(s);
    if ((step_rc & 0xff) != SQLITE_CONSTRAINT) return Inserted::kFailed;
    if (!is_unique_violation(step_rc)) return Inserted::kRefused;
    // A duplicate only if the table holds this id: a UNIQUE constraint on
    // other columns refuses a new event, which must not pass for written.
    // (Only on this rare path; a UNIQUE id column has an index to probe.)
    s = has_id.get();
    sqlite::bind_text(s, 1, id);
    rc = sqlite3_step(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        step_rc = sqlite3_extended_errcode(db);
        step_error.clear();
        append_text(step_error, sqlite3_errmsg(db));
    }
    sqlite3_reset(s);
    return rc == SQLITE_ROW    ? Inserted::kDuplicate
           : rc == SQLITE_DONE ? Inserted::kRefused
                               : Inserted::kFailed;
}

bool OutboxWriter::Impl::already_written(uint64_t h, std::string_view id) {
    if (cache.state(h) == outbox::IdCache::State::kWritten) return true;
    // kPending: is the row still there? (See the top of this file.)
    sqlite3_stmt *s = verify.get();
    sqlite3_bind_int64(s, 1, cache.rowid(h));
    sqlite::bind_text(s, 2, id);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc == SQLITE_ROW) {
        // Outside any transaction a row we can see is committed: stop checking.
        if (sqlite3_get_autocommit(db)) cache.set_state(h, outbox::IdCache::State::kWritten);
        return true;
    }
    // Rolled back, or the lookup failed: forget the id. Writing a second copy
    // is harmless (the pipeline's deduper drops it); dropping a retry whose
    // first copy was rolled back would lose the event.
    cache.erase(h);
    return false;
}

bool OutboxWriter::Impl::admit(const OutboxEvent &ev, char *uuid_buf, std::string_view *id, int64_t *ts,
                               AppendResult &r, int64_t now) {
    if (ev.id.empty()) {
        uuids.next(uuid_buf);
        *id = std::string_view(uuid_buf, outbox::UuidGenerator::kTextSize);
    } else {
        *id = ev.id;
    }
    r.set_event_id(*id);
    if (!check(ev, *id, &reason)) {
        refused.add();
        r.status = OutboxStatus(Code::kRefused, reason);
        return false;
    }
    *ts = ev.timestamp_us ? *ev.timestamp_us : wall_us(); // a given one is checked above
    uint64_t h = cache.find(*id, now);
    if (h != outbox::IdCache::kNone && already_written(h, *id)) {
        duplicates.add();
        r.duplicate = true;
        sync_gauges();
        return false;
    }
    return true;
}

OutboxStatus OutboxWriter::Impl::write_batch() {
    using Settled = Buffered::Settled;
    // What this attempt finds out; a failed attempt writes and counts nothing.
    refused_at_flush.clear();
    for (Buffered &b : buffer)
        b.settled = Settled::kNo;
    uint64_t inserted = 0;
    for (;;) {
        if (auto st = exec("BEGIN IMMEDIATE"); !st.ok()) return st;
        inserted = 0;
        bool ended = false;
        for (size_t i = 0; i < buffer.size() && !ended; ++i) {
            Buffered &b = buffer[i];
            if (b.settled != Settled::kNo) continue;
            const OutboxEvent ev = event_at(i);
            const Inserted res =
                insert_row(ev.id, ev.aggregate_type, ev.aggregate_id, ev.type, ev.payload, b.timestamp_us);
            switch (res) {
            case Inserted::kRow:
                ++inserted;
                continue;
            case Inserted::kDuplicate:
                b.settled = Settled::kDuplicate; // the application made the id unique: the database dedupes
                break;
            case Inserted::kRefused:
                // A CHECK or trigger of the application's: this event only.
                b.settled = Settled::kRefused;
                refused_at_flush.emplace_back(i, step_error);
                break;
            case Inserted::kFailed: {
                OutboxStatus st = insert_error(step_rc);
                rollback();
                return st;
            }
            }
            // Usually only the INSERT was undone. A RAISE(ROLLBACK) undid the
            // whole transaction: going on would commit each later row on its
            // own, and the rows before it would be gone.
            if (sqlite3_get_autocommit(db)) {
                ended = true;
                if (b.settled == Settled::kDuplicate) b.settled = Settled::kDuplicateEnded;
            }
        }
        if (!ended) break;
        // Start over. Refusals stay; a duplicate may have been of a row of
        // this batch that is gone now, so it is tried again (unless it ended
        // the transaction: each round settles one more row for good, so this
        // takes at most as many rounds as the batch has rows that roll back).
        for (Buffered &b : buffer)
            if (b.settled == Settled::kDuplicate) b.settled = Settled::kNo;
    }
    if (int rc = sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr); rc != SQLITE_OK) {
        OutboxStatus st = db_error(sqlite3_extended_errcode(db), "COMMIT");
        rollback();
        return st;
    }
    // Committed: only now do the counts and callbacks happen, so a batch that
    // is retried is not counted twice. Refusals in input order (a later round
    // may find an earlier one).
    std::sort(refused_at_flush.begin(), refused_at_flush.end(),
              [](const auto &x, const auto &y) { return x.first < y.first; });
    written.add(inserted);
    duplicates.add(static_cast<uint64_t>(std::count_if(buffer.begin(), buffer.end(), [](const Buffered &b) {
        return b.settled == Settled::kDuplicate || b.settled == Settled::kDuplicateEnded;
    })));
    refused.add(refused_at_flush.size());
    batches.add();
    for (const auto &[i, why] : refused_at_flush) {
        if (buffer[i].handle != outbox::IdCache::kNone && cache.live(buffer[i].handle))
            cache.erase(buffer[i].handle);
        if (opt.on_refused) opt.on_refused(event_at(i), why);
    }
    buffer.clear();
    arena.clear();
    sync_gauges();
    return {};
}

OutboxEvent OutboxWriter::Impl::event_at(size_t i) const {
    const Buffered &b = buffer[i];
    const char *p = arena.data() + b.off;
    OutboxEvent ev;
    ev.id = {p, b.id_len};
    p += b.id_len;
    ev.aggregate_type = {p, b.at_len};
    p += b.at_len;
    ev.aggregate_id = {p, b.ai_len};
    p += b.ai_len;
    ev.type = {p, b.type_len};
    p += b.type_len;
    ev.payload = {p, b.payload_len};
    ev.timestamp_us = b.timestamp_us;
    ev.tag = b.tag;
    return ev;
}

void OutboxWriter::Impl::rollback() {
    // Some errors (SQLITE_FULL, IOERR...) roll the transaction back already.
    if (!sqlite3_get_autocommit(db)) sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
}

OutboxWriter::OutboxWriter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

OutboxWriter::~OutboxWriter() {
    if (impl_ && !impl_->buffer.empty()) (void)flush();
}

sqlite3 *OutboxWriter::connection() const {
    return impl_->db;
}

OutboxStatus OutboxWriter::open(sqlite3 *db, OutboxWriterOptions options,
                                std::unique_ptr<OutboxWriter> *out) {
    if (!db || !out) return {Code::kInvalidArgument, "open: no connection or no out pointer"};
    if (auto st = check_options(options); !st.ok()) return st;
    auto impl = std::make_unique<Impl>(std::move(options), db, false);
    if (auto st = impl->prepare_schema(); !st.ok()) return st;
    out->reset(new OutboxWriter(std::move(impl)));
    return {};
}

OutboxStatus OutboxWriter::open(const std::string &path, OutboxWriterOptions options,
                                std::unique_ptr<OutboxWriter> *out) {
    if (!out) return {Code::kInvalidArgument, "open: no out pointer"};
    if (auto st = check_options(options); !st.ok()) return st;
    sqlite3 *db = nullptr;
    // Without create_schema nothing is created: a mistyped path is an error,
    // not a new empty database.
    int flags =
        SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (options.create_schema ? SQLITE_OPEN_CREATE : 0);
    int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
    if (rc != SQLITE_OK) {
        std::string msg = "cannot open " + sqlite::database_label(path) + ": ";
        append_text(msg, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return {Code::kDbError, std::move(msg), rc};
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, options.busy_timeout_ms);
    auto impl = std::make_unique<Impl>(std::move(options), db, true); // closes db from here on
    impl->set_where(path);
    // WAL: the outbox source reads while the producer writes. The switch
    // needs the file to itself; when another connection prevents it, the
    // current mode stays (correct, only slower).
    sqlite3_exec(db, "PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr);
    if (auto st = impl->exec("PRAGMA synchronous=NORMAL"); !st.ok()) return st;
    if (auto st = impl->prepare_schema(); !st.ok()) return st;
    out->reset(new OutboxWriter(std::move(impl)));
    return {};
}

AppendResult OutboxWriter::append_in_transaction(const OutboxEvent &ev) {
    Impl &w = *impl_;
    AppendResult r;
    if (sqlite3_get_autocommit(w.db)) {
        r.status =
            OutboxStatus(Code::kInvalidArgument, "append_in_transaction: no transaction is open on the "
                                                 "connection (BEGIN one first, or use append())");
        return r;
    }
    const int64_t now = w.now_ms();
    char uuid[outbox::UuidGenerator::kTextSize];
    std::string_view id;
    int64_t ts = 0;
    if (!w.admit(ev, uuid, &id, &ts, r, now)) return r;
    if (!w.breaker.allow(now)) {
        r.status = w.fail_fast();
        return r;
    }
    const Inserted res = w.insert_row(id, ev.aggregate_type, ev.aggregate_id, ev.type, ev.payload, ts);
    // A failed INSERT normally undoes itself only; a RAISE(ROLLBACK) or an
    // error such as SQLITE_FULL rolls back the application's whole
    // transaction. Then nothing of it is written, and the caller must know:
    // carrying on would run its next statements in autocommit mode.
    r.rolled_back = res != Inserted::kRow && sqlite3_get_autocommit(w.db) != 0;
    switch (res) {
    case Inserted::kRow:
        w.breaker.on_success();
        w.written.add();
        w.cache.insert(id, outbox::IdCache::State::kPending, now, sqlite3_last_insert_rowid(w.db));
        break;
    case Inserted::kDuplicate:
        if (!r.rolled_back) {
            w.breaker.on_success();
            w.duplicates.add();
            r.duplicate = true;
            break;
        }
        [[fallthrough]]; // not "ok, a duplicate": the caller's transaction is gone
    case Inserted::kRefused:
        w.breaker.on_success(); // the database answered: it is the event that is refused
        w.refused.add();
        r.status =
            OutboxStatus(Code::kRefused, std::string("refused by the database: ").append(w.step_error));
        break;
    case Inserted::kFailed:
        r.status = w.insert_error(w.step_rc);
        w.note_failure(r.status, now);
        break;
    }
    if (r.rolled_back) {
        std::string msg = r.status.message();
        msg.append("; SQLite rolled back the whole transaction (everything in it is undone, and no "
                   "transaction is open now)");
        r.status = OutboxStatus(r.status.code(), std::move(msg), r.status.sqlite_code());
    }
    w.sync_gauges();
    return r;
}

AppendResult OutboxWriter::append(const OutboxEvent &ev) {
    Impl &w = *impl_;
    AppendResult r;
    const int64_t now = w.now_ms();
    char uuid[outbox::UuidGenerator::kTextSize];
    std::string_view id;
    int64_t ts = 0;
    if (!w.admit(ev, uuid, &id, &ts, r, now)) return r;
    if (w.buffer.size() >= w.opt.batch_size) {
        // A failed batch is still buffered: retry it before taking more.
        if (OutboxStatus st = flush(); !st.ok()) {
            r.status = std::move(st);
            return r;
        }
    }
    Impl::Buffered b{w.arena.size(),
                     id.size(),
                     ev.aggregate_type.size(),
                     ev.aggregate_id.size(),
                     ev.type.size(),
                     ev.payload.size(),
                     ts,
                     ev.tag,
                     w.cache.insert(id, outbox::IdCache::State::kWritten, now)};
    w.arena.append(id).append(ev.aggregate_type).append(ev.aggregate_id).append(ev.type).append(ev.payload);
    w.buffer.push_back(b);
    if (w.buffer.size() >= w.opt.batch_size) r.flush_status = flush();
    w.sync_gauges();
    return r;
}

OutboxStatus OutboxWriter::flush() {
    Impl &w = *impl_;
    if (w.buffer.empty()) return {};
    if (!sqlite3_get_autocommit(w.db))
        return {Code::kInvalidArgument, "flush: a transaction is open on the connection, and the writer "
                                        "commits its batches itself (commit or roll back first)"};
    const int64_t now = w.now_ms();
    if (!w.breaker.allow(now)) return w.fail_fast();
    OutboxStatus st = w.write_batch();
    if (st.ok())
        w.breaker.on_success();
    else
        w.note_failure(st, now);
    return st;
}

size_t OutboxWriter::discard() {
    Impl &w = *impl_;
    size_t n = w.buffer.size();
    for (const Impl::Buffered &b : w.buffer)
        if (b.handle != outbox::IdCache::kNone && w.cache.live(b.handle)) w.cache.erase(b.handle);
    w.buffer.clear();
    w.arena.clear();
    w.sync_gauges();
    return n;
}

OutboxWriterMetrics OutboxWriter::metrics() const {
    const Impl &w = *impl_;
    OutboxWriterMetrics m;
    m.written = w.written.get();
    m.duplicates = w.duplicates.get();
    m.refused = w.refused.get();
    m.db_failures = w.db_failures.get();
    m.failed_fast = w.failed_fast.get();
    m.batches = w.batches.get();
    m.buffered = w.buffered.get();
    m.cached_ids = w.cached_ids.get();
    m.breaker_opens = w.breaker.opens();
    m.breaker_state = w.breaker.state();
    return m;
}

} // namespace cdcflow
