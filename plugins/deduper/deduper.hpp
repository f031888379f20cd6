// deduper: marks later copies of an already seen event id as duplicates.
// The window (window.hpp) holds 128-bit fingerprints of the most recent ids,
// each kept at least ttl_seconds after its latest copy arrived here (on the
// host's monotonic clock: event timestamps play no part). After a restart
// the host replays the last 2 x window_size events up to the sink's
// checkpoint through the source (history/restore, plugin.h ABI 3), wherever
// they live, and the window is rebuilt from them.
// See README.md for the guarantees and their limits.
// Header-only so the unit tests drive the class in-process; plugin.cpp
// holds the plugin's entry symbol.
#pragma once

#include "window.hpp"

#include <cdcflow/sdk.hpp>

#include <chrono>
#include <functional>
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
        "drops later copies of an event id already seen (LRU window + TTL)";
    static constexpr const char *kVersion = "1.0.0";
    using Settings = DeduperSettings;
    static_assert(IdWindow::kMaxCapacity == 1073741824, "window_size's declared max");

    // The config key that decides how much history restore needs.
    static constexpr const char *kHistorySetting = "window_size";

    Deduper(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx) : Transform(ctx) {
        const int64_t size = cfg.window_size, ttl = cfg.ttl_seconds; // bounds: the host's

        // Address space only: pages become resident as ids arrive.
        window_ = std::make_unique<IdWindow>(static_cast<uint32_t>(size), ttl);

        // Duplicates are counted by the host in event_mark_duplicate.
        restored_ = ctx.counter("restored", "event ids restored from the host's replay at start");
        // The window under the host's cache families (ABI 4): a hit is a
        // copy found (a duplicate), a miss a new id.
        cache_entries_ = ctx.cache_metric("window", CDCFLOW_CACHE_ENTRIES);
        cache_hits_ = ctx.cache_metric("window", CDCFLOW_CACHE_HITS);
        cache_misses_ = ctx.cache_metric("window", CDCFLOW_CACHE_MISSES);
        ctx.cache_metric("window", CDCFLOW_CACHE_CAPACITY).set(size);
        cache_entries_.set(0);
    }

    // The live window holds the last window_size distinct ids; with copies
    // among them they span more than window_size events. Twice that many
    // rebuilds it exactly while at most half the recent events are copies (a
    // producer's retries are far rarer); the surplus only costs replay time,
    // since restore's LRU keeps the most recent window_size ids anyway.
    uint64_t history() const { return 2 * static_cast<uint64_t>(window_->capacity()); }

    // Events up to the checkpoint, oldest first, already processed before
    // this start. Inserting them in that order rebuilds the live window's
    // LRU order exactly (a copy refreshes its id, as it did live). Every id
    // counts as arriving now, at the restart: the arrival stamps of the lost
    // window are unknown, and remembering longer only drops more later
    // copies, which are duplicates anyway. An event read but not committed
    // before a crash is after the checkpoint, so it is not replayed here and
    // its next delivery is treated as new.
    void restore(cdcflow::Batch &batch) {
        window_->advance_clock(now_s());
        // Empty ids are skipped, as live (never remembered).
        size_t n = window_->insert_all(
            [&](size_t i) { return cdcflow::sv(batch[static_cast<uint32_t>(i)].event_id); }, batch.size());
        restored_.add(static_cast<int64_t>(n));
        cache_entries_.set(static_cast<int64_t>(window_->size()));
    }

    void process(cdcflow::Batch &batch) override {
        // The TTL counts from arrival here, on a monotonic clock, so no
        // event's timestamp (far future, zero, negative, skewed) can make the
        // window forget an id early, and a wall-clock step cannot either.
        // One clock read per batch: the TTL has one-second resolution, and
        // stamping a batch with the moment it arrived is what "arrival" means.
        window_->advance_clock(now_s());
        window_->expire();
        // Hashes first, then the look-ups in order, prefetching the table
        // slot kSlotAhead ids ahead and its entry kEntryAhead ids ahead
        // (IdWindow::prefetch_slot). The order of check_and_insert is the
        // batch's, so copies within one batch are still caught.
        const uint32_t n = batch.size();
        hashes_.resize(n);
        for (uint32_t i = 0; i < n; ++i)
            hashes_[i] = window_->fingerprint(cdcflow::sv(batch[i].event_id));
        constexpr uint32_t kSlotAhead = 16, kEntryAhead = 8;
        // Counted here, published once per batch: an atomic per event would
        // cost more than the look-up.
        uint64_t hits = 0, misses = 0;
        for (uint32_t i = 0; i < n; ++i) {
            if (i + kSlotAhead < n) window_->prefetch_slot(hashes_[i + kSlotAhead]);
            if (i + kEntryAhead < n) window_->prefetch_entry(hashes_[i + kEntryAhead]);
            if (batch[i].event_id.len == 0) continue; // nothing to compare: passes untouched
            // Rejected events count as seen too: a later copy of an event
            // that was dead-lettered is skipped, not dead-lettered again.
            if (window_->check_and_insert(hashes_[i])) {
                batch.mark_duplicate(i);
                ++hits;
            } else {
                ++misses;
            }
        }
        cache_entries_.set(static_cast<int64_t>(window_->size()));
        hits_ += hits;
        misses_ += misses;
        cache_hits_.add(static_cast<int64_t>(hits));
        cache_misses_.add(static_cast<int64_t>(misses));
    }

    // The window's figures as published to the host's cache families (for
    // tests): ids held, its capacity (window_size), copies found (hits) and
    // new ids (misses) since create. Replayed ids count as neither.
    size_t window_entries() const { return window_->size(); }
    size_t window_capacity() const { return window_->capacity(); }
    uint64_t window_hits() const { return hits_; }
    uint64_t window_misses() const { return misses_; }

    // The monotonic clock the TTL is measured on; tests drive their own.
    using Clock = std::function<std::chrono::steady_clock::time_point()>;
    void set_clock(Clock now) { now_ = std::move(now); }

private:
    int64_t now_s() const {
        return std::chrono::duration_cast<std::chrono::seconds>(now_().time_since_epoch()).count();
    }

    Clock now_ = [] { return std::chrono::steady_clock::now(); };
    std::unique_ptr<IdWindow> window_;
    cdcflow::Metric restored_;
    cdcflow::Metric cache_entries_, cache_hits_, cache_misses_;
    uint64_t hits_ = 0, misses_ = 0;
    std::vector<Hash128> hashes_; // process()'s scratch, one per event
};

} // namespace cdcflow::dedupe
