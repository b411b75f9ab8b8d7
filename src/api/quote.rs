//! Quoting what a client sent, within bounds.
//!
//! A 422 names the fields it rejects and often quotes the rejected value. A
//! body may be 16 MiB and a query string tens of KB, so an answer that echoed
//! them whole could be larger than the request. Every quote (a value in a
//! message, a key in a path) is therefore cut to [`QUOTE_CHARS_MAX`]
//! characters, and every path and message as a whole to [`PATH_CHARS_MAX`]
//! and [`MESSAGE_CHARS_MAX`]; what was cut ends with [`CUT_MARK`].

use serde_json::Value;
use std::io;

/// Longest quote of one value or key, in characters (then [`CUT_MARK`]).
pub const QUOTE_CHARS_MAX: usize = 200;
/// Longest `path` of a `validationErrors` entry, in characters (then
/// [`CUT_MARK`]): room for a cut key and the indices and field names
/// around it.
pub const PATH_CHARS_MAX: usize = 300;
/// Longest `message` of a `validationErrors` entry, in characters (then
/// [`CUT_MARK`]): a cut quote and the words around it, or a schema's list of
/// allowed values.
pub const MESSAGE_CHARS_MAX: usize = 400;
/// Ends a text that was cut.
pub const CUT_MARK: &str = "…";

/// Bytes of JSON text enough to hold one character more than a quote keeps,
/// whatever the characters: an escaped one (`\u001f`) takes six.
const QUOTE_BYTES_MAX: usize = 6 * (QUOTE_CHARS_MAX + 1);

/// `text`, or its first `chars_max` characters followed by [`CUT_MARK`].
pub fn cut(mut text: String, chars_max: usize) -> String {
    if let Some((end, _)) = text.char_indices().nth(chars_max) {
        text.truncate(end);
        text.push_str(CUT_MARK);
    }
    text
}

/// `text` as [`cut`] would return it, without copying more than is kept.
pub fn cut_str(text: &str, chars_max: usize) -> String {
    match text.char_indices().nth(chars_max) {
        Some((end, _)) => format!("{}{CUT_MARK}", &text[..end]),
        None => text.to_owned(),
    }
}

/// `value` as compact JSON (as `Value`'s `Display` writes it, which is how
/// schema messages quote a value), cut to [`QUOTE_CHARS_MAX`] characters.
/// Only the part that is kept is written, so quoting a 16 MiB value costs
/// what quoting a small one does.
pub fn value(value: &Value) -> String {
    let mut out = Bounded {
        bytes: Vec::new(),
        bytes_max: QUOTE_BYTES_MAX,
    };
    // The only error is the bound being reached; the text so far is kept.
    let _ = serde_json::to_writer(&mut out, value);
    let text = match String::from_utf8(out.bytes) {
        Ok(text) => text,
        // Cut inside a character: keep the whole characters before it.
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let mut bytes = e.into_bytes();
            bytes.truncate(valid);
            String::from_utf8(bytes).unwrap_or_default()
        }
    };
    cut(text, QUOTE_CHARS_MAX)
}

/// A writer that keeps at most `bytes_max` bytes and then refuses more.
struct Bounded {
    /// What was written, up to the bound.
    bytes: Vec<u8>,
    /// The bound: writing past it fails, which stops the serializer.
    bytes_max: usize,
}

impl io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.bytes_max - self.bytes.len();
        if room == 0 {
            return Err(io::Error::other("quote bound reached"));
        }
        let taken = buf.len().min(room);
        self.bytes.extend_from_slice(&buf[..taken]);
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn short_values_are_quoted_as_displayed() {
        for v in [
            json!(null),
            json!("a\"b\n"),
            json!({"b": [1, 2.5, -0.0], "a": "é"}),
            json!("x".repeat(QUOTE_CHARS_MAX - 2)),
        ] {
            assert_eq!(value(&v), v.to_string());
        }
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        for unit in ["x", "é", "😀", "\u{1}"] {
            let v = json!(unit.repeat(10_000));
            let quoted = value(&v);
            let shown: String = v.to_string().chars().take(QUOTE_CHARS_MAX).collect();
            assert_eq!(quoted, format!("{shown}{CUT_MARK}"), "{unit}");
            assert_eq!(quoted.chars().count(), QUOTE_CHARS_MAX + 1);
        }
        let exact = json!("x".repeat(QUOTE_CHARS_MAX - 2));
        assert!(!value(&exact).ends_with(CUT_MARK));
        let over = json!("x".repeat(QUOTE_CHARS_MAX - 1));
        assert!(value(&over).ends_with(CUT_MARK));
    }

    #[test]
    fn cut_keeps_short_text_and_marks_long_text() {
        assert_eq!(cut("abc".to_owned(), 3), "abc");
        assert_eq!(cut("abcd".to_owned(), 3), format!("abc{CUT_MARK}"));
        assert_eq!(cut_str("ééé", 2), format!("éé{CUT_MARK}"));
        assert_eq!(cut_str("", 0), "");
    }
}
