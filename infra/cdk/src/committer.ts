// The table committer (SAM: TableCatalog and the TableCommitter resources): the staged Parquet
// objects of routes with a [route.iceberg] table appended to their Apache Iceberg tables, exactly
// once (docs/exactly-once.md, "The table committer"), in an S3 table bucket or the Glue Data
// Catalog. The same resources, defaults and grants as infra/template.yaml.
import { Duration, RemovalPolicy, Stack } from "aws-cdk-lib";
import * as cloudwatch from "aws-cdk-lib/aws-cloudwatch";
import * as dynamodb from "aws-cdk-lib/aws-dynamodb";
import * as events from "aws-cdk-lib/aws-events";
import * as targets from "aws-cdk-lib/aws-events-targets";
import * as iam from "aws-cdk-lib/aws-iam";
import * as lambda from "aws-cdk-lib/aws-lambda";
import * as logs from "aws-cdk-lib/aws-logs";
import * as s3 from "aws-cdk-lib/aws-s3";
import * as s3tables from "aws-cdk-lib/aws-s3tables";
import * as sqs from "aws-cdk-lib/aws-sqs";
import { Construct } from "constructs";

/** Where the routes' tables live, and the committer's code (SAM: TableCatalog…). */
export interface TableCommitterProps {
  /** `s3tables` (an S3 table bucket; compaction and snapshot expiry by S3 Tables) or `glue`. */
  readonly catalog: "s3tables" | "glue";
  /** The committer's code (make package: target/lambda/table-committer/bootstrap.zip). */
  readonly code: string;
  /** s3tables: the table bucket's name, created (and retained) unless `existingTableBucket`. */
  readonly tableBucketName?: string;
  readonly existingTableBucket?: boolean;
  /** glue: the one database the committer may write; every route's namespace must be it. */
  readonly glueDatabaseName?: string;
  /** How long the mapping gathers notifications before a commit (default 60 s). */
  readonly batchingWindowSeconds?: number;
  /** Event-time hours the hourly sweep lists (default 24, at most 168). */
  readonly sweepHours?: number;
}

/** What the committer needs from the rest of the construct. */
export interface CommitterContext {
  readonly bucket: s3.Bucket;
  readonly dedupTable: dynamodb.Table;
  readonly dedupTtlSeconds: number;
  readonly routesConfigUri?: string;
  readonly permissionsBoundaryArn?: string;
  readonly logRetention?: logs.RetentionDays;
  readonly alarm: (name: string, a: cloudwatch.Alarm) => cloudwatch.Alarm;
}

const ALARM_PERIOD = Duration.minutes(5);
const TIMEOUT = Duration.seconds(300);

export function tableCommitter(scope: Construct, props: TableCommitterProps, ctx: CommitterContext): lambda.Alias {
  if (!ctx.routesConfigUri) {
    throw new Error("StreamLoader: tables needs routesConfigUri (the committer reads the routes' [route.iceberg] tables from the route file)");
  }
  const sweepHours = props.sweepHours ?? 24;
  if (sweepHours < 1 || sweepHours > 168) throw new Error("StreamLoader: tables.sweepHours must be 1 to 168");
  const stack = Stack.of(scope);
  const statements: iam.PolicyStatement[] = [];
  const environment: Record<string, string> = {
    STREAMLOAD_CONFIG: ctx.routesConfigUri,
    DEDUP_TABLE: ctx.dedupTable.tableName,
    DEDUP_TTL_SECONDS: String(ctx.dedupTtlSeconds),
    OUTPUT_BUCKET: ctx.bucket.bucketName,
    STREAMLOAD_CATALOG: props.catalog,
  };

  if (props.catalog === "s3tables") {
    const name = props.tableBucketName ?? "streamload-tables";
    const arn = `arn:${stack.partition}:s3tables:${stack.region}:${stack.account}:bucket/${name}`;
    if (!props.existingTableBucket) {
      const tableBucket = new s3tables.CfnTableBucket(scope, "TableBucket", {
        tableBucketName: name,
        // Data files no snapshot references (a committer that died between its write and its
        // append) are removed by S3 Tables.
        unreferencedFileRemoval: { status: "Enabled", unreferencedDays: 3, noncurrentDays: 10 },
      });
      tableBucket.applyRemovalPolicy(RemovalPolicy.RETAIN);
    }
    environment.STREAMLOAD_TABLE_BUCKET_ARN = arn;
    statements.push(new iam.PolicyStatement({
      sid: "TheRoutesTables",
      actions: ["s3tables:GetTableBucket", "s3tables:GetNamespace", "s3tables:CreateNamespace", "s3tables:GetTable",
        "s3tables:CreateTable", "s3tables:GetTableMetadataLocation", "s3tables:UpdateTableMetadataLocation",
        "s3tables:GetTableData", "s3tables:PutTableData"],
      resources: [arn, `${arn}/table/*`],
    }));
  } else {
    const database = props.glueDatabaseName ?? "streamload";
    const warehouse = new s3.Bucket(scope, "TableWarehouseBucket", {
      encryption: s3.BucketEncryption.S3_MANAGED,
      bucketKeyEnabled: true,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      removalPolicy: RemovalPolicy.RETAIN,
      lifecycleRules: [{ id: "abort-incomplete-uploads", abortIncompleteMultipartUploadAfter: Duration.days(1) }],
    });
    Object.assign(environment, {
      STREAMLOAD_WAREHOUSE: `s3://${warehouse.bucketName}/warehouse`,
      STREAMLOAD_TABLE_NAMESPACE: database,
    });
    const glue = `arn:${stack.partition}:glue:${stack.region}:${stack.account}`;
    statements.push(
      new iam.PolicyStatement({
        sid: "TheRoutesTables",
        // No DeleteTable, no other database: the appends' compare-and-swap is UpdateTable with
        // the VersionId the commit was built on.
        actions: ["glue:GetDatabase", "glue:CreateDatabase", "glue:GetTable", "glue:CreateTable", "glue:UpdateTable"],
        resources: [`${glue}:catalog`, `${glue}:database/${database}`, `${glue}:table/${database}/*`],
      }),
      new iam.PolicyStatement({ sid: "TheWarehouseFiles", actions: ["s3:GetObject", "s3:PutObject"], resources: [warehouse.arnForObjects("*")] }),
      // A missing object answers 404, not 403, only with ListBucket.
      new iam.PolicyStatement({ sid: "TheWarehouseListing", actions: ["s3:ListBucket"], resources: [warehouse.bucketArn] }),
    );
  }

  // ---- S3 notifies a queue of new staged Parquet objects; what keeps failing goes to its DLQ
  const deadLetters = new sqs.Queue(scope, "CommitDeadLetterQueue", {
    encryption: sqs.QueueEncryption.SQS_MANAGED,
    retentionPeriod: Duration.days(14),
    enforceSSL: true,
    removalPolicy: RemovalPolicy.RETAIN,
  });
  const window = props.batchingWindowSeconds ?? 60;
  const queue = new sqs.Queue(scope, "CommitQueue", {
    encryption: sqs.QueueEncryption.SQS_MANAGED,
    retentionPeriod: Duration.days(14),
    // Six times the committer's timeout (AWS's advice for an SQS mapping) plus the window.
    visibilityTimeout: Duration.seconds(6 * TIMEOUT.toSeconds() + window),
    deadLetterQueue: { queue: deadLetters, maxReceiveCount: 20 },
    enforceSSL: true,
    removalPolicy: RemovalPolicy.RETAIN,
  });
  const notify = queue.addToResourcePolicy(new iam.PolicyStatement({
    sid: "S3NotifiesNewStagedObjects",
    principals: [new iam.ServicePrincipal("s3.amazonaws.com")],
    actions: ["sqs:SendMessage"],
    resources: [queue.queueArn],
    conditions: {
      StringEquals: { "aws:SourceAccount": stack.account },
      // Not the bucket's ARN: the bucket's notification needs this policy first, so naming the
      // bucket here would be a cycle. Buckets of this account only.
      ArnLike: { "aws:SourceArn": `arn:${stack.partition}:s3:::*` },
    },
  }));
  // Set on the bucket itself (not CDK's notification custom resource and its own function):
  // S3 sends a test message when the configuration is put, so the queue's policy comes first.
  const cfnBucket = ctx.bucket.node.defaultChild as s3.CfnBucket;
  cfnBucket.notificationConfiguration = {
    queueConfigurations: [{
      event: "s3:ObjectCreated:*",
      queue: queue.queueArn,
      filter: { s3Key: { rules: [{ name: "suffix", value: ".parquet" }] } },
    }],
  };
  if (notify.policyDependable) cfnBucket.node.addDependency(notify.policyDependable);

  // ---- the committer: reads the staging, writes only its claims and its tables
  const logGroup = new logs.LogGroup(scope, "TableCommitterLogGroup", {
    retention: ctx.logRetention ?? logs.RetentionDays.ONE_MONTH,
    removalPolicy: RemovalPolicy.DESTROY,
  });
  statements.push(
    new iam.PolicyStatement({ sid: "Logs", actions: ["logs:CreateLogStream", "logs:PutLogEvents"], resources: [logGroup.logGroupArn] }),
    new iam.PolicyStatement({
      sid: "CommitClaimsOnly",
      actions: ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
      resources: [ctx.dedupTable.tableArn],
      // The committer's claims are `tc:` items: it can neither read nor touch the loaders'.
      conditions: { "ForAllValues:StringLike": { "dynamodb:LeadingKeys": ["tc:*"] } },
    }),
    new iam.PolicyStatement({ sid: "ReadStagedObjects", actions: ["s3:GetObject"], resources: [ctx.bucket.arnForObjects("*")] }),
    new iam.PolicyStatement({
      sid: "ListStagingAndCheckItsLifecycle", actions: ["s3:ListBucket", "s3:GetLifecycleConfiguration"], resources: [ctx.bucket.bucketArn],
    }),
    new iam.PolicyStatement({
      sid: "Notifications",
      actions: ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"],
      resources: [queue.queueArn],
    }),
    new iam.PolicyStatement({ sid: "RouteFile", actions: ["s3:GetObject"], resources: [`arn:${stack.partition}:s3:::${ctx.routesConfigUri.slice(5)}`] }),
  );
  const role = new iam.Role(scope, "TableCommitterRole", {
    assumedBy: new iam.ServicePrincipal("lambda.amazonaws.com"),
    permissionsBoundary: ctx.permissionsBoundaryArn
      ? iam.ManagedPolicy.fromManagedPolicyArn(scope, "TableCommitterBoundary", ctx.permissionsBoundaryArn) : undefined,
  });
  const policy = new iam.Policy(scope, "TableCommitterPolicy", { roles: [role], statements });
  // Reads and writes S3 and S3 Tables or Glue only: no database, so no VPC of its own.
  const fn = new lambda.Function(scope, "TableCommitter", {
    runtime: lambda.Runtime.PROVIDED_AL2023,
    architecture: lambda.Architecture.ARM_64,
    handler: "bootstrap",
    code: lambda.Code.fromAsset(props.code),
    memorySize: 1024,
    timeout: TIMEOUT,
    role,
    environment,
    loggingFormat: lambda.LoggingFormat.JSON,
    applicationLogLevelV2: lambda.ApplicationLogLevel.INFO,
    systemLogLevelV2: lambda.SystemLogLevel.INFO,
    logGroup,
  });
  const alias = new lambda.Alias(scope, "TableCommitterLive", { aliasName: "live", version: fn.currentVersion });
  (fn.currentVersion.node.defaultChild as lambda.CfnVersion).applyRemovalPolicy(RemovalPolicy.RETAIN);
  const mapping = new lambda.CfnEventSourceMapping(scope, "CommitMapping", {
    functionName: alias.functionArn,
    eventSourceArn: queue.queueArn,
    batchSize: 1000,
    maximumBatchingWindowInSeconds: window,
    functionResponseTypes: ["ReportBatchItemFailures"],
    // Appends of one table serialise on its catalog; two at a time keep conflicts rare.
    scalingConfig: { maximumConcurrency: 2 },
  });
  mapping.node.addDependency(policy);
  // The safety net for a notification that never came: an hourly sweep of the staging.
  new events.Rule(scope, "CommitSweep", {
    schedule: events.Schedule.rate(Duration.hours(1)),
    targets: [new targets.LambdaFunction(alias, {
      event: events.RuleTargetInput.fromObject({ streamload_sweep: { hours: sweepHours } }),
      retryAttempts: 0,
    })],
  });

  ctx.alarm("TableCommitterErrorsAlarm", new cloudwatch.Alarm(scope, "TableCommitterErrorsAlarm", {
    alarmDescription: "The table committer failed invocations (a catalog, S3 or claims error); the table falls behind PostgreSQL.",
    metric: fn.metric("Errors", { statistic: "Sum", period: ALARM_PERIOD }),
    threshold: 0, evaluationPeriods: 1,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
    treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
  }));
  ctx.alarm("CommitBacklogAlarm", new cloudwatch.Alarm(scope, "CommitBacklogAlarm", {
    alarmDescription: "Notifications of staged objects are waiting longer than ten minutes; the table is behind PostgreSQL.",
    metric: queue.metricApproximateAgeOfOldestMessage({ statistic: "Maximum", period: ALARM_PERIOD }),
    threshold: 600, evaluationPeriods: 2,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
    treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
  }));
  ctx.alarm("CommitDeadLetterDepthAlarm", new cloudwatch.Alarm(scope, "CommitDeadLetterDepthAlarm", {
    alarmDescription: "A staged object's notification failed 20 times; docs/operations.md §10.",
    metric: deadLetters.metricApproximateNumberOfMessagesVisible({ statistic: "Maximum", period: ALARM_PERIOD }),
    threshold: 0, evaluationPeriods: 1,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
    treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
  }));
  return alias;
}
