//! Text that shares the batch's decoded bytes instead of copying them.
//!
//! A batch decodes every record into one buffer; the fields of a valid event are, in the
//! common case (no JSON escapes), slices of that buffer. Holding them as [`Text`] costs a
//! reference count instead of an allocation and a copy per field, which is most of what
//! validating 10,000 records used to spend.

use bytes::Bytes;
use serde::de::{self, Deserialize, Deserializer, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

/// Immutable UTF-8 text backed by [`Bytes`]: cheap to clone, derefs to `str`.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Text(Bytes);

impl Text {
    /// `part` as a view of `owner` when it lies inside it (no copy), else a copy of `part`.
    pub fn within(owner: &Bytes, part: &str) -> Self {
        let start = (part.as_ptr() as usize).wrapping_sub(owner.as_ptr() as usize);
        if start <= owner.len() && part.len() <= owner.len() - start {
            Self(owner.slice(start..start + part.len()))
        } else {
            Self::from(part)
        }
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor takes its bytes from a `&str` or a `String` (in `within`,
        // the slice of `owner` is exactly the bytes of `part`), so they are valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The underlying bytes, shared.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A JSON string borrowed from the input when it holds no escapes, owned otherwise.
///
/// serde borrows a `Cow<str>` field only when it is exactly `Cow<str>`; inside an `Option`
/// it always allocates. This wrapper borrows in both places.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonStr<'a>(pub Cow<'a, str>);

impl<'a> Deref for JsonStr<'a> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JsonStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for JsonStr<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Visit<'a> {
            type Value = JsonStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(Visit(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_borrow_unless_escaped_even_inside_an_option() {
        // Given an object with a plain and an escaped string
        let json = r#"{"plain":"abc","escaped":"a\"b"}"#;
        // When both are read as optional JsonStr
        #[derive(serde::Deserialize)]
        struct Two<'a> {
            #[serde(borrow)]
            plain: Option<JsonStr<'a>>,
            #[serde(borrow)]
            escaped: Option<JsonStr<'a>>,
        }
        let two: Two<'_> = serde_json::from_str(json).unwrap();
        // Then the plain one points into the input and the escaped one is unescaped
        assert!(matches!(two.plain, Some(JsonStr(Cow::Borrowed("abc")))));
        assert_eq!(&*two.escaped.unwrap(), "a\"b");
    }

    #[test]
    fn a_part_of_the_owner_is_shared_not_copied() {
        // Given a buffer and a str inside it
        let owner = Bytes::from_static("{\"id\":\"héllo\"}".as_bytes());
        let inner = std::str::from_utf8(&owner[7..13]).unwrap();
        // When it becomes Text
        let t = Text::within(&owner, inner);
        // Then it points into the buffer and reads the same
        assert_eq!(t.as_str(), "héllo");
        assert_eq!(t.bytes().as_ptr(), owner[7..].as_ptr());
    }

    #[test]
    fn a_str_from_elsewhere_is_copied() {
        let owner = Bytes::from_static(b"abcdef");
        let other = String::from("xyz");
        let t = Text::within(&owner, &other);
        assert_eq!(t, "xyz");
        assert_ne!(t.bytes().as_ptr(), other.as_ptr());
        // An empty str at the very end of the owner is inside it too.
        let end = std::str::from_utf8(&owner[6..]).unwrap();
        assert_eq!(
            Text::within(&owner, end).bytes().as_ptr(),
            owner[6..].as_ptr()
        );
    }
}
