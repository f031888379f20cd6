// deduper: marks later copies of an already seen event id as duplicates.
// The window (window.hpp) holds 128-bit fingerprints of the most recent ids,
// each kept at least ttl_seconds after its latest copy arrived here (on the
// host's monotonic clock: event timestamps play no part); after a restart
// seek() rebuilds it from the outbox as of the sink's checkpoint (seed.hpp).
// See README.md for the guarantees and their limits.
// Header-only so the unit tests drive the class in-process; plugin.cpp
// holds the plugin's entry symbol.
#pragma once

#include "seed.hpp"
#include "window.hpp"

#include <cdcflow/sdk.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace cdcflow::dedupe {

class Deduper : public cdcflow::Transform {
public:
    static constexpr const char *kName = "deduper";
    static constexpr const char *kDescription =
        "drops later copies of an event id already seen (LRU window + TTL)";
    static constexpr const char *kVersion = "1.0.0";
    static constexpr cdcflow_config_key kConfig[] = {
        {"window_size", CDCFLOW_CONFIG_INT, "1000000", 0,
         "remember at least this many most recent event ids (about 36 bytes each)"},
        {"ttl_seconds", CDCFLOW_CONFIG_INT, "604800", 0,
         "remember an id at least this long after its latest copy passed this stage (host monotonic "
         "clock, never event time; 0 = only window_size evicts)"},
        {"seed_database", CDCFLOW_CONFIG_STRING, "\"\"", 0,
         "outbox SQLite database to rebuild the window from on restart (\"\" = start empty)"},
        {"seed_table", CDCFLOW_CONFIG_STRING, "\"outbox\"", 0, "outbox table in seed_database"},
        {"seed_id_column", CDCFLOW_CONFIG_STRING, "\"id\"", 0, "event id column"},
        {"seed_position_column", CDCFLOW_CONFIG_STRING, "\"seq\"", 0,
         "source position column (the checkpoint's offset)"},
        {"seed_timestamp_column", CDCFLOW_CONFIG_STRING, "\"timestamp\"", 0,
         "unused: the TTL counts from arrival, not event time (accepted so that older pipeline files "
         "load)"},
    };

    Deduper(const cdcflow::Config &cfg, cdcflow::Context ctx) : Transform(ctx) {
        int64_t size = cfg.i64("window_size");
        if (size < 1 || size > IdWindow::kMaxCapacity)
            cfg.fail("window_size", "must be 1.." + std::to_string(IdWindow::kMaxCapacity));
        int64_t ttl = cfg.i64("ttl_seconds");
        constexpr int64_t kMaxTtl = int64_t{100} * 366 * 24 * 3600;
        if (ttl < 0 || ttl > kMaxTtl)
            cfg.fail("ttl_seconds", "must be 0.." + std::to_string(kMaxTtl) + " (0 = no TTL)");

        seed_.database = std::string(cfg.str("seed_database"));
        seed_.table = std::string(cfg.str("seed_table"));
        seed_.id_column = std::string(cfg.str("seed_id_column"));
        seed_.position_column = std::string(cfg.str("seed_position_column"));
        for (const char *key : {"seed_table", "seed_id_column", "seed_position_column"})
            if (cfg.str(key).empty()) cfg.fail(key, "must not be empty");

        // Address space only: pages become resident as ids arrive.
        window_ = std::make_unique<IdWindow>(static_cast<uint32_t>(size), ttl);

        // `<stage>.duplicates` is counted by the host in event_mark_duplicate.
        entries_ = ctx.gauge("window_entries", "event ids remembered");
        seeded_ = ctx.counter("seeded", "event ids loaded from the outbox on seek");
    }

    void seek(std::span<const cdcflow_position> positions) override {
        window_->clear();
        entries_.set(0);
        if (positions.empty()) return; // from the start: nothing was processed
        if (seed_.database.empty()) {
            ctx().warn("no seed_database: the duplicate window starts empty, so copies of events processed "
                       "before this restart are not detected");
            return;
        }
        if (positions.size() != 1 || !cdcflow::sv(positions[0].partition).empty())
            throw cdcflow::Error(CDCFLOW_ERR_CONFIG,
                                 "seed_database is set but the checkpoint is not an outbox position (one "
                                 "position, partition \"\"): got partition '" +
                                     std::string(cdcflow::sv(positions[0].partition)) + "' of " +
                                     std::to_string(positions.size()));
        int64_t checkpoint = positions[0].offset;
        // Every seeded id counts as arriving now (see seed.hpp).
        size_t n = seed_window(*window_, seed_, checkpoint, now_s());
        seeded_.add(static_cast<int64_t>(n));
        entries_.set(static_cast<int64_t>(window_->size()));
        ctx().info("seeded " + std::to_string(n) + " event ids from '" + seed_.database + "' up to " +
                   seed_.position_column + " " + std::to_string(checkpoint));
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
            hashes_[i] = window_->hash(cdcflow::sv(batch[i].event_id));
        constexpr uint32_t kSlotAhead = 16, kEntryAhead = 8;
        for (uint32_t i = 0; i < n; ++i) {
            if (i + kSlotAhead < n) window_->prefetch_slot(hashes_[i + kSlotAhead]);
            if (i + kEntryAhead < n) window_->prefetch_entry(hashes_[i + kEntryAhead]);
            if (batch[i].event_id.len == 0) continue; // nothing to compare: passes untouched
            // Rejected events count as seen too: a later copy of an event
            // that was dead-lettered is skipped, not dead-lettered again.
            if (window_->check_and_insert(hashes_[i])) batch.mark_duplicate(i);
        }
        entries_.set(static_cast<int64_t>(window_->size()));
    }

    // The monotonic clock the TTL is measured on; tests drive their own.
    using Clock = std::function<std::chrono::steady_clock::time_point()>;
    void set_clock(Clock now) { now_ = std::move(now); }

private:
    int64_t now_s() const {
        return std::chrono::duration_cast<std::chrono::seconds>(now_().time_since_epoch()).count();
    }

    Clock now_ = [] { return std::chrono::steady_clock::now(); };
    SeedSource seed_;
    std::unique_ptr<IdWindow> window_;
    cdcflow::Metric entries_, seeded_;
    std::vector<Hash128> hashes_; // process()'s scratch, one per event
};

} // namespace cdcflow::dedupe
