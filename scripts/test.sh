#!/usr/bin/env bash
# Installs what is needed, builds, and runs every test:
#   1. the release build: unit tests (doctest) and end-to-end tests (the real
#      cdcflow binary on real SQLite files, kill -9 crash tests);
#   2. the same suite built with -Db_sanitize=address,undefined;
#   3. the unit tests of the threaded code (queues, runtime, ownership, breakers,
#      HTTP, metrics, logs) built with -Db_sanitize=thread.
# Set CDCFLOW_QUICK=1 to run only step 1.
set -uo pipefail
cd "$(dirname "$0")/.."
CDCFLOW_TEST_TOOLS=1 ./scripts/setup.sh || exit 1

passed=0
failed=0
run_suite() { # name builddir [meson test args...]
  local name=$1 dir=$2
  shift 2
  echo "== $name ==" >&2
  if meson test -C "$dir" --print-errorlogs --num-processes 2 "$@"; then :; fi
  local log="$dir/meson-logs/testlog.json"
  if [ -f "$log" ]; then
    local p f
    p=$(grep -c '"result": "OK"' "$log" || true)
    f=$(grep -c -E '"result": "(FAIL|TIMEOUT|ERROR|UNEXPECTEDPASS)"' "$log" || true)
    passed=$((passed + p))
    failed=$((failed + f))
  else
    failed=$((failed + 1))
  fi
}

run_suite "release build" build

if [ "${CDCFLOW_QUICK:-0}" != 1 ]; then
  # The sanitized builds compile at -O1 with line tables only (-g1): what the
  # sanitizers' reports need (function, file:line), at about 40% of the compile
  # time of -O2 -g (measured on core/http/client.cpp under ASan: 35 s vs 87 s),
  # which is most of CI's time on 2 cores.
  sanitized=(-Doptimization=1 -Ddebug=false -Dc_args=-g1 -Dcpp_args=-g1)
  if [ ! -f build-asan/build.ninja ]; then
    meson setup build-asan "${sanitized[@]}" -Db_sanitize=address,undefined -Db_lundef=false >/dev/null || exit 1
  fi
  ninja -C build-asan >&2 || exit 1
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    run_suite "address+undefined sanitizers" build-asan

  if [ ! -f build-tsan/build.ninja ]; then
    meson setup build-tsan "${sanitized[@]}" -Db_sanitize=thread >/dev/null || exit 1
  fi
  # Every plugin the runtime tests load (a missing one fails them with "unknown plugin").
  ninja -C build-tsan tests/unit_tests_threaded tests/plugins/gen_source.so tests/plugins/gen_source_noreplay.so \
    tests/plugins/passthrough.so tests/plugins/file_sink.so tests/plugins/abi_v1/v1_source.so \
    tests/plugins/abi_v1/v1_sink.so tests/plugins/abi_v1/v1_pass.so tests/plugins/group_source.so \
    tests/plugins/deferred_sink.so tests/plugins/deferred_sink_nosettle.so tests/plugins/passthrough_deferred.so \
    plugins/outbox_source/outbox_source.so plugins/validator/validator.so plugins/deduper/deduper.so \
    plugins/projection_sink/projection_sink.so plugins/migrator/migrator.so plugins/outbox_sink/outbox_sink.so \
    >&2 || exit 1
  # The threaded code: queues, the runtime (scraped while it drains too),
  # ownership, retries/breakers/poison bisection, the HTTP server and client,
  # a consumer group's rebalances (partitions*: group_source, deduper, projection_sink),
  # a sink that commits after process returns (deferred commit*: deferred_sink),
  # the embedded host (embed*: its runner and state watcher threads, close
  # from a callback, a stuck plugin abandoned; the shipped SQLite plugins),
  # the metrics and their collectors, the log writer and the plugin log
  # limiter with its reporter thread (about 20 s on 2 cores).
  echo "== thread sanitizer: queue, runtime, ownership, breakers, http, metrics, logs, embedded host ==" >&2
  if TSAN_OPTIONS="halt_on_error=1 suppressions=$PWD/tests/tsan.supp" build-tsan/tests/unit_tests_threaded \
    --test-case='queue*,runtime*,ownership*,retry*,breaker*,poison*,http*,prometheus*,health*,log*,PluginLog*,metrics*,partitions*,deferred commit*,embed*'; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
