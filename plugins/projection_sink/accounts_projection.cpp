#include "accounts_projection.hpp"

#include "money.hpp"

namespace cdcflow::projection {

AccountsProjection::AccountsProjection(const ProjectionOptions &opts, cdcflow::Context ctx)
    : rows_(opts.cache_size, ctx) {}

void AccountsProjection::create_schema(sqlite::Db &db) {
    // Exactly DESIGN.md's accounts table.
    db.exec("CREATE TABLE IF NOT EXISTS accounts(account_id TEXT PRIMARY KEY, owner TEXT, currency TEXT, "
            "balance TEXT, status TEXT, version INTEGER, updated_at INTEGER)");
}

void AccountsProjection::open(sqlite::Db &db) {
    select_ = db.prepare("SELECT rowid, owner, currency, balance, status, version, updated_at FROM accounts "
                         "WHERE account_id = ?1");
    // The common case: a row read (or written) before, found by its rowid.
    // The account_id test guards against a rowid that changed under us (a
    // VACUUM renumbers rowids): then nothing matches and the upsert runs.
    update_ =
        db.prepare("UPDATE accounts SET owner = ?2, currency = ?3, balance = ?4, status = ?5, version = ?6, "
                   "updated_at = ?7 WHERE rowid = ?8 AND account_id = ?1");
    upsert_ = db.prepare(
        "INSERT INTO accounts(account_id, owner, currency, balance, status, version, updated_at) "
        "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(account_id) DO UPDATE SET owner = excluded.owner, "
        "currency = excluded.currency, balance = excluded.balance, status = excluded.status, "
        "version = excluded.version, updated_at = excluded.updated_at RETURNING rowid");
}

void AccountsProjection::close() {
    select_ = {};
    update_ = {};
    upsert_ = {};
    rows_.clear();
}

AccountsProjection::Rows::Node *AccountsProjection::row(std::string_view id) {
    if (Rows::Node *n = rows_.find(id)) return n;
    Rows::Node *n = rows_.insert(id);
    select_.bind(1, id);
    sqlite::ResetOnExit guard{select_};
    accounts::Account &a = n->row.account;
    if (select_.step()) {
        n->row.rowid = select_.int64(0);
        a.exists = true;
        a.owner.assign(select_.text(1));
        a.currency.assign(select_.text(2));
        std::string_view bal = select_.text(3);
        if (money::parse(bal, a.balance) != money::ParseError::ok || a.balance > money::kMaxBalance)
            throw Error(CDCFLOW_ERR_IO, "accounts: account '" + std::string(id) +
                                            "' has a malformed balance '" + std::string(bal) +
                                            "' (the table was edited outside cdcflow?)");
        a.open = select_.text(4) == "open";
        a.version = select_.int64(5);
        a.updated_at = select_.int64(6);
    }
    return n;
}

bool AccountsProjection::apply(const cdcflow_event &e, std::string &reason) {
    accounts::Command cmd;
    accounts::EventView ev{sv(e.aggregate_type), sv(e.aggregate_id), sv(e.event_type), sv(e.payload)};
    return parser_.parse(ev, cmd, reason) && apply(e, ev, cmd, reason);
}

bool AccountsProjection::apply(const cdcflow_event &e, const cdcflow_payload &parsed, std::string &reason) {
    accounts::Command cmd;
    accounts::EventView ev{sv(e.aggregate_type), sv(e.aggregate_id), sv(e.event_type), sv(e.payload)};
    return parser_.parse(ev, parsed, cmd, reason) && apply(e, ev, cmd, reason);
}

bool AccountsProjection::apply(const cdcflow_event &e, const accounts::EventView &ev,
                               const accounts::Command &cmd, std::string &reason) {
    Rows::Node *n = row(ev.aggregate_id);
    if (!accounts::apply_rules(cmd, ev.aggregate_id, e.timestamp_us, n->row.account, reason)) return false;
    n->dirty = true;
    return true;
}

namespace {

// Binds ?1..?7 (the row's columns) of an UPDATE or an UPSERT. Text is bound
// without a copy: every buffer outlives the statement's run.
void bind_row(sqlite::Stmt &s, std::string_view id, const accounts::Account &a, std::string_view balance) {
    s.bind(1, id)
        .bind(2, std::string_view(a.owner))
        .bind(3, std::string_view(a.currency))
        .bind(4, balance)
        .bind(5, std::string_view(a.open ? "open" : "closed"))
        .bind(6, a.version)
        .bind(7, a.updated_at);
}

} // namespace

void AccountsProjection::write_batch() {
    char buf[24];
    for (Rows::Node *n : rows_.touched()) {
        if (!n->dirty) continue;
        const accounts::Account &a = n->row.account;
        std::string_view balance(buf, money::format(a.balance, buf));
        if (n->row.rowid != 0) {
            bind_row(update_, n->key, a, balance);
            update_.bind(8, n->row.rowid);
            update_.run();
            if (update_.changes() == 1) continue;
        }
        bind_row(upsert_, n->key, a, balance);
        sqlite::ResetOnExit guard{upsert_};
        n->row.rowid = upsert_.step() ? upsert_.int64(0) : 0;
    }
}

void AccountsProjection::batch_committed() {
    rows_.committed();
}

void AccountsProjection::batch_rolled_back() {
    rows_.rolled_back();
}

} // namespace cdcflow::projection
