//! Which catalog holds the routes' tables, from the committer's environment, and the one
//! place every catalog is opened: the SQL catalog (PostgreSQL; the local default, read back by
//! pyiceberg's `SqlCatalog`), Amazon S3 Tables (its native API) or the AWS Glue Data Catalog.
//! Data and metadata files go through one S3 storage (opendal) configured from the same AWS
//! settings as the loaders.

use crate::error::TableError;
use iceberg::io::{
    StorageFactory, S3_ACCESS_KEY_ID, S3_ENDPOINT, S3_PATH_STYLE_ACCESS, S3_REGION,
    S3_SECRET_ACCESS_KEY, S3_SESSION_TOKEN,
};
use iceberg::{Catalog, CatalogBuilder};
use iceberg_catalog_glue::{
    GlueCatalogBuilder, GLUE_CATALOG_PROP_CATALOG_ID, GLUE_CATALOG_PROP_WAREHOUSE,
};
use iceberg_catalog_s3tables::{S3TablesCatalogBuilder, S3TABLES_CATALOG_PROP_TABLE_BUCKET_ARN};
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalogBuilder};
use iceberg_storage_opendal::OpenDalStorageFactory;
use std::collections::HashMap;
use std::sync::Arc;

/// The name the SQL catalog's rows carry (`catalog_name` in `iceberg_tables`): pyiceberg's
/// `SqlCatalog` must be opened with the same name to see the tables.
pub const SQL_CATALOG_NAME: &str = "streamload";

/// Where the tables are, as the environment names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogSettings {
    /// `STREAMLOAD_CATALOG=sql`: `STREAMLOAD_CATALOG_URI` (a `postgres://` URL) and
    /// `STREAMLOAD_WAREHOUSE` (`s3://bucket/prefix`, where new tables go).
    Sql { uri: String, warehouse: String },
    /// `STREAMLOAD_CATALOG=s3tables`: `STREAMLOAD_TABLE_BUCKET_ARN`.
    S3Tables { table_bucket_arn: String },
    /// `STREAMLOAD_CATALOG=glue`: `STREAMLOAD_WAREHOUSE` (`s3://bucket/prefix`, where new
    /// tables go) and, optionally, `STREAMLOAD_GLUE_CATALOG_ID` (another account's catalog).
    Glue {
        warehouse: String,
        catalog_id: Option<String>,
    },
}

impl CatalogSettings {
    /// Reads the settings; an error is one line naming the variable.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, TableError> {
        let need = |name: &str| {
            var(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| TableError::Config(format!("{name} is not set")))
        };
        let warehouse = || {
            let warehouse = need("STREAMLOAD_WAREHOUSE")?;
            if !warehouse.starts_with("s3://") {
                return Err(TableError::Config(format!(
                    "STREAMLOAD_WAREHOUSE must be an s3:// location, not {warehouse:?}"
                )));
            }
            Ok(warehouse)
        };
        match var("STREAMLOAD_CATALOG").as_deref() {
            Some("sql") => Ok(CatalogSettings::Sql {
                warehouse: warehouse()?,
                uri: need("STREAMLOAD_CATALOG_URI")?,
            }),
            Some("glue") => Ok(CatalogSettings::Glue {
                warehouse: warehouse()?,
                catalog_id: var("STREAMLOAD_GLUE_CATALOG_ID").filter(|v| !v.trim().is_empty()),
            }),
            Some("s3tables") => Ok(CatalogSettings::S3Tables {
                table_bucket_arn: need("STREAMLOAD_TABLE_BUCKET_ARN")?,
            }),
            Some(other) => Err(TableError::Config(format!(
                "STREAMLOAD_CATALOG {other:?} is not \"sql\", \"s3tables\" or \"glue\""
            ))),
            None => Err(TableError::Config("STREAMLOAD_CATALOG is not set".into())),
        }
    }
}

/// The S3 storage properties from the AWS environment the loaders use: region, credentials
/// (Lambda's role session), and `AWS_ENDPOINT_URL` (moto, LocalStack) with path-style access.
pub fn storage_props(var: impl Fn(&str) -> Option<String>) -> HashMap<String, String> {
    let mut props = HashMap::new();
    let mut set = |key: &str, value: Option<String>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            props.insert(key.to_string(), v);
        }
    };
    set(
        S3_REGION,
        var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")),
    );
    set(S3_ACCESS_KEY_ID, var("AWS_ACCESS_KEY_ID"));
    set(S3_SECRET_ACCESS_KEY, var("AWS_SECRET_ACCESS_KEY"));
    set(S3_SESSION_TOKEN, var("AWS_SESSION_TOKEN"));
    let endpoint = var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL"));
    if endpoint.is_some() {
        set(S3_PATH_STYLE_ACCESS, Some("true".into()));
    }
    set(S3_ENDPOINT, endpoint);
    props
}

fn storage() -> Arc<dyn StorageFactory> {
    Arc::new(OpenDalStorageFactory::S3 {
        customized_credential_load: None,
    })
}

/// Opens the catalog the settings name.
pub async fn connect(
    settings: &CatalogSettings,
    storage_props: HashMap<String, String>,
) -> Result<Arc<dyn Catalog>, TableError> {
    match settings {
        CatalogSettings::Sql { uri, warehouse } => {
            let catalog = SqlCatalogBuilder::default()
                .uri(uri)
                .warehouse_location(warehouse)
                .sql_bind_style(SqlBindStyle::DollarNumeric)
                .props(storage_props)
                .with_storage_factory(storage())
                .load(SQL_CATALOG_NAME, HashMap::new())
                .await
                .map_err(TableError::iceberg("opening the SQL catalog"))?;
            Ok(Arc::new(catalog))
        }
        CatalogSettings::S3Tables { table_bucket_arn } => {
            // The S3 Tables client takes its endpoint from the SDK's own environment
            // (`AWS_ENDPOINT_URL_S3TABLES`, else `AWS_ENDPOINT_URL`), as every AWS client here.
            let builder = S3TablesCatalogBuilder::default()
                .with_table_bucket_arn(table_bucket_arn)
                .with_storage_factory(storage());
            let mut props = storage_props;
            props.insert(
                S3TABLES_CATALOG_PROP_TABLE_BUCKET_ARN.into(),
                table_bucket_arn.clone(),
            );
            let catalog = builder
                .load("s3tables", props)
                .await
                .map_err(TableError::iceberg("opening the S3 Tables catalog"))?;
            Ok(Arc::new(catalog))
        }
        CatalogSettings::Glue {
            warehouse,
            catalog_id,
        } => {
            // The Glue client, like every AWS client here, takes its endpoint from the SDK's
            // environment (`AWS_ENDPOINT_URL_GLUE`, else `AWS_ENDPOINT_URL`). Optimistic
            // concurrency: Glue's `UpdateTable` with the `VersionId` the commit was based on.
            let mut props = storage_props;
            props.insert(GLUE_CATALOG_PROP_WAREHOUSE.into(), warehouse.clone());
            if let Some(id) = catalog_id {
                props.insert(GLUE_CATALOG_PROP_CATALOG_ID.into(), id.clone());
            }
            let catalog = GlueCatalogBuilder::default()
                .with_storage_factory(storage())
                .load("glue", props)
                .await
                .map_err(TableError::iceberg("opening the Glue catalog"))?;
            Ok(Arc::new(catalog))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn each_missing_or_wrong_setting_is_one_line_naming_the_variable() {
        let cases: [(&[(&str, &str)], &str); 5] = [
            (&[], "STREAMLOAD_CATALOG is not set"),
            (
                &[("STREAMLOAD_CATALOG", "hive")],
                "STREAMLOAD_CATALOG \"hive\"",
            ),
            (
                &[("STREAMLOAD_CATALOG", "glue")],
                "STREAMLOAD_WAREHOUSE is not set",
            ),
            (
                &[
                    ("STREAMLOAD_CATALOG", "sql"),
                    ("STREAMLOAD_WAREHOUSE", "s3://w"),
                ],
                "STREAMLOAD_CATALOG_URI is not set",
            ),
            (
                &[
                    ("STREAMLOAD_CATALOG", "sql"),
                    ("STREAMLOAD_WAREHOUSE", "/tmp/w"),
                ],
                "STREAMLOAD_WAREHOUSE must be an s3:// location",
            ),
        ];
        for (vars, expected) in cases {
            let e = CatalogSettings::from_env(env(vars))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(expected), "{e}");
            assert!(!e.contains('\n'));
        }
        assert_eq!(
            CatalogSettings::from_env(env(&[
                ("STREAMLOAD_CATALOG", "s3tables"),
                (
                    "STREAMLOAD_TABLE_BUCKET_ARN",
                    "arn:aws:s3tables:eu-west-1:1:bucket/t"
                )
            ]))
            .unwrap(),
            CatalogSettings::S3Tables {
                table_bucket_arn: "arn:aws:s3tables:eu-west-1:1:bucket/t".into()
            }
        );
    }

    #[test]
    fn an_endpoint_override_turns_on_path_style_access() {
        let props = storage_props(env(&[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5050"),
        ]));
        assert_eq!(props[S3_ENDPOINT], "http://127.0.0.1:5050");
        assert_eq!(props[S3_PATH_STYLE_ACCESS], "true");
        assert_eq!(props[S3_REGION], "eu-west-1");
        assert!(!storage_props(env(&[("AWS_REGION", "x")])).contains_key(S3_PATH_STYLE_ACCESS));
    }
}
