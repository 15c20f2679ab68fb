#!/usr/bin/env bash
# make bench: CPU path (criterion, Kinesis and Kafka beside a naive baseline) and the sinks
# against the local stack (Postgres upsert beside row-at-a-time; peak memory of one batch).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p streamload-core --bench decode_encode
cargo bench -p streamload-tests --bench load
