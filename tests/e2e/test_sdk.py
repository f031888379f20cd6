"""The SDK as a plugin author uses it: install cdcflow (meson install into a
temporary root), build a plugin OUTSIDE this tree with only the installed
headers and `pkg-config cdcflow`, and load it with the installed host."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from helpers import TEST_PLUGINS, TempDirTest, install_tree, main, sanitize_flags  # noqa: E402

PLUGIN = r'''
// An out-of-tree transform: rejects every event whose offset is a multiple of blocked_every.
#include <cdcflow/sdk.hpp>
#include <string>

class Blocker : public cdcflow::Transform {
public:
    static constexpr const char *kName = "blocker";
    static constexpr const char *kDescription = "rejects events at every blocked_every-th offset";
    static constexpr const char *kVersion = "1.2.3";
    static constexpr cdcflow_config_key kConfig[] = {
        {"blocked_every", CDCFLOW_CONFIG_INT, nullptr, 1, "reject offsets that are multiples of this"}};
    Blocker(const cdcflow::Config &cfg, cdcflow::Context ctx) : Transform(ctx), every_(cfg.i64("blocked_every")) {
        if (every_ <= 0) cfg.fail("blocked_every", "must be positive");
    }
    void process(cdcflow::Batch &batch) override {
        for (auto it = batch.begin(); it != batch.end(); ++it)
            if ((*it).position.offset % every_ == 0) batch.reject(it.index(), "blocked by the out-of-tree plugin");
    }
private:
    int64_t every_;
};
CDCFLOW_PLUGIN(Blocker)
'''


APP = r'''
// An application outside the tree: writes events with the installed outbox writer.
#include <cdcflow/outbox_writer.hpp>
#include <cstdio>

int main(int argc, char **argv) {
    cdcflow::OutboxWriterOptions opt;
    opt.create_schema = true;
    std::unique_ptr<cdcflow::OutboxWriter> w;
    if (auto st = cdcflow::OutboxWriter::open(argv[1], opt, &w); !st.ok()) {
        std::fprintf(stderr, "%s\n", st.message().c_str());
        return 1;
    }
    auto a = w->append({.aggregate_type = "Account", .aggregate_id = "acc-1", .type = "AccountCreated",
                        .payload = R"({"owner": "Ada", "currency": "EUR"})"});
    auto b = w->append({.aggregate_type = "Account", .aggregate_id = "acc-1", .type = "MoneyDeposited",
                        .payload = "[not an object]"});
    if (!a.status.ok() || b.status.ok() || !w->flush().ok()) return 2;
    return argc > 2 ? 3 : 0;
}
'''


class OutOfTreePlugin(TempDirTest):
    def test_build_against_installed_sdk_and_load(self):
        root = self.path("root")
        host, env = install_tree(root)
        cflags = subprocess.run(["pkg-config", "--cflags", "cdcflow"], env=env, check=True,
                                capture_output=True, text=True).stdout.split()
        self.assertTrue(any(f.startswith("-I" + root) for f in cflags), cflags)
        plugdir = self.path("myplugins")
        os.makedirs(plugdir)
        src = self.write("blocker.cpp", PLUGIN)
        subprocess.run(["g++", "-std=c++20", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared",
                        "-fvisibility=hidden", "-o", os.path.join(plugdir, "blocker.so"), src] + cflags,
                       check=True)

        # The installed host lists the plugin with its schema...
        r = subprocess.run([host, "plugins", "--path", plugdir], capture_output=True, text=True)
        self.assertIn("blocker  (transform, ABI 7, version 1.2.3)", r.stdout)
        self.assertRegex(r.stdout, r"blocked_every\s+int\s+required")
        # ...and runs it in a pipeline (test source and sink from the build tree).
        out = self.path("events.txt")
        p = self.write("p.yaml", "pipeline: oot\nplugin_path: [%s, %s]\nstages:\n"
                       "  - {id: src, plugin: gen_source, config: {count: 100}}\n"
                       "  - {id: block, plugin: blocker, config: {blocked_every: 10}}\n"
                       "  - {id: sink, plugin: file_sink, config: {output: '%s'}}\n" % (plugdir, TEST_PLUGINS, out))
        r = subprocess.run([host, "run", p, "--drain"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("100 events: 90 applied, 10 rejected, 0 duplicates, 0 dropped", r.stdout)
        with open(out) as f:
            rejected = [l for l in f if "blocked by the out-of-tree plugin" in l]
        self.assertEqual(len(rejected), 10)
        # An application builds against the installed outbox writer (pkg-config
        # cdcflow-outbox) and writes an event; the envelope check refuses a bad one.
        libs = subprocess.run(["pkg-config", "--cflags", "--libs", "cdcflow-outbox"], env=env, check=True,
                              capture_output=True, text=True).stdout.split()
        libs = sanitize_flags() + libs
        app = self.path("app")
        subprocess.run(["g++", "-std=c++20", "-Wall", "-Werror", "-o", app, self.write("app.cpp", APP)] + libs,
                       check=True)
        db = self.path("app.db")
        self.assertEqual(subprocess.run([app, db]).returncode, 0)
        import sqlite3
        rows = sqlite3.connect(db).execute("SELECT aggregateid, type FROM outbox").fetchall()
        self.assertEqual(rows, [("acc-1", "AccountCreated")])
        # A missing required key is a load-time error with the position.
        bad = self.write("bad.yaml", open(p).read().replace("{blocked_every: 10}", "{}"))
        r = subprocess.run([host, "validate", bad], capture_output=True, text=True)
        self.assertEqual(r.returncode, 3)
        self.assertIn("blocked_every", r.stderr)
        self.assertIn("bad.yaml:5:", r.stderr)


if __name__ == "__main__":
    main()
