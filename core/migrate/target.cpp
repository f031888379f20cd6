#include "migrate/target.hpp"

#include "migrate/cleanup.hpp"

#include "escape.hpp"

#include <filesystem>

namespace cdcflow::migrate {

namespace {

const std::string *config_text(const host::StageDef &sd, const char *key) {
    auto it = sd.config.find(key);
    return it == sd.config.end() ? nullptr : &it->second.scalar;
}

} // namespace

Result<Target> target_of(const host::PipelineDef &def) {
    using host::StageDef;
    const StageDef *source = nullptr, *sink = nullptr;
    for (const StageDef &sd : def.stages) {
        if (sd.plugin == "migrator" && !source) source = &sd;
        if (sd.plugin == "outbox_sink" && !sink) sink = &sd;
    }
    if (!source || !sink)
        return Status::Config(def.file + ": not a migration pipeline: it has no stage whose plugin is " +
                              std::string(!source ? "'migrator'" : "'outbox_sink'"));
    Target t;
    auto text = [](const StageDef &sd, const char *key) {
        const std::string *v = config_text(sd, key);
        return v ? *v : std::string();
    };
    t.legacy_db = text(*source, "database");
    t.target_db = text(*sink, "database");
    if (t.legacy_db.empty() || t.target_db.empty())
        return Status::Config(def.file + ": stage '" + (t.legacy_db.empty() ? source->id : sink->id) +
                              "': database is empty");
    if (const std::string *v = config_text(*source, "table"); v && !v->empty()) t.spec.legacy.table = *v;
    for (size_t i = 0; i < kLegacyColumnCount; ++i)
        if (const std::string *v = config_text(*source, kLegacyColumns[i].key); v && !v->empty())
            t.spec.legacy.names[i] = *v;
    std::string ns = text(*source, "namespace");
    if (ns.empty()) ns = kDefaultNamespace;
    auto u = parse_uuid(ns);
    if (!u) {
        auto it = source->config.find("namespace");
        return Status::Config(
            (it != source->config.end() ? host::where(def.file, it->second.mark) : def.file) +
            ": namespace: " + host::quote(ns) + " is not a UUID");
    }
    t.spec.ns = *u;
    if (const std::string *v = config_text(*sink, "table"); v && !v->empty()) t.spec.outbox.table = *v;
    for (size_t i = 0; i < outbox::kColumnCount; ++i)
        if (const std::string *v = config_text(*sink, outbox::kColumns[i].key); v && !v->empty())
            t.spec.outbox.names[i] = *v;
    if (const std::string *v = config_text(*sink, "checkpoint_name"); v && !v->empty()) t.spec.migration = *v;
    // As the migrator closes gaps (the value checked against its declared
    // bounds, or its default: check_pipeline filled both in).
    if (auto it = source->config.find("gap_watch_ms");
        it != source->config.end() && it->second.type == CDCFLOW_CONFIG_INT)
        t.spec.gap_watch_us = it->second.i * 1000;
    t.cleanup_older_than = text(*source, "cleanup_older_than");
    if (auto it = source->config.find("cleanup_older_than"); it != source->config.end())
        t.older_than_at = host::where(def.file, it->second.mark);
    return t;
}

sqlite::Db open_db(const std::string &path, bool write) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec))
        throw Error(CDCFLOW_ERR_IO, sqlite::database_label(path) + " does not exist");
    return sqlite::Db(path, write ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY, 5000);
}

Connections open_all(const Target &t, bool write) {
    Connections c;
    c.legacy = open_db(t.legacy_db, write);
    c.target = open_db(t.target_db, write);
    return c;
}

std::string ids_list(const std::vector<int64_t> &ids, uint64_t count) {
    std::string out;
    for (size_t i = 0; i < ids.size(); ++i)
        out += (i ? ", " : "") + std::to_string(ids[i]);
    if (count > ids.size()) out += ", ...";
    return out;
}

BeforeRun read_before(const Target &t, const std::function<void(const std::string &)> &notice) {
    BeforeRun b;
    retry_while_locked(kLockPatience, "counting the rows to migrate", notice, [&] {
        // The target may not exist yet: the sink creates it when it starts.
        sqlite::Db legacy = open_db(t.legacy_db, false);
        std::error_code ec;
        if (std::filesystem::exists(t.target_db, ec)) {
            sqlite::Db target = open_db(t.target_db, false);
            b.counts = count_target(target, t.spec.migration);
            b.progress = read_progress(target, t.spec.migration);
            b.mismatch = namespace_mismatch(target, t.spec);
        }
        b.total = count_legacy_after(legacy, t.spec.legacy, b.progress.last_legacy_id);
    });
    return b;
}

AfterRun read_after(const Target &t, const std::function<void(const std::string &)> &notice, size_t limit) {
    AfterRun a;
    retry_while_locked(kLockPatience, "reading the migration's progress", notice, [&] {
        sqlite::Db legacy = open_db(t.legacy_db, false);
        sqlite::Db target = open_db(t.target_db, false);
        a.counts = count_target(target, t.spec.migration);
        a.progress = read_progress(target, t.spec.migration);
        a.missing = quick_check({legacy, target, target}, t.spec, limit);
    });
    return a;
}

RunShare run_share(const TargetCounts &before, const TargetCounts &now, uint64_t applied, uint64_t rejected) {
    auto minus = [](uint64_t a, uint64_t b) { return a > b ? a - b : 0; };
    RunShare r;
    r.migrated = std::min(applied, now.migrated);
    r.unmappable = std::min(rejected, now.unmappable);
    uint64_t grown = 0;
    for (const auto &[cls, n] : now.reasons) {
        auto it = before.reasons.find(cls);
        uint64_t d = minus(n, it == before.reasons.end() ? 0 : it->second);
        grown += d;
        if (d) r.reasons[cls] = d;
    }
    if (grown != r.unmappable) r.reasons.clear();
    return r;
}

std::string missing_message(const ReportClass &missing) {
    return std::to_string(missing.count) +
           " legacy rows at or below the progress point are neither migrated nor recorded as unmappable "
           "(legacy ids " +
           ids_list(missing.ids, missing.count) + "); run cdcflow verify";
}

VerifyReport verify_target(const Target &t, const VerifyOptions &vo) {
    Connections c = open_all(t, false);
    return verify(c.dbs(), t.spec, vo);
}

} // namespace cdcflow::migrate
