//! A small, strict JSON reader for the event-source envelopes.
//!
//! A Kinesis event is mostly long base64 strings and fields the loader ignores. serde_json
//! scans strings eight bytes at a time and walks every ignored field through serde's
//! machinery; this reader finds string ends with `memchr` (SIMD) and skips what it does not
//! need in place, which halves the cost of the envelope. It never decides alone: any input it
//! does not fully understand (an error, a duplicate key, a missing field) makes it *decline*,
//! and the caller parses the same text with serde_json, which stays the authority on what is
//! valid and on the error message. Tests hold it to giving serde_json's result or declining.

use crate::text::JsonStr;
use std::borrow::Cow;

/// The fast path declined; parse with serde_json instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Declined;

type Scan<T> = Result<T, Declined>;

/// Deepest nesting skipped; deeper input is left to serde_json (whose own limit is 128).
const MAX_DEPTH: usize = 64;

pub(crate) struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Self { text, at: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The next byte after whitespace, not consumed.
    pub(crate) fn peek(&mut self) -> Option<u8> {
        let b = self.bytes();
        while let Some(c) = b.get(self.at) {
            if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(*c);
            }
            self.at += 1;
        }
        None
    }

    fn eat(&mut self, c: u8) -> Scan<()> {
        if self.peek() == Some(c) {
            self.at += 1;
            Ok(())
        } else {
            Err(Declined)
        }
    }

    /// The input must end here (trailing whitespace allowed).
    pub(crate) fn end(&mut self) -> Scan<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(Declined),
        }
    }

    /// A string: borrowed when it has no escapes, unescaped (by serde_json) when it has.
    pub(crate) fn string(&mut self) -> Scan<JsonStr<'a>> {
        self.eat(b'"')?;
        let b = self.bytes();
        let start = self.at;
        let mut escaped = false;
        loop {
            let found = memchr::memchr2(b'"', b'\\', &b[self.at..]).ok_or(Declined)?;
            let i = self.at + found;
            if b[i] == b'"' {
                self.at = i + 1;
                break;
            }
            escaped = true;
            self.at = i + 2; // the escaped character can be neither end nor escape
            if self.at > b.len() {
                return Err(Declined);
            }
        }
        let end = self.at - 1;
        if escaped {
            let quoted = &self.text[start - 1..self.at];
            let s: String = serde_json::from_str(quoted).map_err(|_| Declined)?;
            return Ok(JsonStr(Cow::Owned(s)));
        }
        let raw = &self.text[start..end];
        // JSON forbids raw control characters inside strings.
        if raw.bytes().any(|c| c < 0x20) {
            return Err(Declined);
        }
        Ok(JsonStr(Cow::Borrowed(raw)))
    }

    /// A string or `null`.
    pub(crate) fn optional_string(&mut self) -> Scan<Option<JsonStr<'a>>> {
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            return Ok(None);
        }
        self.string().map(Some)
    }

    /// A number or `null`, as f64.
    pub(crate) fn optional_f64(&mut self) -> Scan<Option<f64>> {
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            return Ok(None);
        }
        let start = self.at;
        self.number()?;
        self.text[start..self.at]
            .parse()
            .map(Some)
            .map_err(|_| Declined)
    }

    fn literal(&mut self, word: &[u8]) -> Scan<()> {
        if self.bytes()[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            Err(Declined)
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Scan<()> {
        let b = self.bytes();
        let digits = |at: &mut usize| {
            let from = *at;
            while b.get(*at).is_some_and(u8::is_ascii_digit) {
                *at += 1;
            }
            *at - from
        };
        let mut at = self.at;
        if b.get(at) == Some(&b'-') {
            at += 1;
        }
        match b.get(at) {
            Some(b'0') => at += 1,
            Some(b'1'..=b'9') => {
                digits(&mut at);
            }
            _ => return Err(Declined),
        }
        if b.get(at) == Some(&b'.') {
            at += 1;
            if digits(&mut at) == 0 {
                return Err(Declined);
            }
        }
        if matches!(b.get(at), Some(b'e' | b'E')) {
            at += 1;
            if matches!(b.get(at), Some(b'+' | b'-')) {
                at += 1;
            }
            if digits(&mut at) == 0 {
                return Err(Declined);
            }
        }
        self.at = at;
        Ok(())
    }

    /// Any value, checked and passed over.
    pub(crate) fn skip(&mut self) -> Scan<()> {
        self.skip_at(0)
    }

    fn skip_at(&mut self, depth: usize) -> Scan<()> {
        if depth > MAX_DEPTH {
            return Err(Declined);
        }
        match self.peek().ok_or(Declined)? {
            b'"' => self.string().map(drop),
            b'{' => self.object(|s, _| s.skip_at(depth + 1)),
            b'[' => self.array(|s| s.skip_at(depth + 1)),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    /// An object: `field` is called with each key, positioned at its value, and must consume it.
    pub(crate) fn object(
        &mut self,
        mut field: impl FnMut(&mut Self, JsonStr<'a>) -> Scan<()>,
    ) -> Scan<()> {
        self.eat(b'{')?;
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            field(self, key)?;
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(Declined),
            }
        }
    }

    /// An array: `item` is called positioned at each element and must consume it.
    pub(crate) fn array(&mut self, mut item: impl FnMut(&mut Self) -> Scan<()>) -> Scan<()> {
        self.eat(b'[')?;
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(Declined),
            }
        }
    }
}

/// Sets `slot` once; a second value for the same key declines (serde rejects duplicates).
pub(crate) fn once<T>(slot: &mut Option<T>, value: T) -> Scan<()> {
    if slot.is_some() {
        return Err(Declined);
    }
    *slot = Some(value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Skips one whole document, or declines.
    fn skim(text: &str) -> Scan<()> {
        let mut s = Scanner::new(text);
        s.skip()?;
        s.end()
    }

    #[test]
    fn accepts_what_json_accepts() {
        for ok in [
            r#"{"a":[1,-2.5e+3,0,0.1,true,false,null,"x\"y\\z\u00e9\/"],"b":{},"c":[]}"#,
            " \n\t{ \"k\" : [ { } , [ ] ] } \r\n",
            r#""plain""#,
            "-0",
            "1E9",
        ] {
            assert_eq!(skim(ok), Ok(()), "{ok}");
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(ok).is_ok(),
                "{ok}"
            );
        }
    }

    #[test]
    fn declines_what_json_rejects() {
        for bad in [
            "01",
            "1.",
            "-",
            "1e",
            "+1",
            ".5",
            r#"{"a":1,}"#,
            "[1,]",
            r#"{"a" 1}"#,
            r#"{"a":1"#,
            r#""unterminated"#,
            "\"tab\tinside\"",
            r#""bad \q escape""#,
            "tru",
            "nul",
            "{} {}",
            "[1] x",
            "",
        ] {
            assert_eq!(skim(bad), Err(Declined), "{bad:?}");
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(bad).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn strings_borrow_unless_escaped() {
        let mut s = Scanner::new(r#""abc""#);
        assert!(matches!(s.string(), Ok(JsonStr(Cow::Borrowed("abc")))));
        let mut s = Scanner::new(r#""a\/b\u0041""#);
        assert_eq!(s.string().unwrap().0, "a/bA");
    }

    #[test]
    fn nesting_beyond_the_limit_declines() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 2), "]".repeat(MAX_DEPTH + 2));
        assert_eq!(skim(&deep), Err(Declined));
        let fine = format!("{}{}", "[".repeat(10), "]".repeat(10));
        assert_eq!(skim(&fine), Ok(()));
    }
}
