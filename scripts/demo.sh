#!/usr/bin/env bash
# make demo: a real stream through streamload on this machine, with AWS's semantics.
#
#   1. the local stack (PostgreSQL, moto, tansu, osmem-server) and this run's resources: the
#      built-in events contract as a route file that also writes a search index;
#   2. the release build of both loaders and of the `streamload` command;
#   3. `streamload run` for a Kinesis stream and a Kafka topic: local event-source mappings
#      invoking the release loaders through the Lambda Runtime API, one sandbox per
#      shard/partition, each sandbox killed mid-batch once, until caught up;
#   4. meanwhile DEMO_EVENTS (20,000) seed events to each at DEMO_RATE (100) records/s, with
#      producer retries (duplicates) and poison;
#   5. `streamload verify` of each manifest (exit status non-zero on any loss or duplicate),
#      and where to look at the data.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
set -a; source .stack/env; set +a
PY="$ROOT/.venv/bin/python"
EVENTS=${DEMO_EVENTS:-20000}
RUN="demo$(date +%s)"
DB="streamload_$RUN"
LOGS=".stack/$RUN"
mkdir -p "$LOGS"

echo "== 1/5 resources for this run: database $DB; table, bucket and queues $RUN"
ADMIN_URL="$STREAMLOAD_PG_ADMIN_URL"
DB_URL="${ADMIN_URL%/*}/$DB"
psql "$ADMIN_URL" -qAtc "CREATE DATABASE $DB" >/dev/null
psql "$DB_URL" -qAt -f infra/sql/001_events.sql >/dev/null
read -r QUEUE_URL ON_FAILURE_URL < <("$PY" - "$RUN" <<'PY'
import sys, boto3
name = sys.argv[1]
boto3.client("dynamodb").create_table(
    TableName=name, BillingMode="PAY_PER_REQUEST",
    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
boto3.client("s3").create_bucket(Bucket=name)
sqs = boto3.client("sqs")
print(sqs.create_queue(QueueName=name)["QueueUrl"], sqs.create_queue(QueueName=name + "-on-failure")["QueueUrl"])
PY
)

echo "== 2/5 release build of both loaders (first time: ~15 min on 2 cores), then the streamload command"
# Two builds, so the command's features (a multi-thread runtime, process control) never reach
# the functions' binaries. The command is a debug build: the stack, not it, bounds the speed.
cargo build --release -p kinesis-loader -p kafka-loader
cargo build -p streamload-cli
SL=target/debug/streamload

# What the loaders read: the function environment of a deployment, pointed at the local stack.
export DATABASE_URL="$DB_URL?sslmode=disable" DEDUP_TABLE="$RUN" OUTPUT_BUCKET="$RUN" DLQ_URL="$QUEUE_URL"
# The events contract spelled out (examples/orders/streamload.toml's events route, for every
# stream), fanned out to the search index "$RUN-events", which the loaders create at start-up.
"$PY" - "$RUN" "$LOGS/routes.toml" <<'PY'
import sys
run, out = sys.argv[1], sys.argv[2]
text = open("examples/orders/streamload.toml").read()
first = text.index("[[route]]")
events = text[first:text.index("[[route]]", first + 1)].replace('source = "kinesis:clickstream"', 'source = "*"')
events = events.replace('claim_prefix = "ev:"', 'claim_prefix = "ev:"\nauto_migrate = "add-columns"')
columns = events.index("[[route.column]]")
open(out, "w").write(events[:columns] + f'[route.index]\nname = "{run}-events"\n\n' + events[columns:])
PY
export STREAMLOAD_CONFIG="$ROOT/$LOGS/routes.toml"
RATE=${DEMO_RATE:-100}
echo "== 3/5 creating a 2-shard stream and a 3-partition topic; starting both mappings"
$SL produce "kinesis://$RUN" --events 0 --create --partitions 2 >/dev/null
$SL produce "kafka://$RUN" --events 0 --create --partitions 3 >/dev/null
# Both mappings poll while the producers write, as on AWS; each sandbox is killed mid-batch
# during its 3rd invocation; each stops once caught up and idle for 15 s.
RUNS=()
for target in "kinesis://$RUN" "kafka://$RUN"; do
  source_name=${target%%:*}
  $SL run "$target" --function "target/release/$source_name-loader" --until-caught-up --idle-seconds 15 \
    --batch-size 100 --batching-window-ms 500 --timeout-seconds 10 --kill-mid-batch 3 \
    --on-failure "$ON_FAILURE_URL" --log-dir "$LOGS" --state "$LOGS/$source_name-state.json" \
    >"$LOGS/$source_name-run.txt" 2>&1 &
  RUNS+=($!)
done

echo "== 4/5 producing $EVENTS events to each at $RATE records/s, 5% producer retries, 1% poison"
$SL produce "kafka://$RUN" --events "$EVENTS" --rate "$RATE" --duplicates 0.05 --poison 0.01 \
  --manifest "$LOGS/kafka-manifest.json" >"$LOGS/kafka-produce.txt" 2>&1 &
KAFKA_PRODUCER=$!
$SL produce "kinesis://$RUN" --events "$EVENTS" --rate "$RATE" --duplicates 0.05 --poison 0.01 \
  --manifest "$LOGS/kinesis-manifest.json"
wait "$KAFKA_PRODUCER"
cat "$LOGS/kafka-produce.txt"
echo "   waiting for both mappings to catch up (progress: $LOGS/*-state.json)"
for pid in "${RUNS[@]}"; do wait "$pid"; done
for source_name in kinesis kafka; do
  echo "-- $source_name mapping"
  cat "$LOGS/$source_name-run.txt"
done

echo "== 5/5 verify: each event once in PostgreSQL and once across the lake, each poison record dead-lettered"
status=0
for source in kinesis kafka; do
  echo "-- $source"
  $SL verify --manifest "$LOGS/$source-manifest.json" || status=1
done

echo
echo "== where to look"
echo "PostgreSQL : psql '$DB_URL' -c 'SELECT event_type, count(*) FROM events GROUP BY 1'"
psql "$DB_URL" -c 'SELECT event_type, count(*) FROM events GROUP BY 1 ORDER BY 1'
"$PY" - "$RUN" <<'PY'
import sys, boto3
name = sys.argv[1]
s3 = boto3.client("s3")
keys = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=name) for o in p.get("Contents", [])]
parquet = [k for k in keys if k.endswith(".parquet")]
print(f"S3         : {len(parquet)} Parquet objects in s3://{name}/events/, e.g.")
for k in parquet[:3]:
    print(f"             s3://{name}/{k}")
archives = [k for k in keys if k.startswith('dead-letter/') and k.endswith('.jsonl')]
letters = sum(len(s3.get_object(Bucket=name, Key=k)["Body"].read().splitlines()) for k in archives)
print(f"Dead letters: {letters} archived in {len(archives)} objects under s3://{name}/dead-letter/ (and in the SQS queue {name})")
PY
rows=$(psql "$DB_URL" -qAtc 'SELECT count(*) FROM events')
docs=$("$PY" -c 'import json,sys,urllib.request; print(json.load(urllib.request.urlopen(sys.argv[1]))["count"])' "$STREAMLOAD_SEARCH_URL/$RUN-events/_count")
echo "Search     : $docs documents in index $RUN-events ($rows rows in PostgreSQL), e.g."
echo "             curl -s '$STREAMLOAD_SEARCH_URL/$RUN-events/_search?q=event_type:click&size=3'"
[ "$docs" = "$rows" ] || { echo "             the index and the table differ"; status=1; }
echo "Logs       : $LOGS/ (one file per function sandbox: JSON lines with requestId, coldStart)"
if [ "$status" = 0 ]; then echo "RESULT: exactly once, both sources"; else echo "RESULT: LOSS OR DUPLICATES (see above)"; fi
exit $status
