#!/usr/bin/env bash
# make demo: a real stream through streamload on this machine, with AWS's semantics.
#
#   1. the local stack (PostgreSQL, moto, tansu, osmem-server) and this run's resources: the
#      built-in events contract as a route file that also writes a search index and an Apache
#      Iceberg table (a SQL catalog in PostgreSQL), the bucket notifying a queue of new objects;
#   2. the release build of both loaders, the `streamload` command and the table committer;
#   3. `streamload run` for a Kinesis stream and a Kafka topic: local event-source mappings
#      invoking the release loaders through the Lambda Runtime API, one sandbox per
#      shard/partition, each sandbox killed mid-batch once, until caught up; and for the
#      queue, invoking the table committer (its sandbox killed mid-batch once too);
#   4. meanwhile DEMO_EVENTS (20,000) seed events to each at DEMO_RATE (100) records/s, with
#      producer retries (duplicates) and poison;
#   5. `streamload verify` of each manifest and `streamload verify-table` of the table (exit
#      status non-zero on any loss or duplicate), the table's freshness, and where to look.
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
s3 = boto3.client("s3")
s3.create_bucket(Bucket=name)
s3.create_bucket(Bucket=name + "-tables")
sqs = boto3.client("sqs")
# The table committer's queue: S3 notifies it of every new staged Parquet object, as the SAM
# template sets up; a message of a failed or killed invocation comes back after 30 s.
commits = sqs.create_queue(QueueName=name + "-commits", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
arn = sqs.get_queue_attributes(QueueUrl=commits, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
s3.put_bucket_notification_configuration(Bucket=name, NotificationConfiguration={"QueueConfigurations": [{
    "QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
    "Filter": {"Key": {"FilterRules": [{"Name": "suffix", "Value": ".parquet"}]}}}]})
print(sqs.create_queue(QueueName=name)["QueueUrl"], sqs.create_queue(QueueName=name + "-on-failure")["QueueUrl"])
PY
)

echo "== 2/5 release build of both loaders (first time: ~15 min on 2 cores), then the streamload command and the table committer"
# Separate builds, so the command's features (a multi-thread runtime, process control) never
# reach the functions' binaries. The command and the committer are debug builds (they share
# the command's compiled Iceberg crates): the stack, not they, bounds the demo's speed.
cargo build --release -p kinesis-loader -p kafka-loader
cargo build -p streamload-cli
cargo build -p table-committer
SL=target/debug/streamload

# What the loaders read: the function environment of a deployment, pointed at the local stack.
export DATABASE_URL="$DB_URL?sslmode=disable" DEDUP_TABLE="$RUN" OUTPUT_BUCKET="$RUN" DLQ_URL="$QUEUE_URL"
# What the committer reads besides: the table's catalog (SQL, in this run's database; pyiceberg
# reads the same tables) and where its files go. A 20 s lease: a killed committer's objects
# are taken over within a visibility timeout.
export STREAMLOAD_CATALOG=sql STREAMLOAD_CATALOG_URI="$DATABASE_URL" STREAMLOAD_WAREHOUSE="s3://$RUN-tables/warehouse" COMMIT_LEASE_SECONDS=20
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
table = '[route.iceberg]\ntable = "events"\npartition = "hour"\n\n'
open(out, "w").write(events[:columns] + f'[route.index]\nname = "{run}-events"\n\n' + table + events[columns:])
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
# The table committer's mapping: up to 1,000 notifications or 5 s (60 s on AWS by default),
# its sandbox killed 300 ms into its 3rd invocation.
$SL run "sqs://$RUN-commits" --function target/debug/table-committer --until-caught-up --idle-seconds 60 \
  --batch-size 1000 --batching-window-ms 5000 --timeout-seconds 60 --kill-mid-batch 3 --kill-after-ms 300 \
  --log-dir "$LOGS" >"$LOGS/committer-run.txt" 2>&1 &
COMMITTER=$!

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
echo "   waiting for the table committer to drain its queue"
wait "$COMMITTER" || true
# Whatever came after it went idle (none, normally): one more pass, nothing killed.
$SL run "sqs://$RUN-commits" --function target/debug/table-committer --until-caught-up --idle-seconds 5 \
  --batch-size 1000 --batching-window-ms 1000 --timeout-seconds 60 --log-dir "$LOGS" >>"$LOGS/committer-run.txt" 2>&1
echo "-- table committer mapping"
cat "$LOGS/committer-run.txt"

echo "== 5/5 verify: each event once in PostgreSQL and once across the lake and the table, each poison record dead-lettered"
status=0
for source in kinesis kafka; do
  echo "-- $source"
  $SL verify --manifest "$LOGS/$source-manifest.json" || status=1
done
echo "-- the Iceberg table"
$SL verify-table --routes "$STREAMLOAD_CONFIG" || status=1

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
"$PY" - "$DB_URL" "$LOGS" "$RUN" <<'PY'
import glob, json, subprocess, sys
import boto3
url, logs, run = sys.argv[1], sys.argv[2], sys.argv[3]
staged = sum(1 for p in boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=run, Prefix="events/")
             for o in p.get("Contents", []) if o["Key"].endswith(".parquet"))
view = json.loads(subprocess.run([sys.executable, "scripts/iceberg-read.py", url, "streamload", "events", "event_id"],
                                 check=True, capture_output=True, text=True).stdout)
behind = []
for path in glob.glob(f"{logs}/table-committer*.log"):
    for line in open(path):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        fields = doc.get("fields", doc)
        if fields.get("message") == "committed" and int(fields.get("appended", 0)) > 0 and "behind_ms" in fields:
            behind.append(int(fields["behind_ms"]))
behind.sort()
print(f"Iceberg    : table streamload.events: {len(view['rows'])} rows in {view['data_files']} data files "
      f"(from {staged} staged objects), {view['snapshots']} snapshots")
print(f"             python scripts/iceberg-read.py '{url}' streamload events event_id,event_type")
if behind:
    q = lambda p: behind[min(len(behind) - 1, int(p * len(behind)))]
    print(f"Freshness  : the table was {q(0.5)/1000:.1f} s (median), {q(0.95)/1000:.1f} s (p95), {behind[-1]/1000:.1f} s (max) behind the oldest object of each of {len(behind)} commits")
PY
echo "Logs       : $LOGS/ (one file per function sandbox: JSON lines with requestId, coldStart)"
if [ "$status" = 0 ]; then echo "RESULT: exactly once, both sources"; else echo "RESULT: LOSS OR DUPLICATES (see above)"; fi
exit $status
