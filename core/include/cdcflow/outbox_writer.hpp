// cdcflow/outbox_writer.hpp: the producer side of the outbox.
//
// An application writes its domain events into the outbox table of its own
// SQLite database (DESIGN.md, "SQLite schemas"); cdcflow's outbox source reads
// them from there. OutboxWriter does that writing:
//
//   - append_in_transaction(): inside a transaction the application opened on
//     the writer's connection, next to its business rows. The event is written
//     if and only if the application commits.
//   - append() / flush(): the writer buffers events and writes them in its own
//     transactions of up to batch_size events (one prepared statement).
//
// Every event is checked before it is written: the envelope (non-empty
// aggregate type, aggregate id and type; id, aggregate type, aggregate id,
// type and payload valid UTF-8; the payload a JSON object; a given
// timestamp within the configured range) and, when
// OutboxWriterOptions::rules is set, the same declarative rules the validator
// stage applies (cdcflow/rules.hpp: the code is shared, so an event the
// producer accepts is not rejected downstream for a rule). A missing event id
// is filled in with a random UUID (version 4) and a missing timestamp with the
// current time. An event id seen recently (TTL window, see the options) is not
// written again, so retrying an append after a timeout is safe. After
// breaker_failures consecutive database failures the writer fails fast for
// breaker_cooldown_ms, then lets one trial through (closed / open / half-open
// circuit breaker); metrics() shows the state.
//
//     sqlite3 *db = ...;                                  // the application's connection
//     cdcflow::OutboxWriterOptions opt;
//     std::unique_ptr<cdcflow::OutboxWriter> w;
//     cdcflow::OutboxStatus st = cdcflow::OutboxWriter::open(db, opt, &w);
//     if (!st.ok()) die(st.message());
//     sqlite3_exec(db, "BEGIN", ...);
//     sqlite3_exec(db, "UPDATE accounts SET ...", ...);   // business data
//     cdcflow::AppendResult r = w->append_in_transaction(
//         {.aggregate_type = "Account", .aggregate_id = "acc-42", .type = "MoneyDeposited",
//          .payload = R"({"amount": "12.34"})"});
//     if (!r.status.ok()) { sqlite3_exec(db, "ROLLBACK", ...); ... }
//     sqlite3_exec(db, "COMMIT", ...);                    // the event commits with the update
//
// Dedupe and rollbacks: an id appended inside a transaction that is then
// rolled back must not count as written, or its retry would be dropped. The
// writer installs no hooks on the connection (they are one per connection and
// may be the application's); instead, when an id appended inside a
// transaction comes again, it looks the earlier row up by rowid: found means
// duplicate, gone (ROLLBACK, ROLLBACK TO) means the retry is written.
//
// No exception crosses this API except std::bad_alloc (and what the
// application's own callbacks in the options throw): every fallible call
// returns an OutboxStatus (or an AppendResult holding one).
//
// Thread-safety: an OutboxWriter is used by one thread at a time (like the
// SQLite connection it writes on). metrics() alone may be called from any
// thread at any time.
#pragma once

#include <cdcflow/rules.hpp>
#include <cdcflow/status.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

struct sqlite3;

namespace cdcflow {

// The outcome of a writer call: cdcflow's one Status (cdcflow/status.hpp).
// The writer answers ok or one of: kRefused (the event breaks a rule or the
// envelope: not written; do not retry it as is), kInvalidArgument (bad
// options, or a call the writer's state does not allow; the message says
// which), kNotFound (open(): the outbox table does not exist and
// create_schema is not set), kDbError (SQLite failed; sqlite_code() has its
// extended result code), kUnavailable (the circuit breaker is open: failed
// fast without touching the database). retryable() is true for kUnavailable
// and for a locked or busy database. Messages are one line of valid UTF-8
// (untrusted bytes it quotes, such as a file name or a trigger's message,
// are escaped as \xNN). The name OutboxStatus stays for source compatibility.
using OutboxStatus = Status;

// One event to append. Borrowed: the writer copies what it keeps, so the
// referenced bytes need only stay valid during the call.
// (Every member has a default, so designated initializers may leave any out.)
struct OutboxEvent {
    std::string_view id{};             // event id; empty: the writer generates a UUIDv4
    std::string_view aggregate_type{}; // e.g. "Account"; must not be empty
    std::string_view aggregate_id{};   // e.g. "acc-42"; must not be empty
    std::string_view type{};           // event type, e.g. "MoneyDeposited"; must not be empty
    std::string_view payload{};        // a JSON object (UTF-8 text)
    // Microseconds since the epoch (0 is 1970-01-01T00:00:00Z). Absent: the
    // writer takes the wall clock (OutboxWriterOptions::wall_us). A given
    // value outside [min_timestamp_us, now + max_timestamp_ahead_ms] is
    // refused (see the options).
    std::optional<int64_t> timestamp_us{};
    uint64_t tag = 0; // opaque to the writer; handed back to on_refused
};

// The outcome of one append.
struct AppendResult {
    // ok(): the event is accepted: written (append_in_transaction: written in
    // the caller's transaction), buffered for the next batch (append), or a
    // duplicate of an event id written recently (duplicate is then true and
    // nothing was done). Otherwise the event was not accepted: kRefused (with
    // the rule or envelope check that failed), kDbError, kUnavailable or
    // kInvalidArgument.
    OutboxStatus status;
    bool duplicate = false;
    // append() only: a batch write that this append triggered (the buffer
    // reached batch_size) failed. The event itself is accepted and stays
    // buffered with the rest of the batch; the next flush() retries.
    OutboxStatus flush_status;
    // append_in_transaction() only: the failed INSERT ended the application's
    // transaction (a trigger's RAISE(ROLLBACK), or an error such as
    // SQLITE_FULL): SQLite rolled all of it back, the application's own rows
    // and the events appended before included, and no transaction is open
    // now. status is then not ok (kRefused or kDbError) and its message says so.
    bool rolled_back = false;

    // The event id that was used: the caller's, or the generated UUID.
    // Empty when the event was refused before an id was chosen.
    std::string_view event_id() const {
        return id_len_ > kInlineId ? std::string_view(long_id_) : std::string_view(id_, id_len_);
    }
    // For the writer: sets what event_id() returns (kept inline for ids up to
    // kInlineId bytes, so a typical append does not allocate for it).
    void set_event_id(std::string_view id);

private:
    static constexpr size_t kInlineId = 40; // a UUID is 36
    char id_[kInlineId] = {};
    size_t id_len_ = 0;
    std::string long_id_;
};

enum class BreakerState : uint8_t { kClosed, kOpen, kHalfOpen };
// "closed", "open" or "half_open".
const char *to_string(BreakerState s);

// A snapshot of the writer's counters (monotonic since open) and state.
struct OutboxWriterMetrics {
    uint64_t written = 0;       // rows inserted: by flush() (committed), by append_in_transaction()
                                // (in the application's transaction: it decides whether they commit)
    uint64_t duplicates = 0;    // appends skipped because the id was written recently
    uint64_t refused = 0;       // events refused by a rule, the envelope or a table constraint
    uint64_t db_failures = 0;   // database calls that failed (each counts towards the breaker)
    uint64_t failed_fast = 0;   // calls refused without touching the database (breaker open)
    uint64_t batches = 0;       // transactions the writer committed itself (flushes)
    uint64_t buffered = 0;      // events waiting in the buffer for the next flush
    uint64_t cached_ids = 0;    // ids in the dedupe window
    uint64_t breaker_opens = 0; // closed/half-open -> open transitions
    BreakerState breaker_state = BreakerState::kClosed;
};

struct OutboxWriterOptions {
    // The outbox table and its columns (DESIGN.md defaults). Names are always
    // quoted in SQL, so any name works. The table must be a rowid table
    // (DESIGN.md's `seq INTEGER PRIMARY KEY AUTOINCREMENT` is one).
    std::string table = "outbox";
    std::string id_column = "id";
    std::string aggregate_type_column = "aggregatetype";
    std::string aggregate_id_column = "aggregateid";
    std::string type_column = "type";
    std::string payload_column = "payload";
    std::string timestamp_column = "timestamp";

    // Create DESIGN.md's outbox table (with seq_column as its AUTOINCREMENT
    // key) and an index on the id column when the table does not exist.
    // Default: false (a missing table is a kNotFound error).
    bool create_schema = false;
    std::string seq_column = "seq";

    // The validator stage's rules. Default: none (only the envelope is checked).
    std::optional<rules::RuleSet> rules;

    // The range of an event's timestamp, when the event gives one: from
    // min_timestamp_us to max_timestamp_ahead_ms after the wall clock at the
    // append, both included; outside it the event is refused, with a reason
    // that shows the value and the range as UTC dates. A timestamp is data
    // from the application: a far-future or negative one would otherwise
    // travel on to every stage and read model. A missing timestamp (the
    // writer takes the wall clock) is never refused.
    // REQUIRES: max_timestamp_ahead_ms >= 0 (huge values saturate).
    // Defaults: 0 (1970-01-01T00:00:00Z) and one day (86,400,000 ms).
    int64_t min_timestamp_us = 0;
    int64_t max_timestamp_ahead_ms = 86'400'000;

    // Most events per transaction of append()/flush(); also the buffer size.
    // REQUIRES: >= 1. Default: 1000.
    size_t batch_size = 1000;

    // Dedupe window: an id is remembered for dedupe_ttl_ms after it was
    // written, and at most dedupe_capacity ids (oldest forgotten first) in at
    // most 64 bytes per id on average. 0 in either disables the window.
    // Memory grows with use: a full window of 1,000,000 UUIDs takes about
    // 110 MB. Defaults: 10 minutes, 1,000,000 ids.
    int64_t dedupe_ttl_ms = 600'000;
    size_t dedupe_capacity = 1'000'000;

    // Circuit breaker: after breaker_failures consecutive failed database
    // calls, calls fail fast (kUnavailable) for breaker_cooldown_ms; then one
    // call is let through: success closes the breaker, failure opens it again.
    // breaker_failures <= 0 disables it. Defaults: 5, 5000 ms.
    int breaker_failures = 5;
    int64_t breaker_cooldown_ms = 5000;

    // Only for open(path): how long a statement waits for a lock held by
    // another connection before failing with SQLITE_BUSY. Default: 5000 ms.
    // (On the application's own connection its own busy timeout applies.)
    int busy_timeout_ms = 5000;

    // A database constraint (a CHECK, a UNIQUE constraint on other columns
    // than the id, or a trigger the application added; also a trigger's
    // RAISE(IGNORE) or RAISE(ROLLBACK)) refused a buffered event while
    // flush() wrote it: the event is dropped, counted as refused, and reported
    // here once the rest of its batch has committed (each of those exactly
    // once: after a RAISE(ROLLBACK) the writer writes the batch again without
    // the refused event). Default: none.
    std::function<void(const OutboxEvent &event, std::string_view reason)> on_refused;

    // Clocks, injectable for tests. monotonic_ms drives the dedupe TTL and the
    // breaker cool-down; wall_us fills missing timestamps and is the "now"
    // of the timestamp range. Defaults:
    // std::chrono::steady_clock and std::chrono::system_clock.
    std::function<int64_t()> monotonic_ms;
    std::function<int64_t()> wall_us;
};

// Writes events into an outbox table. See the top of this file.
class OutboxWriter {
public:
    // Opens a writer on the application's connection `db` (not owned: it must
    // outlive the writer). Checks that the table exists (creating it when
    // options.create_schema is set) with the configured columns, and prepares
    // the insert statement. The connection's settings (journal mode, busy
    // timeout) are left as the application set them.
    // On success stores the writer in *out and returns ok. On failure leaves
    // *out untouched and returns kNotFound (no such table), kInvalidArgument
    // (bad options, a missing column, not a rowid table) or kDbError.
    static OutboxStatus open(sqlite3 *db, OutboxWriterOptions options, std::unique_ptr<OutboxWriter> *out);

    // Opens `path` (which must exist unless options.create_schema is set) on a
    // connection the writer owns, in WAL mode (kept as it is when another
    // connection prevents the switch) with synchronous=NORMAL, then as above.
    // connection() gives the application that connection for its own
    // statements; it is opened with SQLITE_OPEN_NOMUTEX, so it belongs to the
    // writer's thread like the writer.
    static OutboxStatus open(const std::string &path, OutboxWriterOptions options,
                             std::unique_ptr<OutboxWriter> *out);

    // Flushes buffered events (best effort: call flush() first to learn
    // whether that worked), then finalizes the writer's statements and, for
    // open(path), closes the connection.
    ~OutboxWriter();
    OutboxWriter(const OutboxWriter &) = delete;
    OutboxWriter &operator=(const OutboxWriter &) = delete;

    // Appends `event` inside the transaction that is open on connection().
    // REQUIRES: a transaction is open (else kInvalidArgument, nothing done).
    // Returns ok when the row was inserted: it is written if and only if the
    // application commits that transaction (a ROLLBACK, or ROLLBACK TO a
    // savepoint taken before, undoes it, and the same id may be appended
    // again afterwards: the writer forgets ids whose rows it no longer finds).
    // A duplicate id (the dedupe window, or a UNIQUE constraint on the id
    // column that finds the id in the table) is ok with duplicate set, and
    // the transaction goes on. A row that a trigger skips (RAISE(IGNORE)) is
    // kRefused: it was not written.
    // When the database refuses the row (kRefused) or fails (kDbError) only
    // the INSERT is undone, unless AppendResult::rolled_back is set: then
    // SQLite rolled back the whole transaction (see there).
    AppendResult append_in_transaction(const OutboxEvent &event);

    // Buffers `event` (a copy) for the next batch; when the buffer holds
    // batch_size events they are written in one transaction at once (see
    // AppendResult::flush_status). When a failed batch is still buffered and
    // the buffer is full, the event is not accepted: the status is the error
    // of the retried flush.
    AppendResult append(const OutboxEvent &event);

    // Writes every buffered event in one transaction. On success the buffer is
    // empty and ok is returned. On failure nothing of the batch is written,
    // the events stay buffered for the next flush, and kDbError or
    // kUnavailable is returned. kInvalidArgument when a transaction is open on
    // connection() (the writer commits its own transactions): nothing done.
    OutboxStatus flush();

    // Drops the buffered events without writing them, and forgets their ids.
    // Returns how many were dropped. For giving up after a failed flush():
    // the destructor would otherwise try to write them once more.
    size_t discard();

    // Thread-safe (relaxed reads): may be called from any thread.
    OutboxWriterMetrics metrics() const;

    // The connection the writer writes on (the application's, or its own).
    sqlite3 *connection() const;

    struct Impl; // core/outbox; opaque

private:
    explicit OutboxWriter(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

} // namespace cdcflow
