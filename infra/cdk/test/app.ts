// The app tests/infra synthesizes: the construct with every source and a stub in place of the
// Rust binaries (no release build), twice, differing only in the route file, to prove a
// configuration change publishes a new version.
import { App, Stack } from "aws-cdk-lib";
import * as path from "path";
import { StreamLoader, StreamLoaderProps } from "../src";

const stub = path.join(__dirname, "..", "..", "test", "stub");
const props: StreamLoaderProps = {
  kinesisLoaderCode: stub,
  kafkaLoaderCode: stub,
  database: { secretArn: "arn:aws:secretsmanager:us-east-1:111122223333:secret:pg-AbCdEf" },
  kinesis: { streamArn: "arn:aws:kinesis:us-east-1:111122223333:stream/s" },
  msk: { clusterArn: "arn:aws:kafka:us-east-1:111122223333:cluster/orders/5a5b2c1d-aaaa-bbbb-cccc-0123456789ab-7", topic: "orders" },
  alarmEmail: "oncall@example.com",
  existingAlarmTopicArn: "arn:aws:sns:us-east-1:111122223333:paging",
  permissionsBoundaryArn: "arn:aws:iam::111122223333:policy/platform-boundary",
  routesConfigUri: "s3://routes-bucket/routes-v1.toml",
  search: { endpoint: "https://search-orders-abc.us-east-1.es.amazonaws.com", domainArn: "arn:aws:es:us-east-1:111122223333:domain/orders" },
};
const env = { account: "111122223333", region: "us-east-1" };
const app = new App();
new StreamLoader(new Stack(app, "StreamloadTest", { env }), "Loader", props);
new StreamLoader(new Stack(app, "StreamloadTestNewRoutes", { env }), "Loader", { ...props, routesConfigUri: "s3://routes-bucket/routes-v2.toml" });
// The table committer, once per catalog (tests/infra/test_shared.py holds it to the SAM stack's).
new StreamLoader(new Stack(app, "StreamloadTestTables", { env }), "Loader", { ...props, tables: { catalog: "s3tables", code: stub } });
new StreamLoader(new Stack(app, "StreamloadTestGlue", { env }), "Loader", {
  ...props, tables: { catalog: "glue", code: stub, glueDatabaseName: "lake_db" },
});
app.synth();
