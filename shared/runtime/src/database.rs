//! Where the loader's database connection comes from: a connection string, a Secrets
//! Manager secret (read again when the database refuses it: rotation), or IAM database
//! authentication (a token per connection). Every path ends in TLS with full verification
//! unless the configuration says otherwise.

use std::sync::Arc;

use streamload_aws::{DatabaseSecret, RdsIamToken};
use streamload_postgres::{
    ConnectOptions, Login, LoginFuture, LoginSource, RootCerts, SslMode, TlsSettings,
};

use crate::config::{Config, ConfigError, DatabaseEnv, DatabaseSource};
use crate::StartError;

/// The default PostgreSQL port.
const DEFAULT_PORT: u16 = 5432;

/// The login of a Secrets Manager secret, kept between connections and read again after the
/// database refuses it (the secret was rotated while this sandbox lived).
pub struct SecretLogin {
    client: aws_sdk_secretsmanager::Client,
    arn: String,
    current: std::sync::Mutex<Login>,
}

impl SecretLogin {
    fn login_of(secret: &DatabaseSecret) -> Login {
        Login {
            user: secret.username.clone(),
            password: secret.password.clone(),
        }
    }
}

impl LoginSource for SecretLogin {
    fn login(&self, after_refusal: bool) -> LoginFuture<'_> {
        Box::pin(async move {
            if !after_refusal {
                if let Ok(current) = self.current.lock() {
                    return Ok(current.clone());
                }
            }
            let secret = streamload_aws::database_secret(&self.client, &self.arn)
                .await
                .map_err(|e| e.to_string())?;
            let login = Self::login_of(&secret);
            if let Ok(mut current) = self.current.lock() {
                *current = login.clone();
            }
            tracing::info!(arn = %self.arn, "database secret read again");
            Ok(login)
        })
    }

    fn refreshes_after_refusal(&self) -> bool {
        true
    }
}

/// A fresh IAM token for every connection.
pub struct IamLogin(RdsIamToken);

impl LoginSource for IamLogin {
    fn login(&self, _after_refusal: bool) -> LoginFuture<'_> {
        Box::pin(async move {
            Ok(Login {
                user: self.0.user().to_owned(),
                password: self.0.token().await?,
            })
        })
    }

    fn refreshes_after_refusal(&self) -> bool {
        false
    }
}

fn tls_settings(
    mode: Option<&str>,
    root: Option<&str>,
    env: &DatabaseEnv,
    name: &'static str,
) -> Result<TlsSettings, ConfigError> {
    let mode = match mode {
        Some(m) => m
            .parse::<SslMode>()
            .map_err(|why| ConfigError::Invalid { name, why })?,
        None => env.sslmode.unwrap_or_default(),
    };
    let root_certs = match root.or(env.sslrootcert.as_deref()) {
        Some(path) => RootCerts::File(path.into()),
        None => RootCerts::AmazonRds,
    };
    Ok(TlsSettings { mode, root_certs })
}

/// How strict a mode is: a secret may raise the stack's, never lower it.
fn strictness(mode: SslMode) -> u8 {
    match mode {
        SslMode::Disable => 0,
        SslMode::Require => 1,
        SslMode::VerifyCa => 2,
        SslMode::VerifyFull => 3,
    }
}

/// The TLS settings of a secret's connection: the stack's (`DATABASE_SSLMODE`, default
/// verify-full; `DATABASE_SSLROOTCERT`), made stricter by the secret's `sslmode` but never
/// weaker, and the secret's `sslrootcert` only where the stack names none.
fn secret_tls_settings(
    mode: Option<&str>,
    root: Option<&str>,
    env: &DatabaseEnv,
) -> Result<TlsSettings, ConfigError> {
    let stack = env.sslmode.unwrap_or_default();
    let theirs = match mode {
        Some(m) => Some(m.parse::<SslMode>().map_err(|why| ConfigError::Invalid {
            name: "DATABASE_SECRET_ARN sslmode",
            why,
        })?),
        None => None,
    };
    let mode = match theirs {
        Some(m) if strictness(m) > strictness(stack) => m,
        Some(m) if strictness(m) < strictness(stack) => {
            tracing::warn!(
                secret = %m,
                stack = %stack,
                "the database secret asks for a weaker sslmode than the stack; the stack's is used"
            );
            stack
        }
        _ => stack,
    };
    let root_certs = match env.sslrootcert.as_deref().or(root) {
        Some(path) => RootCerts::File(path.into()),
        None => RootCerts::AmazonRds,
    };
    Ok(TlsSettings { mode, root_certs })
}

fn options(
    pg: tokio_postgres::Config,
    tls: TlsSettings,
    name: &'static str,
) -> Result<ConnectOptions, ConfigError> {
    ConnectOptions::new(pg, tls).map_err(|e| ConfigError::Invalid {
        name,
        why: e.to_string(),
    })
}

/// Where a CA bundle read from `DATABASE_SSLROOTCERT_URI` is kept for the TLS set-up (the
/// function's only writable directory is /tmp).
const FETCHED_CA_BUNDLE: &str = "/tmp/streamload-database-ca.pem";

/// Largest CA bundle read from S3 or a secret: RDS's global bundle is about 150 KB.
const MAX_CA_BUNDLE_BYTES: usize = 1024 * 1024;

/// Reads `DATABASE_SSLROOTCERT_URI` (S3 object or secret) into [`FETCHED_CA_BUNDLE`]; an error
/// names the variable and the URI, never the content.
async fn fetch_ca_bundle(uri: &str, sdk: &aws_config::SdkConfig) -> Result<String, ConfigError> {
    let bad = |why: String| ConfigError::Invalid {
        name: "DATABASE_SSLROOTCERT_URI",
        why,
    };
    let pem: Vec<u8> = if let Some(rest) = uri.strip_prefix("s3://") {
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| bad(format!("{uri}: expected s3://bucket/key")))?;
        streamload_aws::read_object(&streamload_aws::s3_client(sdk), bucket, key)
            .await
            .map_err(bad)?
    } else {
        let out = streamload_aws::secrets_client(sdk)
            .get_secret_value()
            .secret_id(uri)
            .send()
            .await
            .map_err(|e| {
                bad(format!(
                    "{uri}: {}",
                    streamload_aws::classify_sdk_error("secretsmanager GetSecretValue", &e).message
                ))
            })?;
        out.secret_string
            .ok_or_else(|| bad(format!("{uri}: the secret holds no string")))?
            .into_bytes()
    };
    if pem.len() > MAX_CA_BUNDLE_BYTES
        || !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(bad(format!("{uri}: not a PEM bundle of certificates")));
    }
    std::fs::write(FETCHED_CA_BUNDLE, &pem)
        .map_err(|e| bad(format!("writing {FETCHED_CA_BUNDLE}: {}", e.kind())))?;
    Ok(FETCHED_CA_BUNDLE.to_owned())
}

/// The connection options `config` describes; a secret (and a CA bundle named by URI) is
/// read here, once.
pub async fn connect_options(
    config: &Config,
    sdk: &aws_config::SdkConfig,
) -> Result<ConnectOptions, StartError> {
    let mut env = config.database_env.clone();
    if let Some(uri) = &env.sslrootcert_uri {
        env.sslrootcert = Some(fetch_ca_bundle(uri, sdk).await?);
    }
    let env = &env;
    match &config.database {
        DatabaseSource::Unset => Err(StartError::Config(ConfigError::Missing(
            "DATABASE_URL, DATABASE_SECRET_ARN or DATABASE_IAM_AUTH",
        ))),
        DatabaseSource::Url(url) => {
            Ok(
                ConnectOptions::parse(url).map_err(|e| ConfigError::Invalid {
                    name: "DATABASE_URL",
                    why: e.to_string(),
                })?,
            )
        }
        DatabaseSource::SecretArn(arn) => {
            let client = streamload_aws::secrets_client(sdk);
            let secret = streamload_aws::database_secret(&client, arn).await?;
            // The stack's settings win over the secret's: whoever may write the secret must not
            // be able to point the loader at another host or weaken its TLS.
            if let (Some(stack), Some(theirs)) = (&env.host, &secret.host) {
                if stack != theirs {
                    tracing::warn!(
                        "the database secret names another host than DATABASE_HOST; DATABASE_HOST is used"
                    );
                }
            }
            let host = env
                .host
                .clone()
                .or_else(|| secret.host.clone())
                .ok_or_else(|| {
                    StartError::Secret(streamload_aws::AwsError::Secret {
                        arn: arn.clone(),
                        message: "field \"host\" is missing and DATABASE_HOST is not set".into(),
                    })
                })?;
            let mut pg = tokio_postgres::Config::new();
            pg.host(&host)
                .port(secret.port.or(env.port).unwrap_or(DEFAULT_PORT))
                .dbname(
                    secret
                        .dbname
                        .as_deref()
                        .or(env.name.as_deref())
                        .unwrap_or("postgres"),
                )
                .user(&secret.username)
                .password(secret.password.as_bytes());
            let tls = secret_tls_settings(
                secret.sslmode.as_deref(),
                secret.sslrootcert.as_deref(),
                env,
            )?;
            let login = SecretLogin {
                current: std::sync::Mutex::new(SecretLogin::login_of(&secret)),
                client,
                arn: arn.clone(),
            };
            Ok(options(pg, tls, "DATABASE_SSLROOTCERT")?.with_login(Arc::new(login)))
        }
        DatabaseSource::Iam { url } => {
            let options = match url {
                Some(url) => ConnectOptions::parse(url).map_err(|e| ConfigError::Invalid {
                    name: "DATABASE_URL",
                    why: e.to_string(),
                })?,
                None => {
                    let mut pg = tokio_postgres::Config::new();
                    pg.host(env.host.as_deref().unwrap_or_default())
                        .port(env.port.unwrap_or(DEFAULT_PORT))
                        .dbname(env.name.as_deref().unwrap_or_default());
                    options(
                        pg,
                        tls_settings(None, None, env, "DATABASE_SSLMODE")?,
                        "DATABASE_SSLROOTCERT",
                    )?
                }
            };
            if matches!(
                options.tls_settings().mode,
                SslMode::Disable | SslMode::Require
            ) {
                return Err(ConfigError::Invalid {
                    name: "DATABASE_URL",
                    why: format!(
                        "IAM database authentication requires verified TLS (verify-full or verify-ca), not sslmode={}: the token is a password",
                        options.tls_settings().mode
                    ),
                }
                .into());
            }
            let pg = options.config();
            let host = match pg.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "DATABASE_HOST",
                        why: "IAM database authentication needs a TCP host name".into(),
                    }
                    .into())
                }
            };
            let port = pg.get_ports().first().copied().unwrap_or(DEFAULT_PORT);
            let user = pg
                .get_user()
                .map(str::to_owned)
                .or_else(|| env.user.clone())
                .ok_or(ConfigError::Invalid {
                    name: "DATABASE_USER",
                    why: "is required with DATABASE_IAM_AUTH=true".into(),
                })?;
            let token =
                RdsIamToken::new(sdk, &host, port, &user).map_err(|why| ConfigError::Invalid {
                    name: "DATABASE_IAM_AUTH",
                    why,
                })?;
            Ok(options.with_login(Arc::new(IamLogin(token))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(mode: Option<SslMode>, root: Option<&str>) -> DatabaseEnv {
        DatabaseEnv {
            sslmode: mode,
            sslrootcert: root.map(str::to_owned),
            ..DatabaseEnv::default()
        }
    }

    #[test]
    fn a_secret_may_make_tls_stricter_but_never_weaker() {
        // Given the stack's default (verify-full): a secret asking for less gets verify-full
        let s = secret_tls_settings(Some("require"), None, &env(None, None)).unwrap();
        assert_eq!(s.mode, SslMode::VerifyFull);
        let s = secret_tls_settings(Some("disable"), None, &env(None, None)).unwrap();
        assert_eq!(s.mode, SslMode::VerifyFull);
        // Given a stack that asks for verify-ca: a secret may raise it
        let s = secret_tls_settings(
            Some("verify-full"),
            None,
            &env(Some(SslMode::VerifyCa), Some("/ca.pem")),
        )
        .unwrap();
        assert_eq!(s.mode, SslMode::VerifyFull);
        // And the stack's root certificates win over the secret's
        let s =
            secret_tls_settings(None, Some("/theirs.pem"), &env(None, Some("/ours.pem"))).unwrap();
        assert_eq!(s.root_certs, RootCerts::File("/ours.pem".into()));
        // And a secret's own root applies when the stack names none
        let s = secret_tls_settings(None, Some("/theirs.pem"), &env(None, None)).unwrap();
        assert_eq!(s.root_certs, RootCerts::File("/theirs.pem".into()));
    }
}
