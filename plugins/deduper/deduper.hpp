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

namespace cdcflow::dedupe {

// The stage's config (cdcflow/sdk.hpp, "Declared config"); the host enforces
// the bounds.
struct DeduperSettings {
    int64_t window_size = 1000000;
    int64_t ttl_seconds = 604800;
    // Deprecated: the window is rebuilt through the host (its replay).
    // Until that lands and the seeding code goes, these are still read, so
    // that restarts keep their duplicate window; the host already warns when
    // a file sets them. Then each becomes cdcflow::deprecated<S>(name, type)
    // (accepted, ignored) and these members go.
    std::string seed_database, seed_table, seed_id_column, seed_position_column;

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
        cdcflow::param("seed_database", &S::seed_database).deprecated().describe(kSeedGone),
        cdcflow::param("seed_table", &S::seed_table).deprecated().defaults_to("outbox").describe(kSeedGone),
        cdcflow::param("seed_id_column", &S::seed_id_column)
            .deprecated()
            .defaults_to("id")
            .describe(kSeedGone),
        cdcflow::param("seed_position_column", &S::seed_position_column)
            .deprecated()
            .defaults_to("seq")
            .describe(kSeedGone),
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

    Deduper(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx) : Transform(ctx) {
        const int64_t size = cfg.window_size, ttl = cfg.ttl_seconds; // bounds: the host's
        seed_.database = cfg.seed_database;
        seed_.table = cfg.seed_table;
        seed_.id_column = cfg.seed_id_column;
        seed_.position_column = cfg.seed_position_column;
        for (std::string Settings::*key :
             {&Settings::seed_table, &Settings::seed_id_column, &Settings::seed_position_column})
            if ((cfg.*key).empty()) cfg.fail(key, "must not be empty");

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
        for (uint32_t i = 0; i < batch.size(); ++i) {
            std::string_view id = cdcflow::sv(batch[i].event_id);
            if (id.empty()) continue; // nothing to compare: passes untouched
            // Rejected events count as seen too: a later copy of an event
            // that was dead-lettered is skipped, not dead-lettered again.
            if (window_->check_and_insert(id)) batch.mark_duplicate(i);
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
};

} // namespace cdcflow::dedupe
