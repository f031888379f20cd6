// See rules_file.hpp. YAML is read by the pipeline loader (one reader of
// YAML config for the whole project), JSON by nlohmann, the rules by the
// rules library.
#include "rules_file.hpp"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

namespace cdcflow::produce {

namespace {

// The rules of the first stage whose plugin is "validator".
std::optional<rules::RuleSet> rules_of_pipeline(const host::PipelineDef &def, std::string *error) {
    for (const host::StageDef &st : def.stages) {
        if (st.plugin != "validator") continue;
        auto it = st.config.find("rules");
        if (it == st.config.end()) {
            *error = host::where(def.file, st.config_mark);
            error->append(": stage '").append(st.id).append("' (plugin validator) has no 'rules'");
            return std::nullopt;
        }
        std::string why;
        auto rs = rules::RuleSet::parse(it->second.json, &why);
        if (!rs) {
            *error = it->second.location;
            error->append(": rules: ").append(why);
        }
        return rs;
    }
    *error = def.file;
    error->append(": no stage with plugin 'validator' (produce uses the rules of the first one)");
    return std::nullopt;
}

std::optional<rules::RuleSet> rules_of_pipeline_text(const std::string &text, const std::string &path,
                                                     const host::EnvLookup &env, std::string *error) {
    auto def = host::parse_pipeline(text, path, env);
    if (!def) {
        *error = def.status().message();
        return std::nullopt;
    }
    return rules_of_pipeline(def.value(), error);
}

// The rules mapping itself, as JSON text.
std::optional<rules::RuleSet> parse_rules(const std::string &json, const std::string &path,
                                          std::string *error) {
    std::string why;
    auto rs = rules::RuleSet::parse(json, &why);
    if (!rs) error->assign(path).append(": ").append(why);
    return rs;
}

bool read_file(const std::string &path, std::string *text, std::string *error) {
    std::unique_ptr<FILE, int (*)(FILE *)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (f) {
        // One byte past the limit tells that it is exceeded (and /dev/zero
        // does not fill the memory).
        char buf[1 << 16];
        size_t n;
        while (text->size() <= kMaxRulesFileBytes && (n = std::fread(buf, 1, sizeof buf, f.get())) > 0)
            text->append(buf, n);
        if (!std::ferror(f.get())) return true;
    }
    error->assign("cannot read rules file '").append(path).append("': ").append(std::strerror(errno));
    return false;
}

} // namespace

std::optional<rules::RuleSet> load_rules_file(const std::string &path, const host::EnvLookup &env,
                                              std::string *error) {
    std::string text;
    if (!read_file(path, &text, error)) return std::nullopt;
    if (text.size() > kMaxRulesFileBytes) {
        error->assign(path).append(": file too large (the limit is 4 MiB)");
        return std::nullopt;
    }
    if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) text.replace(0, 3, "   "); // a BOM (keep the columns)
    size_t first = text.find_first_not_of(" \t\r\n");
    if (first == std::string::npos) {
        error->assign(path).append(": empty rules file");
        return std::nullopt;
    }

    // JSON: taken literally, no YAML typing or interpolation; a pipeline
    // written as JSON is YAML's to read.
    if (text[first] == '{') {
        nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
        if (!j.is_discarded()) {
            if (!j.contains("stages")) return parse_rules(text, path, error);
            return rules_of_pipeline_text(text, path, env, error);
        }
        // else: YAML (a flow mapping need not be JSON).
    }
    auto doc = host::parse_config_document(text, path, "rules file", env);
    if (!doc) {
        *error = doc.status().message();
        return std::nullopt;
    }
    nlohmann::json j = nlohmann::json::parse(doc->json, nullptr, false);
    if (j.is_object() && (j.contains("stages") || j.contains("pipeline")))
        return rules_of_pipeline_text(text, path, env, error);
    return parse_rules(doc->json, path, error);
}

} // namespace cdcflow::produce
