// The parsed form of a RuleSet, shared by the config parser (ruleset.cpp)
// and the hot path (validator.cpp). Private to core/rules.
#pragma once

#include "base/text.hpp" // base::append_quoted: one way to quote untrusted bytes in a reason

#include <cdcflow/rules.hpp>

#include <regex.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace cdcflow::rules {

enum class FieldType : uint8_t { kString, kDecimal, kInteger, kNumber, kBoolean, kObject, kArray };

// A compiled POSIX regex. Heap-held so the regex_t never moves after regcomp.
// regexec on one regex_t is thread-safe (POSIX), which RuleSet sharing needs.
struct Regex {
    regex_t re{};
    std::string text; // as written, for reasons
    Regex() = default;
    Regex(const Regex &) = delete;
    Regex &operator=(const Regex &) = delete;
    ~Regex() { regfree(&re); }
};

// A bound with the text it was written as ("0"), so reasons quote the rule.
template <typename T> struct Bound {
    T value{};
    std::string text;
};

struct FieldRule {
    std::string name;  // payload key
    std::string label; // "Event.field", escaped to one line
    FieldType type = FieldType::kString;
    bool optional = false;

    // string
    std::optional<Bound<uint64_t>> min_length, max_length;
    std::unique_ptr<Regex> pattern;

    // decimal
    int scale = 0;
    std::optional<Bound<Decimal>> dmin, dmin_excl, dmax, dmax_excl;

    // integer
    std::optional<Bound<int64_t>> imin, imax;

    // number
    std::optional<Bound<double>> nmin, nmax;
};

struct EventRule {
    std::vector<FieldRule> fields;
};

struct RuleSet::Impl {
    std::optional<std::vector<std::string>> aggregate_types;
    using Events = std::map<std::string, EventRule, std::less<>>;
    Events events;
    uint64_t max_payload_bytes = kDefaultMaxPayloadBytes;
    size_t max_fields = 0; // the most fields any one event has
};

} // namespace cdcflow::rules
