// One owner per partition (ABI 5): what an SQLite sink does when its
// source's partitions are assigned by a consumer group
// (CDCFLOW_OWNERSHIP_PER_PARTITION). Several hosts then share one sink
// database, each owning some partitions: each partition's checkpoint
// (cdcflow_checkpoints row (name, "topic/partition")) has its own claim in
// cdcflow_owners (common/ownership.hpp, one Lease per partition, same
// contract: epoch as the fencing token, checked inside every commit).
//
// - change() (without enable(): only the positions, nothing claimed, as
//   the host fences nothing then): revoked partitions are released (everything the host had in
//   flight for them is committed before the host calls it); assigned ones
//   are claimed, waiting while a live previous owner holds one (a frozen
//   host: until its lease ran out on this host's clock) — the wait ends
//   with Error(CDCFLOW_ERR_RETRY) on a stop request; then the committed
//   position of every assigned and query partition goes to change.fn.
// - check(): inside the sink's write transaction, for every partition the
//   batch touches: still owned (renewing the claim), else
//   Error(CDCFLOW_ERR_FENCED); a partition this host never claimed is
//   refused the same way. committed() after the COMMIT.
//
// Thread-safety: the sink's thread (one at a time, plugin.h); the claims
// renew together on one thread (ownership::Renewer), which reports a loss
// through ctx.ownership_lost.
#pragma once

#include "common/ownership.hpp"
#include "common/sqlite.hpp"

#include <cdcflow/sdk.hpp>

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cdcflow::sqlite_sink {

class PartitionClaims {
public:
    PartitionClaims(std::string database, std::string name, cdcflow::Context ctx)
        : database_(std::move(database)), name_(std::move(name)), ctx_(ctx) {}
    ~PartitionClaims() { detach(); }
    PartitionClaims(const PartitionClaims &) = delete;
    PartitionClaims &operator=(const PartitionClaims &) = delete;

    // The sink's acquire got CDCFLOW_OWNERSHIP_PER_PARTITION: claim nothing
    // now, follow change() from here on.
    void enable(uint32_t lease_ms) {
        enabled_ = true;
        // Made for the lease they wait and renew by.
        if (lease_ms != lease_ms_ && claims_.empty()) {
            renewer_.reset();
            claims_db_ = sqlite::Db();
        }
        lease_ms_ = lease_ms;
    }
    bool enabled() const { return enabled_; }

    // The sink's connection, for the fences and the positions (its start();
    // detach() before it closes).
    void attach(sqlite::Db &db) { db_ = &db; }
    void detach();

    void change(const cdcflow_partitions &c);
    // Partitions (name, last offset) of the batch, inside its transaction.
    void check(const std::vector<std::pair<std::string_view, int64_t>> &parts);
    void committed(const std::vector<std::pair<std::string_view, int64_t>> &parts);
    // A clean stop: every claim given up so that peers take over at once.
    void release_all();
    size_t owned() const { return claims_.size(); }

private:
    struct Claim {
        std::unique_ptr<ownership::Lease> lease;
        ownership::Fence fence; // on *db_, made at the first check
    };
    // Claims every one of them not held yet, watching all leases at once.
    void claim_all(const std::vector<std::string> &partitions);
    Claim *find(std::string_view partition);

    std::string database_, name_;
    cdcflow::Context ctx_;
    bool enabled_ = false;
    uint32_t lease_ms_ = 10000;
    sqlite::Db *db_ = nullptr;
    // Before claims_: their leases use them until they are destroyed. One
    // connection (this thread's) claims and releases, one thread renews.
    sqlite::Db claims_db_;
    std::unique_ptr<ownership::Renewer> renewer_;
    std::map<std::string, Claim, std::less<>> claims_;
};

} // namespace cdcflow::sqlite_sink
