//! Target `request_body`: a request body read by its route, as the
//! [`Checked`](crate::api::checked::Checked) extractor reads it (content
//! type, JSON, schema, typed decode), and for token creates as planning
//! starts on it.
//!
//! Input: a route byte, then the body. The byte's low 4 bits pick the route
//! (modulo [`ROUTES`]); its bits 4–5 the `Content-Type` (modulo
//! [`CONTENT_TYPES`]).
//!
//! What must hold: a body is accepted or refused with a client error (400,
//! 413 or 422) whose 422 lists at least one problem, each at a JSONPath;
//! the error renders. For a batch of tokens, the hand-written check of its
//! top level lists the problems a JSON Schema check of that shape lists,
//! and each item is checked against the token schema and decoded as the
//! planner decodes it. For a token create, its times parse or are refused
//! (never a panic).

use crate::api::accounts::{CreateAccount, CreateApiKey};
use crate::api::batch::{self, BatchBody};
use crate::api::checked::CheckedBody;
use crate::api::collections::CreateCollection;
use crate::api::error::{ApiError, ErrorCode, FieldError};
use crate::api::lifecycle::{EmptyBody, HoldBody, RedeemBatchBody, ValidateBody, VoidBody};
use crate::api::plan::TokenBody;
use crate::api::problems::Problems;
use crate::api::tokens::{BatchText, CreateBody, RedeemBody};
use crate::api::validate::{schemas, violations, BATCH_TOKENS_MAX};
use crate::timestamp;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::test::TestRequest;
use actix_web::{HttpRequest, ResponseError};
use bytes::BytesMut;
use serde_json::{json, Value};
use std::ops::ControlFlow;
use std::sync::OnceLock;

/// Largest input worth trying: a batch of a few tokens.
pub const INPUT_BYTES_MAX: usize = 16 << 10;

/// The routes with a body, in the order the route byte picks them.
pub const ROUTES: [&str; 11] = [
    "POST /api/accounts",
    "POST /api/accounts/{id}/api-keys",
    "POST /api/collections",
    "POST /api/tokens",
    "POST /api/tokens/batch",
    "POST /api/tokens/{id}/redeem",
    "POST /api/tokens/{id}/holds",
    "POST /api/tokens/{id}/holds/{holdId}/capture",
    "POST /api/tokens/{id}/redemption/void",
    "POST /api/tokens/{id}/validate",
    "POST /api/tokens/redeem",
];

/// The `Content-Type` headers the content-type bits pick (`None`: none).
pub const CONTENT_TYPES: [Option<&str>; 4] = [
    Some("application/json"),
    Some("application/merge-patch+json; charset=utf-8"),
    Some("text/plain"),
    None,
];

/// Problems a capped validation list may hold; beyond it lists are not
/// compared.
const COMPARED_PROBLEMS_MAX: usize = 100;

/// Runs one input; panics on a bug.
pub fn run(data: &[u8]) {
    let Some((&choice, body)) = data.split_first() else {
        return;
    };
    let route = usize::from(choice & 0x0f) % ROUTES.len();
    let content_type = CONTENT_TYPES[usize::from(choice >> 4) % CONTENT_TYPES.len()];
    let mut request = TestRequest::post();
    if let Some(content_type) = content_type {
        request = request.insert_header((CONTENT_TYPE, content_type));
    }
    let req = request.to_http_request();
    let outcome = match route {
        0 => decode::<CreateAccount>(&req, body),
        1 => decode::<CreateApiKey>(&req, body),
        2 => decode::<CreateCollection>(&req, body),
        3 => decode::<CreateBody>(&req, body).map(|()| token(body)),
        4 => decode::<BatchText>(&req, body).and_then(|()| token_batch(body)),
        5 => decode::<RedeemBody>(&req, body),
        6 => decode::<HoldBody>(&req, body),
        7 => decode::<EmptyBody>(&req, body),
        8 => decode::<VoidBody>(&req, body),
        9 => decode::<ValidateBody>(&req, body),
        _ => decode::<RedeemBatchBody>(&req, body),
    };
    if let Err(error) = outcome {
        check_refusal(&error);
    }
}

/// The route's own decode of `body`.
fn decode<B: CheckedBody>(req: &HttpRequest, body: &[u8]) -> Result<(), ApiError> {
    B::decode(req, BytesMut::from(body)).map(drop)
}

/// A refusal is a client error that says what is wrong, and renders.
fn check_refusal(error: &ApiError) {
    let status = error.code.status();
    assert!(
        matches!(
            error.code,
            ErrorCode::BadRequest | ErrorCode::PayloadTooLarge | ErrorCode::ValidationFailed
        ),
        "a body refused with {status}: {error}"
    );
    if error.code == ErrorCode::ValidationFailed {
        assert!(
            !error.validation_errors.is_empty(),
            "a 422 lists no problem"
        );
        for problem in &error.validation_errors {
            assert!(problem.path.starts_with('$'), "{problem:?}");
        }
    }
    assert_eq!(error.error_response().status(), status);
}

/// A token create body that passed its schema, decoded as the planner
/// decodes it.
fn token(body: &[u8]) {
    if let Err(e) = serde_json::from_slice::<Value>(body) {
        panic!("a body the route accepted is not JSON: {e}");
    }
    plan_start(body);
}

/// A token body as the planner starts on it: decoded from its text (so
/// that `data` stays as sent), then its times, and its children's, parsed.
fn plan_start(text: &[u8]) {
    let Ok(body) = serde_json::from_slice::<TokenBody>(text) else {
        return;
    };
    let children = body.children.iter().flatten();
    let times = [&body.active_from, &body.expires_at]
        .into_iter()
        .chain(children.flat_map(|child| [&child.active_from, &child.expires_at]));
    for text in times.flatten() {
        if let Err(message) = timestamp::parse(text) {
            assert!(!message.is_empty());
        }
    }
}

/// A batch body the route accepted: split at its top level (whose problems
/// must be a schema check's), each item checked and decoded, as
/// `plan_batch` does before it needs the engine.
fn token_batch(body: &[u8]) -> Result<(), ApiError> {
    let mut batch = BatchBody::split(body)?;
    let top = std::mem::take(&mut batch.errors);
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        let mut expected = Problems::new();
        violations(batch_shape(), &value, "$", &mut expected);
        if expected.len() < COMPARED_PROBLEMS_MAX {
            let same = top.len() == expected.len()
                && top
                    .listed()
                    .iter()
                    .zip(expected.listed())
                    .all(|(got, want)| same_problem(got, want));
            assert!(
                same,
                "the batch's top level is not checked as its schema says: {:?} where {:?}",
                top, expected
            );
        }
    }
    let mut problems = Problems::new();
    let mut failed = None;
    batch.for_each_item(|i, raw| {
        let item = match batch::value(raw) {
            Ok(item) => item,
            Err(e) => {
                failed = Some(e);
                return ControlFlow::Break(());
            }
        };
        let before = problems.len();
        violations(
            &schemas().token,
            &item,
            &format!("$.tokens[{i}]"),
            &mut problems,
        );
        if problems.len() == before {
            plan_start(raw.get().as_bytes());
        }
        ControlFlow::Continue(())
    });
    if let Some(e) = failed {
        return Err(e);
    }
    problems.append(top);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(problems))
    }
}

/// The same problem: the same path and message, except that the batch
/// check cuts a long quote of the rejected value short (`…`, see
/// [`batch::QUOTE_CHARS_MAX`]) where a schema check quotes it whole.
fn same_problem(got: &FieldError, want: &FieldError) -> bool {
    let cut_short = || {
        got.message.split_once('…').is_some_and(|(head, tail)| {
            want.message.starts_with(head) && want.message.ends_with(tail)
        })
    };
    got.path == want.path && (got.message == want.message || cut_short())
}

/// The top level of a batch body as a JSON Schema: what the batch module
/// checks by hand.
fn batch_shape() -> &'static jsonschema::Validator {
    static SHAPE: OnceLock<jsonschema::Validator> = OnceLock::new();
    SHAPE.get_or_init(|| {
        let schema = json!({
            "type": "object", "additionalProperties": false,
            "required": ["tokens"],
            "properties": {"tokens": {
                "type": "array", "minItems": 1, "maxItems": BATCH_TOKENS_MAX
            }}
        });
        match jsonschema::validator_for(&schema) {
            Ok(validator) => validator,
            Err(e) => panic!("the batch shape schema does not compile: {e}"),
        }
    })
}
