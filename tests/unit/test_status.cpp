// The one Status: its classes (what a caller does with a failure) and its
// round trip through the C ABI's cdcflow_status.
#include <cdcflow/status.hpp>

#include <doctest/doctest.h>

using cdcflow::Result;
using cdcflow::Status;
using Code = cdcflow::Status::Code;
using Kind = cdcflow::Status::Kind;

TEST_CASE("status: ok by default, with an empty message") {
    Status s;
    CHECK(s.ok());
    CHECK(s.kind() == Kind::kOk);
    CHECK(s.message().empty());
    CHECK(s.abi() == CDCFLOW_OK);
    CHECK_FALSE(s.retryable());
}

TEST_CASE("status: each code falls into the class a caller acts on") {
    CHECK(Status::Transient("busy").kind() == Kind::kTransient);
    CHECK(Status(Code::kUnavailable, "breaker open").kind() == Kind::kTransient);
    CHECK(Status::Refused("amount: not a number").kind() == Kind::kEvent);
    CHECK(Status::Config("bad key").kind() == Kind::kPermanent);
    CHECK(Status::Internal("bug").kind() == Kind::kPermanent);
    CHECK(Status(Code::kFenced, "lost").kind() == Kind::kPermanent);
    // An SQLite failure is transient only when the database was busy or locked
    // (extended codes keep the primary code in their low byte).
    CHECK(Status::Io("disk I/O error", 10).kind() == Kind::kPermanent);
    CHECK(Status::Io("database is locked", 5).retryable());
    CHECK(Status::Io("database table is locked", 6 | (1 << 8)).retryable());
    CHECK(Status::Io("read-only", 8).abi() == CDCFLOW_ERR_IO);
    CHECK(Status::Io("busy", 5).abi() == CDCFLOW_ERR_RETRY);
}

TEST_CASE("status: the producer API's kDbError is kIo") {
    Status s(Code::kDbError, "constraint failed", 19);
    CHECK(s.code() == Code::kIo);
    CHECK(s.sqlite_code() == 19);
}

TEST_CASE("status: round trip through the C ABI keeps what the host acts on") {
    for (cdcflow_status a :
         {CDCFLOW_ERR_CONFIG, CDCFLOW_ERR_IO, CDCFLOW_ERR_RETRY, CDCFLOW_ERR_NOT_FOUND, CDCFLOW_ERR_NOMEM,
          CDCFLOW_ERR_OWNED, CDCFLOW_ERR_FENCED, CDCFLOW_ERR_INTERNAL}) {
        Status s = Status::from_abi(a, "why");
        CHECK_FALSE(s.ok());
        CHECK(s.message() == "why");
        CHECK(s.abi() == a);
    }
    // A wrong-type look-up is a configuration error; batch-full is never a
    // call's result, so it can only be a bug.
    CHECK(Status::from_abi(CDCFLOW_ERR_TYPE, "x").abi() == CDCFLOW_ERR_CONFIG);
    CHECK(Status::from_abi(CDCFLOW_ERR_BATCH_FULL, "x").code() == Code::kInternal);
    CHECK(Status::from_abi(CDCFLOW_OK, "ignored").ok());
}

TEST_CASE("status: Result holds a value or the status that explains its absence") {
    Result<int> good = 42;
    REQUIRE(good.ok());
    CHECK(*good == 42);
    CHECK(good.status().ok());
    Result<std::string> bad = Status::NotFound("table 'outbox' not found");
    CHECK_FALSE(bad.ok());
    CHECK(bad.status().code() == Code::kNotFound);
    CHECK(bad.status().message() == "table 'outbox' not found");
}
