//! The direct conditional `PutItem` and create-only `PutObject` over verified TLS, as they
//! reach DynamoDB and S3 in AWS: an HTTPS
//! front (the stack's server certificate for "localhost", signed by the CA `scripts/stack.sh`
//! made) before the fault proxy (which keeps connections alive, as AWS does) before moto.
//!
//! The client takes its roots from the platform store, which honours `SSL_CERT_FILE`; this
//! binary holds one test, so setting it cannot race another test.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use streamload_aws::{DynamoDedup, PutItemClient};
use streamload_core::error::Classify;
use streamload_core::ports::{Claim, ClaimAttempt, DedupStore, ObjectSink, PutOutcome};
use streamload_tests::fault_proxy::FaultProxy;
use streamload_tests::*;
use tokio::net::{TcpListener, TcpStream};

fn tls_dir() -> PathBuf {
    let ca = std::env::var("STREAMLOAD_PG_TLS_CA")
        .expect("STREAMLOAD_PG_TLS_CA is not set: run the tests with `make test`");
    PathBuf::from(ca)
        .parent()
        .expect("the CA file is in the stack's tls folder")
        .to_owned()
}

/// An HTTPS front on 127.0.0.1 relaying each TLS connection to `upstream` (host:port); the
/// port and a count of the TLS connections it accepted.
async fn https_front(upstream: String) -> (u16, Arc<AtomicUsize>) {
    let dir = tls_dir();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.crt"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, upstream, count) = (acceptor.clone(), upstream.clone(), count.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: nothing to relay.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(mut up) = TcpStream::connect(upstream.as_str()).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    (port, accepted)
}

/// A dedup store whose conditional writes go to `endpoint` by the direct client, trusting
/// the roots in `roots` (a PEM file) as the platform's.
fn direct_dedup(stack: &TestStack, endpoint: &str, roots: PathBuf) -> DynamoDedup {
    std::env::set_var("SSL_CERT_FILE", roots);
    let sdk = stack.sdk.to_builder().endpoint_url(endpoint).build();
    let client = PutItemClient::from_sdk(&sdk).expect("an https endpoint with readable roots");
    DynamoDedup::new(
        aws_sdk_dynamodb::Client::new(&stack.sdk),
        &stack.config.dedup_table,
    )
    .with_direct_writes(client)
}

fn claim(n: usize, owner: &str) -> Claim {
    Claim {
        key: format!("ev:tls-{n}"),
        owner: owner.into(),
        lease_until_ms: 1_000,
        object_key: format!("events/x-{owner}.parquet"),
        expires_at_s: 2_000_000_000,
        renewable: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_and_objects_travel_over_verified_tls_on_kept_alive_connections_and_a_stranger_ca_is_refused(
) {
    assert!(
        std::env::var("AWS_ENDPOINT_URL_DYNAMODB").is_err(),
        "the test routes DynamoDB by the SDK config's endpoint"
    );
    let stack = TestStack::new("https", false).await;
    let moto = std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS_ENDPOINT_URL is not set: source .stack/env (make stack) first");
    let proxy = FaultProxy::start(&moto).await;
    let upstream = proxy.endpoint().trim_start_matches("http://").to_owned();
    let (port, accepted) = https_front(upstream).await;
    let endpoint = format!("https://localhost:{port}");

    // Given a client that trusts the stack's CA
    let dedup = direct_dedup(&stack, &endpoint, tls_dir().join("ca.pem"));
    // When twelve claims are written one after another, then each is written...
    for n in 0..12 {
        assert_eq!(
            dedup.try_claim(&claim(n, "a"), 1_000).await.unwrap(),
            ClaimAttempt::Claimed
        );
    }
    // ...and a second owner is refused with the holder's claim, read from the TLS answer
    assert_eq!(
        dedup.try_claim(&claim(3, "b"), 1_000).await.unwrap(),
        ClaimAttempt::Held(claim(3, "a"))
    );
    // Then the writes landed in DynamoDB (read back through the SDK, not the front), and
    // one TLS connection carried all thirteen requests
    assert_eq!(dedup.read("ev:tls-11").await.unwrap(), Some(claim(11, "a")));
    assert_eq!(proxy.counts()["DynamoDB.PutItem"].0, 13);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    // Given the direct object client on the same front, trusting the stack's CA
    let sdk = stack.sdk.to_builder().endpoint_url(&endpoint).build();
    let objects =
        streamload_aws::S3Objects::new(streamload_aws::s3_client(&stack.sdk), &stack.name)
            .with_direct_puts(
                streamload_aws::PutObjectClient::from_sdk(&sdk, &stack.name)
                    .expect("an https endpoint with readable roots"),
            );
    // When five objects are created one after another, and the first again
    for n in 0..5 {
        let put = objects
            .put_new(
                &format!("events/tls-{n}.parquet"),
                bytes::Bytes::from(vec![n as u8; 40_000]),
                "application/vnd.apache.parquet",
            )
            .await
            .unwrap();
        assert_eq!(put, PutOutcome::Created);
    }
    let again = objects
        .put_new(
            "events/tls-0.parquet",
            bytes::Bytes::from_static(b"other"),
            "application/vnd.apache.parquet",
        )
        .await
        .unwrap();
    // Then they are in S3 whole (read through the SDK, not the front), the second put found
    // the first, and one more TLS connection carried all six
    assert_eq!(again, PutOutcome::AlreadyExists);
    assert_eq!(
        stack.object_bytes("events/tls-4.parquet").await.to_vec(),
        vec![4u8; 40_000]
    );
    assert_eq!(
        stack.object_bytes("events/tls-0.parquet").await.to_vec(),
        vec![0u8; 40_000]
    );
    assert_eq!(proxy.counts()["S3.PutObject"].0, 6);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);

    // Given a client that trusts another CA only
    let stranger = direct_dedup(&stack, &endpoint, tls_dir().join("other-ca.pem"));
    // When it writes a claim, then the handshake fails: an error worth retrying that says
    // so, not a lost answer, and nothing reached DynamoDB
    let err = stranger
        .try_claim(&claim(20, "c"), 1_000)
        .await
        .unwrap_err();
    assert!(err.is_retryable() && !err.ambiguous, "{err:?}");
    assert!(err.message.contains("TLS"), "{err}");
    assert_eq!(proxy.counts()["DynamoDB.PutItem"].0, 13);
    assert_eq!(dedup.read("ev:tls-20").await.unwrap(), None);
    std::env::remove_var("SSL_CERT_FILE");
}
