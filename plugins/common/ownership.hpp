// One owner per checkpoint (DESIGN.md), kept in the database that holds the
// checkpoint, so that it holds across processes and machines alike.
//
// The contract, for any store (SQLite here; a server database implements
// the same with the same table and statements):
//
//   cdcflow_owners(name, partition, epoch, owner identity, lease_ms,
//                  heartbeat, acquired_at, renewed_at, released)
//
// - One row per checkpoint key: (checkpoint name, partition). An outbox
//   sink uses partition "" (its whole checkpoint); a Kafka sink one row per
//   topic/partition it is assigned, through the same class.
// - Taking ownership is a compare-and-swap in one write transaction: the
//   row is inserted with epoch 1, or its epoch goes up by one, and only if
//   it is still exactly as it was read. The epoch is the fencing token.
// - Every commit of the owner checks, inside the same write transaction as
//   its changes and its checkpoint, that the row still carries its epoch
//   and nonce and is not released (Fence), and renews the claim there
//   (heartbeat + 1). A stale owner (a second host, a process frozen past its
//   lease that wakes up) therefore fails its commit and applies nothing; it
//   never relies on clocks or timing to be safe.
// - Leases only decide *when* a standby may take over. An owner that has not
//   committed for lease_ms / 3 renews on a thread and connection of its own
//   (one Renewer for all of a host's claims in one database), so renewals
//   never compete with its own commits for the write lock under load. A
//   standby takes over when the row is released (a clean stop), at once
//   when the owner ran on this machine and its process is gone (same boot
//   and pid namespace; pid and start time compared, so a reused pid does
//   not count), and otherwise once it has watched the heartbeat stand still
//   for the owner's lease_ms on its own monotonic clock — no clock
//   comparison across machines.
//
// Thread-safety: a Lease is used by one thread at a time (try_acquire,
// release), plus its renewal thread (its own, or a Renewer's shared by many
// leases); on_lost is called from that thread. A Fence belongs to the
// sink's connection and thread.
#pragma once

#include "common/sqlite.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace cdcflow::ownership {

// Who runs a process, as written into an owner row.
struct Identity {
    std::string host; // gethostname()
    int64_t pid = 0;
    std::string boot_id;     // this boot of this machine ("" when unknown)
    std::string pid_ns;      // the pid namespace ("" when unknown)
    int64_t start_ticks = 0; // the process's start time, clock ticks after boot

    // This process (computed once).
    static const Identity &self();
};

// Is the process `owner` names still running? Known only on the same
// machine, same boot and same pid namespace as `me`; nullopt elsewhere. A
// zombie, or another process that reused the pid, counts as gone.
std::optional<bool> process_alive(const Identity &owner, const Identity &me);

class Renewer;

struct LeaseOptions {
    std::string database; // the SQLite file that holds the checkpoint
    std::string name;     // the checkpoint's name
    std::string partition;
    uint32_t lease_ms = 10000;
    // Called once, from the renewal thread, when a renewal finds that
    // another process took the checkpoint over. With a Renewer it may come
    // after the Lease was released or destroyed: what it captures must
    // outlive the Renewer. It must not throw (what it throws is dropped).
    std::function<void(const std::string &)> on_lost;
    // Renewals that keep failing for another reason (a busy store). Must not
    // add or remove leases of the Renewer that calls it.
    std::function<void(const std::string &)> warn;
    // Renews the claim together with the others of one host (one thread and
    // one transaction for all, see Renewer); null: a thread of its own. Must
    // outlive the Lease.
    Renewer *renewer = nullptr;
    // With a renewer: claims and releases on this connection (from
    // open_claims_db), shared by the leases one thread claims and releases,
    // instead of one of the lease's own (64 partitions had kept 64 open,
    // with their files). Must outlive the Lease. Ignored without a renewer.
    sqlite::Db *connection = nullptr;
};

// A connection for claims (LeaseOptions::connection): their database,
// created if missing, waiting for other writers about a renewal period.
sqlite::Db open_claims_db(const std::string &database, uint32_t lease_ms);

class Lease {
public:
    explicit Lease(LeaseOptions opts);
    ~Lease(); // stops renewing; does not release (a crash does not either)
    Lease(const Lease &) = delete;
    Lease &operator=(const Lease &) = delete;

    struct Attempt {
        bool owned = false;
        // Not owned: who owns it ("checkpoint 'accounts' of '/db' is owned
        // by host 'h' pid 12 (since ..., epoch 3)"). Owned: how this process
        // got it (a new claim, a release, a takeover and why).
        std::string text;
    };
    // One attempt; call again while not owned (the lease expiry is watched
    // across calls). Once owned, renewals run until release() or the
    // destructor. Throws cdcflow::Error: CDCFLOW_ERR_RETRY while the store
    // is locked, CDCFLOW_ERR_IO otherwise.
    Attempt try_acquire();
    bool owned() const { return epoch_ > 0; }
    int64_t epoch() const { return epoch_; }
    const std::string &key_text() const { return key_text_; }
    const std::string &name() const { return opt_.name; }
    const std::string &partition() const { return opt_.partition; }

    // Gives the checkpoint up so that a standby takes over at once. Best
    // effort: on failure the standby waits for the lease instead.
    void release();

private:
    friend class Fence;
    friend class Renewer;
    // A commit renewed the claim (Fence): the renewal thread may rest.
    void renewed_by_commit();
    struct Row;
    // The connection for claims and releases: opt_.connection, or db_.
    sqlite::Db &conn();
    std::optional<Row> read_row(sqlite::Db &db);
    std::string describe(const Row &row) const;
    bool claim(const std::optional<Row> &seen);
    // UPDATE of this claim's row (still this epoch, not released): SET `set`
    // and renewed_at. False when the row is no longer this claim's.
    bool update_claim(const char *set);
    void renew_loop();
    void stop_renewing();
    // Not renewed by a commit for the last `every`: a renewal is due.
    bool renewal_due(std::chrono::steady_clock::duration every) const;
    // The renewal found the row no longer this claim's: what on_lost says
    // (who has it now, read on db).
    std::string lost_text(sqlite::Db &db);

    LeaseOptions opt_;
    std::string key_text_; // "checkpoint 'accounts' of '/path/db'"
    std::string nonce_;    // this claim among this process's claims
    sqlite::Db db_;
    int64_t epoch_ = 0; // > 0 while owned
    // The standby's watch on the owner's heartbeat.
    int64_t seen_epoch_ = -1, seen_heartbeat_ = -1;
    std::chrono::steady_clock::time_point seen_at_{};

    std::atomic<int64_t> renewed_at_{0}; // steady_clock ticks of the last renewal by a commit
    std::thread renewer_;
    bool shared_renewal_ = false; // registered with opt_.renewer
    std::mutex mu_;
    std::condition_variable cv_;
    bool stopping_ = false;
};

// One thread and one connection that renew many claims in one database: a
// host's claims on the partitions a consumer group gave it (PartitionClaims),
// which with a thread and a write transaction each were 64 threads and 64
// transactions per renewal period for 64 partitions. Each period it renews,
// in one write transaction, every claim that no commit renewed during the
// period: a busy database is waited for once, not once per claim. A claim
// found taken over is reported through its on_lost and renewed no more.
class Renewer {
public:
    // lease_ms: the claims' lease (renewals every third of it); every claim
    // must be of `database` and of that lease (else the Lease constructor
    // throws INTERNAL).
    // warn: as LeaseOptions::warn.
    Renewer(std::string database, uint32_t lease_ms, std::function<void(const std::string &)> warn);
    // Stops the thread (renews nothing more, releases nothing); every Lease
    // registered with it must be gone first.
    ~Renewer();
    Renewer(const Renewer &) = delete;
    Renewer &operator=(const Renewer &) = delete;
    size_t size(); // claims renewed (for tests)

private:
    friend class Lease;
    void check(const Lease &lease) const; // throws INTERNAL unless it may renew the lease
    void add(Lease &lease);
    // Once it returns, the thread no longer touches the lease (it waits for
    // a renewal in progress).
    void remove(Lease &lease);
    void loop();
    // One period's renewals; returns the claims found lost, each with what
    // its on_lost is told.
    std::vector<std::pair<Lease *, std::string>> renew(const std::vector<Lease *> &due);

    const std::string database_;
    const std::chrono::milliseconds every_;
    const int busy_timeout_ms_;
    const std::function<void(const std::string &)> warn_;
    sqlite::Db db_;         // opened by the thread, at its first renewal
    sqlite::Stmt renew_;    // on db_
    uint32_t failures_ = 0; // periods in a row whose renewal failed
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<Lease *> leases_;
    bool busy_ = false; // the thread is renewing (leases_ must not go)
    bool stopping_ = false;
    std::thread thread_;
};

// The owner's check inside its own commit: prepared once on the sink's
// connection, run inside the sink's write transaction.
class Fence {
public:
    Fence() = default;
    Fence(sqlite::Db &db, Lease &lease);
    // Inside the sink's write transaction: renews the claim, or throws
    // cdcflow::Error(CDCFLOW_ERR_FENCED) naming the new owner when the
    // lease's claim no longer owns the checkpoint.
    void check();
    // After the sink's COMMIT: the renewal in it is durable.
    void committed();
    explicit operator bool() const { return static_cast<bool>(renew_); }

private:
    Lease *lease_ = nullptr;
    sqlite::Stmt renew_;
    sqlite::Stmt owner_; // who has it instead (for the message)
};

// The table (the same for every checkpoint in a database).
extern const char *const kOwnersDdl;

} // namespace cdcflow::ownership
