//! `kafka-loader`: loads Kafka (Amazon MSK and self-managed) event-source-mapping batches exactly once into
//! PostgreSQL and S3 Parquet. All logic lives in `streamload-runtime` and `streamload-core`.

use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    streamload_runtime::init_tracing();
    let pipeline = streamload_runtime::start().await?;
    let pipeline = &pipeline;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        streamload_runtime::handle::<streamload_runtime::Kafka, _, _, _, _>(pipeline, event).await
    }))
    .await
}
