// mask: the complete example transform of the plugin author's guide
// (plugin-authoring.md, "Rewriting an event" and "Statuses"). It
//  - replaces the value of one payload field (e.g. a person's name) with a
//    fixed text, by writing a new payload into the batch's memory, and
//  - drops (filters out) events whose type is on a list: they are not applied,
//    not dead-lettered, counted in "<stage>.dropped", and the checkpoint still
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

class Mask : public cdcflow::Transform {
public:
    static constexpr const char *kName = "mask"; // the file must be mask.so
    static constexpr const char *kDescription = "masks a payload field; drops events of listed types";
    static constexpr const char *kVersion = "1.0.0";
    // Checked by the host before the constructor runs: unknown keys, wrong
    // types and missing required keys never reach the plugin. Defaults are
    // YAML text ("\"***\"" is the string ***).
    static constexpr cdcflow_config_key kConfig[] = {
        {"field", CDCFLOW_CONFIG_STRING, nullptr, 1, "top-level payload field whose value is masked"},
        {"mask", CDCFLOW_CONFIG_STRING, "\"***\"", 0, "the text that replaces the value"},
        {"drop_types", CDCFLOW_CONFIG_JSON, "[]", 0, "event types to drop (filter out), a list of strings"},
    };

    // The constructor reads and checks the config. It must not change
    // anything outside the process: `cdcflow validate` constructs stages too.
    Mask(const cdcflow::Config &cfg, cdcflow::Context ctx)
        : Transform(ctx), field_(cfg.str("field")), mask_(cfg.str("mask")),
          masked_(ctx.counter("masked", "payloads whose field was masked")) {
        if (field_.empty()) cfg.fail("field", "must not be empty");
        // JSON keys arrive as JSON text, whatever YAML form the user wrote.
        auto types = nlohmann::json::parse(cfg.json("drop_types"), nullptr, false);
        if (!types.is_array()) cfg.fail("drop_types", "must be a list of event types");
        for (const auto &t : types) {
            if (!t.is_string()) cfg.fail("drop_types", "must be a list of strings, got " + t.dump());
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
                batch.drop(i); // counted by the host in "<stage>.dropped": do not count it again
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
            // letter instead (the sink stores it with this stage and reason).
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
    std::set<std::string> drop_types_;
    cdcflow::Metric masked_; // "<stage>.masked" in /metrics
};

CDCFLOW_PLUGIN(Mask)
