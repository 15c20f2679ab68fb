#!/usr/bin/env bash
# make test: formatting, the Rust suite (unit + integration against the local stack), and the
# offline template checks. Ends with one "N passed, N failed" line over all of them.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
set -a; source .stack/env; set +a
LOG=.stack/test.log
: >"$LOG"
status=0
cargo fmt --all -- --check || { echo "cargo fmt: unformatted code (run cargo fmt --all)"; status=1; }
cargo test --workspace --no-fail-fast 2>&1 | tee -a "$LOG"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
scripts/infra-check.sh 2>&1 | tee -a "$LOG"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
passed=$(grep -Eo '[0-9]+ passed' "$LOG" | grep -Eo '[0-9]+' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$LOG" | grep -Eo '[0-9]+' | awk '{s+=$1} END {print s+0}')
[ "$status" = 0 ] || [ "$failed" != 0 ] || failed=1
echo "$passed passed, $failed failed"
exit $status
