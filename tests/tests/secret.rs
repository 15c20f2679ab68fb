//! In AWS the database credentials come from Secrets Manager (`DATABASE_SECRET_ARN`).

use std::time::Duration;
use streamload_runtime::{build_pipeline, Config, DatabaseSource};
use streamload_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_a_secret_reach_the_database() {
    // Given a secret holding this test database's coordinates, and no DATABASE_URL
    let stack = TestStack::new("secret", false).await;
    let cfg: tokio_postgres::Config = stack.database_url.parse().unwrap();
    let host = match &cfg.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("unexpected host {other:?}"),
    };
    let secret = serde_json::json!({
        "host": host, "port": cfg.get_ports()[0], "username": cfg.get_user().unwrap(),
        "password": "", "dbname": cfg.get_dbname().unwrap(), "engine": "postgres",
        "sslmode": "disable"
    });
    let arn = streamload_tests::create_secret(&stack.sdk, &stack.name, &secret.to_string()).await;
    let base = stack.config.clone();
    let config_with = |stack_sslmode: Option<&'static str>| {
        Config::from_lookup(|k| match k {
            "DATABASE_SECRET_ARN" => Some(arn.clone()),
            "DATABASE_SSLMODE" => stack_sslmode.map(str::to_owned),
            "DEDUP_TABLE" => Some(base.dedup_table.clone()),
            "OUTPUT_BUCKET" => Some(base.output_bucket.clone()),
            "DLQ_URL" => Some(base.dlq_url.clone()),
            _ => None,
        })
        .unwrap()
    };
    // (the stack's own setting decides TLS: the local server is plaintext)
    let config = config_with(Some("disable"));
    assert!(matches!(config.database, DatabaseSource::SecretArn(_)));
    // And a secret alone cannot weaken the stack's TLS: with the stack's default
    // (verify-full), the secret's "disable" is not honoured and the plaintext server is
    // refused at start-up
    let refused = build_pipeline(&config_with(None))
        .await
        .err()
        .expect("the stack's verify-full wins over the secret's disable");
    assert!(refused.to_string().contains("TLS"), "{refused}");
    // When the pipeline is built from it and a batch is loaded
    let p = build_pipeline(&config).await.expect("pipeline from secret");
    let batch =
        streamload_core::kinesis::decode(&kinesis_event(&[(1, event_json("s1", "u", "{}"))]))
            .unwrap();
    let r = p
        .process(&batch, &invocation("inv", Duration::from_secs(30)))
        .await;
    // Then the row is in the database the secret names
    assert!(r.failures.is_empty(), "{:?}", r.outcomes);
    assert_eq!(stack.row_ids().await, vec!["s1".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_fails_start_up_with_its_arn() {
    let stack = TestStack::new("nosecret", false).await;
    let mut config = stack.config.clone();
    config.database = DatabaseSource::SecretArn(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:absent".into(),
    );
    let err = build_pipeline(&config)
        .await
        .err()
        .expect("start-up must fail");
    assert!(err.to_string().contains("secret:absent"), "{err}");
}
