// cdcflow/sdk.hpp: header-only C++ SDK for writing cdcflow stage plugins.
//
// A plugin author subclasses cdcflow::Source, cdcflow::Transform or
// cdcflow::Sink, gives the class a constructor taking (const Config&,
// Context), declares its config keys, and writes one macro line:
//
//     class Upper : public cdcflow::Transform {
//     public:
//         static constexpr const char *kName = "upper";
//         static constexpr const char *kDescription = "upper-cases event types";
//         static constexpr cdcflow_config_key kConfig[] = {
//             {"field", CDCFLOW_CONFIG_STRING, "\"type\"", 0, "which field"}};
//         Upper(const cdcflow::Config &cfg, cdcflow::Context ctx) : Transform(ctx) {}
//         void process(cdcflow::Batch &batch) override { ... }
//     };
//     CDCFLOW_PLUGIN(Upper)
//
// Exceptions never cross the C ABI: the thunks below catch everything and turn
// it into a status plus a one-line message (cdcflow::Error carries its own
// status; any other exception becomes CDCFLOW_ERR_INTERNAL).
//
// A plugin with no config keys leaves kConfig out. kVersion is optional.
//
// A sink that fences its checkpoint (one owner per checkpoint, DESIGN.md)
// also defines `void acquire(const cdcflow_ownership &)` (throw
// Error(CDCFLOW_ERR_OWNED, "<who owns it>") when another process does) and
// `void release()`; the SDK exports them only when they exist, so that a
// sink without them tells the host it does not fence.
//
// Thread-safety: an instance is driven by one thread at a time (see plugin.h).
#pragma once

#include <cdcflow/plugin.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

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
    cdcflow_status status() const noexcept { return status_; }

private:
    cdcflow_status status_;
};

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
    // Scratch memory owned by the batch (freed when the batch is recycled).
    void *alloc(size_t n) const { return host_->batch_alloc(b_, n); }

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
    // Stateful transforms rebuild their state as of the sink's checkpoint.
    virtual void seek(std::span<const cdcflow_position> positions) { (void)positions; }
};

class Sink : public Stage {
public:
    static constexpr cdcflow_kind kKind = CDCFLOW_KIND_SINK;
    using Stage::Stage;
    // Make the batch durable (effects, dead letters, checkpoint) before returning.
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
        write_err(err, err_len, "unknown exception");
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

template <typename T> struct Thunks {
    static cdcflow_status create(const cdcflow_host_api *host, cdcflow_ctx *ctx, const cdcflow_config *cfg,
                                 void **instance, char *err, uint64_t err_len) noexcept {
        return guarded(err, err_len, [&] {
            auto h = std::make_unique<Holder<T>>();
            h->host = host;
            h->ctx = ctx;
            h->obj = std::make_unique<T>(Config(host, cfg), Context(host, ctx));
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

template <typename T> const cdcflow_plugin *descriptor() {
    static_assert(std::is_base_of_v<Stage, T>, "a plugin derives from cdcflow::Source, Transform or Sink");
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
        nullptr, // history (ABI 3)
        nullptr, // restore (ABI 3)
        nullptr, // replay (ABI 3)
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
        nullptr, // config_params (ABI 3)
        0,
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
