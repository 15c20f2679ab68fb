// A newcomer's app: streamload into an existing account, from one Kinesis stream into an
// RDS/Aurora PostgreSQL whose login is in Secrets Manager.
//
//   make package                      # the arm64 zips (target/lambda/*/bootstrap.zip)
//   cd examples/cdk && npm install && npx cdk synth
//
// Without `make package` the app synthesizes with a stub (STREAMLOAD_CODE_STUB=1), as the
// template tests do.
import { App, Stack } from "aws-cdk-lib";
import * as fs from "fs";
import * as path from "path";
import { StreamLoader } from "streamload-cdk";

// cdk runs the app in examples/cdk
const root = path.resolve(process.cwd(), "..", "..");
const code = (fn: string) => {
  const zip = path.join(root, "target", "lambda", fn, "bootstrap.zip");
  if (fs.existsSync(zip) && !process.env.STREAMLOAD_CODE_STUB) return zip;
  if (process.env.STREAMLOAD_CODE_STUB) return path.join(root, "infra", "cdk", "test", "stub");
  throw new Error(`${zip} is missing: run make package first (or STREAMLOAD_CODE_STUB=1 to synthesize with a stub)`);
};

const app = new App();
const stack = new Stack(app, "StreamloadExample", {
  env: { account: process.env.CDK_DEFAULT_ACCOUNT ?? "111122223333", region: process.env.CDK_DEFAULT_REGION ?? "eu-west-1" },
});
new StreamLoader(stack, "Loader", {
  kinesisLoaderCode: code("kinesis-loader"),
  database: {
    // A dedicated least-privilege role's secret (docs/operations.md), not the master user's.
    secretArn: app.node.tryGetContext("databaseSecretArn") ?? "arn:aws:secretsmanager:eu-west-1:111122223333:secret:streamload-loader-AbCdEf",
    host: app.node.tryGetContext("databaseHost"),
    name: app.node.tryGetContext("databaseName"),
  },
  kinesis: { streamArn: app.node.tryGetContext("streamArn") ?? "arn:aws:kinesis:eu-west-1:111122223333:stream/events" },
  alarmEmail: app.node.tryGetContext("alarmEmail") ?? "oncall@example.com",
});
app.synth();
