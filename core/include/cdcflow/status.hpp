// cdcflow/status.hpp: the one error type inside cdcflow's C++ code (the host,
// the producer API, the libraries the plugins share), in leveldb's shape: a
// cheap value that is either ok or carries a code and a one-line message.
//
// The C ABI keeps its own cdcflow_status (plugin.h), because C cannot carry a
// message with a return value; Status converts to and from it at the
// boundary (from_abi, abi). Plugins written with the SDK throw cdcflow::Error,
// which carries a cdcflow_status; the SDK's thunks turn it into the ABI
// status and message. Config look-ups are not operations that fail and have
// their own answer (cdcflow_config_result), not a Status.
//
// What a caller does with a failure depends on its class (kind()):
//   transient  try the same thing again later (a busy database, an open
//              circuit breaker, a broker that is down): the host retries with
//              backoff;
//   event      this one event is at fault (a payload that breaks a rule): it
//              is refused or dead-lettered, the stream goes on;
//   permanent  retrying cannot help (bad configuration, a bug, a lost
//              checkpoint): the operation stops with the message.
//
// Messages are one line of valid UTF-8 without a trailing newline; whoever
// quotes untrusted bytes into them escapes what is not printable UTF-8.
#pragma once

#include <cdcflow/plugin.h>

#include <cstdint>
#include <string>
#include <utility>
#include <variant>

namespace cdcflow {

class [[nodiscard]] Status {
public:
    enum class Code : uint8_t {
        kOk = 0,
        kConfig,          // bad configuration: fatal at load time (CLI exit 3)
        kInvalidArgument, // bad options, or a call the object's state does not allow
        kNotFound,        // a file, table, key or plugin that is not there
        kRefused,         // one event breaks a rule or the envelope: not written as is
        kIo,              // a database, file or network operation failed
        kTransient,       // busy or locked: the same call may succeed later
        kUnavailable,     // failed fast without trying (an open circuit breaker)
        kInternal,        // a bug, or an exception caught at a boundary
        kNoMemory,        // memory ran out
        kOwned,           // another live process owns the checkpoint
        kFenced,          // this process lost ownership: nothing was committed
        // The producer API's name for kIo since its first release (kept so
        // that applications keep compiling).
        kDbError = kIo,
    };
    enum class Kind : uint8_t { kOk, kTransient, kEvent, kPermanent };

    Status() = default; // ok
    Status(Code code, std::string message, int sqlite_code = 0)
        : code_(code), sqlite_code_(sqlite_code), message_(std::move(message)) {}

    static Status OK() { return Status(); }
    static Status Config(std::string msg) { return Status(Code::kConfig, std::move(msg)); }
    static Status InvalidArgument(std::string msg) { return Status(Code::kInvalidArgument, std::move(msg)); }
    static Status NotFound(std::string msg) { return Status(Code::kNotFound, std::move(msg)); }
    static Status Refused(std::string msg) { return Status(Code::kRefused, std::move(msg)); }
    static Status Io(std::string msg, int sqlite_code = 0) {
        return Status(Code::kIo, std::move(msg), sqlite_code);
    }
    static Status Transient(std::string msg) { return Status(Code::kTransient, std::move(msg)); }
    static Status Internal(std::string msg) { return Status(Code::kInternal, std::move(msg)); }
    // For when memory already ran out: the message fits the string's own
    // buffer, so neither this nor a copy of it allocates.
    static Status OutOfMemory() noexcept { return Status(Code::kNoMemory, "out of memory"); }

    bool ok() const { return code_ == Code::kOk; }
    explicit operator bool() const { return ok(); }
    Code code() const { return code_; }
    // Empty when ok().
    const std::string &message() const { return message_; }
    // The SQLite extended result code behind a kIo from SQLite (e.g.
    // SQLITE_BUSY), else 0.
    int sqlite_code() const { return sqlite_code_; }

    Kind kind() const {
        switch (code_) {
        case Code::kOk:
            return Kind::kOk;
        case Code::kTransient:
        case Code::kUnavailable:
            return Kind::kTransient;
        case Code::kRefused:
            return Kind::kEvent;
        case Code::kIo:
            return busy_or_locked() ? Kind::kTransient : Kind::kPermanent;
        default:
            return Kind::kPermanent;
        }
    }
    // Is it worth trying the same call again later?
    bool retryable() const { return kind() == Kind::kTransient; }

    // The C ABI's status for this code (the message travels separately).
    cdcflow_status abi() const {
        switch (code_) {
        case Code::kOk:
            return CDCFLOW_OK;
        case Code::kConfig:
        case Code::kInvalidArgument:
            return CDCFLOW_ERR_CONFIG;
        case Code::kNotFound:
            return CDCFLOW_ERR_NOT_FOUND;
        case Code::kRefused:
            return CDCFLOW_ERR_EVENT; // a poison event: the host isolates it (ABI 4)
        case Code::kIo:
            return busy_or_locked() ? CDCFLOW_ERR_RETRY : CDCFLOW_ERR_IO;
        case Code::kTransient:
        case Code::kUnavailable:
            return CDCFLOW_ERR_RETRY;
        case Code::kInternal:
            return CDCFLOW_ERR_INTERNAL;
        case Code::kNoMemory:
            return CDCFLOW_ERR_NOMEM;
        case Code::kOwned:
            return CDCFLOW_ERR_OWNED;
        case Code::kFenced:
            return CDCFLOW_ERR_FENCED;
        }
        return CDCFLOW_ERR_INTERNAL;
    }
    static Status from_abi(cdcflow_status s, std::string msg) {
        switch (s) {
        case CDCFLOW_OK:
            return Status();
        case CDCFLOW_ERR_CONFIG:
            return Status(Code::kConfig, std::move(msg));
        case CDCFLOW_ERR_IO:
            return Status(Code::kIo, std::move(msg));
        case CDCFLOW_ERR_RETRY:
            return Status(Code::kTransient, std::move(msg));
        case CDCFLOW_ERR_NOT_FOUND:
            return Status(Code::kNotFound, std::move(msg));
        case CDCFLOW_ERR_TYPE:
            return Status(Code::kConfig, std::move(msg));
        case CDCFLOW_ERR_NOMEM:
            return Status(Code::kNoMemory, std::move(msg));
        case CDCFLOW_ERR_OWNED:
            return Status(Code::kOwned, std::move(msg));
        case CDCFLOW_ERR_FENCED:
            return Status(Code::kFenced, std::move(msg));
        case CDCFLOW_ERR_EVENT:
            return Status(Code::kRefused, std::move(msg));
        case CDCFLOW_ERR_INTERNAL:
        case CDCFLOW_ERR_BATCH_FULL:
            break; // never a call's result
        }
        return Status(Code::kInternal, std::move(msg));
    }

private:
    // SQLITE_BUSY (5) and SQLITE_LOCKED (6), primary codes; spelled out so that
    // this header does not pull in sqlite3.h.
    bool busy_or_locked() const {
        int primary = sqlite_code_ & 0xff;
        return primary == 5 || primary == 6;
    }

    Code code_ = Code::kOk;
    int sqlite_code_ = 0;
    std::string message_;
};

// A value or the Status that explains why there is none.
template <typename T> class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::move(value)) {}
    Result(Status st) : v_(std::move(st)) {}
    bool ok() const { return std::holds_alternative<T>(v_); }
    explicit operator bool() const { return ok(); }
    T &value() { return std::get<T>(v_); }
    const T &value() const { return std::get<T>(v_); }
    T &operator*() { return value(); }
    const T &operator*() const { return value(); }
    T *operator->() { return &value(); }
    const T *operator->() const { return &value(); }
    Status status() const { return ok() ? Status() : std::get<Status>(v_); }

private:
    std::variant<T, Status> v_;
};

} // namespace cdcflow
