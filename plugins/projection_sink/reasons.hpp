// How the projections write a rejection's reason: one place for both the
// built-in accounts model and declared models, so that their dead letters
// read alike (values quoted and cut the same way).
#pragma once

#include "base/text.hpp"

#include <string>
#include <string_view>

namespace cdcflow::projection {

// Values in reasons: readable (UTF-8 kept), one line, short.
inline constexpr base::Quoting kValueQuoting{'"', 64, true};
// Ids (account, aggregate) in reasons: unquoted, escaped, cut later.
inline constexpr base::Quoting kIdQuoting{0, 128, true};

// reason = a + b + c; returns false (a rejection).
inline bool reject(std::string &reason, std::string_view a, std::string_view b = {},
                   std::string_view c = {}) {
    reason.clear();
    reason.append(a).append(b).append(c);
    return false;
}

// reason = before + "value" (quoted, escaped, cut) + after; returns false.
inline bool reject_quoted(std::string &reason, std::string_view before, std::string_view value,
                          std::string_view after = {}) {
    reason.assign(before);
    base::append_quoted(reason, value, kValueQuoting);
    reason.append(after);
    return false;
}

} // namespace cdcflow::projection
