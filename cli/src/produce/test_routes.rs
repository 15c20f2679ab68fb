//! Routes and helpers the tests of `produce` share: a route with a column of each type.

use super::{Outgoing, RouteShape, ShapeOptions};
use crate::CliError;

/// A route of one column of each type (and options), keyed by `key_type`.
pub(super) fn sensor_route(key_type: &str, newest: Option<(&str, &str)>) -> String {
    let mut t = format!(
        r#"
[[route]]
name = "sensors"
source = "kinesis:sensors"
table = "sensors"
event_time = "/ts"
key = ["device"]
{merge}
[[route.column]]
name = "device"
from = "/device"
type = "{key_type}"
required = true
[[route.column]]
name = "humidity"
from = "/reading/humidity"
type = "numeric"
precision = 5
scale = 2
[[route.column]]
name = "count"
from = "/count"
type = "integer"
[[route.column]]
name = "total"
from = "/total"
type = "bigint"
[[route.column]]
name = "temp"
from = "/temp"
type = "double"
[[route.column]]
name = "ts"
from = "/ts"
type = "timestamptz"
unit = "ms"
required = true
[[route.column]]
name = "seen"
from = "/seen"
type = "timestamptz"
[[route.column]]
name = "day"
from = "/day"
type = "date"
[[route.column]]
name = "batch"
from = "/batch"
type = "uuid"
[[route.column]]
name = "ok"
from = "/ok"
type = "boolean"
[[route.column]]
name = "extra"
from = "/extra"
type = "jsonb"
[[route.column]]
name = "note"
from = "/note"
type = "text"
[[route.column]]
name = "pk"
from = "@partition_key"
type = "text"
"#,
        merge = newest.map_or(String::new(), |(c, _)| format!(
            "merge = {{ newest_by = \"{c}\" }}"
        )),
    );
    if let Some((c, ty)) = newest {
        t.push_str(&format!(
            "[[route.column]]\nname = \"{c}\"\nfrom = \"/{c}\"\ntype = \"{ty}\"\nrequired = true\n"
        ));
        if ty == "numeric" {
            t.push_str("precision = 5\nscale = 2\n");
        }
    }
    t
}

pub(super) fn shape(
    text: &str,
    name: &str,
    keys: u64,
    sets: &[&str],
) -> Result<RouteShape, CliError> {
    RouteShape::from_toml(
        text,
        name,
        &ShapeOptions {
            keys,
            events: 10_000,
            sets: sets.iter().map(|s| s.to_string()).collect(),
            ..ShapeOptions::default()
        },
    )
}

pub(super) fn doc(rec: &Outgoing) -> serde_json::Value {
    serde_json::from_slice(&rec.bytes).unwrap()
}
