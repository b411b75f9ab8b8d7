//! Planning token creates: validated token bodies become engine commands
//! ([`NewToken`]s), every problem collected before giving up, so that one
//! response lists them all.
//!
//! A body has passed its JSON Schema already; planning checks what a schema
//! cannot say: the collection is the caller's, times parse and are in order,
//! `data` fits and matches the collection's `dataSchema`, idempotency keys
//! are not reused within the request. It also picks each token's id (random,
//! or derived from its idempotency key so that a retry lands on the same
//! shard) and the fingerprint that tells a retry from a reuse of a key.
//!
//! A token's `data` is stored exactly as sent (numbers, key order,
//! whitespace): the typed body is decoded from the body's text, where `data`
//! stays that text, while the schema checks (the token schema, the
//! collection's `dataSchema`) read the parsed `Value`. A number a `Value`
//! cannot hold exactly (`1e-999999`, 30 digits) is checked as the nearest
//! double; one beyond the double range (`1e400`) does not parse, and the
//! body is refused as malformed JSON before any of this.

use super::auth::AccountCaller;
use super::batch::{self, BatchBody};
use super::collections::liveness_mismatch;
use super::error::{ApiError, ErrorCode, FieldError};
use super::problems::Problems;
use super::schema::{self, reference};
use super::validate::{schemas, violations, whole_number, BATCH_TOKENS_MAX, DATA_BYTES_MAX};
use crate::clock::Millis;
use crate::command::{Expiry, NewToken};
use crate::engine::Engine;
use crate::ids::{CollectionId, TokenId};
use crate::model::{Collection, Encryption, EncryptionKey, Liveness, Metadata, TokenType};
use crate::timestamp;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;
use std::sync::Arc;
use utoipa::ToSchema;

/// The body of `POST /api/tokens` (and each item of a batch), after its
/// schema check: field presence and shapes are already known good. Decoded
/// from the body's text, so that `data` is exactly what was sent. Its
/// derived schema is the token schema requests are checked against.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenBody {
    /// The collection the token is issued into.
    #[schema(required = true, nullable = false, min_length = 1, max_length = 64)]
    pub collection_id: Option<String>,
    /// Makes the create safe to retry: the same key answers the same token.
    #[schema(nullable = false, min_length = 1, max_length = 255)]
    pub idempotency_key: Option<String>,
    /// `test` or `main`; must match the collection's.
    #[schema(schema_with = reference::<Liveness>)]
    pub liveness: Option<Liveness>,
    /// `token`, `card` or `bank`.
    #[serde(rename = "type")]
    #[schema(schema_with = reference::<TokenType>)]
    pub kind: Option<TokenType>,
    /// Free text shown with the token.
    #[schema(nullable = false, max_length = 1000)]
    pub description: Option<String>,
    /// The tokenized data as sent (any JSON, at most 16 KiB), checked
    /// against the collection's `dataSchema`; `null` is no data.
    #[schema(schema_with = schema::any)]
    pub data: Option<Box<RawValue>>,
    /// String pairs, searchable in lists.
    #[schema(schema_with = schema::metadata)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// How `data` was encrypted by the caller, if it was.
    #[schema(schema_with = reference::<EncryptionBody>)]
    pub encryption: Option<EncryptionBody>,
    /// RFC 3339 time from which the token can be redeemed.
    #[schema(schema_with = schema::date_time)]
    pub active_from: Option<String>,
    /// RFC 3339 expiry; excludes `expiresIn`.
    #[schema(schema_with = schema::date_time)]
    pub expires_at: Option<String>,
    /// Seconds from now to expiry; excludes `expiresAt`.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(schema_with = schema::lifetime_secs)]
    pub expires_in: Option<i64>,
    /// Child tokens created with this one (in its collection).
    #[schema(schema_with = schema::children)]
    pub children: Option<Vec<ChildBody>>,
}

/// A child token of a create: a token body without children of its own
/// (and whose collection is the parent's).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChildBody {
    /// The parent's collection, when given.
    #[schema(nullable = false, min_length = 1, max_length = 64)]
    pub collection_id: Option<String>,
    /// As for the parent.
    #[schema(nullable = false, min_length = 1, max_length = 255)]
    pub idempotency_key: Option<String>,
    /// As for the parent.
    #[schema(schema_with = reference::<Liveness>)]
    pub liveness: Option<Liveness>,
    /// As for the parent.
    #[serde(rename = "type")]
    #[schema(schema_with = reference::<TokenType>)]
    pub kind: Option<TokenType>,
    /// As for the parent.
    #[schema(nullable = false, max_length = 1000)]
    pub description: Option<String>,
    /// As for the parent.
    #[schema(schema_with = schema::any)]
    pub data: Option<Box<RawValue>>,
    /// As for the parent.
    #[schema(schema_with = schema::metadata)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// As for the parent.
    #[schema(schema_with = reference::<EncryptionBody>)]
    pub encryption: Option<EncryptionBody>,
    /// As for the parent.
    #[schema(schema_with = schema::date_time)]
    pub active_from: Option<String>,
    /// As for the parent.
    #[schema(schema_with = schema::date_time)]
    pub expires_at: Option<String>,
    /// As for the parent.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(schema_with = schema::lifetime_secs)]
    pub expires_in: Option<i64>,
}

impl From<ChildBody> for TokenBody {
    fn from(child: ChildBody) -> Self {
        let ChildBody {
            collection_id,
            idempotency_key,
            liveness,
            kind,
            description,
            data,
            metadata,
            encryption,
            active_from,
            expires_at,
            expires_in,
        } = child;
        Self {
            collection_id,
            idempotency_key,
            liveness,
            kind,
            description,
            data,
            metadata,
            encryption,
            active_from,
            expires_at,
            expires_in,
            children: None,
        }
    }
}

/// `encryption` of a token body: the keys of the envelope that encrypted
/// its `data`.
#[derive(Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EncryptionBody {
    /// The content encryption key.
    #[schema(nullable = false)]
    pub cek: Option<EncryptionKeyBody>,
    /// The key encryption key.
    #[schema(nullable = false)]
    pub kek: Option<EncryptionKeyBody>,
}

/// One key of [`EncryptionBody`].
#[derive(Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EncryptionKeyBody {
    /// The (wrapped) key or a key identifier.
    #[schema(nullable = false, max_length = 4096)]
    pub key: Option<String>,
    /// Its algorithm, e.g. `AES` or `RSA`.
    #[schema(nullable = false, max_length = 64)]
    pub alg: Option<String>,
}

impl From<EncryptionKeyBody> for EncryptionKey {
    fn from(body: EncryptionKeyBody) -> Self {
        Self {
            key: body.key,
            alg: body.alg,
        }
    }
}

impl From<EncryptionBody> for Encryption {
    fn from(body: EncryptionBody) -> Self {
        Self {
            cek: body.cek.map(Into::into),
            kek: body.kek.map(Into::into),
        }
    }
}

/// Turns validated token bodies into engine commands, collecting every
/// problem before giving up, so one response lists them all.
pub struct Planner<'a> {
    /// Who creates: its account owns the tokens, its key name is `createdBy`.
    caller: &'a AccountCaller,
    /// The collections are looked up in its catalog.
    engine: &'a Engine,
    /// When the request is planned: explicit expiries must be after it.
    now: Millis,
    /// The tokens planned so far, parents before their children.
    tokens: Vec<NewToken>,
    /// Every problem found so far, for one 422.
    errors: Problems,
    /// Some token names an unknown or foreign collection (404).
    collection_missing: bool,
    /// Some token asks for another liveness than the account's (403).
    liveness_differs: bool,
    /// Idempotency keys used so far: each may name one token of a request.
    idempotency_keys: HashSet<String>,
}

/// SHA-256 (truncated) of a token body: its canonical JSON (serde_json's map
/// keeps keys sorted, so the same fields in another order give the same
/// fingerprint), except that `data` is written as sent, so a retry replays
/// only with the very same `data` text. `value` is the body parsed, `body`
/// the same body decoded from its text.
fn fingerprint(value: &Value, body: &TokenBody) -> [u8; 16] {
    let mut bytes = Vec::new();
    let children = body.children.as_deref().unwrap_or_default();
    write_canonical(&mut bytes, value, body.data.as_deref(), children);
    let digest = Sha256::digest(&bytes);
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// Writes `value` as compact JSON with its keys sorted, but its `data` as
/// the text `data`, and its children's as theirs in `children`. (Data sent
/// compact with sorted keys thus prints as before `data` was kept as text.)
fn write_canonical(
    out: &mut Vec<u8>,
    value: &Value,
    data: Option<&RawValue>,
    children: &[ChildBody],
) {
    let Value::Object(fields) = value else {
        write_value(out, value);
        return;
    };
    out.push(b'{');
    for (i, (name, field)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_value(out, &Value::String(name.clone()));
        out.push(b':');
        match (name.as_str(), field) {
            ("data", _) => match data {
                Some(raw) => out.extend_from_slice(raw.get().as_bytes()),
                None => out.extend_from_slice(b"null"),
            },
            ("children", Value::Array(items)) if items.len() == children.len() => {
                out.push(b'[');
                for (j, (item, child)) in items.iter().zip(children).enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    write_canonical(out, item, child.data.as_deref(), &[]);
                }
                out.push(b']');
            }
            _ => write_value(out, field),
        }
    }
    out.push(b'}');
}

/// Writes `value` as compact JSON (into memory: it cannot fail).
fn write_value(out: &mut Vec<u8>, value: &Value) {
    let written = serde_json::to_writer(&mut *out, value);
    debug_assert!(written.is_ok(), "a Value serializes into memory");
}

impl<'a> Planner<'a> {
    /// A planner for `caller`'s tokens.
    pub fn new(caller: &'a AccountCaller, engine: &'a Engine) -> Self {
        Self {
            caller,
            engine,
            now: engine.now(),
            tokens: Vec::new(),
            errors: Problems::new(),
            collection_missing: false,
            liveness_differs: false,
            idempotency_keys: HashSet::new(),
        }
    }

    /// Plans a top-level token and its children from its body, `value`
    /// parsed and schema-checked, and `text` the same body as sent; returns
    /// its index in `self.tokens`.
    pub fn plan_top(&mut self, value: &Value, text: &[u8], path: &str) -> usize {
        let mut body: TokenBody = match serde_json::from_slice(text) {
            Ok(body) => body,
            Err(e) => {
                self.errors.push(FieldError::new(path, e.to_string()));
                return usize::MAX;
            }
        };
        let print = fingerprint(value, &body);
        let child_values: &[Value] = value
            .get("children")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice);
        let collection_text = body.collection_id.clone().unwrap_or_default();
        let collection_id = CollectionId::parse(&collection_text);
        let top = self.tokens.len();
        let mut child_ids = Vec::new();
        let parent_id = self.plan_one(&body, value, collection_id, print, path, None);
        // Children of an idempotent parent get ids derived from the parent's,
        // so a replayed create names the same children instead of new ones.
        let idempotent_parent = parent_id.filter(|_| body.idempotency_key.is_some());
        let children = body.children.take().unwrap_or_default();
        for (j, child) in children.into_iter().map(TokenBody::from).enumerate() {
            let child_path = format!("{path}.children[{j}]");
            if child
                .collection_id
                .as_ref()
                .is_some_and(|c| *c != collection_text)
            {
                self.errors.push(FieldError::new(
                    format!("{child_path}.collectionId"),
                    "must be the parent's collection",
                ));
            }
            let Some(child_value) = child_values.get(j) else {
                debug_assert!(
                    false,
                    "the parsed and decoded bodies have the same children"
                );
                self.errors
                    .push(FieldError::new(&child_path, "could not be read"));
                continue;
            };
            let print = fingerprint(child_value, &child);
            let derived = idempotent_parent.map(|parent| TokenId::child_of(parent, j));
            if let Some(id) = self.plan_one(
                &child,
                child_value,
                collection_id,
                print,
                &child_path,
                derived,
            ) {
                child_ids.push(id);
            }
        }
        if let Some(parent) = self.tokens.get_mut(top) {
            parent.children = child_ids;
        }
        top
    }

    /// Plans one token, `body` decoded and `value` parsed; `None` when it
    /// has errors. `derived` is the id of a child of an idempotent parent,
    /// used unless it has its own key.
    fn plan_one(
        &mut self,
        body: &TokenBody,
        value: &Value,
        collection_id: Option<CollectionId>,
        print: [u8; 16],
        path: &str,
        derived: Option<TokenId>,
    ) -> Option<TokenId> {
        let errors_before = self.errors.len();
        let collection = self.check_owner(body, collection_id, path);
        let (active_from, expiry) = self.validity(body, path);
        let data = self.data(body, value.get("data"), collection.as_deref(), path);
        if self.errors.len() > errors_before {
            return None;
        }
        let collection = collection?;
        let account = &self.caller.account;
        let id = match (&body.idempotency_key, derived) {
            (Some(key), _) => TokenId::for_idempotency_key(account.id, key),
            (None, Some(id)) => id,
            (None, None) => TokenId::random(),
        };
        let metadata = body
            .metadata
            .as_ref()
            .map(|m| Metadata::from_pairs(m.iter().map(|(k, v)| (k.as_str(), v.as_str()))))
            .unwrap_or_default();
        self.tokens.push(NewToken {
            id,
            account_id: account.id,
            collection_id: collection.record.id,
            created_by: self.caller.key.name.clone(),
            kind: body.kind.unwrap_or(TokenType::Token),
            description: body.description.clone(),
            data,
            encryption: body.encryption.clone().map(Encryption::from),
            metadata,
            active_from_ms: active_from,
            expiry,
            children: Vec::new(),
            fingerprint: (body.idempotency_key.is_some() || derived.is_some()).then_some(print),
            sealed_data: None,
            sealed_encryption: None,
        });
        Some(id)
    }

    /// Whose the token is: the caller's collection (noted missing when it is
    /// unknown or another account's), the caller's liveness, and an
    /// idempotency key no other token of the request uses.
    fn check_owner(
        &mut self,
        body: &TokenBody,
        collection_id: Option<CollectionId>,
        path: &str,
    ) -> Option<Arc<Collection>> {
        let account = &self.caller.account;
        let collection =
            collection_id.and_then(|id| self.engine.catalog().collection_of(account.id, id));
        if collection.is_none() {
            self.collection_missing = true;
        }
        if body.liveness.is_some_and(|l| l != account.liveness) {
            self.liveness_differs = true;
        }
        if let Some(key) = &body.idempotency_key {
            if !self.idempotency_keys.insert(key.clone()) {
                self.errors.push(FieldError::new(
                    format!("{path}.idempotencyKey"),
                    "is used by another token of this request",
                ));
            }
        }
        collection
    }

    /// When the token is valid: `activeFrom`, and an expiry from
    /// `expiresAt` or `expiresIn` (not both) that is in the future and after
    /// `activeFrom`, else the collection's default.
    fn validity(&mut self, body: &TokenBody, path: &str) -> (Option<Millis>, Expiry) {
        let active_from = self.time(path, "activeFrom", body.active_from.as_deref());
        let expires_at = self.time(path, "expiresAt", body.expires_at.as_deref());
        let expiry = match (expires_at, body.expires_in, &body.expires_at) {
            (_, Some(_), Some(_)) => {
                self.errors.push(FieldError::new(
                    format!("{path}.expiresIn"),
                    "cannot be given together with expiresAt",
                ));
                Expiry::CollectionDefault
            }
            (Some(at), None, _) => Expiry::At(at),
            (None, Some(secs), _) => Expiry::InSecs(secs),
            _ => Expiry::CollectionDefault,
        };
        // The collection's default is neither checked nor known here.
        if expiry != Expiry::CollectionDefault {
            let end = expiry.expires_at_ms(self.now, None);
            let field = if matches!(expiry, Expiry::At(_)) {
                "expiresAt"
            } else {
                "expiresIn"
            };
            if end <= self.now {
                self.errors.push(FieldError::new(
                    format!("{path}.{field}"),
                    "must be in the future",
                ));
            } else if active_from.is_some_and(|from| end <= from) {
                self.errors.push(FieldError::new(
                    format!("{path}.{field}"),
                    "must be after activeFrom",
                ));
            }
        }
        (active_from, expiry)
    }

    /// The time in the field `field` of the token at `path`, if given; a
    /// problem noted when it does not parse.
    fn time(&mut self, path: &str, field: &str, text: Option<&str>) -> Option<Millis> {
        match timestamp::parse(text?) {
            Ok(ms) => Some(ms),
            Err(message) => {
                self.errors
                    .push(FieldError::new(format!("{path}.{field}"), message));
                None
            }
        }
    }

    /// The token's `data` as the JSON text sent: at most
    /// [`DATA_BYTES_MAX`] bytes, and valid against the collection's
    /// `dataSchema`, checked on `parsed`, the same data parsed (an absent
    /// `data` is checked as `null`).
    fn data(
        &mut self,
        body: &TokenBody,
        parsed: Option<&Value>,
        collection: Option<&Collection>,
        path: &str,
    ) -> Option<String> {
        let data_path = format!("{path}.data");
        let data = body.data.as_ref().map(|raw| raw.get().to_owned());
        if data
            .as_ref()
            .is_some_and(|text| text.len() > DATA_BYTES_MAX)
        {
            self.errors.push(FieldError::new(
                &data_path,
                format!("must be at most {DATA_BYTES_MAX} bytes of JSON"),
            ));
        }
        if let Some(validator) = collection.and_then(|c| c.data_validator.as_ref()) {
            let instance = parsed.unwrap_or(&Value::Null);
            violations(validator, instance, &data_path, &mut self.errors);
        }
        data
    }

    /// The commands, or the error that refuses the whole request:
    /// 422 first, then 404 for the collection, then 403 for liveness.
    pub fn finish(self) -> Result<Vec<NewToken>, ApiError> {
        if !self.errors.is_empty() {
            return Err(ApiError::validation(self.errors));
        }
        if self.collection_missing {
            return Err(ApiError::new(
                ErrorCode::CollectionNotFound,
                "No such collection.",
            ));
        }
        if self.liveness_differs {
            return Err(liveness_mismatch(self.caller.account.liveness));
        }
        Ok(self.tokens)
    }
}

/// Checks every item of `batch` against the token schema and plans it,
/// returning each item's index in the planned tokens. An item is a `Value`
/// only for its own check and plan, so one item's tree is alive at a time.
///
/// Every item is checked, so that one 422 lists the problems of all of them
/// (and of the top level, after theirs), up to the cap of a 422, and counts
/// the rest. Those problems are answered instead of anything planning would
/// find, as for a single token, so planning stops at the first of them.
pub fn plan_batch(planner: &mut Planner<'_>, batch: BatchBody<'_>) -> Result<Vec<usize>, ApiError> {
    let mut problems = Problems::new();
    // Only a batch within the limit is planned.
    let mut tops = Vec::with_capacity(batch.item_count.min(BATCH_TOKENS_MAX));
    let mut failed = None;
    batch.for_each_item(|i, raw| {
        // Once the 422 lists all it may, problems are only counted: no
        // path is written for them.
        let path = if problems.is_full() {
            String::new()
        } else {
            format!("$.tokens[{i}]")
        };
        let item = match batch::value(raw) {
            Ok(item) => item,
            Err(e) => {
                failed = Some(e);
                return ControlFlow::Break(());
            }
        };
        violations(&schemas().token, &item, &path, &mut problems);
        if problems.is_empty() && batch.errors.is_empty() {
            tops.push(planner.plan_top(&item, raw.get().as_bytes(), &path));
        }
        ControlFlow::Continue(())
    });
    if let Some(e) = failed {
        return Err(e);
    }
    problems.append(batch.errors);
    if problems.is_empty() {
        Ok(tops)
    } else {
        Err(ApiError::validation(problems))
    }
}
