//! One pass over a record's JSON that captures the raw text at every configured JSON Pointer.
//!
//! The route's pointers are compiled once into a trie of object keys (and array indices);
//! a record is then read once by serde_json, descending only into members some pointer
//! names and skipping the rest without building anything. Captured values stay borrowed
//! from the record, so extraction allocates nothing per field.

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

/// A node of the pointer trie.
#[derive(Debug, Default, Clone)]
pub(crate) struct Node {
    /// Member names (or array indices as decimal text) and their nodes.
    children: Vec<(Box<str>, Node)>,
    /// Capture slots wanting the whole value at this node.
    slots: Vec<usize>,
}

impl Node {
    /// Adds the pointer `segments` (already unescaped) for `slot`.
    pub(crate) fn insert(&mut self, segments: &[String], slot: usize) {
        match segments.split_first() {
            None => self.slots.push(slot),
            Some((first, rest)) => {
                let at = match self.children.iter().position(|(k, _)| **k == **first) {
                    Some(at) => at,
                    None => {
                        self.children.push((first.as_str().into(), Node::default()));
                        self.children.len() - 1
                    }
                };
                self.children[at].1.insert(rest, slot);
            }
        }
    }

    fn child(&self, key: &str) -> Option<&Node> {
        self.children
            .iter()
            .find(|(k, _)| k.len() == key.len() && **k == *key)
            .map(|(_, n)| n)
    }
}

/// Splits an RFC 6901 pointer into unescaped segments; `None` if it is not a pointer.
pub(crate) fn parse_pointer(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    let rest = pointer.strip_prefix('/')?;
    rest.split('/')
        .map(|s| {
            // `~1` is `/`, `~0` is `~`; any other `~` is malformed.
            let mut out = String::with_capacity(s.len());
            let mut chars = s.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => return None,
                    }
                } else {
                    out.push(c);
                }
            }
            Some(out)
        })
        .collect()
}

/// Why a record's JSON could not be read for a route.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ExtractError {
    /// Not JSON at all (line and column of the error).
    NotJson(usize, usize),
    /// JSON, but the top level is not an object.
    NotAnObject,
    /// A member a pointer names appears twice.
    Duplicate,
}

/// Fills `captures[slot]` with the raw JSON text at each pointer of `root`, or leaves it
/// `None` where the record has no such member.
pub(crate) fn extract<'de>(
    root: &Node,
    text: &'de str,
    captures: &mut [Option<&'de str>],
) -> Result<(), ExtractError> {
    let trimmed = text.trim_matches([' ', '\t', '\n', '\r']);
    if !trimmed.starts_with('{') {
        // Still JSON? Then it is simply not an object.
        return match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => Err(ExtractError::NotAnObject),
            Err(e) => Err(ExtractError::NotJson(e.line(), e.column())),
        };
    }
    for &slot in &root.slots {
        captures[slot] = Some(trimmed);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let walk = Walk {
        node: root,
        captures,
    };
    let result = walk.deserialize(&mut de).and_then(|()| de.end());
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.to_string().starts_with(DUPLICATE) => Err(ExtractError::Duplicate),
        Err(e) => Err(ExtractError::NotJson(e.line(), e.column())),
    }
}

const DUPLICATE: &str = "streamload: duplicate member";

struct Walk<'n, 'c, 'de> {
    node: &'n Node,
    captures: &'c mut [Option<&'de str>],
}

impl<'de> Walk<'_, '_, 'de> {
    fn capture<E: de::Error>(&mut self, node: &Node, raw: &'de RawValue) -> Result<(), E> {
        for &slot in &node.slots {
            if self.captures[slot].is_some() {
                return Err(E::custom(DUPLICATE));
            }
            self.captures[slot] = Some(raw.get());
        }
        if !node.children.is_empty() {
            // A pointer wants this value whole and another one wants something inside it:
            // read it once more (rare: `/a` and `/a/b` in the same route).
            let mut de = serde_json::Deserializer::from_str(raw.get());
            Walk {
                node,
                captures: self.captures,
            }
            .deserialize(&mut de)
            .map_err(|e| E::custom(e.to_string()))?;
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_, 'de> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<crate::text::JsonStr<'de>>()? {
            match self.node.child(&key) {
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
                Some(child) if child.slots.is_empty() => {
                    map.next_value_seed(Walk {
                        node: child,
                        captures: self.captures,
                    })?;
                }
                Some(child) => {
                    let raw: &'de RawValue = map.next_value()?;
                    self.capture::<A::Error>(child, raw)?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        let mut buf = itoa_buf();
        loop {
            let name = write_index(&mut buf, index);
            let more = match self.node.child(name) {
                None => seq.next_element::<IgnoredAny>()?.is_some(),
                Some(child) if child.slots.is_empty() => seq
                    .next_element_seed(Walk {
                        node: child,
                        captures: self.captures,
                    })?
                    .is_some(),
                Some(child) => match seq.next_element::<&'de RawValue>()? {
                    Some(raw) => {
                        self.capture::<A::Error>(child, raw)?;
                        true
                    }
                    None => false,
                },
            };
            if !more {
                return Ok(());
            }
            index += 1;
        }
    }

    // A scalar where the pointer expected an object or array: the members are absent.
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
}

fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

fn write_index(buf: &mut [u8; 20], mut n: usize) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[at..]).unwrap_or("0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trie(pointers: &[&str]) -> Node {
        let mut root = Node::default();
        for (slot, p) in pointers.iter().enumerate() {
            root.insert(&parse_pointer(p).unwrap(), slot);
        }
        root
    }

    fn run<'a>(pointers: &[&str], text: &'a str) -> Result<Vec<Option<&'a str>>, ExtractError> {
        let root = trie(pointers);
        let mut caps = vec![None; pointers.len()];
        extract(&root, text, &mut caps).map(|()| caps)
    }

    #[test]
    fn pointers_reach_nested_members_and_array_elements() {
        // Given a record with nesting, an array and a member with a slash in its name
        let text = r#"{"a":{"b":[10,{"c":"x"}],"d/e":true},"z":null,"big":[1,2,3]}"#;
        // When six pointers are read in one pass
        let caps = run(
            &["/a/b/0", "/a/b/1/c", "/a/d~1e", "/z", "/missing", ""],
            text,
        )
        .unwrap();
        // Then each has the raw text at its place, and the absent one has none
        assert_eq!(
            caps,
            vec![
                Some("10"),
                Some("\"x\""),
                Some("true"),
                Some("null"),
                None,
                Some(text)
            ]
        );
    }

    #[test]
    fn a_pointer_inside_a_captured_value_is_read_too() {
        let caps = run(&["/a", "/a/b"], r#"{"a":{"b":2}}"#).unwrap();
        assert_eq!(caps, vec![Some(r#"{"b":2}"#), Some("2")]);
    }

    #[test]
    fn bad_documents_are_told_apart() {
        assert_eq!(run(&["/a"], "[1]"), Err(ExtractError::NotAnObject));
        assert!(matches!(
            run(&["/a"], "{\"a\":"),
            Err(ExtractError::NotJson(..))
        ));
        assert!(matches!(
            run(&["/a"], "nope"),
            Err(ExtractError::NotJson(..))
        ));
        assert_eq!(
            run(&["/a"], r#"{"a":1,"a":2}"#),
            Err(ExtractError::Duplicate)
        );
        // A repeated member no pointer names is left alone.
        assert!(run(&["/a"], r#"{"b":1,"b":2,"a":3}"#).is_ok());
        assert!(matches!(
            run(&["/a"], r#"{"a":1} x"#),
            Err(ExtractError::NotJson(..))
        ));
    }

    #[test]
    fn malformed_pointers_are_refused() {
        assert!(parse_pointer("a").is_none());
        assert!(parse_pointer("/a~2").is_none());
        assert_eq!(parse_pointer("/a~0b/~1").unwrap(), vec!["a~b", "/"]);
    }
}
