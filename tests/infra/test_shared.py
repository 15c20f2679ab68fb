"""The checks both deployments must pass: the SAM stack (as SAM translates it, with every source
and its parameters resolved) and the CDK construct (as `cdk synth` writes it for
infra/cdk/test/app.ts). One suite for both, so the two cannot drift."""
import json
import pathlib

import pytest
from cfnlint.decode import decode

from test_template import (ALL_SOURCES, MSK_CLUSTER, PASSWORD_DB, SEARCH, STAR_RESOURCE_ONLY, TEMPLATE, as_list,
                           parameter_values, resolve, sam_translate, substitute)

CDK_OUT = TEMPLATE.parents[0] / "cdk" / "cdk.out"
BOUNDARY = "arn:aws:iam::111122223333:policy/platform-boundary"
SAM_PARAMS = dict(**{**ALL_SOURCES, "MskClusterArn": MSK_CLUSTER, "SelfManagedBootstrapServers": ""},
                  PermissionsBoundaryArn=BOUNDARY, RoutesConfigUri="s3://routes-bucket/routes-v1.toml",
                  ExistingAlarmTopicArn="arn:aws:sns:us-east-1:111122223333:paging", **PASSWORD_DB, **SEARCH)


def sam_deployed(**extra):
    params = {**SAM_PARAMS, **extra}
    tpl, errors = decode(str(TEMPLATE))
    assert not errors
    translated = sam_translate(tpl, **params)
    resolved = resolve({**translated, "Parameters": tpl["Parameters"], "Globals": {}}, **params)
    return substitute(resolved, parameter_values(tpl, params))


def cdk_deployed(stack="StreamloadTest"):
    path = CDK_OUT / f"{stack}.template.json"
    assert path.exists(), f"{path}: run scripts/infra-check.sh (it synthesizes the CDK test app)"
    return json.loads(path.read_text())


@pytest.fixture(scope="module", params=["sam", "cdk"])
def deployed(request):
    return sam_deployed() if request.param == "sam" else cdk_deployed()


def of_type(t, kind):
    return {n: r for n, r in t["Resources"].items() if r["Type"] == kind}


def one(t, kind, where=lambda r: True):
    [r] = [r for r in of_type(t, kind).values() if where(r)]
    return r


def ref_id(value):
    """The logical id a Ref or GetAtt names."""
    if "Ref" in value:
        return value["Ref"]
    return value["Fn::GetAtt"][0] if isinstance(value["Fn::GetAtt"], list) else value["Fn::GetAtt"].split(".")[0]


def allow_statements(t):
    for name, r in t["Resources"].items():
        props = r.get("Properties", {})
        docs = []
        if r["Type"] == "AWS::IAM::Role":
            docs = [p["PolicyDocument"] for p in props.get("Policies", [])]
        elif r["Type"] in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
            docs = [props["PolicyDocument"]]
        for doc in docs:
            for st in doc["Statement"]:
                if st.get("Effect", "Allow") == "Allow":
                    yield name, st


def test_least_privilege_no_wildcard_action_and_star_resources_only_where_iam_requires(deployed):
    seen = 0
    for name, st in allow_statements(deployed):
        for action in as_list(st["Action"]):
            seen += 1
            assert "*" not in action, f"{name}: wildcard action {action}"
        if st["Resource"] == "*" or st["Resource"] == ["*"]:
            assert not set(as_list(st["Action"])) - STAR_RESOURCE_ONLY, (name, st["Action"])
    assert seen > 20
    # and every role takes the permissions boundary
    for name, role in of_type(deployed, "AWS::IAM::Role").items():
        assert "PermissionsBoundary" in role["Properties"], name


def test_the_dedup_table_keeps_claims_with_ttl_and_is_retained(deployed):
    t = one(deployed, "AWS::DynamoDB::Table")
    p = t["Properties"]
    assert p["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert p["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert p["SSESpecification"]["SSEEnabled"] is True
    assert p["BillingMode"] == "PAY_PER_REQUEST"
    assert (t["DeletionPolicy"], t["UpdateReplacePolicy"]) == ("Retain", "Retain")


def test_bucket_hygiene(deployed):
    b = one(deployed, "AWS::S3::Bucket")
    p = b["Properties"]
    assert all(p["PublicAccessBlockConfiguration"].values()) and len(p["PublicAccessBlockConfiguration"]) == 4
    [enc] = p["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert enc["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256" and enc["BucketKeyEnabled"] is True
    assert p["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert (b["DeletionPolicy"], b["UpdateReplacePolicy"]) == ("Retain", "Retain")
    rules = {r["Id"]: r for r in p["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-dead-letter-bytes"]["Prefix"] == "dead-letter/"
    assert rules["abort-incomplete-uploads"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    policy = one(deployed, "AWS::S3::BucketPolicy")["Properties"]["PolicyDocument"]["Statement"]
    assert any(s["Effect"] == "Deny" and s["Condition"]["Bool"]["aws:SecureTransport"] == "false" for s in policy)


def test_queues_are_encrypted_kept_14_days_retained_and_tls_only(deployed):
    queues = of_type(deployed, "AWS::SQS::Queue")
    assert len(queues) == 2
    for name, q in queues.items():
        assert q["Properties"]["SqsManagedSseEnabled"] is True and q["Properties"]["MessageRetentionPeriod"] == 1209600
        assert (q["DeletionPolicy"], q["UpdateReplacePolicy"]) == ("Retain", "Retain"), name
        policies = [p for p in of_type(deployed, "AWS::SQS::QueuePolicy").values()
                    if any(ref_id(x) == name for x in p["Properties"]["Queues"])]
        assert any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
                   for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]), name


def test_event_source_mappings_report_partial_failures_bisect_bound_retries_and_emit_metrics(deployed):
    res = deployed["Resources"]
    mappings = of_type(deployed, "AWS::Lambda::EventSourceMapping")
    assert len(mappings) == 2
    for name, m in mappings.items():
        p = m["Properties"]
        kafka = "Topics" in p
        assert p["FunctionResponseTypes"] == ["ReportBatchItemFailures"], name
        assert p["BisectBatchOnFunctionError"] is True, name
        assert 0 <= int(p["MaximumRetryAttempts"]) <= 100 and 60 <= int(p["MaximumRecordAgeInSeconds"]) < 86400, name
        assert res[ref_id(p["DestinationConfig"]["OnFailure"]["Destination"])]["Type"] == "AWS::SQS::Queue"
        assert int(p["BatchSize"]) == 1000 and int(p["MaximumBatchingWindowInSeconds"]) == 1
        assert p["MetricsConfig"]["Metrics"] == (["EventCount", "ErrorCount", "KafkaMetrics"] if kafka else ["EventCount"])
        if kafka:
            assert int(p["ProvisionedPollerConfig"]["MinimumPollers"]) >= 1
        # the mapping invokes the alias live of a version of its function
        alias = res[ref_id(p["FunctionName"])]
        assert alias["Type"] == "AWS::Lambda::Alias" and alias["Properties"]["Name"] == "live"
        assert res[ref_id(alias["Properties"]["FunctionVersion"])]["Type"] == "AWS::Lambda::Version"
        # and each mapping has its stopped-polling and errors alarms, by its UUID
        watching = [a for a in of_type(deployed, "AWS::CloudWatch::Alarm").values() if name in json.dumps(a)]
        metrics = {a["Properties"].get("MetricName") for a in watching}
        metrics |= {q["MetricStat"]["Metric"]["MetricName"] for a in watching for q in a["Properties"].get("Metrics", []) if "MetricStat" in q}
        assert {"PolledEventCount", "DroppedEventCount", "FailedInvokeEventCount"} <= metrics, name
        if kafka:
            assert "PollingErrorCount" in metrics


def test_functions_are_arm64_al2023_json_logs_no_secret_in_the_environment(deployed):
    for name, f in of_type(deployed, "AWS::Lambda::Function").items():
        p = f["Properties"]
        if p.get("Runtime", "").startswith("python"):
            continue  # the SAM stack's configuration digest
        assert p["Runtime"] == "provided.al2023" and p["Architectures"] == ["arm64"] and p["Handler"] == "bootstrap"
        assert p["LoggingConfig"]["LogFormat"] == "JSON" and p["LoggingConfig"]["ApplicationLogLevel"] in ("INFO", "DEBUG")
        env = p["Environment"]["Variables"]
        assert env["DATABASE_SSLMODE"] == "verify-full" and env["DATABASE_SECRET_ARN"].startswith("arn:aws:secretsmanager:")
        assert not any("PASSWORD" in k for k in env) and "DATABASE_URL" not in env
        assert {"DEDUP_TABLE", "OUTPUT_BUCKET", "DLQ_URL", "DATABASE_SSLROOTCERT_URI", "STREAMLOAD_CONFIG"} <= set(env)


def test_alarms_reach_the_stack_topic_and_the_existing_one_and_the_topic_is_under_a_key_cloudwatch_may_use(deployed):
    alarms = of_type(deployed, "AWS::CloudWatch::Alarm")
    assert len(alarms) == 16  # the same set in both
    for name, a in alarms.items():
        targets = json.dumps(a["Properties"]["AlarmActions"])
        assert "arn:aws:sns:us-east-1:111122223333:paging" in targets and len(a["Properties"]["AlarmActions"]) == 2, name
        assert a["Properties"]["OKActions"] == a["Properties"]["AlarmActions"], name
    topic = one(deployed, "AWS::SNS::Topic")
    key = deployed["Resources"][ref_id(topic["Properties"]["KmsMasterKeyId"])]
    assert key["Type"] == "AWS::KMS::Key" and key["Properties"]["EnableKeyRotation"] is True
    assert any(s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"} for s in key["Properties"]["KeyPolicy"]["Statement"])
    statements = [s for p in of_type(deployed, "AWS::SNS::TopicPolicy").values() for s in p["Properties"]["PolicyDocument"]["Statement"]]
    assert any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in statements)
    assert any(s["Effect"] == "Allow" and s["Principal"] == {"Service": "cloudwatch.amazonaws.com"} for s in statements)


def test_a_search_domain_is_reached_with_four_http_verbs_on_that_domain_only(deployed):
    # Given a deployment whose routes index into an Amazon OpenSearch Service domain (SigV4)
    domain = SEARCH["SearchDomainArn"]
    # Then the functions may POST, GET, HEAD and PUT on that domain's paths, nothing else of es
    grants = [st for _, st in allow_statements(deployed)
              if any(a.startswith("es:") for a in as_list(st["Action"]))]
    assert grants and all(sorted(as_list(st["Action"])) == ["es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPost",
                                                            "es:ESHttpPut"] for st in grants)
    def text(resource):  # the SAM side keeps an Fn::Sub whose parameters are already filled in
        return resource["Fn::Sub"] if isinstance(resource, dict) else resource
    assert all([text(r) for r in as_list(st["Resource"])] == [f"{domain}/*"] for st in grants), grants
    # And each loader is told where the cluster is and to sign with its role
    loaders = [f for f in of_type(deployed, "AWS::Lambda::Function").values()
               if f["Properties"].get("Runtime") == "provided.al2023"]
    assert len(loaders) == 2
    for f in loaders:
        env = f["Properties"]["Environment"]["Variables"]
        assert env["STREAMLOAD_SEARCH_URL"] == SEARCH["SearchEndpoint"]
        assert env["STREAMLOAD_SEARCH_AUTH"] == "sigv4"


def test_cdk_a_configuration_change_publishes_a_new_version():
    # Given the same construct with another route file
    def versions(stack):
        return {n for n, r in cdk_deployed(stack)["Resources"].items() if r["Type"] == "AWS::Lambda::Version"}
    a, b = versions("StreamloadTest"), versions("StreamloadTestNewRoutes")
    # Then every version is new (a new logical id publishes one; the alias moves to it)
    assert len(a) == 2 and not a & b
    for r in of_type(cdk_deployed(), "AWS::Lambda::Version").values():
        assert (r["DeletionPolicy"], r["UpdateReplacePolicy"]) == ("Retain", "Retain")


# ---- the table committer: the SAM stack's (TableCatalog) and the construct's (tables), per catalog
COMMITTER_CASES = {
    ("sam", "s3tables"): lambda: sam_deployed(TableCatalog="s3tables"),
    ("sam", "glue"): lambda: sam_deployed(TableCatalog="glue", GlueDatabaseName="lake_db"),
    ("cdk", "s3tables"): lambda: cdk_deployed("StreamloadTestTables"),
    ("cdk", "glue"): lambda: cdk_deployed("StreamloadTestGlue"),
}


@pytest.fixture(scope="module", params=sorted(COMMITTER_CASES), ids=lambda c: "-".join(c))
def with_tables(request):
    return request.param[1], COMMITTER_CASES[request.param]()


def committer(t):
    """The committer function: the one told a STREAMLOAD_CATALOG."""
    [(name, f)] = [(n, f) for n, f in of_type(t, "AWS::Lambda::Function").items()
                   if "STREAMLOAD_CATALOG" in f["Properties"].get("Environment", {}).get("Variables", {})]
    return name, f


def role_statements(t, role_id):
    """The Allow statements of a role: its inline policies and the policies attached to it."""
    out = []
    for name, st in allow_statements(t):
        r = t["Resources"][name]
        if name == role_id or any(ref_id(x) == role_id for x in r["Properties"].get("Roles", [])):
            out.append(st)
    return {st.get("Sid"): st for st in out}


def test_the_table_committer_is_the_same_in_both_deployments(with_tables):
    catalog, t = with_tables
    res = t["Resources"]
    name, f = committer(t)
    p = f["Properties"]
    # Given a deployment with the table committer: an arm64 function of 1,024 MB and 300 s,
    # told its catalog, outside any VPC
    assert p["Architectures"] == ["arm64"] and int(p["MemorySize"]) == 1024 and int(p["Timeout"]) == 300
    assert "VpcConfig" not in p
    env = p["Environment"]["Variables"]
    assert env["STREAMLOAD_CATALOG"] == catalog
    if catalog == "glue":
        assert env["STREAMLOAD_TABLE_NAMESPACE"] == "lake_db" and "STREAMLOAD_WAREHOUSE" in env
    else:
        assert "STREAMLOAD_TABLE_BUCKET_ARN" in env and "STREAMLOAD_WAREHOUSE" not in env
    # Then its role writes only its tc: claims, reads the staging, and touches one catalog
    statements = role_statements(t, ref_id(p["Role"]))
    claims = statements["CommitClaimsOnly"]
    assert sorted(as_list(claims["Action"])) == ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
    assert claims["Condition"] == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["tc:*"]}}
    assert as_list(statements["ReadStagedObjects"]["Action"]) == ["s3:GetObject"]
    tables = as_list(statements["TheRoutesTables"]["Action"])
    assert all(a.startswith(f"{'glue' if catalog == 'glue' else 's3tables'}:") for a in tables)
    assert not [a for a in tables if "Delete" in a]
    if catalog == "glue":
        assert "database/lake_db" in json.dumps(statements["TheRoutesTables"]["Resource"])
        assert sorted(as_list(statements["TheWarehouseFiles"]["Action"])) == ["s3:GetObject", "s3:PutObject"]
    # and it is fed by the queue S3 notifies of new staged Parquet, in batches of up to 1,000
    # over a minute, two at a time, with partial-batch answers
    def from_a_queue(m):
        arn = m["Properties"]["EventSourceArn"]
        return isinstance(arn, dict) and res[ref_id(arn)]["Type"] == "AWS::SQS::Queue"
    [m] = [m for m in of_type(t, "AWS::Lambda::EventSourceMapping").values() if from_a_queue(m)]
    mp = m["Properties"]
    assert int(mp["BatchSize"]) == 1000 and int(mp["MaximumBatchingWindowInSeconds"]) == 60
    assert mp["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert int(mp["ScalingConfig"]["MaximumConcurrency"]) == 2
    queue = res[ref_id(mp["EventSourceArn"])]["Properties"]
    assert int(queue["VisibilityTimeout"]) >= 6 * 300
    assert res[ref_id(queue["RedrivePolicy"]["deadLetterTargetArn"])]["Type"] == "AWS::SQS::Queue"
    [bucket] = [b for b in of_type(t, "AWS::S3::Bucket").values() if "NotificationConfiguration" in b["Properties"]]
    [qc] = bucket["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert qc["Event"] == "s3:ObjectCreated:*" and qc["Filter"]["S3Key"]["Rules"] == [{"Name": "suffix", "Value": ".parquet"}]
    # and an hourly sweep is its safety net, with the input the function reads
    schedules = [r for r in t["Resources"].values() if r["Type"] in ("AWS::Scheduler::Schedule", "AWS::Events::Rule")]
    inputs = json.dumps(schedules)
    assert len(schedules) == 1 and "rate(1 hour)" in inputs and "streamload_sweep" in inputs
    # and three alarms watch it: its errors, the queue's age, its dead letters
    watching = [a for a in of_type(t, "AWS::CloudWatch::Alarm").values()
                if a["Properties"].get("MetricName") in ("Errors", "ApproximateAgeOfOldestMessage", "ApproximateNumberOfMessagesVisible")
                and ("Commit" in json.dumps(a) or name in json.dumps(a))]
    assert {a["Properties"]["MetricName"] for a in watching} >= {"Errors", "ApproximateAgeOfOldestMessage", "ApproximateNumberOfMessagesVisible"}
    # and the generic checks hold for these deployments too
    test_least_privilege_no_wildcard_action_and_star_resources_only_where_iam_requires(t)
