// Text in messages and JSON: how the host quotes user text in a one-line
// error and writes a string as JSON. (Shared text-escaping helpers for the
// whole project are coming; this file is the host's one place for them.)
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

namespace cdcflow::host {

// "0x7F".
std::string hex(unsigned char c);
// User text in a one-line message: quoted, control characters escaped, long text cut
// (at a UTF-8 character boundary).
std::string quote(std::string_view s);
// The final safety net for "every error is one line" (library messages).
std::string one_line(std::string s);
// A JSON string. Invalid UTF-8 (an environment variable may hold it) becomes U+FFFD.
void put_string(std::string &out, std::string_view s);
std::string json_string(std::string_view s);

} // namespace cdcflow::host
