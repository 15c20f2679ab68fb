#!/usr/bin/env python3
"""Monthly cost of a streamload deployment, itemised, from its parameters and an event rate.

    python3 scripts/cost.py --samconfig samconfig.toml --env default --events-per-second 1000
    python3 scripts/cost.py --param DedupBillingMode=PROVISIONED --param FunctionMemorySize=512

Parameters come from infra/template.yaml's defaults, then the samconfig environment's deploy
parameter_overrides, then each --param. Without --events-per-second it prints 100, 1,000 and
10,000 events/s. Standard library only. docs/cost.md shows the arithmetic.

Every price is a named constant below, for us-east-1, with where and when it is from. Free tiers
are left out (they matter only for the smallest deployments), and so are the sources (Kinesis
shards, the MSK cluster), the PostgreSQL database, Secrets Manager secrets the stack does not
create, S3 storage of the Parquet, and data transfer within the region.
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass, field

ROOT = pathlib.Path(__file__).resolve().parents[1]
HOURS_PER_MONTH = 730
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600

# ---- prices: us-east-1, USD ------------------------------------------------------------------
# AWS Lambda (aws.amazon.com/lambda/pricing, arm64, first tier; unchanged 2022-2025).
LAMBDA_REQUEST_PER_MILLION = 0.20
LAMBDA_ARM64_GB_SECOND = 0.0000133334
# Amazon DynamoDB (aws.amazon.com/dynamodb/pricing). On-demand writes were halved from $1.25 to
# $0.625 per million write request units on 2024-11-01 (AWS What's New, 2024-11-14: "Amazon
# DynamoDB reduces prices for on-demand throughput and global tables"). Provisioned capacity
# and storage prices were not changed by that cut.
DYNAMODB_ON_DEMAND_WRU_PER_MILLION = 0.625
# On-demand reads were halved with the writes (same announcement): $0.125 per million RRU.
DYNAMODB_ON_DEMAND_RRU_PER_MILLION = 0.125
DYNAMODB_WCU_HOUR = 0.00065
DYNAMODB_RCU_HOUR = 0.00013
DYNAMODB_STORAGE_GB_MONTH = 0.25
DYNAMODB_PITR_GB_MONTH = 0.20
# Amazon S3 Standard (aws.amazon.com/s3/pricing, 2025): PUT, COPY, POST, LIST per 1,000.
S3_PUT_PER_THOUSAND = 0.005
# GET, SELECT and all other requests per 1,000.
S3_GET_PER_THOUSAND = 0.0004
# Amazon SQS standard queue (aws.amazon.com/sqs/pricing, 2025), per million requests.
SQS_REQUEST_PER_MILLION = 0.40
# Amazon CloudWatch (aws.amazon.com/cloudwatch/pricing, 2025): custom metric (first 10,000),
# standard-resolution alarm, dashboard, log ingestion (Standard log class).
CLOUDWATCH_METRIC_MONTH = 0.30
CLOUDWATCH_ALARM_MONTH = 0.10
CLOUDWATCH_DASHBOARD_MONTH = 3.00
CLOUDWATCH_LOGS_INGEST_GB = 0.50
# AWS KMS (aws.amazon.com/kms/pricing, 2025): a customer managed key per month (the alarm key).
KMS_KEY_MONTH = 1.00
# AWS PrivateLink interface endpoints (aws.amazon.com/privatelink/pricing, 2025): per endpoint
# per Availability Zone hour, and per GB processed (first PB). Gateway endpoints are free.
VPC_INTERFACE_ENDPOINT_AZ_HOUR = 0.01
VPC_INTERFACE_ENDPOINT_GB = 0.01
# NAT gateway (aws.amazon.com/vpc/pricing, 2025): per hour and per GB processed.
NAT_GATEWAY_HOUR = 0.045
NAT_GATEWAY_GB = 0.045
# Lambda event-source mapping provisioned mode (Kafka): billed in Event Poller Units (EPU).
# ASSUMPTION - not confirmed against the pricing page from here: $0.185 per EPU-hour, one EPU
# holding up to 10 event pollers. Check aws.amazon.com/lambda/pricing and pass --epu-hour-usd
# and --pollers-per-epu if they differ.
KAFKA_EPU_HOUR = 0.185
KAFKA_POLLERS_PER_EPU = 10
# Each Kafka event poller handles up to 5 MB/s (Lambda developer guide, Kafka scaling modes).
KAFKA_POLLER_BYTES_PER_SECOND = 5_000_000
# Amazon S3 Tables (aws.amazon.com/s3/pricing, S3 Tables tab). ASSUMPTION - not confirmed against
# the pricing page from here: storage per GB-month, compaction per GB processed and per 1,000
# objects processed, monitoring per 1,000 objects a month. Pass --s3-tables-* to correct them.
S3_TABLES_GB_MONTH = 0.0265
S3_TABLES_COMPACTION_GB = 0.05
S3_TABLES_COMPACTION_PER_THOUSAND_OBJECTS = 0.004
S3_TABLES_MONITORING_PER_THOUSAND_OBJECTS = 0.025

# ---- what the loaders do (measured) -------------------------------------------------------------
# Loader CPU per record, whole invocation, one vCPU (BENCHMARKS.md section 5, run K: 43.7 us per
# record against moto on a live stream, 40.3 with claims answered concurrently). Late data spread
# over many hours (about 100 small objects per 1,000 records) is priced at the ratio run N measured
# beside a live stream in one run, 46.6 / 30.2 us per record: 43.7 x 1.543 = 67.4 us.
CPU_US_PER_RECORD = {"live": 43.7, "late": 67.4}

# ---- what the loaders do ----------------------------------------------------------------------
# EMF metrics each function emits, dimensioned by its own name (shared/core/src/metrics.rs).
EMF_METRICS_PER_FUNCTION = 8
# Kinesis: one shard takes 1,000 records/s; Lambda polls each shard about once a second.
KINESIS_RECORDS_PER_SHARD_SECOND = 1000
# 1,769 MB is one vCPU; less memory gets that fraction of one. The loader's CPU work is taken
# to run on one vCPU, so more memory does not make it faster.
MB_PER_VCPU = 1769
# The target-tracking utilisation of the stack's dedup write auto scaling (infra/template.yaml).
DEDUP_TARGET_UTILISATION = 0.70


@dataclass
class Item:
    name: str
    monthly: float
    detail: str = ""


@dataclass
class Estimate:
    events_per_second: float
    items: list[Item] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(i.monthly for i in self.items)

    @property
    def events_per_month(self) -> float:
        return self.events_per_second * SECONDS_PER_MONTH

    def per_million(self, monthly: float) -> float:
        return monthly / (self.events_per_month / 1e6) if self.events_per_second > 0 else 0.0


# ---- parameters -------------------------------------------------------------------------------
def template_defaults(path: pathlib.Path) -> dict[str, str]:
    """Each parameter's Default in the template's Parameters section (a plain-text read: the
    template's own layout, two-space indents)."""
    text = path.read_text()
    section = re.search(r"^Parameters:\n(.*?)^\S", text, re.S | re.M)
    if not section:
        raise SystemExit(f"{path}: no Parameters section")
    defaults: dict[str, str] = {}
    name = None
    for line in section[1].splitlines():
        if m := re.match(r"^  ([A-Za-z0-9]+):\s*$", line):
            name = m[1]
        elif name and (m := re.match(r"^    Default:\s*(.*?)\s*$", line)):
            defaults[name] = unquote(m[1])
    return defaults


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def samconfig_overrides(path: pathlib.Path, env: str) -> dict[str, str]:
    """The parameter_overrides of the environment's deploy (or global) parameters."""
    config = tomllib.loads(path.read_text())
    overrides: dict[str, str] = {}
    for command in ("global", "deploy"):
        raw = config.get(env, {}).get(command, {}).get("parameters", {}).get("parameter_overrides")
        if raw is None:
            continue
        pairs = raw if isinstance(raw, list) else shlex.split(raw)
        overrides.update(split_pair(p) for p in pairs)
    return overrides


def split_pair(pair: str) -> tuple[str, str]:
    key, sep, value = pair.partition("=")
    if not sep or not key:
        raise SystemExit(f"expected Key=Value, got {pair!r}")
    return key.strip(), unquote(value.strip())


def number(params: dict[str, str], name: str) -> float:
    try:
        return float(params[name])
    except (KeyError, ValueError):
        raise SystemExit(f"parameter {name} must be a number, is {params.get(name)!r}") from None


def listed(params: dict[str, str], name: str) -> list[str]:
    return [v for v in params.get(name, "").split(",") if v.strip()]


# ---- the estimate -----------------------------------------------------------------------------
@dataclass
class Options:
    cpu_us_per_record: float = CPU_US_PER_RECORD["live"]
    io_ms_per_batch: float = 50.0
    event_bytes: float = 1000.0
    parquet_ratio: float = 0.25
    objects_per_batch: float = 1.0
    writes_per_event: float = 1.0
    dedup_item_bytes: float = 150.0
    poison_fraction: float = 0.0001
    log_bytes_per_batch: float = 3000.0
    peak_to_average: float = 1.0
    shards: int | None = None
    nat_gateways: int = 0
    epu_hour_usd: float = KAFKA_EPU_HOUR
    pollers_per_epu: int = KAFKA_POLLERS_PER_EPU
    # Optional features (off by default; --with-* prices them).
    lease_heartbeat: bool = False
    search_domain: bool = False
    search_ms_per_batch: float = 30.0
    table_committer: bool = False
    committer_interval_seconds: float = 60.0
    # BENCHMARKS.md §6 run Q: a minute's staging (120 objects) committed in about 1.0 s.
    committer_seconds_per_commit: float = 1.0
    s3_tables: bool = False
    s3_tables_retention_days: float = 30.0


def sources(params: dict[str, str]) -> list[str]:
    found = []
    if params.get("KinesisStreamArn"):
        found.append("kinesis")
    if params.get("MskClusterArn"):
        found.append("msk")
    if listed(params, "SelfManagedBootstrapServers"):
        found.append("self-managed")
    return found


def alarm_count(params: dict[str, str]) -> int:
    """The CloudWatch alarms the stack creates with these parameters (infra/template.yaml)."""
    srcs = sources(params) or ["kinesis"]
    stopped = number(params, "StoppedMappingAlarmMinutes") > 0
    per_function = 5  # lag, errors, throttles, failed, poison records
    per_mapping = 1 + (1 if stopped else 0)  # the mapping's errors (+ stopped polling)
    functions = ("kinesis" in srcs) + any(s in srcs for s in ("msk", "self-managed"))
    return 2 + per_function * functions + per_mapping * len(srcs)  # + dead-letter and on-failure queue depth


# Event-source mapping metrics (MetricsConfig) each mapping publishes: EventCount's that apply
# to the source, plus ErrorCount's five and KafkaMetrics' two for Kafka. ASSUMPTION: billed like
# custom metrics (check the Lambda and CloudWatch pricing pages).
ESM_METRICS = {"kinesis": 6, "msk": 7 + 5 + 2, "self-managed": 7 + 5 + 2}


def kafka_pollers(params: dict[str, str], rate: float, opts: Options) -> int:
    need = math.ceil(rate * opts.event_bytes / KAFKA_POLLER_BYTES_PER_SECOND)
    return int(min(number(params, "KafkaMaxPollers"), max(number(params, "KafkaMinPollers"), need)))


def dedup_write_costs(params: dict[str, str], rate: float, opts: Options) -> dict[str, tuple[float, str]]:
    """Monthly cost of the dedup table's writes (and provisioned reads) in both billing modes."""
    writes_per_second = rate * opts.writes_per_event
    on_demand = writes_per_second * SECONDS_PER_MONTH / 1e6 * DYNAMODB_ON_DEMAND_WRU_PER_MILLION
    low = number(params, "DedupMinWriteCapacity")
    # Auto scaling reacts within minutes: capacity follows the load at the target utilisation, and
    # a load that swings must be provisioned for its peaks (or be throttled in them).
    # Priced at the capacity the load needs, even above DedupMaxWriteCapacity (estimate() notes it:
    # capped there, the table would throttle instead).
    wcu = max(low, writes_per_second * opts.peak_to_average / DEDUP_TARGET_UTILISATION)
    rcu = number(params, "DedupReadCapacity")
    provisioned = (wcu * DYNAMODB_WCU_HOUR + rcu * DYNAMODB_RCU_HOUR) * HOURS_PER_MONTH
    return {
        "PAY_PER_REQUEST": (on_demand, f"{writes_per_second * SECONDS_PER_MONTH / 1e6:,.1f} M conditional writes x ${DYNAMODB_ON_DEMAND_WRU_PER_MILLION}/M WRU"),
        "PROVISIONED": (provisioned, f"{wcu:,.0f} WCU + {rcu:,.0f} RCU x {HOURS_PER_MONTH} h"),
    }


def estimate(params: dict[str, str], rate: float, opts: Options) -> Estimate:
    est = Estimate(rate)
    srcs = sources(params)
    if not srcs:
        srcs = ["kinesis"]
        est.notes.append("no source parameter set: priced as one Kinesis stream")
    memory = number(params, "FunctionMemorySize")
    per_source = rate / len(srcs)

    invocations = 0.0
    gb_seconds = 0.0
    batches = 0.0
    for src in srcs:
        if src == "kinesis":
            batch = number(params, "KinesisBatchSize")
            interval = max(number(params, "KinesisBatchingWindowSeconds"), 1.0)
            shards = opts.shards or max(1, math.ceil(per_source / KINESIS_RECORDS_PER_SHARD_SECOND))
            lanes = shards * number(params, "KinesisParallelizationFactor")
        else:
            batch = number(params, "KafkaBatchSize")
            interval = max(number(params, "KafkaBatchingWindowSeconds"), 0.5)
            lanes = kafka_pollers(params, per_source, opts)
        # A full batch goes at once; otherwise each lane sends what it has once an interval.
        per_second = max(per_source / batch, min(per_source, lanes / interval)) if per_source > 0 else 0.0
        records = per_source / per_second if per_second else 0.0
        cpu_seconds = records * opts.cpu_us_per_record / 1e6 * max(1.0, MB_PER_VCPU / memory)
        duration = opts.io_ms_per_batch / 1000 + cpu_seconds
        if per_second * duration > lanes:
            est.notes.append(f"{src}: {per_second * duration:.1f} batches would run at once on {lanes:.0f} lanes: "
                             "add shards/partitions, ParallelizationFactor or memory, or it falls behind")
        invocations += per_second * SECONDS_PER_MONTH
        gb_seconds += per_second * SECONDS_PER_MONTH * duration * memory / 1024
        batches += per_second * SECONDS_PER_MONTH

    add = est.items.append
    add(Item("Lambda requests", invocations / 1e6 * LAMBDA_REQUEST_PER_MILLION,
             f"{invocations / 1e6:,.2f} M invocations"))
    add(Item("Lambda duration", gb_seconds * LAMBDA_ARM64_GB_SECOND,
             f"{gb_seconds:,.0f} GB-s at {memory:.0f} MB (arm64)"))

    mode = params.get("DedupBillingMode", "PAY_PER_REQUEST")
    writes = dedup_write_costs(params, rate, opts)
    needed = rate * opts.writes_per_event * opts.peak_to_average / DEDUP_TARGET_UTILISATION
    if mode == "PROVISIONED" and needed > number(params, "DedupMaxWriteCapacity"):
        est.notes.append(f"the load needs {needed:,.0f} WCU at {DEDUP_TARGET_UTILISATION:.0%}, above DedupMaxWriteCapacity "
                         f"{number(params, 'DedupMaxWriteCapacity'):,.0f}: raise it, or the table throttles (priced at the need)")
    cost, detail = writes[mode]
    add(Item(f"DynamoDB dedup writes ({'on-demand' if mode == 'PAY_PER_REQUEST' else 'provisioned'})", cost, detail))
    stored_gb = rate * number(params, "DedupTtlSeconds") * opts.dedup_item_bytes / 1e9
    add(Item("DynamoDB dedup storage", stored_gb * DYNAMODB_STORAGE_GB_MONTH,
             f"{stored_gb:,.1f} GB: {number(params, 'DedupTtlSeconds') / 86400:g} days of claims"))
    if params.get("DedupPointInTimeRecovery", "true") == "true":
        add(Item("DynamoDB point-in-time recovery", stored_gb * DYNAMODB_PITR_GB_MONTH, f"{stored_gb:,.1f} GB"))

    puts = batches * opts.objects_per_batch
    add(Item("S3 PUTs", puts / 1000 * S3_PUT_PER_THOUSAND, f"{puts / 1e6:,.2f} M Parquet objects"))
    dead = rate * SECONDS_PER_MONTH * opts.poison_fraction
    add(Item("SQS dead letters", dead / 1e6 * SQS_REQUEST_PER_MILLION, f"{opts.poison_fraction:.2%} of events"))

    functions = ("kinesis" in srcs) + any(s in srcs for s in ("msk", "self-managed"))
    add(Item("CloudWatch custom metrics (EMF)", functions * EMF_METRICS_PER_FUNCTION * CLOUDWATCH_METRIC_MONTH,
             f"{EMF_METRICS_PER_FUNCTION} metrics x {functions} function(s)"))
    esm_metrics = sum(ESM_METRICS[s] for s in srcs)
    add(Item("Event-source mapping metrics", esm_metrics * CLOUDWATCH_METRIC_MONTH,
             f"{esm_metrics} metrics over {len(srcs)} mapping(s) (ASSUMED billed as custom metrics)"))
    log_gb = batches * opts.log_bytes_per_batch / 1e9
    add(Item("CloudWatch Logs ingestion", log_gb * CLOUDWATCH_LOGS_INGEST_GB, f"{log_gb:,.2f} GB of batch lines"))
    alarms = alarm_count(params)
    add(Item("CloudWatch alarms", alarms * CLOUDWATCH_ALARM_MONTH, f"{alarms} standard alarms"))
    add(Item("CloudWatch dashboard", CLOUDWATCH_DASHBOARD_MONTH, "1 dashboard"))
    if params.get("AlarmTopicEncryption", "CUSTOMER_KEY") == "CUSTOMER_KEY":
        add(Item("KMS alarm key", KMS_KEY_MONTH, "1 customer managed key"))

    subnets = listed(params, "VpcSubnetIds")
    if subnets and params.get("CreateVpcEndpoints") == "true":
        hours = 2 * len(subnets) * HOURS_PER_MONTH
        add(Item("VPC interface endpoints", hours * VPC_INTERFACE_ENDPOINT_AZ_HOUR + dead * opts.event_bytes / 1e9 * VPC_INTERFACE_ENDPOINT_GB,
                 f"SQS + Secrets Manager in {len(subnets)} AZs; S3, DynamoDB by free gateways"))
    elif subnets:
        nat_gb = rate * SECONDS_PER_MONTH * (opts.event_bytes * opts.parquet_ratio + 2 * opts.dedup_item_bytes) / 1e9
        add(Item("NAT gateway", nat_gb * NAT_GATEWAY_GB + opts.nat_gateways * HOURS_PER_MONTH * NAT_GATEWAY_HOUR,
                 f"{nat_gb:,.0f} GB to S3 and DynamoDB" + (f" + {opts.nat_gateways} gateway(s)" if opts.nat_gateways else " (hours of an existing NAT not counted)")))

    for src in srcs:
        if src in ("msk", "self-managed"):
            pollers = kafka_pollers(params, per_source, opts)
            epus = math.ceil(pollers / opts.pollers_per_epu)
            add(Item(f"Kafka provisioned pollers ({src})", epus * HOURS_PER_MONTH * opts.epu_hour_usd,
                     f"{pollers} poller(s) = {epus} EPU (ASSUMED ${opts.epu_hour_usd}/EPU-h)"))

    # ---- holder-lease renewals (built): priced only when asked for, as their upper bound --
    # one write per invocation-second; an invocation under 1.25 s writes none
    if opts.lease_heartbeat:
        beats = gb_seconds * 1024 / memory
        add(Item("DynamoDB lease renewals (upper bound)", beats / 1e6 * DYNAMODB_ON_DEMAND_WRU_PER_MILLION,
                 f"at most {beats / 1e6:,.2f} M writes: one per invocation-second (none under 1.25 s)"))
    # ---- the optional sinks: priced only when asked for (--with-*)
    if opts.search_domain:
        extra = batches * opts.search_ms_per_batch / 1000 * memory / 1024
        add(Item("Search index bulk requests (in the loader)", extra * LAMBDA_ARM64_GB_SECOND,
                 f"{batches / 1e6:,.2f} M _bulk requests, {opts.search_ms_per_batch:g} ms each in the loader; the domain's own hours are yours"))
    if opts.table_committer:
        # One table per route (objects_per_batch counts the routes' objects of a batch); the
        # template's committer has 1,024 MB.
        commits = SECONDS_PER_MONTH / opts.committer_interval_seconds * max(1, round(opts.objects_per_batch))
        add(Item("Table committer invocations",
                 commits / 1e6 * LAMBDA_REQUEST_PER_MILLION + commits * opts.committer_seconds_per_commit * 1.0 * LAMBDA_ARM64_GB_SECOND,
                 f"{commits:,.0f} commits a month (one per table every {opts.committer_interval_seconds:g} s, 1,024 MB, {opts.committer_seconds_per_commit:g} s measured)"))
        # Per staged object: a claim read, a conditional put and a mark (docs/exactly-once.md,
        # "The table committer"), and one GET of the object.
        add(Item("Table committer claims (DynamoDB)",
                 puts * 2 / 1e6 * DYNAMODB_ON_DEMAND_WRU_PER_MILLION + puts / 1e6 * DYNAMODB_ON_DEMAND_RRU_PER_MILLION,
                 f"{puts / 1e6:,.2f} M staged objects: 2 writes and 1 read each"))
        add(Item("Table committer reads of staged objects (S3 GET)", puts / 1000 * S3_GET_PER_THOUSAND,
                 f"{puts / 1e6:,.2f} M GETs"))
    if opts.s3_tables:
        stored = rate * opts.event_bytes * opts.parquet_ratio * 86400 * opts.s3_tables_retention_days / 1e9
        monthly_gb = rate * opts.event_bytes * opts.parquet_ratio * SECONDS_PER_MONTH / 1e9
        add(Item("S3 Tables storage", stored * S3_TABLES_GB_MONTH,
                 f"{stored:,.0f} GB kept {opts.s3_tables_retention_days:g} days (ASSUMED ${S3_TABLES_GB_MONTH}/GB-month)"))
        add(Item("S3 Tables maintenance",
                 monthly_gb * S3_TABLES_COMPACTION_GB + puts / 1000 * (S3_TABLES_COMPACTION_PER_THOUSAND_OBJECTS + S3_TABLES_MONITORING_PER_THOUSAND_OBJECTS),
                 f"compaction of {monthly_gb:,.0f} GB and {puts / 1e6:,.2f} M objects (ASSUMED prices)"))
    return est


def breakeven(params: dict[str, str], opts: Options) -> list[str]:
    """Where provisioned dedup capacity wins, for this deployment's capacity parameters."""
    steady = Options(**{**opts.__dict__, "peak_to_average": 1.0})
    per_write_on_demand = DYNAMODB_ON_DEMAND_WRU_PER_MILLION / 1e6
    per_write_provisioned = DYNAMODB_WCU_HOUR / 3600 / DEDUP_TARGET_UTILISATION
    ratio = per_write_provisioned / per_write_on_demand
    rate = 0.01
    while rate < 1e6:
        w = dedup_write_costs(params, rate, steady)
        if w["PROVISIONED"][0] < w["PAY_PER_REQUEST"][0]:
            break
        rate *= 1.01
    return [
        f"A steady stream's dedup writes cost {ratio:.0%} as much provisioned as on demand "
        f"(${DYNAMODB_WCU_HOUR}/WCU-h at {DEDUP_TARGET_UTILISATION:.0%} vs ${DYNAMODB_ON_DEMAND_WRU_PER_MILLION}/M WRU): "
        f"provisioned more than halves the DynamoDB write term above about {rate:,.1f} events/s "
        f"(below it the {number(params, 'DedupMinWriteCapacity'):.0f} WCU / {number(params, 'DedupReadCapacity'):.0f} RCU floor costs more).",
        f"On demand is cheaper when the load's peak is more than {1 / ratio:.1f}x its average "
        "(capacity must follow the peaks; auto scaling takes minutes), and for bursts no capacity foresaw.",
    ]


# ---- output -----------------------------------------------------------------------------------
def report(params: dict[str, str], rates: list[float], opts: Options, origin: str) -> str:
    srcs = sources(params) or ["kinesis (assumed)"]
    lines = [
        "streamload: monthly cost estimate (us-east-1 prices; docs/cost.md)",
        f"parameters: {origin}",
        f"sources: {', '.join(srcs)}; memory {number(params, 'FunctionMemorySize'):.0f} MB; "
        f"dedup {params.get('DedupBillingMode', 'PAY_PER_REQUEST')}",
        f"assumed: {opts.cpu_us_per_record:g} us CPU per record, {opts.io_ms_per_batch:g} ms I/O per batch, "
        f"{opts.event_bytes:g}-byte events, {opts.writes_per_event:g} dedup write(s) per event, "
        f"peak/average {opts.peak_to_average:g}",
    ]
    for rate in rates:
        est = estimate(params, rate, opts)
        lines += ["", f"{rate:,.0f} events/s = {est.events_per_month / 1e6:,.1f} M events a month",
                  f"  {'item':<42} {'$/month':>11} {'$/M events':>11}  detail"]
        for item in est.items:
            lines.append(f"  {item.name:<42} {item.monthly:>11,.2f} {est.per_million(item.monthly):>11,.4f}  {item.detail}")
        lines.append(f"  {'total':<42} {est.total:>11,.2f} {est.per_million(est.total):>11,.4f}")
        w = dedup_write_costs(params, rate, opts)
        lines.append(f"  dedup writes at this rate: on-demand ${w['PAY_PER_REQUEST'][0]:,.2f}, "
                     f"provisioned ${w['PROVISIONED'][0]:,.2f} a month")
        lines += [f"  note: {n}" for n in est.notes]
    lines += [""] + breakeven(params, opts)
    return "\n".join(lines)


def as_json(params: dict[str, str], rates: list[float], opts: Options) -> str:
    out = []
    for rate in rates:
        est = estimate(params, rate, opts)
        w = dedup_write_costs(params, rate, opts)
        out.append({
            "events_per_second": rate,
            "items": [{"name": i.name, "monthly_usd": i.monthly, "detail": i.detail} for i in est.items],
            "total_monthly_usd": est.total,
            "total_per_million_events_usd": est.per_million(est.total),
            "dedup_writes_monthly_usd": {mode: cost for mode, (cost, _) in w.items()},
            "notes": est.notes,
        })
    return json.dumps(out, indent=2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--template", type=pathlib.Path, default=ROOT / "infra" / "template.yaml")
    ap.add_argument("--samconfig", type=pathlib.Path, help="read parameter_overrides from this samconfig.toml")
    ap.add_argument("--env", default="default", help="samconfig environment (default: default)")
    ap.add_argument("--param", action="append", default=[], metavar="Key=Value", help="override a parameter (repeatable)")
    ap.add_argument("--events-per-second", type=float, action="append", help="event rate (repeatable; default 100, 1000, 10000)")
    ap.add_argument("--workload", choices=sorted(CPU_US_PER_RECORD), default="live",
                    help="the measured CPU per record: live (a stream loaded as it arrives, 43.7 us) or late "
                         "(late data spread over many hours, 67.4 us); default live")
    ap.add_argument("--cpu-us-per-record", type=float,
                    help="loader CPU per record on one vCPU, microseconds (default: the workload's measured figure)")
    ap.add_argument("--with-lease-heartbeat", action="store_true",
                    help="price holder-lease renewals at their upper bound, one DynamoDB write per invocation-second "
                         "(built; an invocation under 1.25 s writes none; off by default)")
    for feature, text in (("search-domain", "a search domain's bulk requests"),
                          ("table-committer", "the table committer's invocations"),
                          ("s3-tables", "S3 Tables storage and maintenance")):
        ap.add_argument(f"--with-{feature}", action="store_true", help=f"price {text} (off by default)")
    ap.add_argument("--io-ms-per-batch", type=float, default=Options.io_ms_per_batch,
                    help="billed wait per batch for DynamoDB, S3 and PostgreSQL round trips (default 50)")
    ap.add_argument("--event-bytes", type=float, default=Options.event_bytes, help="average event size (default 1000)")
    ap.add_argument("--objects-per-batch", type=float, default=Options.objects_per_batch, help="S3 objects per batch: one per route (default 1)")
    ap.add_argument("--writes-per-event", type=float, default=Options.writes_per_event,
                    help="conditional PutItems per event; redeliveries add to it (default 1)")
    ap.add_argument("--dedup-item-bytes", type=float, default=Options.dedup_item_bytes, help="stored size of one claim (default 150)")
    ap.add_argument("--poison-fraction", type=float, default=Options.poison_fraction, help="share of events dead-lettered (default 0.0001)")
    ap.add_argument("--peak-to-average", type=float, default=Options.peak_to_average,
                    help="load peak over its average; 1 is a steady stream (default 1)")
    ap.add_argument("--shards", type=int, help="Kinesis shards (default: rate / 1000)")
    ap.add_argument("--nat-gateways", type=int, default=0, help="NAT gateways the deployment adds (default 0: an existing NAT)")
    ap.add_argument("--epu-hour-usd", type=float, default=KAFKA_EPU_HOUR, help=f"Kafka provisioned-mode EPU-hour price (assumed {KAFKA_EPU_HOUR})")
    ap.add_argument("--pollers-per-epu", type=int, default=KAFKA_POLLERS_PER_EPU, help=f"event pollers per EPU (assumed {KAFKA_POLLERS_PER_EPU})")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    args = ap.parse_args(argv)

    params = template_defaults(args.template)
    origin = [f"{args.template.name} defaults"]
    if args.samconfig:
        over = samconfig_overrides(args.samconfig, args.env)
        params.update(over)
        origin.append(f"{args.samconfig.name} [{args.env}] ({len(over)} overrides)")
    cli = dict(split_pair(p) for p in args.param)
    unknown = set(cli) - set(params)
    if unknown:
        raise SystemExit(f"no such template parameters: {', '.join(sorted(unknown))}")
    params.update(cli)
    if cli:
        origin.append(f"{len(cli)} --param")
    cpu = args.cpu_us_per_record if args.cpu_us_per_record is not None else CPU_US_PER_RECORD[args.workload]
    opts = Options(cpu_us_per_record=cpu, io_ms_per_batch=args.io_ms_per_batch,
                   event_bytes=args.event_bytes, objects_per_batch=args.objects_per_batch,
                   writes_per_event=args.writes_per_event, dedup_item_bytes=args.dedup_item_bytes,
                   poison_fraction=args.poison_fraction, peak_to_average=args.peak_to_average,
                   shards=args.shards, nat_gateways=args.nat_gateways, epu_hour_usd=args.epu_hour_usd,
                   pollers_per_epu=args.pollers_per_epu, lease_heartbeat=args.with_lease_heartbeat,
                   search_domain=args.with_search_domain, table_committer=args.with_table_committer,
                   s3_tables=args.with_s3_tables)
    rates = args.events_per_second or [100.0, 1000.0, 10000.0]
    print(as_json(params, rates, opts) if args.json else report(params, rates, opts, " + ".join(origin)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
