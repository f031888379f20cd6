// YAML nodes to text and JSON: scalars after the YAML 1.2 core schema,
// ${VAR} interpolation of scalars, mappings with unique keys, and budgets
// on the walk (aliases let a small file name one subtree millions of times).
// Errors throw LoadError (yaml_load.hpp).
#pragma once

#include "escape.hpp"
#include "pipeline.hpp"
#include "yaml_load.hpp"

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cdcflow::host {

// An int64 in decimal, with an optional sign; nullopt otherwise.
std::optional<int64_t> parse_int(std::string_view s);
// Decimal only (from_chars also takes "inf" and "nan": JSON cannot hold them).
std::optional<double> parse_double(std::string_view s);
// A plain (unquoted) scalar as JSON, after the YAML 1.2 core schema: null, booleans,
// numbers. What JSON cannot hold (1e999, .inf, .nan) stays a string; integers past int64
// become doubles.
void put_smart(std::string &out, const std::string &s);

// The one YAML document of `text`, after the checks that protect yaml-cpp
// (binary, size, depth, node count). `kind` names the file in messages
// ("pipeline file", "rules file", "case file"). Throws LoadError and
// YAML::Exception (one_line_errors turns them into a Status).
YAML::Node load_one_document(const std::string &text, const std::string &kind);

// Runs `load` and turns what it throws into one line "FILE:LINE:COL: what".
template <typename T, typename Load>
Result<T> one_line_errors(const std::string &file, const std::string &what, Load &&load) {
    try {
        return load();
    } catch (const LoadError &e) {
        return Status::Config(one_line(where(file, e.mark) + ": " + e.msg));
    } catch (const YAML::DeepRecursion &e) { // what the prescan missed
        return Status::Config(where(file, mark_of(e.mark)) + ": nesting deeper than 200 levels");
    } catch (const YAML::Exception &e) {
        return Status::Config(one_line(where(file, mark_of(e.mark)) + ": invalid YAML: " + e.msg));
    } catch (const std::exception &e) {
        return Status::Config(one_line(file + ": cannot load " + what + ": " + e.what()));
    }
}

// Names that must be unique in a file (mapping keys, stage ids, case
// names): records `name` at `at`, or fails there naming the first use:
// "duplicate <what> 'x' (first at FILE:LINE:COL)".
inline void add_unique(std::map<std::string, Mark> &seen, const std::string &name, Mark at,
                       const std::string &file, const char *what) {
    auto [first, fresh] = seen.emplace(name, at);
    if (!fresh)
        fail(at, std::string("duplicate ") + what + " " + quote(name) + " (first at " +
                     where(file, first->second) + ")");
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
            add_unique(seen, key, mark_of(k), file_, "key");
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
        } else if (n.IsNull()) {
            write(n, v.json, 0, nullptr, 0);
        } else {
            // A mapping or a sequence: keep where each nested node is, in the same walk.
            auto marks = std::make_shared<NestedMarks>(file_);
            write(n, v.json, 0, marks.get(), marks->add(v.mark));
            marks->shrink();
            v.nested = std::move(marks);
        }
        return v;
    }

private:
    // Quoted and block scalars (tag "!") and explicitly tagged ones stay strings.
    void put_scalar(std::string &out, const YAML::Node &n, const std::string &s) {
        size_t before = out.size();
        if (n.Tag() == "?")
            put_smart(out, s);
        else
            put_string(out, s);
        spend(n, out.size() - before);
    }

    // `marks` (may be null): where the tree's nodes are; `self` is n's node in it.
    void write(const YAML::Node &n, std::string &out, size_t depth, NestedMarks *marks, uint32_t self) {
        // The prescan bounds depth already; an alias that contains itself (&a [*a]) does not.
        if (depth > kMaxDepth) fail(mark_of(n), "nesting deeper than 200 levels");
        if (n.IsScalar()) {
            std::string buf;
            put_scalar(out, n, text(n, buf));
        } else if (n.IsSequence()) {
            visit(n);
            out += '[';
            if (marks) marks->open(self, false, n.size());
            size_t i = 0;
            for (const YAML::Node &item : n) {
                if (i > 0) out += ',';
                uint32_t child = 0;
                if (marks) {
                    child = marks->add(mark_of(item));
                    marks->set_child(self, i, {}, child);
                }
                write(item, out, depth + 1, marks, child);
                ++i;
            }
            out += ']';
        } else if (n.IsMap()) {
            out += '{';
            std::vector<Entry> items = entries(n, true);
            if (marks) marks->open(self, true, items.size());
            for (size_t i = 0; i < items.size(); ++i) {
                const Entry &e = items[i];
                if (i > 0) out += ',';
                put_string(out, e.key);
                out += ':';
                uint32_t child = 0;
                if (marks) {
                    // An empty value ("key:") has no position of its own: the key's (as value() does).
                    child = marks->add(mark_of(e.v.IsNull() ? e.k : e.v));
                    marks->set_child(self, i, e.key, child);
                }
                write(e.v, out, depth + 1, marks, child);
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

} // namespace cdcflow::host
