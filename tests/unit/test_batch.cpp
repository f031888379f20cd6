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

TEST_CASE("host api: reject keeps the first verdict; duplicate overrides a rejection") {
    const cdcflow_host_api *api = host_api();
    cdcflow_batch raw(4);
    cdcflow_batch *b = &raw;
    cdcflow_event_init e{};
    e.struct_size = sizeof e;
    for (int i = 0; i < 3; ++i) REQUIRE(api->batch_append(b, &e) == CDCFLOW_OK);
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
    for (int i = 0; i < 3; ++i) REQUIRE(api->batch_push(&raw, &e) == CDCFLOW_OK);
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
        CHECK(std::string(err.what()) == "out of memory copying an event of 4611686018427387904 payload bytes");
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
    ctx.dropped = m.create("filter.dropped", "", false);
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
    CHECK(m.value("filter.dropped") == 2);
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
