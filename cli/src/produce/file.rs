//! `streamload produce --file`: records taken as they are from a JSON-lines file — a
//! connector's key/value pairs, say — instead of generated ones. Each line is
//! `{"key": <JSON>, "value": <JSON or null>}`; the key's JSON text is the record's key (and
//! decides its partition), the value's JSON text its value, and a `null` value a tombstone.

use super::Outgoing;

/// The records of `text`, in file order; an error names the line.
///
/// ```
/// let records = streamload_cli::produce::records_of_file(
///     "{\"key\":{\"id\":1},\"value\":{\"op\":\"d\"}}\n\n{\"key\":{\"id\":1},\"value\":null}\n",
/// ).unwrap();
/// assert_eq!(records.len(), 2);
/// assert_eq!(records[0].key, r#"{"id":1}"#);
/// assert!(records[1].bytes.is_empty(), "a tombstone");
/// ```
pub fn records_of_file(text: &str) -> Result<Vec<Outgoing>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |why: &str| format!("line {}: {why}", n + 1);
        let doc: serde_json::Value =
            serde_json::from_str(line).map_err(|e| at(&format!("not JSON ({e})")))?;
        let key = doc
            .get("key")
            .filter(|k| !k.is_null())
            .ok_or_else(|| at("no \"key\""))?;
        let value = doc
            .get("value")
            .ok_or_else(|| at("no \"value\" (null for a tombstone)"))?;
        out.push(Outgoing {
            key: key.to_string(),
            bytes: if value.is_null() {
                Vec::new()
            } else {
                value.to_string().into_bytes()
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_without_key_or_value_is_refused_naming_it() {
        assert_eq!(
            records_of_file("{\"key\":1,\"value\":2}\n{\"value\":2}").unwrap_err(),
            "line 2: no \"key\""
        );
        assert!(records_of_file("{\"key\":1}")
            .unwrap_err()
            .starts_with("line 1: no \"value\""));
        assert!(records_of_file("nope")
            .unwrap_err()
            .starts_with("line 1: not JSON"));
    }
}
