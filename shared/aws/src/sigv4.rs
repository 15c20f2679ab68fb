//! SigV4 for the one request shape the direct PutItem client sends: `POST /`, no query, the
//! headers `content-type`, `host`, `x-amz-date`, `x-amz-security-token` (with temporary
//! credentials) and `x-amz-target`, a JSON body.
//!
//! `aws-sigv4`'s general signer builds the canonical request from any request — parsing the
//! url, normalising and sorting headers, allocating each piece — and derives the signing key
//! again every time; profiled, that was an eighth of the loader's CPU per record. For one fixed
//! shape the canonical request is a format string, and the signing key changes once a day per
//! credential: it is kept. The test below signs the same inputs with `aws-sigv4` and demands
//! the same `Authorization`, so this cannot drift from the reference signer.

use ring::{digest, hmac};
use std::fmt::Write as _;
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

/// Signs `POST /` requests for one service in one region, keeping the day's signing key.
pub(crate) struct FixedShapeSigner {
    region: String,
    service: &'static str,
    /// (yyyymmdd, access key id, key) of the last signature.
    key: Mutex<Option<(String, String, hmac::Key)>>,
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
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
        let time: chrono::DateTime<chrono::Utc> = at.into();
        // By hand rather than through strftime parsing, on every request.
        let amz_date = {
            use chrono::{Datelike, Timelike};
            let mut d = String::with_capacity(16);
            let _ = write!(
                d,
                "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
                time.year(),
                time.month(),
                time.day(),
                time.hour(),
                time.minute(),
                time.second()
            );
            d
        };
        let date = &amz_date[..8];
        let body_hash = hex(digest::digest(&digest::SHA256, body).as_ref());
        let (token_line, signed_headers) = match keys.session_token {
            Some(token) => (
                format!("x-amz-security-token:{token}\n"),
                "content-type;host;x-amz-date;x-amz-security-token;x-amz-target",
            ),
            None => (String::new(), "content-type;host;x-amz-date;x-amz-target"),
        };
        let canonical = format!(
            "POST\n/\n\ncontent-type:{content_type}\nhost:{host}\nx-amz-date:{amz_date}\n{token_line}x-amz-target:{target}\n\n{signed_headers}\n{body_hash}"
        );
        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
        );
        let signature =
            hex(hmac::sign(&self.signing_key(date, keys), string_to_sign.as_bytes()).as_ref());
        Signed {
            authorization: format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
                keys.access_key_id
            ),
            amz_date,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;
    use aws_smithy_runtime_api::client::identity::Identity;
    use std::time::Duration;

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
            // The next day with the same keys: the cached signing key must not be reused.
            (
                day + Duration::from_secs(86_400),
                None,
                "dynamodb.eu-west-1.amazonaws.com",
                "https://dynamodb.eu-west-1.amazonaws.com/",
            ),
        ] {
            let creds = Credentials::new(
                "AKIDEXAMPLE",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                token.map(str::to_owned),
                None,
                "test",
            );
            let keys = Keys {
                access_key_id: "AKIDEXAMPLE",
                secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                session_token: token,
            };
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
}
