// The embedded host (cdcflow/host.hpp, cdcflow/host.h) in-process, through
// libcdcflow-host.so as an application links it, on real SQLite outboxes
// written with the outbox writer, running the shipped plugins (found
// relative to the library: build/plugins).
#include "plugin_harness.hpp"

#include "common/sqlite.hpp"

#include "run_outcome.hpp"

#include <cdcflow/host.h>
#include <cdcflow/host.hpp>
#include <cdcflow/outbox_writer.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using cdcflow::Status;
using cdcflow::embed::Host;
using cdcflow::embed::StateChange;
using cdcflow::test::TempDir;

namespace {

// The accounts pipeline of pipelines/accounts.yaml on `db`, small batches;
// `settings` adds host settings (indented two spaces); the read model in
// `proj` (default: `db`); `sink` adds keys to the sink stage (indented
// four), `sink_config` to its config (", key: value").
std::string accounts_yaml(const std::string &db, const std::string &settings = "", std::string proj = "",
                          const std::string &sink = "", const std::string &sink_config = "") {
    if (proj.empty()) proj = db;
    return "pipeline: embedded\n"
           "settings:\n"
           "  poll_wait_ms: 10\n"
           "  shutdown_timeout_ms: 10000\n" +
           settings +
           "stages:\n"
           "  - id: outbox\n"
           "    plugin: outbox_source\n"
           "    config: {database: '" +
           db +
           "', create_schema: false, poll_interval_ms: 5}\n"
           "  - id: validate\n"
           "    plugin: validator\n"
           "    config:\n"
           "      rules:\n"
           "        aggregate_types: [Account]\n"
           "        events:\n"
           "          AccountCreated:\n"
           "            owner: {type: string, min_length: 1}\n"
           "            currency: {type: string, pattern: '^[A-Z]{3}$'}\n"
           "          MoneyDeposited:\n"
           "            amount: {type: decimal, max_decimals: 2, min_exclusive: '0', max: '999999999.99'}\n"
           "          MoneyWithdrawn:\n"
           "            amount: {type: decimal, max_decimals: 2, min_exclusive: '0', max: '999999999.99'}\n"
           "          AccountClosed: {}\n"
           "  - id: dedupe\n"
           "    plugin: deduper\n"
           "  - id: project\n"
           "    plugin: projection_sink\n" +
           sink + "    config: {database: '" + proj +
           "', projection: accounts, checkpoint_name: accounts, create_schema: true" + sink_config + "}\n";
}

// Appends the events of accounts [from, to): each created, 10.50 in, 3.25
// out (balance 7.25); for each account of the range, one event the
// validator rejects (a lower-case currency) and one the projection rejects
// (a withdrawal past the balance). 5 events an account: 3 applied, 2 rejected.
void write_accounts(const std::string &db, int from, int to) {
    cdcflow::OutboxWriterOptions o;
    o.create_schema = true;
    std::unique_ptr<cdcflow::OutboxWriter> w;
    REQUIRE(cdcflow::OutboxWriter::open(db, std::move(o), &w).ok());
    for (int i = from; i < to; ++i) {
        std::string id = "acc-" + std::to_string(i);
        auto add = [&](const char *type, const char *payload) {
            auto r = w->append(
                {.aggregate_type = "Account", .aggregate_id = id, .type = type, .payload = payload});
            REQUIRE(r.status.ok());
        };
        add("AccountCreated", R"({"owner": "Ada", "currency": "EUR"})");
        add("MoneyDeposited", R"({"amount": "10.50"})");
        add("AccountCreated", R"({"owner": "Bob", "currency": "eur"})");
        add("MoneyWithdrawn", R"({"amount": "3.25"})");
        add("MoneyWithdrawn", R"({"amount": "1000.00"})");
    }
    REQUIRE(w->flush().ok());
}

// The accounts read model: id -> "balance status version"; empty until
// the sink created it.
std::map<std::string, std::string> accounts(const std::string &db) {
    std::map<std::string, std::string> out;
    if (!std::filesystem::exists(db)) return out;
    cdcflow::sqlite::Db d(db, SQLITE_OPEN_READONLY);
    if (!d.has_table("accounts")) return out;
    auto st = d.prepare("SELECT account_id, balance, status, version FROM accounts");
    while (st.step())
        out[std::string(st.text(0))] =
            std::string(st.text(1)) + " " + std::string(st.text(2)) + " " + std::to_string(st.int64(3));
    return out;
}

int64_t dead_letters(const std::string &db) {
    if (!std::filesystem::exists(db)) return 0;
    cdcflow::sqlite::Db d(db, SQLITE_OPEN_READONLY);
    return d.has_table("dead_letters") ? d.query_int("SELECT count(*) FROM dead_letters") : 0;
}

// Waits (at most 30 s) until the first n accounts' events are all applied
// or dead-lettered: only then is a stop sure to find nothing unread.
void wait_model(const std::string &db, int n) {
    auto deadline = std::chrono::steady_clock::now() + 30s;
    auto done = [&] {
        auto rows = accounts(db);
        if (rows.size() != static_cast<size_t>(n) || dead_letters(db) != 2 * n) return false;
        for (auto &[id, row] : rows)
            if (row != "7.25 open 3") return false;
        return true;
    };
    while (!done() && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(10ms);
}

void expect_model(const std::string &db, int n) {
    auto rows = accounts(db);
    CHECK(rows.size() == static_cast<size_t>(n));
    for (int i = 0; i < n; ++i)
        CHECK(rows["acc-" + std::to_string(i)] == "7.25 open 3");
    CHECK(dead_letters(db) == 2 * n);
}

// A Prometheus text page's samples: "name{labels}" -> value. Every line is
// a comment or "series value"; anything else fails the test.
std::map<std::string, double> parse_prometheus(const std::string &page) {
    std::map<std::string, double> out;
    std::istringstream in(page);
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') continue;
        size_t sp = line.rfind(' ');
        REQUIRE_MESSAGE(sp != std::string::npos, line);
        out[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
    }
    return out;
}

// Collects the states a subscription is told, in order.
struct StateLog {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<std::string> states;
    void add(const std::string &s) {
        {
            std::lock_guard lock(mu);
            states.push_back(s);
        }
        cv.notify_all();
    }
    bool wait_for(const std::string &s, std::chrono::milliseconds t = 20s) {
        std::unique_lock lock(mu);
        return cv.wait_for(lock, t,
                           [&] { return std::find(states.begin(), states.end(), s) != states.end(); });
    }
    std::vector<std::string> seen() {
        std::lock_guard lock(mu);
        return states;
    }
};

// How many of this process's file descriptors are `path` (or its -wal,
// -shm files).
int open_files(const std::string &path) {
    int n = 0;
    std::error_code ec;
    for (const auto &fd : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
        std::error_code lec;
        auto target = std::filesystem::read_symlink(fd.path(), lec);
        if (!lec && target.string().rfind(path, 0) == 0) ++n;
    }
    return n;
}

std::unique_ptr<Host> open_ok(const std::string &yaml) {
    auto h = Host::open_yaml(yaml, "embedded.yaml");
    REQUIRE_MESSAGE(h.ok(), h.status().message());
    return std::move(h.value());
}

} // namespace

TEST_CASE("embed: open errors are the validate command's, with file:line:col") {
    TempDir dir("embed_open");
    std::string db = dir.file("app.db");
    write_accounts(db, 0, 1);
    // A key the outbox source does not declare, on line 8 (the outbox's config).
    std::string yaml = accounts_yaml(db);
    std::string bad = yaml;
    bad.replace(bad.find("poll_interval_ms: 5"), 19, "poll_intervl_ms: 5");
    auto h = Host::open_yaml(bad, "bad.yaml");
    REQUIRE_FALSE(h.ok());
    CHECK(h.status().code() == Status::Code::kConfig);
    CHECK(Host::exit_code(h.status()) == CDCFLOW_EXIT_INVALID);
    CHECK_MESSAGE(h.status().message().find("bad.yaml:8:") == 0, h.status().message());
    CHECK(h.status().message().find("poll_interval_ms") != std::string::npos); // the closest declared key

    // Not YAML at all, and a file that is not there: 3 with the position / the path.
    auto h2 = Host::open_yaml("stages: [", "broken.yaml");
    REQUIRE_FALSE(h2.ok());
    CHECK(Host::exit_code(h2.status()) == CDCFLOW_EXIT_INVALID);
    CHECK(h2.status().message().find("broken.yaml:1:") == 0);
    auto h3 = Host::open(dir.file("missing.yaml"));
    REQUIRE_FALSE(h3.ok());
    CHECK(Host::exit_code(h3.status()) == CDCFLOW_EXIT_INVALID);
    CHECK(h3.status().message().find("missing.yaml") != std::string::npos);

    // The C API from a file: NULL and the same one line, cut to the buffer.
    std::string file = dir.file("bad.yaml");
    {
        std::FILE *f = std::fopen(file.c_str(), "w");
        REQUIRE(f);
        std::fputs(bad.c_str(), f);
        std::fclose(f);
    }
    char err[512];
    CHECK(cdcflow_host_open(file.c_str(), err, sizeof err) == nullptr);
    CHECK_MESSAGE(std::string(err).find(file + ":8:") == 0, err);
    CHECK(std::string(err).find('\n') == std::string::npos);
    char tiny[8];
    CHECK(cdcflow_host_open(file.c_str(), tiny, sizeof tiny) == nullptr);
    CHECK(std::string(tiny).size() == 7);
    CHECK(cdcflow_host_open(file.c_str(), nullptr, 0) == nullptr);
    CHECK(cdcflow_host_open(nullptr, err, sizeof err) == nullptr);
    CHECK(std::string(err).find("NULL") != std::string::npos);

    // The _ex variants answer the failure's code too.
    int code = -1;
    CHECK(cdcflow_host_open_ex(file.c_str(), &code, err, sizeof err) == nullptr);
    CHECK(code == CDCFLOW_EXIT_INVALID);
    code = -1;
    CHECK(cdcflow_host_open_ex(nullptr, &code, err, sizeof err) == nullptr);
    CHECK(code == CDCFLOW_EXIT_USAGE);
    code = -1;
    CHECK(cdcflow_host_open_string_ex("stages: [", "s.yaml", &code, err, sizeof err) == nullptr);
    CHECK(code == CDCFLOW_EXIT_INVALID);
    CHECK(std::string(err).find("s.yaml:1:") == 0);
    code = -1;
    cdcflow_host *good = cdcflow_host_open_string_ex(yaml.c_str(), nullptr, &code, err, sizeof err);
    CHECK(good != nullptr);
    CHECK(code == CDCFLOW_EXIT_OK);
    cdcflow_host_close(good);

    // An empty path is misuse, not YAML text (which read as an empty pipeline, 3, ":1:1").
    auto empty = Host::open("");
    REQUIRE_FALSE(empty.ok());
    CHECK_MESSAGE(Host::exit_code(empty.status()) == CDCFLOW_EXIT_USAGE, empty.status().message());
    CHECK(empty.status().message().find("path is empty") != std::string::npos);
    code = -1;
    CHECK(cdcflow_host_open_ex("", &code, err, sizeof err) == nullptr);
    CHECK(code == CDCFLOW_EXIT_USAGE);

    // A database that cannot be read is the environment's fault: 1, not 3.
    std::string junk = dir.file("junk.db");
    {
        std::FILE *f = std::fopen(junk.c_str(), "w");
        REQUIRE(f);
        std::fputs(std::string(4096, 'x').c_str(), f);
        std::fclose(f);
    }
    auto h4 = Host::open_yaml(accounts_yaml(junk));
    REQUIRE_FALSE(h4.ok());
    CHECK_MESSAGE(Host::exit_code(h4.status()) == CDCFLOW_EXIT_FAILURE, h4.status().message());
    code = -1;
    CHECK(cdcflow_host_open_string_ex(accounts_yaml(junk).c_str(), nullptr, &code, err, sizeof err) ==
          nullptr);
    CHECK(code == CDCFLOW_EXIT_FAILURE);
}

TEST_CASE("embed: drain applies every event once; health and metrics show the run") {
    TempDir dir("embed_drain");
    std::string db = dir.file("app.db");
    write_accounts(db, 0, 40);
    auto h = open_ok(accounts_yaml(db));
    CHECK(h->state() == "idle");
    StateLog log;
    h->subscribe([&](const StateChange &c) { log.add(c.state); });

    Status st = h->drain(60s);
    REQUIRE_MESSAGE(st.ok(), st.message());
    expect_model(db, 40);
    CHECK(h->state() == "stopped");
    REQUIRE(log.wait_for("stopped"));
    CHECK(log.seen().back() == "stopped");
    {
        auto seen = log.seen();
        auto running = std::find(seen.begin(), seen.end(), "running");
        CHECK(std::find(running, seen.end(), "starting") == seen.end()); // never back to starting
    }

    std::string health = h->health_json();
    CHECK(health.find("\"state\":\"stopped\"") != std::string::npos);
    CHECK(health.find("\"events\":200") != std::string::npos);
    CHECK(health.find("\"applied\":120") != std::string::npos);
    CHECK(health.find("\"rejected\":80") != std::string::npos);

    // The page parses, and holds the run's counts per stage and outcome.
    auto samples = parse_prometheus(h->metrics_text());
    CHECK(samples[R"(cdcflow_events_total{pipeline="embedded",stage="project",outcome="applied"})"] == 120);
    CHECK(samples[R"(cdcflow_events_total{pipeline="embedded",stage="validate",outcome="rejected"})"] == 40);
    CHECK(samples[R"(cdcflow_dead_letters_total{pipeline="embedded",stage="project"})"] == 40);
    CHECK(samples.count("process_resident_memory_bytes") == 1);
    CHECK(h->metric("cdcflow_events_total",
                    {{"pipeline", "embedded"}, {"stage", "outbox"}, {"outcome", "passed"}}) == 200);
    CHECK(h->metric_sum("cdcflow_dead_letters_total") == 80);

    // A drain that finished answers the same again; a host runs once.
    CHECK(h->drain(1s).ok());
    Status again = h->start();
    CHECK(again.code() == Status::Code::kInvalidArgument);
    CHECK(Host::exit_code(again) == CDCFLOW_EXIT_USAGE);
    CHECK(h->stop(1s).ok());

    // A second host on the same store: nothing new, nothing applied twice.
    auto h2 = open_ok(accounts_yaml(db));
    REQUIRE(h2->drain(60s).ok());
    CHECK(h2->metric_sum("cdcflow_events_total", {{"stage", "project"}, {"outcome", "applied"}}) == 0);
    expect_model(db, 40);
}

TEST_CASE("embed: start runs until stop, picking up events written meanwhile; callbacks see the states") {
    TempDir dir("embed_start");
    std::string db = dir.file("app.db");
    write_accounts(db, 0, 10);
    auto h = open_ok(accounts_yaml(db));
    StateLog log;
    std::atomic<int> reads{0};
    // The callback reads through the API while it is being called: no deadlock.
    h->subscribe([&](const StateChange &c) {
        log.add(c.state);
        if (!h->health_json().empty() && !h->metrics_text().empty() && !h->state().empty()) ++reads;
        CHECK(c.health_json.find("\"state\":\"" + c.state + "\"") != std::string::npos);
    });
    REQUIRE(h->start().ok());
    REQUIRE(log.wait_for("running"));
    CHECK(h->start().code() == Status::Code::kInvalidArgument);   // already running
    CHECK(h->drain(1s).code() == Status::Code::kInvalidArgument); // started without drain
    write_accounts(db, 10, 20);                                   // while it runs
    wait_model(db, 20);
    REQUIRE(h->stop(10s).ok());
    expect_model(db, 20);
    REQUIRE(log.wait_for("stopped"));
    auto seen = log.seen();
    CHECK(seen.back() == "stopped");
    CHECK(std::find(seen.begin(), seen.end(), "failed") == seen.end());
    CHECK(reads.load() == static_cast<int>(seen.size()));

    // Stop twice: the same answer; start and drain after stop: misuse (2).
    CHECK(h->stop(1s).ok());
    CHECK(Host::exit_code(h->start()) == CDCFLOW_EXIT_USAGE);
    CHECK(Host::exit_code(h->drain(1s)) == CDCFLOW_EXIT_USAGE);
}

TEST_CASE("embed: a second host in the same process on the same checkpoint gets a status") {
    TempDir dir("embed_owned");
    std::string db = dir.file("app.db");
    write_accounts(db, 0, 5);
    auto owner = open_ok(accounts_yaml(db));
    REQUIRE(owner->start().ok());
    auto deadline = std::chrono::steady_clock::now() + 20s;
    while (owner->snapshot().role != "owner" && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(10ms);
    REQUIRE(owner->snapshot().role == "owner");

    // when_owned: refuse: the CLI's exit 6, through both APIs.
    auto refused = open_ok(accounts_yaml(db, "  when_owned: refuse\n"));
    Status st = refused->drain(20s);
    CHECK(st.code() == Status::Code::kOwned);
    CHECK(Host::exit_code(st) == CDCFLOW_EXIT_OWNED);
    CHECK(refused->stop(1s).code() == Status::Code::kOwned); // stop after: the same answer
    CHECK(refused->state() == "stopped");                    // as /health says after a refusal
    char err[512];
    cdcflow_host *c = cdcflow_host_open_string(accounts_yaml(db, "  when_owned: refuse\n").c_str(), nullptr,
                                               err, sizeof err);
    REQUIRE_MESSAGE(c, err);
    CHECK(cdcflow_host_drain(c, 20000, err, sizeof err) == CDCFLOW_EXIT_OWNED);
    CHECK(std::string(err).find("owned by") != std::string::npos);
    cdcflow_host_close(c);

    // when_owned: wait: a standby, which takes over when the owner stops.
    auto standby = open_ok(accounts_yaml(db, "  owner_lease_ms: 2000\n"));
    StateLog log;
    standby->subscribe([&](const StateChange &ch) { log.add(ch.state); });
    REQUIRE(standby->start().ok());
    REQUIRE(log.wait_for("standby"));
    write_accounts(db, 5, 10);
    REQUIRE(owner->stop(10s).ok());
    REQUIRE(log.wait_for("running"));
    wait_model(db, 10);
    REQUIRE(standby->stop(10s).ok());
    expect_model(db, 10);
}

namespace {

struct CState {
    std::mutex mu;
    std::vector<std::string> states;
    cdcflow_host *h = nullptr;
    bool json_ok = true;
};

void on_state(void *user, const char *state, const char *health_json) {
    auto *s = static_cast<CState *>(user);
    // Calls back into the API from the callback: the buffer protocol.
    // The health may grow between the two calls (events counted meanwhile):
    // then the second call answers the new size, and the caller asks again.
    size_t need = cdcflow_host_health_json(s->h, nullptr, 0);
    std::string buf;
    bool ok = false;
    for (int i = 0; i < 10 && !ok && need > 0; ++i) {
        buf.assign(need, '\0');
        size_t got = cdcflow_host_health_json(s->h, buf.data(), buf.size());
        ok = got == need;
        need = got;
    }
    std::lock_guard lock(s->mu);
    s->states.push_back(state);
    s->json_ok =
        s->json_ok && ok && std::string(health_json).find("\"pipeline\":\"embedded\"") != std::string::npos;
}

} // namespace

TEST_CASE("embed: the C API drains like the C++ one; misuse is a status, never a crash") {
    TempDir dir("embed_c");
    std::string db = dir.file("app.db");
    write_accounts(db, 0, 30);
    char err[512];
    cdcflow_host *h = cdcflow_host_open_string(accounts_yaml(db).c_str(), "c.yaml", err, sizeof err);
    REQUIRE_MESSAGE(h, err);
    CState cs;
    cs.h = h;
    CHECK(cdcflow_host_on_state(h, on_state, &cs) == 0);
    CHECK(cdcflow_host_drain(h, 60000, err, sizeof err) == 0);
    CHECK(std::string(err).empty());
    expect_model(db, 30);

    // The buffer protocol: the size needed (NUL included); a short buffer
    // gets a cut copy, NUL-terminated, as snprintf.
    size_t need = cdcflow_host_health_json(h, nullptr, 0);
    REQUIRE(need > 1);
    std::string json(need, '\0');
    CHECK(cdcflow_host_health_json(h, json.data(), json.size()) == need);
    std::string small(need - 1, 'x');
    CHECK(cdcflow_host_health_json(h, small.data(), small.size()) == need);
    CHECK(small.substr(0, need - 2) == json.substr(0, need - 2));
    CHECK(small[need - 2] == '\0');
    char one[1] = {'x'};
    CHECK(cdcflow_host_metrics_text(h, one, 1) > 1);
    CHECK(one[0] == '\0');
    CHECK(json.find("\"events\":150") != std::string::npos);
    CHECK(json[need - 1] == '\0');
    // The loop host.h documents: the page holds figures that move between
    // two calls (the process's CPU seconds, its memory), so the size asked
    // first may be a byte short by the next call (seen under TSan: 24,049
    // bytes asked, 24,050 needed).
    std::string page(64, '\0');
    size_t mneed;
    while ((mneed = cdcflow_host_metrics_text(h, page.data(), page.size())) > page.size())
        page.assign(mneed, '\0');
    REQUIRE(mneed > 1);
    page.resize(mneed - 1);
    auto samples = parse_prometheus(page);
    CHECK(samples[R"(cdcflow_events_total{pipeline="embedded",stage="project",outcome="applied"})"] == 90);

    {
        std::lock_guard lock(cs.mu);
        REQUIRE_FALSE(cs.states.empty());
        CHECK(cs.states.back() == "stopped");
        CHECK(cs.json_ok);
    }
    // Stop twice, start and drain after stop.
    CHECK(cdcflow_host_stop(h, 1000) == 0);
    CHECK(cdcflow_host_stop(h, 1000) == 0);
    CHECK(cdcflow_host_start(h, err, sizeof err) == CDCFLOW_EXIT_USAGE);
    CHECK(std::string(err).find("runs once") != std::string::npos);
    CHECK(cdcflow_host_drain(h, 1000, err, sizeof err) == 0); // the finished drain's answer again
    CHECK(cdcflow_host_last_error(h, nullptr, 0) > 1);
    CHECK(cdcflow_host_on_state(h, nullptr, nullptr) == 0);
    cdcflow_host_close(h);

    // A NULL handle everywhere.
    CHECK(cdcflow_host_start(nullptr, err, sizeof err) == CDCFLOW_EXIT_USAGE);
    CHECK(std::string(err).find("NULL") != std::string::npos);
    CHECK(cdcflow_host_drain(nullptr, 10, err, sizeof err) == CDCFLOW_EXIT_USAGE);
    CHECK(cdcflow_host_stop(nullptr, 10) == CDCFLOW_EXIT_USAGE);
    CHECK(cdcflow_host_health_json(nullptr, err, sizeof err) == 0);
    CHECK(cdcflow_host_metrics_text(nullptr, err, sizeof err) == 0);
    CHECK(cdcflow_host_last_error(nullptr, err, sizeof err) == 0);
    CHECK(cdcflow_host_on_state(nullptr, on_state, nullptr) == CDCFLOW_EXIT_USAGE);
    cdcflow_host_close(nullptr);
    CHECK(std::string(cdcflow_host_version()) == CDCFLOW_VERSION);

    // Close while running: stops first, committing what was read.
    write_accounts(db, 30, 40);
    cdcflow_host *r = cdcflow_host_open_string(accounts_yaml(db).c_str(), nullptr, err, sizeof err);
    REQUIRE_MESSAGE(r, err);
    CHECK(cdcflow_host_start(r, err, sizeof err) == 0);
    wait_model(db, 40);
    cdcflow_host_close(r);
    expect_model(db, 40);

    // Never started: stop is 0 and close is clean.
    cdcflow_host *idle = cdcflow_host_open_string(accounts_yaml(db).c_str(), nullptr, err, sizeof err);
    REQUIRE(idle);
    CHECK(cdcflow_host_stop(idle, 10) == 0);
    CHECK(cdcflow_host_start(idle, err, sizeof err) == CDCFLOW_EXIT_USAGE);
    cdcflow_host_close(idle);
}

TEST_CASE("embed: a callback may destroy the host") {
    TempDir dir("embed_destroy");
    std::string db = dir.file("app.db");
    write_accounts(db, 0, 3);
    auto h = open_ok(accounts_yaml(db));
    Host *raw = h.release();
    std::mutex mu;
    std::condition_variable cv;
    bool gone = false;
    int after = 0; // calls once the destructor returned: none
    // The pipeline's files this process holds open once the destructor
    // returned: none (its stages were destroyed, not left to the watcher).
    int open_after = -1;
    auto on_change = [&](const StateChange &c) {
        {
            std::lock_guard lock(mu);
            if (gone) ++after;
        }
        if (c.state != "running") return;
        delete raw; // stops the pipeline from the watcher thread
        std::lock_guard lock(mu);
        gone = true;
        open_after = open_files(db);
        cv.notify_all();
    };
    raw->subscribe(on_change);
    raw->subscribe(on_change); // a second subscriber of the same delivery is not called after it either
    REQUIRE(raw->start().ok());
    std::unique_lock lock(mu);
    REQUIRE(cv.wait_for(lock, 20s, [&] { return gone; }));
    // The watcher ends on its own; a final "stopped" delivered by mistake
    // would come at once (the run's end wakes it), well within 500 ms.
    CHECK_FALSE(cv.wait_for(lock, 500ms, [&] { return after > 0; }));
    CHECK(after == 0);
    CHECK(open_after == 0);
}

namespace {

// A test pipeline of the test plugins (gen_source -> passthrough ->
// file_sink), found through the pipeline's own plugin_path: `src` and
// `pass` are the source's and the transform's config, `pass_keys` adds
// keys to the transform (indented four), `settings` to the host's.
std::string test_yaml(const std::string &out, const std::string &src, const std::string &pass,
                      const std::string &pass_keys = "", const std::string &settings = "") {
    return "pipeline: t\nplugin_path: ['" CDCFLOW_TEST_PLUGIN_DIR "']\nsettings: {shutdown_timeout_ms: 300" +
           settings + "}\nstages:\n  - id: src\n    plugin: gen_source\n    config: {" + src +
           "}\n  - id: pass\n    plugin: passthrough\n" + pass_keys + "    config: {" + pass + "}\n" +
           "  - id: sink\n    plugin: file_sink\n    config: {output: '" + out + "'}\n";
}

std::unique_ptr<Host> open_test(const std::string &yaml) {
    auto h = Host::open_yaml(yaml, "t.yaml");
    REQUIRE_MESSAGE(h.ok(), h.status().message());
    return std::move(h.value());
}

// Waits (at most 20 s) until file_sink committed `n` lines to `out`.
bool wait_lines(const std::string &out, int n) {
    auto deadline = std::chrono::steady_clock::now() + 20s;
    for (;;) {
        std::ifstream in(out);
        int lines = 0;
        for (std::string line; std::getline(in, line);)
            ++lines;
        if (lines >= n) return true;
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(10ms);
    }
}

int rank(const std::string &state) {
    static const std::vector<std::string> order = {"idle", "starting", "standby", "running", "draining"};
    auto it = std::find(order.begin(), order.end(), state);
    return it == order.end() ? 5 : static_cast<int>(it - order.begin()); // stopped, failed
}

} // namespace

TEST_CASE("embed: the state a callback sees only moves forward through a run") {
    // The runtime used to read "starting" again between the end of a drain's
    // stage threads and the run's end (while the sink released the
    // checkpoint); the watcher, woken by each change, snapshots that window.
    TempDir dir("embed_monotone");
    for (int round = 0; round < 5; ++round) {
        std::string db = dir.file("app" + std::to_string(round) + ".db");
        write_accounts(db, 0, 3);
        auto h = open_ok(accounts_yaml(db));
        CHECK(h->state() == "idle");
        StateLog log;
        h->subscribe([&](const StateChange &c) { log.add(c.state); });
        REQUIRE(h->drain(30s).ok());
        auto seen = log.seen();
        REQUIRE(!seen.empty());
        CHECK(seen.back() == "stopped");
        // (A short run may be delivered coalesced: "running" is not
        // guaranteed, the order is.)
        for (size_t i = 1; i < seen.size(); ++i) {
            const std::string step = seen[i - 1] + " then " + seen[i];
            CHECK_MESSAGE(rank(seen[i - 1]) <= rank(seen[i]), step);
        }
        CHECK(h->state() == "stopped");
        auto end = h->run_end();
        REQUIRE(end.has_value());
        CHECK(end->how == "drained");
        CHECK(end->exit_code == 0);
        CHECK_FALSE(end->stop_asked);
        CHECK(h->totals().events == 15);
        CHECK(h->totals().applied == 9);
        CHECK(h->totals().rejected == 6);
    }
}

TEST_CASE("embed: callbacks see a breaker that opens and closes within a few milliseconds") {
    // The transform fails twice at offset 30; one failure opens its breaker
    // for 15 ms, the probe fails and opens it again, the next probe closes
    // it: two short open spells, each much shorter than the 50 ms a sampling
    // watcher looked at the runtime.
    TempDir dir("embed_breaker");
    for (int round = 0; round < 3; ++round) {
        std::string out = dir.file("events" + std::to_string(round) + ".txt");
        auto h = open_test(test_yaml(out, "count: 60", "retry_at: 30",
                                     "    breaker: {failures: 1, cooldown_ms: 15}\n", ", batch_size: 10"));
        std::mutex mu;
        std::vector<std::string> breakers; // the transform's breaker, as each callback saw it
        h->subscribe([&](const StateChange &c) {
            const std::string key = "\"id\":\"pass\"";
            size_t at = c.health_json.find(key);
            REQUIRE(at != std::string::npos);
            size_t b = c.health_json.find("\"breaker\":\"", at);
            REQUIRE(b != std::string::npos);
            b += 11;
            std::lock_guard lock(mu);
            breakers.push_back(c.health_json.substr(b, c.health_json.find('"', b) - b));
        });
        REQUIRE(h->drain(30s).ok());
        std::lock_guard lock(mu);
        CHECK(std::find(breakers.begin(), breakers.end(), "open") != breakers.end());
        CHECK(breakers.back() == "closed");
        CHECK(h->totals().events == 60);
    }
}

TEST_CASE(
    "embed: close with a plugin stuck in process is bounded, names the stage, and commits nothing more") {
    TempDir dir("embed_hang");
    std::string out = dir.file("events.txt");
    // One event a batch: offsets 1..4 are committed before the stuck one.
    auto h = open_test(test_yaml(out, "count: 0", "hang_at: 5", "", ", batch_size: 1, batch_max_events: 1"));
    StateLog log;
    h->subscribe([&](const StateChange &c) { log.add(c.state); });
    REQUIRE(h->start().ok());
    REQUIRE(log.wait_for("running"));
    // The source reads ahead: offset 5 is in the transform's hands (or its
    // queue) by the time 4 is committed.
    REQUIRE(wait_lines(out, 4));
    // The transform is stuck at offset 5: stop cannot finish in time.
    CHECK(h->stop(200ms).code() == Status::Code::kUnavailable);
    const auto t0 = std::chrono::steady_clock::now();
    Status st = h->close(300ms);
    const auto took = std::chrono::steady_clock::now() - t0;
    CHECK(st.code() == Status::Code::kUnavailable);
    CHECK(Host::exit_code(st) == CDCFLOW_EXIT_TIMEOUT);
    CHECK_MESSAGE(st.message().find("did not stop within 300 ms: stage 'pass' (passthrough) is stuck") !=
                      std::string::npos,
                  st.message());
    CHECK(took < 5s);                                 // bounded (300 ms and a thread join), not "never"
    CHECK(h->close(300ms).message() == st.message()); // a second close answers the same
    CHECK(h->start().code() == Status::Code::kInvalidArgument);
    CHECK(h->state() == "draining"); // the reading functions still answer
    h.reset();                       // the destructor has nothing left to wait for
    // Nothing at or past the stuck offset reached the sink.
    std::ifstream in(out);
    std::string line;
    while (std::getline(in, line))
        CHECK(std::stoll(line) < 5);

    // The destructor alone is bounded the same way (settings.shutdown_timeout_ms).
    auto h2 = open_test(test_yaml(dir.file("events2.txt"), "count: 0", "hang_at: 3", "",
                                  ", batch_size: 1, batch_max_events: 1"));
    StateLog log2;
    h2->subscribe([&](const StateChange &c) { log2.add(c.state); });
    REQUIRE(h2->start().ok());
    REQUIRE(wait_lines(dir.file("events2.txt"), 2));
    const auto t1 = std::chrono::steady_clock::now();
    h2.reset();
    CHECK(std::chrono::steady_clock::now() - t1 < 5s);

    // Through the C API: a code, and the stage in err.
    char err[512];
    cdcflow_host *c = cdcflow_host_open_string(test_yaml(dir.file("events3.txt"), "count: 0", "hang_at: 2",
                                                         "", ", batch_size: 1, batch_max_events: 1")
                                                   .c_str(),
                                               nullptr, err, sizeof err);
    REQUIRE_MESSAGE(c, err);
    REQUIRE(cdcflow_host_start(c, err, sizeof err) == 0);
    REQUIRE(wait_lines(dir.file("events3.txt"), 1));
    const auto t2 = std::chrono::steady_clock::now();
    CHECK(cdcflow_host_close_ex(c, 250, err, sizeof err) == CDCFLOW_EXIT_TIMEOUT);
    CHECK(std::chrono::steady_clock::now() - t2 < 5s);
    CHECK_MESSAGE(std::string(err).find("within 250 ms: stage 'pass' (passthrough) is stuck") !=
                      std::string::npos,
                  err);
    CHECK(cdcflow_host_close_ex(nullptr, 0, err, sizeof err) == CDCFLOW_EXIT_USAGE);
}

TEST_CASE("embed: close() from a callback stops the run; the host still answers the reading functions") {
    TempDir dir("embed_close_cb");
    std::string db = dir.file("app.db");
    write_accounts(db, 0, 3);
    auto h = open_ok(accounts_yaml(db));
    std::mutex mu;
    std::condition_variable cv;
    std::optional<Status> closed;
    h->subscribe([&](const StateChange &c) {
        if (c.state != "running") return;
        Status st = h->close(10s); // on the watcher thread: ends the run, not the watcher
        std::lock_guard lock(mu);
        if (!closed) closed = st;
        cv.notify_all();
    });
    REQUIRE(h->start().ok());
    {
        std::unique_lock lock(mu);
        REQUIRE(cv.wait_for(lock, 20s, [&] { return closed.has_value(); }));
        CHECK(closed->ok());
    }
    CHECK(h->state() == "stopped");
    CHECK(h->health_json().find("\"state\":\"stopped\"") != std::string::npos);
    CHECK(h->close(1s).ok()); // the same answer again
    CHECK(h->start().code() == Status::Code::kInvalidArgument);
    REQUIRE(h->run_end().has_value());
    CHECK(h->run_end()->how == "stopped");
    CHECK(h->run_end()->stop_asked);
}

TEST_CASE("embed: two threads closing one host at once get one answer, bounded (no double join)") {
    TempDir dir("embed_close_twice");
    const std::string out = dir.file("events.txt");
    // The transform is stuck at offset 3: the first close waits its whole
    // bound, so the second one surely arrives while it is under way.
    auto h = open_test(test_yaml(out, "count: 0", "hang_at: 3", "", ", batch_size: 1, batch_max_events: 1"));
    REQUIRE(h->start().ok());
    REQUIRE(wait_lines(out, 2));
    const auto t0 = std::chrono::steady_clock::now();
    Status a, b;
    std::thread other([&] { b = h->close(400ms); });
    std::this_thread::sleep_for(50ms);
    a = h->close(400ms);
    other.join();
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
    CHECK(a.code() == Status::Code::kUnavailable);
    CHECK(b.code() == Status::Code::kUnavailable);
    CHECK(a.message() == b.message());
    CHECK(a.message().find("stage 'pass' (passthrough) is stuck") != std::string::npos);
}

TEST_CASE("embed: how a run ended is decided in one place, for the CLI and the host") {
    using cdcflow::host::run_end;
    CHECK(std::string(run_end(Status::OK(), false)) == "drained");
    CHECK(std::string(run_end(Status::OK(), true)) == "stopped");
    CHECK(std::string(run_end(Status::Internal("boom"), true)) == "failed");
    CHECK(std::string(run_end(Status(Status::Code::kOwned, "owned by pid 1"), false)) == "refused");
    CHECK(std::string(run_end(Status(Status::Code::kFenced, "fenced"), true)) == "refused");
}

TEST_CASE("embed: a drain that a stop cuts short is not answered as drained") {
    TempDir dir("embed_cut");
    std::string db = dir.file("app.db");
    write_accounts(db, 0, 3);
    // The owner holds the checkpoint: the drain stands by and cannot end by itself.
    auto owner = open_ok(accounts_yaml(db));
    REQUIRE(owner->start().ok());
    wait_model(db, 3);
    auto h = open_ok(accounts_yaml(db, "  owner_lease_ms: 2000\n"));
    StateLog log;
    h->subscribe([&](const StateChange &c) { log.add(c.state); });
    Status drained = Status::OK();
    std::thread t([&] { drained = h->drain(0ms); });
    REQUIRE(log.wait_for("standby"));
    CHECK(h->stop(10s).ok()); // the stop itself is clean
    t.join();
    CHECK(drained.code() == Status::Code::kTransient);
    CHECK(Host::exit_code(drained) == CDCFLOW_EXIT_FAILURE);
    CHECK(drained.message().find("stopped before the source was drained") != std::string::npos);
    CHECK(h->drain(1s).code() == Status::Code::kInvalidArgument); // a host runs once
    REQUIRE(owner->stop(10s).ok());
}

TEST_CASE("embed: callbacks see a locked read model open the sink's breaker, and close it once released") {
    TempDir dir("embed_locked");
    std::string outbox = dir.file("outbox.db"), proj = dir.file("proj.db");
    write_accounts(outbox, 0, 5);
    // A short busy timeout and a test-sized breaker: the lock opens it at once.
    auto h = open_ok(accounts_yaml(outbox, "", proj,
                                   "    retry: {backoff_ms: 20, max_backoff_ms: 100}\n"
                                   "    breaker: {failures: 2, cooldown_ms: 300}\n",
                                   ", busy_timeout_ms: 50"));
    std::mutex mu;
    std::condition_variable cv;
    std::vector<bool> healthy; // as each callback saw it
    h->subscribe([&](const StateChange &c) {
        {
            std::lock_guard lock(mu);
            healthy.push_back(c.healthy);
        }
        cv.notify_all();
    });
    auto saw = [&](bool value, size_t after) {
        std::unique_lock lock(mu);
        return cv.wait_for(lock, 20s, [&] {
            return std::find(healthy.begin() + static_cast<std::ptrdiff_t>(std::min(after, healthy.size())),
                             healthy.end(), value) != healthy.end();
        });
    };
    auto count = [&] {
        std::lock_guard lock(mu);
        return healthy.size();
    };
    REQUIRE(h->start().ok());
    wait_model(proj, 5);
    REQUIRE(accounts(proj).size() == 5);
    CHECK(h->snapshot().healthy);

    size_t before_lock = count();
    {
        cdcflow::sqlite::Db locker(proj, SQLITE_OPEN_READWRITE);
        locker.exec("BEGIN EXCLUSIVE");
        write_accounts(outbox, 5, 10);
        REQUIRE(saw(false, before_lock)); // the breaker opened: /health would say 503
        CHECK(h->health_json().find("\"breaker\":\"open\"") != std::string::npos);
        CHECK(h->state() == "running"); // a lock never stops the pipeline
        size_t before_release = count();
        locker.exec("COMMIT");
        REQUIRE(saw(true, before_release));
    }
    wait_model(proj, 10);
    REQUIRE(h->stop(10s).ok());
    expect_model(proj, 10);
}

TEST_CASE("embed: a drain not done in time answers 4 and goes on; a later drain waits for it") {
    TempDir dir("embed_timeout");
    std::string db = dir.file("app.db");
    write_accounts(db, 0, 5);
    // The owner holds the checkpoint: the second host's drain cannot end
    // while it does (a standby), whatever the machine's speed.
    auto owner = open_ok(accounts_yaml(db));
    REQUIRE(owner->start().ok());
    wait_model(db, 5);
    char err[512];
    cdcflow_host *h = cdcflow_host_open_string(accounts_yaml(db, "  owner_lease_ms: 2000\n").c_str(), nullptr,
                                               err, sizeof err);
    REQUIRE_MESSAGE(h, err);
    CHECK(cdcflow_host_drain(h, 200, err, sizeof err) == CDCFLOW_EXIT_TIMEOUT);
    CHECK(std::string(err).find("not drained within 200 ms") != std::string::npos);
    CHECK(cdcflow_host_start(h, err, sizeof err) == CDCFLOW_EXIT_USAGE); // it is draining
    write_accounts(db, 5, 8);
    REQUIRE(owner->stop(10s).ok());
    CHECK(cdcflow_host_drain(h, 30000, err, sizeof err) == 0); // took over, drained
    expect_model(db, 8);
    cdcflow_host_close(h);
}

namespace {

// A legacy outbox of `n` mappable rows (ids 1..n) and two the migrator
// records as unmappable (no topic), ids n+1 and n+2.
void write_legacy(const std::string &db, int n) {
    cdcflow::sqlite::Db d(db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    d.exec("CREATE TABLE legacy_outbox(id INTEGER PRIMARY KEY, topic TEXT, message_key TEXT, "
           "message_type TEXT, body TEXT, created_at TEXT, published INTEGER)");
    d.exec("BEGIN");
    auto s =
        d.prepare("INSERT INTO legacy_outbox VALUES (?1, ?2, ?3, 'AccountCreated', '{\"owner\":\"Ada\"}', "
                  "'2020-01-01T00:00:00Z', 0)");
    for (int i = 1; i <= n + 2; ++i) {
        s.reset();
        s.bind(1, static_cast<int64_t>(i));
        if (i <= n)
            s.bind(2, std::string_view("Account"));
        else
            s.bind_null(2);
        const std::string key = "acc-" + std::to_string(i); // bound without a copy: lives past run()
        s.bind(3, std::string_view(key));
        s.run();
    }
    d.exec("COMMIT");
}

std::string migration_yaml(const std::string &legacy, const std::string &target) {
    return "pipeline: migrate-legacy\n"
           "settings: {poll_wait_ms: 10, shutdown_timeout_ms: 10000}\n"
           "stages:\n"
           "  - id: migrate\n"
           "    plugin: migrator\n"
           "    config: {database: '" +
           legacy +
           "', table: legacy_outbox, poll_interval_ms: 10}\n"
           "  - id: write\n"
           "    plugin: outbox_sink\n"
           "    config: {database: '" +
           target + "', checkpoint_name: legacy-migration, source_stage: migrate, create_schema: true}\n";
}

} // namespace

TEST_CASE("embed: a migration and its verification through the API, with progress callbacks") {
    TempDir dir("embed_migrate");
    std::string legacy = dir.file("legacy.db"), target = dir.file("target.db");
    write_legacy(legacy, 3000);
    auto h = open_ok(migration_yaml(legacy, target));
    std::vector<cdcflow::embed::MigrationProgress> seen;
    auto done = h->migrate(60s, [&](const cdcflow::embed::MigrationProgress &p) {
        CHECK(!h->state().empty()); // the callback may read the host
        seen.push_back(p);
    });
    REQUIRE_MESSAGE(done.ok(), done.status().message());
    const auto &s = done.value();
    CHECK(s.migration == "legacy-migration");
    CHECK(s.migrated_this_run == 3000);
    CHECK(s.migrated == 3000);
    CHECK(s.unmappable_this_run == 2);
    CHECK(s.unmappable == 2);
    CHECK(s.last_legacy_id == 3002);
    REQUIRE_FALSE(seen.empty());
    for (size_t i = 0; i < seen.size(); ++i) {
        CHECK(seen[i].total == 3002);
        if (i) CHECK(seen[i].done >= seen[i - 1].done);
    }
    CHECK(seen.back().done == 3002);
    CHECK(h->state() == "stopped");
    // A finished migration answers the same again (as drain); a host runs once.
    auto same = h->migrate(1s);
    REQUIRE(same.ok());
    CHECK(same.value().migrated_this_run == 3000);
    CHECK(h->drain(1s).ok());
    CHECK(h->start().code() == Status::Code::kInvalidArgument);

    // Verification, read-only: ok, the CLI's report, progress before and after.
    std::vector<cdcflow::embed::MigrationProgress> vseen;
    auto v = h->verify(false, 10, [&](const cdcflow::embed::MigrationProgress &p) { vseen.push_back(p); });
    REQUIRE_MESSAGE(v.ok(), v.status().message());
    CHECK_MESSAGE(v.value().ok, v.value().text);
    CHECK(v.value().failure.empty());
    CHECK(v.value().json.find("\"ok\":true") != std::string::npos);
    REQUIRE(vseen.size() == 2);
    CHECK(vseen[0].done == 0);
    CHECK(vseen[0].total == 3002);
    CHECK(vseen[1].done == 3002);

    // A second run: nothing new; its share is zero, the totals stand.
    auto again = open_ok(migration_yaml(legacy, target));
    auto d2 = again->migrate(60s);
    REQUIRE_MESSAGE(d2.ok(), d2.status().message());
    CHECK(d2.value().migrated_this_run == 0);
    CHECK(d2.value().migrated == 3000);

    // A row lost from the target: verify says so.
    {
        cdcflow::sqlite::Db t(target, SQLITE_OPEN_READWRITE);
        t.exec("DELETE FROM outbox WHERE seq = (SELECT min(seq) FROM outbox)");
    }
    auto bad = again->verify();
    REQUIRE(bad.ok());
    CHECK_FALSE(bad.value().ok);
    CHECK_FALSE(bad.value().failure.empty());

    // Not a migration pipeline: 3, and nothing started. After start: misuse.
    std::string db = dir.file("app.db");
    write_accounts(db, 0, 1);
    auto acc = open_ok(accounts_yaml(db));
    auto no = acc->migrate(1s);
    CHECK(no.status().code() == Status::Code::kConfig);
    CHECK(no.status().message().find("not a migration pipeline") != std::string::npos);
    CHECK(acc->state() == "idle");
    CHECK(acc->verify().status().code() == Status::Code::kConfig);
    auto m2 = open_ok(migration_yaml(legacy, target));
    REQUIRE(m2->start().ok());
    CHECK(m2->migrate(1s).status().code() == Status::Code::kInvalidArgument);
    CHECK(m2->stop(10s).ok());
}

namespace {

struct CProgress {
    std::vector<std::pair<uint64_t, uint64_t>> calls;
};

void on_progress(void *user, uint64_t done, uint64_t total) {
    static_cast<CProgress *>(user)->calls.emplace_back(done, total);
}

} // namespace

TEST_CASE("embed: the C API migrates and verifies, with progress callbacks; misuse is a code") {
    TempDir dir("embed_migrate_c");
    std::string legacy = dir.file("legacy.db"), target = dir.file("target.db");
    write_legacy(legacy, 500);
    char err[512];
    cdcflow_host *h =
        cdcflow_host_open_string(migration_yaml(legacy, target).c_str(), nullptr, err, sizeof err);
    REQUIRE_MESSAGE(h, err);
    CProgress mp;
    CHECK_MESSAGE(cdcflow_host_migrate(h, 60000, on_progress, &mp, err, sizeof err) == 0, err);
    CHECK_MESSAGE(std::string(err).find("500 migrated this run, 500 in all; 2 unmappable") == 0, err);
    REQUIRE_FALSE(mp.calls.empty());
    CHECK(mp.calls.back() == std::make_pair(uint64_t{502}, uint64_t{502}));

    CProgress vp;
    size_t needed = 0;
    char json[64]; // too small: a cut copy, and the size it needs
    CHECK_MESSAGE(
        cdcflow_host_verify(h, 0, on_progress, &vp, json, sizeof json, &needed, err, sizeof err) == 0, err);
    CHECK(needed > sizeof json);
    CHECK(std::string(json).size() == sizeof json - 1);
    std::string whole(needed, '\0');
    CHECK(cdcflow_host_verify(h, 0, nullptr, nullptr, whole.data(), whole.size(), &needed, err, sizeof err) ==
          0);
    CHECK(whole.find("\"ok\":true") != std::string::npos);
    REQUIRE(vp.calls.size() == 2);
    CHECK(vp.calls[1] == std::make_pair(uint64_t{502}, uint64_t{502}));
    {
        cdcflow::sqlite::Db t(target, SQLITE_OPEN_READWRITE);
        t.exec("DELETE FROM outbox WHERE seq = (SELECT min(seq) FROM outbox)");
    }
    CHECK(cdcflow_host_verify(h, 0, nullptr, nullptr, nullptr, 0, nullptr, err, sizeof err) ==
          CDCFLOW_EXIT_FAILURE);
    CHECK(std::string(err).find("verify: ") == 0);
    cdcflow_host_close(h);

    CHECK(cdcflow_host_migrate(nullptr, 0, nullptr, nullptr, err, sizeof err) == CDCFLOW_EXIT_USAGE);
    CHECK(cdcflow_host_verify(nullptr, 0, nullptr, nullptr, nullptr, 0, nullptr, err, sizeof err) ==
          CDCFLOW_EXIT_USAGE);
    std::string db = dir.file("app.db");
    write_accounts(db, 0, 1);
    cdcflow_host *acc = cdcflow_host_open_string(accounts_yaml(db).c_str(), nullptr, err, sizeof err);
    REQUIRE(acc);
    CHECK(cdcflow_host_migrate(acc, 1000, nullptr, nullptr, err, sizeof err) == CDCFLOW_EXIT_INVALID);
    CHECK(std::string(err).find("not a migration pipeline") != std::string::npos);
    cdcflow_host_close(acc);
}
