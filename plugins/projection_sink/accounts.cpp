#include "accounts.hpp"

#include "money.hpp"
#include "reasons.hpp"

#include "base/json_walk.hpp"
#include "base/text.hpp"

#include <simdjson.h>

#include <cstring>
#include <vector>

namespace cdcflow::projection::accounts {

namespace od = simdjson::ondemand;

namespace {

// Payloads above this are parsed from a temporary buffer that is released
// afterwards, so one huge event does not pin its size in memory forever.
constexpr size_t kKeepBufferBytes = 1 << 20;

void append_money(std::string &out, int64_t cents) {
    char buf[24];
    out.append(buf, money::format(cents, buf));
}

bool is_currency(std::string_view s) {
    if (s.size() != 3) return false;
    for (char c : s)
        if (c < 'A' || c > 'Z') return false;
    return true;
}

} // namespace

struct CommandParser::Impl {
    od::parser parser;
    std::vector<char> buf; // payload copy + SIMDJSON_PADDING zero bytes
};

CommandParser::CommandParser() : impl_(std::make_unique<Impl>()) {}
CommandParser::~CommandParser() = default;

// The envelope: aggregate type, account id, event type -> cmd.kind.
bool CommandParser::envelope(const EventView &ev, Command &cmd, std::string &reason) {
    if (ev.aggregate_type != kAggregateType)
        return reject_quoted(reason, "aggregate type ", ev.aggregate_type, " is not Account");
    if (ev.aggregate_id.empty()) return reject(reason, "empty account id (aggregate id)");
    if (ev.type == "AccountCreated")
        cmd.kind = Kind::created;
    else if (ev.type == "MoneyDeposited")
        cmd.kind = Kind::deposited;
    else if (ev.type == "MoneyWithdrawn")
        cmd.kind = Kind::withdrawn;
    else if (ev.type == "AccountClosed")
        cmd.kind = Kind::closed;
    else
        return reject_quoted(reason, "unknown event type ", ev.type);
    return true;
}

bool CommandParser::parse(const EventView &ev, const cdcflow_payload &shared, Command &out,
                          std::string &reason) {
    Command cmd;
    if (!envelope(ev, cmd, reason)) return false;
    if (shared.result == CDCFLOW_PAYLOAD_INVALID)
        return reject(reason, shared.error ? shared.error : "payload is not valid JSON");
    if (shared.result != CDCFLOW_PAYLOAD_OBJECT) return reject(reason, "payload is not a JSON object");
    Fields got;
    for (uint32_t k = 0; k < shared.field_count; ++k) {
        const cdcflow_json_field &f = cdcflow::Batch::field(shared, k);
        std::string_view key(f.key.data, static_cast<size_t>(f.key.len));
        std::string_view *into = got.slot(cmd.kind, key);
        if (!into) continue; // a field this event does not use (the host checked its JSON)
        if (got.repeated) return reject_quoted(reason, "payload has field ", key, " more than once");
        if (f.type != CDCFLOW_JSON_STRING)
            return reject_quoted(reason, "field ", key, " must be a JSON string");
        // Escapes (rare in these fields): the own parse unescapes them.
        if (f.has_escape) return parse(ev, out, reason);
        *into = std::string_view(f.value.data + 1, static_cast<size_t>(f.value.len) - 2);
    }
    return finish(cmd, got, out, reason);
}

bool CommandParser::parse(const EventView &ev, Command &out, std::string &reason) {
    Command cmd;
    if (!envelope(ev, cmd, reason)) return false;

    // A previous huge payload: give its memory back before parsing a normal one.
    Impl &im = *impl_;
    if (im.buf.size() > kKeepBufferBytes && ev.payload.size() <= kKeepBufferBytes) {
        std::vector<char>().swap(im.buf);
        im.parser = od::parser();
    }
    size_t need = ev.payload.size() + simdjson::SIMDJSON_PADDING;
    if (im.buf.size() < need) im.buf.resize(need);
    if (!ev.payload.empty()) std::memcpy(im.buf.data(), ev.payload.data(), ev.payload.size());
    std::memset(im.buf.data() + ev.payload.size(), 0, simdjson::SIMDJSON_PADDING);

    od::document doc;
    if (auto err = im.parser.iterate(im.buf.data(), ev.payload.size(), im.buf.size()).get(doc))
        return reject(reason, "payload is not valid JSON: ", simdjson::error_message(err));
    od::object obj;
    if (auto err = doc.get_object().get(obj)) {
        if (err == simdjson::INCORRECT_TYPE) return reject(reason, "payload is not a JSON object");
        return reject(reason, "payload is not valid JSON: ", simdjson::error_message(err));
    }

    Fields got;
    for (auto field : obj) {
        std::string_view key;
        if (auto err = field.unescaped_key().get(key))
            return reject(reason, "payload is not valid JSON: ", simdjson::error_message(err));
        std::string_view *into = got.slot(cmd.kind, key);
        if (!into) {
            // A field this event does not use: allowed, but it must be valid JSON.
            if (auto err = base::walk_json(field.value(), 2))
                return reject(reason, "payload is not valid JSON: ", simdjson::error_message(err));
            continue;
        }
        if (got.repeated) return reject_quoted(reason, "payload has field ", key, " more than once");
        od::json_type t;
        if (auto err = field.value().type().get(t))
            return reject(reason, "payload is not valid JSON: ", simdjson::error_message(err));
        if (t != od::json_type::string) return reject_quoted(reason, "field ", key, " must be a JSON string");
        if (auto err = field.value().get_string().get(*into))
            return reject(reason, "payload is not valid JSON: ", simdjson::error_message(err));
    }
    // At the end of the document the location is out of bounds; anything
    // else is trailing content ("{} x").
    if (doc.current_location().error() != simdjson::OUT_OF_BOUNDS)
        return reject(reason, "payload is not valid JSON: content after the object");

    return finish(cmd, got, out, reason);
}

// The fields' own rules, once they are found (whichever parse found them).
bool CommandParser::finish(Command &cmd, const Fields &got, Command &out, std::string &reason) {
    cmd.owner = got.owner;
    cmd.currency = got.currency;
    switch (cmd.kind) {
    case Kind::created:
        if (!got.has_owner) return reject(reason, "missing field \"owner\"");
        if (cmd.owner.empty()) return reject(reason, "owner must be a non-empty string");
        if (!got.has_currency) return reject(reason, "missing field \"currency\"");
        if (!is_currency(cmd.currency))
            return reject_quoted(reason, "currency must be three capital letters, got ", cmd.currency);
        break;
    case Kind::deposited:
    case Kind::withdrawn: {
        if (!got.has_amount) return reject(reason, "missing field \"amount\"");
        switch (money::parse(got.amount, cmd.amount)) {
        case money::ParseError::ok:
            break;
        case money::ParseError::too_many_decimals:
            return reject_quoted(reason, "invalid amount ", got.amount, ": more than 2 decimals");
        case money::ParseError::too_large:
            return reject_quoted(reason, "invalid amount ", got.amount, ": too large");
        case money::ParseError::empty:
        case money::ParseError::syntax:
            return reject_quoted(reason, "invalid amount ", got.amount,
                                 ": expected digits with at most 2 decimals, e.g. \"12.34\"");
        }
        if (cmd.amount <= 0) return reject_quoted(reason, "amount must be greater than 0, got ", got.amount);
        break;
    }
    case Kind::closed:
        break;
    }
    out = cmd;
    return true;
}

bool apply_rules(const Command &cmd, std::string_view account_id, int64_t timestamp_us, Account &acct,
                 std::string &reason) {
    auto account_reason = [&](std::string_view what) {
        reason.clear();
        reason.append("account ");
        base::append_quoted(reason, account_id, kIdQuoting);
        reason.append(what);
        return false;
    };
    if (cmd.kind == Kind::created) {
        if (acct.exists) return account_reason(" already exists");
    } else {
        if (!acct.exists) return account_reason(" does not exist");
        if (!acct.open) return account_reason(" is closed");
    }
    int64_t balance = acct.balance;
    switch (cmd.kind) {
    case Kind::created:
        acct.exists = true;
        acct.open = true;
        acct.owner.assign(cmd.owner);
        acct.currency.assign(cmd.currency);
        acct.balance = 0;
        acct.version = 0;
        break;
    case Kind::deposited:
        // balance is within [0, kMaxBalance], so the subtraction cannot
        // overflow, whatever the (positive) amount.
        if (cmd.amount > money::kMaxBalance - balance)
            return reject(reason, "balance would exceed 999999999.99");
        acct.balance = balance + cmd.amount;
        break;
    case Kind::withdrawn:
        if (cmd.amount > balance) {
            reason.clear();
            reason.append("insufficient funds: balance ");
            append_money(reason, balance);
            reason.append(", withdrawal ");
            append_money(reason, cmd.amount);
            return false;
        }
        acct.balance = balance - cmd.amount;
        break;
    case Kind::closed:
        if (balance != 0) {
            reason.clear();
            reason.append("cannot close account ");
            base::append_quoted(reason, account_id, kIdQuoting);
            reason.append(" with balance ");
            append_money(reason, balance);
            return false;
        }
        acct.open = false;
        break;
    }
    ++acct.version;
    acct.updated_at = timestamp_us;
    return true;
}

} // namespace cdcflow::projection::accounts
