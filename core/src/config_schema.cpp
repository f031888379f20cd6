// The pipeline loader, step 2 (see pipeline.hpp): every stage's config against
// its plugin's declared schema, and the shape of the pipeline.
#include "config_schema.hpp"

#include "escape.hpp"
#include "pipeline.hpp"
#include "plugin_loader.hpp"
#include "yaml_json.hpp"
#include "yaml_load.hpp"

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace cdcflow::host {
namespace {

std::optional<std::string> shape_error(size_t index, size_t count, cdcflow_kind kind) {
    bool first = index == 0, last = index + 1 == count;
    if (first && kind != CDCFLOW_KIND_SOURCE) return "cannot be first: a pipeline starts with a source";
    if (last && kind != CDCFLOW_KIND_SINK) return "cannot be last: a pipeline ends with a sink";
    if (!first && !last && kind != CDCFLOW_KIND_TRANSFORM)
        return "cannot be in the middle: only transforms go between the source and the sink";
    return std::nullopt;
}

// A value as a message may echo it: quoted, or hidden for a secret.
std::string shown(const ConfigValue &v, const KeySpec &spec) {
    if (spec.secret) return kSecretShown;
    return v.is_scalar               ? quote(v.scalar)
           : v.json.starts_with('[') ? "a sequence"
           : v.json.starts_with('{') ? "a mapping"
                                     : "null";
}

// Why a value does not fit its declared type, or nullopt; fills the typed fields and
// re-encodes json for the type.
std::optional<std::string> convert_type(ConfigValue &v, const KeySpec &spec) {
    v.type = spec.type;
    const std::string got = shown(v, spec);
    switch (spec.type) {
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
    return "has a type the host does not know (" + std::to_string(static_cast<int>(spec.type)) + ")";
}

// "from 1 to 10", "at least 1", "at most 10".
std::string range_text(const KeySpec &spec) {
    if (spec.min && spec.max) return "from " + *spec.min + " to " + *spec.max;
    return spec.min ? "at least " + *spec.min : "at most " + *spec.max;
}

std::string choices_text(const KeySpec &spec) {
    std::string out;
    for (const std::string &c : spec.choices)
        out += (out.empty() ? "" : ", ") + quote(c);
    return out;
}

// Bounds (inclusive) and choices, on a value convert_type() accepted. The bounds
// parse: schema_of() checked them.
std::optional<std::string> convert_range(const ConfigValue &v, const KeySpec &spec) {
    bool low = false, high = false;
    if (spec.type == CDCFLOW_CONFIG_INT) {
        low = spec.min && v.i < *parse_int(*spec.min);
        high = spec.max && v.i > *parse_int(*spec.max);
    } else if (spec.type == CDCFLOW_CONFIG_DOUBLE) {
        low = spec.min && v.d < *parse_double(*spec.min);
        high = spec.max && v.d > *parse_double(*spec.max);
    }
    if (low || high) return "must be " + range_text(spec) + ", got " + shown(v, spec);
    if (spec.type == CDCFLOW_CONFIG_STRING && !spec.choices.empty() &&
        std::find(spec.choices.begin(), spec.choices.end(), v.scalar) == spec.choices.end()) {
        std::string why = "must be one of " + choices_text(spec) + ", got " + shown(v, spec);
        if (std::optional<std::string> near = spec.secret ? std::nullopt : closest(v.scalar, spec.choices))
            why += " (did you mean " + quote(*near) + "?)";
        return why;
    }
    return std::nullopt;
}

std::optional<std::string> convert(ConfigValue &v, const KeySpec &spec) {
    if (std::optional<std::string> why = convert_type(v, spec)) return why;
    return convert_range(v, spec);
}

// A plugin's default. ABI 3 (literal_default): the value as a user writes it, a string
// default taken as is. ABI 1: YAML text, where a string default that is not a YAML
// scalar ("", "*", "a: b") is taken literally: that is what a plugin author writing it
// means. Throws YAML::Exception or LoadError for a default that is not usable.
ConfigValue default_value(const std::string &file, const KeySpec &spec, Mark at) {
    const std::string &text = *spec.default_value;
    ConfigValue v;
    if (spec.type == CDCFLOW_CONFIG_STRING && spec.literal_default) {
        v.scalar = text;
    } else if (spec.type == CDCFLOW_CONFIG_STRING) {
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
    v.nested.reset(); // positions inside the plugin's default text are not the file's
    v.mark = v.key_mark = at;
    v.location = where(file, at);
    return v;
}

// The default as the checker stores it, or why it is not usable.
std::optional<std::string> checked_default(const std::string &file, const KeySpec &spec, Mark at,
                                           ConfigValue &out) {
    try {
        out = default_value(file, spec, at);
        return convert(out, spec);
    } catch (const YAML::Exception &e) {
        return "is not valid YAML (" + e.msg + ")";
    } catch (const LoadError &e) {
        return "is not usable (" + e.msg + ")";
    }
}

using ErrorFn = std::function<void(Mark, const std::string &)>;

std::vector<std::string> key_names(const PluginSchema &schema) {
    std::vector<std::string> out;
    for (const KeySpec &k : schema.keys)
        if (!k.deprecated) out.push_back(k.name);
    return out;
}

// The values set for secret keys. A YAML alias can repeat a secret's value under
// a key that is not secret (`token: &t ...` then `mode: *t`); a message about
// that key must not show it either.
void add_secret_values(const StageDef &st, const PluginSchema &schema, std::vector<std::string> &out) {
    for (const auto &[key, v] : st.config)
        if (const KeySpec *spec = find_key(schema, key);
            spec && spec->secret && v.is_scalar && !v.scalar.empty())
            out.push_back(v.scalar);
}

void check_config(const std::string &file, StageDef &st, const PluginSchema &schema,
                  const std::vector<std::string> &secrets, const ErrorFn &error,
                  std::vector<std::string> &warnings) {
    const std::string of = " for plugin " + quote(st.plugin);
    for (auto &entry : st.config) {
        const std::string &key = entry.first; // not a structured binding: clang 14 cannot capture those
        ConfigValue &v = entry.second;
        const KeySpec *spec = find_key(schema, key);
        std::optional<KeySpec> hidden;
        if (spec && !spec->secret && v.is_scalar &&
            std::find(secrets.begin(), secrets.end(), v.scalar) != secrets.end()) {
            hidden = *spec;
            hidden->secret = true; // only for what messages show: the key stays what it is
            spec = &*hidden;
        }
        if (!spec) {
            // Deprecated keys are not offered: a user should not start using one.
            std::vector<std::string> names = key_names(schema);
            std::string known;
            for (const std::string &k : names)
                known += (known.empty() ? "" : ", ") + k;
            std::optional<std::string> near = closest(key, names);
            error(v.key_mark, "unknown config key " + quote(key) + of +
                                  (near ? ": did you mean " + quote(*near) + "?"
                                        : " (known: " + (known.empty() ? "none" : known) + ")"));
        } else if (std::optional<std::string> why = convert(v, *spec)) {
            error(v.mark, "config key " + quote(key) + of + " " + *why);
        } else if (spec->deprecated) {
            warnings.push_back(where(file, v.key_mark) + ": stage " + quote(st.id) + ": config key " +
                               quote(key) + " is deprecated" +
                               (spec->description.empty() ? "" : ": " + spec->description));
        }
    }
    for (const KeySpec &spec : schema.keys) {
        // A deprecated key keeps its default: a plugin may still read it while it goes.
        if (st.config.count(spec.name)) continue;
        if (spec.default_value) {
            ConfigValue v;
            if (std::optional<std::string> why = checked_default(file, spec, st.config_mark, v))
                error(st.config_mark, "the default of config key " + quote(spec.name) + of + " " + *why);
            else
                st.config.emplace(spec.name, std::move(v));
        } else if (spec.required) {
            error(st.config_mark,
                  "missing required config key " + quote(spec.name) + of + " (stage " + quote(st.id) + ")");
        }
    }
}

// ---- building a schema from a descriptor ----

constexpr uint32_t kMaxKeys = 1024;
constexpr size_t kMaxChoices = 1024;
// The smallest cdcflow_config_param: it appeared in ABI 3 as it is now.
constexpr size_t kMinParamSize = sizeof(cdcflow_config_param);
// The largest believed: the struct only grows at its end, a few fields per ABI
// version. A larger struct_size is garbage (an uninitialised or wrong array),
// and walking with it as the stride would read far past the plugin's array.
constexpr size_t kMaxParamSize = 64 * kMinParamSize;

// A plugin's declared type, read as the integer it holds: in C++, loading an
// enum that holds a value outside its enumerators' range (a C plugin's 99) is
// undefined behaviour, so nothing else reads the field before this.
std::optional<cdcflow_config_type> known_type(const cdcflow_config_type &declared) {
    std::underlying_type_t<cdcflow_config_type> raw;
    static_assert(sizeof raw == sizeof declared);
    std::memcpy(&raw, &declared, sizeof raw);
    const auto v = static_cast<int64_t>(raw);
    if (v < CDCFLOW_CONFIG_STRING || v > CDCFLOW_CONFIG_JSON) return std::nullopt;
    return static_cast<cdcflow_config_type>(v);
}

std::optional<std::string> check_spec(const KeySpec &k) {
    const std::string key = "config key " + quote(k.name);
    if (k.type < CDCFLOW_CONFIG_STRING || k.type > CDCFLOW_CONFIG_JSON) return key + " has an unknown type";
    bool numeric = k.type == CDCFLOW_CONFIG_INT || k.type == CDCFLOW_CONFIG_DOUBLE;
    if ((k.min || k.max) && !numeric) return key + " has bounds, but only int and double keys take them";
    for (const std::optional<std::string> *b : {&k.min, &k.max}) {
        if (!*b) continue;
        bool ok = k.type == CDCFLOW_CONFIG_INT ? parse_int(**b).has_value() : parse_double(**b).has_value();
        if (!ok)
            return key + " has a " + (b == &k.min ? "min" : "max") + " that is not " +
                   (k.type == CDCFLOW_CONFIG_INT ? "an integer" : "a number") + ": " + quote(**b);
    }
    if (k.min && k.max &&
        (k.type == CDCFLOW_CONFIG_INT ? *parse_int(*k.min) > *parse_int(*k.max)
                                      : *parse_double(*k.min) > *parse_double(*k.max)))
        return key + " has min " + *k.min + " above max " + *k.max;
    if (!k.choices.empty() && k.type != CDCFLOW_CONFIG_STRING)
        return key + " has choices, but only string keys take them";
    if (k.required && k.deprecated) return key + " is both required and deprecated";
    if (k.default_value) {
        ConfigValue v;
        KeySpec shown = k;
        shown.secret = false; // the plugin's own declaration: nothing of the user's to hide
        if (std::optional<std::string> why = checked_default("", shown, Mark{}, v))
            return key + ": its default " + *why;
    }
    return std::nullopt;
}

} // namespace

const char *config_type_name(cdcflow_config_type t) {
    switch (t) {
    case CDCFLOW_CONFIG_STRING:
        return "string";
    case CDCFLOW_CONFIG_INT:
        return "int";
    case CDCFLOW_CONFIG_DOUBLE:
        return "double";
    case CDCFLOW_CONFIG_BOOL:
        return "bool";
    case CDCFLOW_CONFIG_JSON:
        return "json";
    }
    return "unknown";
}

// Optimal string alignment: insertions, deletions, substitutions and swaps of two
// neighbours ("fsat" for "fast") each count 1, the typos people make.
size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<size_t> before(b.size() + 1), prev(b.size() + 1), row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j)
        prev[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        row[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            row[j] = std::min({prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
                row[j] = std::min(row[j], before[j - 2] + 1);
        }
        std::swap(before, prev);
        std::swap(prev, row);
    }
    return prev[b.size()];
}

// Close enough: at most a third of the longer word differs (at least 1, so that a
// one-letter slip in a short key is still caught), and not the whole word.
std::optional<std::string> closest(std::string_view word, const std::vector<std::string> &candidates) {
    std::optional<std::string> best;
    size_t best_d = SIZE_MAX;
    for (const std::string &c : candidates) {
        size_t d = edit_distance(word, c);
        size_t limit = std::max<size_t>(1, std::max(word.size(), c.size()) / 3);
        if (d <= limit && d < best_d && d < std::max(word.size(), c.size())) {
            best = c;
            best_d = d;
        }
    }
    return best;
}

const KeySpec *find_key(const PluginSchema &schema, std::string_view name) {
    for (const KeySpec &k : schema.keys)
        if (k.name == name) return &k;
    return nullptr;
}

Result<std::vector<KeySpec>> keys_from_params(const cdcflow_config_param *params, uint32_t count) {
    std::vector<KeySpec> keys;
    if (count == 0) return keys;
    if (!params) return Status::Config("config_param_count without config_params");
    if (count > kMaxKeys) return Status::Config("too many config keys (the limit is 1024)");
    // Every element has the size the plugin built it with: that is the stride, so a
    // plugin built against a later, longer cdcflow_config_param is walked correctly.
    const uint32_t stride = params->struct_size;
    if (stride < kMinParamSize || stride > kMaxParamSize || stride % alignof(cdcflow_config_param) != 0)
        return Status::Config("config_params[0] has a bad struct_size (" + std::to_string(stride) + ")");
    const char *base = reinterpret_cast<const char *>(params);
    for (uint32_t i = 0; i < count; ++i) {
        const auto &p = *reinterpret_cast<const cdcflow_config_param *>(base + size_t{i} * stride);
        if (p.struct_size != stride)
            return Status::Config("config_params[" + std::to_string(i) + "] has struct_size " +
                                  std::to_string(p.struct_size) + ", config_params[0] " +
                                  std::to_string(stride));
        if (!p.name || !*p.name) return Status::Config("config key " + std::to_string(i) + " has no name");
        KeySpec k;
        k.name = p.name;
        std::optional<cdcflow_config_type> type = known_type(p.type);
        if (!type) return Status::Config("config key " + quote(k.name) + " has an unknown type");
        k.type = *type;
        if (p.default_value) k.default_value = p.default_value;
        k.literal_default = true;
        k.required = (p.flags & CDCFLOW_PARAM_REQUIRED) != 0;
        k.secret = (p.flags & CDCFLOW_PARAM_SECRET) != 0;
        k.deprecated = (p.flags & CDCFLOW_PARAM_DEPRECATED) != 0;
        k.description = p.description ? p.description : "";
        if (p.min) k.min = p.min;
        if (p.max) k.max = p.max;
        if (p.choices) {
            // A choices array without its NULL terminator cannot be detected: the
            // walk stops at the first NULL past it, or at the limit below.
            for (size_t c = 0; p.choices[c]; ++c) {
                if (c == kMaxChoices)
                    return Status::Config("config key " + quote(k.name) + " has more than 1024 choices");
                k.choices.push_back(p.choices[c]);
            }
            if (k.choices.empty())
                return Status::Config("config key " + quote(k.name) + " has an empty choices list");
        }
        keys.push_back(std::move(k));
    }
    return keys;
}

Result<PluginSchema> schema_of(const cdcflow_plugin &d) {
    PluginSchema schema;
    schema.name = d.name ? d.name : "";
    schema.kind = d.kind;
    try {
        // config_params is read only from a plugin that says it knows ABI 3; when set,
        // config_keys is ignored (plugin.h).
        bool v3 =
            d.abi_version >= 3 &&
            d.struct_size >= offsetof(cdcflow_plugin, config_param_count) + sizeof d.config_param_count &&
            (d.config_params || d.config_param_count > 0);
        if (v3) {
            Result<std::vector<KeySpec>> keys = keys_from_params(d.config_params, d.config_param_count);
            if (!keys) return keys.status();
            schema.keys = std::move(keys.value());
        } else {
            if (d.config_key_count > 0 && !d.config_keys)
                return Status::Config("config_key_count without config_keys");
            if (d.config_key_count > kMaxKeys)
                return Status::Config("too many config keys (the limit is 1024)");
            for (uint32_t i = 0; i < d.config_key_count; ++i) {
                const cdcflow_config_key &k = d.config_keys[i];
                if (!k.name || !*k.name)
                    return Status::Config("config key " + std::to_string(i) + " has no name");
                KeySpec ks;
                ks.name = k.name;
                std::optional<cdcflow_config_type> type = known_type(k.type);
                if (!type) return Status::Config("config key " + quote(ks.name) + " has an unknown type");
                ks.type = *type;
                if (k.default_value) ks.default_value = k.default_value;
                ks.required = k.required != 0;
                ks.description = k.description ? k.description : "";
                schema.keys.push_back(std::move(ks));
            }
        }
        std::vector<std::string> seen;
        for (const KeySpec &k : schema.keys) {
            if (std::find(seen.begin(), seen.end(), k.name) != seen.end())
                return Status::Config("config key " + quote(k.name) + " declared twice");
            seen.push_back(k.name);
            // ABI 1 defaults keep being checked per pipeline, where they always were
            // (check_config reports a bad one at the stage).
            KeySpec checked = k;
            if (!k.literal_default) checked.default_value.reset();
            if (std::optional<std::string> why = check_spec(checked)) return Status::Config(*why);
        }
    } catch (const std::exception &e) {
        return Status::Config(std::string("cannot read the config declaration: ") + e.what());
    }
    return schema;
}

Status check_stage_config(const std::string &file, StageDef &st, const PluginSchema &schema,
                          std::vector<std::string> *warnings) {
    try {
        std::optional<std::pair<Mark, std::string>> first;
        auto error = [&](Mark m, const std::string &msg) {
            if (!first || std::tie(m.line, m.col) < std::tie(first->first.line, first->first.col))
                first.emplace(m, msg);
        };
        std::vector<std::string> ignored, secrets;
        add_secret_values(st, schema, secrets);
        check_config(file, st, schema, secrets, error, warnings ? *warnings : ignored);
        if (first) return Status::Config(one_line(where(file, first->first) + ": " + first->second));
        return Status::OK();
    } catch (const std::exception &e) {
        return Status::Config(one_line(file + ": cannot check the config: " + e.what()));
    }
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
        def.warnings.clear();
        if (def.stages.empty()) error({1, 1}, "a pipeline needs a source and a sink");
        // An alias may repeat one stage's secret in another stage.
        std::vector<std::string> secrets;
        for (const StageDef &st : def.stages)
            if (const PluginSchema *schema = find(st.plugin)) add_secret_values(st, *schema, secrets);
        for (size_t n = 0; n < def.stages.size(); ++n) {
            StageDef &st = def.stages[n];
            const PluginSchema *schema = find(st.plugin);
            if (!schema) {
                error(st.plugin_mark, "unknown plugin " + quote(st.plugin) + " (stage " + quote(st.id) + ")");
                continue;
            }
            if (std::optional<std::string> why = shape_error(n, def.stages.size(), schema->kind))
                error(st.mark, "stage " + quote(st.id) + " (plugin " + quote(st.plugin) + ", a " +
                                   kind_name(schema->kind) + ") " + *why);
            check_config(def.file, st, *schema, secrets, error, def.warnings);
        }
        if (first) return Status::Config(one_line(where(def.file, first->first) + ": " + first->second));
        return Status::OK();
    } catch (const std::exception &e) {
        return Status::Config(one_line(def.file + ": cannot check the pipeline: " + e.what()));
    }
}

} // namespace cdcflow::host
