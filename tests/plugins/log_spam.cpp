// log_spam: a test transform that logs through the host API: many lines in
// a loop (the per-stage rate limit, a full stderr), a hostile message (a
// newline, invalid UTF-8, a terminal escape, forged JSON: one line must stay
// one line), lines from a thread of its own (logging is thread-safe), and
// one line per batch. Events pass untouched.
#include <cdcflow/sdk.hpp>

#include <string>
#include <thread>

class LogSpam : public cdcflow::Transform {
public:
    static constexpr const char *kName = "log_spam";
    static constexpr const char *kDescription = "test transform: logs a lot, or hostile text";
    static constexpr cdcflow_config_key kConfig[] = {
        {"start_lines", CDCFLOW_CONFIG_INT, "0", 0, "lines logged in a loop in start()"},
        {"thread_lines", CDCFLOW_CONFIG_INT, "0", 0,
         "lines logged from a thread of its own, started in start()"},
        {"batch_lines", CDCFLOW_CONFIG_INT, "0", 0, "lines logged per batch"},
        {"hostile", CDCFLOW_CONFIG_BOOL, "false", 0, "log one hostile message (info) in start()"},
        {"line_bytes", CDCFLOW_CONFIG_INT, "0", 0, "pad each loop line to about this many bytes"},
    };

    // What `hostile` logs: a second text line and a second JSON object
    // after a newline, a carriage return, a terminal escape, invalid UTF-8,
    // quotes, backslashes and NEL (U+0085, a line break to some readers).
    static constexpr const char *kHostile =
        "hostile start\n2026-01-01T00:00:00.000Z error [host] forged text line\n"
        "{\"ts\":\"x\",\"level\":\"error\",\"stage\":\"host\",\"msg\":\"forged json\"}\r"
        "\x1b[31mred\x1b[m \xff\xfe bad utf8 \xc3\x28 caf\xc3\xa9 quote\" back\\slash nel\xc2\x85 end";

    LogSpam(const cdcflow::Config &cfg, cdcflow::Context ctx)
        : Transform(ctx), start_lines_(cfg.i64("start_lines")), thread_lines_(cfg.i64("thread_lines")),
          batch_lines_(cfg.i64("batch_lines")), hostile_(cfg.boolean("hostile")),
          line_bytes_(cfg.i64("line_bytes")) {}

    ~LogSpam() override {
        if (thread_.joinable()) thread_.join();
    }

    void start() override {
        if (hostile_) ctx().info(kHostile);
        if (thread_lines_ > 0)
            thread_ = std::thread([this] {
                for (int64_t i = 0; i < thread_lines_; ++i)
                    ctx().info(line("thread line", i));
            });
        for (int64_t i = 0; i < start_lines_; ++i)
            ctx().info(line("spam line", i));
    }

    void stop() override {
        if (thread_.joinable()) thread_.join();
    }

    void process(cdcflow::Batch &) override {
        for (int64_t i = 0; i < batch_lines_; ++i)
            ctx().info(line("batch line", i));
    }

private:
    std::string line(const char *what, int64_t i) const {
        std::string s = std::string(what) + " " + std::to_string(i);
        if (line_bytes_ > static_cast<int64_t>(s.size()))
            s.append(static_cast<size_t>(line_bytes_) - s.size(), 'x');
        return s;
    }

    int64_t start_lines_, thread_lines_, batch_lines_;
    bool hostile_;
    int64_t line_bytes_;
    std::thread thread_;
};

CDCFLOW_PLUGIN(LogSpam)
