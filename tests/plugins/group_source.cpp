// group_source: a test source whose partitions a consumer group assigns
// (ABI 5, CDCFLOW_PLUGIN_GROUP_PARTITIONS), simulated from its config, so
// that the host's rebalance path is tested without Kafka.
//
// The topic `topic` has `partitions` partitions "<topic>/0".."<topic>/N-1",
// each holding `events` accounts-domain events at offsets 1..events: offset
// 1 opens account "acct-<index>" (AccountCreated), every later one deposits
// "1.00" (MoneyDeposited); event ids are "<partition>-<offset>". So once
// every event was applied exactly once, each account's balance is
// events - 1 and its version events: an exact check of exactly-once. With
// `copy_at` C and `copy_of` O, the event at offset C of every partition is a
// copy (same id, type and payload) of the one at offset O: a deduper must
// drop it (balance events - 2), wherever offset O was committed.
//
// At its first poll it is assigned `assign` (indices, "0,2"; "" = all);
// `plan` then rebalances by the number of events it emitted so far:
// "-1,2@100;+1@250" revokes 1 and 2 once 100 events went out, assigns 1
// again once 250 did. Such a step also fires when every partition it holds
// is at its end (a host with nothing left to read still takes part in the
// group's rebalances). "+1@~150" instead fires once the committed position
// of each of its partitions (a query partitions_changed, at most every
// `query_ms`) reached 150, whoever committed it: how a test orders two
// hosts as a group coordinator would. Every change goes through ctx.partitions_changed
// with an empty batch; an assigned partition resumes just after the
// position the host reports (from 1 when none). Events of partitions it
// does not hold are never emitted. It replays (ABI 3) any partition's
// events: they are regenerated. With nothing left to read and no step
// left, it asks the host (a query partitions_changed, at most every
// `query_ms`) for every partition's committed position, and reports
// exhausted (--drain) once each is at its end, whoever committed it.
//
// `events_in_change` (a broken source): at the first poll, one event goes
// into the batch before the change is reported, which the host refuses;
// `null_assigned`: the first assignment has a count but no list.
//
// Metrics (stage-prefixed): emitted (events polled out), replayed,
// changes, last_resumed_from (the position the last assigned partition
// resumed after, -1: none), committed_unheld (committed() reported a
// partition this source did not hold: a host bug).
#include <cdcflow/sdk.hpp>

#include <algorithm>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

struct GroupSourceSettings {
    std::string topic;
    int64_t partitions = 4;
    int64_t events = 100;
    std::string assign;
    std::string plan;
    int64_t copy_at = 0, copy_of = 0;
    int64_t query_ms = 20;
    bool events_in_change = false;
    bool null_assigned = false;

    using S = GroupSourceSettings;
    static constexpr auto kParams = cdcflow::params(
        cdcflow::param("topic", &S::topic).defaults_to("t").describe("the topic's name"),
        cdcflow::param("partitions", &S::partitions)
            .defaults_to("4")
            .min("1")
            .max("1024")
            .describe("partitions of the topic: <topic>/0..<topic>/N-1"),
        cdcflow::param("events", &S::events)
            .defaults_to("100")
            .min("1")
            .max("100000000")
            .describe("events per partition (offsets 1..events)"),
        cdcflow::param("assign", &S::assign)
            .defaults_to("")
            .describe("partition indices assigned at the first poll, e.g. \"0,2\" (\"\": all)"),
        cdcflow::param("plan", &S::plan)
            .defaults_to("")
            .describe("rebalances by events emitted, e.g. \"-1,2@100;+1@250\""),
        cdcflow::param("copy_at", &S::copy_at)
            .defaults_to("0")
            .min("0")
            .describe(
                "in every partition the event at this offset is a copy of the one at copy_of (0: none)"),
        cdcflow::param("copy_of", &S::copy_of).defaults_to("0").min("0").describe("see copy_at"),
        cdcflow::param("query_ms", &S::query_ms)
            .defaults_to("20")
            .min("1")
            .max("10000")
            .describe("with nothing left to read: ask for the committed positions at most this often"),
        cdcflow::param("events_in_change", &S::events_in_change)
            .defaults_to("false")
            .describe("report the first assignment with an event already in the batch (a broken source)"),
        cdcflow::param("null_assigned", &S::null_assigned)
            .defaults_to("false")
            .describe("report the first assignment with a count but no list (a broken source)"));
};

class GroupSource : public cdcflow::Source {
public:
    static constexpr const char *kName = "group_source";
    static constexpr const char *kDescription = "test source: a consumer group's partitions, simulated";
    static constexpr uint32_t kFlags = CDCFLOW_PLUGIN_GROUP_PARTITIONS;
    using Settings = GroupSourceSettings;

    GroupSource(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx)
        : Source(ctx), events_(cfg.events), copy_at_(cfg.copy_at), copy_of_(cfg.copy_of),
          query_ms_(cfg.query_ms), events_in_change_(cfg.events_in_change),
          null_assigned_(cfg.null_assigned) {
        for (int64_t p = 0; p < cfg.partitions; ++p)
            names_.push_back(cfg.topic + "/" + std::to_string(p));
        if (copy_at_ && (copy_of_ < 1 || copy_of_ >= copy_at_ || copy_at_ > events_))
            cfg.fail(&Settings::copy_at, "needs 1 <= copy_of < copy_at <= events");
        Step first;
        first.assign = true;
        if (cfg.assign.empty())
            for (int64_t p = 0; p < cfg.partitions; ++p)
                first.parts.push_back(static_cast<size_t>(p));
        else if (!parse_indices(cfg.assign, first.parts))
            cfg.fail(&Settings::assign,
                     "expected partition indices such as \"0,2\", got '" + cfg.assign + "'");
        steps_.push_back(first);
        size_t at = 0;
        while (at < cfg.plan.size()) {
            size_t end = cfg.plan.find(';', at);
            if (end == std::string::npos) end = cfg.plan.size();
            std::string one = cfg.plan.substr(at, end - at);
            at = end + 1;
            Step s;
            size_t amp = one.find('@');
            if (amp != std::string::npos && amp + 1 < one.size() && one[amp + 1] == '~') {
                s.by_position = true;
                ++amp;
            }
            if (one.size() < 4 || (one[0] != '+' && one[0] != '-') || amp == std::string::npos ||
                !parse_indices(one.substr(1, amp - 1 - (s.by_position ? 1 : 0)), s.parts) ||
                !parse_count(one.substr(amp + 1), s.after))
                cfg.fail(&Settings::plan, "expected steps such as \"-1,2@100;+1@250\", got '" + one + "'");
            s.assign = one[0] == '+';
            steps_.push_back(s);
        }
        emitted_ = ctx.counter("emitted", "events polled out");
        replayed_ = ctx.counter("replayed", "events handed out by replay");
        changes_ = ctx.counter("changes", "partitions_changed calls that assigned or revoked");
        resumed_ = ctx.gauge("last_resumed_from", "position the last assigned partition resumed after");
        unheld_ = ctx.counter("committed_unheld", "committed() reported a partition not held");
        resumed_.set(-1);
    }

    bool replay(cdcflow_replay &req, cdcflow::Batch &batch) {
        while (replay_pos_ < req.position_count) {
            const cdcflow_position &p = req.positions[replay_pos_];
            size_t k = index_of(cdcflow::sv(p.partition));
            if (k == names_.size())
                throw cdcflow::Error(CDCFLOW_ERR_INTERNAL, "replay of unknown partition '" +
                                                               std::string(cdcflow::sv(p.partition)) + "'");
            const int64_t last = std::min(p.offset, events_);
            if (replay_next_ == 0) {
                const int64_t want = static_cast<int64_t>(std::min<uint64_t>(req.max_events, INT64_MAX / 2));
                replay_next_ = std::max<int64_t>(last - want + 1, 1);
            }
            while (replay_next_ <= last) {
                if (!append(batch, k, replay_next_)) return false;
                replayed_.add();
                ++replay_next_;
            }
            replay_next_ = 0;
            ++replay_pos_;
        }
        replay_pos_ = 0;
        return true;
    }

    void committed(std::span<const cdcflow_position> positions) override {
        for (const cdcflow_position &p : positions)
            if (!held_.count(index_of(cdcflow::sv(p.partition)))) unheld_.add();
    }

    cdcflow::PollResult poll(cdcflow::Batch &batch, uint32_t wait_ms) override {
        // Rebalances first, with the batch still empty (as a Kafka
        // consumer's rebalance callback runs inside its poll).
        while (next_step_ < steps_.size() && due(steps_[next_step_])) {
            if (!change(batch, steps_[next_step_])) return {}; // stopping: nothing changed
            ++next_step_;
        }
        // Round robin over the partitions held, one event each, until the
        // batch is full or the next step is due.
        bool any = true;
        while (any) {
            any = false;
            for (auto &[k, next] : held_) {
                if (next > events_) continue;
                if (next_step_ < steps_.size() && !steps_[next_step_].by_position &&
                    steps_[next_step_].after <= emitted_count_)
                    return {}; // the step comes first, at the next poll
                if (!append(batch, k, next)) return {};
                ++next;
                ++emitted_count_;
                emitted_.add();
                any = true;
            }
        }
        if (batch.size() > 0) return {};
        // Nothing to read now. Parked until the next question (at most
        // query_ms), also under --drain's zero wait: an idle source must
        // not spin.
        (void)wait_ms;
        if (std::chrono::steady_clock::now() < next_query_) {
            while (std::chrono::steady_clock::now() < next_query_ && !ctx().stop_requested())
                std::this_thread::sleep_for(std::chrono::milliseconds(2));
            return {};
        }
        if (next_step_ < steps_.size()) return {}; // a step waiting for positions asks at the next poll
        // Nothing left here: done once every partition is committed to its
        // end, whichever host committed it.
        std::vector<size_t> all;
        for (size_t k = 0; k < names_.size(); ++k)
            all.push_back(k);
        bool ok = false;
        return {at_least(all, events_, ok) && ok};
    }

private:
    struct Step {
        bool assign = false;
        std::vector<size_t> parts;
        int64_t after = 0;        // events emitted before it fires
        bool by_position = false; // "@~": after is a committed position its partitions reach
    };

    static bool parse_count(const std::string &s, int64_t &out) {
        if (s.empty() || s.size() > 15) return false;
        out = 0;
        for (char c : s) {
            if (c < '0' || c > '9') return false;
            out = out * 10 + (c - '0');
        }
        return true;
    }
    bool parse_indices(const std::string &s, std::vector<size_t> &out) const {
        size_t at = 0;
        while (at <= s.size()) {
            size_t end = s.find(',', at);
            if (end == std::string::npos) end = s.size();
            int64_t k = 0;
            if (!parse_count(s.substr(at, end - at), k) || k >= static_cast<int64_t>(names_.size()))
                return false;
            out.push_back(static_cast<size_t>(k));
            at = end + 1;
        }
        return !out.empty();
    }

    size_t index_of(std::string_view name) const {
        for (size_t k = 0; k < names_.size(); ++k)
            if (names_[k] == name) return k;
        return names_.size();
    }

    // Is every one of parts committed at `position` or beyond (a query,
    // at most every query_ms)? False also when it is not time to ask yet,
    // or when stopping (asked: false then).
    bool at_least(const std::vector<size_t> &parts, int64_t position, bool &asked) {
        asked = false;
        const auto now = std::chrono::steady_clock::now();
        if (now < next_query_) return false;
        next_query_ = now + std::chrono::milliseconds(query_ms_);
        std::vector<cdcflow_str> names;
        for (size_t k : parts)
            names.push_back(cdcflow::str(names_[k]));
        cdcflow_partitions q{};
        q.struct_size = sizeof q;
        q.query_count = static_cast<uint32_t>(names.size());
        q.query = names.data();
        std::map<std::string, int64_t> got;
        if (!report(q, got)) return false;
        asked = true;
        for (size_t k : parts) {
            auto it = got.find(names_[k]);
            if (it == got.end() || it->second < position) return false;
        }
        return true;
    }

    // A step fires once its count of events went out, or when every
    // partition held is at its end (nothing more will go out); a
    // by_position one once its partitions are committed that far.
    bool due(const Step &s) {
        if (s.by_position) {
            bool asked = false;
            return at_least(s.parts, s.after, asked);
        }
        if (s.after <= emitted_count_) return true;
        for (const auto &[k, next] : held_)
            if (next <= events_) return false;
        return true;
    }

    // One partitions_changed; the positions of assigned and query ones into
    // got. False when the pipeline is stopping (nothing changed).
    bool report(const cdcflow_partitions &c, std::map<std::string, int64_t> &got) {
        cdcflow_partitions call = c;
        call.fn = [](void *user, const cdcflow_position *p) {
            (*static_cast<std::map<std::string, int64_t> *>(user))[std::string(cdcflow::sv(p->partition))] =
                p->offset;
        };
        call.user = &got;
        std::string err;
        cdcflow_status cs = ctx().partitions_changed(call, err);
        if (cs == CDCFLOW_ERR_RETRY) return false;
        if (cs != CDCFLOW_OK) throw cdcflow::Error(cs, "partitions_changed: " + err);
        return true;
    }

    bool change(cdcflow::Batch &batch, const Step &s) {
        std::vector<cdcflow_str> parts;
        for (size_t k : s.parts)
            parts.push_back(cdcflow::str(names_[k]));
        cdcflow_partitions c{};
        c.struct_size = sizeof c;
        if (s.assign) {
            c.assigned_count = static_cast<uint32_t>(parts.size());
            c.assigned = parts.data();
        } else {
            c.revoked_count = static_cast<uint32_t>(parts.size());
            c.revoked = parts.data();
        }
        if (events_in_change_ && s.assign) append(batch, s.parts.front(), 1);
        if (null_assigned_ && s.assign) c.assigned = nullptr;
        std::map<std::string, int64_t> got;
        if (!report(c, got)) return false;
        changes_.add();
        for (size_t k : s.parts) {
            if (!s.assign) {
                held_.erase(k);
                continue;
            }
            auto it = got.find(names_[k]);
            const int64_t from = it == got.end() ? 0 : it->second;
            held_[k] = from + 1;
            resumed_.set(it == got.end() ? -1 : from);
        }
        return true;
    }

    // The event at `offset` of partition k (deterministic: replay makes it again).
    bool append(cdcflow::Batch &batch, size_t k, int64_t offset) {
        const int64_t as = (copy_at_ && offset == copy_at_) ? copy_of_ : offset;
        std::string id = names_[k] + "-" + std::to_string(as);
        std::string account = "acct-" + std::to_string(k);
        cdcflow_event_init e = cdcflow::make_event_init();
        e.event_id = cdcflow::str(id);
        e.aggregate_type = cdcflow::str("Account");
        e.aggregate_id = cdcflow::str(account);
        e.event_type = cdcflow::str(as == 1 ? "AccountCreated" : "MoneyDeposited");
        e.payload = cdcflow::str(as == 1 ? R"({"owner":"Ada","currency":"EUR"})" : R"({"amount":"1.00"})");
        e.timestamp_us = 1700000000000000 + offset; // data only
        e.position = cdcflow_position{cdcflow::str(names_[k]), offset};
        return batch.append(e);
    }

    int64_t events_;
    int64_t copy_at_, copy_of_;
    int64_t query_ms_;
    bool events_in_change_, null_assigned_;
    std::vector<std::string> names_;
    std::vector<Step> steps_; // steps_[0]: the first assignment
    size_t next_step_ = 0;
    std::map<size_t, int64_t> held_; // partition index -> next offset to emit
    int64_t emitted_count_ = 0;
    std::chrono::steady_clock::time_point next_query_{};
    uint32_t replay_pos_ = 0; // replay: the position being replayed, and its next offset (0: not begun)
    int64_t replay_next_ = 0;
    cdcflow::Metric emitted_, replayed_, changes_, resumed_, unheld_;
};

CDCFLOW_PLUGIN(GroupSource)
