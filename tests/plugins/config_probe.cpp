// config_probe: a test transform that declares one config key of every kind
// the SDK offers (choices, int and double bounds, a narrow integer member,
// bool, JSON, optional, secrets, a deprecated key), passes events on
// untouched, and logs at start what it read, so that the end-to-end tests see
// the declaration from both sides: what the host enforces and shows, and
// what reaches the members. A secret's value is never logged, only its length.
// `fail_at` (a JSON Pointer into `extra`) makes create fail with the nested
// value's file:line:col, the way a plugin reports a mistake inside its own
// declarations (config_location_at, ABI 6).
#include <cdcflow/sdk.hpp>

#include <cstdint>
#include <optional>
#include <string>

struct ProbeSettings {
    std::string mode;
    int64_t level = 0;
    double ratio = 0;
    bool loud = false;
    cdcflow::Json extra;
    std::string token;
    int64_t pin = 0;
    std::optional<int64_t> limit;
    uint16_t port = 0;
    std::optional<std::string> fail_at;

    using S = ProbeSettings;
    static constexpr const char *kModes[] = {"fast", "safe", nullptr};
    static constexpr auto kParams = cdcflow::params(
        cdcflow::param("mode", &S::mode).defaults_to("safe").choices(kModes).describe("how to run"),
        cdcflow::param("level", &S::level).defaults_to("0").min("-5").max("5").describe("a bounded integer"),
        cdcflow::param("ratio", &S::ratio).defaults_to("0.5").min("0").max("1").describe("a bounded double"),
        cdcflow::param("loud", &S::loud).defaults_to("false").describe("a boolean"),
        cdcflow::param("extra", &S::extra).defaults_to("[]").describe("any YAML value, as JSON"),
        cdcflow::param("token", &S::token)
            .secret()
            .defaults_to("probe-default-token")
            .describe("a secret string"),
        cdcflow::param("pin", &S::pin).secret().min("1000").max("9999").describe("a secret, bounded integer"),
        cdcflow::param("limit", &S::limit).min("1").describe("optional: unset unless the file sets it"),
        cdcflow::param("port", &S::port)
            .defaults_to("8080")
            .min("1")
            .max("65535")
            .describe("a 16-bit member"),
        cdcflow::param("fail_at", &S::fail_at)
            .describe("a JSON Pointer into extra: create fails there (tests nested positions)"),
        cdcflow::deprecated<S>("old_knob", CDCFLOW_CONFIG_INT)
            .describe("the probe no longer has a knob; remove this key"));
};

class ConfigProbe : public cdcflow::Transform {
public:
#ifdef CONFIG_PROBE_DASHED
    // The same plugin under a name whose metric families would be
    // config_probe's (the host refuses the two in one pipeline).
    static constexpr const char *kName = "config-probe";
#else
    static constexpr const char *kName = "config_probe";
#endif
    static constexpr const char *kDescription =
        "test transform: declares every kind of config key, logs what it read";
    using Settings = ProbeSettings;

    ConfigProbe(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx) : Transform(ctx) {
        if (cfg.fail_at) {
            std::string loc = cfg.location_at(&Settings::extra, cfg.fail_at->c_str());
            throw cdcflow::Error(CDCFLOW_ERR_CONFIG, (loc.empty() ? "" : loc + ": ") + "extra" +
                                                         *cfg.fail_at + ": refused on purpose (fail_at)");
        }
        ctx.info("read: mode=" + cfg.mode + " level=" + std::to_string(cfg.level) +
                 " ratio=" + std::to_string(cfg.ratio) + " loud=" + (cfg.loud ? "true" : "false") +
                 " extra=" + cfg.extra.text + " token_length=" + std::to_string(cfg.token.size()) +
                 " pin_set=" + (cfg.pin ? "yes" : "no") + " limit=" +
                 (cfg.limit ? std::to_string(*cfg.limit) : "unset") + " port=" + std::to_string(cfg.port));
    }

    void process(cdcflow::Batch &) override {}
};

CDCFLOW_PLUGIN(ConfigProbe)
