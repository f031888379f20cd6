// deduper: marks later copies of an already seen event id as duplicates.
// A window (window.hpp) per source partition (the outbox has one, "") holds
// 128-bit fingerprints of that partition's most recent ids, each kept at
// least ttl_seconds after its latest copy arrived here (on the host's
// monotonic clock: event timestamps play no part). After a restart, or when
// a consumer group assigns a partition here, the host replays the last
// 2 x window_size events of each partition up to the sink's checkpoint
// through the source (history/restore, plugin.h ABI 3; partitions, ABI 5),
// wherever they live, and the partitions' windows are rebuilt from them.
// See README.md for the guarantees and their limits.
// Header-only so the unit tests drive the class in-process; plugin.cpp
// holds the plugin's entry symbol.
#pragma once

#include "window.hpp"

#include <cdcflow/sdk.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace cdcflow::dedupe {

// The stage's config (cdcflow/sdk.hpp, "Declared config"); the host enforces
// the bounds.
struct DeduperSettings {
    int64_t window_size = 1000000;
    int64_t ttl_seconds = 604800;

    using S = DeduperSettings;
    static constexpr const char *kSeedGone =
        "the duplicate window is now rebuilt through the host; remove this key";
    static constexpr auto kParams = cdcflow::params(
        cdcflow::param("window_size", &S::window_size)
            .defaults_to("1000000")
            .min("1")
            .max("1073741824") // IdWindow::kMaxCapacity (checked below)
            .describe("remember at least this many most recent event ids (about 36 bytes each)"),
        // The bound (a century) keeps the window's clock arithmetic far from overflowing.
        cdcflow::param("ttl_seconds", &S::ttl_seconds)
            .defaults_to("604800")
            .min("0")
            .max("3162240000")
            .describe("remember an id at least this long after its latest copy passed this stage (host "
                      "monotonic clock, never event time; 0 = only window_size evicts)"),
        cdcflow::deprecated<S>("seed_database", CDCFLOW_CONFIG_STRING).describe(kSeedGone),
        cdcflow::deprecated<S>("seed_table", CDCFLOW_CONFIG_STRING).describe(kSeedGone),
        cdcflow::deprecated<S>("seed_id_column", CDCFLOW_CONFIG_STRING).describe(kSeedGone),
        cdcflow::deprecated<S>("seed_position_column", CDCFLOW_CONFIG_STRING).describe(kSeedGone),
        cdcflow::deprecated<S>("seed_timestamp_column", CDCFLOW_CONFIG_STRING)
            .describe("unused: the TTL counts from arrival, not event time; remove this key"));
};

class Deduper : public cdcflow::Transform {
public:
    static constexpr const char *kName = "deduper";
    static constexpr const char *kDescription =
        "drops later copies of an event id already seen (LRU window + TTL, one window per partition)";
    static constexpr const char *kVersion = "1.1.0";
    using Settings = DeduperSettings;
    static_assert(IdWindow::kMaxCapacity == 1073741824, "window_size's declared max");

    // The config key that decides how much history restore needs.
    static constexpr const char *kHistorySetting = "window_size";

    // The deduper warns when the windows of the partitions a consumer group
    // gave this host could together hold more than this (README.md,
    // "Partitions: one window each").
    static constexpr uint64_t kWarnBytes = uint64_t{1} << 30;

    Deduper(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx)
        : Transform(ctx), capacity_(static_cast<uint32_t>(cfg.window_size)), ttl_s_(cfg.ttl_seconds) {
        // Duplicates are counted by the host in event_mark_duplicate.
        restored_ = ctx.counter("restored", "event ids restored from the host's replay at start");
        // The window under the host's cache families (ABI 4): a hit is a
        // copy found (a duplicate), a miss a new id.
        cache_entries_ = ctx.cache_metric("window", CDCFLOW_CACHE_ENTRIES);
        cache_hits_ = ctx.cache_metric("window", CDCFLOW_CACHE_HITS);
        cache_misses_ = ctx.cache_metric("window", CDCFLOW_CACHE_MISSES);
        cache_capacity_ = ctx.cache_metric("window", CDCFLOW_CACHE_CAPACITY);
        cache_capacity_.set(static_cast<int64_t>(capacity_));
        cache_entries_.set(0);
        // Address space only: pages become resident as ids arrive. The
        // outbox's one partition ("") has its window from the start.
        window_for({});
    }

    // Per partition (plugin.h's history): each partition's window holds its
    // last window_size distinct ids; with copies among them they span more
    // than window_size events. Twice that many rebuilds it exactly while at
    // most half the recent events are copies (a producer's retries are far
    // rarer); the surplus only costs replay time, since restore's LRU keeps
    // the most recent window_size ids anyway.
    uint64_t history() const { return 2 * static_cast<uint64_t>(capacity_); }

    // Events up to the checkpoint, oldest first, already processed before
    // this start (or before a partition was assigned here). Inserting them
    // in that order rebuilds each partition's window's LRU order exactly (a
    // copy refreshes its id, as it did live). Every id counts as arriving
    // now: the arrival stamps of the lost window are unknown, and
    // remembering longer only drops more later copies, which are duplicates
    // anyway. An event read but not committed before a crash is after the
    // checkpoint, so it is not replayed here and its next delivery is
    // treated as new.
    void restore(cdcflow::Batch &batch) {
        const uint32_t n = batch.size();
        size_t restored = 0;
        // Runs of one partition's events, each into that partition's window.
        for (uint32_t from = 0; from < n;) {
            const std::string_view part = cdcflow::sv(batch[from].position.partition);
            uint32_t to = from + 1;
            while (to < n && cdcflow::sv(batch[to].position.partition) == part)
                ++to;
            IdWindow &w = window_for(part);
            w.advance_clock(now_s());
            // Empty ids are skipped, as live (never remembered).
            restored += w.insert_all(
                [&](size_t i) { return cdcflow::sv(batch[from + static_cast<uint32_t>(i)].event_id); },
                to - from);
            from = to;
        }
        restored_.add(static_cast<int64_t>(restored));
        publish_entries();
    }

    // A consumer group's rebalance (ABI 5): each partition has a window of
    // its own, so that replaying an assigned partition's history never
    // pushes ids of the partitions this host keeps out of their windows.
    // A revoked partition's window goes (its next owner rebuilds it from
    // the replay); an assigned one starts empty and the host's replay of
    // its history, which follows, fills it (restore).
    void partitions(const cdcflow_partitions &change) {
        for (uint32_t i = 0; i < change.revoked_count; ++i)
            drop_window(cdcflow::sv(change.revoked[i]));
        for (uint32_t i = 0; i < change.assigned_count; ++i)
            drop_window(cdcflow::sv(change.assigned[i]));
        for (uint32_t i = 0; i < change.assigned_count; ++i)
            window_for(cdcflow::sv(change.assigned[i]));
        // The outbox's window made at create: a group's source never uses it.
        if (auto it = windows_.find(std::string_view()); it != windows_.end() && it->second->size() == 0)
            windows_.erase(it);
        publish_entries();
        cache_capacity_.set(static_cast<int64_t>(uint64_t{capacity_} * windows_.size()));
        const uint64_t bound = bytes_bound();
        if (change.assigned_count > 0 && bound > kWarnBytes && !warned_memory_) {
            warned_memory_ = true;
            ctx().warn("the dedupe windows of the " + std::to_string(windows_.size()) +
                       " partitions held here may grow to " + std::to_string(bound >> 20) +
                       " MiB (window_size " + std::to_string(capacity_) +
                       " ids per partition, about 36 bytes each): lower window_size for topics with many "
                       "partitions");
        }
    }

    void process(cdcflow::Batch &batch) override {
        // The TTL counts from arrival here, on a monotonic clock, so no
        // event's timestamp (far future, zero, negative, skewed) can make the
        // window forget an id early, and a wall-clock step cannot either.
        // One clock read per batch: the TTL has one-second resolution, and
        // stamping a batch with the moment it arrived is what "arrival" means.
        const int64_t now = now_s();
        for (auto &[name, w] : windows_) {
            w->advance_clock(now);
            w->expire();
        }
        // Hashes and windows first, then the look-ups in order, prefetching
        // the table slot kSlotAhead ids ahead and its entry kEntryAhead ids
        // ahead (IdWindow::prefetch_slot). The order of check_and_insert is
        // the batch's, so copies within one batch are still caught. Events
        // come in runs of one partition (the outbox has only ""): the
        // window is looked up once per run.
        const uint32_t n = batch.size();
        hashes_.resize(n);
        wins_.resize(n);
        IdWindow *w = nullptr;
        std::string_view w_part;
        for (uint32_t i = 0; i < n; ++i) {
            const cdcflow_event &e = batch[i];
            const std::string_view part = cdcflow::sv(e.position.partition);
            if (!w || part != w_part) {
                w = &window_for(part);
                w_part = part;
                w->advance_clock(now); // a window created just now
            }
            wins_[i] = w;
            hashes_[i] = siphash128(cdcflow::sv(e.event_id), key_);
        }
        constexpr uint32_t kSlotAhead = 16, kEntryAhead = 8;
        // Counted here, published once per batch: an atomic per event would
        // cost more than the look-up.
        uint64_t hits = 0, misses = 0;
        for (uint32_t i = 0; i < n; ++i) {
            if (i + kSlotAhead < n) wins_[i + kSlotAhead]->prefetch_slot(hashes_[i + kSlotAhead]);
            if (i + kEntryAhead < n) wins_[i + kEntryAhead]->prefetch_entry(hashes_[i + kEntryAhead]);
            if (batch[i].event_id.len == 0) continue; // nothing to compare: passes untouched
            // Rejected events count as seen too: a later copy of an event
            // that was dead-lettered is skipped, not dead-lettered again.
            if (wins_[i]->check_and_insert(hashes_[i])) {
                batch.mark_duplicate(i);
                ++hits;
            } else {
                ++misses;
            }
        }
        publish_entries();
        hits_ += hits;
        misses_ += misses;
        cache_hits_.add(static_cast<int64_t>(hits));
        cache_misses_.add(static_cast<int64_t>(misses));
    }

    // The windows' figures as published to the host's cache families (for
    // tests): ids held (all partitions), one partition's capacity
    // (window_size), copies found (hits) and new ids (misses) since create.
    // Replayed ids count as neither.
    size_t window_entries() const { return entries_; }
    size_t window_capacity() const { return capacity_; }
    uint64_t window_hits() const { return hits_; }
    uint64_t window_misses() const { return misses_; }
    // The partitions that have a window now (for tests), and the ids one holds.
    size_t window_count() const { return windows_.size(); }
    size_t window_entries(std::string_view partition) const {
        auto it = windows_.find(partition);
        return it == windows_.end() ? 0 : it->second->size();
    }
    // The most memory the windows held now may grow to (36-37 bytes an id).
    uint64_t bytes_bound() const {
        return windows_.empty() ? 0 : windows_.size() * windows_.begin()->second->max_memory_bytes();
    }

    // The monotonic clock the TTL is measured on; tests drive their own.
    using Clock = std::function<std::chrono::steady_clock::time_point()>;
    void set_clock(Clock now) { now_ = std::move(now); }

private:
    int64_t now_s() const {
        return std::chrono::duration_cast<std::chrono::seconds>(now_().time_since_epoch()).count();
    }

    // The window of `partition`, created (empty) on its first event.
    IdWindow &window_for(std::string_view partition) {
        auto it = windows_.find(partition);
        if (it == windows_.end())
            it = windows_.emplace(std::string(partition), std::make_unique<IdWindow>(capacity_, ttl_s_, key_))
                     .first;
        return *it->second;
    }
    void drop_window(std::string_view partition) {
        if (auto it = windows_.find(partition); it != windows_.end()) windows_.erase(it);
    }
    void publish_entries() {
        size_t total = 0;
        for (const auto &[name, w] : windows_)
            total += w->size();
        entries_ = total;
        cache_entries_.set(static_cast<int64_t>(total));
    }

    Clock now_ = [] { return std::chrono::steady_clock::now(); };
    const uint32_t capacity_; // window_size: per partition
    const int64_t ttl_s_;
    // One key for every window: a batch's fingerprints are computed before
    // its windows are looked at.
    const SipKey key_ = SipKey::random();
    std::map<std::string, std::unique_ptr<IdWindow>, std::less<>> windows_;
    size_t entries_ = 0;
    bool warned_memory_ = false;
    cdcflow::Metric restored_;
    cdcflow::Metric cache_entries_, cache_hits_, cache_misses_, cache_capacity_;
    uint64_t hits_ = 0, misses_ = 0;
    std::vector<Hash128> hashes_;  // process()'s scratch, one per event
    std::vector<IdWindow *> wins_; // and each one's window
};

} // namespace cdcflow::dedupe
