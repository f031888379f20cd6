// The bank-account domain of DESIGN.md, as two pure steps the unit tests
// drive directly:
//
//   CommandParser::parse   the event alone: aggregate type, event type, the
//                          payload's JSON shape and field formats -> Command
//   apply_rules            a Command against the account's current state
//
// Both explain a rejection in `reason` and change nothing when they reject.
// Money is int64 cents (money.hpp), never floating point.
#pragma once

#include <cdcflow/sdk.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace cdcflow::projection::accounts {

inline constexpr std::string_view kAggregateType = "Account";

struct Account {
    bool exists = false; // a closed account exists
    bool open = false;
    std::string owner;
    std::string currency;
    int64_t balance = 0;    // cents
    int64_t version = 0;    // events applied to the account
    int64_t updated_at = 0; // timestamp of the last applied event, microseconds
};

enum class Kind { created, deposited, withdrawn, closed };

struct Command {
    Kind kind = Kind::created;
    int64_t amount = 0;        // cents: deposited, withdrawn
    std::string_view owner;    // created; valid until the next parse()
    std::string_view currency; // created; valid until the next parse()
};

// What parse() reads from an event (views into the batch).
struct EventView {
    std::string_view aggregate_type;
    std::string_view aggregate_id;
    std::string_view type;
    std::string_view payload;
};

// Reads events into Commands with simdjson On-Demand. Keeps one padded copy
// buffer and one parser: no allocation per event once they have grown to
// the largest payload seen (a one-off huge payload is released again).
class CommandParser {
public:
    CommandParser();
    ~CommandParser();
    CommandParser(const CommandParser &) = delete;
    CommandParser &operator=(const CommandParser &) = delete;

    // Parses the payload itself.
    bool parse(const EventView &ev, Command &out, std::string &reason);
    // Reads the payload as the host parsed it once for the whole pipeline
    // (event_payload): no second parse of the text.
    bool parse(const EventView &ev, const cdcflow_payload &shared, Command &out, std::string &reason);

private:
    // The payload fields a command uses, as found.
    struct Fields {
        bool has_owner = false, has_currency = false, has_amount = false;
        bool repeated = false; // the last slot() was for a field already seen
        std::string_view owner, currency, amount;
        // Where field `key` of a `kind` event goes; nullptr: not used.
        std::string_view *slot(Kind kind, std::string_view key) {
            bool *seen = nullptr;
            std::string_view *into = nullptr;
            if (kind == Kind::created && key == "owner")
                seen = &has_owner, into = &owner;
            else if (kind == Kind::created && key == "currency")
                seen = &has_currency, into = &currency;
            else if ((kind == Kind::deposited || kind == Kind::withdrawn) && key == "amount")
                seen = &has_amount, into = &amount;
            if (!seen) return nullptr;
            repeated = *seen;
            *seen = true;
            return into;
        }
    };
    bool envelope(const EventView &ev, Command &cmd, std::string &reason);
    bool finish(Command &cmd, const Fields &got, Command &out, std::string &reason);

    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// The rules of DESIGN.md's table. On success acct holds the new state
// (version + 1, updated_at = timestamp_us); on rejection it is untouched.
bool apply_rules(const Command &cmd, std::string_view account_id, int64_t timestamp_us, Account &acct,
                 std::string &reason);

} // namespace cdcflow::projection::accounts
