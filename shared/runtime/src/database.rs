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

/// The connection options `config` describes; a secret is read here (once).
pub async fn connect_options(
    config: &Config,
    sdk: &aws_config::SdkConfig,
) -> Result<ConnectOptions, StartError> {
    let env = &config.database_env;
    match &config.database {
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
            let host = secret
                .host
                .clone()
                .or_else(|| env.host.clone())
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
            let tls = tls_settings(
                secret.sslmode.as_deref(),
                secret.sslrootcert.as_deref(),
                env,
                "DATABASE_SECRET_ARN sslmode",
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
            if options.tls_settings().mode == SslMode::Disable {
                return Err(ConfigError::Invalid {
                    name: "DATABASE_URL",
                    why: "IAM database authentication requires TLS (sslmode=disable)".into(),
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
