// Text in the pipeline loader's messages and JSON: the loader's spelling of
// the project's one quoting helper (base/text.hpp), and the JSON string
// writer that turns YAML scalars into the JSON handed to plugins.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

namespace cdcflow::host {

// "0x7F".
std::string hex(unsigned char c);
// User text in a one-line message: base::quoted with single quotes, valid
// UTF-8 kept, control bytes and invalid UTF-8 as \xNN, cut after 200 bytes.
std::string quote(std::string_view s);
// The final safety net for "every error is one line" (library messages).
std::string one_line(std::string s);
// A JSON string. Invalid UTF-8 (an environment variable may hold it) becomes U+FFFD.
void put_string(std::string &out, std::string_view s);
std::string json_string(std::string_view s);

} // namespace cdcflow::host
