// The pipeline YAML loader: structure, interpolation, schema checks, and hostile input.
// Every error is asserted with its exact text and position.
#include "escape.hpp"
#include "host_api.hpp"
#include "pipeline.hpp"

#include <cdcflow/sdk.hpp>

#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <unistd.h>

using namespace cdcflow::host;
using cdcflow::Result;
using cdcflow::Status;

namespace {

EnvLookup env_of(std::map<std::string, std::string> vars) {
    return [vars = std::move(vars)](const std::string &name) -> std::optional<std::string> {
        auto it = vars.find(name);
        return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
    };
}

const EnvLookup no_env = env_of({});

PipelineDef parse_ok(const std::string &text, const EnvLookup &env = no_env,
                     const std::string &file = "p.yaml") {
    Result<PipelineDef> r = parse_pipeline(text, file, env);
    INFO(r.status().message());
    REQUIRE(r.ok());
    return std::move(r.value());
}

std::string parse_error(const std::string &text, const EnvLookup &env = no_env) {
    Result<PipelineDef> r = parse_pipeline(text, "p.yaml", env);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().abi() == CDCFLOW_ERR_CONFIG);
    CHECK(r.status().message().find('\n') == std::string::npos);
    return r.status().message();
}

// A source with every config type, a transform and a sink.
const PluginSchema *find_schema(const std::string &name) {
    static const std::vector<PluginSchema> schemas = {
        {"src",
         CDCFLOW_KIND_SOURCE,
         {{"count", CDCFLOW_CONFIG_INT, "10", false, "rows per poll"},
          {"name", CDCFLOW_CONFIG_STRING, std::nullopt, true, "table name"},
          {"ratio", CDCFLOW_CONFIG_DOUBLE, std::nullopt, false, ""},
          {"enabled", CDCFLOW_CONFIG_BOOL, "false", false, ""},
          {"extra", CDCFLOW_CONFIG_JSON, "{a: [1, x, '2']}", false, ""},
          {"label", CDCFLOW_CONFIG_STRING, "", false, "an empty C string as the default"},
          {"glob", CDCFLOW_CONFIG_STRING, "*", false, "not a YAML scalar: taken literally"},
          {"tmpl", CDCFLOW_CONFIG_STRING, "${HOME}/x", false, "defaults are not interpolated"}}},
        {"pass", CDCFLOW_KIND_TRANSFORM, {{"rules", CDCFLOW_CONFIG_JSON, std::nullopt, false, ""}}},
        {"sink", CDCFLOW_KIND_SINK, {}},
        {"bad_default", CDCFLOW_KIND_SINK, {{"n", CDCFLOW_CONFIG_INT, "many", false, ""}}},
    };
    for (const PluginSchema &s : schemas)
        if (s.name == name) return &s;
    return nullptr;
}

std::string check_error(const std::string &text, const EnvLookup &env = no_env) {
    PipelineDef def = parse_ok(text, env);
    Status st = check_pipeline(def, find_schema);
    REQUIRE_FALSE(st.ok());
    CHECK(st.message().find('\n') == std::string::npos);
    return st.message();
}

PipelineDef check_ok(const std::string &text, const EnvLookup &env = no_env) {
    PipelineDef def = parse_ok(text, env);
    Status st = check_pipeline(def, find_schema);
    INFO(st.message());
    REQUIRE(st.ok());
    return def;
}

// Source, transform, sink; the source's config starts on line 6 (mapping at 6:7).
std::string pipeline_with(const std::string &src_config) {
    return "pipeline: p\n"
           "stages:\n"
           "  - id: in\n"
           "    plugin: src\n"
           "    config:\n" +
           src_config +
           "  - id: mid\n"
           "    plugin: pass\n"
           "  - id: out\n"
           "    plugin: sink\n";
}

// A file on disk, removed at the end of the test.
struct TempDir {
    std::filesystem::path path =
        std::filesystem::temp_directory_path() / ("cdcflow_test_pipeline_" + std::to_string(::getpid()));
    TempDir() { std::filesystem::create_directories(path); }
    ~TempDir() { std::filesystem::remove_all(path); }
    std::string write(const std::string &name, const std::string &text) const {
        std::ofstream(path / name, std::ios::binary) << text;
        return (path / name).string();
    }
};

std::string repeat(const std::string &s, size_t n) {
    std::string out;
    out.reserve(s.size() * n);
    for (size_t i = 0; i < n; ++i)
        out += s;
    return out;
}

} // namespace

TEST_SUITE("pipeline: structure") {
    TEST_CASE("a complete pipeline file") {
        PipelineDef def = parse_ok("# accounts\n"
                                   "pipeline: accounts\n"
                                   "plugin_path: [./plugins, /opt/x]\n"
                                   "settings:\n"
                                   "  batch_size: 512\n"
                                   "  queue_capacity: 16\n"
                                   "  shutdown_timeout_ms: 2500\n"
                                   "  poll_wait_ms: 50\n"
                                   "stages:\n"
                                   "  - id: src\n"
                                   "    plugin: outbox_source\n"
                                   "    config:\n"
                                   "      database: demo.db\n"
                                   "      rows: 5\n"
                                   "  - id: out.sink-1\n"
                                   "    plugin: projection_sink\n",
                                   no_env, "/etc/cdcflow/p.yaml");
        CHECK(def.file == "/etc/cdcflow/p.yaml");
        CHECK(def.name == "accounts");
        CHECK(def.plugin_path == std::vector<std::string>{"/etc/cdcflow/plugins", "/opt/x"});
        CHECK(def.settings.batch_size == 512);
        CHECK(def.settings.queue_capacity == 16);
        CHECK(def.settings.shutdown_timeout_ms == 2500);
        CHECK(def.settings.poll_wait_ms == 50);
        REQUIRE(def.stages.size() == 2);
        const StageDef &s = def.stages[0];
        CHECK(s.id == "src");
        CHECK(s.plugin == "outbox_source");
        CHECK((s.mark.line == 10 && s.mark.col == 5));
        CHECK((s.plugin_mark.line == 11 && s.plugin_mark.col == 13));
        CHECK((s.config_mark.line == 13 && s.config_mark.col == 7));
        REQUIRE(s.config.size() == 2);
        const ConfigValue &db = s.config.at("database");
        CHECK(db.is_scalar);
        CHECK_FALSE(db.from_default);
        CHECK(db.scalar == "demo.db");
        CHECK(db.json == "\"demo.db\"");
        CHECK(db.location == "/etc/cdcflow/p.yaml:13:17");
        CHECK((db.mark.line == 13 && db.mark.col == 17));
        CHECK((db.key_mark.line == 13 && db.key_mark.col == 7));
        CHECK(s.config.at("rows").json == "5");
        // No config: empty, and its mark is the stage's.
        const StageDef &t = def.stages[1];
        CHECK(t.id == "out.sink-1");
        CHECK(t.config.empty());
        CHECK((t.config_mark.line == 15 && t.config_mark.col == 5));
    }

    TEST_CASE("settings default when absent or empty") {
        for (const char *settings : {"", "settings:\n", "settings: {}\n"}) {
            PipelineDef def =
                parse_ok(std::string("pipeline: p\n") + settings + "stages: [{id: a, plugin: x}]\n");
            CHECK(def.settings.batch_size == 1024);
            CHECK(def.settings.queue_capacity == 8);
            CHECK(def.settings.shutdown_timeout_ms == 10000);
            CHECK(def.settings.poll_wait_ms == 100);
            CHECK(def.plugin_path.empty());
        }
    }

    TEST_CASE("empty and comment-only files") {
        CHECK(parse_error("") == "p.yaml:1:1: empty pipeline file");
        CHECK(parse_error("# nothing here\n   # or here\n\n") == "p.yaml:1:1: empty pipeline file");
        CHECK(parse_error("---\n") == "p.yaml:1:1: empty pipeline file");
    }

    TEST_CASE("the file must be one mapping") {
        CHECK(parse_error("- a\n- b\n") ==
              "p.yaml:1:1: a pipeline file must be a mapping (pipeline, stages...), got a sequence");
        CHECK(parse_error("just text\n") ==
              "p.yaml:1:1: a pipeline file must be a mapping (pipeline, stages...), got a scalar");
        CHECK(parse_error("pipeline: one\nstages: [{id: a, plugin: x}]\n---\npipeline: two\n") ==
              "p.yaml:3:1: a second YAML document: a pipeline file holds one");
    }

    TEST_CASE("required top-level keys") {
        CHECK(parse_error("stages: [{id: a, plugin: x}]\n") ==
              "p.yaml:1:1: missing required key 'pipeline' (the pipeline's name)");
        CHECK(parse_error("# comment\npipeline: p\n") == "p.yaml:2:1: missing required key 'stages'");
        CHECK(parse_error("pipeline: [a]\nstages: []\n") ==
              "p.yaml:1:1: 'pipeline' must be a string, got a sequence");
        CHECK(parse_error("pipeline: ''\nstages: []\n") == "p.yaml:1:11: 'pipeline' must not be empty");
    }

    TEST_CASE("unknown and duplicate top-level keys") {
        CHECK(parse_error("pipeline: p\nstage: []\n") ==
              "p.yaml:2:1: unknown key 'stage' (known: pipeline, plugin_path, settings, http, log, stages)");
        CHECK(parse_error("pipeline: p\npipeline: q\n") ==
              "p.yaml:2:1: duplicate key 'pipeline' (first at p.yaml:1:1)");
        CHECK(parse_error("pipeline: p\n? [a]\n: b\n") ==
              "p.yaml:2:3: a mapping key must be a string, got a sequence");
    }

    TEST_CASE("'stages' must be a non-empty sequence") {
        CHECK(parse_error("pipeline: p\n\nstages: x\n") ==
              "p.yaml:3:1: 'stages' must be a sequence, got a scalar");
        CHECK(parse_error("pipeline: p\nstages: {a: b}\n") ==
              "p.yaml:2:1: 'stages' must be a sequence, got a mapping");
        CHECK(parse_error("pipeline: p\nstages:\n") == "p.yaml:2:1: 'stages' must be a sequence, got null");
        CHECK(parse_error("pipeline: p\nstages: []\n") ==
              "p.yaml:2:1: 'stages' must not be empty: a pipeline needs a source and a sink");
    }

    TEST_CASE("a stage is a mapping with id, plugin and config") {
        CHECK(parse_error("pipeline: p\nstages:\n  - just text\n") ==
              "p.yaml:3:5: stage #1 must be a mapping (id, plugin, config), got a scalar");
        CHECK(parse_error("pipeline: p\nstages:\n  - {id: a, plugin: x}\n  - [id, b]\n") ==
              "p.yaml:4:5: stage #2 must be a mapping (id, plugin, config), got a sequence");
        CHECK(parse_error("pipeline: p\nstages:\n  - id: a\n    plugin: x\n    confg: {}\n") ==
              "p.yaml:5:5: unknown key 'confg' in stage #1 (known: id, plugin, config, retry, breaker, "
              "poison_limit)");
        CHECK(parse_error("pipeline: p\nstages:\n  - id: a\n    plugin: x\n    id: b\n") ==
              "p.yaml:5:5: duplicate key 'id' (first at p.yaml:3:5)");
        CHECK(parse_error("pipeline: p\nstages:\n  - plugin: x\n") == "p.yaml:3:5: stage #1 has no 'id'");
        CHECK(parse_error("pipeline: p\nstages:\n  - id: a\n") == "p.yaml:3:5: stage 'a' has no 'plugin'");
        CHECK(parse_error("pipeline: p\nstages:\n  - id: a\n    plugin: {x: 1}\n") ==
              "p.yaml:4:5: 'plugin' must be a string, got a mapping");
        CHECK(parse_error("pipeline: p\nstages:\n  - id: a b\n    plugin: x\n") ==
              "p.yaml:3:9: invalid stage id 'a b': use letters, digits, '_', '.' and '-'");
        CHECK(parse_error("pipeline: p\nstages:\n  - id: \"a\\nb\"\n    plugin: x\n") ==
              "p.yaml:3:9: invalid stage id 'a\\x0ab': use letters, digits, '_', '.' and '-'");
    }

    TEST_CASE("duplicate stage ids") {
        CHECK(parse_error("stages:\n"
                          "  - id: src\n"
                          "    plugin: a\n"
                          "  - id: src\n"
                          "    plugin: b\n"
                          "pipeline: p\n") == "p.yaml:4:5: duplicate stage id 'src' (first at p.yaml:2:5)");
    }

    TEST_CASE("'config' is a mapping; null means empty") {
        CHECK(parse_error("pipeline: p\nstages:\n  - id: a\n    plugin: x\n    config: [a, b]\n") ==
              "p.yaml:5:5: 'config' of stage 'a' must be a mapping, got a sequence");
        CHECK(parse_error("pipeline: p\nstages:\n  - id: a\n    plugin: x\n    config: text\n") ==
              "p.yaml:5:5: 'config' of stage 'a' must be a mapping, got a scalar");
        CHECK(parse_error(
                  "pipeline: p\nstages:\n  - id: a\n    plugin: x\n    config:\n      k: 1\n      k: 2\n") ==
              "p.yaml:7:7: duplicate key 'k' (first at p.yaml:6:7)");
        PipelineDef def = parse_ok("pipeline: p\nstages:\n  - id: a\n    plugin: x\n    config:\n");
        CHECK(def.stages[0].config.empty());
        CHECK((def.stages[0].config_mark.line == 5 && def.stages[0].config_mark.col == 5));
    }

    TEST_CASE("settings are checked") {
        auto with = [](const std::string &settings) {
            return parse_error("pipeline: p\nsettings:\n" + settings + "stages: [{id: a, plugin: x}]\n");
        };
        CHECK(with("  batch_size: 0\n") ==
              "p.yaml:3:15: settings.batch_size must be an integer from 1 to 1048576, got '0'");
        CHECK(with("  batch_size: 1048577\n") ==
              "p.yaml:3:15: settings.batch_size must be an integer from 1 to 1048576, got '1048577'");
        CHECK(with("  queue_capacity: 4097\n") ==
              "p.yaml:3:19: settings.queue_capacity must be an integer from 1 to 4096, got '4097'");
        CHECK(with("  poll_wait_ms: -5\n") ==
              "p.yaml:3:17: settings.poll_wait_ms must be an integer from 1 to 4294967295, got '-5'");
        CHECK(with("  shutdown_timeout_ms: 1.5\n") ==
              "p.yaml:3:24: settings.shutdown_timeout_ms must be an integer from 1 to 4294967295, got '1.5'");
        CHECK(with("  batch_size: [1]\n") ==
              "p.yaml:3:3: settings.batch_size must be an integer from 1 to 1048576, got a sequence");
        CHECK(with("  batch: 1\n") ==
              "p.yaml:3:3: unknown settings key 'batch' (known: batch_size, batch_max_events, "
              "batch_max_bytes, batch_max_ms, queue_capacity, queue_max_bytes, memory_soft_limit_bytes, "
              "shutdown_timeout_ms, poll_wait_ms, when_owned, owner_lease_ms, retry, breaker, "
              "poison_limit)");
        CHECK(parse_error("pipeline: p\nsettings: [batch_size]\nstages: [{id: a, plugin: x}]\n") ==
              "p.yaml:2:1: 'settings' must be a mapping, got a sequence");
        PipelineDef def = parse_ok("pipeline: p\nsettings: {batch_size: 1048576, queue_capacity: 4096}\n"
                                   "stages: [{id: a, plugin: x}]\n");
        CHECK(def.settings.batch_size == 1048576);
        CHECK(def.settings.queue_capacity == 4096);
    }

    TEST_CASE("plugin_path resolves relative folders against the file's folder") {
        const std::string stages = "stages: [{id: a, plugin: x}]\n";
        CHECK(parse_ok("pipeline: p\nplugin_path: [./plugins, ../lib/cdcflow, /opt/x, plain]\n" + stages,
                       no_env, "/etc/cdcflow/p.yaml")
                  .plugin_path == std::vector<std::string>{"/etc/cdcflow/plugins", "/etc/lib/cdcflow",
                                                           "/opt/x", "/etc/cdcflow/plain"});
        CHECK(parse_ok("pipeline: p\nplugin_path: ./plugins\n" + stages).plugin_path ==
              std::vector<std::string>{"plugins"});
        CHECK(parse_ok("pipeline: p\nplugin_path: ../x\n" + stages, no_env, "conf/p.yaml").plugin_path ==
              std::vector<std::string>{"x"});
        CHECK(parse_ok("pipeline: p\nplugin_path: ${ROOT}/plugins\n" + stages, env_of({{"ROOT", "/srv"}}),
                       "a/p.yaml")
                  .plugin_path == std::vector<std::string>{"/srv/plugins"});
        CHECK(parse_error("pipeline: p\nplugin_path: [a, [b]]\n" + stages) ==
              "p.yaml:2:18: 'plugin_path' entries must be strings, got a sequence");
        CHECK(parse_error("pipeline: p\nplugin_path: {a: b}\n" + stages) ==
              "p.yaml:2:1: 'plugin_path' must be a string or a list of strings, got a mapping");
        CHECK(parse_error("pipeline: p\nplugin_path: ['']\n" + stages) ==
              "p.yaml:2:15: 'plugin_path' entries must not be empty");
    }

    TEST_CASE("invalid YAML is reported with its position") {
        CHECK(parse_error("pipeline: p\nstages: [a\n") ==
              "p.yaml:3:1: invalid YAML: end of sequence flow not found");
        CHECK(parse_error("pipeline: p\n  bad: indentation\n") ==
              "p.yaml:2:6: invalid YAML: illegal map value");
        CHECK(parse_error("a: *nowhere\n") ==
              "p.yaml:1:4: invalid YAML: the referenced anchor is not defined");
    }
}

TEST_SUITE("pipeline: interpolation") {
    TEST_CASE("interpolate") {
        EnvLookup env = env_of({{"A", "alpha"}, {"EMPTY", ""}});
        auto ok = [&](const std::string &text) {
            Result<std::string> r = interpolate(text, env);
            INFO(r.status().message());
            REQUIRE(r.ok());
            return r.value();
        };
        auto error = [&](const std::string &text) {
            Result<std::string> r = interpolate(text, env);
            REQUIRE_FALSE(r.ok());
            return r.status().message();
        };
        CHECK(ok("${A}") == "alpha");
        CHECK(ok("x-${A}-${A}-y") == "x-alpha-alpha-y");
        CHECK(ok("${A:-default}") == "alpha");
        CHECK(ok("${UNSET:-default}") == "default");
        CHECK(ok("${EMPTY:-default}") == "default");
        CHECK(ok("${UNSET:-}") == "");
        CHECK(ok("${EMPTY}") == "");
        CHECK(ok("${UNSET:-a:-b c}") == "a:-b c");
        CHECK(ok("$$") == "$");
        CHECK(ok("$${A}") == "${A}");
        CHECK(ok("$$$") == "$$");
        CHECK(ok("cost: 5$ or $5, a$b") == "cost: 5$ or $5, a$b");
        CHECK(ok("$") == "$");
        CHECK(ok("") == "");
        CHECK(error("${UNSET}") ==
              "undefined environment variable 'UNSET' (use ${UNSET:-default} to give a default)");
        CHECK(error("a ${A") == "unterminated '${' (missing '}')");
        CHECK(error("${}") == "invalid environment variable name '' in '${}'");
        CHECK(error("${1X}") == "invalid environment variable name '1X' in '${1X}'");
        CHECK(error("${A-b}") == "invalid environment variable name 'A-b' in '${A-b}'");
    }

    TEST_CASE("process_env reads the environment") {
        ::setenv("CDCFLOW_TEST_PIPELINE_VAR", "from env", 1);
        ::unsetenv("CDCFLOW_TEST_PIPELINE_UNSET");
        EnvLookup env = process_env();
        CHECK(env("CDCFLOW_TEST_PIPELINE_VAR") == std::optional<std::string>("from env"));
        CHECK(env("CDCFLOW_TEST_PIPELINE_UNSET") == std::nullopt);
    }

    TEST_CASE("scalars in the file are interpolated") {
        EnvLookup env = env_of({{"DB", "/data/accounts.db"},
                                {"NAME", "accounts"},
                                {"EMPTY", ""},
                                {"N", "7"},
                                {"PLUGIN", "outbox_source"},
                                {"K", "key"}});
        PipelineDef def = parse_ok("pipeline: ${NAME}\n"
                                   "settings: {batch_size: '${N}'}\n"
                                   "stages:\n"
                                   "  - id: ${NAME}.in\n"
                                   "    plugin: ${PLUGIN}\n"
                                   "    config:\n"
                                   "      database: ${DB}\n"
                                   "      fallback: ${UNSET:-demo.db}\n"
                                   "      empty: ${EMPTY:-was empty}\n"
                                   "      price: $$5\n"
                                   "      quoted: '${N}'\n"
                                   "      nested:\n"
                                   "        ${K}:\n"
                                   "          - ${N}\n"
                                   "          - '${N}'\n"
                                   "          - deep: ${UNSET:-x}\n",
                                   env);
        CHECK(def.name == "accounts");
        CHECK(def.settings.batch_size == 7);
        const StageDef &s = def.stages[0];
        CHECK(s.id == "accounts.in");
        CHECK(s.plugin == "outbox_source");
        CHECK(s.config.at("database").scalar == "/data/accounts.db");
        CHECK(s.config.at("fallback").scalar == "demo.db");
        CHECK(s.config.at("empty").scalar == "was empty");
        CHECK(s.config.at("price").scalar == "$5");
        CHECK(s.config.at("quoted").scalar == "7");
        CHECK(s.config.at("quoted").json == "\"7\"");
        CHECK_FALSE(s.config.at("nested").is_scalar);
        // Plain scalars keep their YAML type after interpolation; quoted ones stay strings.
        CHECK(s.config.at("nested").json == R"({"key":[7,"7",{"deep":"x"}]})");
    }

    TEST_CASE("an undefined variable is an error at the scalar's position") {
        const std::string msg =
            "undefined environment variable 'NOPE' (use ${NOPE:-default} to give a default)";
        CHECK(parse_error("pipeline: p\n"
                          "stages:\n"
                          "  - id: a\n"
                          "    plugin: x\n"
                          "    config:\n"
                          "      database: ${NOPE}\n") == "p.yaml:6:17: " + msg);
        CHECK(parse_error("pipeline: p\n"
                          "stages:\n"
                          "  - id: a\n"
                          "    plugin: x\n"
                          "    config:\n"
                          "      rules: {a: [1, 'x ${NOPE}']}\n") == "p.yaml:6:22: " + msg);
        CHECK(parse_error("pipeline: ${NOPE}\n") == "p.yaml:1:11: " + msg);
        CHECK(parse_error("pipeline: p\nstages:\n  - id: a\n    plugin: x\n    config: {k: '${oops'}\n") ==
              "p.yaml:5:17: unterminated '${' (missing '}')");
    }
}

TEST_SUITE("pipeline: config values") {
    TEST_CASE("scalars become JSON by their YAML type; quoted ones stay strings") {
        PipelineDef def = parse_ok("pipeline: p\n"
                                   "stages:\n"
                                   "  - id: a\n"
                                   "    plugin: x\n"
                                   "    config:\n"
                                   "      int: -42\n"
                                   "      plus: +7\n"
                                   "      float: 1.50\n"
                                   "      exp: 1e3\n"
                                   "      yes_word: yes\n"
                                   "      bool: True\n"
                                   "      quoted: \"42\"\n"
                                   "      single: 'true'\n"
                                   "      tagged: !!str 5\n"
                                   "      inf: .inf\n"
                                   "      block: |\n"
                                   "        line [1\n"
                                   "        line 2\n"
                                   "      empty:\n"
                                   "      tilde: ~\n"
                                   "      list: [1, 2.5, a, \"b\", null, false, {k: v}]\n"
                                   "      map:\n"
                                   "        x: 1\n"
                                   "        y: [a]\n"
                                   "        'z': \"q\\\"uote\"\n");
        const auto &c = def.stages[0].config;
        auto json = [&](const char *k) { return c.at(k).json; };
        CHECK(json("int") == "-42");
        CHECK(json("plus") == "7");
        CHECK(json("float") == "1.5");
        CHECK(json("exp") == "1000.0");
        CHECK(json("yes_word") == "\"yes\"");
        CHECK(json("bool") == "true");
        CHECK(json("quoted") == "\"42\"");
        CHECK(json("single") == "\"true\"");
        CHECK(json("tagged") == "\"5\"");
        CHECK(json("inf") == "\".inf\"");
        CHECK(json("block") == "\"line [1\\nline 2\\n\"");
        CHECK(json("empty") == "null");
        CHECK(json("tilde") == "null");
        CHECK(json("list") == R"([1,2.5,"a","b",null,false,{"k":"v"}])");
        CHECK(json("map") == R"({"x":1,"y":["a"],"z":"q\"uote"})");
        CHECK(c.at("float").scalar == "1.50");
        CHECK(c.at("block").scalar == "line [1\nline 2\n");
        CHECK(c.at("int").is_scalar);
        CHECK_FALSE(c.at("empty").is_scalar);
        CHECK_FALSE(c.at("map").is_scalar);
        // A null value has no position of its own: it takes the key's.
        CHECK(c.at("empty").location == "p.yaml:19:7");
        CHECK(c.at("map").location == "p.yaml:23:9");
        for (const auto &[key, v] : c)
            CHECK(nlohmann::json::accept(v.json));
    }

    TEST_CASE("escapes in double-quoted strings, and CRLF line ends") {
        PipelineDef def = parse_ok("pipeline: p\r\n"
                                   "stages:\r\n"
                                   "  - id: a\r\n"
                                   "    plugin: x\r\n"
                                   "    config:\r\n"
                                   "      esc: \"a\\tb\\x01\\u00e9\\0\\\\\\\"\"\r\n"
                                   "      list: [\"\\x7f\"]\r\n");
        const auto &c = def.stages[0].config;
        CHECK(c.at("esc").scalar == std::string("a\tb\x01\xc3\xa9\0\\\"", 9));
        CHECK(c.at("esc").json == "\"a\\tb\\u0001\xc3\xa9\\u0000\\\\\\\"\"");
        CHECK(c.at("list").json == "[\"\x7f\"]");
        CHECK(c.at("esc").location == "p.yaml:6:12");
    }

    TEST_CASE("invalid UTF-8 from the environment becomes U+FFFD in JSON") {
        PipelineDef def = parse_ok("pipeline: p\nstages:\n  - id: a\n    plugin: x\n    config:\n"
                                   "      k: ${BAD}\n      l: ['${BAD}']\n",
                                   env_of({{"BAD", "a\xff"}}));
        const auto &c = def.stages[0].config;
        CHECK(c.at("k").scalar == "a\xff");
        CHECK(c.at("k").json == "\"a\xEF\xBF\xBD\"");
        CHECK(c.at("l").json == "[\"a\xEF\xBF\xBD\"]");
    }

    TEST_CASE("duplicate keys inside a JSON value are refused") {
        CHECK(parse_error(
                  "pipeline: p\nstages:\n  - id: a\n    plugin: x\n    config:\n      r: {a: 1, a: 2}\n") ==
              "p.yaml:6:17: duplicate key 'a' (first at p.yaml:6:11)");
        CHECK(
            parse_error("pipeline: p\nstages:\n  - id: a\n    plugin: x\n    config:\n      r: {[1]: 2}\n") ==
            "p.yaml:6:11: a mapping key must be a string, got a sequence");
    }

    // config_location_at (ABI 6): each node nested in a mapping or sequence
    // value, by JSON Pointer.
    TEST_CASE("nested positions: mappings, sequences, flow style, escaped pointers") {
        PipelineDef def = parse_ok("pipeline: p\n"
                                   "stages:\n"
                                   "  - id: a\n"
                                   "    plugin: x\n"
                                   "    config:\n"
                                   "      model:\n"                           // 6
                                   "        events:\n"                        // 7
                                   "          Opened:\n"                      // 8
                                   "            when:\n"                      // 9
                                   "              - {field: amount, gt: 0}\n" // 10
                                   "              - field: owner\n"           // 11
                                   "                empty:\n"                 // 12
                                   "        'a/b': 1\n"                       // 13
                                   "        \"t~\": [x, [y, z]]\n"            // 14
                                   "        '': root-empty\n"                 // 15
                                   "      flat: [1, 2]\n"                     // 16
                                   "      scalar: 5\n");                      // 17
        const auto &c = def.stages[0].config;
        const ConfigValue &m = c.at("model");
        REQUIRE(m.nested);
        CHECK(std::string(m.location_at("")) == "p.yaml:7:9");
        CHECK(std::string(m.location_at("/events")) == "p.yaml:8:11");
        CHECK(std::string(m.location_at("/events/Opened")) == "p.yaml:9:13");
        CHECK(std::string(m.location_at("/events/Opened/when")) == "p.yaml:10:15");
        CHECK(std::string(m.location_at("/events/Opened/when/0")) == "p.yaml:10:17");
        CHECK(std::string(m.location_at("/events/Opened/when/0/field")) == "p.yaml:10:25");
        CHECK(std::string(m.location_at("/events/Opened/when/0/gt")) == "p.yaml:10:37");
        CHECK(std::string(m.location_at("/events/Opened/when/1")) == "p.yaml:11:17");
        CHECK(std::string(m.location_at("/events/Opened/when/1/field")) == "p.yaml:11:24");
        // An empty value has no position of its own: its key's.
        CHECK(std::string(m.location_at("/events/Opened/when/1/empty")) == "p.yaml:12:17");
        // RFC 6901 escapes: ~1 is '/', ~0 is '~'; "/" names the key "".
        CHECK(std::string(m.location_at("/a~1b")) == "p.yaml:13:16");
        CHECK(std::string(m.location_at("/t~0")) == "p.yaml:14:15");
        CHECK(std::string(m.location_at("/t~0/1/0")) == "p.yaml:14:20");
        CHECK(std::string(m.location_at("/t~0/1/1")) == "p.yaml:14:23");
        CHECK(std::string(m.location_at("/")) == "p.yaml:15:13");
        // Naming nothing: the deepest node on the way.
        CHECK(std::string(m.location_at("/events/Opened/when/2")) == "p.yaml:10:15");    // past the end
        CHECK(std::string(m.location_at("/events/Opened/when/-")) == "p.yaml:10:15");    // "-"
        CHECK(std::string(m.location_at("/events/Opened/when/01")) == "p.yaml:10:15");   // a leading zero
        CHECK(std::string(m.location_at("/events/Opened/when/0/lt")) == "p.yaml:10:17"); // a missing key
        CHECK(std::string(m.location_at("/events/Closed/when/0")) == "p.yaml:8:11");
        CHECK(std::string(m.location_at("/events/Opened/when/0/field/x")) == "p.yaml:10:25"); // into a scalar
        CHECK(std::string(m.location_at("/a/b")) == "p.yaml:7:9");   // unescaped '/': two tokens
        CHECK(std::string(m.location_at("/t~2")) == "p.yaml:7:9");   // a malformed escape
        CHECK(std::string(m.location_at("events")) == "p.yaml:7:9"); // not a pointer
        CHECK(std::string(c.at("flat").location_at("/1")) == "p.yaml:16:17");
        // A scalar nests nothing: every pointer answers the value's own position.
        CHECK_FALSE(c.at("scalar").nested);
        CHECK(std::string(c.at("scalar").location_at("/x")) == "p.yaml:17:15");
        // Answers are cached: the same pointer gives the same storage.
        CHECK(m.location_at("/events") == m.location_at("/events"));
    }

    TEST_CASE("nested positions: anchors and aliases answer where the anchored text is") {
        PipelineDef def = parse_ok("pipeline: p\n"
                                   "stages:\n"
                                   "  - id: a\n"
                                   "    plugin: x\n"
                                   "    config:\n"
                                   "      m:\n"
                                   "        base: &b {x: 1, y: [2]}\n" // 7
                                   "        copy: *b\n"                // 8
                                   "        list: [*b, 3]\n");         // 9
        const ConfigValue &m = def.stages[0].config.at("m");
        CHECK(std::string(m.location_at("/base/y/0")) == "p.yaml:7:29");
        CHECK(std::string(m.location_at("/copy/y/0")) == "p.yaml:7:29");
        CHECK(std::string(m.location_at("/list/0/x")) == "p.yaml:7:22");
        CHECK(std::string(m.location_at("/list/1")) == "p.yaml:9:20");
    }

    TEST_CASE("nested positions: interpolated scalars are where their ${VAR} is") {
        PipelineDef def = parse_ok("pipeline: p\nstages:\n  - id: a\n    plugin: x\n    config:\n"
                                   "      m: {a: '${A}', b: [\"${B:-2}\"]}\n",
                                   env_of({{"A", "[1, {x: 2}]"}}));
        const ConfigValue &m = def.stages[0].config.at("m");
        CHECK(m.json == R"({"a":"[1, {x: 2}]","b":["2"]})");
        CHECK(std::string(m.location_at("/a")) == "p.yaml:6:14");
        CHECK(std::string(m.location_at("/a/0")) == "p.yaml:6:14"); // a string: nothing inside
        CHECK(std::string(m.location_at("/b/0")) == "p.yaml:6:26");
    }
}

TEST_SUITE("pipeline: check against plugin schemas") {
    TEST_CASE("config_location_at through the host API and the SDK: set, default, unset, older host") {
        std::string text = pipeline_with("      name: n\n"
                                         "      count: 3\n");
        const std::string pass = "    plugin: pass\n";
        text.insert(text.find(pass) + pass.size(), "    config:\n      rules:\n        - {a: [1, 2]}\n");
        PipelineDef def = check_ok(text);
        const StageDef &src = def.stages[0], &mid = def.stages[1];
        const PluginSchema *src_schema = find_schema("src"), *mid_schema = find_schema("pass");
        cdcflow_config in_cfg{&src, src_schema}, mid_cfg{&mid, mid_schema};
        const cdcflow_host_api *api = host_api();
        CHECK(std::string(api->config_location_at(&mid_cfg, "rules", "/0/a/1")) == "p.yaml:12:19");
        CHECK(std::string(api->config_location_at(&mid_cfg, "rules", "")) == "p.yaml:12:9");
        CHECK(std::string(api->config_location_at(&mid_cfg, "rules", nullptr)) == "p.yaml:12:9");
        // A default is not in the file: the stage's config mapping (what config_location answers).
        CHECK(std::string(api->config_location_at(&in_cfg, "extra", "/a/1")) == "p.yaml:6:7");
        CHECK(std::string(api->config_location(&in_cfg, "extra")) == "p.yaml:6:7");
        // A scalar: its own position, whatever the pointer.
        CHECK(std::string(api->config_location_at(&in_cfg, "count", "/x")) == "p.yaml:7:14");
        // No value (unset, no default) and undeclared keys: "".
        CHECK(std::string(api->config_location_at(&in_cfg, "ratio", "/x")).empty());
        CHECK(std::string(api->config_location_at(&in_cfg, "nope", "")).empty());

        cdcflow::Config sdk(api, &mid_cfg);
        CHECK(sdk.location_at("rules", "/0/a/0") == "p.yaml:12:16");
        // A host older than ABI 6 (its table ends before config_location_at): location(key).
        cdcflow_host_api old = *api;
        old.struct_size = offsetof(cdcflow_host_api, config_location_at);
        cdcflow::Config sdk_old(&old, &mid_cfg);
        CHECK(sdk_old.location_at("rules", "/0/a/0") == "p.yaml:12:9");
    }

    TEST_CASE(
        "pipeline_setting through the host API and the SDK: the file's value, a default, none, older host") {
        PipelineDef def = parse_ok("pipeline: p\nsettings:\n  owner_lease_ms: 2500\n  queue_max_bytes: 1GiB\n"
                                   "stages:\n  - id: a\n    plugin: x\n");
        cdcflow_ctx ctx{};
        ctx.settings = &def.settings;
        const cdcflow_host_api *api = host_api();
        int64_t v = -1;
        CHECK(api->pipeline_setting(&ctx, "owner_lease_ms", &v) == CDCFLOW_OK);
        CHECK(v == 2500);
        CHECK(api->pipeline_setting(&ctx, "queue_max_bytes", &v) == CDCFLOW_OK);
        CHECK(v == int64_t{1} << 30);
        CHECK(api->pipeline_setting(&ctx, "batch_max_events", &v) == CDCFLOW_OK);
        CHECK(v == Settings{}.batch_max_events); // not in the file: the default
        // Not an integer setting, or no setting at all: NOT_FOUND, out untouched.
        v = -1;
        CHECK(api->pipeline_setting(&ctx, "when_owned", &v) == CDCFLOW_ERR_NOT_FOUND);
        CHECK(api->pipeline_setting(&ctx, "owner_lease", &v) == CDCFLOW_ERR_NOT_FOUND);
        CHECK(v == -1);
        CHECK(api->pipeline_setting(&ctx, nullptr, &v) == CDCFLOW_ERR_INTERNAL);
        // A stage made outside a runtime (no settings): the defaults.
        cdcflow_ctx bare{};
        CHECK(cdcflow::Context(api, &bare).pipeline_setting("owner_lease_ms") == Settings{}.owner_lease_ms);

        cdcflow::Context sdk(api, &ctx);
        CHECK(sdk.pipeline_setting("owner_lease_ms") == 2500);
        CHECK_FALSE(sdk.pipeline_setting("retry"));
        // A host older than ABI 7 (its table ends before pipeline_setting): nothing.
        cdcflow_host_api old = *api;
        old.struct_size = offsetof(cdcflow_host_api, pipeline_setting);
        CHECK_FALSE(cdcflow::Context(&old, &ctx).pipeline_setting("owner_lease_ms"));
    }

    TEST_CASE("pipeline_setting answers every integer key the settings mapping knows") {
        // The parser's list of known keys (its message for an unknown one):
        // a key added there and forgotten in integer_setting fails here.
        const std::string err =
            parse_error("pipeline: p\nsettings:\n  nope: 1\nstages:\n  - id: a\n    plugin: x\n");
        const size_t from = err.find("(known: ");
        REQUIRE(from != std::string::npos);
        std::string list = err.substr(from + 8, err.find(')', from) - from - 8);
        int integer_keys = 0;
        for (size_t at = 0; at <= list.size();) {
            size_t end = list.find(", ", at);
            if (end == std::string::npos) end = list.size();
            const std::string key = list.substr(at, end - at);
            at = end + 2;
            if (key == "when_owned" || key == "retry" || key == "breaker") continue; // not integers
            CHECK_MESSAGE(integer_setting(Settings{}, key).has_value(), key);
            ++integer_keys;
        }
        CHECK(integer_keys == 11);
    }

    TEST_CASE("a valid pipeline: typed values and defaults") {
        PipelineDef def = check_ok(pipeline_with("      name: accounts\n"
                                                 "      ratio: 0.25\n"
                                                 "      enabled: Yes\n"));
        const auto &c = def.stages[0].config;
        CHECK(c.at("name").type == CDCFLOW_CONFIG_STRING);
        CHECK(c.at("name").json == "\"accounts\"");
        CHECK(c.at("ratio").type == CDCFLOW_CONFIG_DOUBLE);
        CHECK(c.at("ratio").d == 0.25);
        CHECK(c.at("ratio").json == "0.25");
        CHECK(c.at("enabled").type == CDCFLOW_CONFIG_BOOL);
        CHECK(c.at("enabled").b);
        CHECK(c.at("enabled").json == "true");
        CHECK_FALSE(c.at("enabled").from_default);

        const ConfigValue &count = c.at("count");
        CHECK(count.from_default);
        CHECK(count.type == CDCFLOW_CONFIG_INT);
        CHECK(count.i == 10);
        CHECK(count.json == "10");
        CHECK(count.location == "p.yaml:6:7");
        const ConfigValue &extra = c.at("extra");
        CHECK(extra.from_default);
        CHECK(extra.type == CDCFLOW_CONFIG_JSON);
        CHECK(extra.json == R"({"a":[1,"x","2"]})");
        CHECK(c.at("label").scalar == "");
        CHECK(c.at("label").json == "\"\"");
        CHECK(c.at("glob").scalar == "*");
        CHECK(c.at("glob").json == "\"*\"");
        CHECK(c.at("tmpl").scalar == "${HOME}/x");
        CHECK(c.count("rules") == 0);
        CHECK(def.stages[1].config.empty()); // no default, not required: absent
    }

    TEST_CASE("typed values") {
        auto value = [](const std::string &key, const std::string &yaml) {
            PipelineDef def = check_ok(pipeline_with((key == "name" ? "" : "      name: n\n") +
                                                     ("      " + key) + ": " + yaml + "\n"));
            return def.stages[0].config.at(key);
        };
        CHECK(value("count", "42").i == 42);
        CHECK(value("count", "'42'").i == 42);
        CHECK(value("count", "-5").i == -5);
        CHECK(value("count", "+5").json == "5");
        CHECK(value("count", "9223372036854775807").i == INT64_MAX);
        CHECK(value("count", "-9223372036854775808").i == INT64_MIN);
        CHECK(value("ratio", "3").json == "3.0");
        CHECK(value("ratio", "-1.5e2").d == -150.0);
        for (const char *t : {"true", "TRUE", "yes", "On"})
            CHECK(value("enabled", t).b);
        for (const char *f : {"false", "No", "OFF"}) {
            CHECK_FALSE(value("enabled", f).b);
            CHECK(value("enabled", f).json == "false");
        }
        CHECK(value("name", "123").json == "\"123\"");
        CHECK(value("name", "yes").scalar == "yes");
        CHECK(value("extra", "42").json == "42");
        CHECK(value("extra", "'42'").json == "\"42\"");
        CHECK(value("extra", "[1, {a: b}]").json == R"([1,{"a":"b"}])");
        CHECK(value("extra", "").json == "null");
    }

    TEST_CASE("wrong types") {
        const std::string of = " for plugin 'src' must be ";
        CHECK(check_error(pipeline_with("      name: n\n      count: abc\n")) ==
              "p.yaml:7:14: config key 'count'" + of + "an integer (int64), got 'abc'");
        CHECK(check_error(pipeline_with("      name: n\n      count: 1.5\n")) ==
              "p.yaml:7:14: config key 'count'" + of + "an integer (int64), got '1.5'");
        CHECK(check_error(pipeline_with("      name: n\n      count: 9223372036854775808\n")) ==
              "p.yaml:7:14: config key 'count'" + of + "an integer (int64), got '9223372036854775808'");
        CHECK(check_error(pipeline_with("      name: n\n      count: [1]\n")) ==
              "p.yaml:7:14: config key 'count'" + of + "an integer (int64), got a sequence");
        CHECK(check_error(pipeline_with("      name: n\n      enabled: 3\n")) ==
              "p.yaml:7:16: config key 'enabled'" + of + "a boolean (true/false, yes/no, on/off), got '3'");
        CHECK(check_error(pipeline_with("      name: {a: b}\n")) ==
              "p.yaml:6:13: config key 'name'" + of + "a string, got a mapping");
        CHECK(check_error(pipeline_with("      name:\n")) ==
              "p.yaml:6:7: config key 'name'" + of + "a string, got null");
        CHECK(check_error(pipeline_with("      name: n\n      ratio: fast\n")) ==
              "p.yaml:7:14: config key 'ratio'" + of + "a number, got 'fast'");
        CHECK(check_error(pipeline_with("      name: n\n      ratio: .nan\n")) ==
              "p.yaml:7:14: config key 'ratio'" + of + "a number, got '.nan'");
    }

    TEST_CASE("unknown config keys") {
        CHECK(check_error(pipeline_with("      name: n\n      colour: red\n")) ==
              "p.yaml:7:7: unknown config key 'colour' for plugin 'src' "
              "(known: count, name, ratio, enabled, extra, label, glob, tmpl)");
        CHECK(check_error("pipeline: p\nstages:\n  - {id: a, plugin: src, config: {name: n}}\n"
                          "  - {id: b, plugin: sink, config: {x: 1}}\n") ==
              "p.yaml:4:36: unknown config key 'x' for plugin 'sink' (known: none)");
    }

    TEST_CASE("missing required keys") {
        // At the config mapping, or at the stage when there is no config.
        CHECK(check_error(pipeline_with("      count: 5\n")) ==
              "p.yaml:6:7: missing required config key 'name' for plugin 'src' (stage 'in')");
        CHECK(check_error(
                  "pipeline: p\nstages:\n  - id: in\n    plugin: src\n  - id: out\n    plugin: sink\n") ==
              "p.yaml:3:5: missing required config key 'name' for plugin 'src' (stage 'in')");
    }

    TEST_CASE("unknown plugins") {
        CHECK(check_error(
                  "pipeline: p\nstages:\n  - id: in\n    plugin: nope\n  - id: out\n    plugin: sink\n") ==
              "p.yaml:4:13: unknown plugin 'nope' (stage 'in')");
    }

    TEST_CASE("a plugin's bad default is reported") {
        CHECK(check_error("pipeline: p\nstages:\n  - {id: a, plugin: src, config: {name: n}}\n"
                          "  - {id: b, plugin: bad_default}\n") ==
              "p.yaml:4:5: the default of config key 'n' for plugin 'bad_default' must be an integer "
              "(int64), got 'many'");
    }

    TEST_CASE("shape: a source first, a sink last, transforms between") {
        const std::string src = "  - {id: s, plugin: src, config: {name: n}}\n";
        const std::string mid = "  - {id: t, plugin: pass}\n";
        const std::string sink = "  - {id: k, plugin: sink}\n";
        auto error = [](const std::string &stages) { return check_error("pipeline: p\nstages:\n" + stages); };
        const std::string middle =
            " cannot be in the middle: only transforms go between the source and the sink";
        CHECK(error(mid + src + sink) ==
              "p.yaml:3:5: stage 't' (plugin 'pass', a transform) cannot be first: "
              "a pipeline starts with a source");
        CHECK(error(sink + "  - {id: k2, plugin: sink}\n") ==
              "p.yaml:3:5: stage 'k' (plugin 'sink', a sink) cannot be first: "
              "a pipeline starts with a source");
        CHECK(error(src + mid) == "p.yaml:4:5: stage 't' (plugin 'pass', a transform) cannot be last: "
                                  "a pipeline ends with a sink");
        CHECK(error(src) ==
              "p.yaml:3:5: stage 's' (plugin 'src', a source) cannot be last: a pipeline ends with a sink");
        CHECK(error(src + "  - {id: s2, plugin: src, config: {name: n}}\n" + sink) ==
              "p.yaml:4:5: stage 's2' (plugin 'src', a source)" + middle);
        CHECK(error(src + "  - {id: k0, plugin: sink}\n" + sink) ==
              "p.yaml:4:5: stage 'k0' (plugin 'sink', a sink)" + middle);
        CHECK(check_ok("pipeline: p\nstages:\n" + src + sink).stages.size() == 2);
        CHECK(check_ok("pipeline: p\nstages:\n" + src + mid + "  - {id: t2, plugin: pass}\n" + sink)
                  .stages.size() == 4);
    }

    TEST_CASE("the first error in the file is reported") {
        CHECK(check_error("pipeline: p\n"
                          "stages:\n"
                          "  - id: in\n"
                          "    plugin: src\n"
                          "    config:\n"
                          "      name: n\n"
                          "      zzz: 1\n"
                          "      count: x\n"
                          "  - id: out\n"
                          "    plugin: nope\n") ==
              "p.yaml:7:7: unknown config key 'zzz' for plugin 'src' "
              "(known: count, name, ratio, enabled, extra, label, glob, tmpl)");
    }

    TEST_CASE("checking twice gives the same result") {
        PipelineDef def = check_ok(pipeline_with("      name: n\n      count: 3\n"));
        REQUIRE(check_pipeline(def, find_schema).ok());
        CHECK(def.stages[0].config.at("count").i == 3);
        CHECK(def.stages[0].config.at("enabled").json == "false");
    }
}

TEST_SUITE("pipeline: hostile input") {
    TEST_CASE("100,000 nested flow sequences") {
        CHECK(parse_error(std::string(100000, '[')) == "p.yaml:1:200: nesting deeper than 200 levels");
        CHECK(parse_error("pipeline: p\nstages: " + std::string(100000, '[') + std::string(100000, ']')) ==
              "p.yaml:2:208: nesting deeper than 200 levels");
    }

    TEST_CASE("100,000 nested flow mappings") {
        CHECK(parse_error(repeat("{a: ", 100000)) == "p.yaml:1:797: nesting deeper than 200 levels");
    }

    TEST_CASE("100,000 compact sequence indicators on one line") {
        CHECK(parse_error(repeat("- ", 100000) + "x\n") == "p.yaml:1:401: nesting deeper than 200 levels");
        CHECK(parse_error(repeat("? ", 100000) + "x\n") == "p.yaml:1:401: nesting deeper than 200 levels");
    }

    TEST_CASE("deeply indented block mappings") {
        std::string text;
        for (int i = 0; i < 2000; ++i)
            text += std::string(i, ' ') + "k:\n";
        CHECK(parse_error(text) == "p.yaml:201:201: nesting deeper than 200 levels");
        text.clear();
        for (int i = 0; i < 2000; ++i)
            text += std::string(i, ' ') + "-\n";
        CHECK(parse_error(text) == "p.yaml:201:201: nesting deeper than 200 levels");
    }

    TEST_CASE("reasonable nesting, and brackets in strings and comments, are fine") {
        std::string rules = repeat("[", 150) + "1" + repeat("]", 150);
        PipelineDef def = parse_ok("pipeline: p  # [[[[[[\n"
                                   "stages:\n"
                                   "  - id: a\n"
                                   "    plugin: x\n"
                                   "    config:\n"
                                   "      rules: " +
                                   rules +
                                   "\n"
                                   "      text: '" +
                                   repeat("[", 300) +
                                   "'\n"
                                   "      dq: \"" +
                                   repeat("{", 300) +
                                   "\"\n"
                                   "      block: |\n"
                                   "        " +
                                   repeat("[", 300) + "\n");
        CHECK(def.stages[0].config.at("rules").json == rules);
    }

    TEST_CASE("an alias that contains itself") {
        CHECK(parse_error("pipeline: p\nstages:\n  - id: a\n    plugin: x\n    config: {k: &a [1, *a]}\n") ==
              "p.yaml:5:21: nesting deeper than 200 levels");
    }

    TEST_CASE("billion laughs: 10 levels of 10 aliases") {
        std::string text = "pipeline: p\nstages:\n  - id: a\n    plugin: x\n    config:\n"
                           "      l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n";
        for (int i = 1; i < 10; ++i) {
            text += "      l" + std::to_string(i) + ": &l" + std::to_string(i) + " [";
            for (int j = 0; j < 10; ++j)
                text += (j ? ", *l" : "*l") + std::to_string(i - 1);
            text += "]\n";
        }
        std::string msg = parse_error(text);
        CHECK(msg.starts_with("p.yaml:6:"));
        CHECK(msg.ends_with(": document too large (alias expansion?)"));
        // Unused, the aliases cost nothing: yaml-cpp shares them.
        text.replace(text.find("config:"), 7, "bogus:");
        CHECK(parse_error(text) == "p.yaml:5:5: unknown key 'bogus' in stage #1 (known: id, plugin, config, "
                                   "retry, breaker, poison_limit)");
    }

    TEST_CASE("one large string aliased many times") {
        std::string text = "pipeline: p\nstages:\n  - id: a\n    plugin: x\n    config:\n"
                           "      big: &big '" +
                           std::string(2 << 20, 'x') + "'\n      copies: [";
        for (int i = 0; i < 10; ++i)
            text += "*big, ";
        text += "*big]\n";
        CHECK(parse_error(text) == "p.yaml:6:12: document too large (alias expansion?)");
    }

    TEST_CASE("too many nodes for yaml-cpp") {
        CHECK(parse_error("pipeline: p\nstages: [" + repeat("a,", 300000) + "a]\n") ==
              "p.yaml:1:1: document too large (more than 200000 YAML indicators)");
    }

    TEST_CASE("binary input") {
        std::mt19937 rng(20240611);
        std::string bytes(100 * 1024, '\0');
        for (char &c : bytes)
            c = static_cast<char>(rng() & 0xFF);
        std::string msg = parse_error(bytes);
        CHECK(msg.starts_with("p.yaml:1:"));
        CHECK(msg.ends_with("(a binary file?)"));
        CHECK(parse_error(std::string("pipeline: a\0b\n", 14)) ==
              "p.yaml:1:12: control character 0x00 (a binary file?)");
        CHECK(parse_error("pipeline: p\nstages: \x01\n") ==
              "p.yaml:2:9: control character 0x01 (a binary file?)");
        CHECK(parse_error("pipeline: \xff\xfe\n") == "p.yaml:1:11: invalid UTF-8 byte 0xFF (a binary file?)");
        CHECK(parse_error("pipeline: caf\xc3\n") == "p.yaml:1:14: invalid UTF-8 byte 0xC3 (a binary file?)");
        CHECK(parse_error("pipeline: \xed\xa0\x80\n") ==
              "p.yaml:1:11: invalid UTF-8 byte 0xED (a binary file?)");
        // UTF-8 text, and a byte order mark, are fine.
        const std::string name = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
        CHECK(parse_ok("\xef\xbb\xbfpipeline: " + name + "\nstages: [{id: a, plugin: x}]\n").name == name);
    }

    TEST_CASE("a file over 4 MiB") {
        std::string text = "pipeline: p\n# " + std::string(5 << 20, 'x') + "\n";
        CHECK(parse_error(text) == "p.yaml:1:1: file too large (the limit is 4 MiB)");
        TempDir dir;
        std::string path = dir.write("big.yaml", text);
        Result<PipelineDef> r = load_pipeline_file(path, no_env);
        REQUIRE_FALSE(r.ok());
        CHECK(r.status().message() == path + ":1:1: file too large (the limit is 4 MiB)");
    }
}

TEST_SUITE("pipeline: files") {
    TEST_CASE("load_pipeline_file") {
        TempDir dir;
        std::string path =
            dir.write("p.yaml", "pipeline: p\nplugin_path: plugins\nstages: [{id: a, plugin: x}]\n");
        Result<PipelineDef> r = load_pipeline_file(path, no_env);
        REQUIRE(r.ok());
        CHECK(r->file == path);
        CHECK(r->plugin_path == std::vector<std::string>{(dir.path / "plugins").string()});

        std::string bad = dir.write("bad.yaml", "pipeline: p\nstages: 5\n");
        r = load_pipeline_file(bad, no_env);
        REQUIRE_FALSE(r.ok());
        CHECK(r.status().message() == bad + ":2:1: 'stages' must be a sequence, got a scalar");
    }

    TEST_CASE("unreadable files") {
        Result<PipelineDef> r = load_pipeline_file("/nonexistent/p.yaml", no_env);
        REQUIRE_FALSE(r.ok());
        CHECK(r.status().message() ==
              "cannot read pipeline file '/nonexistent/p.yaml': No such file or directory");
        TempDir dir;
        r = load_pipeline_file(dir.path.string(), no_env);
        REQUIRE_FALSE(r.ok());
        CHECK(r.status().message() ==
              "cannot read pipeline file '" + dir.path.string() + "': Is a directory");
    }

    TEST_CASE("where") {
        CHECK(where("a/p.yaml", Mark{3, 14}) == "a/p.yaml:3:14");
    }
}

TEST_CASE("loader messages: user text is quoted the project's one way (invalid UTF-8 escaped, never raw)") {
    using cdcflow::host::quote;
    CHECK(quote("plain") == "'plain'");
    CHECK(quote("caf\xc3\xa9") == "'caf\xc3\xa9'"); // valid UTF-8 stays readable
    CHECK(quote("a\xff"
                "b") == "'a\\xffb'"); // an environment variable's stray byte
    CHECK(quote("it's") == "'it\\'s'");
    CHECK(quote(std::string(300, 'x')).size() < 210); // cut, with "..." inside the quotes
}
