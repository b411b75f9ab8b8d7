//! The request log: one event per request, under the target
//! `tokend::access`, once the response is ready.
//!
//! Operators need to tie a client's report (its `X-Request-Id`) to what the
//! server did, and to see which routes and callers fail, without a
//! debugger. Each event carries `request_id`, `method`, `route` (the matched
//! pattern, e.g. `/api/tokens/{id}/redeem`, never the raw path; `unmatched`
//! for no route), `status`, `latency_us`, and for an account key its
//! `account_id` and `key_id` (for the admin key, `admin = true`). Nothing
//! else of the request is logged: no key, body, token `data` or metadata.
//!
//! Levels: INFO for every answer below 500 (client errors are the
//! client's), WARN for 503 (overload, restore, a shard moving: the server
//! asks for a retry), ERROR for other 5xx.

use super::metrics::RouteLabel;
use super::request_id;
use crate::ids::{AccountId, KeyId};
use actix_web::body::MessageBody;
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::StatusCode;
use actix_web::HttpMessage;
use futures_util::future::{ready, Ready};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// The `route` of a request that matched no route.
pub const UNMATCHED: &str = "unmatched";

/// Who made a request, noted in its extensions once authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoggedCaller {
    /// The admin key.
    Admin,
    /// An account key.
    Account {
        /// The account it acts for.
        account_id: AccountId,
        /// The key's id (not secret: the part before its secret).
        key_id: KeyId,
    },
}

/// Middleware factory: logs every request. Wrap it outside the request id
/// middleware, so the id is on the response when it logs.
pub struct AccessLog;

impl<S, B> Transform<S, ServiceRequest> for AccessLog
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = AccessLogService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(AccessLogService { service }))
    }
}

/// The middleware of one worker.
pub struct AccessLogService<S> {
    /// The rest of the application.
    service: S,
}

impl<S, B> Service<ServiceRequest> for AccessLogService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = Logged<S::Future>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        Logged {
            started: Instant::now(),
            inner: self.service.call(req),
        }
    }
}

/// The response future of a request being logged: logs when the response
/// (or an error) is ready, without allocating beyond the event itself.
#[pin_project::pin_project]
pub struct Logged<F> {
    /// When the request reached the middleware.
    started: Instant,
    /// The rest of the application's answer.
    #[pin]
    inner: F,
}

impl<F, B> Future for Logged<F>
where
    F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let latency_us = u64::try_from(this.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        match &result {
            Ok(response) => {
                let req = response.request();
                let route = req
                    .app_data::<RouteLabel>()
                    .map_or(UNMATCHED, RouteLabel::pattern);
                let caller = req.extensions().get::<LoggedCaller>().copied();
                let request_id = response
                    .headers()
                    .get(request_id::HEADER)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("");
                log(&Line {
                    request_id,
                    method: req.method().as_str(),
                    route,
                    status: response.status(),
                    latency_us,
                    caller,
                });
            }
            // Handlers turn their errors into responses: an error here comes
            // from below the routing, before any id or caller is known.
            Err(error) => log(&Line {
                request_id: "",
                method: "",
                route: UNMATCHED,
                status: error.as_response_error().status_code(),
                latency_us,
                caller: None,
            }),
        }
        Poll::Ready(result)
    }
}

/// What one request's event says.
struct Line<'a> {
    /// The `X-Request-Id` answered.
    request_id: &'a str,
    /// The HTTP method.
    method: &'a str,
    /// The matched route pattern.
    route: &'static str,
    /// The status answered.
    status: StatusCode,
    /// Microseconds from the request reaching the middleware to its answer.
    latency_us: u64,
    /// Who made it, once authenticated.
    caller: Option<LoggedCaller>,
}

/// Emits `line` at the level its status calls for.
fn log(line: &Line<'_>) {
    let (account_id, key_id, admin) = match line.caller {
        Some(LoggedCaller::Account { account_id, key_id }) => {
            (Some(account_id), Some(key_id), None)
        }
        Some(LoggedCaller::Admin) => (None, None, Some(true)),
        None => (None, None, None),
    };
    let account_id = account_id.map(tracing::field::display);
    let key_id = key_id.map(tracing::field::display);
    macro_rules! event {
        ($level:expr) => {
            tracing::event!(
                target: "tokend::access",
                $level,
                request_id = line.request_id,
                method = line.method,
                route = line.route,
                status = line.status.as_u16(),
                latency_us = line.latency_us,
                account_id,
                key_id,
                admin,
                "request"
            )
        };
    }
    match level_of(line.status) {
        tracing::Level::ERROR => event!(tracing::Level::ERROR),
        tracing::Level::WARN => event!(tracing::Level::WARN),
        _ => event!(tracing::Level::INFO),
    }
}

/// INFO below 500, WARN for 503, ERROR for other 5xx.
fn level_of(status: StatusCode) -> tracing::Level {
    if status == StatusCode::SERVICE_UNAVAILABLE {
        tracing::Level::WARN
    } else if status.is_server_error() {
        tracing::Level::ERROR
    } else {
        tracing::Level::INFO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_never_log_as_errors() {
        assert_eq!(level_of(StatusCode::OK), tracing::Level::INFO);
        for status in [400, 401, 403, 404, 409, 413, 422, 429] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(level_of(status), tracing::Level::INFO, "{status}");
        }
        assert_eq!(
            level_of(StatusCode::SERVICE_UNAVAILABLE),
            tracing::Level::WARN
        );
        assert_eq!(
            level_of(StatusCode::INTERNAL_SERVER_ERROR),
            tracing::Level::ERROR
        );
    }
}
