//! Query strings: repeatable parameters, `limit`, and opaque cursors.

use super::error::{ApiError, FieldError};
use super::problems::Problems;
use super::validate::push_key;
use crate::clock::Millis;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use uuid::Uuid;

/// Default page size.
pub const LIMIT_DEFAULT: usize = 100;
/// Largest page size.
pub const LIMIT_MAX: usize = 1000;
/// Most values of one repeatable parameter (e.g. `id`).
pub const VALUES_MAX: usize = 1000;

/// The parsed query string: every `(name, value)` in order.
pub struct Query {
    /// The parameters.
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses `text`; names outside `allowed` are validation errors (the
    /// name quoted cut, as every key in a path).
    pub fn parse(text: &str, allowed: &[&str]) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(text.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut unknown = Problems::new();
        for (name, _) in pairs
            .iter()
            .filter(|(name, _)| !allowed.contains(&name.as_str()))
        {
            unknown.push_with(|| {
                let mut path = String::from("$");
                push_key(&mut path, name);
                FieldError::new(path, "is not a known query parameter")
            });
        }
        if !unknown.is_empty() {
            return Err(ApiError::validation(unknown));
        }
        Ok(Self { pairs })
    }

    /// Every value of `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The last value of `name`.
    pub fn last<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.all(name).last()
    }

    /// A boolean flag (`true`/`false`), default false.
    pub fn flag(&self, name: &str, errors: &mut Problems) -> bool {
        match self.last(name) {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                errors.push(FieldError::new(
                    format!("$.{name}"),
                    "must be true or false",
                ));
                false
            }
        }
    }

    /// Every value of `name` parsed by `parse`; bad ones are errors.
    pub fn parsed<T>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Option<T>,
        expected: &str,
        errors: &mut Problems,
    ) -> Vec<T> {
        let mut out = Vec::new();
        for value in self.all(name) {
            match parse(value) {
                Some(v) => out.push(v),
                None => errors.push_with(|| {
                    FieldError::new(format!("$.{name}"), format!("must be {expected}"))
                }),
            }
        }
        if out.len() > VALUES_MAX {
            errors.push(FieldError::new(
                format!("$.{name}"),
                format!("may be given at most {VALUES_MAX} times"),
            ));
        }
        out
    }

    /// `?limit=`, 1..=1000, default 100.
    pub fn limit(&self, errors: &mut Problems) -> usize {
        match self.last("limit") {
            None => LIMIT_DEFAULT,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=LIMIT_MAX).contains(&n) => n,
                _ => {
                    errors.push(FieldError::new(
                        "$.limit",
                        format!("must be an integer from 1 to {LIMIT_MAX}"),
                    ));
                    LIMIT_DEFAULT
                }
            },
        }
    }

    /// `?cursor=`: the position after which the page starts.
    pub fn cursor(&self, errors: &mut Problems) -> Option<(Millis, Uuid)> {
        let text = self.last("cursor")?;
        let decoded = decode_cursor(text);
        if decoded.is_none() {
            errors.push(FieldError::new(
                "$.cursor",
                "is not a cursor from a previous page",
            ));
        }
        decoded
    }
}

/// `?limit=` and `?cursor=` of a list that takes no other parameter.
pub fn page_params(query_string: &str) -> Result<(usize, Option<(Millis, Uuid)>), ApiError> {
    let query = Query::parse(query_string, &["limit", "cursor"])?;
    let mut errors = Problems::new();
    let limit = query.limit(&mut errors);
    let after = query.cursor(&mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    Ok((limit, after))
}

/// Encodes a list position `(createdAt, id)` as an opaque cursor.
pub fn encode_cursor(created_at_ms: Millis, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{created_at_ms}:{}", id.simple()))
}

fn decode_cursor(text: &str) -> Option<(Millis, Uuid)> {
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let (at, id) = text.split_once(':')?;
    Some((at.parse().ok()?, Uuid::try_parse(id).ok()?))
}

/// Pages a list already sorted by `(createdAt, id)` (collections, keys).
pub fn page<T: Clone>(
    items: &[T],
    position: impl Fn(&T) -> (Millis, Uuid),
    after: Option<(Millis, Uuid)>,
    limit: usize,
) -> (Vec<T>, bool) {
    let start = after.map_or(0, |after| {
        items.partition_point(|item| position(item) <= after)
    });
    let rest = &items[start..];
    let page = rest.iter().take(limit).cloned().collect();
    (page, rest.len() > limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let id = Uuid::new_v4();
        let cursor = encode_cursor(1234, id);
        let q = Query::parse(&format!("cursor={cursor}"), &["cursor"]).unwrap();
        let mut errors = Problems::new();
        assert_eq!(q.cursor(&mut errors), Some((1234, id)));
        let q = Query::parse("cursor=nope", &["cursor"]).unwrap();
        q.cursor(&mut errors);
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn limits_are_bounded_and_unknown_names_rejected() {
        let mut errors = Problems::new();
        assert_eq!(
            Query::parse("limit=0", &["limit"])
                .unwrap()
                .limit(&mut errors),
            100
        );
        assert_eq!(
            Query::parse("limit=1000", &["limit"])
                .unwrap()
                .limit(&mut errors),
            1000
        );
        assert_eq!(errors.len(), 1);
        assert!(Query::parse("colour=red", &["limit"]).is_err());
    }

    #[test]
    fn pages_sorted_items() {
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
        let items: Vec<(Millis, Uuid)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (i as Millis, *id))
            .collect();
        let (first, more) = page(&items, |x| *x, None, 2);
        assert_eq!(first, items[..2].to_vec());
        assert!(more);
        let (last, more) = page(&items, |x| *x, Some(items[2]), 5);
        assert_eq!(last, items[3..].to_vec());
        assert!(!more);
    }
}
