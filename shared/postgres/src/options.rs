//! How to reach the database: tokio-postgres's [`Config`] plus what it does not know —
//! libpq's `sslmode` values beyond `require` and `sslrootcert` — and, for credentials that
//! change, a [`LoginSource`].
//!
//! tokio-postgres refuses `sslmode=verify-full` and `sslrootcert`, so both are taken out of
//! the connection string before it parses the rest, in either form: a URL
//! (`postgres://…?sslmode=verify-full&sslrootcert=/path`) or key/value text
//! (`host=… sslmode='verify-ca'`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio_postgres::Config;

use crate::tls::{MakeRustls, RootCerts, SslMode, TlsError, TlsSettings};

/// A user name and a password (or an IAM token) for one connection.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login {{ user: {:?}, password: <redacted> }}", self.user)
    }
}

/// The future a [`LoginSource`] answers with.
pub type LoginFuture<'a> = Pin<Box<dyn Future<Output = Result<Login, String>> + Send + 'a>>;

/// Credentials that can change while the function lives: a rotated secret, an IAM token.
pub trait LoginSource: Send + Sync {
    /// The login for the next connection. `after_refusal` is true when the server has just
    /// refused the previous one (the secret may have been rotated: read it again).
    fn login(&self, after_refusal: bool) -> LoginFuture<'_>;

    /// Whether asking again after a refusal can give a different answer (a secret can; an
    /// IAM token is fresh every time anyway).
    fn refreshes_after_refusal(&self) -> bool;
}

/// Why a connection string or its TLS settings are unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionsError {
    #[error("not a PostgreSQL connection string")]
    Syntax,
    #[error("{0}")]
    SslMode(String),
    #[error("{0}")]
    Tls(#[from] TlsError),
}

/// Everything needed to open a connection.
#[derive(Clone)]
pub struct ConnectOptions {
    pub(crate) pg: Config,
    pub(crate) tls_settings: TlsSettings,
    pub(crate) tls: MakeRustls,
    pub(crate) login: Option<Arc<dyn LoginSource>>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("hosts", &self.pg.get_hosts())
            .field("tls", &self.tls_settings)
            .finish_non_exhaustive()
    }
}

impl ConnectOptions {
    /// Parses a connection string (URL or key/value), honouring `sslmode` (default
    /// `verify-full`) and `sslrootcert` (default: the embedded Amazon RDS roots).
    ///
    /// ```
    /// use streamload_postgres::{ConnectOptions, SslMode};
    /// let o = ConnectOptions::parse("postgres://loader@db.example.com/app").unwrap();
    /// assert_eq!(o.tls_settings().mode, SslMode::VerifyFull);
    /// let o = ConnectOptions::parse("postgres://loader@localhost/app?sslmode=disable").unwrap();
    /// assert_eq!(o.tls_settings().mode, SslMode::Disable);
    /// assert!(ConnectOptions::parse("postgres://h/db?sslmode=prefer").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, OptionsError> {
        let (pg, tls) = Self::read(text)?;
        Self::new(pg, tls)
    }

    /// Checks a connection string's syntax and `sslmode` without building its TLS set-up
    /// (the configuration check at start-up; [`ConnectOptions::parse`] builds it once).
    pub fn validate(text: &str) -> Result<(), OptionsError> {
        Self::read(text).map(|_| ())
    }

    fn read(text: &str) -> Result<(Config, TlsSettings), OptionsError> {
        let (rest, mode, root) = split_tls_options(text)?;
        let pg: Config = rest.parse().map_err(|_| OptionsError::Syntax)?;
        let mode = match mode {
            Some(m) => m.parse::<SslMode>().map_err(OptionsError::SslMode)?,
            None => SslMode::default(),
        };
        let root_certs = match root {
            Some(path) if !path.is_empty() => RootCerts::File(path.into()),
            _ => RootCerts::AmazonRds,
        };
        Ok((pg, TlsSettings { mode, root_certs }))
    }

    /// Options over a prepared [`Config`] (its own `ssl_mode` is replaced by `tls`).
    pub fn new(mut pg: Config, tls: TlsSettings) -> Result<Self, OptionsError> {
        // verify-ca checks who signed the certificate, not whom it names. Against the public
        // Amazon RDS roots, any RDS instance's certificate (anyone's, in any account) would
        // pass: only a private CA makes verify-ca mean "our server".
        if tls.mode == SslMode::VerifyCa && tls.root_certs == RootCerts::AmazonRds {
            return Err(OptionsError::SslMode(
                "sslmode=verify-ca with the embedded Amazon RDS roots would accept any RDS instance's certificate: use verify-full (connect by the RDS endpoint's name), or give your private CA in sslrootcert / DATABASE_SSLROOTCERT".into(),
            ));
        }
        pg.ssl_mode(match tls.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            _ => tokio_postgres::config::SslMode::Require,
        });
        Ok(Self {
            tls: tls.connector()?,
            tls_settings: tls,
            pg,
            login: None,
        })
    }

    /// Takes the user and password from `source` at each connection instead of `pg`.
    pub fn with_login(mut self, source: Arc<dyn LoginSource>) -> Self {
        self.login = Some(source);
        self
    }

    pub fn tls_settings(&self) -> &TlsSettings {
        &self.tls_settings
    }

    pub fn config(&self) -> &Config {
        &self.pg
    }

    pub(crate) fn config_mut(&mut self) -> &mut Config {
        &mut self.pg
    }

    /// The first host, for messages.
    pub(crate) fn host(&self) -> String {
        match self.pg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        }
    }
}

/// The connection string without `sslmode` and `sslrootcert`, and their values.
type Split = (String, Option<String>, Option<String>);

fn split_tls_options(text: &str) -> Result<Split, OptionsError> {
    let text = text.trim();
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        let Some((base, query)) = text.split_once('?') else {
            return Ok((text.to_owned(), None, None));
        };
        let (mut mode, mut root) = (None, None);
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "sslmode" => mode = Some(percent_decode(v)?),
                "sslrootcert" => root = Some(percent_decode(v)?),
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, mode, root));
    }
    // key = value pairs; a value may be 'quoted' with \' and \\ escapes.
    let (mut mode, mut root) = (None, None);
    let mut kept = String::new();
    let mut chars = text.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(OptionsError::Syntax);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next() {
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c)) => value.push(c),
                        None => return Err(OptionsError::Syntax),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err(OptionsError::Syntax),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                value.push(c);
            }
        }
        let end = chars.peek().map(|&(i, _)| i).unwrap_or(text.len());
        match key.as_str() {
            "sslmode" => mode = Some(value),
            "sslrootcert" => root = Some(value),
            _ => {
                kept.push_str(&text[start..end]);
                kept.push(' ');
            }
        }
    }
    Ok((kept.trim_end().to_owned(), mode, root))
}

fn percent_decode(v: &str) -> Result<String, OptionsError> {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(OptionsError::Syntax)?;
                let hex = std::str::from_utf8(hex).map_err(|_| OptionsError::Syntax)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| OptionsError::Syntax)?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| OptionsError::Syntax)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_ca_needs_a_private_ca() {
        // Given verify-ca with the embedded public RDS roots: any RDS certificate would pass
        let Err(e) = ConnectOptions::parse("postgres://u@db.example.com/app?sslmode=verify-ca")
        else {
            panic!("verify-ca with the public roots must be refused");
        };
        assert!(
            e.to_string()
                .contains("verify-ca with the embedded Amazon RDS roots"),
            "{e}"
        );
        // And verify-full with them is the default and fine
        assert!(ConnectOptions::parse("postgres://u@db.example.com/app").is_ok());
    }

    #[test]
    fn a_url_keeps_its_other_parameters_and_gives_up_the_tls_ones() {
        // Given a URL with both TLS parameters among others
        let (rest, mode, root) = split_tls_options(
            "postgres://u@h:5432/db?application_name=x&sslmode=verify-ca&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3",
        )
        .unwrap();
        // Then tokio-postgres gets the rest and the TLS values are decoded
        assert_eq!(
            rest,
            "postgres://u@h:5432/db?application_name=x&connect_timeout=3"
        );
        assert_eq!(mode.as_deref(), Some("verify-ca"));
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
        let o = ConnectOptions::parse(
            "postgres://u@h/db?sslmode=require&sslrootcert=/x.pem&application_name=a",
        );
        // (the named root file does not exist: the error names it)
        assert!(o.unwrap_err().to_string().contains("/x.pem"));
    }

    #[test]
    fn key_value_text_with_quotes_is_split_the_same_way() {
        let (rest, mode, root) = split_tls_options(
            "host=db.example.com port=5432 sslmode = 'verify-full' sslrootcert='/a b/c\\'s.pem' dbname=app",
        )
        .unwrap();
        assert_eq!(rest, "host=db.example.com port=5432 dbname=app");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/a b/c's.pem"));
        let o = ConnectOptions::parse("host=localhost user=u sslmode=disable").unwrap();
        assert_eq!(o.tls_settings().mode, SslMode::Disable);
    }

    #[test]
    fn defaults_are_verify_full_against_the_rds_roots() {
        let o = ConnectOptions::parse("postgres://u@db.example.com/app").unwrap();
        assert_eq!(
            o.tls_settings(),
            &TlsSettings {
                mode: SslMode::VerifyFull,
                root_certs: RootCerts::AmazonRds
            }
        );
        assert_eq!(
            o.config().get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[test]
    fn bad_strings_are_refused_without_quoting_them() {
        assert_eq!(
            ConnectOptions::parse("postgres://u:secret@h:notaport/db").unwrap_err(),
            OptionsError::Syntax
        );
        let e = ConnectOptions::parse("postgres://u:secret@h/db?sslmode=allow")
            .unwrap_err()
            .to_string();
        assert!(e.contains("plaintext") && !e.contains("secret"), "{e}");
        assert_eq!(
            ConnectOptions::parse("host=h sslmode='unterminated").unwrap_err(),
            OptionsError::Syntax
        );
    }

    #[test]
    fn a_login_never_shows_its_password() {
        let l = Login {
            user: "loader".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{l:?}").contains("hunter2"));
    }
}
