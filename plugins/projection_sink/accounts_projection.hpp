// AccountsProjection: the `accounts` read model of DESIGN.md.
//
// Rows live in an LRU cache (RowCache); a miss reads the row with one
// SELECT. Each account a batch changes is written once, at the end of the
// batch, as an UPSERT of its final state.
#pragma once

#include "accounts.hpp"
#include "batch_rows.hpp"
#include "projection.hpp"

#include <vector>

namespace cdcflow::projection {

class AccountsProjection : public Projection {
public:
    AccountsProjection(const ProjectionOptions &opts, cdcflow::Context ctx);

    std::vector<std::string> tables() const override { return {"accounts"}; }
    void create_schema(sqlite::Db &db) override;
    void open(sqlite::Db &db) override;
    void close() override;

    bool apply(const cdcflow_event &e, std::string &reason) override;
    bool apply(const cdcflow_event &e, const cdcflow_payload &parsed, std::string &reason) override;
    void write_batch() override;
    void batch_committed() override;
    void batch_rolled_back() override;

    size_t cached_rows() const { return rows_.size(); }

private:
    // The account plus where it is stored: its rowid (0: not in the table),
    // so that an update finds the row without a probe of the account_id
    // index.
    struct Stored {
        accounts::Account account;
        int64_t rowid = 0;
    };
    using Rows = BatchRows<Stored>;
    // The cached row for id, read from the table on a miss; pinned and
    // remembered as touched by this batch.
    Rows::Node *row(std::string_view id);
    bool apply(const cdcflow_event &e, const accounts::EventView &ev, const accounts::Command &cmd,
               std::string &reason);

    accounts::CommandParser parser_;
    Rows rows_;
    sqlite::Stmt select_;
    sqlite::Stmt update_;
    sqlite::Stmt upsert_;
};

} // namespace cdcflow::projection
