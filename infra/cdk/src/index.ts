// streamload as an L3 construct: the same loaders, dedup table, bucket, queues, alarms and
// event-source mappings as infra/template.yaml, with the same secure defaults, for an existing
// CDK app. tests/infra/test_shared.py runs the SAM template's checks over what this synthesizes.
import { Duration, RemovalPolicy, Stack } from "aws-cdk-lib";
import * as cloudwatch from "aws-cdk-lib/aws-cloudwatch";
import * as cwActions from "aws-cdk-lib/aws-cloudwatch-actions";
import * as dynamodb from "aws-cdk-lib/aws-dynamodb";
import * as iam from "aws-cdk-lib/aws-iam";
import * as kms from "aws-cdk-lib/aws-kms";
import * as lambda from "aws-cdk-lib/aws-lambda";
import * as logs from "aws-cdk-lib/aws-logs";
import * as s3 from "aws-cdk-lib/aws-s3";
import * as sns from "aws-cdk-lib/aws-sns";
import * as subs from "aws-cdk-lib/aws-sns-subscriptions";
import * as sqs from "aws-cdk-lib/aws-sqs";
import { Construct } from "constructs";
import { tableCommitter, TableCommitterProps } from "./committer";

export { TableCommitterProps } from "./committer";

/** Where the database is and how to sign in (SAM: Database* parameters). */
export interface DatabaseProps {
  /** Password authentication: a secret with username and password (an RDS-managed one is enough). */
  readonly secretArn?: string;
  /** The customer managed key of that secret, if not aws/secretsmanager. */
  readonly secretKmsKeyArn?: string;
  /** IAM database authentication instead of a secret: the token is signed per connection. */
  readonly iamAuth?: { readonly resourceId: string };
  readonly host?: string;
  readonly port?: number;
  readonly name?: string;
  readonly user?: string;
  /** verify-full (default), verify-ca, require, disable; IAM authentication needs verify-*. */
  readonly sslMode?: "verify-full" | "verify-ca" | "require" | "disable";
  /** s3://bucket/key or a Secrets Manager ARN holding the PEM bundle (DATABASE_SSLROOTCERT_URI). */
  readonly caBundleUri?: string;
}

export interface KinesisSourceProps {
  readonly streamArn: string;
  /** The stream's customer managed key, if it is encrypted with one. */
  readonly kmsKeyArn?: string;
  readonly startingPosition?: "LATEST" | "TRIM_HORIZON";
  readonly batchSize?: number;
  readonly batchingWindowSeconds?: number;
  readonly parallelizationFactor?: number;
  readonly maxRetryAttempts?: number;
  /** Below the stream's retention (default 82,800 s for a 24 h stream). */
  readonly maxRecordAgeSeconds?: number;
}

export interface MskSourceProps {
  readonly clusterArn: string;
  readonly topic: string;
  readonly consumerGroupId?: string;
  /** IAM (default): kafka-cluster actions on this cluster, topic and group only. */
  readonly authMode?: "IAM" | "SASL_SCRAM_512" | "MTLS" | "NONE";
  readonly authSecretArn?: string;
  /** Required with SASL_SCRAM_512: MSK refuses secrets under aws/secretsmanager. */
  readonly secretKmsKeyArn?: string;
}

export interface KafkaSettings {
  readonly batchSize?: number;
  readonly batchingWindowSeconds?: number;
  readonly minPollers?: number;
  readonly maxPollers?: number;
  readonly maxRetryAttempts?: number;
  readonly maxRecordAgeSeconds?: number;
  readonly offsetLagThreshold?: number;
}

/** The search cluster routes with `[route.index]` write to (SAM: Search* parameters). */
export interface SearchProps {
  /** https://host of the OpenSearch or Elasticsearch cluster (STREAMLOAD_SEARCH_URL). */
  readonly endpoint: string;
  /** sigv4 (Amazon OpenSearch Service, the functions' role; needs domainArn), secret (basic credentials or an API key from secretArn), none. Default sigv4. */
  readonly auth?: "sigv4" | "secret" | "none";
  /** arn:aws:es:<region>:<account>:domain/<name>: the role may POST, GET, HEAD and PUT on that domain's paths only. */
  readonly domainArn?: string;
  /** With auth secret: a secret holding {"username","password"} or {"api_key"}. */
  readonly secretArn?: string;
}

export interface StreamLoaderProps {
  /**
   * The functions' code: a directory holding `bootstrap`, or a zip. `make package` writes
   * target/lambda/kinesis-loader/bootstrap.zip and target/lambda/kafka-loader/bootstrap.zip
   * (arm64, provided.al2023).
   */
  readonly kinesisLoaderCode?: string;
  readonly kafkaLoaderCode?: string;
  readonly database: DatabaseProps;
  readonly kinesis?: KinesisSourceProps;
  readonly msk?: MskSourceProps;
  readonly kafka?: KafkaSettings;
  /** Functions in a VPC: subnet and security group ids. */
  readonly vpc?: { readonly subnetIds: string[]; readonly securityGroupIds: string[] };
  /** An e-mail subscribed to the alarm topic; this or existingAlarmTopicArn is required. */
  readonly alarmEmail?: string;
  /** An existing (paging) topic every alarm notifies as well. */
  readonly existingAlarmTopicArn?: string;
  /** Minutes without a poll before a mapping alarms (default 15; 0: none). */
  readonly stoppedMappingAlarmMinutes?: number;
  readonly memorySize?: number;
  readonly timeoutSeconds?: number;
  readonly logLevel?: "INFO" | "DEBUG";
  readonly logRetention?: logs.RetentionDays;
  readonly routesConfigUri?: string;
  /** The search cluster of routes with `[route.index]`. */
  readonly search?: SearchProps;
  readonly targetTable?: string;
  readonly outputPrefix?: string;
  readonly deadLetterPrefix?: string;
  readonly deadLetterObjectDays?: number;
  readonly dedupTtlSeconds?: number;
  readonly permissionsBoundaryArn?: string;
  /** The table committer: routes' [route.iceberg] tables in S3 Tables or Glue (SAM: TableCatalog). */
  readonly tables?: TableCommitterProps;
}

const ALARM_PERIOD = Duration.minutes(5);

export class StreamLoader extends Construct {
  readonly dedupTable: dynamodb.Table;
  readonly bucket: s3.Bucket;
  readonly deadLetterQueue: sqs.Queue;
  readonly onFailureQueue: sqs.Queue;
  readonly alarmTopic: sns.Topic;
  readonly kinesisAlias?: lambda.Alias;
  readonly kafkaAlias?: lambda.Alias;
  readonly tableCommitterAlias?: lambda.Alias;

  constructor(scope: Construct, id: string, props: StreamLoaderProps) {
    super(scope, id);
    const db = props.database;
    if (!props.alarmEmail && !props.existingAlarmTopicArn) {
      throw new Error("StreamLoader: alarms need a destination - alarmEmail, existingAlarmTopicArn, or both");
    }
    if (!db.iamAuth && !db.secretArn) throw new Error("StreamLoader: database.secretArn or database.iamAuth");
    if (db.iamAuth && (!db.host || !db.name || !db.user)) throw new Error("StreamLoader: IAM database authentication needs host, name and user");
    const sslMode = db.sslMode ?? "verify-full";
    if (db.iamAuth && sslMode !== "verify-full" && sslMode !== "verify-ca") {
      throw new Error("StreamLoader: IAM database authentication sends a bearer token; sslMode must be verify-full or verify-ca");
    }
    if (props.msk && (props.msk.authMode ?? "IAM") === "SASL_SCRAM_512" && !props.msk.secretKmsKeyArn) {
      throw new Error("StreamLoader: MSK SASL/SCRAM secrets need a customer managed key (msk.secretKmsKeyArn)");
    }
    const search = props.search;
    const searchAuth = search ? (search.auth ?? "sigv4") : "none";
    if (search && searchAuth === "sigv4" && !search.domainArn) {
      throw new Error("StreamLoader: search.auth sigv4 needs search.domainArn (the functions' role may reach that domain only)");
    }
    if (search && searchAuth === "secret" && !search.secretArn) {
      throw new Error("StreamLoader: search.auth secret needs search.secretArn");
    }
    if (search && !search.endpoint.startsWith("https://")) {
      throw new Error("StreamLoader: search.endpoint must be https:// (TLS with verification)");
    }
    const outputPrefix = props.outputPrefix ?? "events/";
    const deadLetterPrefix = props.deadLetterPrefix ?? "dead-letter/";
    if (outputPrefix.startsWith(deadLetterPrefix) || deadLetterPrefix.startsWith(outputPrefix)) {
      throw new Error("StreamLoader: deadLetterPrefix and outputPrefix must not contain one another (the dead-letter expiry would reach the lake)");
    }
    const stack = Stack.of(this);

    // ---- storage
    this.dedupTable = new dynamodb.Table(this, "DedupTable", {
      partitionKey: { name: "pk", type: dynamodb.AttributeType.STRING },
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      timeToLiveAttribute: "expires_at",
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      encryption: dynamodb.TableEncryption.AWS_MANAGED,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    this.bucket = new s3.Bucket(this, "OutputBucket", {
      encryption: s3.BucketEncryption.S3_MANAGED,
      bucketKeyEnabled: true,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      removalPolicy: RemovalPolicy.RETAIN,
      lifecycleRules: [
        { id: "expire-dead-letter-bytes", prefix: deadLetterPrefix, expiration: Duration.days(props.deadLetterObjectDays ?? 90) },
        { id: "abort-incomplete-uploads", abortIncompleteMultipartUploadAfter: Duration.days(1) },
      ],
    });
    const queue = (name: string) =>
      new sqs.Queue(this, name, {
        encryption: sqs.QueueEncryption.SQS_MANAGED,
        retentionPeriod: Duration.days(14),
        enforceSSL: true,
        removalPolicy: RemovalPolicy.RETAIN,
      });
    this.deadLetterQueue = queue("DeadLetterQueue");
    this.onFailureQueue = queue("OnFailureQueue");

    // ---- alarms reach someone: a key CloudWatch may use (not aws/sns), a TLS-only topic
    const alarmKey = new kms.Key(this, "AlarmTopicKey", {
      enableKeyRotation: true,
      description: "streamload alarm topic: CloudWatch alarms publish through it",
    });
    const fromAlarms = {
      StringEquals: { "aws:SourceAccount": stack.account },
      ArnLike: { "aws:SourceArn": `arn:${stack.partition}:cloudwatch:${stack.region}:${stack.account}:alarm:*` },
    };
    alarmKey.addToResourcePolicy(new iam.PolicyStatement({
      sid: "CloudWatchAlarmsPublish",
      principals: [new iam.ServicePrincipal("cloudwatch.amazonaws.com")],
      actions: ["kms:Decrypt", "kms:GenerateDataKey*"],
      resources: ["*"],
      conditions: fromAlarms,
    }));
    this.alarmTopic = new sns.Topic(this, "AlarmTopic", { masterKey: alarmKey, enforceSSL: true });
    this.alarmTopic.addToResourcePolicy(new iam.PolicyStatement({
      sid: "CloudWatchAlarmsPublish",
      principals: [new iam.ServicePrincipal("cloudwatch.amazonaws.com")],
      actions: ["sns:Publish"],
      resources: [this.alarmTopic.topicArn],
      conditions: fromAlarms,
    }));
    if (props.alarmEmail) this.alarmTopic.addSubscription(new subs.EmailSubscription(props.alarmEmail));
    const actions: cloudwatch.IAlarmAction[] = [new cwActions.SnsAction(this.alarmTopic)];
    if (props.existingAlarmTopicArn) {
      actions.push(new cwActions.SnsAction(sns.Topic.fromTopicArn(this, "ExistingAlarmTopic", props.existingAlarmTopicArn)));
    }
    const alarm = (name: string, a: cloudwatch.Alarm) => {
      a.addAlarmAction(...actions);
      a.addOkAction(...actions);
      return a;
    };
    for (const [name, q, what] of [
      ["DeadLetterDepthAlarm", this.deadLetterQueue, "Records that can never load are waiting in the dead-letter queue."],
      ["OnFailureDepthAlarm", this.onFailureQueue, "The event-source mapping gave up on a batch."],
    ] as const) {
      alarm(name, new cloudwatch.Alarm(this, name, {
        alarmDescription: what,
        metric: q.metricApproximateNumberOfMessagesVisible({ statistic: "Maximum", period: ALARM_PERIOD }),
        threshold: 0,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }));
    }

    // ---- what both functions may do: only the actions they use, on the resources they use
    const sink: iam.PolicyStatement[] = [
      new iam.PolicyStatement({
        sid: "DedupClaims",
        actions: ["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:DeleteItem"],
        resources: [this.dedupTable.tableArn],
      }),
      new iam.PolicyStatement({
        sid: "ParquetAndDeadLetterObjects",
        actions: ["s3:PutObject", "s3:GetObject"],
        resources: [
          this.bucket.arnForObjects(`${props.routesConfigUri ? "" : outputPrefix}*`),
          this.bucket.arnForObjects(`${deadLetterPrefix}*`),
        ],
      }),
      new iam.PolicyStatement({
        sid: "ListForHeadObject",
        actions: ["s3:ListBucket"],
        resources: [this.bucket.bucketArn],
        conditions: { StringLike: { "s3:prefix": [props.routesConfigUri ? "*" : `${outputPrefix}*`, `${deadLetterPrefix}*`] } },
      }),
      new iam.PolicyStatement({
        sid: "DeadLetters",
        actions: ["sqs:SendMessage"],
        resources: [this.deadLetterQueue.queueArn, this.onFailureQueue.queueArn],
      }),
    ];
    if (db.secretArn) sink.push(new iam.PolicyStatement({ sid: "DatabaseCredentials", actions: ["secretsmanager:GetSecretValue"], resources: [db.secretArn] }));
    if (db.secretKmsKeyArn) {
      sink.push(new iam.PolicyStatement({
        sid: "DatabaseSecretKey", actions: ["kms:Decrypt"], resources: [db.secretKmsKeyArn],
        conditions: { StringEquals: { "kms:ViaService": `secretsmanager.${stack.region}.amazonaws.com` } },
      }));
    }
    if (db.iamAuth) {
      sink.push(new iam.PolicyStatement({
        sid: "DatabaseIamConnect", actions: ["rds-db:connect"],
        resources: [`arn:${stack.partition}:rds-db:${stack.region}:${stack.account}:dbuser:${db.iamAuth.resourceId}/${db.user}`],
      }));
    }
    if (db.caBundleUri?.startsWith("s3://")) {
      sink.push(new iam.PolicyStatement({ sid: "DatabaseCaBundleObject", actions: ["s3:GetObject"], resources: [`arn:${stack.partition}:s3:::${db.caBundleUri.slice(5)}`] }));
    } else if (db.caBundleUri) {
      sink.push(new iam.PolicyStatement({ sid: "DatabaseCaBundleSecret", actions: ["secretsmanager:GetSecretValue"], resources: [db.caBundleUri] }));
    }
    if (search && searchAuth === "sigv4" && search.domainArn) {
      // POST /_bulk for the documents; GET, HEAD and PUT of the index (or its template) for the
      // start-up check and auto_migrate. No DELETE.
      sink.push(new iam.PolicyStatement({
        sid: "SearchDomain", actions: ["es:ESHttpPost", "es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPut"],
        resources: [`${search.domainArn}/*`],
      }));
    }
    if (search && searchAuth === "secret" && search.secretArn) {
      sink.push(new iam.PolicyStatement({ sid: "SearchCredentials", actions: ["secretsmanager:GetSecretValue"], resources: [search.secretArn] }));
    }
    if (props.routesConfigUri) {
      sink.push(new iam.PolicyStatement({ sid: "RouteFile", actions: ["s3:GetObject"], resources: [`arn:${stack.partition}:s3:::${props.routesConfigUri.slice(5)}`] }));
    }
    const eni = new iam.PolicyStatement({
      sid: "VpcEni",
      actions: ["ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses", "ec2:DescribeVpcs", "ec2:DescribeSubnets",
        "ec2:DescribeSecurityGroups"],
      // EC2 network-interface and describe actions do not support resource scoping.
      resources: ["*"],
    });

    const environment: Record<string, string> = {
      DATABASE_SECRET_ARN: db.secretArn ?? "",
      DATABASE_HOST: db.host ?? "",
      DATABASE_PORT: db.host ? String(db.port ?? 5432) : "",
      DATABASE_NAME: db.name ?? "",
      DATABASE_USER: db.user ?? "",
      DATABASE_IAM_AUTH: db.iamAuth ? "true" : "false",
      DATABASE_SSLMODE: sslMode,
      DATABASE_SSLROOTCERT: "",
      DATABASE_SSLROOTCERT_URI: db.caBundleUri ?? "",
      TARGET_TABLE: props.targetTable ?? "events",
      STREAMLOAD_CONFIG: props.routesConfigUri ?? "",
      DEDUP_TABLE: this.dedupTable.tableName,
      DEDUP_TTL_SECONDS: String(props.dedupTtlSeconds ?? 604800),
      OUTPUT_BUCKET: this.bucket.bucketName,
      OUTPUT_PREFIX: outputPrefix,
      DEAD_LETTER_PREFIX: deadLetterPrefix,
      DLQ_URL: this.deadLetterQueue.queueUrl,
      STREAMLOAD_SEARCH_URL: search?.endpoint ?? "",
      STREAMLOAD_SEARCH_AUTH: searchAuth,
      STREAMLOAD_SEARCH_SECRET_ARN: search?.secretArn ?? "",
    };

    const loader = (name: "kinesis-loader" | "kafka-loader", codePath: string | undefined, source: iam.PolicyStatement[]) => {
      if (!codePath) throw new Error(`StreamLoader: ${name} code path (make package: target/lambda/${name}/bootstrap.zip)`);
      const prefix = name === "kinesis-loader" ? "Kinesis" : "Kafka";
      const role = new iam.Role(this, `${prefix}LoaderRole`, {
        assumedBy: new iam.ServicePrincipal("lambda.amazonaws.com"),
        permissionsBoundary: props.permissionsBoundaryArn
          ? iam.ManagedPolicy.fromManagedPolicyArn(this, `${prefix}Boundary`, props.permissionsBoundaryArn) : undefined,
      });
      const logGroup = new logs.LogGroup(this, `${prefix}LoaderLogGroup`, {
        retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
        removalPolicy: RemovalPolicy.DESTROY,
      });
      const statements = [...sink, ...source, new iam.PolicyStatement({
        sid: "Logs", actions: ["logs:CreateLogStream", "logs:PutLogEvents"], resources: [`${logGroup.logGroupArn}`],
      })];
      if (props.vpc && name === "kinesis-loader") statements.push(eni);
      const policy = new iam.Policy(this, `${prefix}LoaderPolicy`, { roles: [role], statements });
      const fn = new lambda.Function(this, `${prefix}Loader`, {
        runtime: lambda.Runtime.PROVIDED_AL2023,
        architecture: lambda.Architecture.ARM_64,
        handler: "bootstrap",
        code: lambda.Code.fromAsset(codePath),
        memorySize: props.memorySize ?? 1024,
        timeout: Duration.seconds(props.timeoutSeconds ?? 120),
        role,
        environment,
        loggingFormat: lambda.LoggingFormat.JSON,
        applicationLogLevelV2: props.logLevel === "DEBUG" ? lambda.ApplicationLogLevel.DEBUG : lambda.ApplicationLogLevel.INFO,
        systemLogLevelV2: lambda.SystemLogLevel.INFO,
        logGroup,
      });
      if (props.vpc) {
        (fn.node.defaultChild as lambda.CfnFunction).vpcConfig = {
          subnetIds: props.vpc.subnetIds, securityGroupIds: props.vpc.securityGroupIds,
        };
      }
      // The mapping checks its role when it is created: the policy first.
      // currentVersion's logical id is a hash of the function's configuration as synthesized:
      // any change of code or configuration publishes a new version, and the alias moves to it.
      const alias = new lambda.Alias(this, `${prefix}LoaderLive`, { aliasName: "live", version: fn.currentVersion });
      (fn.currentVersion.node.defaultChild as lambda.CfnVersion).applyRemovalPolicy(RemovalPolicy.RETAIN);
      for (const [metric, what] of [["Errors", "invocations failed"], ["Throttles", "is throttled"]] as const) {
        alarm(`${prefix}${metric}Alarm`, new cloudwatch.Alarm(this, `${prefix}${metric}Alarm`, {
          alarmDescription: `${name} ${what}.`,
          metric: fn.metric(metric, { statistic: "Sum", period: ALARM_PERIOD }),
          threshold: 0, evaluationPeriods: 1,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
          treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        }));
      }
      for (const metric of ["RecordsFailed", "RecordsPoison"]) {
        alarm(`${prefix}${metric}Alarm`, new cloudwatch.Alarm(this, `${prefix}${metric}Alarm`, {
          alarmDescription: `${name} ${metric} (the loader's own EMF count).`,
          metric: new cloudwatch.Metric({ namespace: "streamload", metricName: metric, dimensionsMap: { FunctionName: fn.functionName }, statistic: "Sum", period: ALARM_PERIOD }),
          threshold: 0, evaluationPeriods: 1,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
          treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        }));
      }
      return { fn, alias, policy };
    };

    const mappingAlarms = (prefix: string, mapping: lambda.CfnEventSourceMapping, kafka: boolean) => {
      const uuid = { EventSourceMappingUUID: mapping.ref };
      const minutes = props.stoppedMappingAlarmMinutes ?? 15;
      if (minutes > 0) {
        alarm(`${prefix}StoppedAlarm`, new cloudwatch.Alarm(this, `${prefix}StoppedAlarm`, {
          alarmDescription: `The ${prefix} mapping has not polled its source for ${minutes} minutes.`,
          metric: new cloudwatch.Metric({ namespace: "AWS/Lambda", metricName: "PolledEventCount", dimensionsMap: uuid, statistic: "SampleCount", period: Duration.minutes(1) }),
          threshold: 1, evaluationPeriods: minutes,
          comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
          treatMissingData: cloudwatch.TreatMissingData.BREACHING,
        }));
      }
      const inputs: Record<string, string> = { dropped: "DroppedEventCount", failedinvoke: "FailedInvokeEventCount" };
      if (kafka) Object.assign(inputs, { polling: "PollingErrorCount", invoke: "InvokeErrorCount", commit: "CommitErrorCount", onfailure: "OnFailureDestinationDeliveryErrorCount" });
      const usingMetrics: Record<string, cloudwatch.IMetric> = {};
      for (const [id, metricName] of Object.entries(inputs)) {
        usingMetrics[id] = new cloudwatch.Metric({ namespace: "AWS/Lambda", metricName, dimensionsMap: uuid, statistic: "Sum", period: ALARM_PERIOD });
      }
      alarm(`${prefix}ErrorsAlarm`, new cloudwatch.Alarm(this, `${prefix}ErrorsAlarm`, {
        alarmDescription: `The ${prefix} mapping reports errors: ${Object.values(inputs).join(", ")}.`,
        metric: new cloudwatch.MathExpression({
          expression: Object.keys(inputs).map((id) => `FILL(${id}, 0)`).join(" + "), usingMetrics, period: ALARM_PERIOD, label: `${prefix} mapping errors`,
        }),
        threshold: 0, evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }));
    };

    const common = {
      functionResponseTypes: ["ReportBatchItemFailures"],
      bisectBatchOnFunctionError: true,
      destinationConfig: { onFailure: { destination: this.onFailureQueue.queueArn } },
    };

    // ---- Kinesis
    if (props.kinesis) {
      const k = props.kinesis;
      const source = [
        new iam.PolicyStatement({
          sid: "ReadStream",
          actions: ["kinesis:DescribeStream", "kinesis:DescribeStreamSummary", "kinesis:GetRecords", "kinesis:GetShardIterator", "kinesis:ListShards", "kinesis:SubscribeToShard"],
          resources: [k.streamArn, `${k.streamArn}/*`],
        }),
        // ListStreams has no resource type: IAM accepts only "*" for it.
        new iam.PolicyStatement({ sid: "ListStreams", actions: ["kinesis:ListStreams"], resources: ["*"] }),
      ];
      if (k.kmsKeyArn) {
        source.push(new iam.PolicyStatement({
          sid: "StreamKey", actions: ["kms:Decrypt"], resources: [k.kmsKeyArn],
          conditions: { StringEquals: { "kms:ViaService": `kinesis.${stack.region}.amazonaws.com` } },
        }));
      }
      const { fn, alias, policy } = loader("kinesis-loader", props.kinesisLoaderCode, source);
      this.kinesisAlias = alias;
      const mapping = new lambda.CfnEventSourceMapping(this, "KinesisMapping", {
        ...common,
        functionName: alias.functionArn,
        eventSourceArn: k.streamArn,
        startingPosition: k.startingPosition ?? "LATEST",
        batchSize: k.batchSize ?? 1000,
        maximumBatchingWindowInSeconds: k.batchingWindowSeconds ?? 1,
        parallelizationFactor: k.parallelizationFactor ?? 1,
        maximumRetryAttempts: k.maxRetryAttempts ?? 20,
        maximumRecordAgeInSeconds: k.maxRecordAgeSeconds ?? 82800,
        metricsConfig: { metrics: ["EventCount"] },
      });
      mapping.node.addDependency(policy);
      alarm("KinesisIteratorAgeAlarm", new cloudwatch.Alarm(this, "KinesisIteratorAgeAlarm", {
        alarmDescription: "The Kinesis loader is falling behind (iterator age over 5 minutes).",
        metric: fn.metric("IteratorAge", { statistic: "Maximum", period: Duration.minutes(1) }),
        threshold: 300000, evaluationPeriods: 5,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.MISSING,
      }));
      mappingAlarms("KinesisMapping", mapping, false);
    }

    // ---- Amazon MSK
    if (props.msk) {
      const m = props.msk;
      const mode = m.authMode ?? "IAM";
      const group = m.consumerGroupId ?? "streamload";
      const [arnPrefix, cluster] = m.clusterArn.split(":cluster/");
      const source = [
        new iam.PolicyStatement({ sid: "MskCluster", actions: ["kafka:DescribeCluster", "kafka:DescribeClusterV2", "kafka:GetBootstrapBrokers"], resources: [m.clusterArn] }),
        eni,
      ];
      if (mode === "IAM") {
        source.push(
          new iam.PolicyStatement({ sid: "MskIamCluster", actions: ["kafka-cluster:Connect", "kafka-cluster:DescribeClusterDynamicConfiguration"], resources: [m.clusterArn] }),
          new iam.PolicyStatement({ sid: "MskIamTopic", actions: ["kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"], resources: [`${arnPrefix}:topic/${cluster}/${m.topic}`] }),
          new iam.PolicyStatement({ sid: "MskIamGroup", actions: ["kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup"], resources: [`${arnPrefix}:group/${cluster}/${group}`] }),
        );
      } else if (m.authSecretArn) {
        source.push(new iam.PolicyStatement({ sid: "MskAuthSecret", actions: ["secretsmanager:GetSecretValue"], resources: [m.authSecretArn] }));
      }
      if (m.secretKmsKeyArn) {
        source.push(new iam.PolicyStatement({
          sid: "KafkaSecretKey", actions: ["kms:Decrypt"], resources: [m.secretKmsKeyArn],
          conditions: { StringEquals: { "kms:ViaService": `secretsmanager.${stack.region}.amazonaws.com` } },
        }));
      }
      const { fn, alias, policy } = loader("kafka-loader", props.kafkaLoaderCode, source);
      this.kafkaAlias = alias;
      const kafka = props.kafka ?? {};
      const mapping = new lambda.CfnEventSourceMapping(this, "MskMapping", {
        ...common,
        functionName: alias.functionArn,
        eventSourceArn: m.clusterArn,
        topics: [m.topic],
        startingPosition: "LATEST",
        amazonManagedKafkaEventSourceConfig: { consumerGroupId: group },
        sourceAccessConfigurations: mode === "SASL_SCRAM_512" || mode === "MTLS"
          ? [{ type: mode === "MTLS" ? "CLIENT_CERTIFICATE_TLS_AUTH" : "SASL_SCRAM_512_AUTH", uri: m.authSecretArn }] : undefined,
        batchSize: kafka.batchSize ?? 1000,
        maximumBatchingWindowInSeconds: kafka.batchingWindowSeconds ?? 1,
        provisionedPollerConfig: { minimumPollers: kafka.minPollers ?? 1, maximumPollers: kafka.maxPollers ?? 10 },
        maximumRetryAttempts: kafka.maxRetryAttempts ?? 10,
        maximumRecordAgeInSeconds: kafka.maxRecordAgeSeconds ?? 82800,
        metricsConfig: { metrics: ["EventCount", "ErrorCount", "KafkaMetrics"] },
      });
      mapping.node.addDependency(policy);
      alarm("KafkaOffsetLagAlarm", new cloudwatch.Alarm(this, "KafkaOffsetLagAlarm", {
        alarmDescription: "The Kafka loader is falling behind.",
        metric: fn.metric("OffsetLag", { statistic: "Maximum", period: Duration.minutes(1) }),
        threshold: kafka.offsetLagThreshold ?? 100000, evaluationPeriods: 5,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.MISSING,
      }));
      mappingAlarms("MskMapping", mapping, true);
    }

    // ---- the table committer
    if (props.tables) {
      this.tableCommitterAlias = tableCommitter(this, props.tables, {
        bucket: this.bucket,
        dedupTable: this.dedupTable,
        dedupTtlSeconds: props.dedupTtlSeconds ?? 604800,
        routesConfigUri: props.routesConfigUri,
        permissionsBoundaryArn: props.permissionsBoundaryArn,
        logRetention: props.logRetention,
        alarm,
      });
    }
  }
}
