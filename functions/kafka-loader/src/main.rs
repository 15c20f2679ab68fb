//! `kafka-loader`: loads Kafka (Amazon MSK and self-managed) event-source-mapping batches exactly once into
//! PostgreSQL and S3 Parquet. All logic lives in `streamload-runtime` and `streamload-core`.

use lambda_runtime::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    streamload_runtime::init_tracing();
    let pipeline = streamload_runtime::start().await?;
    streamload_runtime::run::<streamload_runtime::Kafka>(pipeline).await
}
