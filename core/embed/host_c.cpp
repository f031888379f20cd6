// The C API (cdcflow/host.h) over the C++ one (cdcflow/host.hpp): handles,
// buffers and return codes; every exception stops here.
#include <cdcflow/host.h>
#include <cdcflow/host.hpp>

#include "base/utf8.hpp"

#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

using cdcflow::Status;
using cdcflow::embed::Host;

struct cdcflow_host {
    std::unique_ptr<Host> host;
    std::mutex mu; // last_error
    std::string last_error;
    std::mutex sub_mu; // subscription
    int subscription = 0;
};

namespace {

// `text` into buf, cut at a character boundary to fit, NUL-terminated.
void put(char *buf, size_t len, const std::string &text) {
    if (!buf || len == 0) return;
    size_t n = cdcflow::base::utf8_floor(text, std::min(text.size(), len - 1));
    std::memcpy(buf, text.data(), n);
    buf[n] = '\0';
}

// As snprintf: as much of `text` as fits, NUL-terminated (put); the size
// the whole needs, NUL included. A short buffer still gets a valid string:
// a caller whose second call lost the race against a growing text (a
// running host's page) has something usable, and sees it was cut.
size_t put_text(char *buf, size_t len, const std::string &text) {
    put(buf, len, text);
    return text.size() + 1;
}

// A text the host renders, by the buffer protocol (put_text); 0 for a NULL handle.
size_t fetch(cdcflow_host *h, char *buf, size_t len, std::string (Host::*text)() const) {
    if (!h) return 0;
    try {
        return put_text(buf, len, (h->host.get()->*text)());
    } catch (...) {
        return 0; // a failed allocation: nothing to report it with
    }
}

int answer(cdcflow_host *h, const Status &st, char *err, size_t err_len) {
    put(err, err_len, st.message());
    if (h && !st) {
        std::lock_guard lock(h->mu);
        h->last_error = st.message();
    }
    return Host::exit_code(st);
}

int null_handle(const char *fn, char *err, size_t err_len) {
    put(err, err_len, std::string(fn) + ": the host handle is NULL");
    return CDCFLOW_EXIT_USAGE;
}

std::chrono::milliseconds ms(uint32_t t) {
    return std::chrono::milliseconds(t);
}

// An open's answer; `*code` (when not NULL) its exit code.
cdcflow_host *failed_open(int *code, int value, char *err, size_t err_len, const std::string &msg) {
    if (code) *code = value;
    put(err, err_len, msg);
    return nullptr;
}

cdcflow_host *opened(cdcflow::Result<std::unique_ptr<Host>> r, int *code, char *err, size_t err_len) {
    if (!r) return failed_open(code, Host::exit_code(r.status()), err, err_len, r.status().message());
    auto *h = new (std::nothrow) cdcflow_host;
    if (!h) return failed_open(code, CDCFLOW_EXIT_FAILURE, err, err_len, "open: out of memory");
    h->host = std::move(r.value());
    if (code) *code = CDCFLOW_EXIT_OK;
    put(err, err_len, "");
    return h;
}

} // namespace

extern "C" {

cdcflow_host *cdcflow_host_open_ex(const char *pipeline_path, int *code, char *err, size_t err_len) {
    if (!pipeline_path)
        return failed_open(code, CDCFLOW_EXIT_USAGE, err, err_len,
                           "cdcflow_host_open: the pipeline path is NULL");
    try {
        return opened(Host::open(pipeline_path), code, err, err_len);
    } catch (...) {
        return failed_open(code, CDCFLOW_EXIT_FAILURE, err, err_len, "cdcflow_host_open: out of memory");
    }
}

cdcflow_host *cdcflow_host_open(const char *pipeline_path, char *err, size_t err_len) {
    return cdcflow_host_open_ex(pipeline_path, nullptr, err, err_len);
}

cdcflow_host *cdcflow_host_open_string_ex(const char *yaml, const char *name, int *code, char *err,
                                          size_t err_len) {
    if (!yaml)
        return failed_open(code, CDCFLOW_EXIT_USAGE, err, err_len,
                           "cdcflow_host_open_string: the YAML text is NULL");
    try {
        return opened(Host::open_yaml(yaml, name ? name : "<string>"), code, err, err_len);
    } catch (...) {
        return failed_open(code, CDCFLOW_EXIT_FAILURE, err, err_len,
                           "cdcflow_host_open_string: out of memory");
    }
}

cdcflow_host *cdcflow_host_open_string(const char *yaml, const char *name, char *err, size_t err_len) {
    return cdcflow_host_open_string_ex(yaml, name, nullptr, err, err_len);
}

int cdcflow_host_start(cdcflow_host *h, char *err, size_t err_len) {
    if (!h) return null_handle("cdcflow_host_start", err, err_len);
    try {
        return answer(h, h->host->start(), err, err_len);
    } catch (...) {
        return answer(h, Status::Internal("cdcflow_host_start: out of memory"), err, err_len);
    }
}

int cdcflow_host_drain(cdcflow_host *h, uint32_t timeout_ms, char *err, size_t err_len) {
    if (!h) return null_handle("cdcflow_host_drain", err, err_len);
    try {
        return answer(h, h->host->drain(ms(timeout_ms)), err, err_len);
    } catch (...) {
        return answer(h, Status::Internal("cdcflow_host_drain: out of memory"), err, err_len);
    }
}

int cdcflow_host_stop(cdcflow_host *h, uint32_t timeout_ms) {
    if (!h) return CDCFLOW_EXIT_USAGE;
    try {
        return answer(h, h->host->stop(ms(timeout_ms)), nullptr, 0);
    } catch (...) {
        return CDCFLOW_EXIT_FAILURE;
    }
}

int cdcflow_host_migrate(cdcflow_host *h, uint32_t timeout_ms, cdcflow_host_progress_fn fn, void *user,
                         char *err, size_t err_len) {
    if (!h) return null_handle("cdcflow_host_migrate", err, err_len);
    try {
        cdcflow::embed::ProgressFn progress;
        if (fn)
            progress = [fn, user](const cdcflow::embed::MigrationProgress &p) { fn(user, p.done, p.total); };
        auto r = h->host->migrate(ms(timeout_ms), progress);
        if (!r) return answer(h, r.status(), err, err_len);
        const auto &s = r.value();
        put(err, err_len,
            std::to_string(s.migrated_this_run) + " migrated this run, " + std::to_string(s.migrated) +
                " in all; " + std::to_string(s.unmappable_this_run) + " unmappable this run, " +
                std::to_string(s.unmappable) + " in all; " + std::to_string(s.late) + " late; " +
                std::to_string(s.open_gaps) + " open gaps");
        return CDCFLOW_EXIT_OK;
    } catch (...) {
        return answer(h, Status::Internal("cdcflow_host_migrate: out of memory"), err, err_len);
    }
}

int cdcflow_host_verify(cdcflow_host *h, uint32_t flags, cdcflow_host_progress_fn fn, void *user, char *buf,
                        size_t buf_len, size_t *needed, char *err, size_t err_len) {
    if (needed) *needed = 0;
    if (!h) return null_handle("cdcflow_host_verify", err, err_len);
    try {
        cdcflow::embed::ProgressFn progress;
        if (fn)
            progress = [fn, user](const cdcflow::embed::MigrationProgress &p) { fn(user, p.done, p.total); };
        auto r = h->host->verify((flags & CDCFLOW_VERIFY_ALLOW_OTHER_EVENTS) != 0, 10, progress);
        if (!r) return answer(h, r.status(), err, err_len);
        size_t need = put_text(buf, buf_len, r.value().json);
        if (needed) *needed = need;
        if (r.value().ok) return answer(h, Status::OK(), err, err_len);
        return answer(h, Status::Internal("verify: " + r.value().failure), err, err_len);
    } catch (...) {
        return answer(h, Status::Internal("cdcflow_host_verify: out of memory"), err, err_len);
    }
}

size_t cdcflow_host_health_json(cdcflow_host *h, char *buf, size_t buf_len) {
    return fetch(h, buf, buf_len, &Host::health_json);
}

size_t cdcflow_host_metrics_text(cdcflow_host *h, char *buf, size_t buf_len) {
    return fetch(h, buf, buf_len, &Host::metrics_text);
}

size_t cdcflow_host_last_error(cdcflow_host *h, char *buf, size_t buf_len) {
    if (!h) return 0;
    try {
        std::lock_guard lock(h->mu);
        return put_text(buf, buf_len, h->last_error);
    } catch (...) {
        return 0;
    }
}

int cdcflow_host_on_state(cdcflow_host *h, cdcflow_host_state_fn fn, void *user) {
    if (!h) return CDCFLOW_EXIT_USAGE;
    try {
        // No lock of the handle's is held while unsubscribe waits for a
        // callback to end: that callback may be calling into this handle.
        int old;
        {
            std::lock_guard lock(h->sub_mu);
            old = std::exchange(h->subscription, 0);
        }
        if (old) h->host->unsubscribe(old);
        if (!fn) return CDCFLOW_EXIT_OK;
        int id = h->host->subscribe([fn, user](const cdcflow::embed::StateChange &c) {
            fn(user, c.state.c_str(), c.health_json.c_str());
        });
        if (!id) return CDCFLOW_EXIT_FAILURE;
        {
            std::lock_guard lock(h->sub_mu);
            old = std::exchange(h->subscription, id);
        }
        // Another thread's subscription that landed in between: replaced too.
        if (old) h->host->unsubscribe(old);
        return CDCFLOW_EXIT_OK;
    } catch (...) {
        return CDCFLOW_EXIT_FAILURE;
    }
}

int cdcflow_host_close_ex(cdcflow_host *h, uint32_t timeout_ms, char *err, size_t err_len) {
    if (!h) return null_handle("cdcflow_host_close_ex", err, err_len);
    int code;
    try {
        // Host::close is bounded; the destructor below then has nothing
        // left to wait for.
        Status st = h->host->close(ms(timeout_ms));
        put(err, err_len, st.message());
        code = Host::exit_code(st);
    } catch (...) {
        put(err, err_len, "cdcflow_host_close_ex: out of memory");
        code = CDCFLOW_EXIT_FAILURE;
    }
    // ~Host first, while the handle's own members (the mutexes answer()
    // and cdcflow_host_on_state take, and `host` itself: unique_ptr::reset
    // would clear it before the destructor runs) still exist: a callback
    // already running may call into the handle until ~Host has waited for
    // it. Nothing ~Host does throws.
    delete h->host.get();
    (void)h->host.release();
    delete h;
    return code;
}

void cdcflow_host_close(cdcflow_host *h) {
    if (h) (void)cdcflow_host_close_ex(h, 0, nullptr, 0);
}

const char *cdcflow_host_version(void) {
    return CDCFLOW_VERSION;
}

} // extern "C"
