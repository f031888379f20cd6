// `cdcflow test`'s case files (README, "Testing a read model: cdcflow
// test"): parsing a YAML case file into cases (events to write into a fresh
// outbox, expected rows and dead letters), reading what a case's run left in
// its database, and comparing the two into a readable diff. The command
// itself (test_cmd.cpp) writes the outbox and runs the pipeline; everything
// here is testable without a pipeline.
//
// Thread-safety: plain values and pure functions; read_actual opens its own
// connection.
#pragma once

#include "pipeline.hpp"

#include <cdcflow/status.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace cdcflow::cli::cases {

using host::Mark;

// An expected cell, as the case file writes it: a quoted scalar is text; a
// plain one is typed by YAML's core schema (null, true/false, an integer, a
// number, else text).
struct Expected {
    enum class Kind { null, boolean, integer, real, text };
    Kind kind = Kind::null;
    bool b = false;
    int64_t i = 0;
    double d = 0;
    std::string text; // kind text: the value; else the scalar as written
    Mark mark;
};

struct Event {
    Mark mark;
    std::string id; // given, or generated: "<case number>-<event number>"
    std::string aggregate_type;
    std::string aggregate_id;
    std::string type;
    std::string payload; // JSON text (payload:) or the bytes as given (payload_raw:)
    int64_t timestamp = 0;
    std::optional<int64_t> version;
    Mark version_mark;
};

struct ExpectedRow {
    Mark mark;
    std::vector<std::pair<std::string, Expected>> cells; // file order
};

struct ExpectedTable {
    std::string name;
    Mark mark;
    std::vector<ExpectedRow> rows; // empty: the table must be empty
};

struct ExpectedDeadLetter {
    Mark mark;
    std::string event_id;
    std::optional<size_t> event; // `event: N` (1-based), when given that way
    std::optional<std::string> stage, reason, reason_contains;
};

struct Case {
    std::string name;
    Mark mark;
    std::vector<Event> events;
    std::vector<ExpectedTable> tables;
    std::optional<std::vector<ExpectedDeadLetter>> dead_letters; // nullopt: not given (compared as none)
};

struct CaseFile {
    std::string file;
    std::vector<Case> cases;
};

// Default timestamps: event N of a case (1-based) has kFirstTimestamp +
// (N - 1) seconds, in microseconds (2023-11-14T22:13:20Z onwards).
constexpr int64_t kFirstTimestamp = 1'700'000'000'000'000;

// Errors are CDCFLOW_ERR_CONFIG, one line: "FILE:LINE:COL: what".
Result<CaseFile> parse_case_file(const std::string &text, const std::string &file);
Result<CaseFile> load_case_file(const std::string &path);

// A value read from the database.
struct Cell {
    enum class Kind { null, integer, real, text, blob };
    Kind kind = Kind::null;
    int64_t i = 0;
    double d = 0;
    std::string bytes; // text and blob
};

struct ActualTable {
    bool exists = false;
    std::vector<std::string> columns;
    std::vector<size_t> key; // the primary key's columns (indexes into columns), empty: rowid order
    std::vector<std::vector<Cell>> rows; // ordered by the primary key (or rowid)
};

struct ActualDeadLetter {
    std::string event_id, stage, reason;
    // The event's number in the case: its outbox position (source_position;
    // the case's outbox is written fresh, event N at seq N). nullopt when
    // the position is not a number (a source other than the outbox).
    std::optional<size_t> event;
};

struct Actual {
    std::map<std::string, ActualTable> tables;  // the tables the case names
    std::vector<ActualDeadLetter> dead_letters; // in the order written
};

// What a case's run left in `database`: the tables the case lists and the
// dead letters (table `dead_letters_table`; none when it does not exist).
// CDCFLOW_ERR_IO when the file cannot be read.
Result<Actual> read_actual(const std::string &database, const Case &c,
                           const std::string &dead_letters_table = "dead_letters");

// The differences between what `c` expects and `a`, one line each, ready to
// print under the case's FAIL line; empty when the case passes. `file`
// names the case file in the lines that point at an expectation.
std::vector<std::string> compare(const Case &c, const Actual &a, const std::string &file);

// A value as the diff shows it: 'text' (escaped, quoted), 42, null.
std::string shown(const Cell &v);
std::string shown(const Expected &v);

} // namespace cdcflow::cli::cases
