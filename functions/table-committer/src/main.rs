//! `table-committer`: appends the loaders' staged objects to each route's Iceberg table,
//! exactly once. All logic lives in the crate's library and `streamload-table`.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use table_committer::notification::SqsEvent;
use table_committer::{Committer, CommitterConfig, SystemClock};

#[tokio::main]
async fn main() -> Result<(), Error> {
    streamload_runtime::init_tracing();
    let config = CommitterConfig::from_lookup(|k| std::env::var(k).ok())?;
    let sdk = streamload_aws::sdk_config().await;
    let committer = Committer::start(&config, &sdk).await?;
    let committer = &committer;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(
            committer
                .handle(&event.payload, &event.context.request_id, &SystemClock)
                .await,
        )
    }))
    .await
}
