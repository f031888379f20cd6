#!/usr/bin/env bash
# The main job: installs what is needed, builds, creates a demo outbox
# (a few thousand bank-account events, some invalid, some duplicated) in
# demo/accounts.db, runs pipelines/accounts.yaml on it with --drain and
# prints a short summary of the resulting read model.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CDCFLOW_DB=${CDCFLOW_DB:-demo/accounts.db}
mkdir -p "$(dirname "$CDCFLOW_DB")"
rm -f "$CDCFLOW_DB" "$CDCFLOW_DB-wal" "$CDCFLOW_DB-shm"
python3 tools/demo/make_demo_db.py "$CDCFLOW_DB" --events "${DEMO_EVENTS:-5000}"
./build/tools/cdcflow run pipelines/accounts.yaml --drain
python3 tools/demo/summary.py "$CDCFLOW_DB"
