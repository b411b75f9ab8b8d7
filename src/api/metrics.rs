//! `GET /metrics` (no key, as scrapers expect) and the middleware that records every
//! request by route pattern, method and status.
//!
//! Each route is registered through `api::resource`, which attaches a
//! [`RouteLabel`] (the route's index in [`ROUTES`]) as resource data. Once a
//! request is answered the middleware reads that label back from the request
//! (a lookup in the request's data containers, no allocation, no re-matching
//! of the path), so it never sees a raw path; requests that matched no route
//! carry no label and count as `unmatched`.

use super::error::{ApiError, ErrorCode};
use super::state::AppState;
use crate::metrics::http::{HttpMetrics, MethodLabel, RequestRecorder};
use crate::metrics::CONTENT_TYPE;
use actix_web::body::MessageBody;
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::{web, HttpResponse};
use futures_util::future::{ready, Ready};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Every route pattern, as registered in [`super::routes`]: the values of the
/// `route` label.
pub const ROUTES: &[&str] = &[
    "/openapi.json",
    "/docs",
    "/docs/",
    "/docs/{file}",
    "/health/live",
    "/health/ready",
    "/metrics",
    "/api/admin/snapshot",
    "/api/accounts",
    "/api/accounts/{accountId}/api-keys",
    "/api/accounts/{accountId}/api-keys/{keyId}",
    "/api/collections",
    "/api/collections/{id}",
    "/api/tokens/batch",
    "/api/tokens/redeem",
    "/api/tokens",
    "/api/tokens/{id}",
    "/api/tokens/{id}/redeem",
    "/api/tokens/{id}/validate",
    "/api/tokens/{id}/holds",
    "/api/tokens/{id}/holds/{holdId}/capture",
    "/api/tokens/{id}/holds/{holdId}/release",
    "/api/tokens/{id}/redemption/void",
];

/// Resource data naming the route a request matched.
#[derive(Debug, Clone, Copy)]
pub struct RouteLabel {
    /// Index of the pattern in [`ROUTES`].
    index: usize,
}

impl RouteLabel {
    /// The label of the route registered as `pattern`.
    ///
    /// # Panics
    ///
    /// When `pattern` is missing from [`ROUTES`]: a route added without its
    /// label, caught as soon as any application is built.
    pub fn of(pattern: &str) -> Self {
        let index = ROUTES
            .iter()
            .position(|route| *route == pattern)
            .unwrap_or_else(|| panic!("route {pattern} is missing from api::metrics::ROUTES"));
        Self { index }
    }
}

/// `GET /metrics`: every metric of the application, as OpenMetrics text.
/// Needs no key, and answers during restore with what is known then.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Every metric, as OpenMetrics text.", content_type = "application/openmetrics-text", body = String)),
)]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let text = state
        .metrics
        .encode()
        .map_err(|_| ApiError::new(ErrorCode::Internal, "The metrics could not be encoded."))?;
    Ok(HttpResponse::Ok().content_type(CONTENT_TYPE).body(text))
}

/// Middleware factory: records every request into the application's request
/// metrics. Wrap it outermost, so the time and the status are those the
/// client gets.
pub struct RecordRequests {
    /// The families every worker's recorder takes its handles from.
    metrics: HttpMetrics,
}

impl RecordRequests {
    /// Records into `metrics`.
    pub fn new(metrics: &HttpMetrics) -> Self {
        Self {
            metrics: metrics.clone(),
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for RecordRequests
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = RecordRequestsService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    /// Called once per worker thread: each gets its own handle cache.
    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RecordRequestsService {
            service,
            recorder: Rc::new(RequestRecorder::new(self.metrics.clone(), ROUTES)),
        }))
    }
}

/// The middleware of one worker.
pub struct RecordRequestsService<S> {
    /// The rest of the application.
    service: S,
    /// This worker's handle cache (`Rc`: one thread, no atomic reference
    /// counting per request).
    recorder: Rc<RequestRecorder>,
}

impl<S, B> Service<ServiceRequest> for RecordRequestsService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = Recorded<S::Future>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        Recorded {
            method: MethodLabel::of(req.method()),
            started: Instant::now(),
            recorder: Rc::clone(&self.recorder),
            inner: self.service.call(req),
        }
    }
}

/// The response future of a request being recorded: records when the
/// response (or an error) is ready. No allocation: it wraps the inner future
/// in place.
#[pin_project::pin_project]
pub struct Recorded<F> {
    /// The request's method label.
    method: MethodLabel,
    /// When the request reached the middleware.
    started: Instant,
    /// The worker's recorder.
    recorder: Rc<RequestRecorder>,
    /// The rest of the application's answer.
    #[pin]
    inner: F,
}

impl<F, B> Future for Recorded<F>
where
    F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let elapsed = this.started.elapsed();
        match &result {
            Ok(response) => {
                let route = response
                    .request()
                    .app_data::<RouteLabel>()
                    .map(|label| label.index);
                this.recorder
                    .record(route, *this.method, response.status().as_u16(), elapsed);
            }
            // Handlers turn their errors into responses, so an error here
            // comes from below the routing: its route is unknown.
            Err(error) => {
                let status = error.as_response_error().status_code().as_u16();
                this.recorder.record(None, *this.method, status, elapsed);
            }
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_patterns_are_unique_and_labelled() {
        for (index, route) in ROUTES.iter().enumerate() {
            assert_eq!(RouteLabel::of(route).index, index, "{route} listed twice");
        }
    }

    #[test]
    #[should_panic(expected = "missing from api::metrics::ROUTES")]
    fn an_unlisted_route_is_refused() {
        RouteLabel::of("/api/nowhere");
    }
}
