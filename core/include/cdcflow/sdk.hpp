// cdcflow/sdk.hpp: header-only C++ SDK for writing cdcflow stage plugins.
//
// A plugin author subclasses cdcflow::Source, cdcflow::Transform or
// cdcflow::Sink, declares its config once in a settings struct (see
// "Declared config" below), gives the class a constructor taking
// (const Configured<Settings>&, Context), and writes one macro line:
//
//     struct UpperSettings {
//         std::string field;
//         static constexpr auto kParams = cdcflow::params(
//             cdcflow::param("field", &UpperSettings::field).defaults_to("type").describe("which field"));
//     };
//     class Upper : public cdcflow::Transform {
//     public:
//         static constexpr const char *kName = "upper";
//         static constexpr const char *kDescription = "upper-cases event types";
//         using Settings = UpperSettings;
//         Upper(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx) : Transform(ctx) {}
//         void process(cdcflow::Batch &batch) override { ... }
//     };
//     CDCFLOW_PLUGIN(Upper)
//
// The host then enforces types, bounds, choices and secrets before create,
// and the plugin cannot read a key it did not declare. The older way (a
// `kConfig` array of cdcflow_config_key and a constructor taking
// (const Config&, Context) that reads keys by name) still compiles and
// loads. A plugin with no config leaves both out. kVersion is optional.
//
// Exceptions never cross the C ABI: the thunks below catch everything and turn
// it into a status plus a one-line message (cdcflow::Error carries its own
// status; any other exception becomes CDCFLOW_ERR_INTERNAL).
//
// Events are marked in place: batch.reject(i, why) (a dead letter),
// batch.mark_duplicate(i), batch.drop(i) (filtered out; ABI 3). A transform
// rewrites an event by pointing it at new bytes from batch.copy(...), and
// reads a payload parsed once per pipeline through batch.payload(i, out). The
// plugin author's guide (cdcflow/README.md in the sources, installed as
// share/doc/cdcflow/plugin-authoring.md) says when each callback is called,
// on which thread, and what a sink must store itself.
//
// A sink that fences its checkpoint (one owner per checkpoint, DESIGN.md)
// also defines `void acquire(const cdcflow_ownership &)` (throw
// Error(CDCFLOW_ERR_OWNED, "<who owns it>") when another process does) and
// `void release()`; the SDK exports them only when they exist, so that a
// sink without them tells the host it does not fence.
//
// State that moves with the stream (ABI 3): a transform that keeps state
// derived from the stream (a dedupe window) defines `uint64_t history()` (how
// many events up to the sink's checkpoint it needs to see again after a
// restart; optionally `static constexpr const char *kHistorySetting`, the
// config key that decides it, for the host's messages) and
// `void restore(Batch &)` (rebuild from those events, oldest first; mark
// nothing). A source that can read already delivered events again defines
// `bool replay(cdcflow_replay &req, Batch &batch)`: fill the batch with the
// next events of req (oldest first, never past its positions) and return
// true once there are no more; set req.truncated when some that were asked
// for are gone. The SDK exports these only when they exist.
//
// Partitions a consumer group assigns (ABI 5): such a source declares
// `static constexpr uint32_t kFlags = CDCFLOW_PLUGIN_GROUP_PARTITIONS;` and
// reports every rebalance with Context::partitions_changed; a transform or
// sink that follows them defines `void partitions(const cdcflow_partitions &)`
// (see plugin.h for what each must do).
//
// Deferred commits (ABI 6): a sink whose commit completes after process
// returns (it waits for a remote acknowledgement, e.g. Kafka's) declares
// `static constexpr uint32_t kFlags = CDCFLOW_PLUGIN_DEFERRED_COMMIT;` and
// defines `uint64_t settle(uint32_t wait_ms)`: wait (parked, at most
// wait_ms, less when stop_requested()) until at least one more accepted
// process call is durable, and return how many of its process calls that
// returned normally are durable now (never fewer than before); throw Error
// when they cannot become durable (nothing after the last durable call may
// then be committed). process then only has to accept the batch. The host
// keeps each accepted batch (and its memory) until settle covers it.
//
// Thread-safety: an instance is driven by one thread at a time (see plugin.h).
#pragma once

#include <cdcflow/plugin.h>
#include <cdcflow/status.hpp>

#include <array>
#include <concepts>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

namespace cdcflow {

inline std::string_view sv(cdcflow_str s) noexcept {
    return s.data ? std::string_view(s.data, static_cast<size_t>(s.len)) : std::string_view();
}
inline cdcflow_str str(std::string_view s) noexcept {
    return cdcflow_str{s.data(), s.size()};
}

// An exception that carries an ABI status; thrown by SDK helpers and by
// plugins that want a status other than CDCFLOW_ERR_INTERNAL.
class Error : public std::runtime_error {
public:
    Error(cdcflow_status status, const std::string &msg) : std::runtime_error(msg), status_(status) {}
    // A failed Status as an exception, with its code's ABI status: e.g.
    // Status::Refused (an event breaks a rule) from process is
    // CDCFLOW_ERR_EVENT, a poison event the host isolates (ABI 4). An OK
    // status is not an error: thrown anyway, it is CDCFLOW_ERR_INTERNAL.
    explicit Error(const Status &st)
        : std::runtime_error(st.ok() ? std::string("threw an OK status") : st.message()),
          status_(st.ok() ? CDCFLOW_ERR_INTERNAL : st.abi()) {}
    cdcflow_status status() const noexcept { return status_; }

private:
    cdcflow_status status_;
};

namespace detail {
// config_location_at (ABI 6), or the key's own position from an older host.
inline std::string location_at(const cdcflow_host_api *host, const cdcflow_config *cfg, const char *key,
                               const char *pointer) {
    const char *loc =
        CDCFLOW_HAS_FIELD(host, cdcflow_host_api, config_location_at) && host->config_location_at
            ? host->config_location_at(cfg, key, pointer ? pointer : "")
            : host->config_location(cfg, key);
    return loc ? loc : "";
}
} // namespace detail

// A stage's view of its config. Values were type-checked by the host against
// the declared schema, so a getter fails only for an undeclared key or a
// mismatched type: both are plugin bugs and throw Error.
class Config {
public:
    Config(const cdcflow_host_api *host, const cdcflow_config *cfg) : host_(host), cfg_(cfg) {}

    std::string_view str(const char *key) const {
        cdcflow_str out{};
        check(host_->config_get_string(cfg_, key, &out), key);
        return sv(out);
    }
    int64_t i64(const char *key) const {
        int64_t out = 0;
        check(host_->config_get_int(cfg_, key, &out), key);
        return out;
    }
    double dbl(const char *key) const {
        double out = 0;
        check(host_->config_get_double(cfg_, key, &out), key);
        return out;
    }
    bool boolean(const char *key) const {
        int32_t out = 0;
        check(host_->config_get_bool(cfg_, key, &out), key);
        return out != 0;
    }
    // Any value as JSON text (mappings, sequences, scalars).
    std::string_view json(const char *key) const {
        cdcflow_str out{};
        check(host_->config_get_json(cfg_, key, &out), key);
        return sv(out);
    }
    // True when the key is set in the file or has a default.
    bool has(const char *key) const {
        cdcflow_str out{};
        return host_->config_get_json(cfg_, key, &out) == CDCFLOW_OK;
    }
    // "file:line:col" of the key, for error messages about its value.
    std::string location(const char *key) const {
        const char *loc = host_->config_location(cfg_, key);
        return loc ? loc : "";
    }
    // "file:line:col" of a value nested in the key's value: `pointer` is a
    // JSON Pointer into json(key) ("/events/0/when", "~1" for '/', "~0" for
    // '~'); where it names nothing, the deepest node on its way. A host
    // older than ABI 6 answers location(key).
    std::string location_at(const char *key, const char *pointer) const {
        return detail::location_at(host_, cfg_, key, pointer);
    }
    // Throws Error(CDCFLOW_ERR_CONFIG) with the key's position prefixed.
    [[noreturn]] void fail(const char *key, const std::string &why) const {
        std::string loc = location(key);
        throw Error(CDCFLOW_ERR_CONFIG, (loc.empty() ? std::string() : loc + ": ") + key + ": " + why);
    }

private:
    void check(cdcflow_status st, const char *key) const {
        if (st != CDCFLOW_OK)
            throw Error(st, std::string("config key '") + key + "': " + cdcflow_status_str(st));
    }
    const cdcflow_host_api *host_;
    const cdcflow_config *cfg_;
};

// ---- Declared config (ABI 3) -------------------------------------------
//
// Each key is named once, in a settings struct, and bound to the member it
// fills; the SDK generates from that one list both the cdcflow_config_param
// array the host enforces (type, required, bounds, choices, secrets) and the
// reading into members, so a plugin cannot read a key it did not declare:
//
//     struct UpperSettings {
//         std::string field = "type";
//         int64_t limit = 0;
//         static constexpr const char *kModes[] = {"fast", "safe", nullptr};
//         std::string mode;
//         static constexpr auto kParams = cdcflow::params(
//             cdcflow::param("field", &UpperSettings::field).defaults_to("type").describe("which field"),
//             cdcflow::param("limit", &UpperSettings::limit).min("0").max("100").describe("..."),
//             cdcflow::param("mode", &UpperSettings::mode).choices(kModes).defaults_to("safe"));
//     };
//     class Upper : public cdcflow::Transform {
//     public:
//         using Settings = UpperSettings;
//         Upper(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx) : Transform(ctx) {
//             if (cfg.field.empty()) cfg.fail(&Settings::field, "must not be empty");
//         }
//         ...
//
// (A constructor taking `const UpperSettings &` works too, when it needs no
// fail() or location().)
//
// Defaults, min and max are written as the value itself, the way a user
// writes it in the pipeline file (no extra quotes for a string). Member types:
// std::string (string), bool, double, integers (int; a value that does not fit
// a narrower member is a config error: declare bounds that fit), cdcflow::Json
// (any YAML value as JSON text), and std::optional of any of these (nullopt
// when the key is unset and has no default; a plain member then keeps its
// initializer). cdcflow::deprecated("old_key", type) accepts a key so that
// older pipeline files load, ignores it, and has the host warn when it is set.
//
// The older way, a `kConfig` array of cdcflow_config_key and a
// `(const cdcflow::Config &, cdcflow::Context)` constructor reading keys by
// name, still compiles and loads unchanged.

// A JSON key's value as JSON text.
struct Json {
    std::string text;
};

namespace detail {

template <typename M> struct unwrap_optional {
    using type = M;
    static constexpr bool optional = false;
};
template <typename M> struct unwrap_optional<std::optional<M>> {
    using type = M;
    static constexpr bool optional = true;
};

// No member: a deprecated key.
struct Unused {};

template <typename M> constexpr cdcflow_config_type config_type_for() {
    using V = typename unwrap_optional<M>::type;
    if constexpr (std::is_same_v<V, std::string>)
        return CDCFLOW_CONFIG_STRING;
    else if constexpr (std::is_same_v<V, bool>)
        return CDCFLOW_CONFIG_BOOL;
    else if constexpr (std::is_integral_v<V>)
        return CDCFLOW_CONFIG_INT;
    else if constexpr (std::is_same_v<V, double>)
        return CDCFLOW_CONFIG_DOUBLE;
    else if constexpr (std::is_same_v<V, Json>)
        return CDCFLOW_CONFIG_JSON;
    else
        static_assert(sizeof(V) == 0,
                      "a config member is std::string, bool, an integer, double, cdcflow::Json "
                      "or std::optional of one of these");
}

constexpr bool same_text(const char *a, const char *b) {
    while (*a && *a == *b)
        ++a, ++b;
    return *a == *b;
}

} // namespace detail

// One declared key, bound to a member of the settings struct C. Built with
// cdcflow::param(); each modifier returns a changed copy (constexpr).
template <typename C, typename M> struct Param {
    const char *name;
    M C::*member; // null: deprecated, nothing to fill
    cdcflow_config_type type;
    uint32_t flags = 0;
    const char *default_value = nullptr;
    const char *description = "";
    const char *min_value = nullptr;
    const char *max_value = nullptr;
    const char *const *choice_list = nullptr;

    constexpr Param required() const {
        return with([](Param &p) { p.flags |= CDCFLOW_PARAM_REQUIRED; });
    }
    constexpr Param secret() const {
        return with([](Param &p) { p.flags |= CDCFLOW_PARAM_SECRET; });
    }
    // Accepted so that older pipeline files load; the host warns when a file
    // sets it (give the reason with describe()). The member is still filled,
    // for a plugin that honours the key while it goes; cdcflow::deprecated()
    // declares one with no member at all.
    constexpr Param deprecated() const {
        return with([](Param &p) { p.flags |= CDCFLOW_PARAM_DEPRECATED; });
    }
    constexpr Param describe(const char *text) const {
        return with([&](Param &p) { p.description = text; });
    }
    constexpr Param defaults_to(const char *value) const {
        return with([&](Param &p) { p.default_value = value; });
    }
    // Inclusive bounds, for integer and double keys.
    constexpr Param min(const char *value) const {
        static_assert(numeric(), "min() is for integer and double keys");
        return with([&](Param &p) { p.min_value = value; });
    }
    constexpr Param max(const char *value) const {
        static_assert(numeric(), "max() is for integer and double keys");
        return with([&](Param &p) { p.max_value = value; });
    }
    // The allowed values of a string key: a static array ending with nullptr.
    template <size_t N> constexpr Param choices(const char *const (&list)[N]) const {
        static_assert(std::is_same_v<typename detail::unwrap_optional<M>::type, std::string> ||
                          std::is_same_v<M, detail::Unused>,
                      "choices() is for string keys");
        static_assert(N >= 2, "choices: at least one value, then nullptr");
        if (list[N - 1] != nullptr) throw "choices: the array must end with nullptr";
        return with([&](Param &p) { p.choice_list = list; });
    }

    constexpr cdcflow_config_param to_c() const {
        cdcflow_config_param p{};
        p.struct_size = sizeof(cdcflow_config_param);
        p.flags = flags;
        p.name = name;
        p.type = type;
        p.default_value = default_value;
        p.description = description;
        p.min = min_value;
        p.max = max_value;
        p.choices = choice_list;
        return p;
    }

private:
    static constexpr bool numeric() {
        if constexpr (std::is_same_v<M, detail::Unused>)
            return true;
        else
            return config_type_for_m() == CDCFLOW_CONFIG_INT || config_type_for_m() == CDCFLOW_CONFIG_DOUBLE;
    }
    static constexpr cdcflow_config_type config_type_for_m() { return detail::config_type_for<M>(); }
    template <typename F> constexpr Param with(F &&f) const {
        Param p = *this;
        f(p);
        return p;
    }
};

// A key named `name` that fills `member`; its type follows the member's.
template <typename C, typename M> constexpr Param<C, M> param(const char *name, M C::*member) {
    return Param<C, M>{name, member, detail::config_type_for<M>()};
}

// A key that is accepted (so that older pipeline files load) and ignored; the
// host warns when a file sets it, with the description as the reason.
template <typename C>
constexpr Param<C, detail::Unused> deprecated(const char *name, cdcflow_config_type type) {
    Param<C, detail::Unused> p{name, nullptr, type};
    p.flags = CDCFLOW_PARAM_DEPRECATED;
    return p;
}

// The declaration: a settings struct's `static constexpr auto kParams`.
template <typename... P> constexpr std::tuple<P...> params(P... p) {
    return std::tuple<P...>(p...);
}

namespace detail {

template <typename C> constexpr size_t param_count() {
    return std::tuple_size_v<std::remove_cv_t<decltype(C::kParams)>>;
}

// Checked when the plugin compiles: names present and unique.
template <typename C> constexpr bool valid_params() {
    return std::apply(
        [](const auto &...p) {
            const char *names[] = {p.name..., nullptr};
            for (size_t i = 0; names[i]; ++i) {
                if (!*names[i]) return false;
                for (size_t j = 0; j < i; ++j)
                    if (same_text(names[i], names[j])) return false;
            }
            return true;
        },
        C::kParams);
}

template <typename C> struct ParamArray {
    static_assert(valid_params<C>(), "config keys need a name, each declared once");
    static constexpr std::array<cdcflow_config_param, param_count<C>()> value = std::apply(
        [](const auto &...p) { return std::array<cdcflow_config_param, sizeof...(p)>{p.to_c()...}; },
        C::kParams);
};

} // namespace detail

// The key name that fills `member` of settings struct C, or nullptr when no
// declared key does (so messages name a key without writing it twice).
template <typename C, typename M> constexpr const char *key_of(M C::*member) {
    const char *found = nullptr;
    std::apply(
        [&](const auto &...p) {
            auto match = [&](const auto &q) {
                if constexpr (std::is_same_v<std::remove_cvref_t<decltype(q.member)>, M C::*>)
                    if (!found && q.member == member) found = q.name;
            };
            (match(p), ...);
        },
        C::kParams);
    return found;
}

// The settings struct C, filled from the host's checked config; what an
// ABI 3 plugin's constructor receives. fail() and location() name a key by its
// member, so that no key name is written twice.
template <typename C> class Configured : public C {
public:
    Configured(const cdcflow_host_api *host, const cdcflow_config *cfg) : C(), host_(host), cfg_(cfg) {
        if (!CDCFLOW_HAS_FIELD(host_, cdcflow_host_api, config_lookup) || !host_->config_lookup)
            throw Error(CDCFLOW_ERR_INTERNAL, "the host has no config_lookup (ABI 3); this plugin needs it");
        std::apply([&](const auto &...p) { (this->read(p), ...); }, C::kParams);
    }

    // "file:line:col" of the key that fills `member`.
    template <typename M> std::string location(M C::*member) const {
        const char *loc = host_->config_location(cfg_, name_of(member));
        return loc ? loc : "";
    }
    // "file:line:col" of a value nested in that key's value (a JSON Pointer,
    // as Config::location_at).
    template <typename M> std::string location_at(M C::*member, const char *pointer) const {
        return detail::location_at(host_, cfg_, name_of(member), pointer);
    }
    // Throws Error(CDCFLOW_ERR_CONFIG): "<file:line:col>: <key>: <why>".
    template <typename M> [[noreturn]] void fail(M C::*member, const std::string &why) const {
        fail_key(name_of(member), why);
    }
    // The key name that fills `member` (declared, or Error INTERNAL).
    template <typename M> static const char *name_of(M C::*member) {
        const char *found = key_of(member);
        if (!found) throw Error(CDCFLOW_ERR_INTERNAL, "a config member that no declared key fills");
        return found;
    }

private:
    [[noreturn]] void fail_key(const char *key, const std::string &why) const {
        const char *loc = host_->config_location(cfg_, key);
        std::string where = loc && *loc ? std::string(loc) + ": " : std::string();
        throw Error(CDCFLOW_ERR_CONFIG, where + key + ": " + why);
    }

    template <typename M> void read(const Param<C, M> &p) {
        if constexpr (!std::is_same_v<M, detail::Unused>) {
            using V = typename detail::unwrap_optional<M>::type;
            cdcflow_config_value v{};
            v.struct_size = sizeof v;
            cdcflow_config_result r = host_->config_lookup(cfg_, p.name, p.type, &v);
            M &out = this->*(p.member);
            if (r == CDCFLOW_CONFIG_UNSET) {
                if constexpr (detail::unwrap_optional<M>::optional) out.reset();
                return;
            }
            if (r != CDCFLOW_CONFIG_FOUND)
                throw Error(CDCFLOW_ERR_INTERNAL,
                            std::string("config key '") + p.name + "': the host answers " +
                                (r == CDCFLOW_CONFIG_UNDECLARED ? "undeclared" : "another type"));
            if constexpr (std::is_same_v<V, std::string>)
                out = std::string(sv(v.text));
            else if constexpr (std::is_same_v<V, Json>)
                out = Json{std::string(sv(v.text))};
            else if constexpr (std::is_same_v<V, bool>)
                out = v.b != 0;
            else if constexpr (std::is_same_v<V, double>)
                out = v.d;
            else {
                if (!std::in_range<V>(v.i))
                    fail_key(
                        p.name,
                        ((p.flags & CDCFLOW_PARAM_SECRET) ? std::string("the value") : std::to_string(v.i)) +
                            " does not fit (the plugin declares no bounds that keep it in range)");
                out = static_cast<V>(v.i);
            }
        } else {
            (void)p;
        }
    }

    const cdcflow_host_api *host_;
    const cdcflow_config *cfg_;
};

// A counter or gauge registered with the host.
class Metric {
public:
    Metric() = default;
    Metric(const cdcflow_host_api *host, cdcflow_metric *m) : host_(host), m_(m) {}
    void add(int64_t delta = 1) const {
        if (m_) host_->metric_add(m_, delta);
    }
    void set(int64_t value) const {
        if (m_) host_->metric_set(m_, value);
    }

private:
    const cdcflow_host_api *host_ = nullptr;
    cdcflow_metric *m_ = nullptr;
};

// The stage's handle on the host: logging, metrics, stop flag.
class Context {
public:
    Context(const cdcflow_host_api *host, cdcflow_ctx *ctx) : host_(host), ctx_(ctx) {}
    const cdcflow_host_api *host() const { return host_; }
    cdcflow_ctx *raw() const { return ctx_; }

    void log(cdcflow_log_level level, const std::string &msg) const { host_->log(ctx_, level, msg.c_str()); }
    void debug(const std::string &msg) const { log(CDCFLOW_LOG_DEBUG, msg); }
    void info(const std::string &msg) const { log(CDCFLOW_LOG_INFO, msg); }
    void warn(const std::string &msg) const { log(CDCFLOW_LOG_WARN, msg); }
    void error(const std::string &msg) const { log(CDCFLOW_LOG_ERROR, msg); }

    Metric counter(const char *name, const char *help) const {
        return Metric(host_, host_->metric_counter(ctx_, name, help));
    }
    Metric gauge(const char *name, const char *help) const {
        return Metric(host_, host_->metric_gauge(ctx_, name, help));
    }
    // One figure of a cache this stage keeps (ABI 4), under the host's own
    // cache families labelled with the stage and `cache` ("window", "rows"):
    // set ENTRIES and CAPACITY, add to HITS and MISSES (once per batch, not
    // per event). A host older than ABI 4 has no such families: the handle
    // then does nothing (count in a metric of your own if you need it there).
    Metric cache_metric(const char *cache, cdcflow_cache_stat stat) const {
        if (!CDCFLOW_HAS_FIELD(host_, cdcflow_host_api, metric_cache) || !host_->metric_cache)
            return Metric();
        return Metric(host_, host_->metric_cache(ctx_, cache, stat));
    }
    // Sources (ABI 4): the events not yet read from `partition` ("" for a
    // single-partition source such as an outbox), cdcflow_source_lag_events.
    // Set it whenever the source learns it; a no-op on an older host.
    Metric lag_metric(const char *partition) const {
        if (!CDCFLOW_HAS_FIELD(host_, cdcflow_host_api, metric_lag) || !host_->metric_lag) return Metric();
        return Metric(host_, host_->metric_lag(ctx_, partition));
    }
    bool stop_requested() const { return host_->stop_requested(ctx_) != 0; }
    std::string_view stage_id() const { return host_->stage_id(ctx_); }
    // A fencing sink lost its checkpoint outside process() (see plugin.h).
    // Thread-safe. On an ABI 1 host, logged as an error instead.
    void ownership_lost(const std::string &msg) const {
        if (CDCFLOW_HAS_FIELD(host_, cdcflow_host_api, ownership_lost) && host_->ownership_lost)
            host_->ownership_lost(ctx_, msg.c_str());
        else
            error(msg);
    }

    // Sources that declare `static constexpr uint32_t kFlags =
    // CDCFLOW_PLUGIN_GROUP_PARTITIONS` (ABI 5), during poll, with nothing
    // pushed into the batch yet: the partitions this source reads changed
    // (plugin.h, partitions_changed). Returns the host's status and writes
    // its message into err; never throws, so that it may be called from a
    // C library's callback (a Kafka rebalance). CDCFLOW_ERR_INTERNAL on a
    // host older than ABI 5.
    cdcflow_status partitions_changed(const cdcflow_partitions &change, std::string &err) const noexcept {
        if (!CDCFLOW_HAS_FIELD(host_, cdcflow_host_api, partitions_changed) || !host_->partitions_changed) {
            err = "this host is older than ABI 5: it cannot follow partitions assigned by a consumer group";
            return CDCFLOW_ERR_INTERNAL;
        }
        char buf[512];
        buf[0] = '\0';
        cdcflow_status cs = host_->partitions_changed(ctx_, &change, buf, sizeof buf);
        if (cs != CDCFLOW_OK) {
            try {
                err = buf[0] ? buf : cdcflow_status_str(cs);
            } catch (...) {
            }
        }
        return cs;
    }

    // The pipeline's integer setting `name`: the file's settings: value,
    // else its default (plugin.h says what it does not apply), e.g.
    // "owner_lease_ms";
    // nullopt for a name that is no integer setting, and on a host older
    // than ABI 7 (which does not tell).
    std::optional<int64_t> pipeline_setting(const char *name) const noexcept {
        if (!CDCFLOW_HAS_FIELD(host_, cdcflow_host_api, pipeline_setting) || !host_->pipeline_setting)
            return std::nullopt;
        int64_t v = 0;
        if (host_->pipeline_setting(ctx_, name, &v) != CDCFLOW_OK) return std::nullopt;
        return v;
    }

private:
    const cdcflow_host_api *host_;
    cdcflow_ctx *ctx_;
};

// A borrowed batch. Events are walked with the host's stride, so the SDK
// stays correct when the host's cdcflow_event grows.
class Batch {
public:
    Batch(const cdcflow_host_api *host, cdcflow_ctx *ctx, cdcflow_batch *b) : host_(host), ctx_(ctx), b_(b) {
        first_ = host_->batch_events(b_, &count_, &stride_);
        if (CDCFLOW_HAS_FIELD(host_, cdcflow_host_api, batch_push)) push_ = host_->batch_push;
        if (CDCFLOW_HAS_FIELD(host_, cdcflow_host_api, event_drop)) drop_ = host_->event_drop;
    }

    uint32_t size() const { return count_; }
    bool empty() const { return count_ == 0; }
    uint32_t capacity() const { return host_->batch_capacity(b_); }
    cdcflow_batch *raw() const { return b_; }

    cdcflow_event &operator[](uint32_t i) const {
        return *reinterpret_cast<cdcflow_event *>(reinterpret_cast<char *>(first_) +
                                                  static_cast<size_t>(i) * stride_);
    }
    void reject(uint32_t i, std::string_view reason) const {
        host_->event_reject(ctx_, b_, i, reason.data(), reason.size());
    }
    void mark_duplicate(uint32_t i) const { host_->event_mark_duplicate(ctx_, b_, i); }
    // Transforms: filter event i out (ABI 3). It is not applied and not
    // dead-lettered, counted in cdcflow_events_total{outcome="dropped"}, and the checkpoint moves
    // past it. A rejection or duplicate mark already on the event stands.
    // A host without event_drop (its ABI 3 table does not hold it) gets the
    // event marked duplicate instead: the same outcome for the data (skipped,
    // checkpoint moves on, no dead letter), only counted as a duplicate;
    // failing the pipeline there would make every filter unusable for the
    // sake of a counter's name. (Hosts before ABI 3 refuse an ABI 3 plugin.)
    void drop(uint32_t i) const {
        if (drop_)
            drop_(ctx_, b_, i);
        else
            host_->event_mark_duplicate(ctx_, b_, i);
    }

    // Sources: append a copy of ev. Returns false when the batch is full;
    // throws Error(CDCFLOW_ERR_NOMEM) when memory ran out (the poll then
    // fails instead of returning a short batch that would be retried forever).
    bool append(const cdcflow_event_init &ev) {
        cdcflow_status st;
        if (push_) {
            st = push_(b_, &ev);
            if (st == CDCFLOW_ERR_BATCH_FULL) return false;
        } else { // an ABI 1 host: ERR_NOMEM meant "full"
            st = host_->batch_append(b_, &ev);
            if (st == CDCFLOW_ERR_NOMEM) return false;
        }
        if (st != CDCFLOW_OK)
            throw Error(st, st == CDCFLOW_ERR_NOMEM
                                ? "out of memory copying an event of " + std::to_string(ev.payload.len) +
                                      " payload bytes"
                                : std::string("batch_append failed: ") + cdcflow_status_str(st));
        ++count_; // the event array never moves while we hold the batch
        return true;
    }
    // Scratch memory owned by the batch: it stays valid while any later stage
    // holds the batch (freed when the batch is recycled), so an event's
    // strings may point into it. Null when memory ran out.
    void *alloc(size_t n) const { return host_->batch_alloc(b_, n); }
    // A copy of bytes in the batch's memory, e.g. a rewritten payload to set
    // as event.payload. Throws Error(CDCFLOW_ERR_NOMEM) when memory ran out.
    cdcflow_str copy(std::string_view bytes) const {
        if (bytes.empty()) return cdcflow_str{"", 0};
        void *p = alloc(bytes.size());
        if (!p)
            throw Error(CDCFLOW_ERR_NOMEM,
                        "out of memory copying " + std::to_string(bytes.size()) + " bytes into the batch");
        std::memcpy(p, bytes.data(), bytes.size());
        return cdcflow_str{static_cast<const char *>(p), bytes.size()};
    }

    // Event i's payload parsed as JSON once per pipeline (plugin.h,
    // event_payload): true with out filled in; false on a host older than
    // ABI 3 (parse it yourself). Throws Error when memory ran out.
    bool payload(uint32_t i, cdcflow_payload &out) const {
        if (!CDCFLOW_HAS_FIELD(host_, cdcflow_host_api, event_payload) || !host_->event_payload) return false;
        out = cdcflow_payload{};
        out.struct_size = sizeof out;
        cdcflow_status st = host_->event_payload(b_, i, &out);
        if (st != CDCFLOW_OK) throw Error(st, std::string("event_payload failed: ") + cdcflow_status_str(st));
        return true;
    }
    // Field k of a parsed payload (walked with the host's stride).
    static const cdcflow_json_field &field(const cdcflow_payload &p, uint32_t k) {
        return *reinterpret_cast<const cdcflow_json_field *>(reinterpret_cast<const char *>(p.fields) +
                                                             static_cast<size_t>(k) * p.field_stride);
    }

    class iterator {
    public:
        iterator(const Batch *b, uint32_t i) : b_(b), i_(i) {}
        cdcflow_event &operator*() const { return (*b_)[i_]; }
        iterator &operator++() {
            ++i_;
            return *this;
        }
        bool operator!=(const iterator &o) const { return i_ != o.i_; }
        uint32_t index() const { return i_; }

    private:
        const Batch *b_;
        uint32_t i_;
    };
    iterator begin() const { return iterator(this, 0); }
    iterator end() const { return iterator(this, count_); }

private:
    const cdcflow_host_api *host_;
    cdcflow_ctx *ctx_;
    cdcflow_batch *b_;
    cdcflow_event *first_ = nullptr;
    uint32_t count_ = 0;
    uint32_t stride_ = sizeof(cdcflow_event);
    // ABI 2's batch_push, null on an ABI 1 host (then batch_append).
    cdcflow_status (*push_)(cdcflow_batch *, const cdcflow_event_init *) = nullptr;
    // ABI 3's event_drop, null on a host whose table does not hold it.
    void (*drop_)(cdcflow_ctx *, cdcflow_batch *, uint32_t) = nullptr;
};

inline cdcflow_event_init make_event_init() {
    cdcflow_event_init e{};
    e.struct_size = sizeof(cdcflow_event_init);
    e.aggregate_version = -1;
    return e;
}

// Common base: lifecycle hooks with do-nothing defaults.
class Stage {
public:
    explicit Stage(Context ctx) : ctx_(ctx) {}
    virtual ~Stage() = default;
    Stage(const Stage &) = delete;
    Stage &operator=(const Stage &) = delete;

    virtual void start() {}
    virtual void flush() {}
    virtual void stop() {}
    const Context &ctx() const { return ctx_; }

protected:
    Context ctx_;
};

struct PollResult {
    bool exhausted = false; // nothing left right now (used by --drain)
};

class Source : public Stage {
public:
    static constexpr cdcflow_kind kKind = CDCFLOW_KIND_SOURCE;
    using Stage::Stage;
    // Fill batch (up to batch.capacity()); wait at most wait_ms, parked.
    virtual PollResult poll(Batch &batch, uint32_t wait_ms) = 0;
    // Resume just after these positions (may be empty).
    virtual void seek(std::span<const cdcflow_position> positions) { (void)positions; }
    // Positions durably committed by the sink.
    virtual void committed(std::span<const cdcflow_position> positions) { (void)positions; }
};

class Transform : public Stage {
public:
    static constexpr cdcflow_kind kKind = CDCFLOW_KIND_TRANSFORM;
    using Stage::Stage;
    virtual void process(Batch &batch) = 0;
    // ABI 1's way for a stateful transform to rebuild its state as of the
    // sink's checkpoint (by reading the source's store itself). Prefer
    // history() + restore() (see the top of this file): the host then
    // replays the events through the source, wherever they live.
    virtual void seek(std::span<const cdcflow_position> positions) { (void)positions; }
};

class Sink : public Stage {
public:
    static constexpr cdcflow_kind kKind = CDCFLOW_KIND_SINK;
    using Stage::Stage;
    // Make the batch durable (effects, dead letters, checkpoint) before
    // returning; a deferred-commit sink (kFlags, settle) only accepts it.
    virtual void process(Batch &batch) = 0;
    // Report the durable checkpoint, one position per partition.
    virtual void checkpoint(const std::function<void(const cdcflow_position &)> &emit) { (void)emit; }
};

namespace detail {

inline void write_err(char *err, uint64_t err_len, const char *msg) {
    if (!err || err_len == 0) return;
    size_t n = std::strlen(msg);
    if (n >= err_len) n = static_cast<size_t>(err_len - 1);
    std::memcpy(err, msg, n);
    err[n] = '\0';
}

// Run f; turn any exception into a status and a message.
template <typename F> cdcflow_status guarded(char *err, uint64_t err_len, F &&f) noexcept {
    try {
        f();
        return CDCFLOW_OK;
    } catch (const Error &e) {
        write_err(err, err_len, e.what());
        return e.status();
    } catch (const std::bad_alloc &) {
        write_err(err, err_len, "out of memory");
        return CDCFLOW_ERR_NOMEM;
    } catch (const std::exception &e) {
        write_err(err, err_len, e.what());
        return CDCFLOW_ERR_INTERNAL;
    } catch (...) {
        // `throw 42` and the like carry no text we could show: say what was
        // thrown and how to give the host a message instead.
        write_err(err, err_len,
                  "threw something that is not a std::exception (e.g. `throw 42`), so there is no message; "
                  "throw cdcflow::Error or a std::exception instead");
        return CDCFLOW_ERR_INTERNAL;
    }
}

// One instance as the host sees it: the user's object plus what the thunks
// need to rebuild Batch views.
template <typename T> struct Holder {
    const cdcflow_host_api *host;
    cdcflow_ctx *ctx;
    std::unique_ptr<T> obj;
};

// For callbacks that return no status (stop, committed, release): an
// exception is logged as an error on the stage instead of vanishing.
template <typename T, typename F> void guarded_logged(Holder<T> *h, const char *what, F &&f) noexcept {
    char buf[512];
    buf[0] = '\0';
    if (guarded(buf, sizeof buf, std::forward<F>(f)) != CDCFLOW_OK) {
        char line[640];
        std::snprintf(line, sizeof line, "%s failed: %s", what, buf);
        h->host->log(h->ctx, CDCFLOW_LOG_ERROR, line);
    }
}

template <typename T>
concept FencingSink = std::is_base_of_v<Sink, T> && requires(T &t, const cdcflow_ownership &o) {
    t.acquire(o);
    t.release();
};

// T declares its config the ABI 3 way: `using Settings = S;` where S has
// `static constexpr auto kParams = cdcflow::params(...)`.
template <typename T>
concept DeclaresSettings = requires {
    T::Settings::kParams;
};

// Makes a T from the host's objects, as the create callback does (also used
// by the unit tests' harness).
template <typename T>
std::unique_ptr<T> make_stage(const cdcflow_host_api *host, cdcflow_ctx *ctx, const cdcflow_config *cfg) {
    if constexpr (DeclaresSettings<T>)
        return std::make_unique<T>(Configured<typename T::Settings>(host, cfg), Context(host, ctx));
    else
        return std::make_unique<T>(Config(host, cfg), Context(host, ctx));
}

template <typename T>
concept ReplayingSource = std::is_base_of_v<Source, T> && requires(T &t, cdcflow_replay &r, Batch &b) {
    { t.replay(r, b) } -> std::convertible_to<bool>;
};

// A transform or sink that follows partitions a consumer group assigns
// (ABI 5): `void partitions(const cdcflow_partitions &change)`; a sink
// reports positions through change.fn (see plugin.h).
template <typename T>
concept PartitionFollower = (std::is_base_of_v<Transform, T> ||
                             std::is_base_of_v<Sink, T>)&&requires(T &t, const cdcflow_partitions &c) {
    t.partitions(c);
};

// A sink whose commit completes after process returns (ABI 6): it declares
// CDCFLOW_PLUGIN_DEFERRED_COMMIT in kFlags and reports what is durable with
// `uint64_t settle(uint32_t wait_ms)` (see plugin.h's settle).
template <typename T>
concept SettlingSink = std::is_base_of_v<Sink, T> && requires(T &t, uint32_t wait_ms) {
    { t.settle(wait_ms) } -> std::convertible_to<uint64_t>;
};

template <typename T> constexpr uint32_t flags_of() {
    if constexpr (requires { T::kFlags; })
        return T::kFlags;
    else
        return 0;
}

template <typename T>
concept RestoringTransform = std::is_base_of_v<Transform, T> && requires(T &t, Batch &b) {
    { t.history() } -> std::convertible_to<uint64_t>;
    t.restore(b);
};

template <typename T> constexpr const char *history_setting_of() {
    if constexpr (requires { T::kHistorySetting; })
        return T::kHistorySetting;
    else
        return nullptr;
}

template <typename T> struct Thunks {
    static cdcflow_status create(const cdcflow_host_api *host, cdcflow_ctx *ctx, const cdcflow_config *cfg,
                                 void **instance, char *err, uint64_t err_len) noexcept {
        return guarded(err, err_len, [&] {
            auto h = std::make_unique<Holder<T>>();
            h->host = host;
            h->ctx = ctx;
            h->obj = make_stage<T>(host, ctx, cfg);
            *instance = h.release();
        });
    }
    static Holder<T> *H(void *p) { return static_cast<Holder<T> *>(p); }
    static cdcflow_status start(void *p, char *err, uint64_t err_len) noexcept {
        return guarded(err, err_len, [&] { H(p)->obj->start(); });
    }
    static cdcflow_status flush(void *p, char *err, uint64_t err_len) noexcept {
        return guarded(err, err_len, [&] { H(p)->obj->flush(); });
    }
    static void stop(void *p) noexcept {
        guarded_logged(H(p), "stop", [&] { H(p)->obj->stop(); });
    }
    static void destroy(void *p) noexcept {
        try {
            delete H(p);
        } catch (...) {
        }
    }
    static cdcflow_status poll(void *p, cdcflow_batch *b, uint32_t wait_ms, int32_t *exhausted, char *err,
                               uint64_t err_len) noexcept {
        if constexpr (std::is_base_of_v<Source, T>) {
            return guarded(err, err_len, [&] {
                Batch batch(H(p)->host, H(p)->ctx, b);
                PollResult r = H(p)->obj->poll(batch, wait_ms);
                *exhausted = r.exhausted ? 1 : 0;
            });
        } else {
            (void)p, (void)b, (void)wait_ms, (void)exhausted;
            write_err(err, err_len, "not a source");
            return CDCFLOW_ERR_INTERNAL;
        }
    }
    static cdcflow_status seek(void *p, const cdcflow_position *pos, uint32_t n, char *err,
                               uint64_t err_len) noexcept {
        if constexpr (std::is_base_of_v<Source, T> || std::is_base_of_v<Transform, T>) {
            return guarded(err, err_len, [&] { H(p)->obj->seek(std::span<const cdcflow_position>(pos, n)); });
        } else {
            (void)p, (void)pos, (void)n;
            return CDCFLOW_OK;
        }
    }
    static void committed(void *p, const cdcflow_position *pos, uint32_t n) noexcept {
        if constexpr (std::is_base_of_v<Source, T>) {
            guarded_logged(H(p), "committed",
                           [&] { H(p)->obj->committed(std::span<const cdcflow_position>(pos, n)); });
        } else {
            (void)p, (void)pos, (void)n;
        }
    }
    static cdcflow_status process(void *p, cdcflow_batch *b, char *err, uint64_t err_len) noexcept {
        if constexpr (std::is_base_of_v<Transform, T> || std::is_base_of_v<Sink, T>) {
            return guarded(err, err_len, [&] {
                Batch batch(H(p)->host, H(p)->ctx, b);
                H(p)->obj->process(batch);
            });
        } else {
            (void)p, (void)b;
            write_err(err, err_len, "not a transform or sink");
            return CDCFLOW_ERR_INTERNAL;
        }
    }
    static cdcflow_status checkpoint(void *p, cdcflow_position_fn fn, void *user, char *err,
                                     uint64_t err_len) noexcept {
        if constexpr (std::is_base_of_v<Sink, T>) {
            return guarded(err, err_len, [&] {
                H(p)->obj->checkpoint([&](const cdcflow_position &pos) { fn(user, &pos); });
            });
        } else {
            (void)p, (void)fn, (void)user, (void)err, (void)err_len;
            return CDCFLOW_OK;
        }
    }
    static cdcflow_status acquire(void *p, const cdcflow_ownership *req, char *err,
                                  uint64_t err_len) noexcept {
        if constexpr (FencingSink<T>) {
            return guarded(err, err_len, [&] {
                cdcflow_ownership o{};
                o.struct_size = sizeof o;
                // A newer host's longer struct: read what this SDK knows.
                std::memcpy(&o, req, req->struct_size < sizeof o ? req->struct_size : sizeof o);
                o.struct_size = sizeof o;
                H(p)->obj->acquire(o);
            });
        } else {
            (void)p, (void)req, (void)err, (void)err_len;
            return CDCFLOW_ERR_INTERNAL;
        }
    }
    static void release(void *p) noexcept {
        if constexpr (FencingSink<T>)
            guarded_logged(H(p), "release", [&] { H(p)->obj->release(); });
        else
            (void)p;
    }
    // The host's cdcflow_history and cdcflow_replay are at least as long as
    // this SDK's (it refuses plugins of a newer ABI), so they are used in place.
    static void history(void *p, cdcflow_history *want) noexcept {
        if constexpr (RestoringTransform<T>) {
            uint64_t n = 0;
            // No status to return: a failure is logged, and the stage then
            // asks for nothing (it starts empty, as without replay).
            guarded_logged(H(p), "history", [&] { n = static_cast<uint64_t>(H(p)->obj->history()); });
            want->max_events = n;
            want->setting = history_setting_of<T>();
        } else {
            (void)p, (void)want;
        }
    }
    static cdcflow_status restore(void *p, cdcflow_batch *b, char *err, uint64_t err_len) noexcept {
        if constexpr (RestoringTransform<T>) {
            return guarded(err, err_len, [&] {
                Batch batch(H(p)->host, H(p)->ctx, b);
                H(p)->obj->restore(batch);
            });
        } else {
            (void)p, (void)b, (void)err, (void)err_len;
            return CDCFLOW_ERR_INTERNAL;
        }
    }
    static cdcflow_status partitions(void *p, const cdcflow_partitions *change, char *err,
                                     uint64_t err_len) noexcept {
        if constexpr (PartitionFollower<T>) {
            return guarded(err, err_len, [&] {
                cdcflow_partitions c{};
                // A newer host's longer struct: read what this SDK knows.
                std::memcpy(&c, change, change->struct_size < sizeof c ? change->struct_size : sizeof c);
                c.struct_size = sizeof c;
                H(p)->obj->partitions(c);
            });
        } else {
            (void)p, (void)change, (void)err, (void)err_len;
            return CDCFLOW_ERR_INTERNAL;
        }
    }
    static cdcflow_status settle(void *p, uint32_t wait_ms, uint64_t *durable, char *err,
                                 uint64_t err_len) noexcept {
        if constexpr (SettlingSink<T>) {
            return guarded(err, err_len,
                           [&] { *durable = static_cast<uint64_t>(H(p)->obj->settle(wait_ms)); });
        } else {
            (void)p, (void)wait_ms, (void)durable, (void)err, (void)err_len;
            return CDCFLOW_ERR_INTERNAL;
        }
    }
    static cdcflow_status replay(void *p, cdcflow_replay *req, cdcflow_batch *b, int32_t *done, char *err,
                                 uint64_t err_len) noexcept {
        if constexpr (ReplayingSource<T>) {
            return guarded(err, err_len, [&] {
                Batch batch(H(p)->host, H(p)->ctx, b);
                *done = H(p)->obj->replay(*req, batch) ? 1 : 0;
            });
        } else {
            (void)p, (void)req, (void)b, (void)done, (void)err, (void)err_len;
            return CDCFLOW_ERR_INTERNAL;
        }
    }
};

template <typename T> constexpr const char *version_of() {
    if constexpr (requires { T::kVersion; })
        return T::kVersion;
    else
        return "0";
}

template <typename T> constexpr const cdcflow_config_key *config_of() {
    if constexpr (requires { T::kConfig; })
        return T::kConfig;
    else
        return nullptr;
}
template <typename T> constexpr uint32_t config_count_of() {
    if constexpr (requires { T::kConfig; })
        return static_cast<uint32_t>(std::size(T::kConfig));
    else
        return 0;
}

template <typename T> constexpr const cdcflow_config_param *params_of() {
    if constexpr (DeclaresSettings<T>)
        return param_count<typename T::Settings>() ? ParamArray<typename T::Settings>::value.data() : nullptr;
    else
        return nullptr;
}
template <typename T> constexpr uint32_t param_count_of() {
    if constexpr (DeclaresSettings<T>)
        return static_cast<uint32_t>(param_count<typename T::Settings>());
    else
        return 0;
}

template <typename T> const cdcflow_plugin *descriptor() {
    static_assert(std::is_base_of_v<Stage, T>, "a plugin derives from cdcflow::Source, Transform or Sink");
    static_assert(SettlingSink<T> == ((flags_of<T>() & CDCFLOW_PLUGIN_DEFERRED_COMMIT) != 0),
                  "a sink declares CDCFLOW_PLUGIN_DEFERRED_COMMIT in kFlags exactly when it defines "
                  "uint64_t settle(uint32_t wait_ms)");
    static_assert(!(DeclaresSettings<T> && requires { T::kConfig; }),
                  "declare config once: Settings (kParams) or the older kConfig, not both");
    static const cdcflow_callbacks cbs = {
        sizeof(cdcflow_callbacks),
        0,
        &Thunks<T>::create,
        &Thunks<T>::start,
        &Thunks<T>::poll,
        &Thunks<T>::seek,
        &Thunks<T>::committed,
        &Thunks<T>::process,
        &Thunks<T>::checkpoint,
        &Thunks<T>::flush,
        &Thunks<T>::stop,
        &Thunks<T>::destroy,
        FencingSink<T> ? &Thunks<T>::acquire : nullptr,
        FencingSink<T> ? &Thunks<T>::release : nullptr,
        RestoringTransform<T> ? &Thunks<T>::history : nullptr,
        RestoringTransform<T> ? &Thunks<T>::restore : nullptr,
        ReplayingSource<T> ? &Thunks<T>::replay : nullptr,
        PartitionFollower<T> ? &Thunks<T>::partitions : nullptr,
        SettlingSink<T> ? &Thunks<T>::settle : nullptr,
    };
    static const cdcflow_plugin d = {
        CDCFLOW_ABI_VERSION,
        sizeof(cdcflow_plugin),
        T::kName,
        T::kKind,
        version_of<T>(),
        T::kDescription,
        config_of<T>(),
        config_count_of<T>(),
        0,
        &cbs,
        params_of<T>(),
        param_count_of<T>(),
        0,
        flags_of<T>(),
        0,
    };
    return &d;
}

} // namespace detail
} // namespace cdcflow

// Export the plugin class T. Write once, at namespace scope, in one .cpp file.
#define CDCFLOW_PLUGIN(T)                                                                                    \
    extern "C" CDCFLOW_EXPORT const cdcflow_plugin *cdcflow_plugin_entry(void) {                             \
        return ::cdcflow::detail::descriptor<T>();                                                           \
    }
