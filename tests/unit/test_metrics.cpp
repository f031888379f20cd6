// Metrics: families, labels, histograms and collectors rendered in the
// Prometheus text format; plugin metrics in their own namespace.
#include "host_api.hpp"
#include "metrics.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace cdcflow::host;

TEST_CASE("metrics: one HELP/TYPE per family, series by labels, values escaped and scaled") {
    Metrics m;
    cdcflow_metric *a = m.counter("x_events_total", "events\nby stage", {{"stage", "v-x"}});
    cdcflow_metric *b = m.counter("x_events_total", "ignored", {{"stage", "v.x"}});
    CHECK(a != b);
    CHECK(m.counter("x_events_total", "", {{"stage", "v-x"}}) == a); // same labels: same series
    a->value += 3;
    b->value += 4;
    cdcflow_metric *t = m.gauge("x_time_seconds", "time", {{"q", "a\"b\\c\nd"}}, 1e-6);
    t->value = 1500000; // microseconds
    std::string page = m.prometheus();
    CHECK(page == "# HELP x_events_total events\\nby stage\n# TYPE x_events_total counter\n"
                  "x_events_total{stage=\"v-x\"} 3\nx_events_total{stage=\"v.x\"} 4\n"
                  "# HELP x_time_seconds time\n# TYPE x_time_seconds gauge\n"
                  "x_time_seconds{q=\"a\\\"b\\\\c\\nd\"} 1.5\n");
    CHECK(m.value("x_events_total", {{"stage", "v.x"}}) == 4);
    CHECK(m.sum("x_events_total") == 7);
    CHECK_FALSE(m.value("x_events_total", {{"stage", "nope"}}).has_value());
}

TEST_CASE("metrics: a family keeps its type; invalid names are refused") {
    Metrics m;
    REQUIRE(m.counter("y_total", "", {}) != nullptr);
    CHECK(m.gauge("y_total", "", {}) == nullptr);
    CHECK(m.histogram("y_total", "", {}, {1.0}) == nullptr);
    CHECK(m.counter("9bad", "", {}) == nullptr);
    CHECK(m.counter("has-dash", "", {}) == nullptr);
    CHECK(m.counter("", "", {}) == nullptr);
    CHECK(Metrics::name_part("v-x.y z") == "v_x_y_z");
}

TEST_CASE("metrics: histogram buckets are cumulative, _count equals +Inf, _sum in base units") {
    Metrics m;
    Histogram *h = m.histogram("d_seconds", "d", {{"stage", "s"}}, {0.001, 0.01, 0.1}, 1e-6);
    REQUIRE(h);
    h->observe(500);     // 0.5 ms
    h->observe(1000);    // exactly on the 1 ms bound: le is inclusive
    h->observe(50000);   // 50 ms
    h->observe(5000000); // 5 s: +Inf only
    uint64_t tally[4] = {1, 0, 0, 1};
    h->add_counts(tally, 2000000.0 + 200); // 0.2 ms and 2 s, added in one go
    std::string page = m.prometheus();
    CHECK(page.find("d_seconds_bucket{stage=\"s\",le=\"0.001\"} 3\n") != std::string::npos);
    CHECK(page.find("d_seconds_bucket{stage=\"s\",le=\"0.01\"} 3\n") != std::string::npos);
    CHECK(page.find("d_seconds_bucket{stage=\"s\",le=\"0.1\"} 4\n") != std::string::npos);
    CHECK(page.find("d_seconds_bucket{stage=\"s\",le=\"+Inf\"} 6\n") != std::string::npos);
    CHECK(page.find("d_seconds_count{stage=\"s\"} 6\n") != std::string::npos);
    CHECK(page.find("d_seconds_sum{stage=\"s\"} 7.0517\n") != std::string::npos);
    CHECK(page.find("# TYPE d_seconds histogram\n") != std::string::npos);
}

TEST_CASE("metrics: collectors add families at each scrape, in name order, and can be removed") {
    Metrics m;
    m.counter("b_total", "stored", {})->value = 1;
    int calls = 0;
    int id = m.add_collector([&](Collect &out) {
        ++calls;
        out.gauge("a_depth", "collected", {{"queue", "x->y"}}, 2);
        out.gauge("c_state", "collected", {}, 0);
        out.gauge("b_total", "a clash of types: left out", {}, 9);
    });
    std::string page = m.prometheus();
    CHECK(calls == 1);
    CHECK(page == "# HELP a_depth collected\n# TYPE a_depth gauge\na_depth{queue=\"x->y\"} 2\n"
                  "# HELP b_total stored\n# TYPE b_total counter\nb_total 1\n"
                  "# HELP c_state collected\n# TYPE c_state gauge\nc_state 0\n");
    m.remove_collector(id);
    CHECK(m.prometheus() == "# HELP b_total stored\n# TYPE b_total counter\nb_total 1\n");
    CHECK(calls == 1);
}

TEST_CASE("host api: a plugin's metrics live under cdcflow_plugin_<plugin>_, counters end in _total") {
    Metrics m;
    cdcflow_ctx ctx;
    ctx.stage_id = "pipeline"; // a stage may be called anything the file allows
    ctx.pipeline = "prod";
    ctx.plugin = "my-plugin";
    ctx.metrics = &m;
    const cdcflow_host_api *api = host_api();
    cdcflow_metric *c = api->metric_counter(&ctx, "rows_read", "rows");
    cdcflow_metric *c2 = api->metric_counter(&ctx, "done_total", "already suffixed");
    cdcflow_metric *g = api->metric_gauge(&ctx, "lag", "lag");
    api->metric_add(c, 5);
    api->metric_add(c2, 1);
    api->metric_set(g, 7);
    CHECK(m.value("cdcflow_plugin_my_plugin_rows_read_total",
                  {{"pipeline", "prod"}, {"stage", "pipeline"}}) == 5);
    CHECK(m.value("cdcflow_plugin_my_plugin_done_total", {{"pipeline", "prod"}, {"stage", "pipeline"}}) == 1);
    CHECK(m.value("cdcflow_plugin_my_plugin_lag", {{"pipeline", "prod"}, {"stage", "pipeline"}}) == 7);
    // A name already taken by the other type: a handle that counts but is
    // never shown (the plugin needs no null check), and nothing else breaks.
    cdcflow_metric *clash = api->metric_gauge(&ctx, "rows_read_total", "");
    REQUIRE(clash != nullptr);
    api->metric_set(clash, 99);
    CHECK(m.prometheus().find(" 99\n") == std::string::npos);
    // Empty names are not listed either.
    CHECK(api->metric_counter(&ctx, "", "") != nullptr);
    // ABI 4: cache and lag figures go to the host's families.
    REQUIRE(CDCFLOW_HAS_FIELD(api, cdcflow_host_api, metric_cache));
    api->metric_set(api->metric_cache(&ctx, "rows", CDCFLOW_CACHE_ENTRIES), 3);
    api->metric_add(api->metric_cache(&ctx, "rows", CDCFLOW_CACHE_HITS), 2);
    api->metric_set(api->metric_lag(&ctx, ""), 11);
    CHECK(m.value("cdcflow_cache_entries",
                  {{"pipeline", "prod"}, {"stage", "pipeline"}, {"cache", "rows"}}) == 3);
    CHECK(m.value("cdcflow_cache_hits_total",
                  {{"pipeline", "prod"}, {"stage", "pipeline"}, {"cache", "rows"}}) == 2);
    CHECK(m.value("cdcflow_source_lag_events",
                  {{"pipeline", "prod"}, {"stage", "pipeline"}, {"partition", ""}}) == 11);
    CHECK(api->metric_cache(&ctx, "rows", static_cast<cdcflow_cache_stat>(99)) == nullptr);
    CHECK(api->metric_cache(&ctx, nullptr, CDCFLOW_CACHE_HITS) == nullptr);
}
