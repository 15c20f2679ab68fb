#!/usr/bin/env bash
# make bench: CPU path (criterion, Kinesis and Kafka beside a naive baseline and beside the
# runtime-parse design), its instruction counts under callgrind (repeatable on shared hosts,
# where wall and CPU time swing ±40%), and the sinks against the local stack (Postgres upsert
# beside UNNEST and row-at-a-time; peak memory of one batch).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p streamload-core --bench decode_encode

bin=$(cargo bench -p streamload-core --bench decode_encode --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "decode_encode" and m.get("executable"):
        print(m["executable"])')

if command -v valgrind >/dev/null; then
  count() {
    DECODE_ENCODE_ONCE=$1 valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" --bench 2>&1 |
      awk '/Collected/ { n = $4 } END { print n }'
  }
  setup=$(count setup)
  echo "instructions per 10,000-record batch (callgrind, set-up subtracted):"
  for path in kinesis kinesis_behind_runtime_parse kafka naive kinesis_envelope; do
    n=$(count "$path")
    awk -v p="$path" -v n="$n" -v s="$setup" 'BEGIN { printf "  %-30s %6.1f M\n", p, (n - s) / 1e6 }'
  done
  # The same 10,000 records in 100 KPL aggregates (its own set-up subtracted).
  n=$(count kinesis_kpl); k=$(count kinesis_kpl_setup)
  awk -v n="$n" -v s="$k" 'BEGIN { printf "  %-30s %6.1f M\n", "kinesis in 100 KPL aggregates", (n - s) / 1e6 }'
  # The 20-column route builds its own batch: its set-up is subtracted too.
  n=$(count wide); w=$(count wide_setup)
  awk -v n="$n" -v s="$w" 'BEGIN { printf "  %-30s %6.1f M\n", "wide route (20 columns)", (n - s) / 1e6 }'
else
  echo "valgrind not installed: instruction counts skipped"
fi

# A warm function handles batch after batch: CPU time and page faults per batch with the
# allocator keeping freed memory (as shipped) and with glibc's defaults, alternated.
echo "warm function, 100 batches back to back (kept = as shipped, default = glibc defaults):"
for round in 1 2 3; do
  for path in kinesis kafka; do
    DECODE_ENCODE_ONCE=$path DECODE_ENCODE_TIMES=100 "$bin" --bench 2>&1 | sed -n 's/^\(.* x100: .*\)/  kept    \1/p'
    DECODE_ENCODE_ALLOCATOR_DEFAULTS=1 DECODE_ENCODE_ONCE=$path DECODE_ENCODE_TIMES=100 "$bin" --bench 2>&1 |
      sed -n 's/^\(.* x100: .*\)/  default \1/p'
  done
done

cargo bench -p streamload-tests --bench load
cargo bench -p streamload-tests --bench faults


scripts/bench-invocation.sh
