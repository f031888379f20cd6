// See health_json.hpp.
#include "health_json.hpp"

#include "base/clock.hpp"

#include <nlohmann/json.hpp>

namespace cdcflow::host {

namespace {

using Json = nlohmann::ordered_json; // keys in the documented order, for people reading it

std::string dump(const Json &j) {
    return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

} // namespace

std::string health_json(const HealthReport &h) {
    Json j = {{"pipeline", h.pipeline},
              {"state", h.state},
              {"role", h.role},
              {"healthy", h.healthy},
              {"ready", h.ready}};
    if (!h.owner.empty()) j["owner"] = h.owner;
    if (!h.last_error.empty()) j["last_error"] = h.last_error;
    Json stages = Json::array();
    for (const StageReport &s : h.stages) {
        Json st = {{"id", s.id},
                   {"plugin", s.plugin},
                   {"kind", s.kind},
                   {"state", s.state},
                   {"breaker", breaker_name(s.breaker)},
                   {"retries", s.retries},
                   {"breaker_trips", s.trips},
                   {"poison_events", s.poison}};
        if (!s.last_error.empty()) {
            st["last_error"] = s.last_error;
            if (s.last_error_unix_ms)
                st["last_error_at"] =
                    base::utc(static_cast<int64_t>(s.last_error_unix_ms) * 1000, base::UtcDigits::kMillis);
        }
        stages.push_back(std::move(st));
    }
    j["stages"] = std::move(stages);
    // The flat totals stay: scripts and older tests read them.
    const Totals &t = h.totals;
    j["events"] = t.events;
    j["applied"] = t.applied;
    j["rejected"] = t.rejected;
    j["duplicates"] = t.duplicates;
    j["dropped"] = t.dropped;
    j["batches"] = t.batches;
    return dump(j);
}

std::string ready_reason(const HealthReport &h) {
    if (h.ready) return "";
    if (h.state == "standby" || h.role == "standby")
        return "standby: " + (h.owner.empty() ? std::string("another host owns the checkpoint") : h.owner);
    if (h.state == "failed") return "failed" + (h.last_error.empty() ? std::string() : ": " + h.last_error);
    for (const StageReport &s : h.stages)
        if (s.breaker != BreakerState::closed)
            return std::string("breaker ") + breaker_name(s.breaker) + ": stage '" + s.id + "'";
    if (h.state == "draining" || h.state == "stopped") return "stopping";
    return "starting";
}

std::string ready_json(const HealthReport &h) {
    Json j = {{"ready", h.ready}};
    if (!h.ready) j["reason"] = ready_reason(h);
    return dump(j);
}

} // namespace cdcflow::host
