//! `kafka-loader`: loads Kafka (Amazon MSK and self-managed) event-source-mapping batches exactly once into
//! PostgreSQL and S3 Parquet. All logic lives in `streamload-runtime` and `streamload-core`.

use lambda_runtime::Error;

fn main() -> Result<(), Error> {
    streamload_runtime::init_tracing();
    // Current-thread unless STREAMLOAD_WORKER_THREADS says otherwise (see async_runtime).
    streamload_runtime::async_runtime()?.block_on(async {
        let pipeline = streamload_runtime::start().await?;
        streamload_runtime::run::<streamload_runtime::Kafka>(pipeline).await
    })
}
