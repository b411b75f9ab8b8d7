//! The body of `POST /api/tokens/batch`, split at its top level so that its
//! items can be handled one at a time.
//!
//! A batch holds up to [`BATCH_TOKENS_MAX`] tokens. Parsed whole, every
//! item's `Value` tree would stay alive until the last item is planned, and
//! with batches in flight that working set stays resident after the burst.
//! So the items are kept here as JSON text, and the handler turns each into a
//! `Value` only when its turn comes. Nor are the items listed: they are
//! walked in the `tokens` text whenever needed, so a 16 MiB body of eight
//! million tiny items (every one a problem to count) costs no list of them.
//!
//! The top level is checked by hand: an object whose one field, `tokens`, is
//! required and is an array of 1 to [`BATCH_TOKENS_MAX`] items. Its problems
//! carry the paths, wording and order a JSON Schema check gives them, so they
//! read like those of every other route.

use super::body::not_json;
use super::error::{ApiError, FieldError};
use super::problems::{Problems, VALIDATION_ERRORS_MAX};
use super::quote::{self, QUOTE_CHARS_MAX};
use super::validate::{missing_field, unknown_field, BATCH_TOKENS_MAX};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt;
use std::ops::ControlFlow;
use utoipa::ToSchema;

/// The one field of a batch body.
const TOKENS: &str = "tokens";
/// The path of that field.
const TOKENS_PATH: &str = "$.tokens";

/// The shape of a batch body, for the document: what [`BatchBody::split`]
/// checks by hand, each item then checked against the token schema.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchCreate {
    /// 1 to 10 000 tokens, created all or none.
    #[schema(schema_with = super::schema::batch_tokens)]
    pub tokens: Vec<super::plan::TokenBody>,
}

/// A batch body, split at its top level.
pub struct BatchBody<'a> {
    /// The `tokens` array as JSON text; `None` when `tokens` is missing or
    /// not an array.
    tokens: Option<&'a RawValue>,
    /// How many items `tokens` has (0 when it is `None`).
    pub item_count: usize,
    /// What is wrong with the top level, in the order a schema check lists
    /// it; such a check lists these after the items' own problems.
    pub errors: Problems,
}

/// The top-level fields of a batch body, read without keeping every name:
/// a body of 16 MiB may have a million unknown fields, and a 422 lists
/// only the first of them in sorted order.
struct TopFields<'a> {
    /// The `tokens` field's value as text, if there is one.
    tokens: Option<&'a RawValue>,
    /// The smallest names other than `tokens`, sorted; at most
    /// [`VALIDATION_ERRORS_MAX`], as many as a 422 lists.
    unknown: BTreeSet<String>,
    /// How many names other than `tokens` there are.
    unknown_count: usize,
}

impl<'de> Deserialize<'de> for TopFields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(TopFieldsVisitor)
    }
}

/// Reads [`TopFields`]; anything but an object is an error.
struct TopFieldsVisitor;

impl<'de> Visitor<'de> for TopFieldsVisitor {
    type Value = TopFields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<TopFields<'de>, A::Error> {
        let mut fields = TopFields {
            tokens: None,
            unknown: BTreeSet::new(),
            unknown_count: 0,
        };
        while let Some(name) = entries.next_key::<String>()? {
            if name == TOKENS {
                fields.tokens = Some(entries.next_value()?);
                continue;
            }
            entries.next_value::<IgnoredAny>()?;
            fields.unknown_count += 1;
            let listed = fields.unknown.len() < VALIDATION_ERRORS_MAX
                || fields.unknown.last().is_some_and(|last| name < *last);
            if listed {
                fields.unknown.insert(name);
                if fields.unknown.len() > VALIDATION_ERRORS_MAX {
                    fields.unknown.pop_last();
                }
            }
        }
        Ok(fields)
    }
}

impl<'a> BatchBody<'a> {
    /// Splits `body`, which [`json_text`](super::body::json_text)
    /// has already found to be JSON, into its items and the problems of its
    /// top level.
    pub fn split(body: &'a [u8]) -> Result<Self, ApiError> {
        let top: &RawValue = serde_json::from_slice(body).map_err(not_json)?;
        let mut batch = Self {
            tokens: None,
            item_count: 0,
            errors: Problems::new(),
        };
        // (`json_text` refused a repeated key already.)
        let Ok(fields) = serde_json::from_str::<TopFields<'_>>(top.get()) else {
            // Well-formed JSON that does not split into fields is not an object.
            batch.errors.push(not_of_type("$", top, "object")?);
            return Ok(batch);
        };
        if let Some(tokens) = fields.tokens {
            batch.take_items(tokens)?;
        }
        // Unknown names in sorted order, as a schema check on a `Value`
        // object lists them; those past what a 422 lists are counted.
        for name in &fields.unknown {
            batch.errors.push(unknown_field("$", name));
        }
        let unlisted = fields.unknown_count - fields.unknown.len();
        if unlisted > 0 {
            batch.errors.count(unlisted);
        }
        if fields.tokens.is_none() {
            batch.errors.push(missing_field("$", TOKENS));
        }
        Ok(batch)
    }

    /// Takes `tokens` and counts its items, noting when it is not an array
    /// or has too few or too many items.
    fn take_items(&mut self, tokens: &'a RawValue) -> Result<(), ApiError> {
        let mut count = 0;
        let walk = each_item(tokens, |_, _| {
            count += 1;
            ControlFlow::Continue(())
        });
        if walk == Walk::NotAnArray {
            self.errors.push(not_of_type(TOKENS_PATH, tokens, "array")?);
            return Ok(());
        }
        if count == 0 {
            self.errors
                .push(FieldError::new(TOKENS_PATH, "[] has less than 1 item"));
        } else if count > BATCH_TOKENS_MAX {
            let quoted = quote_array(tokens)?.unwrap_or_default();
            let message = format!("{quoted} has more than {BATCH_TOKENS_MAX} items");
            self.errors.push(FieldError::new(TOKENS_PATH, message));
        }
        self.tokens = Some(tokens);
        self.item_count = count;
        Ok(())
    }

    /// Calls `each` with the index and text of every item, in request
    /// order, until it breaks.
    pub fn for_each_item(&self, each: impl FnMut(usize, &'a RawValue) -> ControlFlow<()>) {
        if let Some(tokens) = self.tokens {
            let walk = each_item(tokens, each);
            debug_assert!(walk != Walk::NotAnArray, "tokens is an array");
        }
    }
}

/// How a walk over an array's items ended.
#[derive(Debug, PartialEq, Eq)]
enum Walk {
    /// Every item was seen.
    Done,
    /// The callback stopped it.
    Stopped,
    /// The text is not an array.
    NotAnArray,
}

/// Calls `each` with the index and text of every item of `array`, JSON
/// text known to be well-formed, in order, holding none of them after its
/// call; `each` may stop the walk.
fn each_item<'a>(
    array: &'a RawValue,
    mut each: impl FnMut(usize, &'a RawValue) -> ControlFlow<()>,
) -> Walk {
    let mut stopped = false;
    let visitor = ItemsVisitor {
        each: &mut each,
        stopped: &mut stopped,
    };
    let mut reader = serde_json::Deserializer::from_str(array.get());
    match reader.deserialize_seq(visitor) {
        Ok(()) => Walk::Done,
        Err(_) if stopped => Walk::Stopped,
        // The text is well-formed: the only other failure is its type.
        Err(_) => Walk::NotAnArray,
    }
}

/// Walks an array for [`each_item`].
struct ItemsVisitor<'f, F> {
    /// Called with each item.
    each: &'f mut F,
    /// Set when `each` stopped the walk (which then fails to end it).
    stopped: &'f mut bool,
}

impl<'de, F: FnMut(usize, &'de RawValue) -> ControlFlow<()>> Visitor<'de> for ItemsVisitor<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(item) = items.next_element::<&'de RawValue>()? {
            if (self.each)(index, item).is_break() {
                *self.stopped = true;
                return Err(de::Error::custom("stopped"));
            }
            index += 1;
        }
        Ok(())
    }
}

/// One item (or any piece of a body) as a `Value`. Text cut from a body that
/// `json_text` accepted parses; were it not to, the client is told its
/// body is not JSON rather than the request failing otherwise.
pub fn value(raw: &RawValue) -> Result<Value, ApiError> {
    serde_json::from_str(raw.get()).map_err(not_json)
}

/// The problem of `raw`, at `path`, not being of JSON type `expected`.
fn not_of_type(path: &str, raw: &RawValue, expected: &str) -> Result<FieldError, ApiError> {
    Ok(FieldError::new(
        path,
        format!("{} is not of type \"{expected}\"", quote(raw)?),
    ))
}

/// `raw` written as `Value`'s `Display` writes it, which is how schema
/// messages quote the value they reject, cut to [`QUOTE_CHARS_MAX`].
fn quote(raw: &RawValue) -> Result<String, ApiError> {
    match quote_array(raw)? {
        Some(quoted) => Ok(quoted),
        None => Ok(quote::value(&value(raw)?)),
    }
}

/// An array quoted as [`quote`] does, one item at a time, and only as many
/// items as the cut keeps; `None` when `raw` is not an array.
fn quote_array(raw: &RawValue) -> Result<Option<String>, ApiError> {
    let mut text = String::from("[");
    let mut failed = None;
    let walk = each_item(raw, |i, item| {
        if text.chars().count() > QUOTE_CHARS_MAX {
            return ControlFlow::Break(());
        }
        if i > 0 {
            text.push(',');
        }
        match value(item) {
            Ok(item) => text.push_str(&quote::value(&item)),
            Err(e) => {
                failed = Some(e);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    if let Some(e) = failed {
        return Err(e);
    }
    if walk == Walk::NotAnArray {
        return Ok(None);
    }
    text.push(']');
    Ok(Some(quote::cut(text, QUOTE_CHARS_MAX)))
}

#[cfg(test)]
mod tests {
    use super::super::validate::violations;
    use super::*;
    use serde_json::json;

    /// The top-level shape as a JSON Schema, to compare the hand check with.
    fn shape_schema() -> jsonschema::Validator {
        let schema = json!({
            "type": "object", "additionalProperties": false,
            "required": ["tokens"],
            "properties": {"tokens": {
                "type": "array", "minItems": 1, "maxItems": BATCH_TOKENS_MAX
            }}
        });
        jsonschema::validator_for(&schema).expect("the shape schema compiles")
    }

    /// All the problems of `value` against `schema`.
    fn violations_of(schema: &jsonschema::Validator, value: &Value) -> Vec<FieldError> {
        let mut problems = Problems::new();
        violations(schema, value, "$", &mut problems);
        problems.into_parts().0
    }

    fn errors_of(body: &str) -> Vec<FieldError> {
        BatchBody::split(body.as_bytes())
            .expect("the body splits")
            .errors
            .into_parts()
            .0
    }

    #[test]
    fn top_level_problems_are_those_a_schema_check_finds() {
        let schema = shape_schema();
        let many = |n: usize| format!("[{}]", vec!["{\"a\": [1.50, \"\\u00e9\"]}"; n].join(", "));
        let bodies = [
            "{\"tokens\": [{}]}".to_owned(),
            "[1, 2.0, {\"b\": 1, \"a\": \"\\n\"}]".to_owned(),
            "\"x\"".to_owned(),
            "null".to_owned(),
            "-0.5e3".to_owned(),
            "{}".to_owned(),
            "{\"tokens\": 5}".to_owned(),
            "{\"tokens\": {\"b\": [], \"a\": null}}".to_owned(),
            "{\"tokens\": []}".to_owned(),
            "{\"x\": 1}".to_owned(),
            "{\"tokens\": [], \"y\": 2, \"a b\": 1, \"0\": 3}".to_owned(),
            "{\"tokens\": 5, \"tokens\": [1]}".to_owned(),
            "{\"tokens\": [1], \"tokens\": \"no\"}".to_owned(),
            "{\"tok\\u0065ns\": [1]}".to_owned(),
            format!("{{\"tokens\": {}}}", many(BATCH_TOKENS_MAX)),
            format!("{{\"x\": 1, \"tokens\": {}}}", many(3)),
        ];
        for body in bodies {
            let value: Value = serde_json::from_str(&body).expect("the body is JSON");
            assert_eq!(
                errors_of(&body),
                violations_of(&schema, &value),
                "{}",
                &body[..body.len().min(80)]
            );
        }
    }

    #[test]
    fn items_are_kept_as_their_text() {
        let body = "{\"tokens\": [ {\"collectionId\": \"c\"} ,2]}";
        let batch = BatchBody::split(body.as_bytes()).expect("the body splits");
        let mut items: Vec<(usize, &str)> = Vec::new();
        batch.for_each_item(|i, raw| {
            items.push((i, raw.get()));
            ControlFlow::Continue(())
        });
        assert_eq!(items, [(0, "{\"collectionId\": \"c\"}"), (1, "2")]);
        assert_eq!(batch.item_count, 2);
        assert!(batch.errors.is_empty());
        let mut first = Vec::new();
        batch.for_each_item(|_, raw| {
            first.push(raw.get());
            ControlFlow::Break(())
        });
        assert_eq!(first, ["{\"collectionId\": \"c\"}"]);
    }

    #[test]
    fn long_quotes_are_cut() {
        let many = format!("[{}]", vec!["\"é\""; BATCH_TOKENS_MAX + 1].join(","));
        let errors = errors_of(&format!("{{\"tokens\": {many}}}"));
        let shown: String = many.chars().take(QUOTE_CHARS_MAX).collect();
        assert_eq!(
            errors,
            vec![FieldError::new(
                TOKENS_PATH,
                format!("{shown}… has more than {BATCH_TOKENS_MAX} items")
            )]
        );
        let long = format!("\"{}\"", "x".repeat(QUOTE_CHARS_MAX));
        let errors = errors_of(&long);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.starts_with(&long[..QUOTE_CHARS_MAX]));
        assert!(errors[0].message.contains("… is not of type"));
    }

    #[test]
    fn quotes_are_what_a_value_displays() {
        for text in [
            "[ {\"b\": 1, \"a\": [1.0, 2e3, \"\\u00e9\\\"\"]} , null, [] ]",
            "[]",
            "{\"k\": -0}",
            "12345678901234567890",
        ] {
            let raw: &RawValue = serde_json::from_str(text).expect("the text is JSON");
            let value: Value = serde_json::from_str(text).expect("the text is JSON");
            assert_eq!(quote(raw).expect("quotes"), value.to_string());
        }
    }
}
