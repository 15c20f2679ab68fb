#!/usr/bin/env bash
# The whole invocation (issue 14; part of make bench, or alone once the stack's env is
# sourced): the release Kinesis loader of this checkout beside the one of BENCH_BASELINE (a
# commit; default: the code before the CPU work), each under the Runtime API stand-in against
# the local stack (cli/benches/invocation.rs). Extra INVOCATION_* settings pass through.
#
# The baseline is built once per commit in a worktree with a target directory of its own
# (cargo hashes path crates relative to their workspace, so two checkouts of one workspace
# sharing a target directory overwrite each other's artifacts) and kept as
# target/bench-baseline/kinesis-loader-<commit>.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=$(git rev-parse --short=7 "${BENCH_BASELINE:-82a46dd}^{commit}")
executable() { # target name → the executable cargo's JSON messages name for it
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$1" | tail -1
}
baseline=target/bench-baseline/kinesis-loader-$rev
if [ ! -x "$baseline" ]; then
  src=target/bench-baseline/src
  rm -rf "$src"
  git worktree prune
  git worktree add --detach "$src" "$rev" >/dev/null
  echo "building the baseline loader ($rev, release; first time ~12 min on 2 cores)"
  built=$( (cd "$src" && cargo build --release -p kinesis-loader --target-dir "$OLDPWD/target/bench-baseline/target" --message-format=json) | executable kinesis-loader)
  cp "$built" "$baseline"
fi
candidate=$(cargo build --release -p kinesis-loader --message-format=json | executable kinesis-loader)
harness=$(cargo build -p streamload-cli --bench invocation --message-format=json | executable invocation)
if cmp -s "$baseline" "$candidate"; then
  echo "the baseline and this checkout built the same binary: nothing to compare" >&2
  exit 1
fi
INVOCATION_VARIANTS=${INVOCATION_VARIANTS:-"baseline@$rev=$baseline,candidate=$candidate"} "$harness"
