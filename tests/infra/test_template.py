"""Checks of infra/template.yaml that cfn-lint and `sam validate` do not make.

The template is read with cfn-lint's own YAML decoder, so intrinsic functions (!Ref, !If, ...)
arrive as dictionaries.
"""
import pathlib

import pytest
from cfnlint.decode import decode

TEMPLATE = pathlib.Path(__file__).resolve().parents[2] / "infra" / "template.yaml"


@pytest.fixture(scope="module")
def template():
    tpl, errors = decode(str(TEMPLATE))
    assert not errors, errors
    return tpl


def resources(template, kind):
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def param(template, value):
    """The parameter a property refers to."""
    assert isinstance(value, dict) and "Ref" in value, f"expected a parameter reference, got {value!r}"
    return template["Parameters"][value["Ref"]]


def test_every_event_source_reports_partial_failures_bisects_and_bounds_retries(template):
    mappings = resources(template, "AWS::Lambda::EventSourceMapping")
    assert set(mappings) == {"KinesisMapping", "MskMapping", "SelfManagedKafkaMapping"}
    for name, m in mappings.items():
        p = m["Properties"]
        assert p["FunctionResponseTypes"] == ["ReportBatchItemFailures"], name
        assert p["BisectBatchOnFunctionError"] is True, name
        retries = param(template, p["MaximumRetryAttempts"])
        assert retries["MinValue"] >= 0 and retries["MaxValue"] <= 10000, f"{name}: retries must be bounded"
        assert 0 <= retries["Default"] <= 100, name
        assert p["DestinationConfig"]["OnFailure"]["Destination"], f"{name}: on-failure destination"
        age = param(template, p["MaximumRecordAgeInSeconds"])
        assert 60 <= age["Default"] <= 604800 and age["MinValue"] >= 60, name
        assert "Condition" in m, f"{name} must be optional"


def test_kinesis_record_age_stays_below_the_stream_retention(template):
    p = template["Resources"]["KinesisMapping"]["Properties"]
    age = param(template, p["MaximumRecordAgeInSeconds"])["Default"]
    retention_hours = template["Parameters"]["KinesisStreamRetentionHours"]["Default"]
    assert age < retention_hours * 3600


def test_kafka_mappings_use_provisioned_pollers(template):
    # Error-handling controls for Kafka mappings exist only in provisioned mode.
    for name in ("MskMapping", "SelfManagedKafkaMapping"):
        cfg = template["Resources"][name]["Properties"]["ProvisionedPollerConfig"]
        assert cfg["MinimumPollers"] and cfg["MaximumPollers"], name


def iam_statements(template):
    for name, r in template["Resources"].items():
        props = r.get("Properties", {})
        if r["Type"] == "AWS::IAM::Role":
            for pol in props.get("Policies", []):
                if isinstance(pol, dict) and "Fn::If" in pol:
                    pol = pol["Fn::If"][1]
                for st in pol["PolicyDocument"]["Statement"]:
                    yield name, st
        elif r["Type"] == "AWS::IAM::ManagedPolicy":
            for st in props["PolicyDocument"]["Statement"]:
                yield name, st


def as_list(v):
    return v if isinstance(v, list) else [v]


def test_no_iam_statement_grants_a_wildcard_action(template):
    seen = 0
    for name, st in iam_statements(template):
        if isinstance(st, dict) and "Fn::If" in st:
            st = st["Fn::If"][1]
        for action in as_list(st["Action"]):
            seen += 1
            assert "*" not in action, f"{name}: wildcard action {action}"
    assert seen > 10


# Actions IAM accepts only on Resource "*" (each is commented in the template).
STAR_RESOURCE_ONLY = {
    "kinesis:ListStreams",
    "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses",
    "ec2:DescribeVpcs", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups",
}


def test_star_resources_only_where_aws_requires_them(template):
    for name, st in iam_statements(template):
        if isinstance(st, dict) and "Fn::If" in st:
            st = st["Fn::If"][1]
        if st["Resource"] == "*":
            extra = set(as_list(st["Action"])) - STAR_RESOURCE_ONLY
            assert not extra, f"{name}: {extra} on Resource '*'"


def test_functions_are_arm64_rust_on_al2023_with_no_password_in_the_environment(template):
    g = template["Globals"]["Function"]
    assert g["Runtime"] == "provided.al2023" and g["Architectures"] == ["arm64"]
    env = g["Environment"]["Variables"]
    assert "DATABASE_SECRET_ARN" in env and "DATABASE_URL" not in env
    assert not any("PASSWORD" in k for k in env)
    for name, f in resources(template, "AWS::Serverless::Function").items():
        assert f["Metadata"]["BuildMethod"] == "rust-cargolambda", name
        assert f["Metadata"]["BuildProperties"]["Binary"] in {"kinesis-loader", "kafka-loader"}


def test_storage_is_encrypted_private_and_recoverable(template):
    t = template["Resources"]["DedupTable"]["Properties"]
    assert t["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert t["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert t["SSESpecification"]["SSEEnabled"] is True
    assert t["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    b = template["Resources"]["OutputBucket"]["Properties"]
    assert all(b["PublicAccessBlockConfiguration"].values())
    policy = template["Resources"]["OutputBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert any(s["Effect"] == "Deny" and s["Condition"]["Bool"]["aws:SecureTransport"] == "false" for s in policy)
    for q in ("DeadLetterQueue", "OnFailureQueue"):
        qp = template["Resources"][q]["Properties"]
        assert qp["SqsManagedSseEnabled"] is True and qp["MessageRetentionPeriod"] == 1209600


def test_alarms_cover_lag_errors_throttles_and_dead_letters(template):
    metrics = {a["Properties"]["MetricName"] for a in resources(template, "AWS::CloudWatch::Alarm").values()}
    assert {"IteratorAge", "OffsetLag", "Errors", "Throttles", "ApproximateNumberOfMessagesVisible"} <= metrics


def test_the_route_file_is_the_one_object_the_functions_may_read_besides_their_own(template):
    # Given the shared sink policy
    statements = template["Resources"]["SinkPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    route_file = [s for s in statements if isinstance(s, dict) and "Fn::If" in s]
    # Then the route file's statement exists only with a route file, and grants GetObject on
    # exactly the object its S3 URI names
    assert len(route_file) == 1
    condition, granted, otherwise = route_file[0]["Fn::If"]
    assert condition == "HasRoutesConfig"
    assert otherwise == {"Ref": "AWS::NoValue"}
    assert granted["Action"] == "s3:GetObject"
    path = granted["Resource"]["Fn::Sub"][1]["Path"]
    assert path == {"Fn::Select": [1, {"Fn::Split": ["s3://", {"Ref": "RoutesConfigUri"}]}]}
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["STREAMLOAD_CONFIG"] == {"Ref": "RoutesConfigUri"}


def test_sam_builds_without_a_prompt_and_the_license_file_matches_cargo():
    import tomllib

    root = TEMPLATE.parents[1]
    samconfig = tomllib.loads((root / "samconfig.toml").read_text())
    # rust-cargolambda is a beta build method: without this `sam build` waits at a prompt
    assert samconfig["default"]["global"]["parameters"]["beta_features"] is True
    assert "/.aws-sam" in (root / ".gitignore").read_text().split()
    cargo = tomllib.loads((root / "Cargo.toml").read_text())
    assert cargo["workspace"]["package"]["license"] == "Apache-2.0"
    assert "Apache License\n                           Version 2.0" in (root / "LICENSE").read_text()


def test_a_redeployed_stack_can_reuse_its_dedup_memory(template):
    # Given an existing dedup table by parameter
    assert template["Conditions"]["CreateDedupTable"] == {"Fn::Equals": [{"Ref": "ExistingDedupTableName"}, ""]}
    # Then the stack creates none, and the functions and the policy name the existing one
    assert template["Resources"]["DedupTable"]["Condition"] == "CreateDedupTable"
    assert template["Resources"]["DedupTable"]["DeletionPolicy"] == "Retain"
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["DEDUP_TABLE"] == {"Fn::If": ["CreateDedupTable", {"Ref": "DedupTable"}, {"Ref": "ExistingDedupTableName"}]}
    statements = template["Resources"]["SinkPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    claims = next(s for s in statements if isinstance(s, dict) and s.get("Sid") == "DedupClaims")
    assert claims["Resource"]["Fn::If"][0] == "CreateDedupTable"
    assert "${ExistingDedupTableName}" in claims["Resource"]["Fn::If"][2]["Fn::Sub"]
