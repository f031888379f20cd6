#include "batch.hpp"
#include "host_api.hpp"

#include <cdcflow/sdk.hpp>

#include <doctest/doctest.h>

#include <cstddef>
#include <cstring>
#include <string>

using namespace cdcflow::host;
using cdcflow::Result;
using cdcflow::Status;

TEST_CASE("arena keeps copies valid across blocks and reuses blocks after reset") {
    Arena a(64);
    std::string big(1000, 'x');
    cdcflow_str s1 = a.copy({"hello", 5});
    cdcflow_str s2 = a.copy({big.data(), big.size()});
    cdcflow_str s3 = a.copy({"world", 5});
    CHECK(std::string(s1.data, s1.len) == "hello");
    CHECK(std::string(s2.data, s2.len) == big);
    CHECK(std::string(s3.data, s3.len) == "world");
    size_t reserved = a.bytes_reserved();
    a.reset();
    a.copy({"hello", 5});
    CHECK(a.bytes_reserved() <= reserved); // reuses, the oversized block is dropped
}

TEST_CASE("batch: room for batch_max_events from the start, the first fill's size in use") {
    Batch b(4, 1000);
    CHECK(b.capacity() == 4);
    CHECK(b.events.size() == 4);
    CHECK(b.events.capacity() >= 1000);
    const cdcflow_event *first = b.events.data();
    BatchLimits l;
    l.events = 1000;
    b.set_limits(l); // grows within the room: the array does not move
    CHECK(b.events.data() == first);
    CHECK(b.capacity() == 1000);
    Batch none(0); // at least one event
    CHECK(none.capacity() == 1);
}

TEST_CASE("batch append copies the event and stops at capacity") {
    Batch b(2);
    cdcflow_event_init e{};
    e.struct_size = sizeof e;
    std::string id = "id-1";
    e.event_id = {id.data(), id.size()};
    e.position.offset = 7;
    e.aggregate_version = -1;
    CHECK(b.append(e));
    id = "changed"; // the batch holds its own copy
    CHECK(std::string(b.events[0].event_id.data, b.events[0].event_id.len) == "id-1");
    CHECK(b.append(e));
    CHECK_FALSE(b.append(e));
    CHECK(b.size() == 2);
    b.reset();
    CHECK(b.size() == 0);
}

TEST_CASE("batch append: every string copied whole, empty ones as \"\" taking no bytes") {
    Batch b(2);
    std::string s[] = {"evt", "Account", "acc-1", "MoneyDeposited", R"({"amount":"1"})", R"({"h":1})", "p-3"};
    cdcflow_event_init e{};
    e.struct_size = sizeof e;
    cdcflow_str *fields[] = {&e.event_id, &e.aggregate_type, &e.aggregate_id,      &e.event_type,
                             &e.payload,  &e.headers,        &e.position.partition};
    uint64_t total = 0;
    for (size_t i = 0; i < std::size(fields); ++i) {
        *fields[i] = {s[i].data(), s[i].size()};
        total += s[i].size();
    }
    REQUIRE(b.append(e));
    for (std::string &x : s)
        x.assign(x.size(), '#'); // the batch holds its own copies
    const cdcflow_event &got = b.events[0];
    const cdcflow_str stored[] = {got.event_id, got.aggregate_type, got.aggregate_id,      got.event_type,
                                  got.payload,  got.headers,        got.position.partition};
    const char *want[] = {"evt",        "Account", "acc-1", "MoneyDeposited", R"({"amount":"1"})",
                          R"({"h":1})", "p-3"};
    for (size_t i = 0; i < std::size(want); ++i)
        CHECK(std::string(stored[i].data, stored[i].len) == want[i]);
    CHECK(b.arena.bytes_used() == total);
    // An event with nothing in it: "" everywhere (never NULL), no bytes.
    cdcflow_event_init empty{};
    empty.struct_size = sizeof empty;
    REQUIRE(b.append(empty));
    CHECK(b.arena.bytes_used() == total);
    CHECK(b.events[1].payload.data != nullptr);
    CHECK(b.events[1].payload.len == 0);
    CHECK(b.events[1].position.partition.data != nullptr);
}

TEST_CASE("batch append: absurd lengths are out of memory, and leave the batch as it was") {
    const cdcflow_host_api *api = host_api();
    cdcflow_batch b(4);
    BatchLimits l;
    l.events = 4;
    l.bytes = 1 << 20; // the byte bound's sum must not wrap either
    b.set_limits(l);
    cdcflow_event_init e{};
    e.struct_size = sizeof e;
    std::string id = "ok";
    e.event_id = {id.data(), id.size()};
    REQUIRE(api->batch_push(&b, &e) == CDCFLOW_OK);
    const size_t used = b.arena.bytes_used();
    cdcflow_event_init bad = e;
    bad.payload = {"x", SIZE_MAX}; // never read: refused before any copy
    CHECK(api->batch_push(&b, &bad) == CDCFLOW_ERR_NOMEM);
    // Two lengths that each pass alone and wrap when added.
    bad.payload = {"x", SIZE_MAX / 2};
    bad.headers = {"y", SIZE_MAX / 2 + 2};
    CHECK(api->batch_push(&b, &bad) == CDCFLOW_ERR_NOMEM);
    CHECK(b.size() == 1);
    CHECK(b.arena.bytes_used() == used);
    REQUIRE(api->batch_push(&b, &e) == CDCFLOW_OK); // and it goes on
    CHECK(b.size() == 2);
}

TEST_CASE("host api: reject keeps the first verdict; duplicate overrides a rejection") {
    const cdcflow_host_api *api = host_api();
    cdcflow_batch raw(4);
    cdcflow_batch *b = &raw;
    cdcflow_event_init e{};
    e.struct_size = sizeof e;
    for (int i = 0; i < 3; ++i)
        REQUIRE(api->batch_append(b, &e) == CDCFLOW_OK);
    cdcflow_ctx ctx;
    ctx.stage_id = "validator";
    api->event_reject(&ctx, b, 0, "first", 5);
    api->event_reject(&ctx, b, 0, "second", 6);
    CHECK(raw.events[0].status == CDCFLOW_EVENT_REJECTED);
    CHECK(std::string(raw.events[0].reject_reason.data, raw.events[0].reject_reason.len) == "first");
    CHECK(std::string(raw.events[0].reject_stage.data, raw.events[0].reject_stage.len) == "validator");
    api->event_mark_duplicate(&ctx, b, 0);
    CHECK(raw.events[0].status == CDCFLOW_EVENT_DUPLICATE);
    api->event_reject(&ctx, b, 99, "out of range", 12); // ignored, no crash
    uint32_t count = 0, stride = 0;
    CHECK(api->batch_events(b, &count, &stride) == raw.events.data());
    CHECK(count == 3);
    CHECK(stride == sizeof(cdcflow_event));
}

TEST_CASE("host api: batch_push tells a full batch from memory that ran out; batch_append keeps ABI 1") {
    const cdcflow_host_api *api = host_api();
    REQUIRE(CDCFLOW_HAS_FIELD(api, cdcflow_host_api, batch_push));
    cdcflow_batch raw(1);
    cdcflow_event_init e{};
    e.struct_size = sizeof e;
    e.aggregate_version = -1;
    CHECK(api->batch_push(&raw, &e) == CDCFLOW_OK);
    CHECK(api->batch_push(&raw, &e) == CDCFLOW_ERR_BATCH_FULL);
    CHECK(api->batch_append(&raw, &e) == CDCFLOW_ERR_NOMEM); // ABI 1: "full"
    raw.reset();

    // A payload whose copy cannot be allocated (the length is never read
    // through: the arena's allocation fails first). ASan runs set
    // allocator_may_return_null so that this is a bad_alloc, as in a release
    // build, rather than a sanitizer report.
    static const char byte = 'x';
    e.payload = {&byte, uint64_t{1} << 62};
    CHECK(api->batch_push(&raw, &e) == CDCFLOW_ERR_NOMEM);
    // ABI 1 plugins read ERR_NOMEM as "full" and would retry the same row
    // for ever: they get ERR_INTERNAL, which fails the poll.
    CHECK(api->batch_append(&raw, &e) == CDCFLOW_ERR_INTERNAL);
    CHECK(raw.size() == 0);
}

TEST_CASE("host api: a rejection reason is stored as valid UTF-8, the bad bytes shown as \\xNN") {
    const cdcflow_host_api *api = host_api();
    cdcflow_batch raw(4);
    cdcflow_event_init e{};
    e.struct_size = sizeof e;
    for (int i = 0; i < 3; ++i)
        REQUIRE(api->batch_push(&raw, &e) == CDCFLOW_OK);
    cdcflow_ctx ctx;
    ctx.stage_id = "project";
    const std::string bad = "unknown event type \"Money\xff\xfe\" (caf\xc3\xa9 ok, cut \xe2\x82)";
    api->event_reject(&ctx, &raw, 0, bad.data(), bad.size());
    CHECK(std::string(raw.events[0].reject_reason.data, raw.events[0].reject_reason.len) ==
          "unknown event type \"Money\\xff\\xfe\" (caf\xc3\xa9 ok, cut \\xe2\\x82)");
    const std::string good = "owner \"Zo\xc3\xab\" is fine";
    api->event_reject(&ctx, &raw, 1, good.data(), good.size());
    CHECK(std::string(raw.events[1].reject_reason.data, raw.events[1].reject_reason.len) == good);
    api->event_reject(&ctx, &raw, 2, nullptr, 0);
    CHECK(std::string(raw.events[2].reject_reason.data, raw.events[2].reject_reason.len) == "rejected");
}

TEST_CASE("sdk: Batch::append returns false when full and throws when memory ran out") {
    cdcflow_batch raw(1);
    cdcflow_ctx ctx;
    ctx.stage_id = "src";
    cdcflow::Batch view(host_api(), &ctx, &raw);
    cdcflow_event_init e = cdcflow::make_event_init();
    static const char byte = 'x';
    e.payload = {&byte, uint64_t{1} << 62}; // cannot be copied (never read: the allocation fails first)
    try {
        view.append(e);
        FAIL("no exception");
    } catch (const cdcflow::Error &err) {
        CHECK(err.status() == CDCFLOW_ERR_NOMEM);
        CHECK(std::string(err.what()) ==
              "out of memory copying an event of 4611686018427387904 payload bytes");
    }
    e.payload = {"{}", 2};
    CHECK(view.append(e));
    CHECK_FALSE(view.append(e)); // full: the source returns what it has
    CHECK(view.size() == 1);
}

TEST_CASE("host api: event_drop marks an OK event DROPPED, counts it, and never overrides a verdict") {
    const cdcflow_host_api *api = host_api();
    REQUIRE(CDCFLOW_HAS_FIELD(api, cdcflow_host_api, event_drop));
    REQUIRE(bool(api->event_drop));
    Metrics m;
    cdcflow_batch raw(4);
    cdcflow_event_init e = cdcflow::make_event_init();
    for (int i = 0; i < 4; ++i)
        REQUIRE(api->batch_push(&raw, &e) == CDCFLOW_OK);
    cdcflow_ctx ctx;
    ctx.stage_id = "filter";
    ctx.dropped = m.counter("cdcflow_events_total", "", {{"stage", "filter"}, {"outcome", "dropped"}});
    api->event_reject(&ctx, &raw, 1, "bad", 3);
    api->event_mark_duplicate(&ctx, &raw, 2);
    for (uint32_t i = 0; i < 4; ++i)
        api->event_drop(&ctx, &raw, i);
    api->event_drop(&ctx, &raw, 0);  // already dropped: counted once
    api->event_drop(&ctx, &raw, 99); // out of range: ignored, no crash
    CHECK(raw.events[0].status == CDCFLOW_EVENT_DROPPED);
    CHECK(raw.events[1].status == CDCFLOW_EVENT_REJECTED); // a dead letter does not vanish
    CHECK(raw.events[2].status == CDCFLOW_EVENT_DUPLICATE);
    CHECK(raw.events[3].status == CDCFLOW_EVENT_DROPPED);
    CHECK(m.value("cdcflow_events_total", {{"stage", "filter"}, {"outcome", "dropped"}}) == 2);
    CHECK(raw.dropped == 2);
    // A later stage's verdicts: a rejection does not override the drop (the
    // first verdict stands), a duplicate mark does (as over a rejection).
    api->event_reject(&ctx, &raw, 0, "late", 4);
    CHECK(raw.events[0].status == CDCFLOW_EVENT_DROPPED);
    api->event_mark_duplicate(&ctx, &raw, 3);
    CHECK(raw.events[3].status == CDCFLOW_EVENT_DUPLICATE);
    raw.reset();
    CHECK(raw.dropped == 0);
}

TEST_CASE("sdk: Batch::drop uses event_drop, and marks duplicate on a host table without it") {
    cdcflow_batch raw(2);
    cdcflow_event_init e = cdcflow::make_event_init();
    cdcflow_ctx ctx;
    ctx.stage_id = "filter";
    REQUIRE(host_api()->batch_push(&raw, &e) == CDCFLOW_OK);
    REQUIRE(host_api()->batch_push(&raw, &e) == CDCFLOW_OK);
    cdcflow::Batch view(host_api(), &ctx, &raw);
    view.drop(0);
    CHECK(raw.events[0].status == CDCFLOW_EVENT_DROPPED);

    // A host whose table ends before event_drop (an ABI 2-sized table).
    cdcflow_host_api old = *host_api();
    old.struct_size = static_cast<uint32_t>(offsetof(cdcflow_host_api, config_lookup));
    old.event_drop = nullptr; // never read: struct_size says it is not there
    cdcflow::Batch old_view(&old, &ctx, &raw);
    old_view.drop(1);
    CHECK(raw.events[1].status == CDCFLOW_EVENT_DUPLICATE);
}

TEST_CASE("sdk: an exception that is not a std::exception says so, instead of a bare 'unknown exception'") {
    char err[512];
    cdcflow_status st = cdcflow::detail::guarded(err, sizeof err, [] { throw 42; });
    CHECK(st == CDCFLOW_ERR_INTERNAL);
    CHECK(std::string(err) ==
          "threw something that is not a std::exception (e.g. `throw 42`), so there is no "
          "message; throw cdcflow::Error or a std::exception instead");
    st = cdcflow::detail::guarded(err, sizeof err, [] { throw cdcflow::Error(CDCFLOW_ERR_RETRY, "busy"); });
    CHECK(st == CDCFLOW_ERR_RETRY);
    CHECK(std::string(err) == "busy");
}

TEST_CASE("sdk: Batch::copy puts bytes in the batch's memory and throws when memory ran out") {
    cdcflow_batch raw(1);
    cdcflow_ctx ctx;
    ctx.stage_id = "mask";
    cdcflow::Batch view(host_api(), &ctx, &raw);
    std::string text = "{\"owner\":\"***\"}";
    cdcflow_str c = view.copy(text);
    text[2] = 'X'; // the copy is the batch's own
    CHECK(cdcflow::sv(c) == "{\"owner\":\"***\"}");
    CHECK(view.copy("").len == 0);
    // batch_alloc answers null when memory ran out: the SDK turns it into an error.
    cdcflow_host_api no_mem = *host_api();
    no_mem.batch_alloc = [](cdcflow_batch *, uint64_t) -> void * { return nullptr; };
    cdcflow::Batch starved(&no_mem, &ctx, &raw);
    try {
        starved.copy("abc");
        FAIL("no exception");
    } catch (const cdcflow::Error &err) {
        CHECK(err.status() == CDCFLOW_ERR_NOMEM);
        CHECK(std::string(err.what()) == "out of memory copying 3 bytes into the batch");
    }
}

TEST_CASE("batch limits: a fill stops at its event, byte and time bounds, and always takes one event") {
    std::string payload(100, 'p');
    cdcflow_event_init e{};
    e.struct_size = sizeof e;
    e.event_id = {"id", 2};
    e.payload = {payload.data(), payload.size()};

    Batch b(4);
    BatchLimits l;
    l.events = 10; // grows the array: the pool's batches start small
    b.set_limits(l);
    CHECK(b.capacity() == 10);
    CHECK(b.events.size() >= 10);
    for (int i = 0; i < 10; ++i)
        REQUIRE(b.append(e));
    CHECK_FALSE(b.full);
    CHECK_FALSE(b.append(e));
    CHECK(b.full);

    b.reset();
    CHECK_FALSE(b.full);
    l.events = 1000;
    l.bytes = 350; // three events of 102 bytes fit, the fourth would not
    b.set_limits(l);
    int n = 0;
    while (b.append(e))
        ++n;
    CHECK(n == 3);
    CHECK(b.full);
    CHECK(b.arena.bytes_used() <= 350);

    b.reset();
    l.bytes = 10; // smaller than one event: the first still goes in
    b.set_limits(l);
    CHECK(b.append(e));
    CHECK_FALSE(b.append(e));

    b.reset();
    l.bytes = 0;
    l.max_fill = std::chrono::nanoseconds(1); // over by the time the clock is next read
    b.set_limits(l);
    n = 0;
    while (b.append(e))
        ++n;
    // The clock is read every 64 events: a fill past its time stops there.
    CHECK(n == 64);
    CHECK(b.full);
}

TEST_CASE("batch sizer: backlog doubles the batches up to the maximum, caught up falls back at once") {
    BatchSizer s(100, 1000);
    CHECK(s.target() == 100);
    s.filled(100, false); // filled to its limit: a backlog
    CHECK(s.target() == 200);
    s.filled(150, true); // stopped by bytes or time: also a backlog
    CHECK(s.target() == 400);
    s.filled(400, false);
    s.filled(800, false);
    CHECK(s.target() == 1000); // never beyond the maximum
    s.filled(1000, false);
    CHECK(s.target() == 1000);
    s.filled(37, false); // caught up: small batches again, for latency
    CHECK(s.target() == 100);
    s.filled(0, false);
    CHECK(s.target() == 100);

    BatchSizer fixed(500, 10); // a maximum below batch_size: batch_size wins
    CHECK(fixed.max() == 500);
    fixed.filled(500, true);
    CHECK(fixed.target() == 500);
}

namespace {

cdcflow_payload parse_payload(cdcflow_batch &b, uint32_t i) {
    cdcflow_payload p{};
    p.struct_size = sizeof p;
    REQUIRE(host_api()->event_payload(&b, i, &p) == CDCFLOW_OK);
    return p;
}

std::string text(cdcflow_str s) {
    return std::string(s.data, s.len);
}

} // namespace

TEST_CASE("event_payload: fields as spans of the payload, parsed once per batch contents") {
    cdcflow_batch b(4);
    cdcflow_event_init e{};
    e.struct_size = sizeof e;
    std::string p0 =
        R"( {"amount" : "12.50" , "n": -1.5e3, "o": {"k": [1, null]}, "t": true, "s": "a\"b", "k\u0065y": null} )";
    e.payload = {p0.data(), p0.size()};
    REQUIRE(b.append(e));
    cdcflow_payload p = parse_payload(b, 0);
    REQUIRE(p.result == CDCFLOW_PAYLOAD_OBJECT);
    CHECK(p.root_type == CDCFLOW_JSON_OBJECT);
    REQUIRE(p.field_count == 6);
    auto f = [&](uint32_t k) -> const cdcflow_json_field & { return cdcflow::Batch::field(p, k); };
    CHECK(text(f(0).key) == "amount");
    CHECK(text(f(0).value) == "\"12.50\"");
    CHECK(f(0).type == CDCFLOW_JSON_STRING);
    CHECK(f(0).has_escape == 0);
    // Spans point into the event's own payload bytes (the arena copy).
    const cdcflow_str stored = b.events[0].payload;
    CHECK(f(0).value.data >= stored.data);
    CHECK(f(0).value.data + f(0).value.len <= stored.data + stored.len);
    CHECK(text(f(1).value) == "-1.5e3");
    CHECK(f(1).type == CDCFLOW_JSON_NUMBER);
    CHECK(text(f(2).value) == R"({"k": [1, null]})");
    CHECK(f(2).type == CDCFLOW_JSON_OBJECT);
    CHECK(f(3).type == CDCFLOW_JSON_BOOL);
    CHECK(text(f(4).value) == R"("a\"b")");
    CHECK(f(4).has_escape == 1);
    CHECK(text(f(5).key) == "key"); // keys come unescaped
    // A plain key is a span of the payload too; an escaped one is its
    // unescaped copy, elsewhere.
    CHECK(f(0).key.data == stored.data + p0.find("amount"));
    CHECK((f(5).key.data < stored.data || f(5).key.data >= stored.data + stored.len));
    CHECK(f(5).type == CDCFLOW_JSON_NULL);

    // Asked again (a later stage): the stored result, not a new parse.
    cdcflow_payload again = parse_payload(b, 0);
    CHECK(again.fields == p.fields);
    // A stage that points the event at other bytes gets those parsed.
    std::string other = R"({"x": 1})";
    b.events[0].payload = {other.data(), other.size()};
    cdcflow_payload changed = parse_payload(b, 0);
    REQUIRE(changed.field_count == 1);
    CHECK(text(cdcflow::Batch::field(changed, 0).key) == "x");
    b.events[0].payload = stored;
    CHECK(parse_payload(b, 0).field_count == 6);
    // Past the batch: not found.
    cdcflow_payload none{};
    none.struct_size = sizeof none;
    CHECK(host_api()->event_payload(&b, 1, &none) == CDCFLOW_ERR_NOT_FOUND);

    // New contents after a reset: parsed anew.
    b.reset();
    std::string p1 = "[1, 2]";
    e.payload = {p1.data(), p1.size()};
    REQUIRE(b.append(e));
    cdcflow_payload q = parse_payload(b, 0);
    CHECK(q.result == CDCFLOW_PAYLOAD_NOT_OBJECT);
    CHECK(q.root_type == CDCFLOW_JSON_ARRAY);
    CHECK(q.field_count == 0);
}

TEST_CASE("event_payload: keys with quotes, escapes or nothing in them") {
    // The key's end is its first unescaped quote; a key with any escape is
    // unescaped, the others are taken as written.
    std::string json = R"({"a\"b": 1, "": 2, "c\\": 3, "\u00e9t\u00e9": 4, "d": 5, "q\u0022": 6})";
    cdcflow_batch b(1);
    cdcflow_event_init e{};
    e.struct_size = sizeof e;
    e.payload = {json.data(), json.size()};
    REQUIRE(b.append(e));
    cdcflow_payload p = parse_payload(b, 0);
    REQUIRE(p.result == CDCFLOW_PAYLOAD_OBJECT);
    REQUIRE(p.field_count == 6);
    auto f = [&](uint32_t k) -> const cdcflow_json_field & { return cdcflow::Batch::field(p, k); };
    CHECK(text(f(0).key) == "a\"b");
    CHECK(text(f(0).value) == "1");
    CHECK(text(f(1).key).empty());
    CHECK(f(1).key.data != nullptr);
    CHECK(text(f(1).value) == "2");
    CHECK(text(f(2).key) == "c\\");
    CHECK(text(f(3).key) == "\xc3\xa9t\xc3\xa9");
    CHECK(text(f(4).key) == "d");
    CHECK(text(f(4).value) == "5");
    CHECK(text(f(5).key) == "q\"");
}

TEST_CASE("event_payload: invalid JSON is invalid wherever it hides, with a reason") {
    const char *bad[] = {"",
                         "{",
                         R"({"a": 1,})",
                         R"({"a" 1})",
                         R"({"a": 1} x)",
                         R"({"a": [1,})",
                         R"({"a": tru})",
                         R"({"a": "\q"})",
                         R"({"\q": 1})", // bad escapes in a key
                         R"({"\u12": 1})",
                         R"({"\u00zz": 1})",
                         R"({"a": 01})",
                         "{\"a\": \"\xff\xfe\"}", // not UTF-8
                         "{\"a\": {\"b\": [1, 2}}",
                         "[1, 2",
                         "nul",
                         "12 13"};
    for (const char *s : bad) {
        cdcflow_batch b(1);
        cdcflow_event_init e{};
        e.struct_size = sizeof e;
        e.payload = {s, std::strlen(s)};
        REQUIRE(b.append(e));
        cdcflow_payload p = parse_payload(b, 0);
        CHECK_MESSAGE(p.result == CDCFLOW_PAYLOAD_INVALID, s);
        REQUIRE(p.error != nullptr);
        CHECK(std::string(p.error).rfind("payload is not valid JSON: ", 0) == 0);
    }
    // Nesting deeper than 1024 levels is refused as the DOM parser refuses it.
    std::string deep = "{\"a\":" + std::string(1100, '[') + std::string(1100, ']') + "}";
    cdcflow_batch b(1);
    cdcflow_event_init e{};
    e.struct_size = sizeof e;
    e.payload = {deep.data(), deep.size()};
    REQUIRE(b.append(e));
    CHECK(parse_payload(b, 0).result == CDCFLOW_PAYLOAD_INVALID);
    for (const char *ok : {"12", "\"x\"", "null", "true", "[1, {\"a\": []}]"}) {
        cdcflow_batch c(1);
        e.payload = {ok, std::strlen(ok)};
        REQUIRE(c.append(e));
        CHECK_MESSAGE(parse_payload(c, 0).result == CDCFLOW_PAYLOAD_NOT_OBJECT, ok);
    }
}
