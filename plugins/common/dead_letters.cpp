#include "dead_letters.hpp"

#include "base/utf8.hpp"

#include <cdcflow/sdk.hpp>

#include <charconv>

namespace cdcflow::sqlite {

namespace {

void bind_exact(Stmt &s, int i, std::string_view v) {
    if (base::valid_utf8(v))
        s.bind(i, v);
    else
        s.bind_blob(i, v);
}

} // namespace

void DeadLetters::prepare(Db &db) {
    insert_ =
        db.prepare("INSERT INTO dead_letters(event_id, aggregatetype, aggregateid, type, payload, "
                   "source_position, stage, reason, failed_at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
}

void DeadLetters::insert(const cdcflow_event &e, int64_t now_us) {
    char num[24];
    auto [end, ec] = std::to_chars(num, num + sizeof num, e.position.offset);
    (void)ec;
    position_text_.clear();
    if (e.position.partition.len) position_text_.append(sv(e.position.partition)).push_back('@');
    position_text_.append(num, end);
    bind_exact(insert_, 1, sv(e.event_id));
    bind_exact(insert_, 2, sv(e.aggregate_type));
    bind_exact(insert_, 3, sv(e.aggregate_id));
    bind_exact(insert_, 4, sv(e.event_type));
    bind_exact(insert_, 5, sv(e.payload));
    bind_exact(insert_, 6, std::string_view(position_text_));
    insert_.bind(7, sv(e.reject_stage)).bind(8, sv(e.reject_reason)).bind(9, now_us);
    insert_.run();
}

} // namespace cdcflow::sqlite
