// core/migrate: the migration's shared rules (UUIDv5 ids, ISO 8601 dates,
// the row mapping, the checksum) and the gap contract between its parts.
#include "migrate/iso8601.hpp"
#include "migrate/mapping.hpp"
#include "migrate/progress.hpp"
#include "migrate/uuid5.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace cdcflow::migrate;

namespace {

std::string event_id(std::string_view ns, int64_t legacy_id) {
    char out[kUuidTextSize];
    legacy_event_id(*parse_uuid(ns), legacy_id, out);
    return std::string(out, kUuidTextSize);
}

LegacyRow good_row() {
    LegacyRow r;
    r.id = 42;
    r.topic = "Account";
    r.key = "acc-1";
    r.type = "AccountCreated";
    r.body = R"({"owner":"Ada","currency":"EUR"})";
    r.created_at = "2024-05-01T12:00:00Z";
    return r;
}

} // namespace

TEST_CASE("uuid5 ids match RFC 4122 (Python's uuid.uuid5 computed the expected values)") {
    // uuid.uuid5(uuid.NAMESPACE_DNS, "python.org")
    char out[kUuidTextSize];
    uuid5(*parse_uuid("6ba7b810-9dad-11d1-80b4-00c04fd430c8"), "python.org", out);
    CHECK(std::string(out, kUuidTextSize) == "886313e1-3b8a-5372-9b90-0c9aee199e5d");
    // The default namespace is uuid5(NAMESPACE_URL, "https://cdcflow.dev/ns/legacy_outbox").
    uuid5(*parse_uuid("6ba7b811-9dad-11d1-80b4-00c04fd430c8"), "https://cdcflow.dev/ns/legacy_outbox", out);
    CHECK(std::string(out, kUuidTextSize) == kDefaultNamespace);
    CHECK(event_id(kDefaultNamespace, 1) == "3dd88fe5-3976-5afd-abb8-9e37e7e12c99");
    CHECK(event_id(kDefaultNamespace, 42) == "4a089400-9ae2-514a-b2c6-cda7234997ac");
    CHECK(event_id(kDefaultNamespace, -7) == "03b7bac2-a687-5cb4-955b-7bc7dbdca230");
    CHECK(event_id(kDefaultNamespace, INT64_MAX) == "d7cf1b55-bd7d-57f9-9d91-27784a0546d6");
    CHECK(event_id("6ba7b811-9dad-11d1-80b4-00c04fd430c8", 42) != event_id(kDefaultNamespace, 42));
}

TEST_CASE("parse_uuid and looks_like_uuid5") {
    CHECK(parse_uuid("0BB2B36A-FDC6-5A9F-B464-1CB2CCC4E4D6") == parse_uuid(kDefaultNamespace));
    CHECK(uuid_text(*parse_uuid("0BB2B36A-FDC6-5A9F-B464-1CB2CCC4E4D6")) == kDefaultNamespace);
    for (const char *bad : {"", "0bb2b36a-fdc6-5a9f-b464-1cb2ccc4e4d", "0bb2b36afdc65a9fb4641cb2ccc4e4d6",
                            "0bb2b36a-fdc6-5a9f-b464-1cb2ccc4e4dg", "0bb2b36a-fdc6-5a9f-b464_1cb2ccc4e4d6"})
        CHECK_FALSE(parse_uuid(bad));
    CHECK(looks_like_uuid5(event_id(kDefaultNamespace, 3)));
    CHECK_FALSE(looks_like_uuid5("3dd88fe5-3976-4afd-abb8-9e37e7e12c99")); // version 4
    CHECK_FALSE(looks_like_uuid5("3dd88fe5-3976-5afd-cbb8-9e37e7e12c99")); // wrong variant
    CHECK_FALSE(looks_like_uuid5("foreign-1"));
}

TEST_CASE("ISO 8601 created_at: the forms legacy outboxes write") {
    CHECK(parse_iso8601_us("2024-05-01T12:00:00Z") == 1714564800000000);
    CHECK(parse_iso8601_us("2024-05-01 12:00:00") == 1714564800000000); // no zone: UTC
    CHECK(parse_iso8601_us("2024-05-01t12:00:00z") == 1714564800000000);
    CHECK(parse_iso8601_us("2024-05-01T12:00") == 1714564800000000);
    CHECK(parse_iso8601_us("2024-05-01T12:00:00.123456+02:00") == 1714557600123456);
    CHECK(parse_iso8601_us("2024-05-01T12:00:00.123456789+0200") == 1714557600123456); // cut, not rounded
    CHECK(parse_iso8601_us("2024-05-01T14:00:00+02") == 1714564800000000);
    CHECK(parse_iso8601_us("2024-05-01T06:30:00-05:30") == 1714564800000000);
    CHECK(parse_iso8601_us("20240501T120000Z") == 1714564800000000);
    CHECK(parse_iso8601_us("20240501T120000.5") == 1714564800500000);
    CHECK(parse_iso8601_us("2024-05-01") == 1714521600000000);
    CHECK(parse_iso8601_us("2024-02-29T00:00:00Z") == 1709164800000000);
    CHECK(parse_iso8601_us("1969-12-31T23:59:59.5Z") == -500000);
    CHECK(parse_iso8601_us("2024-04-30T24:00:00Z") == 1714521600000000);
    CHECK(parse_iso8601_us("2016-12-31T23:59:60Z") == 1483228799999999); // leap second
    for (const char *bad :
         {"", "yesterday", "2023-02-29", "2024-13-01", "2024-00-10", "2024-05-32", "2024-05-01T25:00",
          "2024-05-01T12:60", "2024-05-01T12:00:00Zjunk", "2024-05-01T12:00:00+25:00", "2024-05-01T",
          "2024-05-01T12:00:00.", "2024-5-1", "2024-05-01T12:00:00.1234567890", "2024-05-01 ", " 2024-05-01",
          "2024-05-01T24:00:01", "20240501 120000"})
        CHECK_MESSAGE(!parse_iso8601_us(bad), bad);
}

TEST_CASE("map_row maps the DESIGN.md columns and names why a row cannot be mapped") {
    LegacySchema schema;
    const Uuid ns = *parse_uuid(kDefaultNamespace);
    MappedEvent e;
    std::string reason;
    LegacyRow r = good_row();
    REQUIRE(map_row(r, schema, ns, e, reason));
    CHECK(e.id_view() == event_id(kDefaultNamespace, 42));
    CHECK(e.aggregate_type == "Account");
    CHECK(e.aggregate_id == "acc-1");
    CHECK(e.type == "AccountCreated");
    CHECK(e.payload == *r.body);
    CHECK(e.timestamp_us == 1714564800000000);

    // Not JSON, not an object: mapped as written (the validator rejects it later).
    r.body = "not json";
    CHECK(map_row(r, schema, ns, e, reason));

    struct Case {
        void (*spoil)(LegacyRow &);
        const char *reason;
    };
    const Case cases[] = {
        {[](LegacyRow &x) { x.topic.reset(); }, "topic is NULL"},
        {[](LegacyRow &x) { x.key = ""; }, "message_key is empty"},
        {[](LegacyRow &x) { x.type.reset(); }, "message_type is NULL"},
        {[](LegacyRow &x) { x.body = ""; }, "body is empty"},
        {[](LegacyRow &x) { x.body = "{\"a\":\"\xff\"}"; },
         "body is not valid UTF-8: \"{\\\"a\\\":\\\"\\xff\\\"}\""},
        {[](LegacyRow &x) { x.key = "\xc3"; }, "message_key is not valid UTF-8: \"\\xc3\""},
        {[](LegacyRow &x) { x.created_at.reset(); }, "created_at is NULL"},
        {[](LegacyRow &x) { x.created_at = "tuesday"; }, "created_at is not an ISO 8601 date: \"tuesday\""},
    };
    for (const Case &c : cases) {
        LegacyRow x = good_row();
        c.spoil(x);
        CHECK_FALSE(map_row(x, schema, ns, e, reason));
        CHECK(reason == c.reason);
    }
    // The configured name is what the reason names.
    schema.name(LegacyColumn::kTopic) = "channel";
    LegacyRow x = good_row();
    x.topic.reset();
    CHECK_FALSE(map_row(x, schema, ns, e, reason));
    CHECK(reason == "channel is NULL");
    CHECK(reason_class("created_at is not an ISO 8601 date: \"x: y\"") ==
          "created_at is not an ISO 8601 date");
    CHECK(reason_class("topic is NULL") == "topic is NULL");
}

TEST_CASE("event_checksum: stable, and every mapped field counts") {
    std::string scratch;
    const int64_t base = event_checksum("id", "A", "a-1", "T", "{}", 5, scratch);
    // Whatever the scratch buffer held before does not count.
    std::string junk(100, 'x');
    CHECK(base == event_checksum("id", "A", "a-1", "T", "{}", 5, junk));
    CHECK(base != event_checksum("id2", "A", "a-1", "T", "{}", 5, scratch));
    CHECK(base != event_checksum("id", "B", "a-1", "T", "{}", 5, scratch));
    CHECK(base != event_checksum("id", "A", "a-2", "T", "{}", 5, scratch));
    CHECK(base != event_checksum("id", "A", "a-1", "U", "{}", 5, scratch));
    CHECK(base != event_checksum("id", "A", "a-1", "T", "{ }", 5, scratch));
    CHECK(base != event_checksum("id", "A", "a-1", "T", "{}", 6, scratch));
    // Length-prefixed: moving a byte from one field to the next changes it.
    CHECK(event_checksum("id", "Aa", "-1", "T", "{}", 5, scratch) != base);
    // Pinned: stored checksums must stay comparable across releases and
    // machines (this value was computed once; a change breaks every stored map).
    CHECK(base == INT64_C(-7014159694721746304));
}

TEST_CASE("gap sets survive text, headers and checkpoint positions") {
    std::vector<Gap> gaps = {{11, 11, 1700000000000000}, {-5, -3, 7}, {20, 25, 0}};
    CHECK(gaps_text(gaps) == "11:11@1700000000000000,-5:-3@7,20:25@0");
    CHECK(parse_gaps(gaps_text(gaps)) == gaps);
    CHECK(parse_gaps("") == std::vector<Gap>{});
    for (const char *bad : {"1:2", "1:2@", "3:2@0", "1:2@0,", ",1:2@0", "1:2@0;", "a:b@c", "1:2@0,,3:4@0"})
        CHECK_MESSAGE(!parse_gaps(bad), bad);
    CHECK(gaps_from_header(gaps_header(gaps)) == gaps);
    CHECK(gaps_from_header(gaps_header({})) == std::vector<Gap>{});
    CHECK_FALSE(gaps_from_header(""));
    CHECK_FALSE(gaps_from_header("{\"trace\":\"x\"}"));
    CHECK_FALSE(gaps_from_header("{\"cdcflow_gaps\":\"1:x@0\"}"));
    for (const Gap &g : gaps)
        CHECK(gap_from_position(gap_partition(g), g.hi) == g);
    CHECK_FALSE(gap_from_position("", 4));
    CHECK_FALSE(gap_from_position("late", 4));
    CHECK_FALSE(gap_from_position("gap:9@0", 4)); // lo above hi
    CHECK_FALSE(gap_from_position("gap:1@0x", 4));
}

TEST_CASE("LegacySchema::check names the missing table or column, and tells a database error apart") {
    sqlite3 *db = nullptr;
    REQUIRE(sqlite3_open(":memory:", &db) == SQLITE_OK);
    LegacySchema schema;
    int db_error = -1, missing = -2;
    CHECK(schema.check(db, &db_error, &missing) == "has no table \"legacy_outbox\"");
    CHECK(db_error == 0);
    CHECK(missing == -1);
    REQUIRE(sqlite3_exec(db, "CREATE TABLE legacy_outbox(id INTEGER PRIMARY KEY, topic, message_key, body)",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    const std::string why = schema.check(db, &db_error, &missing);
    CHECK(why.find("no column \"message_type\" (type_column;") != std::string::npos);
    CHECK(missing == static_cast<int>(LegacyColumn::kType));
    CHECK(db_error == 0);
    REQUIRE(sqlite3_exec(db,
                         "ALTER TABLE legacy_outbox ADD COLUMN message_type; ALTER TABLE legacy_outbox ADD "
                         "COLUMN created_at",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    CHECK(schema.check(db, &db_error, &missing).empty());
    CHECK(missing == -1);
    CHECK(schema.check(db).empty()); // the out-parameters are optional
    sqlite3_close(db);
}

TEST_CASE("LegacySchema::check_id_key wants one distinct, non-NULL id per row") {
    struct Case {
        const char *ddl;
        const char *rows;
        const char *expect; // a part of the reason; "" when accepted
        bool unknown;
    };
    const Case cases[] = {
        {"CREATE TABLE legacy_outbox(id INTEGER PRIMARY KEY, x)", "", "", false},
        {"CREATE TABLE legacy_outbox(ID integer primary key, x)", "", "", false},
        {"CREATE TABLE legacy_outbox(id INTEGER, x)", "", "neither the primary key nor has a unique index",
         false},
        {"CREATE TABLE legacy_outbox(id INTEGER, x, PRIMARY KEY(id, x))", "",
         "neither the primary key nor has a unique index", false},
        {"CREATE TABLE legacy_outbox(id INTEGER, x); CREATE INDEX i ON legacy_outbox(id)", "",
         "neither the primary key", false},
        {"CREATE TABLE legacy_outbox(id INTEGER, x); CREATE UNIQUE INDEX i ON legacy_outbox(id) WHERE x", "",
         "neither the primary key", false},
        {"CREATE TABLE legacy_outbox(id INTEGER, x); CREATE UNIQUE INDEX i ON legacy_outbox(id, x)", "",
         "neither the primary key", false},
        {"CREATE TABLE legacy_outbox(id INTEGER UNIQUE, x)", "INSERT INTO legacy_outbox VALUES (1, 1)", "",
         false},
        {"CREATE TABLE legacy_outbox(id INTEGER UNIQUE, x)", "INSERT INTO legacy_outbox VALUES (NULL, 1)",
         "column \"id\" (id_column) holds NULL", false},
        {"CREATE TABLE legacy_outbox(id BIGINT PRIMARY KEY, x)", "INSERT INTO legacy_outbox VALUES (NULL, 1)",
         "holds NULL", false},
        {"CREATE TABLE legacy_outbox(id INTEGER NOT NULL, x); CREATE UNIQUE INDEX i ON legacy_outbox(id)", "",
         "", false},
        {"CREATE TABLE b(id INTEGER, x); CREATE VIEW legacy_outbox AS SELECT * FROM b", "", "", true},
    };
    for (const Case &c : cases) {
        CAPTURE(c.ddl);
        sqlite3 *db = nullptr;
        REQUIRE(sqlite3_open(":memory:", &db) == SQLITE_OK);
        REQUIRE(sqlite3_exec(db, c.ddl, nullptr, nullptr, nullptr) == SQLITE_OK);
        REQUIRE(sqlite3_exec(db, c.rows, nullptr, nullptr, nullptr) == SQLITE_OK);
        LegacySchema schema;
        bool unknown = !c.unknown;
        int db_error = -1;
        const std::string why = schema.check_id_key(db, &unknown, &db_error);
        if (*c.expect == '\0')
            CHECK(why.empty());
        else
            CHECK(why.find(c.expect) != std::string::npos);
        CHECK(unknown == c.unknown);
        CHECK(db_error == 0);
        sqlite3_close(db);
    }
}
