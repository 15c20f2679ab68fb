//! IAM database authentication for RDS and Aurora PostgreSQL (`DATABASE_IAM_AUTH=true`): the
//! password is a SigV4-presigned `connect` request for the database user, signed with the
//! function's own credentials. RDS checks the token only when a connection logs in, so a
//! fresh token per connection can never be presented stale; an open session outlives it.
//!
//! The token is what `aws rds generate-db-auth-token` prints (see the test vector below,
//! produced by botocore), made with `aws-sigv4` — the signer already in the SDK's tree.

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use std::time::{Duration, SystemTime};

/// How long a token is valid: RDS accepts at most 15 minutes (`X-Amz-Expires=900`).
pub const RDS_TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// The signing name of IAM database authentication.
const RDS_DB_SERVICE: &str = "rds-db";

/// AWS URI encoding: unreserved characters stay, every other byte becomes `%XX`.
fn uri_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The token for `user` at `host:port`, signed at `at`.
///
/// ```
/// use aws_credential_types::Credentials;
/// let creds = Credentials::new("AKIDEXAMPLE", "secret", None, None, "doc");
/// let token = streamload_aws::rds_auth_token(
///     &creds, "us-east-1", "db.example.com", 5432, "loader", std::time::SystemTime::now(),
/// ).unwrap();
/// assert!(token.starts_with("db.example.com:5432/?Action=connect&DBUser=loader&"));
/// assert!(token.contains("X-Amz-Expires=900"));
/// ```
pub fn rds_auth_token(
    credentials: &Credentials,
    region: &str,
    host: &str,
    port: u16,
    user: &str,
    at: SystemTime,
) -> Result<String, String> {
    let identity: Identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.expires_in = Some(RDS_TOKEN_LIFETIME);
    settings.signature_location = SignatureLocation::QueryParams;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(RDS_DB_SERVICE)
        .time(at)
        .settings(settings)
        .build()
        .map_err(|e| format!("IAM token: {e}"))?;
    let base = format!("{host}:{port}/?Action=connect&DBUser={}", uri_encode(user));
    let url = format!("https://{base}");
    let request = SignableRequest::new(
        "GET",
        &url,
        std::iter::empty(),
        // The hash of an empty payload, as botocore and the AWS CLI sign it.
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| format!("IAM token: {e}"))?;
    let (instructions, _) = sign(request, &params.into())
        .map_err(|e| format!("IAM token: {e}"))?
        .into_parts();
    let mut token = base;
    for (name, value) in instructions.params() {
        token.push('&');
        token.push_str(name);
        token.push('=');
        token.push_str(&uri_encode(value));
    }
    Ok(token)
}

/// Tokens for one database user, from the function's credential chain (the execution role
/// on Lambda; the SDK refreshes those credentials itself).
#[derive(Clone)]
pub struct RdsIamToken {
    credentials: SharedCredentialsProvider,
    region: String,
    host: String,
    port: u16,
    user: String,
}

impl std::fmt::Debug for RdsIamToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RdsIamToken({}@{}:{} in {})",
            self.user, self.host, self.port, self.region
        )
    }
}

impl RdsIamToken {
    /// Fails when the SDK configuration has no region or no credentials provider.
    pub fn new(
        config: &aws_config::SdkConfig,
        host: &str,
        port: u16,
        user: &str,
    ) -> Result<Self, String> {
        let region = config
            .region()
            .ok_or("IAM database authentication needs AWS_REGION")?
            .to_string();
        let credentials = config
            .credentials_provider()
            .ok_or("IAM database authentication needs AWS credentials")?;
        Ok(Self {
            credentials,
            region,
            host: host.to_owned(),
            port,
            user: user.to_owned(),
        })
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// A token signed now.
    pub async fn token(&self) -> Result<String, String> {
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| format!("IAM token: no credentials ({e})"))?;
        rds_auth_token(
            &credentials,
            &self.region,
            &self.host,
            self.port,
            &self.user,
            SystemTime::now(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_matches_botocore_for_the_same_inputs() {
        // Given the inputs botocore signed (see BOTOCORE_VECTOR below)
        let creds = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("session/token+with=reserved".into()),
            None,
            "test",
        );
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_633_600); // 2025-12-02T00:00:00Z
                                                                              // When the token is made
        let token = rds_auth_token(
            &creds,
            "eu-west-1",
            "mydb.cluster-abc.eu-west-1.rds.amazonaws.com",
            5432,
            "iam_loader",
            at,
        )
        .unwrap();
        // Then it carries the same parameters and the same signature
        let mut ours: Vec<&str> = token.split_once('?').unwrap().1.split('&').collect();
        let mut theirs: Vec<&str> = BOTOCORE_VECTOR
            .split_once('?')
            .unwrap()
            .1
            .split('&')
            .collect();
        ours.sort_unstable();
        theirs.sort_unstable();
        assert_eq!(ours, theirs);
        assert_eq!(
            token.split_once('?').unwrap().0,
            BOTOCORE_VECTOR.split_once('?').unwrap().0
        );
    }

    /// `generate_db_auth_token` of botocore 1.x with the same credentials, region, host, port,
    /// user and a clock frozen at 2025-12-02T00:00:00Z (scripts/rds-token-vector.py).
    const BOTOCORE_VECTOR: &str = "mydb.cluster-abc.eu-west-1.rds.amazonaws.com:5432/?Action=connect&DBUser=iam_loader&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20251202%2Feu-west-1%2Frds-db%2Faws4_request&X-Amz-Date=20251202T000000Z&X-Amz-SignedHeaders=host&X-Amz-Expires=900&X-Amz-Security-Token=session%2Ftoken%2Bwith%3Dreserved&X-Amz-Signature=81c988d13115ac606843e902fda3f54ee3d885423196404bc1c1a1664aa962d5";

    #[test]
    fn user_names_are_uri_encoded() {
        assert_eq!(uri_encode("a b/c+d~e"), "a%20b%2Fc%2Bd~e");
    }
}
