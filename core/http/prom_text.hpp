// Reading Prometheus text exposition (format 0.0.4): the sample lines of a
// /metrics page, for `cdcflow status` and tests. Comments (# HELP, # TYPE)
// and blank lines are skipped; a line that is not a valid sample is skipped
// and counted, never an error, so a page from a newer or older host still
// gives what it has.
//
// Internal (not installed). Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cdcflow::http {

struct Sample {
    std::string name;
    std::vector<std::pair<std::string, std::string>> labels; // as written, values unescaped
    double value = 0;

    // The value of label `key`, or nullptr.
    const std::string *label(std::string_view key) const;
};

// Every sample line of `text`, in order. `skipped` (optional) counts the
// lines that were neither samples, comments nor blank.
std::vector<Sample> parse_prometheus(std::string_view text, size_t *skipped = nullptr);

} // namespace cdcflow::http
