//! SigV4 for the two request shapes the direct clients send:
//! - the claims' `PutItem`: `POST /`, no query, the headers `content-type`, `host`,
//!   `x-amz-date`, `x-amz-security-token` (with temporary credentials) and `x-amz-target`, a
//!   JSON body;
//! - the objects' create-only `PutObject` and `HeadObject`: `PUT`/`HEAD <path>`, no query,
//!   the headers `content-type` and `if-none-match` (the put), `host`, `x-amz-content-sha256`
//!   (the body's SHA-256, which S3 checks), `x-amz-date` and `x-amz-security-token`; S3's
//!   rules (the path encoded once, not normalised).
//!
//! `aws-sigv4`'s general signer builds the canonical request from any request — parsing the
//! url, normalising and sorting headers, allocating each piece — and derives the signing key
//! again every time; profiled, that was an eighth of the loader's CPU per record. For one fixed
//! shape the canonical request is a format string, and the signing key changes once a day per
//! credential: it is kept. The tests below sign the same inputs with `aws-sigv4` and demand
//! the same `Authorization`, so this cannot drift from the reference signer.

use ring::{digest, hmac};
use std::sync::Mutex;
use std::time::SystemTime;

/// The headers and their values that a request must carry, as signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Signed {
    pub amz_date: String,
    pub authorization: String,
}

/// The credentials' part of a signature.
pub(crate) struct Keys<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
}

/// A request to a path (S3 objects, a search index's `_bulk`) as signed: `path` already
/// encoded by [`encode_path`], the body's
/// SHA-256 as lower hex (`x-amz-content-sha256`; [`EMPTY_SHA256`] without a body).
pub(crate) struct PathRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub content_type: Option<&'a str>,
    /// `if-none-match: *`: a create-only write.
    pub create_only: bool,
    pub payload_sha256: &'a str,
}

/// The SHA-256 of no bytes, the payload hash of a request without a body.
pub(crate) const EMPTY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Signs requests of a fixed shape for one service in one region, keeping the day's signing
/// key.
pub(crate) struct FixedShapeSigner {
    region: String,
    service: &'static str,
    /// (yyyymmdd, access key id, key) of the last signature.
    key: Mutex<Option<(String, String, hmac::Key)>>,
}

/// Appends `bytes` as lowercase hex (by table: this runs three times per request).
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
}

/// Appends `n` as exactly `width` decimal digits (`n` below 10^width).
fn push_digits(out: &mut String, n: u32, width: u32) {
    for place in (0..width).rev() {
        out.push(char::from(b'0' + (n / 10u32.pow(place) % 10) as u8));
    }
}

impl FixedShapeSigner {
    pub fn new(region: &str, service: &'static str) -> Self {
        Self {
            region: region.to_owned(),
            service,
            key: Mutex::new(None),
        }
    }

    fn signing_key(&self, date: &str, keys: &Keys<'_>) -> hmac::Key {
        if let Ok(cached) = self.key.lock() {
            if let Some((d, id, key)) = cached.as_ref() {
                if d == date && id == keys.access_key_id {
                    return key.clone();
                }
            }
        }
        let secret = format!("AWS4{}", keys.secret_access_key);
        let mut k = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
            date.as_bytes(),
        );
        for part in [self.region.as_str(), self.service, "aws4_request"] {
            k = hmac::sign(
                &hmac::Key::new(hmac::HMAC_SHA256, k.as_ref()),
                part.as_bytes(),
            );
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, k.as_ref());
        if let Ok(mut cached) = self.key.lock() {
            *cached = Some((date.to_owned(), keys.access_key_id.to_owned(), key.clone()));
        }
        key
    }

    /// The `x-amz-date` and `authorization` of a `POST /` to `host` with `content_type`,
    /// `target` and `body`, at `at`.
    pub fn sign(
        &self,
        keys: &Keys<'_>,
        host: &str,
        content_type: &str,
        target: &str,
        body: &[u8],
        at: SystemTime,
    ) -> Signed {
        let amz_date = amz_date(at);
        let signed_headers = match keys.session_token {
            Some(_) => "content-type;host;x-amz-date;x-amz-security-token;x-amz-target",
            None => "content-type;host;x-amz-date;x-amz-target",
        };
        // Every piece is appended to buffers sized once: no format machinery per request.
        let mut canonical = String::with_capacity(
            256 + content_type.len()
                + host.len()
                + target.len()
                + keys.session_token.map_or(0, str::len),
        );
        canonical.push_str("POST\n/\n\ncontent-type:");
        canonical.push_str(content_type);
        canonical.push_str("\nhost:");
        canonical.push_str(host);
        canonical.push_str("\nx-amz-date:");
        canonical.push_str(&amz_date);
        canonical.push('\n');
        if let Some(token) = keys.session_token {
            canonical.push_str("x-amz-security-token:");
            canonical.push_str(token);
            canonical.push('\n');
        }
        canonical.push_str("x-amz-target:");
        canonical.push_str(target);
        canonical.push_str("\n\n");
        canonical.push_str(signed_headers);
        canonical.push('\n');
        push_hex(
            &mut canonical,
            digest::digest(&digest::SHA256, body).as_ref(),
        );
        self.finish(keys, amz_date, &canonical, signed_headers)
    }

    /// The `x-amz-date` and `authorization` of an S3 object request to `host` at `at`.
    pub fn sign_object_request(
        &self,
        keys: &Keys<'_>,
        host: &str,
        request: &PathRequest<'_>,
        at: SystemTime,
    ) -> Signed {
        let amz_date = amz_date(at);
        // The signed headers in their canonical (sorted) order; absent ones left out.
        let headers: [(&str, Option<&str>); 6] = [
            ("content-type", request.content_type),
            ("host", Some(host)),
            ("if-none-match", request.create_only.then_some("*")),
            ("x-amz-content-sha256", Some(request.payload_sha256)),
            ("x-amz-date", Some(&amz_date)),
            ("x-amz-security-token", keys.session_token),
        ];
        let mut canonical = String::with_capacity(
            320 + request.path.len()
                + request.content_type.map_or(0, str::len)
                + host.len()
                + keys.session_token.map_or(0, str::len),
        );
        let mut signed_headers = String::with_capacity(96);
        canonical.push_str(request.method);
        canonical.push('\n');
        canonical.push_str(request.path);
        canonical.push_str("\n\n");
        for (name, value) in headers {
            let Some(value) = value else { continue };
            canonical.push_str(name);
            canonical.push(':');
            canonical.push_str(value);
            canonical.push('\n');
            if !signed_headers.is_empty() {
                signed_headers.push(';');
            }
            signed_headers.push_str(name);
        }
        canonical.push('\n');
        canonical.push_str(&signed_headers);
        canonical.push('\n');
        canonical.push_str(request.payload_sha256);
        self.finish(keys, amz_date, &canonical, &signed_headers)
    }

    /// The signature of a canonical request: the string to sign over the day's scope, signed
    /// with the day's key.
    fn finish(
        &self,
        keys: &Keys<'_>,
        amz_date: String,
        canonical: &str,
        signed_headers: &str,
    ) -> Signed {
        let date = &amz_date[..8];
        let mut scope = String::with_capacity(32 + self.region.len() + self.service.len());
        scope.push_str(date);
        scope.push('/');
        scope.push_str(&self.region);
        scope.push('/');
        scope.push_str(self.service);
        scope.push_str("/aws4_request");

        let mut string_to_sign = String::with_capacity(128 + scope.len());
        string_to_sign.push_str("AWS4-HMAC-SHA256\n");
        string_to_sign.push_str(&amz_date);
        string_to_sign.push('\n');
        string_to_sign.push_str(&scope);
        string_to_sign.push('\n');
        push_hex(
            &mut string_to_sign,
            digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref(),
        );
        let signature = hmac::sign(&self.signing_key(date, keys), string_to_sign.as_bytes());

        let mut authorization = String::with_capacity(
            160 + keys.access_key_id.len() + scope.len() + signed_headers.len(),
        );
        authorization.push_str("AWS4-HMAC-SHA256 Credential=");
        authorization.push_str(keys.access_key_id);
        authorization.push('/');
        authorization.push_str(&scope);
        authorization.push_str(", SignedHeaders=");
        authorization.push_str(signed_headers);
        authorization.push_str(", Signature=");
        push_hex(&mut authorization, signature.as_ref());
        Signed {
            authorization,
            amz_date,
        }
    }
}

/// `x-amz-date` of `at`: `yyyymmddThhmmssZ`.
fn amz_date(at: SystemTime) -> String {
    use chrono::{Datelike, Timelike};
    let time: chrono::DateTime<chrono::Utc> = at.into();
    let mut d = String::with_capacity(16);
    push_digits(&mut d, time.year().clamp(0, 9999) as u32, 4);
    push_digits(&mut d, time.month(), 2);
    push_digits(&mut d, time.day(), 2);
    d.push('T');
    push_digits(&mut d, time.hour(), 2);
    push_digits(&mut d, time.minute(), 2);
    push_digits(&mut d, time.second(), 2);
    d.push('Z');
    d
}

/// The SHA-256 of `body` as lower hex (`x-amz-content-sha256`).
pub(crate) fn sha256_hex(body: &[u8]) -> String {
    let mut out = String::with_capacity(64);
    push_hex(&mut out, digest::digest(&digest::SHA256, body).as_ref());
    out
}

/// An object path as S3 signs and serves it: every byte outside RFC 3986's unreserved set
/// percent-encoded (upper-case hex), `/` kept; encoded once, as S3 wants.
pub(crate) fn encode_path(path: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(path.len() + 16);
    for &b in path.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;
    use aws_smithy_runtime_api::client::identity::Identity;
    use std::time::Duration;

    /// AWS's documentation example keys, as the SDK's credentials and as ours.
    fn example_keys(token: Option<&str>) -> (Credentials, Keys<'_>) {
        let (id, secret) = ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        let creds = Credentials::new(id, secret, token.map(str::to_owned), None, "test");
        let keys = Keys {
            access_key_id: id,
            secret_access_key: secret,
            session_token: token,
        };
        (creds, keys)
    }

    /// What `aws-sigv4` (the SDK's signer) puts on the same request.
    fn reference(creds: &Credentials, url: &str, body: &[u8], at: SystemTime) -> (String, String) {
        let identity: Identity = creds.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("eu-west-1")
            .name("dynamodb")
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .unwrap();
        let headers = [
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", "DynamoDB_20120810.PutItem"),
        ];
        let signable = SignableRequest::new(
            "POST",
            url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params.into()).unwrap().into_parts();
        let get = |name: &str| {
            instructions
                .headers()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_owned())
                .unwrap()
        };
        (get("x-amz-date"), get("authorization"))
    }

    #[test]
    fn signatures_equal_the_sdk_signers_with_and_without_a_session_token_across_days() {
        let signer = FixedShapeSigner::new("eu-west-1", "dynamodb");
        let body = br#"{"TableName":"t","Item":{"pk":{"S":"ev:\"1\""}}}"#;
        let day = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        for (at, token, host, url) in [
            (day, None, "127.0.0.1:5050", "http://127.0.0.1:5050/"),
            (
                day,
                Some("FwoGZXIvYXdzEJr//token+/="),
                "127.0.0.1:5050",
                "http://127.0.0.1:5050/",
            ),
            // A time whose every field has a leading zero.
            (
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_798_859_045),
                None,
                "127.0.0.1:5050",
                "http://127.0.0.1:5050/",
            ),
            // The next day with the same keys: the cached signing key must not be reused.
            (
                day + Duration::from_secs(86_400),
                None,
                "dynamodb.eu-west-1.amazonaws.com",
                "https://dynamodb.eu-west-1.amazonaws.com/",
            ),
        ] {
            let (creds, keys) = example_keys(token);
            let ours = signer.sign(
                &keys,
                host,
                "application/x-amz-json-1.0",
                "DynamoDB_20120810.PutItem",
                body,
                at,
            );
            let (date, authorization) = reference(&creds, url, body, at);
            assert_eq!(ours.amz_date, date);
            assert_eq!(
                ours.authorization, authorization,
                "token {token:?}, host {host}"
            );
        }
    }

    /// What `aws-sigv4` puts on an object request under S3's settings (a PUT create-only
    /// with a content type, anything else bare).
    fn reference_object(
        creds: &Credentials,
        method: &str,
        url: &str,
        body: &[u8],
        at: SystemTime,
    ) -> (String, String, String) {
        use aws_sigv4::http_request::{
            PayloadChecksumKind, PercentEncodingMode, UriPathNormalizationMode,
        };
        let identity: Identity = creds.clone().into();
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("eu-west-1")
            .name("s3")
            .time(at)
            .settings(settings)
            .build()
            .unwrap();
        let put = [
            ("content-type", "application/vnd.apache.parquet"),
            ("if-none-match", "*"),
        ];
        let headers: &[(&str, &str)] = if method == "PUT" { &put } else { &[] };
        let signable = SignableRequest::new(
            method,
            url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params.into()).unwrap().into_parts();
        let get = |name: &str| {
            instructions
                .headers()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_owned())
                .unwrap()
        };
        (
            get("x-amz-date"),
            get("authorization"),
            get("x-amz-content-sha256"),
        )
    }

    #[test]
    fn object_puts_and_heads_are_signed_as_the_sdk_signs_them_under_s3s_rules() {
        let signer = FixedShapeSigner::new("eu-west-1", "s3");
        let body = b"PAR1 not really parquet PAR1";
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        // A key with the characters object keys hold ('=' among them) and some they never do,
        // path-style and virtual-hosted.
        for (token, host, key) in [
            (
                None,
                "127.0.0.1:5000",
                "bucket/out/dt=2026-12-05/hour=13/shard-1_2.parquet",
            ),
            (
                Some("FwoGZXIvYXdzEJr//token+/="),
                "bucket.s3.eu-west-1.amazonaws.com",
                "out/a b+c~d%e/ünï.parquet",
            ),
        ] {
            let (creds, keys) = example_keys(token);
            let path = format!("/{}", encode_path(key));
            let payload = sha256_hex(body);
            let put = PathRequest {
                method: "PUT",
                path: &path,
                content_type: Some("application/vnd.apache.parquet"),
                create_only: true,
                payload_sha256: &payload,
            };
            let ours = signer.sign_object_request(&keys, host, &put, at);
            let url = format!("http://{host}{path}");
            let (date, authorization, sha) = reference_object(&creds, "PUT", &url, body, at);
            assert_eq!(ours.amz_date, date);
            assert_eq!(payload, sha);
            assert_eq!(ours.authorization, authorization, "key {key}");
            // And the existence check of the same key
            let head = PathRequest {
                method: "HEAD",
                path: &path,
                content_type: None,
                create_only: false,
                payload_sha256: EMPTY_SHA256,
            };
            let ours = signer.sign_object_request(&keys, host, &head, at);
            let (_, authorization, sha) = reference_object(&creds, "HEAD", &url, b"", at);
            assert_eq!(EMPTY_SHA256, sha);
            assert_eq!(ours.authorization, authorization, "HEAD {key}");
        }
    }

    #[test]
    fn paths_are_encoded_once_keeping_slashes_and_unreserved_characters() {
        assert_eq!(
            encode_path("out/dt=2026-12-05/hour=13/a_b.c~d-e.parquet"),
            "out/dt%3D2026-12-05/hour%3D13/a_b.c~d-e.parquet"
        );
        assert_eq!(encode_path("a b+%ü"), "a%20b%2B%25%C3%BC");
    }

    #[test]
    fn search_requests_are_signed_as_the_sdk_signs_them_for_amazon_opensearch_service() {
        use aws_sigv4::http_request::PayloadChecksumKind;
        let signer = FixedShapeSigner::new("eu-west-1", "es");
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        let host = "search-orders-abc.eu-west-1.es.amazonaws.com";
        let bulk = b"{\"index\":{\"_index\":\"orders\",\"_id\":\"o-1\"}}\n{\"qty\":1}\n";
        for (token, method, path, body, content_type) in [
            (
                None,
                "POST",
                "/_bulk",
                &bulk[..],
                Some("application/x-ndjson"),
            ),
            (
                Some("FwoGZXIvYXdzEJr//token+/="),
                "GET",
                "/orders/_mapping",
                &b""[..],
                None,
            ),
        ] {
            let (creds, keys) = example_keys(token);
            let payload = sha256_hex(body);
            let ours = signer.sign_object_request(
                &keys,
                host,
                &PathRequest {
                    method,
                    path,
                    content_type,
                    create_only: false,
                    payload_sha256: &payload,
                },
                at,
            );
            // The SDK's signer with its defaults for a non-S3 service, sending the payload hash
            let identity: Identity = creds.clone().into();
            let mut settings = SigningSettings::default();
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
            let params = v4::SigningParams::builder()
                .identity(&identity)
                .region("eu-west-1")
                .name("es")
                .time(at)
                .settings(settings)
                .build()
                .unwrap();
            let headers: Vec<(&str, &str)> = content_type
                .map(|c| ("content-type", c))
                .into_iter()
                .collect();
            let url = format!("https://{host}{path}");
            let signable =
                SignableRequest::new(method, &url, headers.into_iter(), SignableBody::Bytes(body))
                    .unwrap();
            let (instructions, _) = sign(signable, &params.into()).unwrap().into_parts();
            let authorization = instructions
                .headers()
                .find(|(n, _)| *n == "authorization")
                .map(|(_, v)| v.to_owned())
                .unwrap();
            assert_eq!(ours.authorization, authorization, "{method} {path}");
        }
    }
}
