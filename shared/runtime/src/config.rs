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
    /// `DATABASE_URL` (local use).
    Url(String),
    /// `DATABASE_SECRET_ARN`: Secrets Manager JSON with host, port, username, password, dbname.
    SecretArn(String),
}

impl std::fmt::Debug for DatabaseSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseSource::Url(_) => f.write_str("Url(<redacted>)"),
            DatabaseSource::SecretArn(a) => write!(f, "SecretArn({a})"),
        }
    }
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

#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseSource,
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

fn routes_source(value: Option<String>) -> Result<RoutesSource, ConfigError> {
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

        let database = match (get("DATABASE_URL"), get("DATABASE_SECRET_ARN")) {
            (Some(url), _) => {
                url.parse::<tokio_postgres::Config>()
                    .map_err(|_| ConfigError::Invalid {
                        name: "DATABASE_URL",
                        why: "not a PostgreSQL connection string".into(),
                    })?;
                DatabaseSource::Url(url)
            }
            (None, Some(arn)) if arn.starts_with("arn:") => DatabaseSource::SecretArn(arn),
            (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    name: "DATABASE_SECRET_ARN",
                    why: "not an ARN".into(),
                })
            }
            (None, None) => {
                return Err(ConfigError::Missing("DATABASE_URL or DATABASE_SECRET_ARN"))
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
        if finish_margin_ms < 0 {
            return Err(ConfigError::Invalid {
                name: "FINISH_MARGIN_MS",
                why: "must not be negative".into(),
            });
        }
        Ok(Config {
            database,
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
    fn each_missing_variable_is_named() {
        for name in ["DEDUP_TABLE", "OUTPUT_BUCKET", "DLQ_URL"] {
            let without: Vec<_> = BASE.iter().copied().filter(|(k, _)| *k != name).collect();
            assert_eq!(with(&without).unwrap_err(), ConfigError::Missing(name));
        }
        let no_db: Vec<_> = BASE
            .iter()
            .copied()
            .filter(|(k, _)| *k != "DATABASE_URL")
            .collect();
        assert_eq!(
            with(&no_db).unwrap_err(),
            ConfigError::Missing("DATABASE_URL or DATABASE_SECRET_ARN")
        );
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
    fn the_database_url_never_shows_in_debug_output() {
        let c = with(BASE).unwrap();
        assert!(!format!("{c:?}").contains("postgres://"));
    }
}
