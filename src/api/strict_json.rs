//! JSON as the API accepts it: well-formed, and no object with a key twice.
//!
//! JSON leaves a repeated key to the reader, and serde_json keeps the last
//! one, so `{"metadata": {"tier": "gold", "tier": "free"}}` would be read
//! here as something another reader of the same body (a proxy, an audit
//! log) may read otherwise. Every body is refused instead (400), wherever
//! the repeat is — top level, `metadata`, `data`, a batch item — with the
//! JSONPath of the key. Keys are compared unescaped: `"a"` and `"\u0061"`
//! are the same key.
//!
//! Both readers walk a document once, as parsing it into a `Value` walks it
//! (every number converted, every string unescaped, the same depth limit),
//! so they refuse malformed JSON with the same errors at the same places:
//! [`check`] builds nothing (for routes that split a body themselves),
//! [`parse`] builds the `Value`. To find a repeat, the keys of each open
//! object are kept: all in one buffer, an object's cut off when it closes,
//! each object with a hash table of where its keys are. Memory is therefore
//! bounded by the keys of the open objects (at most the body, which is at
//! most 16 MiB), plus a table entry per key.

use super::quote::{self, PATH_CHARS_MAX};
use super::validate::push_key;
use hashbrown::HashTable;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;
use std::hash::{BuildHasher, RandomState};

/// Why a body is not JSON the API accepts.
#[derive(Debug, thiserror::Error)]
pub enum JsonRefusal {
    /// Not JSON: a syntax error, a number out of range, nesting deeper than
    /// serde_json's limit (128), a bad escape.
    #[error("not JSON: {0}")]
    Malformed(serde_json::Error),
    /// An object has a key twice.
    #[error("the key {path} is given twice (line {line}, column {column})")]
    DuplicateKey {
        /// JSONPath of the second occurrence (`$.metadata.colour`), cut to
        /// [`PATH_CHARS_MAX`] characters.
        path: String,
        /// Line of the body where that occurrence ends (from 1).
        line: usize,
        /// Column of the body where that occurrence ends (from 1).
        column: usize,
    },
}

/// Checks that `bytes` is one JSON document without a repeated key,
/// building nothing.
pub fn check(bytes: &[u8]) -> Result<(), JsonRefusal> {
    with_keys(|keys| {
        let mut reader = serde_json::Deserializer::from_slice(bytes);
        let outcome = Check(&mut *keys)
            .deserialize(&mut reader)
            .and_then(|()| reader.end());
        outcome.map_err(|e| keys.refusal(e))
    })
}

/// Parses `bytes`, one JSON document without a repeated key, into a `Value`.
pub fn parse(bytes: &[u8]) -> Result<Value, JsonRefusal> {
    with_keys(|keys| {
        let mut reader = serde_json::Deserializer::from_slice(bytes);
        let outcome = Tree(&mut *keys)
            .deserialize(&mut reader)
            .and_then(|value| reader.end().map(|()| value));
        outcome.map_err(|e| keys.refusal(e))
    })
}

/// Key text a thread's [`Keys`] keeps between walks; more is freed after a
/// walk, so that one huge body does not pin its memory on the worker.
const KEPT_TEXT_BYTES_MAX: usize = 64 << 10;

/// Hash tables of closed objects a thread's [`Keys`] keeps for reuse.
const SPARE_TABLES_MAX: usize = 16;

/// Entries of a hash table kept for reuse, at most.
const SPARE_TABLE_ENTRIES_MAX: usize = 256;

thread_local! {
    /// Each worker thread walks with one [`Keys`], its buffers reused from
    /// body to body: a small body allocates nothing for its key checks.
    static KEYS: std::cell::RefCell<Keys> = std::cell::RefCell::new(Keys::new());
}

/// Runs a walk with this thread's [`Keys`], emptied and seeded anew (a
/// fresh one should the thread's be in use).
fn with_keys<T>(walk: impl FnOnce(&mut Keys) -> T) -> T {
    KEYS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut keys) => {
            keys.reset();
            let outcome = walk(&mut keys);
            keys.reset();
            outcome
        }
        Err(_) => walk(&mut Keys::new()),
    })
}

/// Where a key is in [`Keys::text`].
#[derive(Clone, Copy)]
struct Span {
    /// Offset of its first byte.
    start: usize,
    /// Offset after its last byte.
    end: usize,
}

/// One step of the way from the root to the value being read.
enum Step {
    /// The value of the key at this span.
    Key(Span),
    /// The item at this index.
    Index(usize),
}

/// The keys of one open object.
struct Object {
    /// Where its keys start in [`Keys::text`]; the text is cut back to here
    /// when the object closes.
    start: usize,
    /// Its keys so far, hashed by their text.
    seen: HashTable<Span>,
}

/// What a walk remembers: the keys of every open object and the way to the
/// value being read.
struct Keys {
    /// The unescaped keys of the open objects, outermost object first.
    text: String,
    /// The open objects, outermost first; at most serde_json's depth limit.
    objects: Vec<Object>,
    /// The way from the root to the value being read, for the path of a
    /// repeated key.
    path: Vec<Step>,
    /// Hashes keys; seeded per walk, so that no body can be built to make
    /// its keys collide.
    hasher: RandomState,
    /// The path of the repeated key, once one is found: the walk then fails.
    duplicate: Option<String>,
    /// Emptied hash tables of closed objects, reused by the next ones.
    spare_tables: Vec<HashTable<Span>>,
}

/// The error a visitor returns to stop the walk at a repeated key; the
/// refusal is built from [`Keys::duplicate`], not from this text.
const DUPLICATE: &str = "duplicate key";

impl Keys {
    /// Nothing read yet.
    fn new() -> Self {
        Self {
            text: String::new(),
            objects: Vec::new(),
            path: Vec::new(),
            hasher: RandomState::new(),
            duplicate: None,
            spare_tables: Vec::new(),
        }
    }

    /// Ready for a new walk: nothing read, a new hash seed, buffers kept up
    /// to their bounds.
    fn reset(&mut self) {
        while !self.objects.is_empty() {
            self.close_object();
        }
        self.text.clear();
        if self.text.capacity() > KEPT_TEXT_BYTES_MAX {
            self.text = String::new();
        }
        self.path.clear();
        if self.path.capacity() > PATH_CHARS_MAX {
            self.path = Vec::new();
        }
        self.hasher = RandomState::new();
        self.duplicate = None;
    }

    /// What a failed walk answers: the repeated key if one stopped it.
    fn refusal(&mut self, error: serde_json::Error) -> JsonRefusal {
        match self.duplicate.take() {
            Some(path) => JsonRefusal::DuplicateKey {
                path,
                line: error.line(),
                column: error.column(),
            },
            None => JsonRefusal::Malformed(error),
        }
    }

    /// Enters an object: its keys are collected from here.
    fn open_object(&mut self) {
        self.objects.push(Object {
            start: self.text.len(),
            seen: self.spare_tables.pop().unwrap_or_default(),
        });
    }

    /// Leaves the innermost object, forgetting its keys.
    fn close_object(&mut self) {
        let object = self.objects.pop();
        debug_assert!(object.is_some(), "an object closes after it opens");
        if let Some(mut object) = object {
            self.text.truncate(object.start);
            object.seen.clear();
            if self.spare_tables.len() < SPARE_TABLES_MAX
                && object.seen.capacity() <= SPARE_TABLE_ENTRIES_MAX
            {
                self.spare_tables.push(object.seen);
            }
        }
    }

    /// Enters the value of `key` of the innermost open object; `Err` (with
    /// [`duplicate`](Self::duplicate) set) when the object has it already.
    fn key(&mut self, key: &str) -> Result<(), ()> {
        let start = self.text.len();
        self.text.push_str(key);
        let span = Span {
            start,
            end: self.text.len(),
        };
        self.path.push(Step::Key(span));
        let Keys {
            text,
            objects,
            hasher,
            ..
        } = self;
        let Some(object) = objects.last_mut() else {
            debug_assert!(false, "a key is read inside an object");
            return Ok(());
        };
        let of = |s: &Span| &text[s.start..s.end];
        let hash = hasher.hash_one(key);
        if object.seen.find(hash, |s| of(s) == key).is_some() {
            self.duplicate = Some(self.path_text());
            return Err(());
        }
        object
            .seen
            .insert_unique(hash, span, |s| hasher.hash_one(of(s)));
        Ok(())
    }

    /// Enters the item at `index` of the innermost open array.
    fn index(&mut self, index: usize) {
        self.path.push(Step::Index(index));
    }

    /// Leaves the value entered last.
    fn leave(&mut self) {
        let step = self.path.pop();
        debug_assert!(step.is_some(), "a value is left after it is entered");
    }

    /// The way to the value being read, as a JSONPath.
    fn path_text(&self) -> String {
        let mut path = String::from("$");
        for step in &self.path {
            match step {
                Step::Key(s) => push_key(&mut path, &self.text[s.start..s.end]),
                Step::Index(i) => {
                    path.push('[');
                    path.push_str(&i.to_string());
                    path.push(']');
                }
            }
        }
        quote::cut(path, PATH_CHARS_MAX)
    }
}

/// Reads any JSON value, checking its objects' keys, building nothing.
struct Check<'k>(&'k mut Keys);

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

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

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let keys = self.0;
        for index in 0.. {
            keys.index(index);
            let item = items.next_element_seed(Check(&mut *keys))?;
            keys.leave();
            if item.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        let keys = self.0;
        keys.open_object();
        while entries.next_key_seed(Key(&mut *keys))?.is_some() {
            entries.next_value_seed(Check(&mut *keys))?;
            keys.leave();
        }
        keys.close_object();
        Ok(())
    }
}

/// Reads any JSON value into a `Value`, checking its objects' keys.
struct Tree<'k>(&'k mut Keys);

impl<'de> DeserializeSeed<'de> for Tree<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Tree<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // As serde_json's own `Value`: a parsed number is always finite.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        let keys = self.0;
        let mut out = Vec::with_capacity(items.size_hint().unwrap_or(0).min(4096));
        for index in 0.. {
            keys.index(index);
            let item = items.next_element_seed(Tree(&mut *keys))?;
            keys.leave();
            match item {
                Some(item) => out.push(item),
                None => break,
            }
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Value, A::Error> {
        let keys = self.0;
        keys.open_object();
        let mut map = Map::new();
        while let Some(key) = entries.next_key_seed(OwnedKey(&mut *keys))? {
            let value = entries.next_value_seed(Tree(&mut *keys))?;
            keys.leave();
            map.insert(key, value);
        }
        keys.close_object();
        Ok(Value::Object(map))
    }
}

/// Reads an object key and enters its value; fails on a repeated key.
struct Key<'k>(&'k mut Keys);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<(), E> {
        self.0.key(key).map_err(|()| E::custom(DUPLICATE))
    }
}

/// [`Key`], also giving the key as a `String` for the object being built.
struct OwnedKey<'k>(&'k mut Keys);

impl<'de> DeserializeSeed<'de> for OwnedKey<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for OwnedKey<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<String, E> {
        self.0.key(key).map_err(|()| E::custom(DUPLICATE))?;
        Ok(key.to_owned())
    }

    fn visit_string<E: serde::de::Error>(self, key: String) -> Result<String, E> {
        self.0.key(&key).map_err(|()| E::custom(DUPLICATE))?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What each reader answers, comparable: `Ok` or the refusal's text.
    fn outcome<T>(result: Result<T, JsonRefusal>) -> Result<(), String> {
        result.map(|_| ()).map_err(|refusal| match refusal {
            JsonRefusal::Malformed(e) => format!("malformed: {e}"),
            JsonRefusal::DuplicateKey { path, line, column } => {
                format!("duplicate {path} at {line}:{column}")
            }
        })
    }

    #[test]
    fn both_readers_fail_as_parsing_into_a_value_fails() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let mut cases: Vec<Vec<u8>> = [
            "{\"a\": [1, 2.5, -3, true, null, \"x\\n\\u00e9\", {}]}",
            "{\"a\": 1e400}",
            "[\n  1,\n  -1e999]",
            "[\"\\ud800\"]",
            "{\"\\ud800\": 1}",
            "[\"\\q\"]",
            "[\"a\u{1}b\"]",
            "{\"a\": 1,}",
            "{\"a\": 1} x",
            "{\"a\" 1}",
            "{1: 2}",
            "[1, 2",
            "",
            " \n ",
            "18446744073709551616",
            "123456789012345678901234567890",
            "-0",
            "1.5e-400",
            "{\"a\": {\"b\": 1}, \"b\": {\"a\": 1, \"b\": [{\"a\": 1}, {\"a\": 2}]}}",
        ]
        .iter()
        .map(|text| text.as_bytes().to_vec())
        .collect();
        cases.push(deep(127).into_bytes());
        cases.push(deep(128).into_bytes());
        cases.push(b"[\"\xff\"]".to_vec());
        cases.push(b"{\"\xc3\": 1}".to_vec());
        for text in cases {
            let expected = serde_json::from_slice::<Value>(&text);
            let label = String::from_utf8_lossy(&text);
            let expected_outcome = expected
                .as_ref()
                .map(|_| ())
                .map_err(|e| format!("malformed: {e}"));
            assert_eq!(outcome(check(&text)), expected_outcome, "{label}");
            assert_eq!(outcome(parse(&text)), expected_outcome, "{label}");
            if let Ok(value) = expected {
                assert_eq!(parse(&text).ok(), Some(value), "{label}");
            }
        }
    }

    #[test]
    fn a_repeated_key_is_refused_with_its_path_at_any_depth() {
        let cases = [
            ("{\"a\": 1, \"a\": 2}", "$.a", 1, 12),
            (
                "{\"m\": {\"colour\": \"x\", \"colour\": \"y\"}}",
                "$.m.colour",
                1,
                30,
            ),
            (
                "{\"t\": [{}, {\"d\": {\"k\": [1, {\"z\": 0, \"z\": 0}]}}]}",
                "$.t[1].d.k[1].z",
                1,
                39,
            ),
            ("{\"a\": 1, \"\\u0061\": 2}", "$.a", 1, 17),
            ("{\"é\": 1, \"\\u00e9\": 2}", "$['é']", 1, 18),
            ("{\"a b\": {}, \"a b\": 2}", "$['a b']", 1, 17),
            (
                "{\"x\": {\"a\": 1},\n \"y\": {\"a\": 1, \"a\": 2}}",
                "$.y.a",
                2,
                18,
            ),
        ];
        for (text, path, line, column) in cases {
            let expected = Err(format!("duplicate {path} at {line}:{column}"));
            assert_eq!(outcome(check(text.as_bytes())), expected, "{text}");
            assert_eq!(outcome(parse(text.as_bytes())), expected, "{text}");
        }
    }

    #[test]
    fn the_same_key_in_different_objects_is_no_repeat() {
        for text in [
            "{\"a\": {\"a\": {\"a\": 1}}, \"b\": {\"a\": 2}}",
            "[{\"a\": 1}, {\"a\": 2}, {\"a\": {\"a\": 3}}]",
            "{\"a\": 1, \"A\": 2, \"a \": 3, \"\": 4}",
        ] {
            assert!(check(text.as_bytes()).is_ok(), "{text}");
            assert_eq!(
                parse(text.as_bytes()).ok(),
                serde_json::from_str::<Value>(text).ok()
            );
        }
    }

    #[test]
    fn many_keys_are_told_apart() {
        let keys: Vec<String> = (0..20_000).map(|i| format!("\"k{i}\": {i}")).collect();
        let unique = format!("{{{}}}", keys.join(","));
        assert!(check(unique.as_bytes()).is_ok());
        let repeated = format!("{{{}, \"k19999\": 0}}", keys.join(","));
        assert!(matches!(
            check(repeated.as_bytes()),
            Err(JsonRefusal::DuplicateKey { ref path, .. }) if path == "$.k19999"
        ));
    }

    #[test]
    fn a_long_repeated_key_is_cut_in_the_path() {
        let long = "k".repeat(100_000);
        let text = format!("{{\"m\": {{\"{long}\": 1, \"{long}\": 2}}}}");
        let Err(JsonRefusal::DuplicateKey { path, .. }) = check(text.as_bytes()) else {
            panic!("the repeat is found");
        };
        let shown = "k".repeat(quote::QUOTE_CHARS_MAX);
        assert_eq!(path, format!("$.m['{shown}{}']", quote::CUT_MARK));
    }
}
