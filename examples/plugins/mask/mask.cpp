// mask: the complete example transform of the plugin author's guide
// (plugin-authoring.md, "Rewriting an event" and "Statuses"). It
//  - replaces the value of one payload field (e.g. a person's name) with a
//    fixed text, by writing a new payload into the batch's memory, and
//  - drops (filters out) events whose type is on a list: they are not applied,
//    not dead-lettered, counted in cdcflow_events_total{outcome="dropped"}, and the checkpoint still
//    moves past them.
//
// It parses payloads it does not trust: place it after a validator stage,
// which bounds payload size and nesting depth, when producers are not yours.
//
// Build it out of tree against an installed cdcflow (see meson.build):
//     meson setup build && ninja -C build       # makes build/mask.so
#include <cdcflow/sdk.hpp>

#include <nlohmann/json.hpp>

#include <set>
#include <string>

// The stage's config, declared once: each key is bound to the member it
// fills, and the host enforces the declaration (types, required keys,
// choices, unknown keys with "did you mean") before the constructor runs,
// with the file's line and column. Defaults are written as in the pipeline
// file: *** is the string ***.
struct MaskSettings {
    std::string field;
    std::string mask = "***";
    cdcflow::Json drop_types; // a YAML list, handed over as JSON text
    static constexpr const char *kOnUnparsable[] = {"reject", "drop", nullptr};
    std::string on_unparsable = "reject";

    using S = MaskSettings;
    static constexpr auto kParams = cdcflow::params(
        cdcflow::param("field", &S::field)
            .required()
            .describe("top-level payload field whose value is masked"),
        cdcflow::param("mask", &S::mask).defaults_to("***").describe("the text that replaces the value"),
        cdcflow::param("drop_types", &S::drop_types)
            .defaults_to("[]")
            .describe("event types to drop (filter out), a list of strings"),
        cdcflow::param("on_unparsable", &S::on_unparsable)
            .choices(kOnUnparsable)
            .defaults_to("reject")
            .describe("a payload that is not a JSON object: reject (a dead letter) or drop (filter it out); "
                      "never passed on unmasked"));
};

class Mask : public cdcflow::Transform {
public:
    static constexpr const char *kName = "mask"; // the file must be mask.so
    static constexpr const char *kDescription = "masks a payload field; drops events of listed types";
    static constexpr const char *kVersion = "1.0.0";
    using Settings = MaskSettings;

    // The constructor checks what the declaration cannot say (a non-empty
    // field, a list of strings). It must not change anything outside the
    // process: `cdcflow validate` constructs stages too.
    Mask(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx)
        : Transform(ctx), field_(cfg.field), mask_(cfg.mask), drop_unparsable_(cfg.on_unparsable == "drop"),
          masked_(ctx.counter("masked", "payloads whose field was masked")) {
        if (field_.empty()) cfg.fail(&Settings::field, "must not be empty");
        // JSON keys arrive as JSON text, whatever YAML form the user wrote.
        auto types = nlohmann::json::parse(cfg.drop_types.text, nullptr, false);
        if (!types.is_array()) cfg.fail(&Settings::drop_types, "must be a list of event types");
        for (const auto &t : types) {
            if (!t.is_string()) cfg.fail(&Settings::drop_types, "must be a list of strings, got " + t.dump());
            drop_types_.insert(t.get<std::string>());
        }
    }

    // Called on the stage's own thread, one batch at a time.
    void process(cdcflow::Batch &batch) override {
        for (uint32_t i = 0; i < batch.size(); ++i) {
            cdcflow_event &e = batch[i];
            // A duplicate, a dead letter or an event dropped upstream keeps
            // its verdict and its original bytes (a dead letter must show
            // what was actually received).
            if (e.status != CDCFLOW_EVENT_OK) continue;
            if (drop_types_.count(std::string(cdcflow::sv(e.event_type)))) {
                batch.drop(i); // counted by the host as outcome "dropped": do not count it again
                continue;
            }
            mask_payload(batch, i);
        }
    }

private:
    void mask_payload(cdcflow::Batch &batch, uint32_t i) {
        cdcflow_event &e = batch[i];
        // The payload is the bytes the source read: JSON only if the producer
        // wrote JSON (a validator stage placed before this one guarantees a
        // JSON object; without one, anything can arrive).
        auto doc = nlohmann::ordered_json::parse(cdcflow::sv(e.payload), nullptr, false);
        if (doc.is_discarded() || !doc.is_object()) {
            // Passing it on unmasked could leak the field: make it a dead
            // letter (the sink stores it with this stage and reason), or
            // filter it out when the pipeline says so.
            if (drop_unparsable_)
                batch.drop(i);
            else
                batch.reject(i, "payload is not a JSON object, so '" + field_ + "' cannot be masked");
            return;
        }
        auto it = doc.find(field_);
        if (it == doc.end()) return; // nothing to mask
        *it = mask_;
        // The new payload lives in the batch's memory (it must outlive this
        // call: later stages read it); the old bytes stay where they are.
        // copy() throws cdcflow::Error(CDCFLOW_ERR_NOMEM) if memory ran out.
        e.payload = batch.copy(doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
        masked_.add();
    }

    std::string field_;
    std::string mask_;
    bool drop_unparsable_;
    std::set<std::string> drop_types_;
    cdcflow::Metric masked_; // cdcflow_plugin_mask_masked_total in /metrics
};

CDCFLOW_PLUGIN(Mask)
