#include "common/partition_claims.hpp"

#include "base/text.hpp"

#include <algorithm>
#include <chrono>
#include <thread>

namespace cdcflow::sqlite_sink {

namespace {

std::string_view sv_of(const cdcflow_str &s) {
    return {s.data ? s.data : "", static_cast<size_t>(s.len)};
}

} // namespace

void PartitionClaims::detach() {
    // Fences hold statements on the sink's connection.
    for (auto &[part, c] : claims_)
        c.fence = {};
    db_ = nullptr;
}

PartitionClaims::Claim *PartitionClaims::find(std::string_view partition) {
    auto it = claims_.find(partition);
    return it == claims_.end() ? nullptr : &it->second;
}

void PartitionClaims::claim_all(const std::vector<std::string> &partitions) {
    // Every lease is watched at once: partitions a frozen peer held all come
    // free one lease after its last renewal, not one lease after another.
    struct Pending {
        std::string partition;
        std::unique_ptr<ownership::Lease> lease;
        std::string announced;
    };
    std::vector<Pending> pending;
    for (const std::string &partition : partitions) {
        if (Claim *have = find(partition); have && have->lease->owned()) continue;
        // One renewal thread and transaction for all of this host's claims
        // (bench_kafka_claims.py: 64 partitions had been 64 threads).
        if (!renewer_)
            renewer_ = std::make_unique<ownership::Renewer>(
                database_, lease_ms_, [ctx = ctx_](const std::string &m) { ctx.warn(m); });
        if (!claims_db_) claims_db_ = ownership::open_claims_db(database_, lease_ms_);
        ownership::LeaseOptions opt;
        opt.database = database_;
        opt.name = name_;
        opt.partition = partition;
        opt.lease_ms = lease_ms_;
        opt.on_lost = [ctx = ctx_](const std::string &m) { ctx.ownership_lost(m); };
        opt.warn = [ctx = ctx_](const std::string &m) { ctx.warn(m); };
        opt.renewer = renewer_.get();
        opt.connection = &claims_db_;
        pending.push_back({partition, std::make_unique<ownership::Lease>(std::move(opt)), {}});
    }
    // As a standby waits: often enough to notice a release or a dead owner
    // promptly, rarely enough to cost nothing.
    const auto pause = std::chrono::milliseconds(std::clamp<uint32_t>(lease_ms_ / 4, 25, 500));
    size_t claimed = 0, taken_over = 0;
    std::string first_takeover;
    while (!pending.empty()) {
        if (ctx_.stop_requested())
            throw Error(CDCFLOW_ERR_RETRY,
                        "stopping while waiting to claim partition '" +
                            base::text(pending.front().partition) + "'" +
                            (pending.size() > 1 ? " and " + std::to_string(pending.size() - 1) + " more"
                                                : std::string()));
        for (size_t k = 0; k < pending.size();) {
            Pending &p = pending[k];
            try {
                ownership::Lease::Attempt a = p.lease->try_acquire();
                if (a.owned) {
                    // One summary line below, not one per partition (64 at
                    // once would trip the host's log rate limit); a
                    // takeover is worth its own line.
                    ++claimed;
                    if (!p.announced.empty()) {
                        if (taken_over++ == 0) first_takeover = "partition '" + p.partition + "': " + a.text;
                    }
                    Claim &c = claims_[p.partition];
                    c.fence = {};
                    c.lease = std::move(p.lease);
                    pending.erase(pending.begin() + static_cast<std::ptrdiff_t>(k));
                    continue;
                }
                if (p.announced.empty() && pending.size() <= 8)
                    // A peer that has not let go yet: frozen, or still finishing.
                    ctx_.info("partition '" + p.partition + "': " + a.text +
                              "; waiting (at once when it releases or its process is gone from this machine, "
                              "else " +
                              std::to_string(lease_ms_) + " ms after its last renewal)");
                if (p.announced.empty()) p.announced = a.text;
            } catch (const Error &e) {
                if (e.status() != CDCFLOW_ERR_RETRY) throw;
            }
            ++k;
        }
        if (pending.empty()) break;
        std::this_thread::sleep_for(pause);
    }
    if (claimed)
        ctx_.info("claimed " + std::to_string(claimed) + " partitions of checkpoint '" + name_ + "'" +
                  (taken_over ? " (" + std::to_string(taken_over) + " after waiting for their owner; " +
                                    first_takeover + ")"
                              : std::string()));
}

void PartitionClaims::change(const cdcflow_partitions &c) {
    // Not enabled (the host fences nothing): only the positions.
    for (uint32_t i = 0; enabled_ && i < c.revoked_count; ++i)
        if (auto it = claims_.find(sv_of(c.revoked[i])); it != claims_.end()) {
            it->second.fence = {};
            it->second.lease->release();
            claims_.erase(it);
        }
    if (enabled_) {
        std::vector<std::string> assigned;
        for (uint32_t i = 0; i < c.assigned_count; ++i)
            assigned.emplace_back(sv_of(c.assigned[i]));
        claim_all(assigned);
    }
    if (!c.fn || !db_ || !db_->has_table("cdcflow_checkpoints")) return;
    // After the claims: no previous owner commits any more, so these
    // positions are final until this host moves them.
    sqlite::Stmt at(*db_, "SELECT position FROM cdcflow_checkpoints WHERE name = ?1 AND \"partition\" = ?2");
    auto report = [&](const cdcflow_str &part) {
        at.bind(1, std::string_view(name_)).bind(2, sv_of(part));
        if (at.step()) {
            cdcflow_position p{part, at.int64(0)};
            c.fn(c.user, &p);
        }
        at.reset();
    };
    for (uint32_t i = 0; i < c.assigned_count; ++i)
        report(c.assigned[i]);
    for (uint32_t i = 0; i < c.query_count; ++i)
        report(c.query[i]);
}

void PartitionClaims::check(const std::vector<std::pair<std::string_view, int64_t>> &parts) {
    for (const auto &[part, offset] : parts) {
        Claim *c = find(part);
        if (!c)
            throw Error(CDCFLOW_ERR_FENCED, "partition '" + base::text(part) +
                                                "' is not claimed by this host (it was never assigned "
                                                "here, or was revoked): nothing of the batch is committed");
        if (!c->fence) c->fence = ownership::Fence(*db_, *c->lease);
        c->fence.check();
    }
}

void PartitionClaims::committed(const std::vector<std::pair<std::string_view, int64_t>> &parts) {
    for (const auto &[part, offset] : parts)
        if (Claim *c = find(part); c && c->fence) c->fence.committed();
}

void PartitionClaims::release_all() {
    for (auto &[part, c] : claims_) {
        c.fence = {};
        c.lease->release();
    }
    claims_.clear();
}

} // namespace cdcflow::sqlite_sink
