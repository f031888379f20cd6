// libFuzzer target for the pipeline loader: any input must end in a PipelineDef or in
// one error line "fuzz.yaml:LINE:COL: ...", within the fuzzer's time and memory limits,
// and every config value it keeps must be valid JSON.
#include "pipeline.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

using namespace cdcflow::host;
using cdcflow::Result;
using cdcflow::Status;

namespace {

// One plugin of each kind, with every config type, defaults (one of them a string that
// is not a YAML scalar) and required keys.
const PluginSchema *find_schema(const std::string &name) {
    static const std::vector<PluginSchema> schemas = {
        {"src",
         CDCFLOW_KIND_SOURCE,
         {{"count", CDCFLOW_CONFIG_INT, "10", false, ""},
          {"name", CDCFLOW_CONFIG_STRING, std::nullopt, true, ""},
          {"ratio", CDCFLOW_CONFIG_DOUBLE, "0.5", false, ""},
          {"enabled", CDCFLOW_CONFIG_BOOL, "yes", false, ""},
          {"table", CDCFLOW_CONFIG_STRING, "", false, ""},
          // ABI 3 declarations: bounds, choices, a secret.
          {"level", CDCFLOW_CONFIG_INT, "0", false, "", true, false, false, "-5", "5"},
          {"mode",
           CDCFLOW_CONFIG_STRING,
           "fast",
           false,
           "",
           true,
           true,
           false,
           std::nullopt,
           std::nullopt,
           {"fast", "safe"}}}},
        {"pass", CDCFLOW_KIND_TRANSFORM, {{"rules", CDCFLOW_CONFIG_JSON, "{a: [1, 2.5, x]}", false, ""}}},
        {"sink",
         CDCFLOW_KIND_SINK,
         {{"db", CDCFLOW_CONFIG_STRING, "*", false, ""},
          {"strict", CDCFLOW_CONFIG_BOOL, std::nullopt, true, ""}}},
    };
    for (const PluginSchema &s : schemas)
        if (s.name == name) return &s;
    return nullptr;
}

std::optional<std::string> env(const std::string &name) {
    if (name == "SET") return "value";
    if (name == "EMPTY") return "";
    if (name == "NUM") return "42";
    return std::nullopt;
}

void expect_one_line(const Status &st) {
    const std::string &m = st.message();
    if (m.rfind("fuzz.yaml:", 0) != 0 || m.find('\n') != std::string::npos ||
        m.find(": ") == std::string::npos)
        std::abort();
}

void expect_json(const PipelineDef &def) {
    for (const StageDef &st : def.stages)
        for (const auto &[key, v] : st.config)
            if (!nlohmann::json::accept(v.json)) std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::string text(reinterpret_cast<const char *>(data), size);
    Result<PipelineDef> def = parse_pipeline(text, "fuzz.yaml", env);
    if (!def) {
        expect_one_line(def.status());
        return 0;
    }
    expect_json(*def);
    Status st = check_pipeline(*def, find_schema);
    if (!st) expect_one_line(st);
    expect_json(*def);
    return 0;
}
