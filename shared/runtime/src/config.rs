//! The configuration contract shared by every function, read once at start-up.
//!
//! A missing or malformed variable fails start-up with one line naming it.

use std::time::Duration;

/// Shortest accepted DEDUP_TTL_SECONDS: a claim must outlive every redelivery of its record,
/// which with bounded retries is minutes; an hour leaves a wide margin.
pub const MIN_DEDUP_TTL_SECONDS: i64 = 3600;

/// Where the database credentials come from.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseSource {
    /// `DATABASE_URL`: a connection string with its own password (local use), honouring
    /// `sslmode` and `sslrootcert` in it.
    Url(String),
    /// `DATABASE_SECRET_ARN`: a Secrets Manager secret with at least username and password
    /// (see `streamload_aws::DatabaseSecret`); read again when the database refuses it.
    SecretArn(String),
    /// `DATABASE_IAM_AUTH=true`: an IAM token per connection, signed with the function's
    /// role; the coordinates from `DATABASE_URL` (without a password) or from
    /// `DATABASE_HOST` / `DATABASE_PORT` / `DATABASE_NAME` / `DATABASE_USER`.
    Iam { url: Option<String> },
    /// None of them: allowed only when no route writes a table (index and lake only);
    /// refused at start-up otherwise, naming the route.
    Unset,
}

impl std::fmt::Debug for DatabaseSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseSource::Url(_) => f.write_str("Url(<redacted>)"),
            DatabaseSource::SecretArn(a) => write!(f, "SecretArn({a})"),
            DatabaseSource::Unset => f.write_str("Unset"),
            DatabaseSource::Iam { url } => {
                write!(
                    f,
                    "Iam {{ url: {} }}",
                    if url.is_some() { "<redacted>" } else { "None" }
                )
            }
        }
    }
}

/// The database coordinates and TLS settings given by variables, for a secret that lacks them
/// (an RDS-managed secret holds only the login) and for IAM authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseEnv {
    /// `DATABASE_HOST`
    pub host: Option<String>,
    /// `DATABASE_PORT` (default 5432)
    pub port: Option<u16>,
    /// `DATABASE_NAME`
    pub name: Option<String>,
    /// `DATABASE_USER` (IAM authentication)
    pub user: Option<String>,
    /// `DATABASE_SSLMODE` (default verify-full; a secret's own `sslmode` may only raise it)
    pub sslmode: Option<streamload_postgres::SslMode>,
    /// `DATABASE_SSLROOTCERT` (default: the embedded Amazon RDS roots)
    pub sslrootcert: Option<String>,
    /// `DATABASE_SSLROOTCERT_URI`: the PEM bundle from `s3://bucket/key` or a Secrets Manager
    /// secret ARN (its string is the PEM), read once at start-up; `sam build` ships only the
    /// binary, so a private CA comes this way. Empty means unset.
    pub sslrootcert_uri: Option<String>,
}

/// Where the routes come from (`STREAMLOAD_CONFIG`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutesSource {
    /// No file: the built-in events route over TARGET_TABLE and OUTPUT_PREFIX.
    Builtin,
    /// A TOML file on the function's file system (e.g. in the deployment package).
    File(String),
    /// A TOML object in S3, read once at start-up.
    S3 { bucket: String, key: String },
}

/// Least `FINISH_MARGIN_MS`: the answer, the claim releases after a failure (until a third of
/// the margin before the deadline) and the Runtime API call must fit in it.
pub const MIN_FINISH_MARGIN_MS: i64 = 500;

/// Greatest `FINISH_MARGIN_MS`: 15 s. The clean-up calls (claim releases, dead-letter
/// archives) run until a third of the margin before the deadline, i.e. up to two thirds of it
/// past the cutoff, and must end inside the lease's 10 s grace after the cutoff; a margin at
/// or above the function's timeout would also fail every batch (checked at each invocation).
pub const MAX_FINISH_MARGIN_MS: i64 = 15_000;

#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseSource,
    pub database_env: DatabaseEnv,
    pub routes: RoutesSource,
    pub target_table: String,
    pub dedup_table: String,
    pub dedup_ttl_seconds: i64,
    pub output_bucket: String,
    pub output_prefix: String,
    pub dead_letter_prefix: String,
    pub dlq_url: String,
    pub max_record_bytes: usize,
    pub finish_margin: Duration,
    /// How the claims' conditional writes reach DynamoDB (`STREAMLOAD_DEDUP_CLIENT`).
    pub dedup_client: CallClient,
    /// How the objects' create-only writes reach S3 (`STREAMLOAD_OBJECTS_CLIENT`).
    pub objects_client: CallClient,
    /// The search cluster of routes with `[route.index]` (`STREAMLOAD_SEARCH_URL`).
    pub search: Option<SearchSettings>,
}

/// Where the search index is and how requests to it are authorised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchSettings {
    /// `https://host[:port]` (`http://` on loopback only).
    pub url: String,
    /// `STREAMLOAD_SEARCH_AUTH`.
    pub auth: SearchAuthSource,
}

/// How search requests are authorised (`STREAMLOAD_SEARCH_AUTH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchAuthSource {
    /// `none`: a cluster without authentication (the default).
    None,
    /// `sigv4`: the function's role, SigV4 service `es` (Amazon OpenSearch Service).
    SigV4,
    /// `secret`: basic credentials or an API key from `STREAMLOAD_SEARCH_SECRET_ARN`.
    Secret(String),
}

/// How a hot call (the claims' conditional `PutItem`, the objects' create-only `PutObject`)
/// reaches AWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallClient {
    /// `direct` (default): streamload's own signed request over kept-alive connections
    /// (`streamload_aws::PutItemClient`, `streamload_aws::PutObjectClient`); the SDK where
    /// the endpoint needs its rules.
    Direct,
    /// `sdk`: every call through the AWS SDK client.
    Sdk,
}

/// A [`CallClient`] variable: `direct` (the default) or `sdk`.
fn call_client(name: &'static str, value: Option<String>) -> Result<CallClient, ConfigError> {
    match value.as_deref().map(str::trim) {
        None | Some("direct") => Ok(CallClient::Direct),
        Some("sdk") => Ok(CallClient::Sdk),
        Some(_) => Err(ConfigError::Invalid {
            name,
            why: "must be direct or sdk".into(),
        }),
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("configuration: {0} is required")]
    Missing(&'static str),
    #[error("configuration: {name} is invalid: {why}")]
    Invalid { name: &'static str, why: String },
}

impl streamload_core::Classify for ConfigError {
    fn class(&self) -> streamload_core::ErrorClass {
        streamload_core::ErrorClass::Permanent
    }
}

fn prefix(name: &'static str, value: String) -> Result<String, ConfigError> {
    streamload_core::route::check_prefix(&value).map_err(|why| ConfigError::Invalid {
        name,
        why: why.into(),
    })
}

/// `STREAMLOAD_CONFIG` as a routes source (a path, or `s3://bucket/key`).
pub fn routes_source(value: Option<String>) -> Result<RoutesSource, ConfigError> {
    let Some(v) = value else {
        return Ok(RoutesSource::Builtin);
    };
    let v = v.trim().to_owned();
    match v.strip_prefix("s3://") {
        Some(rest) => match rest.split_once('/') {
            Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => Ok(RoutesSource::S3 {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            }),
            _ => Err(ConfigError::Invalid {
                name: "STREAMLOAD_CONFIG",
                why: "an S3 URI must be s3://<bucket>/<key>".into(),
            }),
        },
        None => Ok(RoutesSource::File(v)),
    }
}

impl Config {
    /// Reads the contract from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the contract through `get`, so tests need not touch the environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let required = |k: &'static str| get(k).ok_or(ConfigError::Missing(k));
        let number = |k: &'static str, default: i64| -> Result<i64, ConfigError> {
            match get(k) {
                None => Ok(default),
                Some(v) => v.trim().parse::<i64>().map_err(|_| ConfigError::Invalid {
                    name: k,
                    why: "not an integer".into(),
                }),
            }
        };

        let url = match get("DATABASE_URL") {
            Some(url) => {
                streamload_postgres::ConnectOptions::validate(&url).map_err(|e| {
                    ConfigError::Invalid {
                        name: "DATABASE_URL",
                        why: e.to_string(),
                    }
                })?;
                Some(url)
            }
            None => None,
        };
        let database_env = DatabaseEnv {
            host: get("DATABASE_HOST").map(|h| h.trim().to_owned()),
            port: match get("DATABASE_PORT") {
                None => None,
                Some(p) => Some(p.trim().parse::<u16>().ok().filter(|p| *p > 0).ok_or(
                    ConfigError::Invalid {
                        name: "DATABASE_PORT",
                        why: "not a port number".into(),
                    },
                )?),
            },
            name: get("DATABASE_NAME").map(|n| n.trim().to_owned()),
            user: get("DATABASE_USER").map(|u| u.trim().to_owned()),
            sslmode: match get("DATABASE_SSLMODE") {
                None => None,
                Some(m) => Some(m.parse().map_err(|why| ConfigError::Invalid {
                    name: "DATABASE_SSLMODE",
                    why,
                })?),
            },
            sslrootcert: get("DATABASE_SSLROOTCERT"),
            sslrootcert_uri: match get("DATABASE_SSLROOTCERT_URI")
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty())
            {
                None => None,
                Some(u) if u.starts_with("s3://") || u.starts_with("arn:") => Some(u),
                Some(_) => {
                    return Err(ConfigError::Invalid {
                        name: "DATABASE_SSLROOTCERT_URI",
                        why: "must be s3://bucket/key or a Secrets Manager secret ARN".into(),
                    })
                }
            },
        };
        if database_env.sslrootcert.is_some() && database_env.sslrootcert_uri.is_some() {
            return Err(ConfigError::Invalid {
                name: "DATABASE_SSLROOTCERT_URI",
                why: "give the CA bundle either as DATABASE_SSLROOTCERT (a file) or as DATABASE_SSLROOTCERT_URI, not both".into(),
            });
        }
        let iam_auth = match get("DATABASE_IAM_AUTH").as_deref().map(str::trim) {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(ConfigError::Invalid {
                    name: "DATABASE_IAM_AUTH",
                    why: "must be true or false".into(),
                })
            }
        };
        let database = if iam_auth {
            if url.is_none() {
                for (name, value) in [
                    ("DATABASE_HOST", &database_env.host),
                    ("DATABASE_USER", &database_env.user),
                    ("DATABASE_NAME", &database_env.name),
                ] {
                    if value.is_none() {
                        return Err(ConfigError::Invalid {
                            name,
                            why: "is required with DATABASE_IAM_AUTH=true (or give DATABASE_URL without a password)".into(),
                        });
                    }
                }
            }
            if matches!(
                database_env.sslmode,
                Some(streamload_postgres::SslMode::Disable | streamload_postgres::SslMode::Require)
            ) {
                return Err(ConfigError::Invalid {
                    name: "DATABASE_SSLMODE",
                    why: "IAM database authentication requires verified TLS (verify-full or verify-ca): the token is a password, and require sends it to any server".into(),
                });
            }
            DatabaseSource::Iam { url }
        } else {
            match (url, get("DATABASE_SECRET_ARN")) {
                (Some(url), _) => DatabaseSource::Url(url),
                (None, Some(arn)) if arn.starts_with("arn:") => DatabaseSource::SecretArn(arn),
                (None, Some(_)) => {
                    return Err(ConfigError::Invalid {
                        name: "DATABASE_SECRET_ARN",
                        why: "not an ARN".into(),
                    })
                }
                // Checked against the routes at start-up: only routes without a table may go
                // without a database.
                (None, None) => DatabaseSource::Unset,
            }
        };
        let target_table = get("TARGET_TABLE").unwrap_or_else(|| "events".into());
        let table_ok = match target_table.split_once('.') {
            Some((schema, table)) => {
                streamload_core::route::is_identifier(schema)
                    && streamload_core::route::is_identifier(table)
            }
            None => streamload_core::route::is_identifier(&target_table),
        };
        if !table_ok {
            return Err(ConfigError::Invalid {
                name: "TARGET_TABLE",
                why: "use letters, digits and _ (optionally schema.table)".into(),
            });
        }
        let dedup_ttl_seconds = number("DEDUP_TTL_SECONDS", 604_800)?;
        if dedup_ttl_seconds < MIN_DEDUP_TTL_SECONDS {
            return Err(ConfigError::Invalid {
                name: "DEDUP_TTL_SECONDS",
                why: format!(
                    "must be at least {MIN_DEDUP_TTL_SECONDS} so claims outlive redeliveries"
                ),
            });
        }
        let max_record_bytes = number(
            "MAX_RECORD_BYTES",
            streamload_core::event::DEFAULT_MAX_RECORD_BYTES as i64,
        )?;
        if max_record_bytes <= 0 {
            return Err(ConfigError::Invalid {
                name: "MAX_RECORD_BYTES",
                why: "must be positive".into(),
            });
        }
        let finish_margin_ms = number("FINISH_MARGIN_MS", 3000)?;
        if !(MIN_FINISH_MARGIN_MS..=MAX_FINISH_MARGIN_MS).contains(&finish_margin_ms) {
            return Err(ConfigError::Invalid {
                name: "FINISH_MARGIN_MS",
                why: format!(
                    "must be {MIN_FINISH_MARGIN_MS} to {MAX_FINISH_MARGIN_MS} ms (below, the function can answer after its deadline; it must also stay well below the function timeout)"
                ),
            });
        }
        let dedup_client = call_client("STREAMLOAD_DEDUP_CLIENT", get("STREAMLOAD_DEDUP_CLIENT"))?;
        let objects_client = call_client(
            "STREAMLOAD_OBJECTS_CLIENT",
            get("STREAMLOAD_OBJECTS_CLIENT"),
        )?;
        let search = match get("STREAMLOAD_SEARCH_URL") {
            None => None,
            Some(url) => {
                let auth = match get("STREAMLOAD_SEARCH_AUTH").as_deref().map(str::trim) {
                    None | Some("none") => SearchAuthSource::None,
                    Some("sigv4") => SearchAuthSource::SigV4,
                    Some("secret") => SearchAuthSource::Secret(
                        get("STREAMLOAD_SEARCH_SECRET_ARN")
                            .ok_or(ConfigError::Missing("STREAMLOAD_SEARCH_SECRET_ARN"))?,
                    ),
                    Some(_) => {
                        return Err(ConfigError::Invalid {
                            name: "STREAMLOAD_SEARCH_AUTH",
                            why: "must be none, sigv4 or secret".into(),
                        })
                    }
                };
                Some(SearchSettings {
                    url: url.trim().to_owned(),
                    auth,
                })
            }
        };
        Ok(Config {
            dedup_client,
            objects_client,
            search,
            database,
            database_env,
            routes: routes_source(get("STREAMLOAD_CONFIG"))?,
            target_table,
            dedup_table: required("DEDUP_TABLE")?,
            dedup_ttl_seconds,
            output_bucket: required("OUTPUT_BUCKET")?,
            output_prefix: prefix(
                "OUTPUT_PREFIX",
                get("OUTPUT_PREFIX").unwrap_or_else(|| "events/".into()),
            )?,
            dead_letter_prefix: prefix(
                "DEAD_LETTER_PREFIX",
                get("DEAD_LETTER_PREFIX").unwrap_or_else(|| "dead-letter/".into()),
            )?,
            dlq_url: required("DLQ_URL")?,
            max_record_bytes: max_record_bytes as usize,
            finish_margin: Duration::from_millis(finish_margin_ms as u64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    const BASE: &[(&str, &str)] = &[
        ("DATABASE_URL", "postgres://u@localhost/db"),
        ("DEDUP_TABLE", "claims"),
        ("OUTPUT_BUCKET", "lake"),
        ("DLQ_URL", "http://q"),
    ];

    #[test]
    fn defaults_fill_the_optional_variables() {
        let c = with(BASE).unwrap();
        assert_eq!(c.target_table, "events");
        assert_eq!(c.dedup_ttl_seconds, 604_800);
        assert_eq!(c.output_prefix, "events/");
        assert_eq!(c.dead_letter_prefix, "dead-letter/");
    }

    #[test]
    fn a_finish_margin_outside_its_bounds_is_refused_naming_the_variable() {
        for margin in ["0", "499", "15001", "-5"] {
            // Given a margin the function could answer late with, or one near any timeout
            let mut pairs = BASE.to_vec();
            pairs.push(("FINISH_MARGIN_MS", margin));
            // When the configuration is read, then it is refused naming the variable
            match with(&pairs) {
                Err(ConfigError::Invalid { name, .. }) => assert_eq!(name, "FINISH_MARGIN_MS"),
                other => panic!("{margin}: {other:?}"),
            }
        }
        let mut pairs = BASE.to_vec();
        pairs.push(("FINISH_MARGIN_MS", "500"));
        assert!(with(&pairs).is_ok());
    }

    #[test]
    fn the_hot_calls_go_direct_unless_told_sdk_and_anything_else_is_refused_by_name() {
        // Given nothing said, Then both hot calls go through streamload's own clients
        let c = with(BASE).unwrap();
        assert_eq!(
            (c.dedup_client, c.objects_client),
            (CallClient::Direct, CallClient::Direct)
        );
        for name in ["STREAMLOAD_DEDUP_CLIENT", "STREAMLOAD_OBJECTS_CLIENT"] {
            // Given `sdk` for one of them, Then that one alone goes through the SDK
            let mut pairs = BASE.to_vec();
            pairs.push((name, " sdk "));
            let c = with(&pairs).unwrap();
            let sdk = |n| {
                if n == name {
                    CallClient::Sdk
                } else {
                    CallClient::Direct
                }
            };
            assert_eq!(
                (c.dedup_client, c.objects_client),
                (
                    sdk("STREAMLOAD_DEDUP_CLIENT"),
                    sdk("STREAMLOAD_OBJECTS_CLIENT")
                )
            );
            // Given a word that is neither, Then start-up fails naming the variable
            let mut pairs = BASE.to_vec();
            pairs.push((name, "hyper"));
            match with(&pairs) {
                Err(ConfigError::Invalid { name: named, .. }) => assert_eq!(named, name),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn each_missing_variable_is_named() {
        for name in ["DEDUP_TABLE", "OUTPUT_BUCKET", "DLQ_URL"] {
            let without: Vec<_> = BASE.iter().copied().filter(|(k, _)| *k != name).collect();
            assert_eq!(with(&without).unwrap_err(), ConfigError::Missing(name));
        }
        // No database at all is left to the start-up, which knows whether a route has a table
        let no_db: Vec<_> = BASE
            .iter()
            .copied()
            .filter(|(k, _)| *k != "DATABASE_URL")
            .collect();
        assert_eq!(with(&no_db).unwrap().database, DatabaseSource::Unset);
    }

    #[test]
    fn malformed_values_are_named() {
        let bad = |k: &str, v: &str| {
            let mut p: Vec<_> = BASE.to_vec();
            p.push((k, v));
            p.retain(|(name, value)| *name != k || *value == v);
            with(&p).unwrap_err().to_string()
        };
        assert!(bad("DEDUP_TTL_SECONDS", "soon").contains("DEDUP_TTL_SECONDS"));
        assert!(bad("DEDUP_TTL_SECONDS", "60").contains("at least"));
        assert!(bad("TARGET_TABLE", "events;drop").contains("TARGET_TABLE"));
        assert!(bad("OUTPUT_PREFIX", "../escape").contains("OUTPUT_PREFIX"));
        assert!(bad("DATABASE_URL", "postgres://u@h:notaport/db").contains("DATABASE_URL"));
        assert!(bad("STREAMLOAD_CONFIG", "s3://bucket-only").contains("STREAMLOAD_CONFIG"));
    }

    #[test]
    fn the_routes_come_from_a_file_an_s3_object_or_the_builtin_route() {
        assert_eq!(with(BASE).unwrap().routes, RoutesSource::Builtin);
        let mut p = BASE.to_vec();
        p.push(("STREAMLOAD_CONFIG", "s3://cfg/streamload/prod.toml"));
        assert_eq!(
            with(&p).unwrap().routes,
            RoutesSource::S3 {
                bucket: "cfg".into(),
                key: "streamload/prod.toml".into()
            }
        );
        p.pop();
        p.push(("STREAMLOAD_CONFIG", "/var/task/streamload.toml"));
        assert_eq!(
            with(&p).unwrap().routes,
            RoutesSource::File("/var/task/streamload.toml".into())
        );
    }

    #[test]
    fn prefixes_end_with_a_slash() {
        let mut p = BASE.to_vec();
        p.push(("OUTPUT_PREFIX", "lake/events"));
        assert_eq!(with(&p).unwrap().output_prefix, "lake/events/");
    }

    #[test]
    fn iam_authentication_needs_coordinates_and_tls() {
        // Given IAM authentication without a URL
        let iam: Vec<_> = BASE
            .iter()
            .copied()
            .filter(|(k, _)| *k != "DATABASE_URL")
            .chain([("DATABASE_IAM_AUTH", "true")])
            .collect();
        // Then each missing coordinate is named
        let e = with(&iam).unwrap_err().to_string();
        assert!(
            e.contains("DATABASE_HOST") && e.contains("DATABASE_IAM_AUTH"),
            "{e}"
        );
        let mut full = iam.clone();
        full.extend([
            ("DATABASE_HOST", "db.example.com"),
            ("DATABASE_USER", "loader"),
            ("DATABASE_NAME", "app"),
            ("DATABASE_PORT", "5433"),
        ]);
        let c = with(&full).unwrap();
        assert_eq!(c.database, DatabaseSource::Iam { url: None });
        assert_eq!(c.database_env.port, Some(5433));
        // And plaintext, or TLS without verification, is refused with it
        for mode in ["disable", "require"] {
            let mut weak = full.clone();
            weak.push(("DATABASE_SSLMODE", mode));
            assert!(
                with(&weak)
                    .unwrap_err()
                    .to_string()
                    .contains("requires verified TLS"),
                "{mode}"
            );
        }
    }

    #[test]
    fn database_variables_are_checked_by_name() {
        let bad = |k: &str, v: &str| {
            let mut p: Vec<_> = BASE.to_vec();
            p.push((k, v));
            with(&p).unwrap_err().to_string()
        };
        assert!(bad("DATABASE_PORT", "x").contains("DATABASE_PORT"));
        assert!(bad("DATABASE_SSLMODE", "prefer").contains("DATABASE_SSLMODE"));
        assert!(bad("DATABASE_IAM_AUTH", "yes").contains("DATABASE_IAM_AUTH"));
        let mut p: Vec<_> = BASE.to_vec();
        p.retain(|(k, _)| *k != "DATABASE_URL");
        p.push(("DATABASE_URL", "postgres://u@h/db?sslmode=allow"));
        let e = with(&p).unwrap_err().to_string();
        assert!(e.contains("DATABASE_URL") && e.contains("plaintext"), "{e}");
    }

    #[test]
    fn the_database_url_never_shows_in_debug_output() {
        let c = with(BASE).unwrap();
        assert!(!format!("{c:?}").contains("postgres://"));
    }
}
