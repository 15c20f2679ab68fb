"""Checks of infra/template.yaml that cfn-lint and `sam validate` do not make.

The template is read with cfn-lint's own YAML decoder, so intrinsic functions (!Ref, !If, ...)
arrive as dictionaries.
"""
import json
import pathlib

import pytest
from cfnlint.decode import decode

TEMPLATE = pathlib.Path(__file__).resolve().parents[2] / "infra" / "template.yaml"


@pytest.fixture(scope="module")
def template():
    tpl, errors = decode(str(TEMPLATE))
    assert not errors, errors
    return tpl


def sam_translate(template, **params):
    """The CloudFormation that the SAM transform makes of the template, offline (as cfn-lint
    runs it): the functions' CodeUri stands in for the built artefact."""
    import copy

    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    tpl = copy.deepcopy(template)
    for r in tpl["Resources"].values():
        if r["Type"] == "AWS::Serverless::Function":
            r["Properties"]["CodeUri"] = "s3://artefacts/streamload.zip"
    translator = Translator(managed_policy_map={}, sam_parser=Parser(),
                            boto_session=boto3.session.Session(region_name="us-east-1"))
    return translator.translate(tpl, parameter_values=params)


@pytest.fixture(scope="module")
def translated(template):
    return sam_translate(template)


def resources(template, kind):
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def param(template, value):
    """The parameter a property refers to."""
    assert isinstance(value, dict) and "Ref" in value, f"expected a parameter reference, got {value!r}"
    return template["Parameters"][value["Ref"]]


NO_VALUE = {"Ref": "AWS::NoValue"}


def parameter_values(template, params):
    """Each parameter's value as CloudFormation passes it: a string, or a list of strings."""
    values = {}
    for name, p in template["Parameters"].items():
        v = params.get(name, p.get("Default"))
        assert v is not None, f"{name} has no default: give it"
        if p["Type"] == "CommaDelimitedList":
            values[name] = v if isinstance(v, list) else str(v).split(",")
        else:
            values[name] = str(v).lower() if isinstance(v, bool) else str(v)
    unknown = set(params) - set(values)
    assert not unknown, f"no such parameters: {unknown}"
    return values


def evaluate(expr, values, conditions=None):
    """The value of a condition or rule expression, for the functions the template uses in them."""
    def ev(e):
        return evaluate(e, values, conditions)
    if isinstance(expr, (str, int, float)) and not isinstance(expr, bool):
        return str(expr)
    if isinstance(expr, list):
        return [ev(e) for e in expr]
    (fn, arg), = expr.items()
    if fn == "Ref":
        return values[arg]
    if fn == "Condition":
        return conditions(arg)
    if fn == "Fn::Equals":
        a, b = ev(arg[0]), ev(arg[1])
        return a == b
    if fn == "Fn::Not":
        return not ev(arg[0])
    if fn == "Fn::And":
        return all(ev(a) for a in arg)
    if fn == "Fn::Or":
        return any(ev(a) for a in arg)
    if fn == "Fn::Join":
        parts = ev(arg[1])
        return arg[0].join(p for part in parts for p in (part if isinstance(part, list) else [part]))
    if fn == "Fn::Split":
        return ev(arg[1]).split(arg[0])
    if fn == "Fn::Select":
        return ev(arg[1])[int(ev(arg[0]))]
    if fn == "Fn::EachMemberEquals":
        return all(m == ev(arg[1]) for m in ev(arg[0]))
    if fn == "Fn::Contains":
        return ev(arg[1]) in ev(arg[0])
    raise AssertionError(f"the test resolver does not know {fn}")


def resolve(template, **params):
    """The template as CloudFormation would deploy it with these parameter values (the rest at
    their defaults): conditions evaluated, each Fn::If replaced by its branch, AWS::NoValue
    dropped, resources and outputs whose condition is false removed. Other intrinsics stay."""
    values = parameter_values(template, params)
    cache = {}

    def condition(name):
        if name not in cache:
            cache[name] = evaluate(template["Conditions"][name], values, condition)
        return cache[name]

    def walk(node):
        if isinstance(node, dict):
            if set(node) == {"Fn::If"}:
                name, yes, no = node["Fn::If"]
                return walk(yes if condition(name) else no)
            out = {}
            for k, v in node.items():
                v = walk(v)
                if v != NO_VALUE:
                    out[k] = v
            return out
        if isinstance(node, list):
            return [w for w in (walk(v) for v in node) if w != NO_VALUE]
        return node

    out = {"Parameters": template["Parameters"], "Conditions": {n: condition(n) for n in template["Conditions"]}}
    for section in ("Resources", "Outputs"):
        out[section] = {
            name: walk(r) for name, r in template.get(section, {}).items()
            if "Condition" not in r or condition(r["Condition"])
        }
    out["Globals"] = walk(template["Globals"])
    return out


PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "111122223333",
          "AWS::StackName": "streamload", "AWS::URLSuffix": "amazonaws.com"}


def render(template, expr, **params):
    """The string an expression of parameters becomes (Ref, Fn::Sub, Fn::Select, Fn::Split,
    Fn::Join), with these parameter values and the PSEUDO parameters."""
    import re

    values = {**parameter_values(template, params), **PSEUDO}

    def ev(e):
        if isinstance(e, str):
            return e
        (fn, arg), = e.items()
        if fn == "Ref":
            return values[arg]
        if fn == "Fn::Select":
            return ev(arg[1])[int(arg[0])]
        if fn == "Fn::Split":
            return ev(arg[1]).split(arg[0])
        if fn == "Fn::Join":
            return arg[0].join(ev(arg[1]) if isinstance(arg[1], dict) else [ev(a) for a in arg[1]])
        if fn == "Fn::Sub":
            text, local = (arg, {}) if isinstance(arg, str) else (arg[0], {k: ev(v) for k, v in arg[1].items()})
            return re.sub(r"\$\{([^}]+)\}", lambda m: local[m[1]] if m[1] in local else values[m[1]], text)
        raise AssertionError(f"render does not know {fn}")

    return ev(expr)


def rule_failures(template, **params):
    """The AssertDescription of each Rules assertion these parameter values break."""
    values = parameter_values(template, params)
    failures = []
    for rule in template["Rules"].values():
        if "RuleCondition" in rule and not evaluate(rule["RuleCondition"], values):
            continue
        failures += [a["AssertDescription"] for a in rule["Assertions"] if not evaluate(a["Assert"], values)]
    return failures


def statements_by_sid(resolved, policy_resource):
    """The statements of a resolved managed policy or role, by Sid."""
    props = resolved["Resources"][policy_resource]["Properties"]
    docs = [props["PolicyDocument"]] if "PolicyDocument" in props else [p["PolicyDocument"] for p in props.get("Policies", [])]
    return {st["Sid"]: st for doc in docs for st in doc["Statement"]}


# Enough for the stack to pass its own Rules with password authentication (and an alarm
# destination, which every stack needs).
ALARMS = {"AlarmEmail": "oncall@example.com"}
PASSWORD_DB = {"DatabaseSecretArn": "arn:aws:secretsmanager:us-east-1:111122223333:secret:pg-AbCdEf", **ALARMS}
IAM_DB = {
    **ALARMS, "DatabaseIamAuth": "true", "DatabaseHost": "pg.cluster-abc.us-east-1.rds.amazonaws.com",
    "DatabaseName": "lake", "DatabaseUser": "loader", "DatabaseResourceId": "cluster-ABCDEFGHIJKL",
}


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
        assert f["Metadata"]["BuildProperties"]["Binary"] in {"kinesis-loader", "kafka-loader", "table-committer"}


def test_storage_is_encrypted_private_and_recoverable(template):
    t = resolve(template, **PASSWORD_DB)["Resources"]["DedupTable"]["Properties"]
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


def alarm_metrics(alarm):
    """The metric names an alarm reads: its own, or those of its metric-math inputs."""
    p = alarm["Properties"]
    if "MetricName" in p:
        return {p["MetricName"]}
    return {m["MetricStat"]["Metric"]["MetricName"] for m in p["Metrics"] if "MetricStat" in m}


def test_alarms_cover_lag_errors_throttles_and_dead_letters(template):
    metrics = set().union(*(alarm_metrics(a) for a in resources(template, "AWS::CloudWatch::Alarm").values()))
    assert {"IteratorAge", "OffsetLag", "Errors", "Throttles", "ApproximateNumberOfMessagesVisible"} <= metrics


def test_the_route_file_is_the_one_object_the_functions_may_read_besides_their_own(template):
    # Given the shared sink policy
    statements = template["Resources"]["SinkPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    route_file = [s for s in statements if "Fn::If" in s and s["Fn::If"][1].get("Sid") == "RouteFile"]
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


def test_the_functions_get_every_database_connection_setting_by_name(template):
    # Given the database parameters
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    # Then each reaches both functions under the name the Rust side reads
    expected = {
        "DATABASE_SECRET_ARN": "DatabaseSecretArn", "DATABASE_HOST": "DatabaseHost",
        "DATABASE_PORT": "DatabasePort", "DATABASE_NAME": "DatabaseName", "DATABASE_USER": "DatabaseUser",
        "DATABASE_IAM_AUTH": "DatabaseIamAuth", "DATABASE_SSLMODE": "DatabaseSslMode",
        "DATABASE_SSLROOTCERT": "DatabaseSslRootCert",
    }
    for var, parameter in expected.items():
        if var == "DATABASE_PORT":
            # a port means something only beside a host; without one the secret names it
            assert env[var] == {"Fn::If": ["HasDatabaseHost", {"Ref": parameter}, ""]}
            continue
        assert env[var] == {"Ref": parameter}, var
    assert resolve(template, **PASSWORD_DB)["Globals"]["Function"]["Environment"]["Variables"]["DATABASE_PORT"] == ""
    assert resolve(template, **IAM_DB)["Globals"]["Function"]["Environment"]["Variables"]["DATABASE_PORT"] == {"Ref": "DatabasePort"}
    p = template["Parameters"]
    assert p["DatabaseSslMode"]["AllowedValues"] == ["disable", "require", "verify-ca", "verify-full"]
    assert p["DatabaseSslMode"]["Default"] == "verify-full"
    assert p["DatabaseIamAuth"]["AllowedValues"] == ["false", "true"] and p["DatabaseIamAuth"]["Default"] == "false"
    assert p["DatabasePort"]["Default"] == 5432
    for optional in ("DatabaseSecretArn", "DatabaseHost", "DatabaseName", "DatabaseUser",
                     "DatabaseResourceId", "DatabaseSecretKmsKeyArn", "DatabaseSslRootCert"):
        assert p[optional]["Default"] == "", optional
    # and no function carries a variable of its own that would shadow them
    for name, f in resources(template, "AWS::Serverless::Function").items():
        own = f["Properties"].get("Environment", {}).get("Variables", {})
        assert not set(own) & set(expected), name


def test_password_auth_reads_only_the_secret_and_iam_auth_connects_only_as_its_user(template):
    # Given password authentication
    sink = statements_by_sid(resolve(template, **PASSWORD_DB), "SinkPolicy")
    # Then the functions may read that secret, and may not connect with IAM
    assert sink["DatabaseCredentials"]["Action"] == "secretsmanager:GetSecretValue"
    assert sink["DatabaseCredentials"]["Resource"] == {"Ref": "DatabaseSecretArn"}
    assert "DatabaseIamConnect" not in sink and "DatabaseSecretKey" not in sink

    # Given IAM authentication and no secret
    sink = statements_by_sid(resolve(template, **IAM_DB), "SinkPolicy")
    # Then there is no secret grant, and rds-db:connect names that database user only
    assert "DatabaseCredentials" not in sink
    connect = sink["DatabaseIamConnect"]
    assert connect["Action"] == "rds-db:connect"
    assert connect["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:rds-db:${AWS::Region}:${AWS::AccountId}:dbuser:${DatabaseResourceId}/${DatabaseUser}"}


def test_a_customer_key_on_the_secret_is_usable_through_secrets_manager_only(template):
    # Given a secret encrypted with a customer managed key
    key = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    sink = statements_by_sid(resolve(template, DatabaseSecretKmsKeyArn=key, **PASSWORD_DB), "SinkPolicy")
    # Then the functions may decrypt with it, only by way of Secrets Manager in this region
    decrypt = sink["DatabaseSecretKey"]
    assert decrypt["Action"] == "kms:Decrypt" and decrypt["Resource"] == {"Ref": "DatabaseSecretKmsKeyArn"}
    assert decrypt["Condition"] == {"StringEquals": {"kms:ViaService": {"Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"}}}
    # and without one there is no KMS grant at all
    assert "DatabaseSecretKey" not in statements_by_sid(resolve(template, **PASSWORD_DB), "SinkPolicy")


def test_the_rules_refuse_a_database_connection_that_cannot_sign_in(template):
    # Given neither a secret nor IAM authentication, the stack is refused
    assert rule_failures(template, **ALARMS) == ["Password authentication (DatabaseIamAuth false) needs DatabaseSecretArn."]
    # Given IAM authentication with nothing else, each missing piece is named
    missing = rule_failures(template, DatabaseIamAuth="true", **ALARMS)
    for piece in ("DatabaseHost", "DatabaseUser", "DatabaseName", "DatabaseResourceId"):
        assert any(piece in m for m in missing), piece
    # Given a complete connection of either kind, nothing is refused
    assert rule_failures(template, **PASSWORD_DB) == []
    assert rule_failures(template, **IAM_DB) == []


def test_each_function_logs_json_at_the_chosen_level_into_its_own_log_group(template):
    # Given the LogLevel parameter
    level = template["Parameters"]["LogLevel"]
    # (nothing above INFO: Lambda files the EMF metric lines, which carry no level, as INFO; no
    # TRACE: the AWS SDK logs request and response bodies there, payloads included)
    assert level["AllowedValues"] == ["DEBUG", "INFO"]
    assert level["Default"] == "INFO"
    functions = resources(template, "AWS::Serverless::Function")
    assert set(functions) == {"KinesisLoader", "KafkaLoader", "TableCommitter"}
    for name, f in functions.items():
        # Then Lambda sets AWS_LAMBDA_LOG_LEVEL / AWS_LAMBDA_LOG_FORMAT from LoggingConfig
        logging = f["Properties"]["LoggingConfig"]
        assert logging["LogFormat"] == "JSON", name
        assert logging["ApplicationLogLevel"] == {"Ref": "LogLevel"}, name
        # and the platform's REPORT lines (duration, memory) are INFO: kept
        assert logging["SystemLogLevel"] == "INFO", name
        # into the stack's log group, with its retention, under the same condition as the function
        group = template["Resources"][logging["LogGroup"]["Ref"]]
        assert group["Type"] == "AWS::Logs::LogGroup" and group["Condition"] == f["Condition"], name
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        # and no RUST_LOG competes with the level Lambda passes
        assert "RUST_LOG" not in f["Properties"].get("Environment", {}).get("Variables", {})
    assert "RUST_LOG" not in template["Globals"]["Function"]["Environment"]["Variables"]


def test_every_mapping_invokes_the_live_alias_of_a_function_whose_role_reads_its_source(translated):
    # Given the template as SAM turns it into CloudFormation
    res = translated["Resources"]
    expected_source_sid = {"KinesisMapping": "ReadStream", "MskMapping": "MskCluster", "SelfManagedKafkaMapping": "PollerNetworkInterfaces",
                           "TableCommitterStagedObjects": "Notifications"}
    for name, mapping in resources(translated, "AWS::Lambda::EventSourceMapping").items():
        # Then the mapping's FunctionName is an alias named live, under the mapping's function
        alias_id = mapping["Properties"]["FunctionName"]["Ref"]
        alias = res[alias_id]
        assert alias["Type"] == "AWS::Lambda::Alias" and alias["Properties"]["Name"] == "live", name
        function_id = alias["Properties"]["FunctionName"]["Ref"]
        assert res[function_id]["Type"] == "AWS::Lambda::Function", name
        # which points at a version SAM published of that function
        version = res[alias["Properties"]["FunctionVersion"]["Fn::GetAtt"][0]]
        assert version["Type"] == "AWS::Lambda::Version" and version["Properties"]["FunctionName"] == {"Ref": function_id}
        # and the mapping polls with the function's execution role, which still allows the source
        role_id = res[function_id]["Properties"]["Role"]["Fn::GetAtt"][0]
        sids = {st["Sid"] for pol in res[role_id]["Properties"]["Policies"] if "PolicyDocument" in pol
                for st in pol["PolicyDocument"]["Statement"] if isinstance(st, dict) and "Sid" in st}
        sids |= {st["Fn::If"][1]["Sid"] for pol in res[role_id]["Properties"]["Policies"] if "PolicyDocument" in pol
                 for st in pol["PolicyDocument"]["Statement"] if isinstance(st, dict) and "Fn::If" in st}
        assert expected_source_sid[name] in sids, (name, sids)
        assert alias.get("Condition") == res[function_id].get("Condition")


def test_function_alarms_watch_the_function_name_which_counts_every_version(translated):
    # Lambda's FunctionName dimension aggregates all versions and aliases, so alarms keyed by it
    # keep working when the alias moves; the alias-level metrics carry a Resource dimension.
    for name, alarm in resources(translated, "AWS::CloudWatch::Alarm").items():
        p = alarm["Properties"]
        if p.get("Namespace") != "AWS/Lambda" or p["Dimensions"][0]["Name"] == "EventSourceMappingUUID":
            continue
        dims = {d["Name"]: d["Value"] for d in p["Dimensions"]}
        assert set(dims) == {"FunctionName"}, name
        target = translated["Resources"][dims["FunctionName"]["Ref"]]
        assert target["Type"] == "AWS::Lambda::Function", name


SCRAM_SECRET_ARN = "arn:aws:secretsmanager:us-east-1:111122223333:secret:AmazonMSK_loader-AbCdEf"
MSK_CLUSTER = "arn:aws:kafka:us-east-1:111122223333:cluster/orders/5a5b2c1d-aaaa-bbbb-cccc-0123456789ab-7"
SCRAM_SECRET = "arn:aws:secretsmanager:us-east-1:111122223333:secret:AmazonMSK_loader-AbCdEf"
KAFKA_KEY = "arn:aws:kms:us-east-1:111122223333:key/0f0e0d0c-1111-2222-3333-444455556666"


def kafka_role(resolved):
    return statements_by_sid(resolved, "KafkaLoaderRole")


def test_msk_iam_auth_grants_the_kafka_cluster_actions_on_this_cluster_topic_and_group_only(template):
    # Given an MSK cluster with IAM access control (the default MskAuthMode)
    params = dict(MskClusterArn=MSK_CLUSTER, MskTopic="orders", MskConsumerGroupId="streamload-orders", **PASSWORD_DB)
    assert template["Parameters"]["MskAuthMode"]["Default"] == "IAM"
    t = resolve(template, **params)
    role = kafka_role(t)
    # Then the role may connect to that cluster, read that topic, and commit as that group
    assert set(role["MskIamCluster"]["Action"]) == {"kafka-cluster:Connect", "kafka-cluster:DescribeClusterDynamicConfiguration"}
    assert render(template, role["MskIamCluster"]["Resource"], **params) == MSK_CLUSTER
    assert set(role["MskIamTopic"]["Action"]) == {"kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"}
    assert render(template, role["MskIamTopic"]["Resource"], **params) == (
        "arn:aws:kafka:us-east-1:111122223333:topic/orders/5a5b2c1d-aaaa-bbbb-cccc-0123456789ab-7/orders")
    assert set(role["MskIamGroup"]["Action"]) == {"kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup"}
    assert render(template, role["MskIamGroup"]["Resource"], **params) == (
        "arn:aws:kafka:us-east-1:111122223333:group/orders/5a5b2c1d-aaaa-bbbb-cccc-0123456789ab-7/streamload-orders")
    # and what the MSK mapping itself needs: the cluster's brokers and its pollers' ENIs
    assert {"kafka:DescribeClusterV2", "kafka:GetBootstrapBrokers"} <= set(role["MskCluster"]["Action"])
    assert {"ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterface",
            "ec2:DescribeVpcs", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups"} <= set(role["PollerNetworkInterfaces"]["Action"])
    # and no secret: the mapping signs in as the role, with no access configuration
    assert "MskAuthSecret" not in role and "KafkaSecretKey" not in role
    assert "SourceAccessConfigurations" not in t["Resources"]["MskMapping"]["Properties"]
    assert rule_failures(template, **params) == []


@pytest.mark.parametrize("mode, access_type", [("SASL_SCRAM_512", "SASL_SCRAM_512_AUTH"), ("MTLS", "CLIENT_CERTIFICATE_TLS_AUTH")])
def test_msk_secret_auth_reads_its_secret_and_grants_no_kafka_cluster_action(template, mode, access_type):
    # Given MSK with SCRAM credentials or a client certificate in a secret under a customer key
    params = dict(MskClusterArn=MSK_CLUSTER, MskAuthMode=mode, MskAuthSecretArn=SCRAM_SECRET,
                  KafkaSecretKmsKeyArn=KAFKA_KEY, **PASSWORD_DB)
    t = resolve(template, **params)
    # Then the mapping presents that secret as the mode's access configuration
    assert t["Resources"]["MskMapping"]["Properties"]["SourceAccessConfigurations"] == [
        {"Type": access_type, "URI": {"Ref": "MskAuthSecretArn"}}]
    # and the role may read it, decrypting through Secrets Manager only, and nothing of IAM access control
    role = kafka_role(t)
    assert role["MskAuthSecret"]["Action"] == "secretsmanager:GetSecretValue"
    assert role["MskAuthSecret"]["Resource"] == {"Ref": "MskAuthSecretArn"}
    assert role["KafkaSecretKey"]["Action"] == "kms:Decrypt"
    assert role["KafkaSecretKey"]["Condition"]["StringEquals"]["kms:ViaService"] == {"Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"}
    assert not any(a.startswith("kafka-cluster:") for st in role.values() for a in as_list(st["Action"]))
    assert rule_failures(template, **params) == []
    # Given the mode without its secret, the stack is refused
    del params["MskAuthSecretArn"]
    assert rule_failures(template, **params) == ["MskAuthMode SASL_SCRAM_512 or MTLS needs MskAuthSecretArn."]


def test_msk_unauthenticated_has_no_credentials_of_any_kind(template):
    t = resolve(template, MskClusterArn=MSK_CLUSTER, MskAuthMode="NONE", **PASSWORD_DB)
    role = kafka_role(t)
    assert not {"MskIamCluster", "MskIamTopic", "MskIamGroup", "MskAuthSecret"} & set(role)
    assert "SourceAccessConfigurations" not in t["Resources"]["MskMapping"]["Properties"]


def test_self_managed_kafka_in_a_vpc_presents_auth_root_ca_subnets_and_security_group(template):
    # Given a self-managed cluster behind SCRAM-256 with a private CA, reached over two subnets
    params = dict(SelfManagedBootstrapServers="b-1.kafka.internal:9096,b-2.kafka.internal:9096",
                  SelfManagedAuthType="SASL_SCRAM_256_AUTH", SelfManagedAuthSecretArn=SCRAM_SECRET,
                  SelfManagedRootCaSecretArn=SCRAM_SECRET + "-ca", VpcSubnetIds="subnet-a,subnet-b",
                  VpcSecurityGroupIds="sg-1", **PASSWORD_DB)
    t = resolve(template, **params)
    access = t["Resources"]["SelfManagedKafkaMapping"]["Properties"]["SourceAccessConfigurations"]
    # Then the mapping presents each, in order, and one subnet entry per given subnet
    rendered = [(render(template, a["Type"], **params), render(template, a["URI"], **params)) for a in access]
    assert rendered == [
        ("SASL_SCRAM_256_AUTH", SCRAM_SECRET),
        ("SERVER_ROOT_CA_CERTIFICATE", SCRAM_SECRET + "-ca"),
        ("VPC_SUBNET", "subnet:subnet-a"),
        ("VPC_SUBNET", "subnet:subnet-b"),
        ("VPC_SECURITY_GROUP", "security_group:sg-1"),
    ]
    # and the role may read both secrets
    role = kafka_role(t)
    assert role["KafkaAuthSecret"]["Resource"] == {"Ref": "SelfManagedAuthSecretArn"}
    assert role["KafkaRootCaSecret"]["Resource"] == {"Ref": "SelfManagedRootCaSecretArn"}
    assert rule_failures(template, **params) == []


def test_self_managed_kafka_over_the_internet_or_unauthenticated_in_a_vpc(template):
    auth_types = template["Parameters"]["SelfManagedAuthType"]["AllowedValues"]
    assert set(auth_types) == {"BASIC_AUTH", "SASL_SCRAM_256_AUTH", "SASL_SCRAM_512_AUTH", "CLIENT_CERTIFICATE_TLS_AUTH", "NONE"}
    # Given public brokers with mTLS and no VPC: only the certificate, no VPC entries
    public = dict(SelfManagedBootstrapServers="kafka.example.com:9094", SelfManagedAuthType="CLIENT_CERTIFICATE_TLS_AUTH",
                  SelfManagedAuthSecretArn=SCRAM_SECRET, **PASSWORD_DB)
    access = resolve(template, **public)["Resources"]["SelfManagedKafkaMapping"]["Properties"]["SourceAccessConfigurations"]
    assert [render(template, a["Type"], **public) for a in access] == ["CLIENT_CERTIFICATE_TLS_AUTH"]
    assert rule_failures(template, **public) == []
    # Given unauthenticated brokers in a VPC: only the VPC entries, and no secret grant
    private = dict(SelfManagedBootstrapServers="b-1.kafka.internal:9092", SelfManagedAuthType="NONE",
                   VpcSubnetIds="subnet-a", VpcSecurityGroupIds="sg-1", **PASSWORD_DB)
    t = resolve(template, **private)
    access = t["Resources"]["SelfManagedKafkaMapping"]["Properties"]["SourceAccessConfigurations"]
    assert [a["Type"] for a in access] == ["VPC_SUBNET", "VPC_SECURITY_GROUP"]
    assert "KafkaAuthSecret" not in kafka_role(t)
    assert rule_failures(template, **private) == []
    # Given unauthenticated brokers without a VPC, or an auth type without its secret: refused
    assert rule_failures(template, **{**private, "VpcSubnetIds": "", "VpcSecurityGroupIds": ""}) == [
        "Unauthenticated self-managed Kafka (SelfManagedAuthType NONE) only over VpcSubnetIds, not the internet."]
    assert rule_failures(template, **{**public, "SelfManagedAuthSecretArn": ""}) == [
        "SelfManagedAuthType other than NONE needs SelfManagedAuthSecretArn."]


def test_the_alarm_topic_is_encrypted_with_a_key_cloudwatch_may_use(template):
    # Given the default AlarmTopicEncryption
    assert template["Parameters"]["AlarmTopicEncryption"]["Default"] == "CUSTOMER_KEY"
    t = resolve(template, **PASSWORD_DB)
    key = t["Resources"]["AlarmTopicKey"]
    # Then the topic is under the stack's own rotating key, not the AWS managed alias/aws/sns
    assert t["Resources"]["AlarmTopic"]["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": ["AlarmTopicKey", "Arn"]}
    assert key["Type"] == "AWS::KMS::Key" and key["Properties"]["EnableKeyRotation"] is True
    assert t["Resources"]["AlarmTopicKeyAlias"]["Properties"]["TargetKeyId"] == {"Ref": "AlarmTopicKey"}
    # and its policy keeps the account in charge and lets CloudWatch alarms of this account encrypt
    statements = {st["Sid"]: st for st in key["Properties"]["KeyPolicy"]["Statement"]}
    admin = statements["AccountAdministersTheKey"]
    assert admin["Principal"] == {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}
    cw = statements["CloudWatchAlarmsPublish"]
    assert cw["Effect"] == "Allow" and cw["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert set(cw["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert cw["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    # and the topic policy lets CloudWatch of this account publish
    topic_policy = t["Resources"]["AlarmTopicPolicy"]["Properties"]
    assert topic_policy["Topics"] == [{"Ref": "AlarmTopic"}]
    publish = topic_policy["PolicyDocument"]["Statement"][0]
    assert publish["Principal"] == {"Service": "cloudwatch.amazonaws.com"} and publish["Action"] == "sns:Publish"
    assert publish["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    # Given AlarmTopicEncryption NONE: no key, an unencrypted topic
    t = resolve(template, AlarmTopicEncryption="NONE", **PASSWORD_DB)
    assert "AlarmTopicKey" not in t["Resources"] and "KmsMasterKeyId" not in t["Resources"]["AlarmTopic"]["Properties"]
    # and no topic anywhere under the AWS managed key CloudWatch cannot use
    for name, topic in resources(template, "AWS::SNS::Topic").items():
        assert "alias/aws/sns" not in str(topic["Properties"].get("KmsMasterKeyId")), name


def rust_metrics_namespace():
    import re

    source = (TEMPLATE.parents[1] / "shared" / "core" / "src" / "metrics.rs").read_text()
    return re.search(r'pub const METRICS_NAMESPACE: &str = "([^"]+)";', source)[1], source


@pytest.mark.parametrize("metric, alarm_suffix, threshold", [
    ("RecordsFailed", "FailedRecordsAlarm", "FailedRecordsAlarmThreshold"),
    ("RecordsPoison", "PoisonRecordsAlarm", "PoisonRecordsAlarmThreshold"),
])
def test_each_loader_alarms_on_its_own_failed_and_dead_lettered_records(template, metric, alarm_suffix, threshold):
    # Given the EMF metrics the Rust side emits
    namespace, source = rust_metrics_namespace()
    assert f'metric("{metric}", "Count")' in source and '"Dimensions": [["FunctionName"]]' in source
    for prefix, function in (("Kinesis", "KinesisLoader"), ("Kafka", "KafkaLoader")):
        alarm = template["Resources"][prefix + alarm_suffix]
        p = alarm["Properties"]
        # Then an alarm reads that metric, under the function's own name, summed
        assert (p["Namespace"], p["MetricName"]) == (namespace, metric)
        assert p["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": function}}]
        assert alarm["Condition"] == template["Resources"][function]["Condition"]
        assert p["Statistic"] == "Sum" and p["ComparisonOperator"] == "GreaterThanThreshold"
        assert p["Threshold"] == {"Ref": threshold}
        # and a quiet stream is no failure
        assert p["TreatMissingData"] == "notBreaching"


ALL_SOURCES = dict(KinesisStreamArn="arn:aws:kinesis:us-east-1:111122223333:stream/s", MskClusterArn="",
                   SelfManagedBootstrapServers="b-1.kafka.internal:9096", SelfManagedAuthSecretArn=SCRAM_SECRET_ARN)


def test_a_mapping_that_stops_polling_alarms_by_default(template):
    # Given the defaults and every kind of source
    assert template["Parameters"]["StoppedMappingAlarmMinutes"]["Default"] == 15
    t = resolve(template, **{**ALL_SOURCES, "MskClusterArn": MSK_CLUSTER}, **PASSWORD_DB)
    for mapping in ("KinesisMapping", "MskMapping", "SelfManagedKafkaMapping"):
        p = t["Resources"][mapping + "StoppedAlarm"]["Properties"]
        # Then each mapping's own PolledEventCount (0 for an empty poll, absent when the mapping
        # does not poll) is watched by its UUID, a minute at a time
        assert (p["Namespace"], p["MetricName"], p["Statistic"]) == ("AWS/Lambda", "PolledEventCount", "SampleCount")
        assert p["Dimensions"] == [{"Name": "EventSourceMappingUUID", "Value": {"Ref": mapping}}]
        assert p["Period"] == 60 and p["EvaluationPeriods"] == {"Ref": "StoppedMappingAlarmMinutes"}
        assert p["ComparisonOperator"] == "LessThanThreshold" and p["Threshold"] == 1
        # and no datapoint (no poll) is breaching
        assert p["TreatMissingData"] == "breaching"
        # and the mapping emits that metric
        assert "EventCount" in t["Resources"][mapping]["Properties"]["MetricsConfig"]["Metrics"]
    # Given 0 minutes: off
    off = resolve(template, StoppedMappingAlarmMinutes=0, **ALL_SOURCES, **PASSWORD_DB)
    assert not [n for n in off["Resources"] if n.endswith("StoppedAlarm")]


@pytest.mark.parametrize("mapping, kafka", [("KinesisMapping", False), ("MskMapping", True), ("SelfManagedKafkaMapping", True)])
def test_each_mapping_emits_error_metrics_and_alarms_on_them(template, mapping, kafka):
    t = resolve(template, **{**ALL_SOURCES, "MskClusterArn": MSK_CLUSTER}, **PASSWORD_DB)
    # Given the mapping's metrics: Kafka's include the error and lag groups
    metrics = t["Resources"][mapping]["Properties"]["MetricsConfig"]["Metrics"]
    assert metrics == (["EventCount", "ErrorCount", "KafkaMetrics"] if kafka else ["EventCount"])
    # Then one alarm sums the mapping's error counts: a Kafka mapping that cannot connect (auth,
    # KMS, network) reports PollingErrorCount, and pages
    p = t["Resources"][mapping + "ErrorsAlarm"]["Properties"]
    inputs = {m["MetricStat"]["Metric"]["MetricName"]: m for m in p["Metrics"] if "MetricStat" in m}
    expected = {"DroppedEventCount", "FailedInvokeEventCount"}
    if kafka:
        expected |= {"PollingErrorCount", "InvokeErrorCount", "CommitErrorCount", "OnFailureDestinationDeliveryErrorCount"}
    assert set(inputs) == expected
    for m in inputs.values():
        assert m["MetricStat"]["Metric"]["Namespace"] == "AWS/Lambda" and m["MetricStat"]["Stat"] == "Sum"
        assert m["MetricStat"]["Metric"]["Dimensions"] == [{"Name": "EventSourceMappingUUID", "Value": {"Ref": mapping}}]
        assert m["ReturnData"] is False
    [expression] = [m for m in p["Metrics"] if "Expression" in m]
    assert expression["ReturnData"] is True
    assert all(f"FILL({m['Id']}, 0)" in expression["Expression"] for m in inputs.values())
    assert p["ComparisonOperator"] == "GreaterThanThreshold" and p["Threshold"] == 0


def test_lag_alarms_keep_their_state_when_the_lag_metric_stops(template):
    # A mapping that dies while behind stops emitting lag: that must not read as caught up.
    for name in ("KinesisIteratorAgeAlarm", "KafkaOffsetLagAlarm"):
        assert template["Resources"][name]["Properties"]["TreatMissingData"] == "missing", name


def test_alarms_need_a_destination_and_can_page_an_existing_topic(template):
    topic = "arn:aws:sns:us-east-1:111122223333:paging"
    base = {k: v for k, v in PASSWORD_DB.items() if k != "AlarmEmail"}
    # Given no e-mail and no topic: refused
    assert rule_failures(template, **base) == [
        "Alarms need a destination - AlarmEmail, ExistingAlarmTopicArn (an existing paging topic), or both."]
    # Given either: accepted
    assert rule_failures(template, ExistingAlarmTopicArn=topic, **base) == []
    assert rule_failures(template, AlarmEmail="a@example.com", **base) == []
    # and with the existing topic every alarm notifies it as well as the stack's topic
    t = resolve(template, ExistingAlarmTopicArn=topic, **{**ALL_SOURCES, "MskClusterArn": MSK_CLUSTER}, **base)
    alarms = resources(t, "AWS::CloudWatch::Alarm")
    assert len(alarms) == 18
    for name, alarm in alarms.items():
        p = alarm["Properties"]
        assert p["AlarmActions"] == [{"Ref": "AlarmTopic"}, {"Ref": "ExistingAlarmTopicArn"}], name
        assert p["OKActions"] == p["AlarmActions"], name
    assert "AlarmEmailSubscription" not in t["Resources"]


def test_kafka_offset_lag_threshold_is_a_parameter(template):
    p = template["Resources"]["KafkaOffsetLagAlarm"]["Properties"]
    assert (p["Namespace"], p["MetricName"], p["Statistic"]) == ("AWS/Lambda", "OffsetLag", "Maximum")
    assert p["Threshold"] == {"Ref": "KafkaOffsetLagThreshold"}
    assert template["Parameters"]["KafkaOffsetLagThreshold"]["Default"] == 100000


def test_every_alarm_tells_the_topic_when_it_fires_and_when_it_clears(template):
    alarms = resources(resolve(template, **{**ALL_SOURCES, "MskClusterArn": MSK_CLUSTER}, **PASSWORD_DB), "AWS::CloudWatch::Alarm")
    assert len(alarms) == 18
    for name, alarm in alarms.items():
        p = alarm["Properties"]
        assert p["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        assert p["OKActions"] == [{"Ref": "AlarmTopic"}], name


def test_outputs_name_what_an_operator_looks_up(translated):
    # Given the deployed stack's outputs (as SAM turns them into CloudFormation)
    outputs, res = translated["Outputs"], translated["Resources"]
    expected = {
        "KinesisMappingId": ("Ref", "KinesisMapping", "AWS::Lambda::EventSourceMapping"),
        "MskMappingId": ("Ref", "MskMapping", "AWS::Lambda::EventSourceMapping"),
        "SelfManagedKafkaMappingId": ("Ref", "SelfManagedKafkaMapping", "AWS::Lambda::EventSourceMapping"),
        "KinesisLoaderAliasArn": ("Ref", "KinesisLoaderAliaslive", "AWS::Lambda::Alias"),
        "KafkaLoaderAliasArn": ("Ref", "KafkaLoaderAliaslive", "AWS::Lambda::Alias"),
        "KinesisLoaderRoleArn": ("Fn::GetAtt", ["KinesisLoaderRole", "Arn"], "AWS::IAM::Role"),
        "KafkaLoaderRoleArn": ("Fn::GetAtt", ["KafkaLoaderRole", "Arn"], "AWS::IAM::Role"),
        "KinesisLoaderLogGroupName": ("Ref", "KinesisLoaderLogGroup", "AWS::Logs::LogGroup"),
        "KafkaLoaderLogGroupName": ("Ref", "KafkaLoaderLogGroup", "AWS::Logs::LogGroup"),
        "AlarmTopicKeyArn": ("Fn::GetAtt", ["AlarmTopicKey", "Arn"], "AWS::KMS::Key"),
    }
    for name, (fn, target, kind) in expected.items():
        # Then each names its resource, and exists exactly when that resource does
        assert outputs[name]["Value"] == {fn: target}, name
        resource = res[target if fn == "Ref" else target[0]]
        assert resource["Type"] == kind, name
        assert outputs[name].get("Condition") == resource.get("Condition"), name


ENDPOINTS = dict(CreateVpcEndpoints="true", VpcId="vpc-0a1b2c3d", VpcRouteTableIds="rtb-1,rtb-2",
                 VpcSubnetIds="subnet-a,subnet-b", VpcSecurityGroupIds="sg-1,sg-2", **PASSWORD_DB)


def test_private_subnets_get_gateway_and_interface_endpoints_when_asked(template):
    # Given the default: no endpoints at all
    assert template["Parameters"]["CreateVpcEndpoints"]["Default"] == "false"
    kinds = {"AWS::EC2::VPCEndpoint", "AWS::EC2::SecurityGroup"}
    assert not [n for n, r in resolve(template, **{**ENDPOINTS, "CreateVpcEndpoints": "false"})["Resources"].items() if r["Type"] in kinds]
    # Given CreateVpcEndpoints with the VPC, its route tables, subnets and two function security groups
    t = resolve(template, **ENDPOINTS)
    endpoints = {render(template, r["Properties"]["ServiceName"], **ENDPOINTS).rsplit(".", 1)[1]: r["Properties"]
                 for r in t["Resources"].values() if r["Type"] == "AWS::EC2::VPCEndpoint"}
    # Then S3 and DynamoDB are gateway endpoints on those route tables
    for service in ("s3", "dynamodb"):
        e = endpoints[service]
        assert e["VpcEndpointType"] == "Gateway" and e["RouteTableIds"] == {"Ref": "VpcRouteTableIds"}, service
        assert e["VpcId"] == {"Ref": "VpcId"}
    # and SQS and Secrets Manager interface endpoints with private DNS, in the functions' subnets
    for service in ("sqs", "secretsmanager"):
        e = endpoints[service]
        assert e["VpcEndpointType"] == "Interface" and e["PrivateDnsEnabled"] is True, service
        assert e["SubnetIds"] == {"Ref": "VpcSubnetIds"}
        assert e["SecurityGroupIds"] == [{"Fn::GetAtt": ["VpcEndpointSecurityGroup", "GroupId"]}]
    assert set(endpoints) == {"s3", "dynamodb", "sqs", "secretsmanager"}
    # and their security group admits HTTPS from each of the functions' groups, and nothing else
    ingress = t["Resources"]["VpcEndpointSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert [(i["IpProtocol"], i["FromPort"], i["ToPort"], render(template, i["SourceSecurityGroupId"], **ENDPOINTS))
            for i in ingress] == [("tcp", 443, 443, "sg-1"), ("tcp", 443, 443, "sg-2")]
    assert not any("CidrIp" in i for i in ingress)
    assert rule_failures(template, **ENDPOINTS) == []
    # Given endpoints asked for without the VPC's ids, the stack is refused
    missing = rule_failures(template, **{**ENDPOINTS, "VpcId": "", "VpcRouteTableIds": ""})
    assert missing == ["CreateVpcEndpoints needs VpcId.",
                       "CreateVpcEndpoints needs VpcRouteTableIds (for the S3 and DynamoDB gateway endpoints)."]


def test_the_dedup_table_is_on_demand_unless_asked_and_then_scales_its_writes(template):
    # Given the defaults: on demand, no capacity, no scaling, point-in-time recovery on
    assert template["Parameters"]["DedupBillingMode"]["Default"] == "PAY_PER_REQUEST"
    t = resolve(template, **PASSWORD_DB)
    table = t["Resources"]["DedupTable"]["Properties"]
    assert table["BillingMode"] == {"Ref": "DedupBillingMode"} and "ProvisionedThroughput" not in table
    assert not resources(t, "AWS::ApplicationAutoScaling::ScalableTarget")
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    # Given PROVISIONED
    t = resolve(template, DedupBillingMode="PROVISIONED", **PASSWORD_DB)
    table = t["Resources"]["DedupTable"]["Properties"]
    # Then the table starts at the minimum write capacity
    assert table["ProvisionedThroughput"] == {"ReadCapacityUnits": {"Ref": "DedupReadCapacity"},
                                              "WriteCapacityUnits": {"Ref": "DedupMinWriteCapacity"}}
    # and auto scaling tracks 70% write utilisation between the minimum and the maximum
    target = t["Resources"]["DedupWriteScalableTarget"]["Properties"]
    assert (target["ServiceNamespace"], target["ScalableDimension"]) == ("dynamodb", "dynamodb:table:WriteCapacityUnits")
    assert target["ResourceId"] == {"Fn::Sub": "table/${DedupTable}"}
    assert (target["MinCapacity"], target["MaxCapacity"]) == ({"Ref": "DedupMinWriteCapacity"}, {"Ref": "DedupMaxWriteCapacity"})
    policy = t["Resources"]["DedupWriteScalingPolicy"]["Properties"]
    assert policy["PolicyType"] == "TargetTrackingScaling" and policy["ScalingTargetId"] == {"Ref": "DedupWriteScalableTarget"}
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 70
    assert tracking["PredefinedMetricSpecification"] == {"PredefinedMetricType": "DynamoDBWriteCapacityUtilization"}
    # Given PROVISIONED but an existing table: the stack scales nothing it does not own
    t = resolve(template, DedupBillingMode="PROVISIONED", ExistingDedupTableName="claims", **PASSWORD_DB)
    assert "DedupTable" not in t["Resources"] and "DedupWriteScalableTarget" not in t["Resources"]
    # Given point-in-time recovery off
    t = resolve(template, DedupPointInTimeRecovery="false", **PASSWORD_DB)
    assert t["Resources"]["DedupTable"]["Properties"]["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": False}


# ---------------------------------------------------------------- issue 31
def substitute(node, values):
    """A resolved template fragment with every parameter Ref and ${Param} in a Fn::Sub replaced
    by its value (resource references stay as they are)."""
    import re

    if isinstance(node, dict):
        if set(node) == {"Ref"} and node["Ref"] in values:
            return values[node["Ref"]]
        if set(node) == {"Fn::Sub"} and isinstance(node["Fn::Sub"], str):
            return {"Fn::Sub": re.sub(r"\$\{([A-Za-z0-9]+)\}",
                                      lambda m: str(values[m[1]]) if m[1] in values else m[0], node["Fn::Sub"])}
        return {k: substitute(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute(v, values) for v in node]
    return node


def digest_handler(template):
    """The custom resource's inline Python, run here with a stand-in cfnresponse."""
    import sys
    import types

    sent = []
    fake = types.ModuleType("cfnresponse")
    fake.SUCCESS, fake.FAILED = "SUCCESS", "FAILED"
    fake.send = lambda event, context, status, data, physical_id, reason=None: sent.append((status, data, physical_id))
    sys.modules["cfnresponse"] = fake
    namespace = {}
    exec(template["Resources"]["ConfigDigestFunction"]["Properties"]["Code"]["ZipFile"], namespace)

    def digest(configuration):
        sent.clear()
        namespace["handler"]({"RequestType": "Update", "ResourceProperties": {"ServiceToken": "x", "Configuration": configuration}}, None)
        [(status, data, physical_id)] = sent
        assert status == "SUCCESS" and physical_id == "streamload-configuration-digest"
        return data["Digest"]

    return digest


# A value for each parameter that reaches the functions' configuration, other than its default.
CONFIGURATION_CHANGES = {
    "RoutesConfigUri": "s3://routes-bucket/routes-v2.toml", "FunctionMemorySize": "2048", "FunctionTimeout": "300",
    "VpcSubnetIds": "subnet-a,subnet-b", "VpcSecurityGroupIds": "sg-9", "LogLevel": "DEBUG",
    "DatabaseSecretArn": "arn:aws:secretsmanager:us-east-1:111122223333:secret:other-XyZ",
    "DatabaseHost": "other.cluster-abc.us-east-1.rds.amazonaws.com", "DatabaseName": "other", "DatabaseUser": "other",
    "DatabaseSslMode": "verify-ca", "DatabaseSslRootCert": "/var/task/ca.pem",
    "DatabaseCaBundleUri": "s3://certs-bucket/ca.pem", "TargetTable": "sales.events", "DedupTtlSeconds": "86400",
    "ExistingDedupTableName": "claims", "ExistingBucketName": "lake-bucket", "OutputPrefix": "lake/",
    "DeadLetterPrefix": "dlq/",
    "SearchEndpoint": "https://search-orders-abc.us-east-1.es.amazonaws.com", "SearchAuth": "none",
    "SearchSecretArn": "arn:aws:secretsmanager:us-east-1:111122223333:secret:search-AbCdEf",
    "TableCatalog": "glue", "TableBucketName": "other-tables", "TableBucketExists": "true",
    "GlueDatabaseName": "other_db",
}


def test_a_deploy_that_changes_only_parameters_publishes_a_new_live_version(template):
    base = dict(KinesisStreamArn="arn:aws:kinesis:us-east-1:111122223333:stream/s", VpcSubnetIds="subnet-a",
                VpcSecurityGroupIds="sg-1", **PASSWORD_DB)
    translated = sam_translate(template, **base)
    res = translated["Resources"]
    digest_props = res["ConfigDigest"]["Properties"]["Configuration"]
    for function in ("KinesisLoader",):
        fn = res[function]["Properties"]
        # Given the version the alias `live` points at (the mappings invoke the alias)
        alias = res[function + "Aliaslive"]["Properties"]
        version_id = alias["FunctionVersion"]["Fn::GetAtt"][0]
        version = res[version_id]
        # Then its Description is the configuration digest: a new digest replaces the version,
        # which publishes one and moves the alias; the old version is kept for roll-backs
        assert version["Properties"]["Description"] == {"Fn::Sub": "configuration ${ConfigDigest.Digest}"}
        assert version["UpdateReplacePolicy"] == "Retain" and version["DeletionPolicy"] == "Retain"
        # and the function's own Description carries it, so Lambda sees a changed configuration
        # and PublishVersion cannot hand back the previous version
        assert "${ConfigDigest.Digest}" in fn["Description"]["Fn::Sub"]
        # and the digest covers exactly the function's configuration as SAM translated it
        assert digest_props["Environment"] == fn["Environment"]["Variables"]
        assert digest_props["MemorySize"] == fn["MemorySize"] and digest_props["Timeout"] == fn["Timeout"]
        assert digest_props["VpcConfig"] == fn["VpcConfig"]
        assert digest_props["ApplicationLogLevel"] == fn["LoggingConfig"]["ApplicationLogLevel"]
        assert digest_props["KinesisRole"]["Fn::If"][1] == fn["Role"]
    # and the template's Globals list nothing the digest leaves out
    assert set(template["Globals"]["Function"]) - {"Runtime", "Architectures", "Handler", "ReservedConcurrentExecutions"} == {
        "MemorySize", "Timeout", "VpcConfig", "Environment"}

    # When each configuration parameter changes alone, the digest CloudFormation computes changes
    digest = digest_handler(template)

    def deployed_digest(**params):
        values = parameter_values(template, {**base, **params})
        config = resolve(template, **{**base, **params})["Resources"]["ConfigDigest"]["Properties"]["Configuration"]
        return digest(substitute(config, values))

    before = deployed_digest()
    assert deployed_digest() == before  # the same parameters, the same version
    for name, value in CONFIGURATION_CHANGES.items():
        extra = {"DatabaseSslRootCert": ""} if name == "DatabaseCaBundleUri" else {}
        assert deployed_digest(**{name: value}, **extra) != before, f"{name}: no new version"
    # and every parameter the functions' environment, memory, timeout, VPC or log level reads
    # is in that list (a new one must be added, and so proven)
    import json
    read = set()
    committer = sam_translate(template, **base, TableCatalog="glue", RoutesConfigUri="s3://r/routes.toml")["Resources"]
    for props in (res["KinesisLoader"]["Properties"], committer["TableCommitter"]["Properties"]):
        text = json.dumps(props)
        read |= {p for p in template["Parameters"] if f'"Ref": "{p}"' in text or "${" + p + "}" in text}
    # (reserved concurrency belongs to the function, not to a version; IAM auth and the port are
    # proven below)
    assert read <= set(CONFIGURATION_CHANGES) | {"DatabaseIamAuth", "DatabasePort", "ReservedConcurrency"}, read - set(CONFIGURATION_CHANGES)
    assert deployed_digest(**IAM_DB) != before


def test_the_shared_vpc_keeps_its_endpoints_unless_asked_and_what_must_reach_them_does(template):
    # Given the default: bring your own endpoints
    assert template["Parameters"]["CreateVpcEndpoints"]["Default"] == "false"
    # Given endpoints asked for, but the VPC already has S3 and SQS ones
    params = {**ENDPOINTS, "VpcEndpointServices": "dynamodb,secretsmanager"}
    t = resolve(template, **params)
    made = {render(template, r["Properties"]["ServiceName"], **params).rsplit(".", 1)[1]
            for r in t["Resources"].values() if r["Type"] == "AWS::EC2::VPCEndpoint"}
    # Then only the missing ones are created (a second private-DNS endpoint fails the deploy)
    assert made == {"dynamodb", "secretsmanager"}
    # Given gateways only: no interface endpoint and no security group for one
    t = resolve(template, **{**ENDPOINTS, "VpcEndpointServices": "s3,dynamodb"})
    assert "VpcEndpointSecurityGroup" not in t["Resources"] and "SqsInterfaceEndpoint" not in t["Resources"]
    # Given the Kafka cluster's security groups and the VPC's CIDR
    params = {**ENDPOINTS, "KafkaClusterSecurityGroupIds": "sg-k1,sg-k2", "VpcEndpointClientCidr": "10.0.0.0/16"}
    t = resolve(template, **params)
    ingress = t["Resources"]["VpcEndpointSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    sources = [render(template, i["SourceSecurityGroupId"], **params) if "SourceSecurityGroupId" in i else i["CidrIp"]
               for i in ingress]
    # Then the interface endpoints admit the loaders, the cluster (the MSK mapping's on-failure
    # path runs in its VPC with its groups) and the VPC's other workloads, on 443 only
    assert sources == ["sg-1", "sg-2", "sg-k1", "sg-k2", {"Ref": "VpcEndpointClientCidr"}]
    assert all((i["IpProtocol"], i["FromPort"], i["ToPort"]) == ("tcp", 443, 443) for i in ingress)
    assert rule_failures(template, **params) == []


def test_log_level_trace_is_refused(template):
    assert "TRACE" not in template["Parameters"]["LogLevel"]["AllowedValues"]


def test_iam_database_auth_refuses_unverified_tls(template):
    for mode in ("require", "disable"):
        assert rule_failures(template, **IAM_DB, DatabaseSslMode=mode) == [
            "IAM database authentication sends a bearer token as the password; DatabaseSslMode must verify the server (verify-full, or verify-ca), not require or disable."]
    assert rule_failures(template, **IAM_DB, DatabaseSslMode="verify-ca") == []
    # password authentication may still use require (the operator's choice)
    assert rule_failures(template, **PASSWORD_DB, DatabaseSslMode="require") == []


def test_msk_scram_needs_a_customer_managed_key(template):
    params = dict(MskClusterArn=MSK_CLUSTER, MskAuthMode="SASL_SCRAM_512", MskAuthSecretArn=SCRAM_SECRET, **PASSWORD_DB)
    assert rule_failures(template, **params) == [
        "MSK SASL/SCRAM secrets must be encrypted with a customer managed key (MSK refuses aws/secretsmanager); give it as KafkaSecretKmsKeyArn."]
    assert rule_failures(template, **params, KafkaSecretKmsKeyArn=KAFKA_KEY) == []
    # mTLS secrets may use the AWS managed key
    assert rule_failures(template, **{**params, "MskAuthMode": "MTLS"}) == []


@pytest.mark.parametrize("uri, sid, action, resource", [
    ("s3://certs-bucket/db/ca.pem", "DatabaseCaBundleObject", "s3:GetObject", "arn:aws:s3:::certs-bucket/db/ca.pem"),
    ("arn:aws:secretsmanager:us-east-1:111122223333:secret:db-ca-AbC", "DatabaseCaBundleSecret",
     "secretsmanager:GetSecretValue", "arn:aws:secretsmanager:us-east-1:111122223333:secret:db-ca-AbC"),
])
def test_the_database_ca_bundle_comes_from_s3_or_a_secret_readable_alone(template, uri, sid, action, resource):
    params = dict(DatabaseCaBundleUri=uri, **PASSWORD_DB)
    sink = statements_by_sid(resolve(template, **params), "SinkPolicy")
    # Then the functions may read that object or that secret, and nothing of the other kind
    assert sink[sid]["Action"] == action
    assert render(template, sink[sid]["Resource"], **params) == resource
    assert not {"DatabaseCaBundleObject", "DatabaseCaBundleSecret"} - {sid} & set(sink)
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["DATABASE_SSLROOTCERT_URI"] == {"Ref": "DatabaseCaBundleUri"}
    assert rule_failures(template, **params) == []
    assert rule_failures(template, **params, DatabaseSslRootCert="/var/task/ca.pem") == [
        "Give the database CA bundle either as DatabaseSslRootCert (a file in the package) or as DatabaseCaBundleUri (S3 or a secret), not both."]
    none = statements_by_sid(resolve(template, **PASSWORD_DB), "SinkPolicy")
    assert not {"DatabaseCaBundleObject", "DatabaseCaBundleSecret"} & set(none)


def test_customer_keys_of_the_stream_and_the_bucket_are_usable_through_their_service_only(template):
    stream_key = "arn:aws:kms:us-east-1:111122223333:key/stream"
    bucket_key = "arn:aws:kms:us-east-1:111122223333:key/bucket"
    params = dict(KinesisStreamArn="arn:aws:kinesis:us-east-1:111122223333:stream/s", KinesisStreamKmsKeyArn=stream_key,
                  ExistingBucketName="lake", ExistingBucketKmsKeyArn=bucket_key, **PASSWORD_DB)
    t = resolve(template, **params)
    stream = statements_by_sid(t, "KinesisLoaderRole")["StreamKey"]
    assert stream["Action"] == "kms:Decrypt" and stream["Resource"] == {"Ref": "KinesisStreamKmsKeyArn"}
    assert stream["Condition"] == {"StringEquals": {"kms:ViaService": {"Fn::Sub": "kinesis.${AWS::Region}.amazonaws.com"}}}
    bucket = statements_by_sid(t, "SinkPolicy")["BucketKey"]
    assert set(bucket["Action"]) == {"kms:GenerateDataKey", "kms:Decrypt"} and bucket["Resource"] == {"Ref": "ExistingBucketKmsKeyArn"}
    assert bucket["Condition"] == {"StringEquals": {"kms:ViaService": {"Fn::Sub": "s3.${AWS::Region}.amazonaws.com"}}}
    # and without keys no KMS grant at all
    t = resolve(template, KinesisStreamArn="arn:aws:kinesis:us-east-1:111122223333:stream/s", **PASSWORD_DB)
    assert "StreamKey" not in statements_by_sid(t, "KinesisLoaderRole") and "BucketKey" not in statements_by_sid(t, "SinkPolicy")


def test_every_role_takes_the_permissions_boundary(template):
    boundary = "arn:aws:iam::111122223333:policy/platform-boundary"
    params = dict(PermissionsBoundaryArn=boundary, **{**ALL_SOURCES, "MskClusterArn": MSK_CLUSTER}, **PASSWORD_DB)
    translated = sam_translate(template, **params)
    roles = resources(translated, "AWS::IAM::Role")
    assert {"KinesisLoaderRole", "KafkaLoaderRole", "ConfigDigestRole"} <= set(roles)
    for name, role in roles.items():
        assert role["Properties"]["PermissionsBoundary"] == {
            "Fn::If": ["HasPermissionsBoundary", {"Ref": "PermissionsBoundaryArn"}, {"Ref": "AWS::NoValue"}]}, name
    resolved = resolve(template, **params)
    assert all(r["Properties"]["PermissionsBoundary"] == {"Ref": "PermissionsBoundaryArn"}
               for r in resources(resolved, "AWS::IAM::Role").values())
    assert all("PermissionsBoundary" not in r["Properties"]
               for r in resources(resolve(template, **PASSWORD_DB), "AWS::IAM::Role").values())


def test_the_dead_letter_expiry_never_reaches_the_lake(template):
    def expiry(**params):
        rules = resolve(template, **params, **PASSWORD_DB)["Resources"]["OutputBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
        return [r for r in rules if r.get("ExpirationInDays")]
    # Given the defaults: dead-letter/ expires, events/ does not
    assert [r["Prefix"] for r in expiry()] == [{"Ref": "DeadLetterPrefix"}]
    # Given the same prefix: refused
    assert rule_failures(template, OutputPrefix="data/", DeadLetterPrefix="data/", **PASSWORD_DB) == [
        "DeadLetterPrefix must differ from OutputPrefix - dead-letter objects expire after DeadLetterObjectDays, and so would the lake's Parquet (its commit markers)."]
    # Given prefixes that share their first segment (one may hold the other): nothing expires
    assert expiry(OutputPrefix="data/events/", DeadLetterPrefix="data/") == []
    assert expiry(OutputPrefix="data/", DeadLetterPrefix="data/dead-letter/") == []
    assert [r["Prefix"] for r in expiry(OutputPrefix="lake/events/", DeadLetterPrefix="dlq/")] == [{"Ref": "DeadLetterPrefix"}]


def test_stateful_resources_are_retained_and_queues_and_topic_refuse_plain_http(template):
    for name in ("DedupTable", "OutputBucket", "DeadLetterQueue", "OnFailureQueue"):
        r = template["Resources"][name]
        assert (r.get("DeletionPolicy"), r.get("UpdateReplacePolicy")) == ("Retain", "Retain"), name
    policy = template["Resources"]["QueuesTlsOnlyPolicy"]["Properties"]
    assert policy["Queues"] == [{"Ref": "DeadLetterQueue"}, {"Ref": "OnFailureQueue"}]
    [deny] = policy["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Resource"] == [{"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}, {"Fn::GetAtt": ["OnFailureQueue", "Arn"]}]
    topic = {s["Sid"]: s for s in template["Resources"]["AlarmTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]}
    assert topic["TlsOnly"]["Effect"] == "Deny" and topic["TlsOnly"]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


SEARCH = {"SearchEndpoint": "https://search-orders-abc.us-east-1.es.amazonaws.com",
          "SearchDomainArn": "arn:aws:es:us-east-1:111122223333:domain/orders"}


def test_a_search_domain_gets_only_the_http_verbs_the_loaders_use_on_that_domain(template):
    # Given an Amazon OpenSearch Service domain, signed with the functions' role
    sink = statements_by_sid(resolve(template, **SEARCH, **PASSWORD_DB), "SinkPolicy")
    # Then the role may POST, GET, HEAD and PUT on that domain's paths, nothing else
    domain = sink["SearchDomain"]
    assert sorted(domain["Action"]) == ["es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPost", "es:ESHttpPut"]
    assert domain["Resource"] == {"Fn::Sub": "${SearchDomainArn}/*"}
    assert "SearchCredentials" not in sink
    # and the functions are told where and how
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["STREAMLOAD_SEARCH_URL"] == {"Ref": "SearchEndpoint"}
    assert env["STREAMLOAD_SEARCH_AUTH"] == {"Ref": "SearchAuth"}
    # Given no search endpoint, Then no grant at all
    sink = statements_by_sid(resolve(template, **PASSWORD_DB), "SinkPolicy")
    assert "SearchDomain" not in sink and "SearchCredentials" not in sink
    # Given a self-managed cluster with a secret, Then the secret alone is readable
    secret = "arn:aws:secretsmanager:us-east-1:111122223333:secret:search-AbCdEf"
    sink = statements_by_sid(resolve(template, SearchEndpoint="https://search.internal", SearchAuth="secret",
                                     SearchSecretArn=secret, **PASSWORD_DB), "SinkPolicy")
    assert sink["SearchCredentials"]["Resource"] == {"Ref": "SearchSecretArn"}
    assert "SearchDomain" not in sink


def test_the_rules_refuse_a_search_endpoint_the_functions_cannot_sign_in_to(template):
    assert rule_failures(template, SearchEndpoint=SEARCH["SearchEndpoint"], **PASSWORD_DB) == [
        "SearchAuth=sigv4 needs SearchDomainArn (the functions' role may reach that domain only)."]
    assert rule_failures(template, SearchEndpoint="https://s", SearchAuth="secret", **PASSWORD_DB) == [
        "SearchAuth=secret needs SearchSecretArn."]
    assert rule_failures(template, **SEARCH, **PASSWORD_DB) == []


COMMITTER = dict(TableCatalog="s3tables", RoutesConfigUri="s3://config-bucket/routes.toml")


def test_the_table_committer_reads_staging_writes_only_its_claims_and_its_table_bucket(template):
    # Given a stack with the table committer
    t = resolve(template, **COMMITTER, **PASSWORD_DB)
    res = t["Resources"]
    assert {"TableCommitter", "TableBucket", "CommitQueue", "CommitDeadLetterQueue"} <= set(res)
    role = res["TableCommitterRole"]["Properties"]
    statements = {st["Sid"]: st for pol in role["Policies"] for st in pol["PolicyDocument"]["Statement"]}
    # Then its claims are `tc:` items only: the loaders' claims are out of its reach
    claims = statements["CommitClaimsOnly"]
    assert set(claims["Action"]) == {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"}
    assert claims["Condition"] == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["tc:*"]}}
    # it reads the staging (never writes it), and its S3 Tables actions name one table bucket
    assert statements["ReadStagedObjects"]["Action"] == "s3:GetObject"
    tables = statements["TheRoutesTables"]
    assert all(a.startswith("s3tables:") and "*" not in a for a in tables["Action"])
    assert "s3tables:DeleteTable" not in tables["Action"]
    assert all("bucket/${TableBucketName}" in json.dumps(r) for r in tables["Resource"])
    # and no action anywhere is a wildcard
    for st in statements.values():
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        assert not any(a.endswith("*") for a in actions), st["Sid"]


def test_a_glue_committer_touches_one_database_and_its_own_warehouse_bucket(template):
    # Given a stack whose tables are in the Glue Data Catalog
    t = resolve(template, TableCatalog="glue", GlueDatabaseName="lake_db",
                RoutesConfigUri="s3://config-bucket/routes.toml", **PASSWORD_DB)
    res = t["Resources"]
    # Then there is no table bucket but an encrypted, private, TLS-only warehouse bucket
    assert "TableBucket" not in res and "TableWarehouseBucket" in res
    wb = res["TableWarehouseBucket"]
    assert wb["DeletionPolicy"] == "Retain"
    assert wb["Properties"]["PublicAccessBlockConfiguration"]["RestrictPublicBuckets"] is True
    tls = res["TableWarehouseBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert tls["Effect"] == "Deny" and tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    role = res["TableCommitterRole"]["Properties"]
    statements = {st["Sid"]: st for pol in role["Policies"] for st in pol["PolicyDocument"]["Statement"]}
    # its Glue actions name the catalog, one database and that database's tables, and never delete
    tables = statements["TheRoutesTables"]
    assert set(tables["Action"]) == {"glue:GetDatabase", "glue:CreateDatabase", "glue:GetTable",
                                     "glue:CreateTable", "glue:UpdateTable"}
    resources = json.dumps(tables["Resource"])
    assert "database/${GlueDatabaseName}" in resources and "table/${GlueDatabaseName}/*" in resources
    assert not any(a.startswith("s3tables:") for st in statements.values() for a in as_list(st["Action"]))
    # it writes only the warehouse bucket's objects (the staging stays read-only)
    assert statements["TheWarehouseFiles"]["Action"] == ["s3:GetObject", "s3:PutObject"]
    assert "TableWarehouseBucket" in json.dumps(statements["TheWarehouseFiles"]["Resource"])
    assert statements["ReadStagedObjects"]["Action"] == "s3:GetObject"
    # and the function is told the catalog, the warehouse and the one namespace it may write
    env = res["TableCommitter"]["Properties"]["Environment"]["Variables"]
    glue = dict(TableCatalog="glue", GlueDatabaseName="lake_db")
    assert render(template, env["STREAMLOAD_CATALOG"], **glue) == "glue"
    assert "TableWarehouseBucket" in json.dumps(env["STREAMLOAD_WAREHOUSE"])
    assert render(template, env["STREAMLOAD_TABLE_NAMESPACE"], **glue) == "lake_db"
    assert "STREAMLOAD_TABLE_BUCKET_ARN" not in env
    # while an S3 Tables stack gets neither the warehouse nor a namespace limit
    s3t = resolve(template, **COMMITTER, **PASSWORD_DB)["Resources"]
    assert "TableWarehouseBucket" not in s3t
    s3t_env = s3t["TableCommitter"]["Properties"]["Environment"]["Variables"]
    assert render(template, s3t_env["STREAMLOAD_CATALOG"], **COMMITTER) == "s3tables"
    assert "STREAMLOAD_WAREHOUSE" not in s3t_env and "STREAMLOAD_TABLE_NAMESPACE" not in s3t_env
    assert rule_failures(template, TableCatalog="glue", **PASSWORD_DB) == [
        "The table committer reads the routes' [route.iceberg] tables from the route file; set RoutesConfigUri."]


def test_the_table_committer_may_decrypt_an_sse_kms_staging_bucket_only_through_s3(template):
    # Given an existing SSE-KMS bucket with the committer
    key = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    t = resolve(template, **COMMITTER, ExistingBucketName="lake-bucket", ExistingBucketKmsKeyArn=key, **PASSWORD_DB)
    role = t["Resources"]["TableCommitterRole"]["Properties"]
    statements = {st["Sid"]: st for pol in role["Policies"] for st in pol["PolicyDocument"]["Statement"]}
    # Then it may decrypt with that key, through S3 only (it writes nothing there)
    st = statements["StagedObjectsKey"]
    assert st["Action"] == "kms:Decrypt" and st["Resource"] == {"Ref": "ExistingBucketKmsKeyArn"}
    assert "kms:ViaService" in json.dumps(st["Condition"])
    # and without a key it has no KMS grant at all
    plain = resolve(template, **COMMITTER, **PASSWORD_DB)["Resources"]["TableCommitterRole"]["Properties"]
    assert "kms:" not in json.dumps(plain["Policies"])


def test_the_table_committer_is_fed_by_a_batching_window_and_an_hourly_sweep(template):
    f = template["Resources"]["TableCommitter"]["Properties"]
    staged = f["Events"]["StagedObjects"]["Properties"]
    assert staged["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert staged["MaximumBatchingWindowInSeconds"] == {"Ref": "CommitBatchingWindowSeconds"}
    assert template["Parameters"]["CommitBatchingWindowSeconds"]["Default"] == 60
    assert staged["ScalingConfig"]["MaximumConcurrency"] == 2
    sweep = f["Events"]["Sweep"]["Properties"]
    assert sweep["ScheduleExpression"] == "rate(1 hour)"
    assert "streamload_sweep" in json.dumps(sweep["Input"])
    assert f["Environment"]["Variables"]["STREAMLOAD_CATALOG"] == {"Ref": "TableCatalog"}
    # the queue outlives six timeouts and sends what keeps failing to its dead-letter queue
    q = template["Resources"]["CommitQueue"]["Properties"]
    assert q["VisibilityTimeout"] >= 6 * f["Timeout"]
    assert q["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["CommitDeadLetterQueue", "Arn"]}
    # S3 notifies new staged Parquet objects, once the queue admits it
    b = template["Resources"]["OutputBucket"]["Properties"]
    notify = b["NotificationConfiguration"]["Fn::If"]
    assert notify[0] == "NotifyCommitter"
    assert notify[1]["QueueConfigurations"][0]["Event"] == "s3:ObjectCreated:*"
    assert b["Tags"]["Fn::If"][1][0]["Value"] == {"Ref": "CommitQueuePolicy"}
    # and the table bucket is kept, removing the files no snapshot references
    tb = template["Resources"]["TableBucket"]
    assert tb["DeletionPolicy"] == "Retain"
    assert tb["Properties"]["UnreferencedFileRemoval"]["Status"] == "Enabled"
