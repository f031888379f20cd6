// The pipeline YAML loader (see pipeline.hpp).
//
// Hostile input is refused before yaml-cpp sees it wherever yaml-cpp itself would
// suffer (size, binary, nesting depth, node count), and while walking the tree wherever
// our own work could explode (aliases). Every limit ends in a one-line error.
#include "pipeline.hpp"

#include "utf8.hpp"

#include <nlohmann/json.hpp>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string_view>
#include <tuple>
#include <utility>

namespace cdcflow::host {
namespace {

constexpr size_t kMaxFileBytes = size_t{4} << 20;
constexpr size_t kMaxDepth = 200;
// yaml-cpp spends about half a kilobyte per node: this keeps it near 200 MB at most.
constexpr size_t kMaxTokens = 200'000;
// Aliases let a small file name one subtree millions of times; yaml-cpp shares it, a
// walk does not. These bound the walk (visits) and what it produces (bytes).
constexpr size_t kMaxVisits = 1'000'000;
constexpr size_t kMaxOutputBytes = size_t{16} << 20;
constexpr size_t npos = std::string_view::npos;

// Thrown inside this file only; each public function turns it into a Status.
struct LoadError {
    Mark mark;
    std::string msg;
};

[[noreturn]] void fail(Mark m, std::string msg) {
    throw LoadError{m, std::move(msg)};
}

Mark mark_of(const YAML::Mark &m) {
    return {std::max(m.line, 0) + 1, std::max(m.column, 0) + 1};
}
Mark mark_of(const YAML::Node &n) {
    return mark_of(n.Mark());
}

std::string hex(unsigned char c) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "0x%02X", static_cast<unsigned>(c));
    return buf;
}

// User text in a one-line message: quoted, control characters escaped, long text cut
// (at a UTF-8 character boundary).
std::string quote(std::string_view s) {
    size_t n = std::min<size_t>(s.size(), 200);
    while (n < s.size() && n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80)
        --n;
    std::string out = "'";
    for (unsigned char c : s.substr(0, n)) {
        if (c == '\n')
            out += "\\n";
        else if (c == '\t')
            out += "\\t";
        else if (c < 0x20 || c == 0x7F)
            out += "\\x" + hex(c).substr(2);
        else
            out += static_cast<char>(c);
    }
    return out + (n < s.size() ? "...'" : "'");
}

// The final safety net for "every error is one line" (yaml-cpp's own messages).
std::string one_line(std::string s) {
    std::replace_if(
        s.begin(), s.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
    return s;
}

const char *kind_of(const YAML::Node &n) {
    switch (n.Type()) {
    case YAML::NodeType::Scalar:
        return "a scalar";
    case YAML::NodeType::Sequence:
        return "a sequence";
    case YAML::NodeType::Map:
        return "a mapping";
    default:
        return "null";
    }
}

// A JSON string. Invalid UTF-8 (an environment variable may hold it) becomes U+FFFD.
// Plain ASCII is copied in runs: alias expansion may push megabytes through here.
void put_string(std::string &out, std::string_view s) {
    auto plain = [](unsigned char c) { return c >= 0x20 && c < 0x80 && c != '"' && c != '\\'; };
    out += '"';
    for (size_t i = 0; i < s.size();) {
        size_t run = i;
        while (run < s.size() && plain(static_cast<unsigned char>(s[run]))) ++run;
        out.append(s.substr(i, run - i));
        i = run;
        if (i == s.size()) break;
        auto c = static_cast<unsigned char>(s[i]);
        size_t n = utf8_length(s, i);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\t') {
            out += "\\t";
        } else if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04X", static_cast<unsigned>(c));
            out += buf;
        } else if (n == 0) {
            out += "\xEF\xBF\xBD";
        } else {
            out += s.substr(i, n);
        }
        i += std::max<size_t>(n, 1);
    }
    out += '"';
}

std::string json_string(std::string_view s) {
    std::string out;
    put_string(out, s);
    return out;
}

std::optional<int64_t> parse_int(std::string_view s) {
    if (s.starts_with('+')) {
        s.remove_prefix(1);
        if (s.starts_with('-')) return std::nullopt;
    }
    int64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
    return v;
}

// Decimal only (from_chars also takes "inf" and "nan": JSON cannot hold them).
std::optional<double> parse_double(std::string_view s) {
    if (s.starts_with('+')) {
        s.remove_prefix(1);
        if (s.starts_with('-')) return std::nullopt;
    }
    double v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size() || !std::isfinite(v)) return std::nullopt;
    return v;
}

// A plain (unquoted) scalar as JSON, after the YAML 1.2 core schema: null, booleans,
// numbers. What JSON cannot hold (1e999, .inf, .nan) stays a string; integers past int64
// become doubles.
void put_smart(std::string &out, const std::string &s) {
    if (s.empty() || std::string_view("~nNtTfF+-.0123456789").find(s[0]) == npos) return put_string(out, s);
    if (s == "~" || s == "null" || s == "Null" || s == "NULL") out += "null";
    else if (s == "true" || s == "True" || s == "TRUE") out += "true";
    else if (s == "false" || s == "False" || s == "FALSE") out += "false";
    else if (std::optional<int64_t> i = parse_int(s)) out += std::to_string(*i);
    else if (std::optional<double> d = parse_double(s)) out += nlohmann::json(*d).dump();
    else put_string(out, s);
}

// A pipeline file is UTF-8 text. yaml-cpp accepts some binary input, so it is refused here.
void check_text(std::string_view text) {
    if (text.size() > kMaxFileBytes) fail({1, 1}, "file too large (the limit is 4 MiB)");
    Mark m{1, 1};
    for (size_t i = 0; i < text.size(); ++m.col) {
        auto c = static_cast<unsigned char>(text[i]);
        if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7F)
            fail(m, "control character " + hex(c) + " (a binary file?)");
        size_t n = utf8_length(text, i);
        if (n == 0) fail(m, "invalid UTF-8 byte " + hex(c) + " (a binary file?)");
        if (c == '\n') m = {m.line + 1, 0};
        i += n;
    }
}

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\r';
}

// After "|" or ">": only chomping / indentation indicators and a comment.
bool block_scalar_header(std::string_view rest) {
    size_t j = rest.find_first_not_of("+-0123456789 \t\r");
    return j == npos || rest[j] == '#';
}

// yaml-cpp recurses once per nesting level while parsing and spends about half a
// kilobyte per node, so both are bounded before it sees the text.
//
// Nodes: every node needs an indicator or a line of its own, so these are counted
// everywhere, strings and comments included (erring high is harmless).
//
// Depth: every flow bracket, every deeper block indentation and every compact "- " /
// "? " counts as a level. Quotes, comments and block scalars are skipped as YAML does,
// so that brackets inside strings do not count. Where this model and yaml-cpp disagree
// (odd plain scalars), yaml-cpp's own recursion limit and the walk's depth check remain.
void prescan(std::string_view text) {
    size_t tokens = std::count_if(text.begin(), text.end(),
                                  [](char c) { return std::string_view("\n,:[{-?").find(c) != npos; });
    if (tokens > kMaxTokens) fail({1, 1}, "document too large (more than 200000 YAML indicators)");

    std::vector<size_t> indents; // columns of the open block levels
    size_t flow = 0;             // open flow brackets
    char quote = 0;              // inside a quoted scalar that goes on past the line's end
    size_t block_text = npos;    // inside a block scalar: lines indented deeper than this
    int line_no = 0;
    for (size_t start = 0; start < text.size();) {
        size_t end = std::min(text.find('\n', start), text.size());
        std::string_view line = text.substr(start, end - start);
        start = end + 1;
        ++line_no;
        auto deeper = [&](size_t col) {
            if (indents.size() + flow > kMaxDepth)
                fail({line_no, static_cast<int>(col) + 1}, "nesting deeper than 200 levels");
        };
        size_t i = line.find_first_not_of(' ');
        size_t content = line.find_first_not_of(" \t\r");
        if (block_text != npos) {
            if (content == npos || i > block_text) continue;
            block_text = npos;
        }
        bool token = true; // at the start of a token: a quote, bracket or indicator opens something
        if (quote) {
            i = 0;
        } else if (content == npos || line[content] == '#') {
            continue;
        } else if (flow == 0) { // flow collections ignore indentation
            while (!indents.empty() && indents.back() >= i)
                indents.pop_back();
            indents.push_back(i);
            deeper(i);
            if (i == 0 && (line.starts_with("---") || line.starts_with("...")) &&
                (line.size() == 3 || is_space(line[3])))
                i = 3;
        }
        for (; i < line.size(); ++i) {
            char c = line[i];
            if (quote) {
                if (c == '\\' && quote == '"')
                    ++i;
                else if (c == '\'' && quote == '\'' && i + 1 < line.size() && line[i + 1] == '\'')
                    ++i;
                else if (c == quote)
                    quote = 0, token = false;
                continue;
            }
            if (is_space(c)) continue;
            if (c == '#' && (i == 0 || is_space(line[i - 1]))) break;
            bool spaced = i + 1 == line.size() || is_space(line[i + 1]);
            if (token && (c == '"' || c == '\'')) {
                quote = c;
            } else if ((c == '[' || c == '{') && (token || flow > 0)) {
                ++flow;
                deeper(i);
                token = true;
            } else if ((c == ']' || c == '}') && flow > 0) {
                --flow;
                token = false;
            } else if ((c == ':' && (spaced || flow > 0)) || (c == ',' && flow > 0)) {
                token = true;
            } else if ((c == '-' || c == '?') && spaced && token && flow == 0) {
                size_t j = line.find_first_not_of(" \t\r", i + 1);
                if (j != npos && line[j] != '#') {
                    indents.push_back(j);
                    deeper(j);
                }
            } else if (token && (c == '&' || c == '!' || c == '*')) {
                // An anchor, tag or alias: what follows it still starts a node.
                while (i + 1 < line.size() && !is_space(line[i + 1]) &&
                       std::string_view(",[]{}").find(line[i + 1]) == npos)
                    ++i;
            } else if (token && flow == 0 && (c == '|' || c == '>') &&
                       block_scalar_header(line.substr(i + 1))) {
                // "- |" pushed the scalar's own column: its content belongs to the level before.
                bool compact = indents.size() > 1 && indents.back() == i;
                block_text = indents.empty() ? 0 : indents[indents.size() - (compact ? 2 : 1)];
                break;
            } else {
                token = false;
            }
        }
    }
}

// Reports the start of each document without building it (to refuse a second document).
struct DocumentStarts : YAML::EventHandler {
    YAML::Mark mark;
    void OnDocumentStart(const YAML::Mark &m) override { mark = m; }
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark &, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark &, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark &, const std::string &, YAML::anchor_t, const std::string &) override {}
    void OnSequenceStart(const YAML::Mark &, const std::string &, YAML::anchor_t,
                         YAML::EmitterStyle::value) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark &, const std::string &, YAML::anchor_t,
                    YAML::EmitterStyle::value) override {}
    void OnMapEnd() override {}
};

// Turns nodes into text and JSON under the visit and output budgets.
class Converter {
public:
    // env == nullptr: no interpolation (plugin defaults are literal).
    Converter(const std::string &file, const EnvLookup *env) : file_(file), env_(env) {}

    struct Entry {
        std::string key;
        YAML::Node k, v;
    };

    // A mapping's entries in file order; keys must be unique scalars.
    std::vector<Entry> entries(const YAML::Node &map, bool interpolate_keys) {
        visit(map);
        std::vector<Entry> out;
        std::map<std::string, Mark> seen;
        for (const auto &kv : map) {
            const YAML::Node &k = kv.first;
            if (!k.IsScalar())
                fail(mark_of(k), std::string("a mapping key must be a string, got ") + kind_of(k));
            std::string key = interpolate_keys ? text(k) : (visit(k), k.Scalar());
            auto [first, fresh] = seen.emplace(key, mark_of(k));
            if (!fresh)
                fail(mark_of(k),
                     "duplicate key " + quote(key) + " (first at " + where(file_, first->second) + ")");
            out.push_back({std::move(key), k, kv.second});
        }
        return out;
    }

    // A scalar's text after ${VAR} interpolation: without a '$', the node's own text
    // (not a copy: aliases may repeat it a million times), else buf.
    const std::string &text(const YAML::Node &n, std::string &buf) {
        visit(n);
        const std::string *s = &n.Scalar();
        if (env_ && s->find('$') != std::string::npos) {
            Result<std::string> r = interpolate(*s, *env_);
            if (!r) fail(mark_of(n), r.status().message());
            buf = std::move(*r);
            s = &buf;
        }
        spend(n, s->size());
        return *s;
    }
    std::string text(const YAML::Node &n) {
        std::string buf;
        return text(n, buf);
    }

    // A config value as parse_pipeline() stores it. A null value ("key:") has no useful
    // position of its own: yaml-cpp marks the next token, so it takes the key's.
    ConfigValue value(const YAML::Node &n, Mark key) {
        ConfigValue v;
        v.key_mark = key;
        v.mark = n.IsNull() ? key : mark_of(n);
        v.location = where(file_, v.mark);
        v.is_scalar = n.IsScalar();
        if (v.is_scalar) {
            v.scalar = text(n);
            put_scalar(v.json, n, v.scalar);
        } else {
            write(n, v.json, 0);
        }
        return v;
    }

private:
    // Quoted and block scalars (tag "!") and explicitly tagged ones stay strings.
    void put_scalar(std::string &out, const YAML::Node &n, const std::string &s) {
        size_t before = out.size();
        if (n.Tag() == "?") put_smart(out, s);
        else put_string(out, s);
        spend(n, out.size() - before);
    }

    void write(const YAML::Node &n, std::string &out, size_t depth) {
        // The prescan bounds depth already; an alias that contains itself (&a [*a]) does not.
        if (depth > kMaxDepth) fail(mark_of(n), "nesting deeper than 200 levels");
        if (n.IsScalar()) {
            std::string buf;
            put_scalar(out, n, text(n, buf));
        } else if (n.IsSequence()) {
            visit(n);
            out += '[';
            bool first = true;
            for (const YAML::Node &item : n) {
                if (!std::exchange(first, false)) out += ',';
                write(item, out, depth + 1);
            }
            out += ']';
        } else if (n.IsMap()) {
            out += '{';
            bool first = true;
            for (const Entry &e : entries(n, true)) {
                if (!std::exchange(first, false)) out += ',';
                put_string(out, e.key);
                out += ':';
                write(e.v, out, depth + 1);
            }
            out += '}';
        } else {
            visit(n);
            out += "null";
        }
    }

    void visit(const YAML::Node &n) {
        if (++visits_ > kMaxVisits) too_large(n);
    }
    void spend(const YAML::Node &n, size_t bytes) {
        if ((spent_ += bytes) > kMaxOutputBytes) too_large(n);
    }
    [[noreturn]] static void too_large(const YAML::Node &n) {
        fail(mark_of(n), "document too large (alias expansion?)");
    }

    const std::string &file_;
    const EnvLookup *env_;
    size_t visits_ = 0;
    size_t spent_ = 0;
};

using Entry = Converter::Entry;

// The structure of a pipeline file, into a PipelineDef.
class Reader {
public:
    Reader(const std::string &file, const EnvLookup &env) : file_(file), conv_(file, &env) {}

    PipelineDef read(const YAML::Node &root) {
        if (!root.IsMap())
            fail(mark_of(root), std::string("a pipeline file must be a mapping (pipeline, stages...), got ") +
                                    kind_of(root));
        PipelineDef def;
        def.file = file_;
        bool named = false;
        for (const Entry &e : conv_.entries(root, false)) {
            if (e.key == "pipeline") {
                def.name = string_value(e);
                named = true;
            } else if (e.key == "plugin_path") {
                read_plugin_path(e, def);
            } else if (e.key == "settings") {
                read_settings(e, def.settings);
            } else if (e.key == "stages") {
                read_stages(e, def);
            } else {
                fail(mark_of(e.k),
                     "unknown key " + quote(e.key) + " (known: pipeline, plugin_path, settings, stages)");
            }
        }
        if (!named) fail(mark_of(root), "missing required key 'pipeline' (the pipeline's name)");
        if (def.stages.empty()) fail(mark_of(root), "missing required key 'stages'");
        return def;
    }

private:
    std::string string_value(const Entry &e) {
        if (!e.v.IsScalar()) fail(mark_of(e.k), quote(e.key) + " must be a string, got " + kind_of(e.v));
        std::string s = conv_.text(e.v);
        if (s.empty()) fail(mark_of(e.v), quote(e.key) + " must not be empty");
        return s;
    }

    void read_plugin_path(const Entry &e, PipelineDef &def) {
        auto add = [&](const YAML::Node &n) {
            if (!n.IsScalar())
                fail(mark_of(n), std::string("'plugin_path' entries must be strings, got ") + kind_of(n));
            std::filesystem::path p = conv_.text(n);
            if (p.empty()) fail(mark_of(n), "'plugin_path' entries must not be empty");
            if (p.is_relative()) p = std::filesystem::path(file_).parent_path() / p;
            def.plugin_path.push_back(p.lexically_normal().string());
        };
        if (e.v.IsScalar()) {
            add(e.v);
        } else if (e.v.IsSequence()) {
            for (const YAML::Node &n : e.v)
                add(n);
        } else {
            fail(mark_of(e.k),
                 std::string("'plugin_path' must be a string or a list of strings, got ") + kind_of(e.v));
        }
    }

    void read_settings(const Entry &e, Settings &s) {
        if (e.v.IsNull()) return;
        if (!e.v.IsMap())
            fail(mark_of(e.k), std::string("'settings' must be a mapping, got ") + kind_of(e.v));
        for (const Entry &x : conv_.entries(e.v, false)) {
            if (x.key == "batch_size")
                s.batch_size = setting(x, 1u << 20);
            else if (x.key == "batch_max_events")
                s.batch_max_events = setting(x, 1u << 20);
            else if (x.key == "batch_max_bytes")
                s.batch_max_bytes = setting(x, 1u << 30, 1024);
            else if (x.key == "batch_max_ms")
                s.batch_max_ms = setting(x, 3600000, 0);
            else if (x.key == "queue_capacity")
                s.queue_capacity = setting(x, 4096);
            else if (x.key == "shutdown_timeout_ms")
                s.shutdown_timeout_ms = setting(x, UINT32_MAX);
            else if (x.key == "poll_wait_ms")
                s.poll_wait_ms = setting(x, UINT32_MAX);
            else if (x.key == "owner_lease_ms")
                s.owner_lease_ms = setting(x, 3600000, 100);
            else if (x.key == "when_owned")
                s.when_owned = when_owned(x);
            else
                fail(mark_of(x.k), "unknown settings key " + quote(x.key) +
                                       " (known: batch_size, batch_max_events, batch_max_bytes, "
                                       "batch_max_ms, queue_capacity, shutdown_timeout_ms, "
                                       "poll_wait_ms, when_owned, owner_lease_ms)");
        }
    }

    WhenOwned when_owned(const Entry &x) {
        const std::string what = "settings.when_owned must be 'wait' or 'refuse', got ";
        if (!x.v.IsScalar()) fail(mark_of(x.k), what + kind_of(x.v));
        std::string s = conv_.text(x.v);
        if (s == "wait") return WhenOwned::wait;
        if (s == "refuse") return WhenOwned::refuse;
        fail(mark_of(x.v), what + quote(s));
    }

    // An integer in [min, max] for `<prefix><key>`.
    uint32_t setting(const Entry &x, uint32_t max, uint32_t min = 1, const char *prefix = "settings.") {
        std::string what = prefix + x.key + " must be an integer from " + std::to_string(min) + " to " +
                           std::to_string(max) + ", got ";
        if (!x.v.IsScalar()) fail(mark_of(x.k), what + kind_of(x.v));
        std::string s = conv_.text(x.v);
        std::optional<int64_t> n = parse_int(s);
        if (!n || *n < min || *n > max) fail(mark_of(x.v), what + quote(s));
        return static_cast<uint32_t>(*n);
    }

    // A stage's `retry:` mapping (RetryPolicy).
    RetryPolicy retry_policy(const Entry &e, const std::string &stage) {
        RetryPolicy r;
        if (e.v.IsNull()) return r;
        if (!e.v.IsMap())
            fail(mark_of(e.k), "'retry' of stage " + quote(stage) + " must be a mapping, got " + kind_of(e.v));
        std::optional<Mark> max_mark;
        for (const Entry &x : conv_.entries(e.v, false)) {
            if (x.key == "max_attempts")
                r.max_attempts = setting(x, 1000000, 1, "retry.");
            else if (x.key == "backoff_ms")
                r.backoff_ms = setting(x, 3600000, 1, "retry.");
            else if (x.key == "max_backoff_ms") {
                r.max_backoff_ms = setting(x, 3600000, 1, "retry.");
                max_mark = mark_of(x.v);
            } else
                fail(mark_of(x.k), "unknown key " + quote(x.key) + " in 'retry' of stage " + quote(stage) +
                                       " (known: max_attempts, backoff_ms, max_backoff_ms)");
        }
        if (r.max_backoff_ms < r.backoff_ms)
            fail(max_mark ? *max_mark : mark_of(e.v),
                 "retry.max_backoff_ms must be at least retry.backoff_ms (" + std::to_string(r.backoff_ms) + ")");
        return r;
    }

    void read_stages(const Entry &e, PipelineDef &def) {
        if (!e.v.IsSequence())
            fail(mark_of(e.k), std::string("'stages' must be a sequence, got ") + kind_of(e.v));
        std::map<std::string, Mark> ids;
        for (const YAML::Node &n : e.v) {
            StageDef st = read_stage(n, def.stages.size() + 1);
            auto [first, fresh] = ids.emplace(st.id, st.mark);
            if (!fresh)
                fail(st.mark, "duplicate stage id " + quote(st.id) + " (first at " +
                                  where(file_, first->second) + ")");
            def.stages.push_back(std::move(st));
        }
        if (def.stages.empty())
            fail(mark_of(e.k), "'stages' must not be empty: a pipeline needs a source and a sink");
    }

    StageDef read_stage(const YAML::Node &n, size_t number) {
        const std::string label = "stage #" + std::to_string(number);
        if (!n.IsMap())
            fail(mark_of(n), label + " must be a mapping (id, plugin, config), got " + kind_of(n));
        StageDef st;
        st.mark = st.config_mark = mark_of(n);
        std::optional<Entry> id, plugin, config, retry;
        for (Entry &x : conv_.entries(n, false)) {
            if (x.key == "id")
                id = std::move(x);
            else if (x.key == "plugin")
                plugin = std::move(x);
            else if (x.key == "config")
                config = std::move(x);
            else if (x.key == "retry")
                retry = std::move(x);
            else
                fail(mark_of(x.k),
                     "unknown key " + quote(x.key) + " in " + label + " (known: id, plugin, config, retry)");
        }
        if (!id) fail(st.mark, label + " has no 'id'");
        st.id = string_value(*id);
        if (st.id.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") !=
            std::string::npos)
            fail(mark_of(id->v),
                 "invalid stage id " + quote(st.id) + ": use letters, digits, '_', '.' and '-'");
        if (!plugin) fail(st.mark, "stage " + quote(st.id) + " has no 'plugin'");
        st.plugin = string_value(*plugin);
        st.plugin_mark = mark_of(plugin->v);
        if (retry) st.retry = retry_policy(*retry, st.id);
        if (config && config->v.IsNull()) {
            st.config_mark = mark_of(config->k);
        } else if (config) {
            if (!config->v.IsMap())
                fail(mark_of(config->k),
                     "'config' of stage " + quote(st.id) + " must be a mapping, got " + kind_of(config->v));
            st.config_mark = mark_of(config->v);
            for (const Entry &x : conv_.entries(config->v, false))
                st.config.emplace(x.key, conv_.value(x.v, mark_of(x.k)));
        }
        return st;
    }

    const std::string &file_;
    Converter conv_;
};

const char *kind_name(cdcflow_kind k) {
    switch (k) {
    case CDCFLOW_KIND_SOURCE:
        return "a source";
    case CDCFLOW_KIND_TRANSFORM:
        return "a transform";
    case CDCFLOW_KIND_SINK:
        return "a sink";
    }
    return "of unknown kind";
}

std::optional<std::string> shape_error(size_t index, size_t count, cdcflow_kind kind) {
    bool first = index == 0, last = index + 1 == count;
    if (first && kind != CDCFLOW_KIND_SOURCE) return "cannot be first: a pipeline starts with a source";
    if (last && kind != CDCFLOW_KIND_SINK) return "cannot be last: a pipeline ends with a sink";
    if (!first && !last && kind != CDCFLOW_KIND_TRANSFORM)
        return "cannot be in the middle: only transforms go between the source and the sink";
    return std::nullopt;
}

// Why a value does not fit its declared type, or nullopt; fills the typed fields and
// re-encodes json for the type.
std::optional<std::string> convert(ConfigValue &v, cdcflow_config_type type) {
    v.type = type;
    const std::string got = v.is_scalar               ? quote(v.scalar)
                            : v.json.starts_with('[') ? "a sequence"
                            : v.json.starts_with('{') ? "a mapping"
                                                      : "null";
    switch (type) {
    case CDCFLOW_CONFIG_STRING:
        if (!v.is_scalar) return "must be a string, got " + got;
        v.json = json_string(v.scalar);
        return std::nullopt;
    case CDCFLOW_CONFIG_INT: {
        std::optional<int64_t> i = v.is_scalar ? parse_int(v.scalar) : std::nullopt;
        if (!i) return "must be an integer (int64), got " + got;
        v.i = *i;
        v.json = std::to_string(*i);
        return std::nullopt;
    }
    case CDCFLOW_CONFIG_DOUBLE: {
        std::optional<double> d = v.is_scalar ? parse_double(v.scalar) : std::nullopt;
        if (!d) return "must be a number, got " + got;
        v.d = *d;
        v.json = nlohmann::json(*d).dump();
        return std::nullopt;
    }
    case CDCFLOW_CONFIG_BOOL: {
        std::string s = v.is_scalar ? v.scalar : "";
        std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
        if (s != "true" && s != "yes" && s != "on" && s != "false" && s != "no" && s != "off")
            return "must be a boolean (true/false, yes/no, on/off), got " + got;
        v.b = s == "true" || s == "yes" || s == "on";
        v.json = v.b ? "true" : "false";
        return std::nullopt;
    }
    case CDCFLOW_CONFIG_JSON:
        return std::nullopt;
    }
    return "has a type the host does not know (" + std::to_string(static_cast<int>(type)) + ")";
}

// A plugin's default, from its YAML text. A string default that is not a YAML scalar
// ("", "*", "a: b") is taken literally: that is what a plugin author writing it means.
ConfigValue default_value(const std::string &file, const KeySpec &spec, Mark at) {
    const std::string &text = *spec.default_value;
    ConfigValue v;
    if (spec.type == CDCFLOW_CONFIG_STRING) {
        std::optional<YAML::Node> n;
        try {
            n = YAML::Load(text);
        } catch (const YAML::Exception &) {
        }
        v.scalar = n && n->IsScalar() ? n->Scalar() : text;
    } else {
        v = Converter(file, nullptr).value(YAML::Load(text), at);
    }
    v.from_default = true;
    v.mark = v.key_mark = at;
    v.location = where(file, at);
    return v;
}

using ErrorFn = std::function<void(Mark, const std::string &)>;

void check_config(const std::string &file, StageDef &st, const PluginSchema &schema, const ErrorFn &error) {
    const std::string of = " for plugin " + quote(st.plugin);
    for (auto &entry : st.config) {
        const std::string &key = entry.first; // not a structured binding: clang 14 cannot capture those
        ConfigValue &v = entry.second;
        auto spec = std::find_if(schema.keys.begin(), schema.keys.end(),
                                 [&](const KeySpec &k) { return k.name == key; });
        if (spec == schema.keys.end()) {
            std::string known;
            for (const KeySpec &k : schema.keys)
                known += (known.empty() ? "" : ", ") + k.name;
            error(v.key_mark, "unknown config key " + quote(key) + of +
                                  " (known: " + (known.empty() ? "none" : known) + ")");
        } else if (std::optional<std::string> why = convert(v, spec->type)) {
            error(v.mark, "config key " + quote(key) + of + " " + *why);
        }
    }
    for (const KeySpec &spec : schema.keys) {
        if (st.config.count(spec.name)) continue;
        if (spec.default_value) {
            ConfigValue v;
            std::optional<std::string> why;
            try {
                v = default_value(file, spec, st.config_mark);
                why = convert(v, spec.type);
            } catch (const YAML::Exception &e) {
                why = "is not valid YAML (" + e.msg + ")";
            } catch (const LoadError &e) {
                why = "is not usable (" + e.msg + ")";
            }
            if (why)
                error(st.config_mark, "the default of config key " + quote(spec.name) + of + " " + *why);
            else
                st.config.emplace(spec.name, std::move(v));
        } else if (spec.required) {
            error(st.config_mark,
                  "missing required config key " + quote(spec.name) + of + " (stage " + quote(st.id) + ")");
        }
    }
}

} // namespace

std::string where(const std::string &file, Mark m) {
    return file + ":" + std::to_string(m.line) + ":" + std::to_string(m.col);
}

EnvLookup process_env() {
    return [](const std::string &name) -> std::optional<std::string> {
        const char *v = std::getenv(name.c_str());
        return v ? std::optional<std::string>(v) : std::nullopt;
    };
}

// Defaults are literal text: "${A:-${B}}" is not nested (the first '}' closes).
Result<std::string> interpolate(const std::string &text, const EnvLookup &env) {
    try {
        std::string out;
        for (size_t i = 0; i < text.size(); ++i) {
            char next = i + 1 < text.size() ? text[i + 1] : '\0';
            if (text[i] != '$' || (next != '$' && next != '{')) {
                out += text[i];
                continue;
            }
            if (next == '$') {
                out += '$';
                ++i;
                continue;
            }
            size_t close = text.find('}', i + 2);
            if (close == std::string::npos) return Status::error("unterminated '${' (missing '}')");
            std::string_view inner(text.data() + i + 2, close - i - 2);
            size_t sep = inner.find(":-");
            std::string name(inner.substr(0, sep));
            if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0])) ||
                name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") !=
                    std::string::npos)
                return Status::error("invalid environment variable name " + quote(name) + " in " +
                                     quote(text.substr(i, close - i + 1)));
            std::optional<std::string> value = env(name);
            if (sep != npos && (!value || value->empty())) value = std::string(inner.substr(sep + 2));
            if (!value)
                return Status::error("undefined environment variable '" + name + "' (use ${" + name +
                                     ":-default} to give a default)");
            out += *value;
            if (out.size() > kMaxOutputBytes) return Status::error("value too large after interpolation");
            i = close;
        }
        return out;
    } catch (const std::exception &e) {
        return Status::error(std::string("cannot interpolate: ") + e.what());
    }
}

Result<PipelineDef> parse_pipeline(const std::string &text, const std::string &file, const EnvLookup &env) {
    try {
        check_text(text);
        prescan(text);
        std::istringstream in(text);
        YAML::Parser parser(in);
        DocumentStarts docs;
        if (!parser.HandleNextDocument(docs)) fail({1, 1}, "empty pipeline file");
        if (parser.HandleNextDocument(docs))
            fail(mark_of(docs.mark), "a second YAML document: a pipeline file holds one");
        YAML::Node root = YAML::Load(text);
        if (root.IsNull()) fail({1, 1}, "empty pipeline file");
        return Reader(file, env).read(root);
    } catch (const LoadError &e) {
        return Status::error(one_line(where(file, e.mark) + ": " + e.msg));
    } catch (const YAML::DeepRecursion &e) { // what the prescan missed
        return Status::error(where(file, mark_of(e.mark)) + ": nesting deeper than 200 levels");
    } catch (const YAML::Exception &e) {
        return Status::error(one_line(where(file, mark_of(e.mark)) + ": invalid YAML: " + e.msg));
    } catch (const std::exception &e) {
        return Status::error(one_line(file + ": cannot load the pipeline: " + e.what()));
    }
}

Result<PipelineDef> load_pipeline_file(const std::string &path, const EnvLookup &env) {
    std::string text;
    try {
        auto fail_io = [&] {
            return Status::error("cannot read pipeline file " + quote(path) + ": " + std::strerror(errno),
                                 CDCFLOW_ERR_IO);
        };
        std::unique_ptr<FILE, int (*)(FILE *)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
        if (!f) return fail_io();
        // Read one byte past the limit, so that parse_pipeline reports the size (and
        // /dev/zero does not fill the memory).
        char buf[1 << 16];
        while (text.size() <= kMaxFileBytes) {
            size_t n = std::fread(buf, 1, sizeof buf, f.get());
            if (n == 0) break;
            text.append(buf, n);
        }
        if (std::ferror(f.get())) return fail_io();
    } catch (const std::exception &e) {
        return Status::error("cannot read pipeline file " + quote(path) + ": " + e.what(), CDCFLOW_ERR_IO);
    }
    return parse_pipeline(text, path, env);
}

Status check_pipeline(PipelineDef &def,
                      const std::function<const PluginSchema *(const std::string &)> &find) {
    try {
        // Every stage is checked; the error reported is the first in the file.
        std::optional<std::pair<Mark, std::string>> first;
        auto error = [&](Mark m, const std::string &msg) {
            if (!first || std::tie(m.line, m.col) < std::tie(first->first.line, first->first.col))
                first.emplace(m, msg);
        };
        if (def.stages.empty()) error({1, 1}, "a pipeline needs a source and a sink");
        for (size_t n = 0; n < def.stages.size(); ++n) {
            StageDef &st = def.stages[n];
            const PluginSchema *schema = find(st.plugin);
            if (!schema) {
                error(st.plugin_mark, "unknown plugin " + quote(st.plugin) + " (stage " + quote(st.id) + ")");
                continue;
            }
            if (std::optional<std::string> why = shape_error(n, def.stages.size(), schema->kind))
                error(st.mark, "stage " + quote(st.id) + " (plugin " + quote(st.plugin) + ", " +
                                   kind_name(schema->kind) + ") " + *why);
            check_config(def.file, st, *schema, error);
        }
        if (first) return Status::error(one_line(where(def.file, first->first) + ": " + first->second));
        return Status::ok();
    } catch (const std::exception &e) {
        return Status::error(one_line(def.file + ": cannot check the pipeline: " + e.what()));
    }
}

} // namespace cdcflow::host
