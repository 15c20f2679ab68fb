//! TLS and credentials against the stack's TLS-only PostgreSQL (`scripts/stack.sh`: `hostssl`
//! lines only, SCRAM passwords, a server certificate for "localhost" signed by a CA the
//! script made) — the shape of RDS with `rds.force_ssl=1`.

use std::time::Duration;
use streamload_postgres::{ConnectOptions, SslMode};
use streamload_runtime::{build_pipeline, Config, DatabaseSource};
use streamload_tests::*;

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the tests with `make test`"))
}

/// `postgres://postgres:<pw>@localhost:<port>`: the TLS cluster's superuser.
fn tls_base() -> String {
    env("STREAMLOAD_PG_TLS_URL")
}

fn ca() -> String {
    env("STREAMLOAD_PG_TLS_CA")
}

/// An admin connection over verified TLS (the cluster takes nothing else).
async fn tls_admin(db: &str) -> tokio_postgres::Client {
    let url = format!(
        "{}/{db}?sslmode=verify-full&sslrootcert={}",
        tls_base(),
        ca()
    );
    let options = ConnectOptions::parse(&url).unwrap();
    let tls = streamload_postgres::TlsSettings {
        mode: SslMode::VerifyFull,
        root_certs: streamload_postgres::RootCerts::File(ca().into()),
    }
    .connector()
    .unwrap();
    let (client, conn) = options
        .config()
        .connect(tls)
        .await
        .expect("TLS admin connects");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A database on the TLS cluster, owned by a role of its own with password `password`,
/// holding the events table. Returns (database, role).
async fn tls_database(stack: &TestStack, password: &str) -> (String, String) {
    let admin = tls_admin("postgres").await;
    let (db, role) = (stack.name.clone(), format!("{}_loader", stack.name));
    admin
        .batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {db} OWNER {role}"))
        .await
        .unwrap();
    let url = format!(
        "postgres://{role}:{password}@localhost:{}/{db}?sslmode=verify-full&sslrootcert={}",
        port(),
        ca()
    );
    let owner = tls_client(&url).await;
    owner
        .batch_execute(include_str!("../../infra/sql/001_events.sql"))
        .await
        .unwrap();
    (db, role)
}

fn port() -> u16 {
    tls_base()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("STREAMLOAD_PG_TLS_URL ends with a port")
}

async fn tls_client(url: &str) -> tokio_postgres::Client {
    let options = ConnectOptions::parse(url).unwrap();
    let tls = options.tls_settings().connector().unwrap();
    let (client, conn) = options.config().connect(tls).await.expect("connects");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn config_with(stack: &TestStack, database: DatabaseSource) -> Config {
    let mut config = stack.config.clone();
    config.database = database;
    config
}

async fn rows_in(url: &str) -> Vec<String> {
    tls_client(url)
        .await
        .query("SELECT event_id FROM events ORDER BY event_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn one_event(id: &str) -> streamload_core::Batch {
    streamload_core::kinesis::decode(&kinesis_event(&[(1, event_json(id, "u", "{}"))])).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_right_ca_loads_over_tls() {
    // Given a database that accepts only TLS, and a URL that trusts the CA that signed it
    let stack = TestStack::new("tlsok", false).await;
    let (db, role) = tls_database(&stack, "first-pass").await;
    let url = format!(
        "postgres://{role}:first-pass@localhost:{}/{db}?sslmode=verify-full&sslrootcert={}",
        port(),
        ca()
    );
    // When the pipeline starts and loads a batch
    let p = build_pipeline(&config_with(&stack, DatabaseSource::Url(url.clone())))
        .await
        .expect("verify-full start-up");
    let r = p
        .process(
            &one_event("t1"),
            &invocation("inv", Duration::from_secs(30)),
        )
        .await;
    // Then the row is there, and the loader's session was encrypted
    assert!(r.failures.is_empty(), "{:?}", r.outcomes);
    assert_eq!(rows_in(&url).await, vec!["t1".to_string()]);
    let admin = tls_admin(&db).await;
    let encrypted: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.usename = $1 AND s.ssl",
            &[&role],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted >= 1, "no TLS session of {role}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_a_wrong_host_name_and_plaintext_each_fail_start_up_clearly() {
    // Given the TLS-only database and four ways to get the connection wrong
    let stack = TestStack::new("tlsbad", false).await;
    let (db, role) = tls_database(&stack, "pw").await;
    let url =
        |host: &str, query: &str| format!("postgres://{role}:pw@{host}:{}/{db}?{query}", port());
    let other_ca = env("STREAMLOAD_PG_TLS_OTHER_CA");
    let cases = [
        (
            url(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={other_ca}"),
            ),
            vec!["not signed by", "other-ca.pem", "sslrootcert"],
        ),
        (
            // The default roots are Amazon RDS's: a self-run CA is not among them.
            url("localhost", "sslmode=verify-full"),
            vec!["not signed by the embedded Amazon RDS roots"],
        ),
        (
            // The certificate names "localhost", not the address.
            url(
                "127.0.0.1",
                &format!("sslmode=verify-full&sslrootcert={}", ca()),
            ),
            vec!["does not name \"127.0.0.1\"", "verify-ca"],
        ),
        (
            url("localhost", "sslmode=disable"),
            vec!["28000", "only TLS", "sslmode=verify-full"],
        ),
    ];
    for (url, expected) in cases {
        // When the pipeline starts
        let err = build_pipeline(&config_with(&stack, DatabaseSource::Url(url.clone())))
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("start-up must fail for {url}"));
        // Then the init error says what is wrong, and never the password
        for part in expected {
            assert!(err.contains(part), "{err:?} lacks {part:?}");
        }
        assert!(!err.contains(":pw@"), "{err}");
    }
    // And verify-ca accepts the same certificate by address: it checks the chain, not the name
    let by_address = url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={}", ca()),
    );
    let p = build_pipeline(&config_with(&stack, DatabaseSource::Url(by_address)))
        .await
        .expect("verify-ca by address");
    let r = p
        .process(
            &one_event("ca1"),
            &invocation("inv", Duration::from_secs(30)),
        )
        .await;
    assert!(r.failures.is_empty(), "{:?}", r.outcomes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_is_read_again_when_the_database_refuses_the_old_one() {
    // Given an RDS-managed secret (username and password only) and the coordinates in
    // DATABASE_HOST / DATABASE_PORT / DATABASE_NAME
    let stack = TestStack::new("rotate", false).await;
    let (db, role) = tls_database(&stack, "before-rotation").await;
    let sm = aws_sdk_secretsmanager::Client::new(&stack.sdk);
    let secret = |pw: &str| serde_json::json!({"username": role, "password": pw}).to_string();
    let arn =
        streamload_tests::create_secret(&stack.sdk, &stack.name, &secret("before-rotation")).await;
    let base = stack.config.clone();
    let config = Config::from_lookup(|k| match k {
        "DATABASE_SECRET_ARN" => Some(arn.clone()),
        "DATABASE_HOST" => Some("localhost".into()),
        "DATABASE_PORT" => Some(port().to_string()),
        "DATABASE_NAME" => Some(db.clone()),
        "DATABASE_SSLROOTCERT" => Some(ca()),
        "DEDUP_TABLE" => Some(base.dedup_table.clone()),
        "OUTPUT_BUCKET" => Some(base.output_bucket.clone()),
        "DLQ_URL" => Some(base.dlq_url.clone()),
        _ => None,
    })
    .unwrap();
    let p = build_pipeline(&config)
        .await
        .expect("start-up from the secret");
    let first = p
        .process(
            &one_event("r1"),
            &invocation("inv1", Duration::from_secs(30)),
        )
        .await;
    assert!(first.failures.is_empty(), "{:?}", first.outcomes);

    // When the password is rotated (database, then secret) and the loader's session ends
    let admin = tls_admin(&db).await;
    admin
        .batch_execute(&format!("ALTER ROLE {role} PASSWORD 'after-rotation'"))
        .await
        .unwrap();
    sm.put_secret_value()
        .secret_id(&arn)
        .secret_string(secret("after-rotation"))
        .send()
        .await
        .unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .unwrap();

    // Then the next batch reconnects with the new password and loads
    let second = p
        .process(
            &one_event("r2"),
            &invocation("inv2", Duration::from_secs(30)),
        )
        .await;
    assert!(second.failures.is_empty(), "{:?}", second.outcomes);
    let url = format!(
        "postgres://{role}:after-rotation@localhost:{}/{db}?sslmode=verify-full&sslrootcert={}",
        port(),
        ca()
    );
    assert_eq!(
        rows_in(&url).await,
        vec!["r1".to_string(), "r2".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_without_a_host_and_no_database_host_names_what_is_missing() {
    let stack = TestStack::new("nohost", false).await;
    let arn = streamload_tests::create_secret(
        &stack.sdk,
        &stack.name,
        r#"{"username":"u","password":"do-not-print"}"#,
    )
    .await;
    let err = build_pipeline(&config_with(&stack, DatabaseSource::SecretArn(arn)))
        .await
        .err()
        .expect("start-up must fail")
        .to_string();
    assert!(
        err.contains("\"host\"") && err.contains("DATABASE_HOST"),
        "{err}"
    );
    assert!(!err.contains("do-not-print"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_bundle_read_from_s3_or_a_secret_verifies_the_database() {
    // Given the TLS-only database, its CA's PEM as an S3 object and as a secret, and no CA file
    // in the "package" (`sam build` ships only the binary)
    let stack = TestStack::new("cauri", false).await;
    let (db, role) = tls_database(&stack, "pw-ca").await;
    let pem = std::fs::read(ca()).unwrap();
    streamload_aws::s3_client(&stack.sdk)
        .put_object()
        .bucket(&stack.name)
        .key("trust/ca.pem")
        .body(pem.clone().into())
        .send()
        .await
        .unwrap();
    let ca_secret = streamload_tests::create_secret(
        &stack.sdk,
        &format!("{}-ca", stack.name),
        std::str::from_utf8(&pem).unwrap(),
    )
    .await;
    let login = serde_json::json!({"username": role, "password": "pw-ca"}).to_string();
    let arn = streamload_tests::create_secret(&stack.sdk, &stack.name, &login).await;
    let base = stack.config.clone();
    for uri in [format!("s3://{}/trust/ca.pem", stack.name), ca_secret] {
        let config = Config::from_lookup(|k| match k {
            "DATABASE_SECRET_ARN" => Some(arn.clone()),
            "DATABASE_HOST" => Some("localhost".into()),
            "DATABASE_PORT" => Some(port().to_string()),
            "DATABASE_NAME" => Some(db.clone()),
            "DATABASE_SSLROOTCERT_URI" => Some(uri.clone()),
            "DEDUP_TABLE" => Some(base.dedup_table.clone()),
            "OUTPUT_BUCKET" => Some(base.output_bucket.clone()),
            "DLQ_URL" => Some(base.dlq_url.clone()),
            _ => None,
        })
        .unwrap();
        // When the loader starts and loads an event
        let p = build_pipeline(&config)
            .await
            .unwrap_or_else(|e| panic!("{uri}: {e}"));
        let r = p
            .process(
                &one_event(&format!("ca-{}", uri.len())),
                &invocation("inv", Duration::from_secs(30)),
            )
            .await;
        // Then the server's certificate was verified against the fetched bundle
        assert!(r.failures.is_empty(), "{uri}: {:?}", r.outcomes);
    }
    // And an object that is not a PEM bundle fails start-up naming the variable
    let config = Config::from_lookup(|k| match k {
        "DATABASE_SECRET_ARN" => Some(arn.clone()),
        "DATABASE_HOST" => Some("localhost".into()),
        "DATABASE_SSLROOTCERT_URI" => Some(format!("s3://{}/absent.pem", stack.name)),
        "DEDUP_TABLE" => Some(base.dedup_table.clone()),
        "OUTPUT_BUCKET" => Some(base.output_bucket.clone()),
        "DLQ_URL" => Some(base.dlq_url.clone()),
        _ => None,
    })
    .unwrap();
    let err = build_pipeline(&config).await.err().expect("refused");
    assert!(
        err.to_string().contains("DATABASE_SSLROOTCERT_URI"),
        "{err}"
    );
}
