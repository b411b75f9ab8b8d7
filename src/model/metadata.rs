//! Token metadata: up to 20 string pairs, packed into one allocation.
//!
//! Metadata is on nearly every token and is small, so it is stored as a single
//! boxed byte string `[key len u16][key][value len u16][value]...` rather than
//! a map of separately allocated strings: one allocation per token instead of
//! one per string, which matters at millions of tokens in memory.

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// At most this many pairs: metadata is for short labels, not data.
pub const PAIRS_MAX: usize = 20;
/// At most this many characters in a key.
pub const KEY_CHARS_MAX: usize = 20;
/// At most this many characters in a value.
pub const VALUE_CHARS_MAX: usize = 80;

/// Packed string pairs in insertion order; empty is `None` (no allocation).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// The packed pairs; `None` when there are none.
    packed: Option<Box<[u8]>>,
}

impl Metadata {
    /// Packs pairs that already passed validation (limits are asserted).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        // Gathered first so that the packed bytes are allocated once, at
        // their exact size (a token read allocates nothing else for them).
        let mut gathered: [(&str, &str); PAIRS_MAX] = [("", ""); PAIRS_MAX];
        let mut count = 0usize;
        for pair in pairs {
            assert!(
                count < PAIRS_MAX,
                "metadata pair count is validated upstream"
            );
            gathered[count] = pair;
            count += 1;
        }
        let gathered = &gathered[..count];
        // Values are ≤ 80 chars of at most 4 bytes: far below u16::MAX.
        let part_bytes = |part: &str| usize::from(u16::try_from(part.len()).unwrap_or(u16::MAX));
        let bytes: usize = gathered
            .iter()
            .map(|(key, value)| 4 + part_bytes(key) + part_bytes(value))
            .sum();
        let mut packed = Vec::with_capacity(bytes);
        for (key, value) in gathered {
            for part in [key, value] {
                let len = part_bytes(part);
                packed.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_le_bytes());
                packed.extend_from_slice(&part.as_bytes()[..len]);
            }
        }
        assert_eq!(packed.len(), bytes, "packed at its exact size");
        Self {
            packed: (!packed.is_empty()).then(|| packed.into_boxed_slice()),
        }
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.packed.is_none()
    }

    /// The pairs in insertion order.
    pub fn iter(&self) -> MetadataIter<'_> {
        MetadataIter {
            rest: self.packed.as_deref().unwrap_or(&[]),
        }
    }
}

impl std::fmt::Debug for Metadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Iterates packed pairs.
pub struct MetadataIter<'a> {
    /// What is left to decode.
    rest: &'a [u8],
}

impl<'a> MetadataIter<'a> {
    fn take_str(&mut self) -> Option<&'a str> {
        let (len, rest) = self.rest.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_le_bytes(*len));
        let (text, rest) = rest.split_at_checked(len)?;
        self.rest = rest;
        // Only valid UTF-8 is ever packed; a failure here means memory
        // corruption, and yielding nothing is safer than panicking.
        std::str::from_utf8(text).ok()
    }
}

impl<'a> Iterator for MetadataIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let key = self.take_str()?;
        let value = self.take_str()?;
        Some((key, value))
    }
}

impl Serialize for Metadata {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.iter() {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Pairs are kept in order as a list, so restore reproduces the exact
        // order the client sent.
        let pairs: Vec<(String, String)> = Vec::deserialize(deserializer)?;
        if pairs.len() > PAIRS_MAX {
            return Err(serde::de::Error::custom("too many metadata pairs"));
        }
        Ok(Self::from_pairs(
            pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ))
    }
}

/// Serde adapter that stores metadata as a list of pairs (for the WAL and
/// snapshots, where order must survive), while the API renders a JSON object.
pub mod as_pairs {
    use super::Metadata;
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as `[[key, value], ...]`.
    pub fn serialize<S: Serializer>(metadata: &Metadata, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for pair in metadata.iter() {
            seq.serialize_element(&pair)?;
        }
        seq.end()
    }

    /// Deserializes `[[key, value], ...]`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Metadata, D::Error> {
        Metadata::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_iterates_in_order() {
        let metadata = Metadata::from_pairs([("b", "2"), ("a", "ünïcode"), ("", "")]);
        let pairs: Vec<_> = metadata.iter().collect();
        assert_eq!(pairs, vec![("b", "2"), ("a", "ünïcode"), ("", "")]);
        assert_eq!(
            serde_json::to_string(&metadata).unwrap(),
            r#"{"b":"2","a":"ünïcode","":""}"#
        );
    }

    #[test]
    fn empty_allocates_nothing() {
        let metadata = Metadata::from_pairs([]);
        assert!(metadata.is_empty());
        assert!(metadata.packed.is_none());
    }

    #[test]
    fn round_trips_through_msgpack_as_pairs() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Wrapper {
            #[serde(with = "as_pairs")]
            m: Metadata,
        }
        let w = Wrapper {
            m: Metadata::from_pairs([("z", "1"), ("a", "2")]),
        };
        let bytes = rmp_serde::to_vec(&w).unwrap();
        assert_eq!(rmp_serde::from_slice::<Wrapper>(&bytes).unwrap(), w);
    }
}
