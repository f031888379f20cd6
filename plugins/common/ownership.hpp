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
//   committed for lease_ms / 3 renews on a thread and connection of its own,
//   so renewals never compete with its own commits for the write lock under
//   load. A standby takes over when the row is released (a clean stop), at
//   once when the owner ran on this machine and its process is gone (same
//   boot and pid namespace; pid and start time compared, so a reused pid
//   does not count), and otherwise once it has watched the heartbeat stand
//   still for the owner's lease_ms on its own monotonic clock — no clock
//   comparison across machines.
//
// Thread-safety: a Lease is used by one thread at a time (try_acquire,
// release), plus its own renewal thread; on_lost is called from that thread.
// A Fence belongs to the sink's connection and thread.
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

struct LeaseOptions {
    std::string database; // the SQLite file that holds the checkpoint
    std::string name;     // the checkpoint's name
    std::string partition;
    uint32_t lease_ms = 10000;
    // Called once, from the renewal thread, when a renewal finds that
    // another process took the checkpoint over.
    std::function<void(const std::string &)> on_lost;
    // Renewals that keep failing for another reason (a busy store).
    std::function<void(const std::string &)> warn;
};

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
    // A commit renewed the claim (Fence): the renewal thread may rest.
    void renewed_by_commit();
    struct Row;
    std::optional<Row> read_row();
    std::string describe(const Row &row) const;
    bool claim(const std::optional<Row> &seen);
    // UPDATE of this claim's row (still this epoch, not released): SET `set`
    // and renewed_at. False when the row is no longer this claim's.
    bool update_claim(const char *set);
    void renew_loop();
    void stop_renewing();

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
    std::mutex mu_;
    std::condition_variable cv_;
    bool stopping_ = false;
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
