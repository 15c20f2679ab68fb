#!/usr/bin/env python3
"""Writes events/kinesis-kpl.json: a Kinesis event-source batch whose records were packed by
AWS's own aggregation library (`aws-kinesis-agg` on PyPI, the KPL's format), for the loaders'
de-aggregation tests. Deterministic: the same file every run.

    .venv/bin/pip install aws-kinesis-agg==1.2.3
    .venv/bin/python scripts/kpl-fixture.py

The batch, in sequence order:
  1. an aggregate of five user records over three partition keys: four events and, third,
     a poison record (not JSON);
  2. a plain record (one event, not aggregated);
  3. an aggregate of three events;
  4. an aggregate whose MD5 digest was damaged (poison as a whole).
"""
import base64
import json
import pathlib

from aws_kinesis_agg.aggregator import RecordAggregator

ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/kpl-demo"
SHARD = "shardId-000000000000"


def event(n):
    return json.dumps({
        "event_id": f"kpl-{n:04d}",
        "user_id": f"user-{n % 3}",
        "event_type": "page_view",
        "payload": {"n": n},
        "created_at": "2024-05-01T10:15:30.000000Z",
        "source": "kpl",
        "version": 1,
    }).encode()


def aggregate(user_records):
    agg = RecordAggregator()
    for key, data in user_records:
        assert agg.add_user_record(key, data) is None, "fits one aggregate"
    _, _, data = agg.clear_and_get().get_contents()
    return data


def record(seq, key, data):
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": key,
            "sequenceNumber": str(seq),
            "data": base64.b64encode(data).decode(),
            "approximateArrivalTimestamp": 1714558530.5,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{SHARD}:{seq}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/loader",
        "awsRegion": "us-east-1",
        "eventSourceARN": ARN,
    }


first = aggregate([("user-1", event(1)), ("user-2", event(2)), ("user-1", b"{not json"),
                   ("user-3", event(3)), ("user-2", event(4))])
third = aggregate([("user-4", event(6)), ("user-5", event(7)), ("user-4", event(8))])
damaged = bytearray(aggregate([("user-6", event(9)), ("user-6", event(10))]))
damaged[-1] ^= 0xFF
base = 49590338271490256608559692538361571095921575989136588800
batch = {"Records": [
    record(base + 1, "agg-1", first),
    record(base + 2, "user-9", event(5)),
    record(base + 3, "agg-2", third),
    record(base + 4, "agg-3", bytes(damaged)),
]}
out = pathlib.Path(__file__).resolve().parent.parent / "events" / "kinesis-kpl.json"
out.write_text(json.dumps(batch, indent=2) + "\n")
print(f"wrote {out}")
