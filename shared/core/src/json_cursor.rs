//! A strict JSON cursor for the plain shape of event-source envelopes.
//!
//! Most of a Kinesis envelope is base64 `data`. serde_json scans every string eight bytes at
//! a time for quotes, backslashes and control characters; this cursor finds a string's end
//! with `memchr` (SIMD) and lets the base64 decoder, which accepts nothing but the base64
//! alphabet, be the check of the bytes in between.
//!
//! It accepts only a plain subset of JSON: no escape sequences in any string, nesting no
//! deeper than [`MAX_DEPTH`]. On anything else — outside the subset or not JSON at all — it
//! gives up with [`Bail`], and the caller parses the same text again with serde_json, which
//! stays the authority on every unusual input (errors included). So the cursor only has to be
//! right on what it accepts: it never accepts text serde_json rejects, and it reads what it
//! accepts exactly as serde_json does. The differential tests in `kinesis` and `kafka` hold
//! it to that.

use std::ops::Range;

/// The text is outside the plain subset (or is not JSON): parse it with serde_json instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bail;

/// Deepest nesting of skipped values; deeper text goes to serde_json (whose own limit is 128).
pub(crate) const MAX_DEPTH: usize = 64;

pub(crate) struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes().get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    pub(crate) fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.bytes().get(self.pos).copied()
    }

    /// Consumes `byte` (after whitespace) if it is next.
    pub(crate) fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), Bail> {
        self.eat(byte).then_some(()).ok_or(Bail)
    }

    /// Only whitespace is left.
    pub(crate) fn end(&mut self) -> Result<(), Bail> {
        self.skip_whitespace();
        (self.pos == self.text.len()).then_some(()).ok_or(Bail)
    }

    /// A string's content, found with `memchr`, without looking at the bytes in between: the
    /// caller must accept them only after a check of its own that rejects control characters
    /// (base64 decoding is one), or call [`Self::string`]. Bails on an escape sequence.
    pub(crate) fn string_unchecked(&mut self) -> Result<&'a str, Bail> {
        self.expect(b'"')?;
        let start = self.pos;
        let len = memchr::memchr2(b'"', b'\\', &self.bytes()[start..]).ok_or(Bail)?;
        let end = start + len;
        if self.bytes()[end] != b'"' {
            return Err(Bail);
        }
        self.pos = end + 1;
        // Both ends are ASCII quotes, so they are character boundaries.
        Ok(&self.text[start..end])
    }

    /// A string without escape sequences, as JSON allows it: no control characters.
    pub(crate) fn string(&mut self) -> Result<&'a str, Bail> {
        let s = self.string_unchecked()?;
        if has_control_character(s.as_bytes()) {
            return Err(Bail);
        }
        Ok(s)
    }

    /// `null`, consumed if it is next.
    pub(crate) fn null(&mut self) -> bool {
        self.literal(b"null").is_ok()
    }

    /// `word` (`true`, `false`, `null`), consumed if it is next.
    fn literal(&mut self, word: &[u8]) -> Result<(), Bail> {
        self.peek();
        if self.bytes()[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Bail)
        }
    }

    /// A number's text, held to JSON's grammar: `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`.
    pub(crate) fn number(&mut self) -> Result<&'a str, Bail> {
        self.skip_whitespace();
        let start = self.pos;
        let b = self.bytes();
        let digits = |mut i: usize| {
            let from = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            (i > from).then_some(i).ok_or(Bail)
        };
        let mut i = start + usize::from(b.get(start) == Some(&b'-'));
        i = match b.get(i) {
            Some(b'0') => i + 1,
            Some(b'1'..=b'9') => digits(i)?,
            _ => return Err(Bail),
        };
        if b.get(i) == Some(&b'.') {
            i = digits(i + 1)?;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            i = digits(i)?;
        }
        self.pos = i;
        Ok(&self.text[start..i])
    }

    /// An object, calling `field` with each key and the cursor at its value; `field` must
    /// consume the value.
    pub(crate) fn object(
        &mut self,
        mut field: impl FnMut(&mut Self, &'a str) -> Result<(), Bail>,
    ) -> Result<(), Bail> {
        self.expect(b'{')?;
        if self.eat(b'}') {
            return Ok(());
        }
        loop {
            let key = self.string()?;
            self.expect(b':')?;
            field(self, key)?;
            if !self.eat(b',') {
                return self.expect(b'}');
            }
        }
    }

    /// An array, calling `element` with the cursor at each element; `element` must consume it.
    pub(crate) fn array(
        &mut self,
        mut element: impl FnMut(&mut Self) -> Result<(), Bail>,
    ) -> Result<(), Bail> {
        self.expect(b'[')?;
        if self.eat(b']') {
            return Ok(());
        }
        loop {
            element(self)?;
            if !self.eat(b',') {
                return self.expect(b']');
            }
        }
    }

    /// Any value, checked and skipped.
    pub(crate) fn skip_value(&mut self) -> Result<(), Bail> {
        self.skip_nested(0)
    }

    fn skip_nested(&mut self, depth: usize) -> Result<(), Bail> {
        if depth >= MAX_DEPTH {
            return Err(Bail);
        }
        match self.peek().ok_or(Bail)? {
            b'{' => self.object(|c, _| c.skip_nested(depth + 1)),
            b'[' => self.array(|c| c.skip_nested(depth + 1)),
            b'"' => self.string().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number().map(drop),
        }
    }
}

/// A string or `null`.
pub(crate) fn optional_string<'a>(c: &mut Cursor<'a>) -> Result<Option<&'a str>, Bail> {
    if c.null() {
        Ok(None)
    } else {
        c.string().map(Some)
    }
}

/// An integer as serde_json reads one into `T`: digits only and within `T`'s range. serde_json
/// reads a fraction, an exponent or `-0` as a float, which no integer field accepts; Rust's
/// integer parsing refuses the first two, `-0` is refused here.
pub(crate) fn integer<T: std::str::FromStr>(c: &mut Cursor<'_>) -> Result<T, Bail> {
    let text = c.number()?;
    if text == "-0" {
        return Err(Bail);
    }
    text.parse().map_err(|_| Bail)
}

/// A base64 string decoded into `arena` (the span of its bytes); text that is not base64 is
/// kept as it is, after the check JSON requires of it. The base64 decoder itself admits no
/// control character, so the common case looks at each byte once.
pub(crate) fn base64_into(c: &mut Cursor<'_>, arena: &mut Vec<u8>) -> Result<Range<usize>, Bail> {
    let text = c.string_unchecked()?;
    let (span, decoded) = crate::record::decode_base64_or_keep(arena, text);
    if !decoded && has_control_character(text.as_bytes()) {
        return Err(Bail);
    }
    Ok(span)
}

/// Records a field's value; a second occurrence is left to serde_json (a derived struct
/// rejects it, a map keeps the last).
pub(crate) fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), Bail> {
    match slot.replace(value) {
        None => Ok(()),
        Some(_) => Err(Bail),
    }
}

/// Whether `bytes` holds a byte below 0x20, which JSON strings may not contain unescaped.
/// Written without an early exit so that it compiles to SIMD.
pub(crate) fn has_control_character(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |found, &b| found | (b < 0x20))
}

/// Deterministic variety for the differential tests of the sources' plain readings.
#[cfg(test)]
pub(crate) mod testing {
    /// xorshift64: deterministic variety without a dependency.
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        pub(crate) fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }

        /// The first of `items` (the usual value) seven times in eight, else any of them:
        /// most records stay plain, so a single odd field decides whether the cursor bails.
        pub(crate) fn mostly<'a>(&mut self, items: &[&'a str]) -> &'a str {
            if self.below(8) == 0 {
                self.pick(items)
            } else {
                items[0]
            }
        }

        /// Whitespace as JSON allows it between tokens, usually none.
        pub(crate) fn whitespace(&mut self) -> &'static str {
            self.pick(&["", "", "", " ", "\n  ", "\t", "\r\n"])
        }
    }

    pub(crate) fn shuffle(rng: &mut Rng, mut items: Vec<String>) -> Vec<String> {
        for i in (1..items.len()).rev() {
            items.swap(i, rng.below(i + 1));
        }
        items
    }

    /// Takes both readings of `n` generated events through `agrees` (which asserts they are
    /// equal where the cursor accepts, and returns whether it did) and returns how many were
    /// accepted while holding a record (text with `"<record_field>"`) and how many bailed.
    pub(crate) fn differential_run(
        seed: u64,
        n: usize,
        record_field: &str,
        mut generate: impl FnMut(&mut Rng) -> String,
        agrees: impl Fn(&str) -> bool,
    ) -> (usize, usize) {
        let mut rng = Rng(seed);
        let field = format!("\"{record_field}\"");
        let (mut accepted_with_records, mut bailed) = (0, 0);
        for _ in 0..n {
            let event = generate(&mut rng);
            if agrees(&event) {
                accepted_with_records += usize::from(event.contains(&field));
            } else {
                bailed += 1;
            }
        }
        (accepted_with_records, bailed)
    }

    /// ASCII `text` damaged one byte at a time: each byte dropped, replaced and preceded by
    /// each character JSON could notice.
    pub(crate) fn damaged(text: &str) -> Vec<String> {
        let swaps = [
            '"', '\\', ',', ':', '{', '}', '[', ']', '0', '-', '.', 'e', ' ', '\u{1}', 'n',
        ];
        let mut out = Vec::new();
        for at in 0..text.len() {
            let (head, tail) = text.split_at(at);
            out.push(format!("{head}{}", &tail[1..]));
            out.extend(swaps.iter().map(|c| format!("{head}{c}{}", &tail[1..])));
            out.extend(swaps.iter().map(|c| format!("{head}{c}{tail}")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the cursor accepts `text` as one value followed by nothing but whitespace.
    fn accepts(text: &str) -> bool {
        let mut c = Cursor::new(text);
        c.skip_value().and_then(|()| c.end()).is_ok()
    }

    #[test]
    fn accepts_plain_json() {
        for text in [
            r#"{"a":[1,-0.5,2e10,3E-2,0,true,false,null,"x"],"b":{}}"#,
            " [ ] ",
            "\"caf\u{e9}\"",
            "-0",
            "12.5e+3",
        ] {
            assert!(accepts(text), "{text}");
            assert!(serde_json::from_str::<serde_json::Value>(text).is_ok());
        }
    }

    #[test]
    fn bails_on_what_is_not_json_or_not_plain() {
        for text in [
            "",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "+1",
            "tru",
            "nul",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{a:1}",
            "[1 2]",
            "\"unterminated",
            "\"tab\tinside\"",
            r#""escaped \" quote""#,
            r#""\u00e9""#,
            "[1]x",
            "NaN",
        ] {
            assert!(!accepts(text), "{text:?}");
        }
    }

    #[test]
    fn nesting_deeper_than_the_limit_goes_to_serde_json() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(!accepts(&deep));
        let shallow = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(accepts(&shallow));
    }

    #[test]
    fn control_characters_are_found_anywhere() {
        assert!(!has_control_character(
            b"plain text, 40 bytes long, no controls!"
        ));
        for at in 0..40 {
            let mut text = *b"plain text, 40 bytes long, no controls!!";
            text[at] = 0x1f;
            assert!(has_control_character(&text), "{at}");
        }
    }
}
