// The pipeline loader, step 2 (see pipeline.hpp): every stage's config against
// its plugin's declared schema, and the shape of the pipeline.
#include "escape.hpp"
#include "pipeline.hpp"
#include "yaml_json.hpp"
#include "yaml_load.hpp"

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <utility>

namespace cdcflow::host {
namespace {

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
