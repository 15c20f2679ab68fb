//! The database credentials secret (`DATABASE_SECRET_ARN`): the JSON shape RDS and Secrets
//! Manager rotation use — host, port, username, password, dbname.

use crate::error::AwsError;
use serde::Deserialize;

#[derive(Deserialize)]
pub struct DatabaseSecret {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub username: String,
    pub password: String,
    #[serde(default = "default_db")]
    pub dbname: String,
}

fn default_port() -> u16 {
    5432
}

fn default_db() -> String {
    "postgres".into()
}

impl std::fmt::Debug for DatabaseSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSecret")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("dbname", &self.dbname)
            .finish()
    }
}

/// Fetches and parses the secret. Errors never include the secret's text.
pub async fn database_secret(
    config: &aws_config::SdkConfig,
    arn: &str,
) -> Result<DatabaseSecret, AwsError> {
    let client = aws_sdk_secretsmanager::Client::new(config);
    let err = |message: String| AwsError::Secret {
        arn: arn.to_owned(),
        message,
    };
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| err(crate::classify_sdk_error("secretsmanager GetSecretValue", &e).message))?;
    let text = out
        .secret_string()
        .ok_or_else(|| err("secret has no string value".into()))?;
    serde_json::from_str(text).map_err(|e| {
        err(format!(
            "not the expected JSON (host, port, username, password, dbname): {}",
            e.classify_name()
        ))
    })
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "missing or mistyped field",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}
