//! The body of `POST /api/tokens/batch`, split at its top level so that its
//! items can be handled one at a time.
//!
//! A batch holds up to [`BATCH_TOKENS_MAX`] tokens. Parsed whole, every
//! item's `Value` tree would stay alive until the last item is planned, and
//! with batches in flight that working set stays resident after the burst.
//! So the items are kept here as JSON text, and the handler turns each into a
//! `Value` only when its turn comes.
//!
//! The top level is checked by hand: an object whose one field, `tokens`, is
//! required and is an array of 1 to [`BATCH_TOKENS_MAX`] items. Its problems
//! carry the paths, wording and order a JSON Schema check gives them, so they
//! read like those of every other route.

use super::body::not_json;
use super::error::{ApiError, FieldError};
use super::validate::{missing_field, unknown_field, BATCH_TOKENS_MAX};
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The one field of a batch body.
const TOKENS: &str = "tokens";
/// The path of that field.
const TOKENS_PATH: &str = "$.tokens";
/// Longest quote of a rejected value in a message, in characters (then `…`).
/// A batch body may be 16 MiB; a 422 should not echo it back whole.
pub const QUOTE_CHARS_MAX: usize = 200;

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
    /// The `tokens` items as JSON text, in request order; none when `tokens`
    /// is missing or not an array.
    pub items: Vec<&'a RawValue>,
    /// What is wrong with the top level, in the order a schema check lists
    /// it; such a check lists these after the items' own problems.
    pub errors: Vec<FieldError>,
}

impl<'a> BatchBody<'a> {
    /// Splits `body`, which [`json_text`](super::body::json_text)
    /// has already found to be JSON, into its items and the problems of its
    /// top level.
    pub fn split(body: &'a [u8]) -> Result<Self, ApiError> {
        let top: &RawValue = serde_json::from_slice(body).map_err(not_json)?;
        // Keys in sorted order, the last of duplicates winning, as in a
        // `Value` object: problems are listed in the same order.
        let Ok(fields) = serde_json::from_str::<BTreeMap<String, &RawValue>>(top.get()) else {
            // Well-formed JSON that does not split into fields is not an object.
            return Ok(Self {
                items: Vec::new(),
                errors: vec![not_of_type("$", top, "object")?],
            });
        };
        let mut batch = Self {
            items: Vec::new(),
            errors: Vec::new(),
        };
        if let Some(tokens) = fields.get(TOKENS) {
            batch.take_items(tokens)?;
        }
        let unknown = fields.keys().filter(|name| *name != TOKENS);
        batch
            .errors
            .extend(unknown.map(|name| unknown_field("$", name)));
        if !fields.contains_key(TOKENS) {
            batch.errors.push(missing_field("$", TOKENS));
        }
        Ok(batch)
    }

    /// Takes the items of `tokens`, noting when it is not an array or has
    /// too few or too many items.
    fn take_items(&mut self, tokens: &'a RawValue) -> Result<(), ApiError> {
        let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(tokens.get()) else {
            self.errors.push(not_of_type(TOKENS_PATH, tokens, "array")?);
            return Ok(());
        };
        if items.is_empty() {
            self.errors
                .push(FieldError::new(TOKENS_PATH, "[] has less than 1 item"));
        } else if items.len() > BATCH_TOKENS_MAX {
            let message = format!(
                "{} has more than {BATCH_TOKENS_MAX} items",
                quote_items(&items)?
            );
            self.errors.push(FieldError::new(TOKENS_PATH, message));
        }
        self.items = items;
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
    match serde_json::from_str::<Vec<&RawValue>>(raw.get()) {
        Ok(items) => quote_items(&items),
        Err(_) => Ok(cut(value(raw)?.to_string())),
    }
}

/// An array quoted as [`quote`] does, one item at a time, and only as many
/// items as the cut keeps.
fn quote_items(items: &[&RawValue]) -> Result<String, ApiError> {
    let mut text = String::from("[");
    for (i, item) in items.iter().enumerate() {
        if text.chars().count() > QUOTE_CHARS_MAX {
            break;
        }
        if i > 0 {
            text.push(',');
        }
        text.push_str(&value(item)?.to_string());
    }
    text.push(']');
    Ok(cut(text))
}

/// `text`, or its first [`QUOTE_CHARS_MAX`] characters and `…`.
fn cut(mut text: String) -> String {
    if let Some((end, _)) = text.char_indices().nth(QUOTE_CHARS_MAX) {
        text.truncate(end);
        text.push('…');
    }
    text
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

    fn errors_of(body: &str) -> Vec<FieldError> {
        BatchBody::split(body.as_bytes())
            .expect("the body splits")
            .errors
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
                violations(&schema, &value, "$"),
                "{}",
                &body[..body.len().min(80)]
            );
        }
    }

    #[test]
    fn items_are_kept_as_their_text() {
        let body = "{\"tokens\": [ {\"collectionId\": \"c\"} ,2]}";
        let batch = BatchBody::split(body.as_bytes()).expect("the body splits");
        let items: Vec<&str> = batch.items.iter().map(|raw| raw.get()).collect();
        assert_eq!(items, ["{\"collectionId\": \"c\"}", "2"]);
        assert!(batch.errors.is_empty());
        assert_eq!(
            value(batch.items[0]).expect("the item parses"),
            json!({"collectionId": "c"})
        );
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
