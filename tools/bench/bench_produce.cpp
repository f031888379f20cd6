// bench_produce: `cdcflow produce` against the plainest possible loader.
//
// Writes N valid bank-account events as JSON lines (with ids) into a file,
// then loads them into an empty outbox, alternating (best of `rounds` each):
//
//   plain    a plain batched INSERT loop in C++: the events already parsed in
//            memory, one prepared statement bound with SQLITE_STATIC,
//            BEGIN/COMMIT every `batch` rows. No parsing, validation, dedupe.
//            The floor that SQLite itself sets.
//   produce  what the real command runs (the producer library, core/produce:
//            the rules file loaded as --rules loads it, then the command's
//            loop over the file): read, parse, validate with the accounts
//            rules, dedupe, write in batches. Only the option parsing and
//            the summary line of `cdcflow produce` are left out.
//   produce-no-rules  the same without --rules (envelope checks only).
//   read+parse  only the producer's reader and line parser over the file
//            (event_lines.hpp), nothing written: the part of `produce` that
//            is not the writer's.
//
// Both use a new database file in the same folder, journal_mode=WAL,
// synchronous=NORMAL, DESIGN.md's outbox table with its id index, and the
// same batch size. Prints figures; asserts nothing.
//
// Usage: bench_produce [N=1000000] [DIR=.] [BATCH=1000] [ROUNDS=2]
#include "event_lines.hpp"
#include "producer.hpp"
#include "rules_file.hpp"

#include <cdcflow/outbox_writer.hpp>

#include <sqlite3.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

struct Event {
    std::string id, aggregate_type, aggregate_id, type, payload;
    int64_t timestamp_us;
};

constexpr const char *kRules =
    R"({"aggregate_types": ["Account"], "events": {)"
    R"("AccountCreated": {"owner": {"type": "string", "min_length": 1},)"
    R"( "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}},)"
    R"("MoneyDeposited": {"amount": {"type": "decimal", "max_decimals": 2, "min_exclusive": "0",)"
    R"( "max": "999999999.99"}},)"
    R"("MoneyWithdrawn": {"amount": {"type": "decimal", "max_decimals": 2, "min_exclusive": "0"}},)"
    R"("AccountClosed": {}}})";

constexpr const char *kSchema =
    "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, "
    "aggregatetype TEXT NOT NULL, aggregateid TEXT NOT NULL, type TEXT NOT NULL, "
    "payload TEXT NOT NULL, timestamp INTEGER NOT NULL);"
    "CREATE INDEX outbox_id_idx ON outbox (id);";

[[noreturn]] void die(const char *what, const std::string &detail = std::string()) {
    std::fprintf(stderr, "bench_produce: %s %s\n", what, detail.c_str());
    std::exit(1);
}

std::vector<Event> make_events(size_t n) {
    std::mt19937_64 rng(42);
    std::vector<Event> out;
    out.reserve(n);
    const size_t accounts = std::max<size_t>(1, n / 50);
    char buf[64];
    for (size_t i = 0; i < n; ++i) {
        Event e;
        uint64_t hi = rng(), lo = rng();
        std::snprintf(buf, sizeof buf, "%08llx-%04llx-4%03llx-%04llx-%012llx",
                      static_cast<unsigned long long>(hi >> 32),
                      static_cast<unsigned long long>((hi >> 16) & 0xffff),
                      static_cast<unsigned long long>(hi & 0xfff),
                      static_cast<unsigned long long>(0x8000 | ((lo >> 48) & 0x3fff)),
                      static_cast<unsigned long long>(lo & 0xffffffffffffULL));
        e.id = buf;
        e.aggregate_type = "Account";
        size_t acc = i % accounts;
        e.aggregate_id = std::string("acc-").append(std::to_string(acc));
        if (i < accounts) {
            e.type = "AccountCreated";
            e.payload = std::string(R"({"owner": "Owner )")
                            .append(std::to_string(acc))
                            .append(R"(", "currency": "EUR"})");
        } else {
            e.type = (i % 3 == 0) ? "MoneyWithdrawn" : "MoneyDeposited";
            std::snprintf(buf, sizeof buf, R"({"amount": "%llu.%02llu"})",
                          static_cast<unsigned long long>(1 + rng() % 1000),
                          static_cast<unsigned long long>(rng() % 100));
            e.payload = buf;
        }
        e.timestamp_us = 1'700'000'000'000'000LL + static_cast<int64_t>(i);
        out.push_back(std::move(e));
    }
    return out;
}

void write_lines(const std::vector<Event> &events, const std::string &path) {
    FILE *f = std::fopen(path.c_str(), "wb");
    if (!f) die("cannot write", path);
    for (const Event &e : events)
        std::fprintf(f,
                     "{\"id\": \"%s\", \"aggregatetype\": \"%s\", \"aggregateid\": \"%s\", \"type\": \"%s\", "
                     "\"payload\": %s, \"timestamp\": %lld}\n",
                     e.id.c_str(), e.aggregate_type.c_str(), e.aggregate_id.c_str(), e.type.c_str(),
                     e.payload.c_str(), static_cast<long long>(e.timestamp_us));
    std::fclose(f);
}

void remove_db(const std::string &path) {
    for (const char *suffix : {"", "-wal", "-shm", "-journal"})
        std::remove(std::string(path).append(suffix).c_str());
}

void exec(sqlite3 *db, const char *sql) {
    char *err = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) die(sql, err ? err : "?");
}

int64_t count_rows(const std::string &path) {
    sqlite3 *db = nullptr;
    sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
    sqlite3_stmt *st = nullptr;
    int64_t n = -1;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM outbox", -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CPU time of this process (user + system): less disturbed than wall time by
// other work on a shared machine.
double cpu_s() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

struct Timing {
    double wall = 1e100, cpu = 1e100;
    void keep_best(double w, double c) {
        wall = std::min(wall, w);
        cpu = std::min(cpu, c);
    }
};

// The baseline: open, same PRAGMAs and schema, batched inserts of parsed events.
void run_plain(const std::vector<Event> &events, const std::string &path, size_t batch, Timing *t) {
    remove_db(path);
    double t0 = now_s(), c0 = cpu_s();
    sqlite3 *db = nullptr;
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        nullptr) != SQLITE_OK)
        die("cannot open", path);
    exec(db, "PRAGMA journal_mode=WAL");
    exec(db, "PRAGMA synchronous=NORMAL");
    exec(db, kSchema);
    sqlite3_stmt *ins = nullptr;
    const char *sql = "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, timestamp) "
                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &ins, nullptr) != SQLITE_OK)
        die("prepare");
    size_t in_tx = 0;
    for (const Event &e : events) {
        if (in_tx == 0) exec(db, "BEGIN IMMEDIATE");
        sqlite3_bind_text64(ins, 1, e.id.data(), e.id.size(), SQLITE_STATIC, SQLITE_UTF8);
        sqlite3_bind_text64(ins, 2, e.aggregate_type.data(), e.aggregate_type.size(), SQLITE_STATIC,
                            SQLITE_UTF8);
        sqlite3_bind_text64(ins, 3, e.aggregate_id.data(), e.aggregate_id.size(), SQLITE_STATIC, SQLITE_UTF8);
        sqlite3_bind_text64(ins, 4, e.type.data(), e.type.size(), SQLITE_STATIC, SQLITE_UTF8);
        sqlite3_bind_text64(ins, 5, e.payload.data(), e.payload.size(), SQLITE_STATIC, SQLITE_UTF8);
        sqlite3_bind_int64(ins, 6, e.timestamp_us);
        if (sqlite3_step(ins) != SQLITE_DONE) die(sqlite3_errmsg(db));
        sqlite3_reset(ins);
        if (++in_tx == batch) {
            exec(db, "COMMIT");
            in_tx = 0;
        }
    }
    if (in_tx) exec(db, "COMMIT");
    sqlite3_finalize(ins);
    sqlite3_close(db);
    t->keep_best(now_s() - t0, cpu_s() - c0);
}

// The producer's loop over the file, into a new database, as `cdcflow
// produce --create-schema --batch-size BATCH [--rules RULES]` runs it.
void run_produce(const std::string &input, const std::string &path, const std::string &rules, size_t batch,
                 Timing *t) {
    remove_db(path);
    int in = ::open(input.c_str(), O_RDONLY);
    if (in < 0) die("cannot open", input);
    double t0 = now_s(), c0 = cpu_s();
    cdcflow::OutboxWriterOptions wo;
    wo.batch_size = batch;
    wo.create_schema = true;
    if (!rules.empty()) {
        std::string error;
        wo.rules = cdcflow::produce::load_rules_file(rules, cdcflow::host::process_env(), &error);
        if (!wo.rules) die("rules:", error);
    }
    std::unique_ptr<cdcflow::OutboxWriter> writer;
    if (cdcflow::OutboxStatus st = cdcflow::OutboxWriter::open(path, std::move(wo), &writer); !st.ok())
        die("cannot open the outbox:", st.message());
    uint64_t refused = 0;
    cdcflow::produce::ProduceHooks hooks;
    hooks.refused = [&](uint64_t, std::string_view) { ++refused; };
    cdcflow::produce::ProduceOutcome out = cdcflow::produce::produce_lines(in, *writer, hooks);
    writer.reset(); // closes the database: part of the work
    double secs = now_s() - t0, cpu = cpu_s() - c0;
    ::close(in);
    if (out.end != cdcflow::produce::ProduceOutcome::End::kDone)
        die("produce failed:", out.db_status.message());
    if (refused) die("produce refused lines:", std::to_string(refused));
    t->keep_best(secs, cpu);
}

// The reader and the parser alone: every line parsed, nothing written.
void run_parse(const std::string &input, size_t n, Timing *t) {
    int in = ::open(input.c_str(), O_RDONLY);
    if (in < 0) die("cannot open", input);
    double t0 = now_s(), c0 = cpu_s();
    cdcflow::produce::LineReader reader(in);
    cdcflow::produce::EventLineParser parser;
    cdcflow::OutboxEvent ev;
    std::string why;
    std::string_view line;
    size_t parsed = 0, payload_bytes = 0;
    while (reader.next(&line, {}, {}) == cdcflow::produce::LineReader::Got::kLine) {
        if (!parser.parse(line, &ev, &why)) die("parse:", why);
        ++parsed;
        payload_bytes += ev.payload.size(); // uses the result
    }
    double secs = now_s() - t0, cpu = cpu_s() - c0;
    ::close(in);
    if (parsed != n || payload_bytes == 0) die("parsed lines:", std::to_string(parsed));
    t->keep_best(secs, cpu);
}

} // namespace

int main(int argc, char **argv) {
    size_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1'000'000;
    std::string dir = argc > 2 ? argv[2] : ".";
    size_t batch = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 1000;
    int rounds = argc > 4 ? std::atoi(argv[4]) : 2;
    if (n == 0 || batch == 0 || rounds < 1) die("usage: bench_produce [N] [DIR] [BATCH] [ROUNDS]");

    auto in_dir = [&](const char *name) { return std::string(dir).append("/").append(name); };
    const std::string input = in_dir("bench_produce.jsonl"), rules = in_dir("bench_produce_rules.json");
    const std::string plain_db = in_dir("bench_plain.db"), produce_db = in_dir("bench_produce.db");
    std::vector<Event> events = make_events(n);
    write_lines(events, input);
    if (FILE *f = std::fopen(rules.c_str(), "wb")) {
        std::fputs(kRules, f);
        std::fclose(f);
    }

    Timing plain, produce, produce_nr, parse;
    for (int r = 0; r < rounds; ++r) {
        run_plain(events, plain_db, batch, &plain);
        run_produce(input, produce_db, rules, batch, &produce);
        run_produce(input, produce_db, "", batch, &produce_nr);
        run_parse(input, n, &parse);
    }
    int64_t rows = count_rows(produce_db);
    if (rows != static_cast<int64_t>(n)) die("rows written by produce:", std::to_string(rows));

    std::printf("%zu events, batch %zu, WAL + synchronous=NORMAL, folder %s, best of %d, %u cores\n", n,
                batch, dir.c_str(), rounds, std::thread::hardware_concurrency());
    std::printf("%-38s %9s %12s %9s %9s %9s\n", "", "wall s", "events/s", "vs plain", "cpu s", "vs plain");
    auto row = [&](const char *name, const Timing &t) {
        std::printf("%-38s %9.3f %12.0f %8.2fx %9.3f %8.2fx\n", name, t.wall, static_cast<double>(n) / t.wall,
                    plain.wall / t.wall, t.cpu, plain.cpu / t.cpu);
    };
    row("plain INSERT loop (parsed, no checks)", plain);
    row("cdcflow produce --rules (accounts)", produce);
    row("cdcflow produce (envelope only)", produce_nr);
    row("read + parse only (nothing written)", parse);
    for (const std::string &p : {plain_db, produce_db})
        remove_db(p);
    std::remove(input.c_str());
    std::remove(rules.c_str());
    return 0;
}
