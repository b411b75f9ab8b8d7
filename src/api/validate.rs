//! Request validation: JSON Schemas for the shape of every body, turned into
//! one `validationErrors` entry per problem with a JSONPath.
//!
//! The schemas are the single statement of what each route accepts (fields,
//! types, lengths, counts): each is derived from the route's request type
//! (`#[derive(ToSchema)]`), published in the OpenAPI document, and compiled
//! from there. Handlers then decode the validated JSON into
//! typed structs and check what a schema cannot say (time ordering, sizes of
//! serialized data, the collection's own `dataSchema`). The one exception is
//! the top level of a batch (`{"tokens": [...]}`), checked by
//! [`batch`](super::batch) so that its items need not be parsed all at once;
//! each item is checked against the token schema.

use super::accounts::{CreateAccount, CreateApiKey};
use super::collections::CreateCollection;
use super::error::{ApiError, FieldError};
use super::lifecycle::{EmptyBody, HoldBody, RedeemBatchBody, VoidBody};
use super::openapi;
use super::plan::TokenBody;
use super::problems::Problems;
use super::quote::{self, QUOTE_CHARS_MAX};
use super::tokens::RedeemBody;
use jsonschema::error::ValidationErrorKind;
use jsonschema::Validator;
use serde::de::{self, DeserializeOwned};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use std::sync::OnceLock;
use utoipa::ToSchema;

/// Children a token may be created with.
pub const CHILDREN_MAX: usize = 100;
/// Tokens in one batch.
pub const BATCH_TOKENS_MAX: usize = 10_000;
/// Longest `expiresIn` / `tokenExpiresAfter`: 100 years, in seconds.
pub const LIFETIME_SECS_MAX: i64 = 100 * 366 * 24 * 3600;
/// Largest serialized `data` (16 KiB).
pub const DATA_BYTES_MAX: usize = 16 * 1024;

/// The compiled schema of every request body.
pub struct Schemas {
    /// `POST /api/accounts`.
    pub account: Validator,
    /// `POST /api/accounts/{id}/api-keys`.
    pub api_key: Validator,
    /// `POST /api/collections`.
    pub collection: Validator,
    /// `POST /api/tokens`, and each item of `POST /api/tokens/batch`.
    pub token: Validator,
    /// `POST /api/tokens/{id}/redeem` and `/validate`.
    pub redeem: Validator,
    /// `POST /api/tokens/{id}/holds`.
    pub hold: Validator,
    /// Capture and release: `{}`.
    pub empty: Validator,
    /// `POST /api/tokens/{id}/redemption/void`.
    pub void: Validator,
    /// `POST /api/tokens/redeem`.
    pub redeem_batch: Validator,
}

/// Items of one batch redeem.
pub const REDEMPTIONS_MAX: usize = 1_000;
/// Longest void reason, in characters.
pub const VOID_REASON_CHARS_MAX: usize = 200;

/// The schema of `T` as the document has it, compiled: a root holding the
/// document's component schemas, referring to `T`'s. A component refers to
/// others (`#/components/schemas/...`), which resolve within that root.
fn compile<T: ToSchema>(components: &Value) -> Validator {
    let schema = json!({
        "$ref": format!("#/components/schemas/{}", T::name()),
        "components": {"schemas": components},
    });
    // The schemas are derived from this crate's types; failing to compile
    // one is a programming error caught by the first test that starts the
    // app.
    match jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
    {
        Ok(validator) => validator,
        Err(e) => panic!("request schema {} does not compile: {e}", T::name()),
    }
}

/// Gives every closed object schema (`additionalProperties: false`) a
/// `properties`, empty when it has none (the document omits an empty one).
/// The two mean the same, but only with `properties` does the validator
/// report each unknown field by name (`$.x`), rather than a false schema
/// at the object (`$`).
fn name_unknown_fields(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.get("additionalProperties") == Some(&Value::Bool(false))
                && !map.contains_key("properties")
            {
                map.insert("properties".to_owned(), json!({}));
            }
            map.values_mut().for_each(name_unknown_fields);
        }
        Value::Array(items) => items.iter_mut().for_each(name_unknown_fields),
        _ => {}
    }
}

/// The schemas, compiled on first use from the OpenAPI document's
/// components (see [`openapi`](super::openapi)), which derive them from the
/// request types: what is documented is what is enforced.
pub fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let mut components = match serde_json::from_slice::<Value>(openapi::rendered()) {
            Ok(mut document) => document["components"]["schemas"].take(),
            Err(e) => panic!("the OpenAPI document does not read back: {e}"),
        };
        name_unknown_fields(&mut components);
        assert!(
            components.is_object(),
            "the OpenAPI document has no component schemas"
        );
        Schemas {
            account: compile::<CreateAccount>(&components),
            api_key: compile::<CreateApiKey>(&components),
            collection: compile::<CreateCollection>(&components),
            token: compile::<TokenBody>(&components),
            redeem: compile::<RedeemBody>(&components),
            hold: compile::<HoldBody>(&components),
            empty: compile::<EmptyBody>(&components),
            void: compile::<VoidBody>(&components),
            redeem_batch: compile::<RedeemBatchBody>(&components),
        }
    })
}

/// Renders a JSON Pointer into `instance` as a JSONPath (`$.a[0].b`): array
/// indices become `[n]`, other keys `.key` or `['odd key']`.
pub fn json_path(prefix: &str, instance: &Value, pointer: &str) -> String {
    let mut path = prefix.to_owned();
    let mut at = Some(instance);
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        match at {
            Some(Value::Array(items)) => {
                path.push('[');
                path.push_str(&segment);
                path.push(']');
                at = segment.parse::<usize>().ok().and_then(|i| items.get(i));
            }
            other => {
                push_key(&mut path, &segment);
                at = other.and_then(|v| v.get(&segment));
            }
        }
    }
    path
}

/// Appends `.key`, or `['key']` when the key is not a plain identifier; a
/// key longer than [`QUOTE_CHARS_MAX`] characters is cut.
pub fn push_key(path: &mut String, key: &str) {
    let key = &quote::cut_str(key, QUOTE_CHARS_MAX);
    let plain = !key.is_empty()
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !key.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        path.push('.');
        path.push_str(key);
    } else {
        path.push_str("['");
        path.push_str(&key.replace('\\', "\\\\").replace('\'', "\\'"));
        path.push_str("']");
    }
}

/// The field `name` of the object at `at` is not one the body may have.
pub fn unknown_field(at: &str, name: &str) -> FieldError {
    let mut path = at.to_owned();
    push_key(&mut path, name);
    FieldError::new(path, "is not a known field")
}

/// The object at `at` lacks its required field `name`.
pub fn missing_field(at: &str, name: &str) -> FieldError {
    let mut path = at.to_owned();
    push_key(&mut path, name);
    FieldError::new(path, "is required")
}

/// Every violation of `validator` by `instance`, as field errors under
/// `prefix`, noted in `problems`. A rejected value is quoted cut to
/// [`QUOTE_CHARS_MAX`] characters; once `problems` lists all it may, the
/// rest are counted without writing their messages.
pub fn violations(validator: &Validator, instance: &Value, prefix: &str, problems: &mut Problems) {
    if validator.is_valid(instance) {
        return;
    }
    for error in validator.iter_errors(instance) {
        if problems.is_full() {
            problems.count(match error.kind() {
                ValidationErrorKind::AdditionalProperties { unexpected } => unexpected.len(),
                _ => 1,
            });
            continue;
        }
        let at = json_path(prefix, instance, error.instance_path().as_str());
        match error.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                for name in unexpected {
                    problems.push_with(|| unknown_field(&at, name));
                }
            }
            ValidationErrorKind::Required { property } => {
                problems.push(missing_field(&at, property.as_str().unwrap_or_default()));
            }
            // A bad key is reported at the key itself (`$.metadata.<key>`).
            ValidationErrorKind::PropertyNames { error: inner } => {
                let mut path = at;
                push_key(&mut path, inner.instance().as_str().unwrap_or_default());
                let shown = inner.masked_with(quote::value(inner.instance()));
                problems.push(FieldError::new(path, format!("key: {shown}")));
            }
            _ => {
                let shown = error.masked_with(quote::value(error.instance()));
                problems.push(FieldError::new(at, shown.to_string()));
            }
        }
    }
}

/// Decodes an optional `integer` field of a schema-checked body. JSON Schema
/// counts `60.0` as an integer, so the typed decode accepts it too instead of
/// failing later without naming the field.
pub fn whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    number
        .as_i64()
        .or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() <= LIFETIME_SECS_MAX as f64)
                .map(|f| f as i64)
        })
        .map(Some)
        .ok_or_else(|| de::Error::custom("expected a whole number"))
}

/// Validates `value`, a whole body, against `validator`: a 422 listing its
/// problems when it has any.
pub fn check(validator: &Validator, value: &Value) -> Result<(), ApiError> {
    let mut problems = Problems::new();
    violations(validator, value, "$", &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(problems))
    }
}

/// Validates `value` against `validator`, then decodes it into `T`.
pub fn decode<T: DeserializeOwned>(validator: &Validator, value: Value) -> Result<T, ApiError> {
    check(validator, &value)?;
    // The schema admits exactly what `T` accepts; a mismatch is still
    // reported as a validation error rather than a crash.
    serde_json::from_value(value).map_err(|e| ApiError::invalid("$", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The problems `instance` has against `validator`, all listed.
    fn violations_of(validator: &Validator, instance: &Value) -> Vec<FieldError> {
        let mut problems = Problems::new();
        violations(validator, instance, "$", &mut problems);
        let (listed, omitted) = problems.into_parts();
        assert_eq!(omitted, 0);
        listed
    }

    #[test]
    fn json_paths_follow_the_instance() {
        let instance = json!({"tokens": [{"metadata": {"0": "x", "a b": "y"}}]});
        assert_eq!(
            json_path("$", &instance, "/tokens/0/metadata/0"),
            "$.tokens[0].metadata['0']"
        );
        assert_eq!(
            json_path("$", &instance, "/tokens/0/metadata/a b"),
            "$.tokens[0].metadata['a b']"
        );
        assert_eq!(json_path("$", &instance, ""), "$");
    }

    #[test]
    fn every_problem_is_listed() {
        let body = json!({"collectionId": 5, "colour": "red", "metadata": {"k": 1}});
        let errors = violations_of(&schemas().token, &body);
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"$.collectionId"), "{paths:?}");
        assert!(paths.contains(&"$.colour"), "{paths:?}");
        assert!(paths.contains(&"$.metadata.k"), "{paths:?}");
    }

    #[test]
    fn an_unknown_field_of_an_empty_body_is_named() {
        let errors = violations_of(&schemas().empty, &json!({"a": 1, "b": 2}));
        let mut paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(paths, ["$.a", "$.b"]);
        assert!(violations_of(&schemas().empty, &json!({})).is_empty());
    }

    #[test]
    fn missing_required_field_names_the_field() {
        let errors = violations_of(&schemas().token, &json!({}));
        assert_eq!(
            errors,
            vec![FieldError::new("$.collectionId", "is required")]
        );
    }

    #[test]
    fn bare_dates_are_rejected() {
        let body = json!({"collectionId": "c", "expiresAt": "2026-01-17"});
        let errors = violations_of(&schemas().token, &body);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "$.expiresAt");
    }

    #[test]
    fn a_long_rejected_value_is_quoted_cut() {
        let long = "x".repeat(10_000);
        let body = json!({"collectionId": "c", "description": long});
        let errors = violations_of(&schemas().token, &body);
        assert_eq!(errors.len(), 1);
        let shown = "x".repeat(quote::QUOTE_CHARS_MAX - 1);
        assert_eq!(
            errors[0].message,
            format!(
                "\"{shown}{} is longer than 1000 characters",
                quote::CUT_MARK
            )
        );
    }

    #[test]
    fn problems_past_the_cap_are_counted_exactly() {
        let fields: serde_json::Map<String, Value> =
            (0..250).map(|i| (format!("f{i}"), json!(i))).collect();
        let mut problems = Problems::new();
        for _ in 0..3 {
            violations(
                &schemas().empty,
                &Value::Object(fields.clone()),
                "$",
                &mut problems,
            );
        }
        assert_eq!(problems.len(), 750);
        let (listed, omitted) = problems.into_parts();
        assert_eq!(listed.len(), crate::api::problems::VALIDATION_ERRORS_MAX);
        assert_eq!(omitted, 650);
    }
}
