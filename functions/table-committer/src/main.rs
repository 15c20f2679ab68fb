//! `table-committer`: appends the loaders' staged objects to each route's Iceberg table,
//! exactly once. All logic lives in the crate's library and `streamload-table`.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use table_committer::{Committer, CommitterConfig, Invocation, SystemClock};

#[tokio::main]
async fn main() -> Result<(), Error> {
    streamload_runtime::init_tracing();
    let started = async {
        let config = CommitterConfig::from_lookup(|k| std::env::var(k).ok())?;
        let sdk = streamload_aws::sdk_config().await;
        Committer::start(&config, &sdk).await
    }
    .await;
    let committer = match started {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            streamload_runtime::report_init_error(&e.to_string()).await;
            return Err(e.into());
        }
    };
    let committer = &committer;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let invocation = Invocation::parse(event.payload)?;
            Ok::<_, Error>(
                committer
                    .invoke(invocation, &event.context.request_id, &SystemClock)
                    .await,
            )
        },
    ))
    .await
}
