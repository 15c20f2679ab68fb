//! The database credentials secret (`DATABASE_SECRET_ARN`). Two shapes are in use and both
//! are read:
//!
//! - an **RDS-managed** secret (`ManageMasterUserPassword`): only `username` and `password`
//!   — the host, port and database come from `DATABASE_HOST` / `DATABASE_PORT` /
//!   `DATABASE_NAME`;
//! - the shape of Secrets Manager's rotation templates: `host`, `port`, `username`,
//!   `password`, `dbname` (and `engine`, ignored), optionally `sslmode` / `sslrootcert`.
//!
//! A problem names the field, never a value: the secret's text is not logged, quoted or kept
//! past parsing.

use crate::error::AwsError;
use serde_json::{Map, Value};

/// What a secret holds; absent coordinates are `None` (the caller falls back to the
/// environment).
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseSecret {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub username: String,
    pub password: String,
    pub dbname: Option<String>,
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
}

impl std::fmt::Debug for DatabaseSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSecret")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .finish_non_exhaustive()
    }
}

impl DatabaseSecret {
    /// Parses a secret's JSON text; the error names the field at fault, never a value.
    ///
    /// ```
    /// use streamload_aws::DatabaseSecret;
    /// // An RDS-managed secret holds only the login.
    /// let s = DatabaseSecret::parse(r#"{"username":"loader","password":"p"}"#).unwrap();
    /// assert_eq!((s.username.as_str(), s.host, s.port), ("loader", None, None));
    /// let e = DatabaseSecret::parse(r#"{"username":"loader"}"#).unwrap_err();
    /// assert_eq!(e, "field \"password\" is missing");
    /// ```
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: Value = serde_json::from_str(text)
            .map_err(|_| "not JSON (expected an object with username and password)".to_owned())?;
        let Value::Object(fields) = value else {
            return Err("not a JSON object (expected username and password)".into());
        };
        let text_field = |name: &str| -> Result<Option<String>, String> {
            match fields.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!("field {name:?} is not a string")),
            }
        };
        let required = |name: &str| -> Result<String, String> {
            match fields.get(name) {
                Some(Value::String(s)) => Ok(s.clone()),
                None | Some(Value::Null) => Err(format!("field {name:?} is missing")),
                Some(_) => Err(format!("field {name:?} is not a string")),
            }
        };
        let username = required("username")?;
        if username.trim().is_empty() {
            return Err("field \"username\" is empty".into());
        }
        Ok(DatabaseSecret {
            host: text_field("host")?,
            port: port(&fields)?,
            username,
            password: required("password")?,
            dbname: text_field("dbname")?,
            sslmode: text_field("sslmode")?,
            sslrootcert: text_field("sslrootcert")?,
        })
    }
}

/// `port` as a number or as digits in a string (both occur in the wild).
fn port(fields: &Map<String, Value>) -> Result<Option<u16>, String> {
    let bad = || "field \"port\" is not a port number".to_owned();
    match fields.get("port") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .map(Some)
            .ok_or_else(bad),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .map(Some)
            .ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}

/// Fetches and parses the secret. Errors name the ARN and the field, never the secret's text.
pub async fn database_secret(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
) -> Result<DatabaseSecret, AwsError> {
    let text = secret_text(client, arn).await?;
    DatabaseSecret::parse(&text).map_err(|message| secret_error(arn, message))
}

fn secret_error(arn: &str, message: String) -> AwsError {
    AwsError::Secret {
        arn: arn.to_owned(),
        message,
    }
}

/// A secret's string value; an error names the ARN, never the text.
async fn secret_text(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
) -> Result<String, AwsError> {
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| {
            secret_error(
                arn,
                crate::classify_sdk_error("secretsmanager GetSecretValue", &e).message,
            )
        })?;
    out.secret_string()
        .map(str::to_owned)
        .ok_or_else(|| secret_error(arn, "secret has no string value".into()))
}

/// Fetches a search cluster's credentials secret (`STREAMLOAD_SEARCH_SECRET_ARN`):
/// `{"username": …, "password": …}` for basic authentication, or `{"api_key": …}` (the
/// base64 `id:key` an API key's `encoded` field holds). Errors name the ARN and the field.
pub async fn search_secret(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
) -> Result<crate::SearchAuth, AwsError> {
    let text = secret_text(client, arn).await?;
    search_auth_of(&text).map_err(|message| secret_error(arn, message))
}

/// The authentication a search secret's text holds; an error names the field only.
fn search_auth_of(text: &str) -> Result<crate::SearchAuth, String> {
    let object: Map<String, Value> = match serde_json::from_str(text) {
        Ok(Value::Object(o)) => o,
        _ => return Err("not a JSON object (expected username and password, or api_key)".into()),
    };
    let field = |name: &str| match object.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        None => Ok(None),
        Some(_) => Err(format!("field {name:?} is not a non-empty string")),
    };
    match (field("api_key")?, field("username")?, field("password")?) {
        (Some(key), None, None) => Ok(crate::SearchAuth::ApiKey(key)),
        (None, Some(user), Some(password)) => Ok(crate::SearchAuth::Basic { user, password }),
        (None, Some(_), None) => Err("field \"password\" is missing".into()),
        _ => Err("expected username and password, or api_key alone".into()),
    }
}

/// A Secrets Manager client over the shared configuration.
pub fn secrets_client(config: &aws_config::SdkConfig) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_secret_holds_basic_credentials_or_an_api_key_and_problems_name_the_field() {
        assert!(matches!(
            search_auth_of(r#"{"username":"u","password":"hunter2"}"#),
            Ok(crate::SearchAuth::Basic { .. })
        ));
        assert!(matches!(
            search_auth_of(r#"{"api_key":"aWQ6a2V5"}"#),
            Ok(crate::SearchAuth::ApiKey(_))
        ));
        for text in [
            r#"{"username":"u"}"#,
            "hunter2",
            r#"{"password":"hunter2"}"#,
            r#"{"api_key":7}"#,
        ] {
            let e = search_auth_of(text).unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn the_rotation_template_shape_is_read_whole() {
        let s = DatabaseSecret::parse(
            r#"{"engine":"postgres","host":"db.example.com","port":"5433","username":"u","password":"p","dbname":"app","sslmode":"verify-ca"}"#,
        )
        .unwrap();
        assert_eq!(s.host.as_deref(), Some("db.example.com"));
        assert_eq!(s.port, Some(5433));
        assert_eq!(s.dbname.as_deref(), Some("app"));
        assert_eq!(s.sslmode.as_deref(), Some("verify-ca"));
    }

    #[test]
    fn problems_name_the_field_and_never_the_value() {
        for (text, expected) in [
            (r#"{"password":"hunter2"}"#, "field \"username\" is missing"),
            (
                r#"{"username":"u","password":7}"#,
                "field \"password\" is not a string",
            ),
            (
                r#"{"username":"u","password":"hunter2","port":"hunter2"}"#,
                "field \"port\" is not a port number",
            ),
            (
                r#"{"username":"u","password":"hunter2","port":70000}"#,
                "field \"port\" is not a port number",
            ),
            (
                "hunter2",
                "not JSON (expected an object with username and password)",
            ),
            (
                r#"["hunter2"]"#,
                "not a JSON object (expected username and password)",
            ),
        ] {
            let e = DatabaseSecret::parse(text).unwrap_err();
            assert_eq!(e, expected);
            assert!(!e.contains("hunter2"));
        }
        let s = DatabaseSecret::parse(r#"{"username":"u","password":"hunter2"}"#).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
