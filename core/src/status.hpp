// Status and Result<T>: the host's error type. No exceptions on the data
// path; exceptions from libraries (yaml-cpp, Boost.DLL) are caught at the
// edge and turned into a Status with a one-line message.
#pragma once

#include <cdcflow/plugin.h>

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace cdcflow::host {

class Status {
public:
    Status() = default;
    static Status ok() { return Status(); }
    static Status error(std::string msg, cdcflow_status code = CDCFLOW_ERR_CONFIG) {
        Status s;
        s.code_ = code;
        s.msg_ = std::move(msg);
        return s;
    }
    bool is_ok() const { return code_ == CDCFLOW_OK; }
    explicit operator bool() const { return is_ok(); }
    cdcflow_status code() const { return code_; }
    const std::string &message() const { return msg_; }

private:
    cdcflow_status code_ = CDCFLOW_OK;
    std::string msg_;
};

template <typename T>
class Result {
public:
    Result(T value) : v_(std::move(value)) {}
    Result(Status st) : v_(std::move(st)) {}
    bool is_ok() const { return std::holds_alternative<T>(v_); }
    explicit operator bool() const { return is_ok(); }
    T &value() { return std::get<T>(v_); }
    const T &value() const { return std::get<T>(v_); }
    T &operator*() { return value(); }
    T *operator->() { return &value(); }
    Status status() const { return is_ok() ? Status::ok() : std::get<Status>(v_); }

private:
    std::variant<T, Status> v_;
};

} // namespace cdcflow::host
