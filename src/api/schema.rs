//! Schema pieces the request and response types are described with, where a
//! `#[schema(...)]` attribute cannot say it: limits that are constants of the
//! code (an attribute takes only literals), map keys, unions of types, and
//! the model's enums, which the API writes as bare `enum`s.
//!
//! Every request type derives its schema ([`utoipa::ToSchema`]); those
//! derives name these functions (`schema_with`). The document
//! ([`openapi`](super::openapi)) collects the result, and request validation
//! ([`validate`](super::validate)) compiles the schemas out of the document,
//! so what is documented is what is enforced.

use super::validate::{
    BATCH_TOKENS_MAX, CHILDREN_MAX, LIFETIME_SECS_MAX, REDEMPTIONS_MAX, VOID_REASON_CHARS_MAX,
};
use crate::model::collection::{HOLD_TTL_SECS_LIMIT, VOID_WINDOW_SECS_LIMIT};
use crate::model::{metadata, Liveness, Scope, TokenType};
use std::borrow::Cow;
use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

/// A string of `min..=max` characters.
pub fn text(min: usize, max: usize) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(min))
        .max_length(Some(max))
}

/// A whole number in `min..=max`.
pub fn whole(min: i64, max: i64) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(min))
        .maximum(Some(max))
}

/// One of `values`, of no declared type: a wrong value is one problem
/// ("is not one of"), not two (type and enum).
pub fn one_of(values: &[&str]) -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .enum_values(Some(values.iter().copied()))
        .into()
}

/// An RFC 3339 date-time (with time and offset: a bare date is refused).
pub fn date_time() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        .into()
}

/// A reference to the component schema of `T`.
pub fn reference<T: ToSchema>() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(T::name()))
}

/// `expiresIn`, `tokenExpiresAfter`: seconds, 1 to 100 years.
pub fn lifetime_secs() -> Schema {
    whole(1, LIFETIME_SECS_MAX).into()
}

/// `holdTtlSecsMax`, `ttlSecs`: seconds of a hold.
pub fn hold_ttl_secs() -> Schema {
    whole(1, HOLD_TTL_SECS_LIMIT).into()
}

/// `voidWindowSecs`: seconds after a redemption during which it may be
/// voided (0: never).
pub fn void_window_secs() -> Schema {
    whole(0, VOID_WINDOW_SECS_LIMIT).into()
}

/// A token's `metadata`: string pairs, bounded in number, key and value
/// length.
pub fn metadata() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .max_properties(Some(metadata::PAIRS_MAX))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(SchemaType::AnyValue)
                .max_length(Some(metadata::KEY_CHARS_MAX)),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(metadata::VALUE_CHARS_MAX)),
        ))
        .into()
}

/// A token's `data`: any JSON (its size and the collection's `dataSchema`
/// are checked after the schema).
pub fn any() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .into()
}

/// A collection's `dataSchema`: a JSON Schema, an object or a boolean.
pub fn json_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::Object, Type::Boolean]))
        .into()
}

/// An API key's `scopes`: distinct known scope names, or `*`.
pub fn scopes() -> Schema {
    let mut names: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
    names.push("*");
    ArrayBuilder::new()
        .items(RefOr::T(one_of(&names)))
        .min_items(Some(1))
        .max_items(Some(names.len()))
        .unique_items(true)
        .into()
}

/// A collection's `merchants`: distinct merchant ids.
pub fn merchants() -> Schema {
    ArrayBuilder::new()
        .items(text(1, 200))
        .max_items(Some(1000))
        .unique_items(true)
        .into()
}

/// A token's `children`: tokens created with it, which have no children.
pub fn children() -> Schema {
    ArrayBuilder::new()
        .items(reference::<super::plan::ChildBody>())
        .max_items(Some(CHILDREN_MAX))
        .into()
}

/// A batch create's `tokens`.
pub fn batch_tokens() -> Schema {
    ArrayBuilder::new()
        .items(reference::<super::plan::TokenBody>())
        .min_items(Some(1))
        .max_items(Some(BATCH_TOKENS_MAX))
        .into()
}

/// A void's `reason`.
pub fn void_reason() -> Schema {
    text(0, VOID_REASON_CHARS_MAX).into()
}

/// A batch redeem's `redemptions`.
pub fn redemptions() -> Schema {
    ArrayBuilder::new()
        .items(reference::<super::lifecycle::RedemptionItem>())
        .min_items(Some(1))
        .max_items(Some(REDEMPTIONS_MAX))
        .into()
}

impl PartialSchema for Liveness {
    fn schema() -> RefOr<Schema> {
        RefOr::T(one_of(&[Liveness::Test.as_str(), Liveness::Main.as_str()]))
    }
}

impl ToSchema for Liveness {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Liveness")
    }
}

impl PartialSchema for TokenType {
    fn schema() -> RefOr<Schema> {
        let names: Vec<&str> = TokenType::ALL.iter().map(|t| t.as_str()).collect();
        RefOr::T(one_of(&names))
    }
}

impl ToSchema for TokenType {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("TokenType")
    }
}
