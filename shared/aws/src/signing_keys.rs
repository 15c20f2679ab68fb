//! The credentials the direct clients (claims' `PutItem`, objects' `PutObject`) sign with,
//! fetched from the SDK's provider only when none are cached or the cached ones near their
//! expiry: an `Arc` clone per request otherwise.

use crate::sigv4::Keys;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use streamload_core::error::PortError;

/// Credentials this close to their expiry are fetched again before signing.
const CREDENTIALS_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// The parts of a credential the signer needs, and when to fetch a new one.
pub(crate) struct CachedKeys {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    expiry: Option<SystemTime>,
}

impl From<&Credentials> for CachedKeys {
    fn from(c: &Credentials) -> Self {
        Self {
            access_key_id: c.access_key_id().to_owned(),
            secret_access_key: c.secret_access_key().to_owned(),
            session_token: c.session_token().map(str::to_owned),
            expiry: c.expiry(),
        }
    }
}

impl CachedKeys {
    fn fresh(&self, now: SystemTime) -> bool {
        self.expiry.is_none_or(|at| {
            at.duration_since(now)
                .is_ok_and(|left| left > CREDENTIALS_REFRESH_MARGIN)
        })
    }

    /// The keys as the signer takes them.
    pub fn keys(&self) -> Keys<'_> {
        Keys {
            access_key_id: &self.access_key_id,
            secret_access_key: &self.secret_access_key,
            session_token: self.session_token.as_deref(),
        }
    }
}

/// A provider and the last keys it gave.
pub(crate) struct SigningKeys {
    provider: SharedCredentialsProvider,
    cached: Mutex<Option<Arc<CachedKeys>>>,
}

impl SigningKeys {
    pub fn new(provider: SharedCredentialsProvider) -> Self {
        Self {
            provider,
            cached: Mutex::new(None),
        }
    }

    /// The keys to sign with now; `operation` names the call in an error.
    pub async fn get(&self, operation: &str) -> Result<Arc<CachedKeys>, PortError> {
        if let Ok(cached) = self.cached.lock() {
            if let Some(keys) = cached.as_ref().filter(|k| k.fresh(SystemTime::now())) {
                return Ok(keys.clone());
            }
        }
        let c = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| PortError::retryable(format!("{operation}: credentials: {e}")))?;
        let keys = Arc::new(CachedKeys::from(&c));
        if let Ok(mut cached) = self.cached.lock() {
            *cached = Some(keys.clone());
        }
        Ok(keys)
    }
}
