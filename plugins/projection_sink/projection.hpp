// Projection: one domain model (a read model) behind projection_sink.
//
// The sink owns the database connection, the batch transaction, dead letters
// and the checkpoint; a Projection only turns OK events into its own rows.
// Adding a domain is adding a class (and a line in make_projection). A domain
// outside this repository can also be its own plugin: subclass
// ProjectionSink (projection_sink.hpp) and pass it a Projection.
//
// Call order per batch, all inside one BEGIN IMMEDIATE transaction:
//   apply(e) for each OK event ... write_batch(); then exactly one of
//   batch_committed() (after COMMIT) or batch_rolled_back() (after ROLLBACK:
//   forget whatever the batch changed in memory, so that the host's retry of
//   the same batch gives identical results).
#pragma once

#include "common/sqlite.hpp"

#include <cdcflow/sdk.hpp>

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace cdcflow::projection {

class Projection {
public:
    virtual ~Projection() = default;

    // Tables it needs (checked at create when create_schema is false).
    virtual std::vector<std::string> tables() const = 0;
    // At create, when some of tables() are still missing (start() creates
    // them): refuse, as a config error, a table that exists but cannot be
    // the one this projection declares.
    virtual void check_existing(sqlite::Db &db) { (void)db; }
    // CREATE TABLE IF NOT EXISTS ... (start, inside a transaction).
    virtual void create_schema(sqlite::Db &db) = 0;
    // Prepare statements; the tables exist. db outlives the projection's use of it.
    virtual void open(sqlite::Db &db) = 0;
    // Close statements (before the connection closes).
    virtual void close() = 0;

    // Apply one OK event. false: reject it, with a one-line reason.
    virtual bool apply(const cdcflow_event &e, std::string &reason) = 0;
    // The same, with the payload as the host parsed it once for the whole
    // pipeline (cdcflow_host_api.event_payload). A projection that reads
    // the payload overrides this to skip its own parse.
    virtual bool apply(const cdcflow_event &e, const cdcflow_payload &parsed, std::string &reason) {
        (void)parsed;
        return apply(e, reason);
    }
    // After apply() returned false: true when the event is not wrong but a
    // copy of one already applied (a history row has its event id: it came
    // back past the deduper's window). The sink marks it duplicate (skipped,
    // counted) instead of dead-lettering it.
    virtual bool last_was_duplicate() const { return false; }
    // Write the batch's changes (once per changed row, not per event).
    virtual void write_batch() = 0;
    virtual void batch_committed() = 0;
    virtual void batch_rolled_back() = 0;
};

struct ProjectionOptions {
    size_t cache_size = 100000;
    // projection: declared: the model key's value (JSON text), and where a
    // node inside it is in the pipeline file (a JSON Pointer in,
    // "file:line:col" out) for its error messages.
    std::string model;
    std::function<std::string(const std::string &pointer)> locate;
};

// The built-in domains by name, and "declared" (opts.model); nullptr for an
// unknown name. Throws Error(CDCFLOW_ERR_CONFIG) for a mistaken model.
std::unique_ptr<Projection> make_projection(std::string_view name, const ProjectionOptions &opts,
                                            cdcflow::Context ctx);
// "accounts, declared" (for messages).
const char *builtin_projections();

} // namespace cdcflow::projection
