// validator: rejects events that break the declarative rules (cdcflow/rules.hpp)
// with a one-line reason; they travel on to the sink's dead-letter store.
// Header-only so the unit tests drive the class in-process; plugin.cpp
// holds the plugin's entry symbol.
#pragma once

#include <cdcflow/rules.hpp>
#include <cdcflow/sdk.hpp>

#include <optional>
#include <string>

namespace cdcflow::validator {

// The stage's config (cdcflow/sdk.hpp, "Declared config").
struct ValidatorSettings {
    cdcflow::Json rules;
    static constexpr auto kParams = cdcflow::params(
        cdcflow::param("rules", &ValidatorSettings::rules)
            .required()
            .describe("aggregate_types (optional), events: event type -> payload field rules (see "
                      "plugins/validator/README.md)"));
};

class ValidatorStage : public cdcflow::Transform {
public:
    static constexpr const char *kName = "validator";
    static constexpr const char *kDescription = "rejects events that break the declared event rules";
    static constexpr const char *kVersion = "1.0.0";
    using Settings = ValidatorSettings;

    ValidatorStage(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx) : Transform(ctx) {
        std::string err;
        auto rules = cdcflow::rules::RuleSet::parse(cfg.rules.text, &err);
        if (!rules) cfg.fail(&Settings::rules, err);
        validator_.emplace(*rules);
        // Rejections are counted by the host in event_reject (adding
        // to it here would count every rejection twice).
        checked_ = ctx.counter("checked", "events checked against the rules");
    }

    void process(cdcflow::Batch &batch) override {
        int64_t checked = 0;
        for (uint32_t i = 0; i < batch.size(); ++i) {
            const cdcflow_event &ev = batch[i];
            if (ev.status != CDCFLOW_EVENT_OK) continue; // already a duplicate or a dead letter
            ++checked;
            cdcflow::rules::EventView view{cdcflow::sv(ev.event_id), cdcflow::sv(ev.aggregate_type),
                                           cdcflow::sv(ev.aggregate_id), cdcflow::sv(ev.event_type),
                                           cdcflow::sv(ev.payload)};
            // The envelope and size first, then the payload as the host
            // parsed it once for the pipeline (the sink reads the same
            // parse); an older host: the validator parses it itself.
            cdcflow_payload parsed;
            bool ok = validator_->check_envelope(view, &reason_) &&
                      (batch.payload(i, parsed) ? validator_->check_payload(view, parsed, &reason_)
                                                : validator_->check(view, &reason_));
            if (!ok) batch.reject(i, reason_);
        }
        checked_.add(checked); // once per batch, not per event
    }

private:
    std::optional<cdcflow::rules::Validator> validator_;
    std::string reason_; // reused: no allocation per rejected event
    cdcflow::Metric checked_;
};

} // namespace cdcflow::validator
