#!/usr/bin/env bash
# Installs the Debian 12 packages cdcflow needs (as root, or through sudo)
# and configures + builds it in ./build. Safe to run again: apt and meson
# skip what is already done. Nothing is downloaded from outside Debian.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  g++ meson ninja-build pkg-config            # the build
  libyaml-cpp-dev                             # pipeline files
  libboost-dev libboost-program-options-dev   # Boost.DLL, Lockfree, UUID (headers), Program_options
  libsqlite3-dev sqlite3                      # the embedded outbox and projections
  libsimdjson-dev nlohmann-json3-dev          # JSON: hot path / config
  # /health, /ready and /metrics: Boost.Beast/Asio from libboost-dev (header-only)
  libspdlog-dev libfmt-dev                    # log lines: text and JSON formats, UTC timestamps
  librdkafka-dev kcat                         # Kafka source and sink
  libmimalloc-dev                             # the cdcflow executable's allocator
  doctest-dev python3                         # unit tests / end-to-end tests
)
# Test-only tools (scripts/test.sh asks for them): Prometheus's own promtool
# checks the /metrics page and the shipped alert rules.
if [ "${CDCFLOW_TEST_TOOLS:-0}" = 1 ]; then
  packages+=(prometheus)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

builddir=${BUILD_DIR:-build}
if [ ! -f "$builddir/build.ninja" ]; then
  meson setup "$builddir" --buildtype=release ${MESON_ARGS:-} >/dev/null
fi
ninja -C "$builddir" >&2
