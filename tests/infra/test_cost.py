"""scripts/cost.py: the itemised monthly estimate adds up, reads a deployment's parameters, and
compares the dedup table's billing modes the way the prices say it should."""
import importlib.util
import json
import pathlib
import re
import subprocess
import sys

import pytest
from cfnlint.decode import decode

from test_template import PASSWORD_DB, TEMPLATE, resolve

ROOT = TEMPLATE.parents[1]
SCRIPT = ROOT / "scripts" / "cost.py"

spec = importlib.util.spec_from_file_location("cost", SCRIPT)
cost = importlib.util.module_from_spec(spec)
sys.modules["cost"] = cost
spec.loader.exec_module(cost)


def run(*args):
    out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_printed_items_add_up_to_the_printed_total_at_each_of_three_sizes():
    # When the command runs with no rate
    text = run("--samconfig", "samconfig.toml", "--env", "default")
    # Then it prints three sizes, each itemised with a total
    blocks = re.findall(r"^([\d,]+) events/s = .*?\n(.*?)^  total +([\d,.]+) +([\d.]+)$", text, re.S | re.M)
    assert [b[0] for b in blocks] == ["100", "1,000", "10,000"]
    for rate, body, total, per_million in blocks:
        rows = re.findall(r"^  (\S.*?) {2,}([\d,]+\.\d\d) +([\d.]+)  ", body, re.M)
        assert len(rows) >= 10, body
        monthly = [float(r[1].replace(",", "")) for r in rows]
        # each row is rounded to the cent
        assert abs(sum(monthly) - float(total.replace(",", ""))) <= 0.005 * len(rows) + 1e-9, rate
        events_millions = float(rate.replace(",", "")) * cost.SECONDS_PER_MONTH / 1e6
        assert float(per_million) == pytest.approx(float(total.replace(",", "")) / events_millions, abs=1e-4)
    # and says where provisioned dedup capacity halves the DynamoDB term and where on demand wins
    assert "provisioned more than halves the DynamoDB write term above about" in text
    assert "On demand is cheaper when the load's peak is more than" in text


def test_the_json_items_add_up_exactly_and_name_every_priced_service():
    [result] = json.loads(run("--events-per-second", "1000", "--json",
                              "--param", "MskClusterArn=arn:aws:kafka:us-east-1:111122223333:cluster/a/b",
                              "--param", "VpcSubnetIds=subnet-a,subnet-b", "--param", "CreateVpcEndpoints=true"))
    items = {i["name"]: i["monthly_usd"] for i in result["items"]}
    assert sum(items.values()) == pytest.approx(result["total_monthly_usd"])
    for name in ("Lambda requests", "Lambda duration", "DynamoDB dedup writes (on-demand)", "S3 PUTs",
                 "SQS dead letters", "CloudWatch custom metrics (EMF)", "CloudWatch alarms", "CloudWatch dashboard",
                 "VPC interface endpoints", "Kafka provisioned pollers (msk)", "DynamoDB point-in-time recovery"):
        assert items[name] > 0, name
    # one conditional write per event, at the on-demand price
    assert items["DynamoDB dedup writes (on-demand)"] == pytest.approx(1000 * cost.SECONDS_PER_MONTH / 1e6 * 0.625)


def dedup(params, rate, **opts):
    return cost.dedup_write_costs(params, rate, cost.Options(**opts))


@pytest.fixture(scope="module")
def defaults():
    return cost.template_defaults(TEMPLATE)


def test_provisioned_dedup_wins_for_a_steady_heavy_stream_and_loses_for_a_small_or_spiky_one(defaults):
    # Given a steady 10,000 events/s, provisioned capacity costs well under half of on demand
    heavy = dedup(defaults, 10_000)
    assert heavy["PROVISIONED"][0] < 0.5 * heavy["PAY_PER_REQUEST"][0]
    # Given 1 event/s, the capacity floor costs more than paying per write
    small = dedup(defaults, 1)
    assert small["PROVISIONED"][0] > small["PAY_PER_REQUEST"][0]
    # Given 1,000 events/s whose peaks are four times the average, capacity for the peaks costs more
    spiky = dedup(defaults, 1000, peak_to_average=4)
    assert spiky["PROVISIONED"][0] > spiky["PAY_PER_REQUEST"][0]
    # and the same stream steady is cheaper provisioned
    steady = dedup(defaults, 1000)
    assert steady["PROVISIONED"][0] < steady["PAY_PER_REQUEST"][0]


def test_the_deployment_parameters_come_from_samconfig_then_the_command_line(tmp_path):
    # Given a samconfig environment with overrides (quoted, as sam deploy --guided writes them)
    config = tmp_path / "samconfig.toml"
    config.write_text('version = 0.1\n[prod.deploy.parameters]\nparameter_overrides = '
                      '"FunctionMemorySize=\\"2048\\" DedupBillingMode=\\"PROVISIONED\\" '
                      'KinesisStreamArn=\\"arn:aws:kinesis:us-east-1:111122223333:stream/s\\""\n')
    assert cost.samconfig_overrides(config, "prod") == {
        "FunctionMemorySize": "2048", "DedupBillingMode": "PROVISIONED",
        "KinesisStreamArn": "arn:aws:kinesis:us-east-1:111122223333:stream/s"}
    # When the command reads it, and a --param overrides one of them
    [result] = json.loads(run("--samconfig", str(config), "--env", "prod", "--param", "FunctionMemorySize=512",
                              "--events-per-second", "500", "--json"))
    names = [i["name"] for i in result["items"]]
    # Then the estimate prices provisioned dedup and the memory the command line gave
    assert "DynamoDB dedup writes (provisioned)" in names
    duration = next(i for i in result["items"] if i["name"] == "Lambda duration")
    assert "at 512 MB" in duration["detail"]
    assert not result["notes"]  # a source was named
    # and a misspelt parameter is refused, not silently priced at its default
    bad = subprocess.run([sys.executable, str(SCRIPT), "--param", "FunctionMemory=512"], capture_output=True, text=True)
    assert bad.returncode != 0 and "FunctionMemory" in bad.stderr


def test_the_template_defaults_the_command_reads_are_the_templates(defaults):
    tpl, errors = decode(str(TEMPLATE))
    assert not errors
    expected = {name: p["Default"] for name, p in tpl["Parameters"].items() if "Default" in p}
    assert set(defaults) == set(expected)
    for name, value in expected.items():
        assert defaults[name] == (str(value).lower() if isinstance(value, bool) else str(value)), name


@pytest.mark.parametrize("params", [
    {},
    {"KinesisStreamArn": "arn:aws:kinesis:us-east-1:111122223333:stream/s", "StoppedMappingAlarmMinutes": "30"},
    {"MskClusterArn": "arn:aws:kafka:us-east-1:111122223333:cluster/a/b-1",
     "SelfManagedBootstrapServers": "b:9096", "SelfManagedAuthSecretArn": "arn:aws:secretsmanager:x"},
    {"KinesisStreamArn": "arn:aws:kinesis:us-east-1:111122223333:stream/s",
     "MskClusterArn": "arn:aws:kafka:us-east-1:111122223333:cluster/a/b-1", "StoppedMappingAlarmMinutes": "15"},
])
def test_the_alarms_priced_are_the_alarms_the_stack_creates(params, defaults):
    tpl, _ = decode(str(TEMPLATE))
    deployed = resolve(tpl, **params, **PASSWORD_DB)
    alarms = [n for n, r in deployed["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"]
    if not cost.sources({**defaults, **params}):
        # priced as a Kinesis deployment when no source is named
        alarms = [n for n, r in resolve(tpl, KinesisStreamArn="arn:aws:kinesis:us-east-1:1:stream/s", **PASSWORD_DB)["Resources"].items()
                  if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert cost.alarm_count({**defaults, **params}) == len(alarms)


def test_the_cpu_term_is_the_benchmarks_per_workload_and_the_readme_prints_what_the_script_computes():
    # Given the measured figures (BENCHMARKS.md section 5: run K for a live stream, run N's
    # late-to-live ratio for late data)
    assert cost.CPU_US_PER_RECORD == {"live": 43.7, "late": 67.4}
    bench = (ROOT / "BENCHMARKS.md").read_text()
    assert "**43.7**" in bench
    assert "late 46.6 / live 30.2" in bench
    live = {i["name"]: i for i in json.loads(run("--events-per-second", "1000", "--json"))[0]["items"]}
    late = {i["name"]: i for i in json.loads(run("--events-per-second", "1000", "--json", "--workload", "late"))[0]["items"]}
    # Then late data costs more Lambda time, and nothing else changes
    # (the duration holds waiting too, so it grows less than the CPU term)
    assert late["Lambda duration"]["monthly_usd"] > 1.2 * live["Lambda duration"]["monthly_usd"]
    assert {k: v["monthly_usd"] for k, v in live.items() if k != "Lambda duration"} == {
        k: v["monthly_usd"] for k, v in late.items() if k != "Lambda duration"}
    # and the README's three sizes are the script's, to the dollar and the cent per million
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| ([\d,]+) events/s \| [\d,]+ M \| \$([\d,]+) \(\$([\d.]+)\) \| \$([\d,]+) \| \$([\d,]+) \|$", readme, re.M)
    assert len(rows) == 3
    for rate, total, per_million, on_demand, provisioned in rows:
        [r] = json.loads(run("--samconfig", "samconfig.toml", "--env", "default", "--events-per-second", rate.replace(",", ""), "--json"))
        assert abs(r["total_monthly_usd"] - int(total.replace(",", ""))) <= 0.5, rate
        assert f"{r['total_per_million_events_usd']:.2f}" == per_million, rate
        assert abs(r["dedup_writes_monthly_usd"]["PAY_PER_REQUEST"] - int(on_demand.replace(",", ""))) <= 0.5, rate
        assert abs(r["dedup_writes_monthly_usd"]["PROVISIONED"] - int(provisioned.replace(",", ""))) <= 0.5, rate


def test_the_optional_features_are_priced_only_when_asked():
    optional = ("DynamoDB lease renewals (upper bound)", "Search index bulk requests (in the loader)",
                "Table committer invocations", "Table committer claims (DynamoDB)",
                "Table committer reads of staged objects (S3 GET)", "S3 Tables storage",
                "S3 Tables maintenance")
    plain = json.loads(run("--events-per-second", "1000", "--json"))[0]
    assert not [i for i in plain["items"] if i["name"] in optional]
    [full] = json.loads(run("--events-per-second", "1000", "--json", "--with-lease-heartbeat", "--with-search-domain",
                            "--with-table-committer", "--with-s3-tables"))
    items = {i["name"]: i["monthly_usd"] for i in full["items"]}
    for name in optional:
        assert items[name] > 0, name
    # the committer's claims: two writes and a read per staged object (one object per batch)
    puts = next(i for i in full["items"] if i["name"] == "S3 PUTs")
    objects = float(puts["detail"].split(" M")[0].replace(",", "")) * 1e6
    assert items["Table committer claims (DynamoDB)"] == pytest.approx(
        objects * (2 * 0.625 + 0.125) / 1e6, rel=1e-2)
    # one heartbeat write per invocation-second: the Lambda duration's seconds at this memory
    duration = next(i for i in full["items"] if i["name"] == "Lambda duration")
    gb_seconds = float(duration["detail"].split(" GB-s")[0].replace(",", ""))
    assert items["DynamoDB lease renewals (upper bound)"] == pytest.approx(gb_seconds / 1e6 * 0.625, rel=1e-3)
    assert full["total_monthly_usd"] == pytest.approx(sum(items.values()))
