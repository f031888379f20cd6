// Declared config: reading a plugin's declaration (ABI 3 config_params, ABI 1
// config_keys), the host's enforcement before create (types, bounds, choices,
// required keys, unknown keys with a suggestion, secrets never echoed,
// deprecated keys), config_lookup, and the SDK's typed declaration.
// Every error is asserted with its exact text and position.
#include "config_schema.hpp"
#include "host_api.hpp"
#include "pipeline.hpp"
#include "plugin_harness.hpp"

#include <cdcflow/sdk.hpp>

#include <doctest/doctest.h>

#include <cstddef>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

using namespace cdcflow::host;
using cdcflow::Result;
using cdcflow::Status;

namespace {

cdcflow_config_param param(const char *name, cdcflow_config_type type, const char *def = nullptr,
                           uint32_t flags = 0, const char *min = nullptr, const char *max = nullptr,
                           const char *const *choices = nullptr) {
    cdcflow_config_param p{};
    p.struct_size = sizeof p;
    p.flags = flags;
    p.name = name;
    p.type = type;
    p.default_value = def;
    p.description = "";
    p.min = min;
    p.max = max;
    p.choices = choices;
    return p;
}

cdcflow_plugin descriptor(const char *name, cdcflow_kind kind, const cdcflow_config_param *params,
                          uint32_t n) {
    cdcflow_plugin d{};
    d.abi_version = CDCFLOW_ABI_VERSION;
    d.struct_size = sizeof d;
    d.name = name;
    d.kind = kind;
    d.config_params = params;
    d.config_param_count = n;
    return d;
}

PluginSchema schema_ok(const cdcflow_plugin &d) {
    Result<PluginSchema> r = schema_of(d);
    INFO(r.status().message());
    REQUIRE(r.ok());
    return r.value();
}

std::string schema_error(std::vector<cdcflow_config_param> params) {
    cdcflow_plugin d =
        descriptor("p", CDCFLOW_KIND_SINK, params.data(), static_cast<uint32_t>(params.size()));
    Result<PluginSchema> r = schema_of(d);
    REQUIRE_FALSE(r.ok());
    return r.status().message();
}

const char *const kModes[] = {"fast", "safe", nullptr};

// A source declaring one key of each kind the checks care about, and a plain sink.
const PluginSchema &src_schema() {
    static const cdcflow_config_param params[] = {
        param("level", CDCFLOW_CONFIG_INT, "0", 0, "-5", "5"),
        param("ratio", CDCFLOW_CONFIG_DOUBLE, "0.5", 0, "0", "1"),
        param("above", CDCFLOW_CONFIG_INT, nullptr, 0, "10"),
        param("mode", CDCFLOW_CONFIG_STRING, "safe", 0, nullptr, nullptr, kModes),
        param("name", CDCFLOW_CONFIG_STRING, nullptr, CDCFLOW_PARAM_REQUIRED),
        param("label", CDCFLOW_CONFIG_STRING, "\"quoted\""),
        param("pin", CDCFLOW_CONFIG_INT, nullptr, CDCFLOW_PARAM_SECRET, "1000", "9999"),
        param("token", CDCFLOW_CONFIG_STRING, nullptr, CDCFLOW_PARAM_SECRET, nullptr, nullptr, kModes),
        param("old_knob", CDCFLOW_CONFIG_INT, nullptr, CDCFLOW_PARAM_DEPRECATED),
    };
    static const cdcflow_plugin d = descriptor("src", CDCFLOW_KIND_SOURCE, params, std::size(params));
    static const PluginSchema s = schema_ok(d);
    return s;
}

const PluginSchema *find(const std::string &name) {
    static const PluginSchema sink{"sink", CDCFLOW_KIND_SINK, {}};
    if (name == "src") return &src_schema();
    return name == "sink" ? &sink : nullptr;
}

EnvLookup no_env() {
    return [](const std::string &) { return std::optional<std::string>(); };
}

// The source's config lines (6 spaces in) start at line 6.
std::string pipeline_with(const std::string &lines) {
    return "pipeline: p\nstages:\n  - id: in\n    plugin: src\n    config:\n" + lines +
           "  - id: out\n    plugin: sink\n";
}

PipelineDef checked(const std::string &lines) {
    Result<PipelineDef> r = parse_pipeline(pipeline_with(lines), "p.yaml", no_env());
    INFO(r.status().message());
    REQUIRE(r.ok());
    PipelineDef def = std::move(r.value());
    Status st = check_pipeline(def, find);
    INFO(st.message());
    REQUIRE(st.ok());
    return def;
}

std::string check_error(const std::string &lines) {
    Result<PipelineDef> r = parse_pipeline(pipeline_with(lines), "p.yaml", no_env());
    INFO(r.status().message());
    REQUIRE(r.ok());
    Status st = check_pipeline(r.value(), find);
    REQUIRE_FALSE(st.ok());
    CHECK(st.message().find('\n') == std::string::npos);
    return st.message();
}

const std::string of = " for plugin 'src' ";

} // namespace

TEST_SUITE("config schema: enforcement before create") {
    TEST_CASE("int and double bounds are inclusive") {
        CHECK(checked("      name: n\n      level: -5\n").stages[0].config.at("level").i == -5);
        CHECK(checked("      name: n\n      level: 5\n      ratio: 1\n").stages[0].config.at("ratio").d ==
              1.0);
        CHECK(checked("      name: n\n      ratio: 0\n      above: 10\n").stages[0].config.at("above").i ==
              10);
        CHECK(check_error("      name: n\n      level: 6\n") ==
              "p.yaml:7:14: config key 'level'" + of + "must be from -5 to 5, got '6'");
        CHECK(check_error("      name: n\n      level: -6\n") ==
              "p.yaml:7:14: config key 'level'" + of + "must be from -5 to 5, got '-6'");
        CHECK(check_error("      name: n\n      ratio: 1.0001\n") ==
              "p.yaml:7:14: config key 'ratio'" + of + "must be from 0 to 1, got '1.0001'");
        CHECK(check_error("      name: n\n      above: 9\n") ==
              "p.yaml:7:14: config key 'above'" + of + "must be at least 10, got '9'");
        // The type comes first: a value that is not a number says so.
        CHECK(check_error("      name: n\n      level: high\n") ==
              "p.yaml:7:14: config key 'level'" + of + "must be an integer (int64), got 'high'");
    }

    TEST_CASE("choices, with the closest one suggested") {
        CHECK(checked("      name: n\n      mode: fast\n").stages[0].config.at("mode").scalar == "fast");
        CHECK(check_error("      name: n\n      mode: fsat\n") ==
              "p.yaml:7:13: config key 'mode'" + of +
                  "must be one of 'fast', 'safe', got 'fsat' (did you mean 'fast'?)");
        CHECK(check_error("      name: n\n      mode: turbo\n") ==
              "p.yaml:7:13: config key 'mode'" + of + "must be one of 'fast', 'safe', got 'turbo'");
    }

    TEST_CASE("required keys, and defaults as the user writes them") {
        CHECK(check_error("      level: 1\n") ==
              "p.yaml:6:7: missing required config key 'name' for plugin 'src' (stage 'in')");
        PipelineDef def = checked("      name: n\n");
        const auto &cfg = def.stages[0].config;
        CHECK(cfg.at("mode").scalar == "safe");
        CHECK(cfg.at("mode").from_default);
        // ABI 3: a string default is the string itself, quotes and all.
        CHECK(cfg.at("label").scalar == "\"quoted\"");
        CHECK(cfg.at("ratio").d == 0.5);
        CHECK(cfg.count("above") == 0); // no default, not set
    }

    TEST_CASE("an unknown key names the closest declared one") {
        CHECK(check_error("      name: n\n      levle: 1\n") ==
              "p.yaml:7:7: unknown config key 'levle' for plugin 'src': did you mean 'level'?");
        CHECK(check_error("      name: n\n      rati: 1\n") ==
              "p.yaml:7:7: unknown config key 'rati' for plugin 'src': did you mean 'ratio'?");
        // Nothing close: the declared keys (deprecated ones are not offered).
        CHECK(check_error("      name: n\n      colour: red\n") ==
              "p.yaml:7:7: unknown config key 'colour' for plugin 'src' "
              "(known: level, ratio, above, mode, name, label, pin, token)");
        CHECK(check_error("      name: n\n      old_knb: 1\n") ==
              "p.yaml:7:7: unknown config key 'old_knb' for plugin 'src' "
              "(known: level, ratio, above, mode, name, label, pin, token)");
    }

    TEST_CASE("a secret's value is never echoed") {
        const std::string hidden = "(secret: not shown)";
        CHECK(check_error("      name: n\n      pin: 12345\n") ==
              "p.yaml:7:12: config key 'pin'" + of + "must be from 1000 to 9999, got " + hidden);
        CHECK(check_error("      name: n\n      pin: hunter2\n") ==
              "p.yaml:7:12: config key 'pin'" + of + "must be an integer (int64), got " + hidden);
        // Choices of a secret: no value, and no suggestion derived from it.
        CHECK(check_error("      name: n\n      token: fsat\n") ==
              "p.yaml:7:14: config key 'token'" + of + "must be one of 'fast', 'safe', got " + hidden);
        CHECK(check_error("      name: n\n      token: [hunter2]\n") ==
              "p.yaml:7:14: config key 'token'" + of + "must be a string, got " + hidden);
        CHECK(checked("      name: n\n      pin: 1234\n").stages[0].config.at("pin").i == 1234);
    }

    TEST_CASE("a deprecated key loads, with a warning at its position") {
        PipelineDef def = checked("      name: n\n      old_knob: 3\n");
        REQUIRE(def.warnings.size() == 1);
        CHECK(def.warnings[0] == "p.yaml:7:7: stage 'in': config key 'old_knob' is deprecated");
        CHECK(checked("      name: n\n").warnings.empty());
        // Checking again does not repeat it.
        REQUIRE(check_pipeline(def, find).ok());
        CHECK(def.warnings.size() == 1);
    }

    TEST_CASE("ABI 1 config_keys still work, both default syntaxes included") {
        static const cdcflow_config_key keys[] = {
            {"table", CDCFLOW_CONFIG_STRING, "outbox", 0, "bare"},
            {"quoted", CDCFLOW_CONFIG_STRING, "\"seq\"", 0, "YAML-quoted"},
            {"n", CDCFLOW_CONFIG_INT, "10", 1, "required and defaulted"},
            {"bad", CDCFLOW_CONFIG_INT, "many", 0, "a bad default: reported per pipeline, as before"},
        };
        cdcflow_plugin d{};
        d.abi_version = 1;
        d.struct_size = offsetof(cdcflow_plugin, config_params); // an ABI 1 plugin's descriptor
        d.name = "v1";
        d.kind = CDCFLOW_KIND_SINK;
        d.config_keys = keys;
        d.config_key_count = 3;
        PluginSchema s = schema_ok(d);
        REQUIRE(s.keys.size() == 3);
        CHECK_FALSE(s.keys[0].literal_default);
        StageDef st;
        st.id = "k";
        st.plugin = "v1";
        st.config_mark = {3, 5};
        REQUIRE(check_stage_config("p.yaml", st, s, nullptr).ok());
        CHECK(st.config.at("table").scalar == "outbox");
        CHECK(st.config.at("quoted").scalar == "seq");
        CHECK(st.config.at("n").i == 10);

        d.config_key_count = 4;
        PluginSchema bad = schema_ok(d); // loads: an ABI 1 default is checked where it is used
        StageDef st2;
        st2.id = "k";
        st2.plugin = "v1";
        st2.config_mark = {3, 5};
        CHECK(check_stage_config("p.yaml", st2, bad, nullptr).message() ==
              "p.yaml:3:5: the default of config key 'bad' for plugin 'v1' must be an integer (int64), got "
              "'many'");
    }
}

TEST_SUITE("config schema: reading a declaration") {
    TEST_CASE("config_params are walked with their own struct_size as the stride") {
        // A plugin built against a later ABI whose cdcflow_config_param grew.
        struct Longer {
            cdcflow_config_param p;
            uint64_t appended;
        };
        Longer params[2] = {{param("a", CDCFLOW_CONFIG_INT, "1"), 7},
                            {param("b", CDCFLOW_CONFIG_BOOL, "true"), 8}};
        for (Longer &l : params)
            l.p.struct_size = sizeof(Longer);
        cdcflow_plugin d = descriptor("p", CDCFLOW_KIND_SINK, &params[0].p, 2);
        PluginSchema s = schema_ok(d);
        REQUIRE(s.keys.size() == 2);
        CHECK(s.keys[1].name == "b");
        CHECK(s.keys[1].type == CDCFLOW_CONFIG_BOOL);

        params[1].p.struct_size = sizeof(cdcflow_config_param);
        CHECK(schema_of(d).status().message() == "config_params[1] has struct_size " +
                                                     std::to_string(sizeof(cdcflow_config_param)) +
                                                     ", config_params[0] " + std::to_string(sizeof(Longer)));
        params[0].p.struct_size = 8;
        CHECK(schema_of(d).status().message() == "config_params[0] has a bad struct_size (8)");
        params[0].p.struct_size = 0;
        CHECK(schema_of(d).status().message() == "config_params[0] has a bad struct_size (0)");
        // Garbage as large as this would have the walk read far past the array
        // (config_params[1] at 1 MiB): refused before any element past [0] is read.
        params[0].p.struct_size = 1u << 20;
        CHECK(schema_of(d).status().message() == "config_params[0] has a bad struct_size (1048576)");
        d.config_params = nullptr;
        CHECK(schema_of(d).status().message() == "config_param_count without config_params");
    }

    TEST_CASE("config_params win over config_keys, and an older descriptor is not read past its end") {
        static const cdcflow_config_key keys[] = {{"old", CDCFLOW_CONFIG_INT, "1", 0, ""}};
        cdcflow_config_param params[] = {param("new", CDCFLOW_CONFIG_INT, "1")};
        cdcflow_plugin d = descriptor("p", CDCFLOW_KIND_SINK, params, 1);
        d.config_keys = keys;
        d.config_key_count = 1;
        CHECK(schema_ok(d).keys.at(0).name == "new");
        d.struct_size = offsetof(cdcflow_plugin, config_params); // says it has no config_params
        CHECK(schema_ok(d).keys.at(0).name == "old");
        d.struct_size = sizeof d;
        d.abi_version = 2; // an ABI 2 plugin has no config_params, whatever its memory holds
        CHECK(schema_ok(d).keys.at(0).name == "old");
    }

    TEST_CASE("a malformed declaration is refused with one line") {
        const char *const empty[] = {nullptr};
        CHECK(schema_error({param("a", CDCFLOW_CONFIG_STRING, nullptr, 0, "1")}) ==
              "config key 'a' has bounds, but only int and double keys take them");
        CHECK(schema_error({param("a", CDCFLOW_CONFIG_INT, nullptr, 0, "one")}) ==
              "config key 'a' has a min that is not an integer: 'one'");
        CHECK(schema_error({param("a", CDCFLOW_CONFIG_DOUBLE, nullptr, 0, "2", "1")}) ==
              "config key 'a' has min 2 above max 1");
        CHECK(schema_error({param("a", CDCFLOW_CONFIG_INT, "0", 0, "1", "5")}) ==
              "config key 'a': its default must be from 1 to 5, got '0'");
        CHECK(schema_error({param("a", CDCFLOW_CONFIG_STRING, "slow", 0, nullptr, nullptr, kModes)}) ==
              "config key 'a': its default must be one of 'fast', 'safe', got 'slow'");
        CHECK(schema_error({param("a", CDCFLOW_CONFIG_INT, nullptr, 0, nullptr, nullptr, kModes)}) ==
              "config key 'a' has choices, but only string keys take them");
        CHECK(schema_error({param("a", CDCFLOW_CONFIG_STRING, nullptr, 0, nullptr, nullptr, empty)}) ==
              "config key 'a' has an empty choices list");
        CHECK(schema_error({param("a", CDCFLOW_CONFIG_INT), param("a", CDCFLOW_CONFIG_INT)}) ==
              "config key 'a' declared twice");
        CHECK(schema_error({param("", CDCFLOW_CONFIG_INT)}) == "config key 0 has no name");
        CHECK(schema_error({param("a", static_cast<cdcflow_config_type>(99))}) ==
              "config key 'a' has an unknown type");
        // The same from an ABI 1 plugin (a C plugin may hold any integer there).
        cdcflow_config_key v1{"b", CDCFLOW_CONFIG_INT, nullptr, 0, ""};
        const uint32_t raw = 99;
        static_assert(sizeof raw == sizeof v1.type);
        std::memcpy(&v1.type, &raw, sizeof raw);
        cdcflow_plugin d1{};
        d1.abi_version = 1;
        d1.struct_size = offsetof(cdcflow_plugin, config_params);
        d1.name = "v1";
        d1.kind = CDCFLOW_KIND_SINK;
        d1.config_keys = &v1;
        d1.config_key_count = 1;
        CHECK(schema_of(d1).status().message() == "config key 'b' has an unknown type");
        CHECK(schema_error({param("a", CDCFLOW_CONFIG_INT, nullptr,
                                  CDCFLOW_PARAM_REQUIRED | CDCFLOW_PARAM_DEPRECATED)}) ==
              "config key 'a' is both required and deprecated");
        // The plugin's own secret default is its declaration: the message may show it.
        CHECK(schema_error({param("a", CDCFLOW_CONFIG_INT, "x", CDCFLOW_PARAM_SECRET)}) ==
              "config key 'a': its default must be an integer (int64), got 'x'");
    }

    TEST_CASE("edit distance and the closest candidate") {
        CHECK(edit_distance("", "abc") == 3);
        CHECK(edit_distance("kitten", "sitting") == 3);
        CHECK(edit_distance("fsat", "fast") == 1); // a swap is one edit
        CHECK(closest("tabel", {"table", "seq_column"}) == std::optional<std::string>("table"));
        CHECK(closest("x", {"y"}) == std::nullopt); // the whole word differs
        CHECK(closest("colour", {"count", "name"}) == std::nullopt);
        // Hostile words: empty, one byte, invalid UTF-8, very long; no candidates.
        CHECK(closest("", {"a", "ab"}) == std::nullopt);
        CHECK(closest("\xff", {"a"}) == std::nullopt);
        CHECK(closest("lev\xffl", {"level"}) == std::optional<std::string>("level"));
        CHECK(closest(std::string(100000, 'k'), {"kkk"}) == std::nullopt);
        CHECK(closest("level", {}) == std::nullopt);
    }
}

namespace {

// The host side of one stage, its config checked against a declaration.
struct Checked {
    PluginSchema schema;
    StageDef st;
    cdcflow_config cfg{};
    Checked(const PluginSchema &s, std::map<std::string, std::string> values) : schema(s) {
        st.id = "s";
        st.plugin = s.name;
        for (auto &[k, v] : values) {
            ConfigValue cv;
            cv.scalar = v;
            cv.location = "t.yaml:2:3";
            st.config[k] = cv;
        }
        Status ok = check_stage_config("t.yaml", st, schema, nullptr);
        INFO(ok.message());
        REQUIRE(ok.ok());
        cfg.def = &st;
        cfg.schema = &schema;
    }
};

} // namespace

TEST_CASE("config_lookup: FOUND, UNSET, WRONG_TYPE, UNDECLARED; the v1 getters refuse undeclared keys") {
    Checked c(src_schema(), {{"name", "n"}, {"level", "3"}});
    const cdcflow_host_api *host = host_api();
    REQUIRE(CDCFLOW_HAS_FIELD(host, cdcflow_host_api, config_lookup));
    cdcflow_config_value v{};
    v.struct_size = sizeof v;
    CHECK(host->config_lookup(&c.cfg, "level", CDCFLOW_CONFIG_INT, &v) == CDCFLOW_CONFIG_FOUND);
    CHECK(v.i == 3);
    CHECK(host->config_lookup(&c.cfg, "ratio", CDCFLOW_CONFIG_DOUBLE, &v) == CDCFLOW_CONFIG_FOUND);
    CHECK(v.d == 0.5); // the default
    CHECK(host->config_lookup(&c.cfg, "name", CDCFLOW_CONFIG_STRING, &v) == CDCFLOW_CONFIG_FOUND);
    CHECK(cdcflow::sv(v.text) == "n");
    CHECK(host->config_lookup(&c.cfg, "above", CDCFLOW_CONFIG_INT, &v) == CDCFLOW_CONFIG_UNSET);
    CHECK(host->config_lookup(&c.cfg, "level", CDCFLOW_CONFIG_STRING, &v) == CDCFLOW_CONFIG_WRONG_TYPE);
    CHECK(host->config_lookup(&c.cfg, "above", CDCFLOW_CONFIG_DOUBLE, &v) == CDCFLOW_CONFIG_WRONG_TYPE);
    CHECK(host->config_lookup(&c.cfg, "nope", CDCFLOW_CONFIG_INT, &v) == CDCFLOW_CONFIG_UNDECLARED);
    // A caller whose value struct is too short for the asked member gets no write past its end.
    cdcflow_config_value tiny{};
    tiny.struct_size = offsetof(cdcflow_config_value, i);
    tiny.i = 42;
    CHECK(host->config_lookup(&c.cfg, "level", CDCFLOW_CONFIG_INT, &tiny) == CDCFLOW_CONFIG_WRONG_TYPE);
    CHECK(tiny.i == 42);

    // The v1 getters: a value in the StageDef that the plugin did not declare is not handed out.
    ConfigValue stray;
    stray.scalar = "x";
    stray.type = CDCFLOW_CONFIG_STRING;
    c.st.config["stray"] = stray;
    cdcflow_str s{};
    CHECK(host->config_get_string(&c.cfg, "stray", &s) == CDCFLOW_ERR_NOT_FOUND);
    CHECK(host->config_lookup(&c.cfg, "stray", CDCFLOW_CONFIG_STRING, &v) == CDCFLOW_CONFIG_UNDECLARED);
    int64_t i = 0;
    CHECK(host->config_get_int(&c.cfg, "level", &i) == CDCFLOW_OK);
    CHECK(i == 3);
    CHECK(host->config_get_int(&c.cfg, "above", &i) == CDCFLOW_ERR_NOT_FOUND);
}

namespace {

struct ProbeSettings {
    std::string mode;
    int64_t level = 0;
    double ratio = 0;
    bool loud = false;
    cdcflow::Json extra;
    std::optional<int64_t> limit = 99;
    uint8_t small = 0;
    uint8_t hidden = 0;
    std::string untouched = "kept";

    using S = ProbeSettings;
    static constexpr const char *kChoices[] = {"fast", "safe", nullptr};
    static constexpr auto kParams = cdcflow::params(
        cdcflow::param("mode", &S::mode).defaults_to("safe").choices(kChoices).describe("how"),
        cdcflow::param("level", &S::level).min("-5").max("5").required(),
        cdcflow::param("ratio", &S::ratio).defaults_to("0.25"), cdcflow::param("loud", &S::loud),
        cdcflow::param("extra", &S::extra).defaults_to("{a: [1]}"), cdcflow::param("limit", &S::limit),
        cdcflow::param("small", &S::small).defaults_to("7"), cdcflow::param("hidden", &S::hidden).secret(),
        cdcflow::param("untouched", &S::untouched).secret(),
        cdcflow::deprecated<S>("gone", CDCFLOW_CONFIG_INT).describe("why"));
};

class Probe : public cdcflow::Transform {
public:
    static constexpr const char *kName = "probe";
    static constexpr const char *kDescription = "probe";
    using Settings = ProbeSettings;
    Probe(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx) : Transform(ctx), seen(cfg) {
        if (cfg.level == 4) cfg.fail(&Settings::level, "four is unlucky");
    }
    void process(cdcflow::Batch &) override {}
    ProbeSettings seen;
};

// Key names are bound at compile time.
static_assert(cdcflow::detail::same_text(cdcflow::key_of(&ProbeSettings::ratio), "ratio"));
static_assert(cdcflow::key_of(&ProbeSettings::untouched) != nullptr);

} // namespace

TEST_CASE("SDK: one declaration gives the host's params and fills the members") {
    const cdcflow_plugin *d = cdcflow::detail::descriptor<Probe>();
    CHECK(d->abi_version == CDCFLOW_ABI_VERSION);
    CHECK(d->config_keys == nullptr);
    REQUIRE(d->config_param_count == 10);
    const cdcflow_config_param &mode = d->config_params[0];
    CHECK(mode.struct_size == sizeof(cdcflow_config_param));
    CHECK(std::string(mode.name) == "mode");
    CHECK(mode.type == CDCFLOW_CONFIG_STRING);
    CHECK(std::string(mode.default_value) == "safe");
    CHECK(std::string(mode.choices[1]) == "safe");
    CHECK(mode.choices[2] == nullptr);
    CHECK(d->config_params[1].flags == CDCFLOW_PARAM_REQUIRED);
    CHECK(std::string(d->config_params[1].min) == "-5");
    CHECK(d->config_params[4].type == CDCFLOW_CONFIG_JSON);
    CHECK(d->config_params[5].type == CDCFLOW_CONFIG_INT); // std::optional<int64_t>
    CHECK(d->config_params[8].flags == CDCFLOW_PARAM_SECRET);
    CHECK(d->config_params[9].flags == CDCFLOW_PARAM_DEPRECATED);

    // Through the host's checker and config_lookup, as `cdcflow run` does.
    cdcflow::test::StageHarness h("probe", cdcflow::test::declared<Probe>(), {{"level", -2}, {"loud", true}});
    auto p = cdcflow::test::make_stage<Probe>(h);
    CHECK(p->seen.mode == "safe");
    CHECK(p->seen.level == -2);
    CHECK(p->seen.ratio == 0.25);
    CHECK(p->seen.loud);
    CHECK(p->seen.extra.text == R"({"a":[1]})");
    CHECK(p->seen.limit == std::nullopt); // unset, no default: an optional is reset
    CHECK(p->seen.small == 7);
    CHECK(p->seen.untouched == "kept"); // unset, no default: a plain member keeps its initializer

    // The host refuses out-of-range values before the plugin exists.
    cdcflow::test::StageHarness out("probe", cdcflow::test::declared<Probe>(), {{"level", 9}});
    CHECK(out.refused() ==
          "test.yaml:1:1: config key 'level' for plugin 'probe' must be from -5 to 5, got '9'");
    // A narrow member gets a value it cannot hold: a config error, not a silent wrap.
    cdcflow::test::StageHarness wide("probe", cdcflow::test::declared<Probe>(),
                                     {{"level", 0}, {"small", 300}});
    try {
        cdcflow::test::make_stage<Probe>(wide);
        FAIL("no error");
    } catch (const cdcflow::Error &e) {
        CHECK(e.status() == CDCFLOW_ERR_CONFIG);
        CHECK(std::string(e.what()) ==
              "test.yaml:1:1: small: 300 does not fit (the plugin declares no bounds that keep it in range)");
    }
    // ... and a secret's value is not echoed there either.
    cdcflow::test::StageHarness secret("probe", cdcflow::test::declared<Probe>(),
                                       {{"level", 0}, {"hidden", 4242}});
    try {
        cdcflow::test::make_stage<Probe>(secret);
        FAIL("no error");
    } catch (const cdcflow::Error &e) {
        CHECK(std::string(e.what()) == "test.yaml:1:1: hidden: the value does not fit (the plugin declares "
                                       "no bounds that keep it in range)");
    }
    // fail() names the key by its member, at its position.
    cdcflow::test::StageHarness four("probe", cdcflow::test::declared<Probe>(), {{"level", 4}});
    try {
        cdcflow::test::make_stage<Probe>(four);
        FAIL("no error");
    } catch (const cdcflow::Error &e) {
        CHECK(std::string(e.what()) == "test.yaml:1:1: level: four is unlucky");
    }
}
