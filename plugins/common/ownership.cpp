#include "common/ownership.hpp"

#include "base/clock.hpp"

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <ctime>
#include <fstream>
#include <random>
#include <sstream>
#include <unistd.h>
#include <vector>

namespace cdcflow::ownership {

const char *const kOwnersDdl =
    "CREATE TABLE IF NOT EXISTS cdcflow_owners("
    "name TEXT NOT NULL, \"partition\" TEXT NOT NULL, "
    "epoch INTEGER NOT NULL, " // fencing token: +1 at every change of owner
    "host TEXT NOT NULL, pid INTEGER NOT NULL, boot_id TEXT NOT NULL, pid_ns TEXT NOT NULL, "
    "start_ticks INTEGER NOT NULL, nonce TEXT NOT NULL, "
    "lease_ms INTEGER NOT NULL, heartbeat INTEGER NOT NULL, "
    "acquired_at INTEGER NOT NULL, renewed_at INTEGER NOT NULL, " // wall clock, for people only
    "released INTEGER NOT NULL DEFAULT 0, "
    "PRIMARY KEY(name, \"partition\"))";

namespace {

using base::wall_us;

std::string read_first_line(const std::string &path) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    return line;
}

// /proc/<pid>/stat: "pid (comm) state ppid ... starttime(22) ...". comm may
// hold spaces and parentheses: the fields start after the last ')'.
struct ProcStat {
    char state = '?';
    int64_t start_ticks = 0;
};
std::optional<ProcStat> read_proc_stat(const std::string &pid) {
    std::string line = read_first_line("/proc/" + pid + "/stat");
    size_t close = line.rfind(')');
    if (close == std::string::npos) return std::nullopt;
    std::istringstream rest(line.substr(close + 1));
    std::vector<std::string> f;
    for (std::string x; rest >> x;)
        f.push_back(x);
    if (f.size() < 20) return std::nullopt;
    ProcStat st;
    st.state = f[0].empty() ? '?' : f[0][0];
    st.start_ticks = std::strtoll(f[19].c_str(), nullptr, 10);
    return st;
}

// Renewals every third of the lease: one that fails (a busy database) is
// tried again well before a standby may take over.
std::chrono::milliseconds renewal_period(uint32_t lease_ms) {
    return std::chrono::milliseconds(std::max<uint32_t>(lease_ms / 3, 10));
}

// How long a claim's statements wait for another writer: about a renewal
// period (the next period tries again), at least 100 ms and at most 5 s.
int busy_timeout_ms(uint32_t lease_ms) {
    return static_cast<int>(std::clamp<uint32_t>(lease_ms / 3, 100, 5000));
}

std::string random_nonce() {
    std::random_device rd;
    uint64_t v = (uint64_t{rd()} << 32) ^ rd();
    char buf[20];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
    return buf;
}

} // namespace

const Identity &Identity::self() {
    static const Identity me = [] {
        Identity id;
        char host[256] = {0};
        if (gethostname(host, sizeof host - 1) == 0) id.host = host;
        id.pid = static_cast<int64_t>(getpid());
        id.boot_id = read_first_line("/proc/sys/kernel/random/boot_id");
        char ns[128];
        ssize_t n = readlink("/proc/self/ns/pid", ns, sizeof ns - 1);
        if (n > 0) id.pid_ns.assign(ns, static_cast<size_t>(n));
        if (auto st = read_proc_stat("self")) id.start_ticks = st->start_ticks;
        return id;
    }();
    return me;
}

std::optional<bool> process_alive(const Identity &owner, const Identity &me) {
    if (owner.boot_id.empty() || owner.boot_id != me.boot_id || owner.pid_ns.empty() ||
        owner.pid_ns != me.pid_ns)
        return std::nullopt;
    // Only ESRCH means "no such process"; EPERM (another user's process) is
    // alive. /proc may be hidden (hidepid, ProtectProc) or unreadable: what
    // cannot be known then falls back to watching the heartbeat.
    if (::kill(static_cast<pid_t>(owner.pid), 0) != 0 && errno == ESRCH) return false;
    std::optional<ProcStat> st = read_proc_stat(std::to_string(owner.pid));
    if (!st) return std::nullopt;
    if (st->state == 'Z' || st->state == 'X') return false; // exited: it holds no lock
    return st->start_ticks == owner.start_ticks;            // else the pid was reused
}

struct Lease::Row {
    int64_t epoch = 0;
    Identity who;
    std::string nonce;
    int64_t lease_ms = 0;
    int64_t heartbeat = 0;
    int64_t acquired_at = 0;
    bool released = false;
};

Lease::Lease(LeaseOptions opts) : opt_(std::move(opts)), nonce_(random_nonce()) {
    key_text_ = "checkpoint '" + opt_.name + "'" +
                (opt_.partition.empty() ? std::string() : " partition '" + opt_.partition + "'") + " of '" +
                opt_.database + "'";
    if (opt_.renewer) opt_.renewer->check(*this); // before anything is claimed
    conn(); // a database that cannot be opened fails here, before any attempt
}

Lease::~Lease() {
    stop_renewing();
}

sqlite::Db open_claims_db(const std::string &database, uint32_t lease_ms) {
    return sqlite::Db(database, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, busy_timeout_ms(lease_ms));
}

sqlite::Db &Lease::conn() {
    // The owner's shared connection only with a shared renewal: a renewal
    // thread of the lease's own would use it from another thread.
    if (opt_.connection && opt_.renewer) return *opt_.connection;
    if (!db_) db_ = open_claims_db(opt_.database, opt_.lease_ms);
    return db_;
}

std::optional<Lease::Row> Lease::read_row(sqlite::Db &db) {
    sqlite::Stmt s(db, "SELECT epoch, host, pid, boot_id, pid_ns, start_ticks, nonce, lease_ms, heartbeat, "
                       "acquired_at, released FROM cdcflow_owners WHERE name = ?1 AND \"partition\" = ?2");
    s.bind(1, std::string_view(opt_.name)).bind(2, std::string_view(opt_.partition));
    if (!s.step()) return std::nullopt;
    Row r;
    r.epoch = s.int64(0);
    r.who.host = s.text(1);
    r.who.pid = s.int64(2);
    r.who.boot_id = s.text(3);
    r.who.pid_ns = s.text(4);
    r.who.start_ticks = s.int64(5);
    r.nonce = s.text(6);
    r.lease_ms = s.int64(7);
    r.heartbeat = s.int64(8);
    r.acquired_at = s.int64(9);
    r.released = s.int64(10) != 0;
    return r;
}

std::string Lease::describe(const Row &row) const {
    return key_text_ + " is owned by host '" + row.who.host + "' pid " + std::to_string(row.who.pid) +
           " (since " + base::utc(row.acquired_at, base::UtcDigits::kSeconds) + ", epoch " +
           std::to_string(row.epoch) + ")";
}

Lease::Attempt Lease::try_acquire() {
    if (owned()) return {true, key_text_ + ": already owned by this process"};
    if (!conn().has_table("cdcflow_owners")) conn().exec(kOwnersDdl);
    std::optional<Row> row = read_row(conn());
    const Identity &me = Identity::self();
    std::string how;
    if (!row) {
        how = "a new claim";
    } else if (row->released) {
        how = "released by host '" + row->who.host + "' pid " + std::to_string(row->who.pid);
    } else if (process_alive(row->who, me) == std::optional<bool>(false)) {
        how = "taken over from pid " + std::to_string(row->who.pid) + " on this machine: its process is gone";
    } else {
        // Alive, frozen, or on another machine: wait until its heartbeat has
        // stood still for its lease, measured on this host's own clock.
        auto now = std::chrono::steady_clock::now();
        if (row->epoch != seen_epoch_ || row->heartbeat != seen_heartbeat_) {
            seen_epoch_ = row->epoch;
            seen_heartbeat_ = row->heartbeat;
            seen_at_ = now;
            return {false, describe(*row)};
        }
        auto still = std::chrono::duration_cast<std::chrono::milliseconds>(now - seen_at_).count();
        if (still < row->lease_ms) return {false, describe(*row)};
        how = "taken over from host '" + row->who.host + "' pid " + std::to_string(row->who.pid) +
              ": no renewal for " + std::to_string(still) + " ms (its lease is " +
              std::to_string(row->lease_ms) + " ms)";
    }
    if (!claim(row)) {
        // Someone else moved first; look again on the next call.
        std::optional<Row> now = read_row(conn());
        return {false, now ? describe(*now) : key_text_ + " is being claimed by another process"};
    }
    return {true, key_text_ + ": owned by this process (epoch " + std::to_string(epoch_) + ", " + how + ")"};
}

bool Lease::claim(const std::optional<Row> &seen) {
    const Identity &me = Identity::self();
    const int64_t now = wall_us();
    sqlite::Transaction tx(conn());
    sqlite::Stmt s;
    if (!seen) {
        s = conn().prepare(
            "INSERT OR IGNORE INTO cdcflow_owners(name, \"partition\", epoch, host, pid, boot_id, pid_ns, "
            "start_ticks, nonce, lease_ms, heartbeat, acquired_at, renewed_at, released) "
            "VALUES(?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10, ?10, 0)");
    } else {
        // Compare-and-swap: only if the row is still the one we judged.
        s = conn().prepare(
            "UPDATE cdcflow_owners SET epoch = epoch + 1, host = ?3, pid = ?4, boot_id = ?5, "
            "pid_ns = ?6, start_ticks = ?7, nonce = ?8, lease_ms = ?9, heartbeat = 0, "
            "acquired_at = ?10, renewed_at = ?10, released = 0 "
            "WHERE name = ?1 AND \"partition\" = ?2 AND epoch = ?11 AND heartbeat = ?12 AND released = ?13");
        s.bind(11, seen->epoch).bind(12, seen->heartbeat).bind(13, int64_t{seen->released ? 1 : 0});
    }
    s.bind(1, std::string_view(opt_.name))
        .bind(2, std::string_view(opt_.partition))
        .bind(3, std::string_view(me.host))
        .bind(4, me.pid)
        .bind(5, std::string_view(me.boot_id))
        .bind(6, std::string_view(me.pid_ns))
        .bind(7, me.start_ticks)
        .bind(8, std::string_view(nonce_))
        .bind(9, static_cast<int64_t>(opt_.lease_ms))
        .bind(10, now);
    s.run();
    if (conn().changes() != 1) return false; // tx rolls back
    tx.commit();
    epoch_ = seen ? seen->epoch + 1 : 1;
    if (opt_.renewer) {
        opt_.renewer->add(*this);
        shared_renewal_ = true;
        return true;
    }
    stopping_ = false;
    renewer_ = std::thread([this] { renew_loop(); });
    return true;
}

// The WHERE clause that names this claim: this epoch and this process's
// nonce (a row deleted and re-created by hand restarts the epochs; the nonce
// still tells this claim from a new one), not released.
static const char *const kThisClaim =
    "name = ?2 AND \"partition\" = ?3 AND epoch = ?4 AND nonce = ?5 AND released = 0";

// The UPDATE of this claim's row that changes `set` (and renewed_at).
static std::string update_claim_sql(const char *set) {
    return std::string("UPDATE cdcflow_owners SET ") + set + ", renewed_at = ?1 WHERE " + kThisClaim;
}
static const char *const kRenew = "heartbeat = heartbeat + 1";

static void bind_claim(sqlite::Stmt &s, const LeaseOptions &opt, int64_t epoch, const std::string &nonce) {
    s.bind(1, wall_us())
        .bind(2, std::string_view(opt.name))
        .bind(3, std::string_view(opt.partition))
        .bind(4, epoch)
        .bind(5, std::string_view(nonce));
}

bool Lease::update_claim(const char *set) {
    sqlite::Stmt s(conn(), update_claim_sql(set));
    bind_claim(s, opt_, epoch_, nonce_);
    s.run();
    return conn().changes() == 1;
}

void Lease::renewed_by_commit() {
    renewed_at_.store(std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_relaxed);
}

bool Lease::renewal_due(std::chrono::steady_clock::duration every) const {
    // The owner's own commits renew the claim in their transactions
    // (Fence::check): under load the renewal thread has nothing to do, and
    // never competes with the sink for the write lock.
    const auto last = std::chrono::steady_clock::time_point(
        std::chrono::steady_clock::duration(renewed_at_.load(std::memory_order_relaxed)));
    return std::chrono::steady_clock::now() - last >= every;
}

std::string Lease::lost_text(sqlite::Db &db) {
    std::string now = key_text_ + " was taken over";
    try {
        std::optional<Row> row = read_row(db);
        now = row && !row->released ? describe(*row) : key_text_ + " was released or removed";
    } catch (const std::exception &) {
        // Who has it now is only for the message.
    }
    return "ownership lost: " + now + "; this process (epoch " + std::to_string(epoch_) +
           ") commits nothing more";
}

void Lease::renew_loop() {
    const auto every = renewal_period(opt_.lease_ms);
    uint32_t failures = 0;
    std::unique_lock lock(mu_);
    for (;;) {
        if (cv_.wait_for(lock, every, [&] { return stopping_; })) return;
        if (!renewal_due(every)) continue;
        lock.unlock();
        try {
            if (!update_claim(kRenew)) {
                if (opt_.on_lost) opt_.on_lost(lost_text(conn()));
                return;
            }
            failures = 0;
        } catch (const std::exception &e) {
            // Busy with another writer: the next renewal will do. Say so when
            // it keeps happening, since a standby may take over meanwhile.
            if (++failures % 3 == 0 && opt_.warn)
                opt_.warn("cannot renew ownership of " + key_text_ + " (" + std::to_string(failures) +
                          " times in a row): " + e.what());
        } catch (...) {
            if (++failures % 3 == 0 && opt_.warn) opt_.warn("cannot renew ownership of " + key_text_);
        }
        lock.lock();
    }
}

void Lease::stop_renewing() {
    if (shared_renewal_) {
        opt_.renewer->remove(*this);
        shared_renewal_ = false;
        return;
    }
    if (!renewer_.joinable()) return;
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    renewer_.join();
}

void Lease::release() {
    stop_renewing();
    if (!owned()) return;
    try {
        update_claim("released = 1");
    } catch (const std::exception &e) {
        if (opt_.warn)
            opt_.warn("cannot release " + key_text_ +
                      " (a standby takes over after the lease instead): " + e.what());
    }
    epoch_ = 0;
}

Renewer::Renewer(std::string database, uint32_t lease_ms, std::function<void(const std::string &)> warn)
    : database_(std::move(database)), every_(renewal_period(lease_ms)),
      busy_timeout_ms_(busy_timeout_ms(lease_ms)), warn_(std::move(warn)) {}

Renewer::~Renewer() {
    assert(leases_.empty() && "a Lease outlives its Renewer");
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void Renewer::check(const Lease &lease) const {
    // Renewed on this database at this lease's period, or not at all.
    if (lease.opt_.database != database_ || renewal_period(lease.opt_.lease_ms) != every_)
        throw Error(CDCFLOW_ERR_INTERNAL,
                    lease.key_text_ + ": to be renewed with the claims of another database or lease");
}

void Renewer::add(Lease &lease) {
    std::lock_guard lock(mu_);
    // The thread first: if it cannot start, no lease is left registered.
    if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
    leases_.push_back(&lease);
}

void Renewer::remove(Lease &lease) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !busy_; });
    leases_.erase(std::remove(leases_.begin(), leases_.end(), &lease), leases_.end());
}

void Renewer::loop() {
    std::unique_lock lock(mu_);
    for (;;) {
        if (cv_.wait_for(lock, every_, [&] { return stopping_; })) return;
        std::vector<Lease *> due;
        try {
            for (Lease *l : leases_)
                if (l->renewal_due(every_)) due.push_back(l);
        } catch (const std::bad_alloc &) {
            continue; // no memory for the list: the next period tries again
        }
        if (due.empty()) continue;
        busy_ = true;
        lock.unlock();
        // on_lost is called once the leases may go again (not busy), from
        // copies: whatever it does then cannot wait for this thread.
        std::vector<std::pair<std::function<void(const std::string &)>, std::string>> tell;
        std::vector<Lease *> lost;
        try {
            for (auto &[l, why] : renew(due)) {
                tell.emplace_back(l->opt_.on_lost, std::move(why));
                lost.push_back(l);
            }
        } catch (...) {
            // Memory ran out for the messages: a lease not told stays
            // registered, is found lost again and told at the next period.
            if (lost.size() < tell.size()) tell.pop_back();
        }
        lock.lock();
        // Lost: renewed no more (as a lease's own thread ends).
        for (Lease *l : lost)
            leases_.erase(std::remove(leases_.begin(), leases_.end(), l), leases_.end());
        busy_ = false;
        cv_.notify_all();
        if (tell.empty()) continue;
        lock.unlock();
        for (auto &[fn, why] : tell)
            try {
                if (fn) fn(why);
            } catch (...) {
                // Told (a second call would tell twice); this thread goes on.
            }
        lock.lock();
    }
}

std::vector<std::pair<Lease *, std::string>> Renewer::renew(const std::vector<Lease *> &due) {
    // A claim whose row is no longer its own is lost whether or not the
    // transaction commits (epochs only grow); who has it now is read in the
    // transaction, which holds the write lock, so that read never waits.
    std::vector<std::pair<Lease *, std::string>> lost;
    try {
        if (!renew_) {
            // Not created: a renewal never makes a database that is gone.
            if (!db_) db_ = sqlite::Db(database_, SQLITE_OPEN_READWRITE, busy_timeout_ms_);
            renew_ = db_.prepare(update_claim_sql(kRenew));
        }
        sqlite::Transaction tx(db_);
        for (Lease *l : due) {
            bind_claim(renew_, l->opt_, l->epoch_, l->nonce_);
            renew_.run();
            // Not the lease's connection: its owner's thread may use that.
            if (renew_.changes() != 1) lost.emplace_back(l, l->lost_text(db_));
        }
        tx.commit();
        failures_ = 0;
    } catch (const std::exception &e) {
        // Busy with another writer: the next period will do. Say so when it
        // keeps happening, since a standby may take over meanwhile.
        if (++failures_ % 3 == 0 && warn_)
            warn_("cannot renew ownership of " + due.front()->key_text_ +
                  (due.size() > 1 ? " and " + std::to_string(due.size() - 1) + " more" : std::string()) +
                  " (" + std::to_string(failures_) + " times in a row): " + e.what());
    }
    return lost;
}

size_t Renewer::size() {
    std::lock_guard lock(mu_);
    return leases_.size();
}

Fence::Fence(sqlite::Db &db, Lease &lease)
    : lease_(&lease), renew_(db, update_claim_sql(kRenew)),
      owner_(db,
             "SELECT epoch, released, host, pid FROM cdcflow_owners WHERE name = ?1 AND \"partition\" = ?2") {
}

void Fence::check() {
    // Runs inside the sink's write transaction: the row cannot change
    // between this statement and the COMMIT. Still ours: this also renews
    // the claim, committed with the batch.
    bind_claim(renew_, lease_->opt_, lease_->epoch(), lease_->nonce_);
    renew_.run();
    if (sqlite3_changes64(sqlite3_db_handle(renew_.raw())) == 1) return;
    sqlite::ResetOnExit guard{owner_};
    owner_.bind(1, std::string_view(lease_->name())).bind(2, std::string_view(lease_->partition()));
    std::string now = "removed";
    if (owner_.step())
        now = owner_.int64(1) != 0
                  ? "released"
                  : "taken over by host '" + std::string(owner_.text(2)) + "' pid " +
                        std::to_string(owner_.int64(3)) + " (epoch " + std::to_string(owner_.int64(0)) + ")";
    throw Error(CDCFLOW_ERR_FENCED, lease_->key_text() + " was " + now + "; this process (epoch " +
                                        std::to_string(lease_->epoch()) + ") commits nothing more");
}

void Fence::committed() {
    lease_->renewed_by_commit();
}

} // namespace cdcflow::ownership
