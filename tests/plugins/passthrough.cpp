// passthrough: a test transform. Passes batches on untouched unless told to
// reject, mark duplicates, drop, fail or throw at given offsets.
#include <cdcflow/sdk.hpp>

#include <stdexcept>
#include <string>

class Passthrough : public cdcflow::Transform {
public:
    static constexpr const char *kName = "passthrough";
    static constexpr const char *kDescription = "test transform: passes events on (optionally marks some)";
    static constexpr cdcflow_config_key kConfig[] = {
        {"reject_every", CDCFLOW_CONFIG_INT, "0", 0, "reject events whose offset is a multiple of this"},
        {"duplicate_every", CDCFLOW_CONFIG_INT, "0", 0,
         "mark duplicate events whose offset is a multiple of this"},
        {"drop_every", CDCFLOW_CONFIG_INT, "0", 0,
         "drop (filter out) events whose offset is a multiple of this"},
        {"throw_at", CDCFLOW_CONFIG_INT, "0", 0, "throw a C++ exception at this offset (0 = never)"},
        {"retry_at", CDCFLOW_CONFIG_INT, "0", 0, "fail transiently twice at this offset (0 = never)"},
        {"retry_forever_at", CDCFLOW_CONFIG_INT, "0", 0,
         "fail transiently every time at this offset (0 = never)"},
        {"throw_in_stop", CDCFLOW_CONFIG_BOOL, "false", 0, "stop() throws (the host must log it)"},
    };

    Passthrough(const cdcflow::Config &cfg, cdcflow::Context ctx)
        : Transform(ctx), reject_every_(cfg.i64("reject_every")), dup_every_(cfg.i64("duplicate_every")),
          drop_every_(cfg.i64("drop_every")), throw_at_(cfg.i64("throw_at")), retry_at_(cfg.i64("retry_at")),
          retry_forever_at_(cfg.i64("retry_forever_at")), throw_in_stop_(cfg.boolean("throw_in_stop")) {}

    void stop() override {
        if (throw_in_stop_) throw std::runtime_error("injected exception in stop");
    }

    void process(cdcflow::Batch &batch) override {
        if (!reject_every_ && !dup_every_ && !drop_every_ && !throw_at_ && !retry_at_ && !retry_forever_at_)
            return; // benchmark path
        for (uint32_t i = 0; i < batch.size(); ++i) {
            int64_t off = batch[i].position.offset;
            if (throw_at_ && off == throw_at_) throw std::runtime_error("injected exception at offset " + std::to_string(off));
            if (retry_at_ && off == retry_at_ && retries_ < 2) {
                ++retries_;
                throw cdcflow::Error(CDCFLOW_ERR_RETRY, "injected transient failure");
            }
            if (retry_forever_at_ && off == retry_forever_at_)
                throw cdcflow::Error(CDCFLOW_ERR_RETRY, "injected transient failure that never ends");
            if (reject_every_ && off % reject_every_ == 0) batch.reject(i, "offset " + std::to_string(off) + " is unlucky");
            if (dup_every_ && off % dup_every_ == 0) batch.mark_duplicate(i);
            if (drop_every_ && off % drop_every_ == 0) batch.drop(i);
        }
    }

private:
    int64_t reject_every_, dup_every_, drop_every_, throw_at_, retry_at_, retry_forever_at_;
    bool throw_in_stop_;
    int retries_ = 0;
};

CDCFLOW_PLUGIN(Passthrough)
