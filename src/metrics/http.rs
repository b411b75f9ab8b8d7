//! Requests by route, method and status, with latency histograms.
//!
//! Labels are bounded: the route is the pattern the request matched (e.g.
//! `/api/tokens/{id}/redeem`, never the raw path), or `unmatched`; the method
//! is one of a fixed list or `OTHER`; the status is a status code. Each HTTP
//! worker thread keeps its own [`RequestRecorder`], a table of metric handles
//! by (route, method) and status filled on first use, so recording a request
//! is a lookup in a small per-thread table and three relaxed atomic adds: no
//! lock, no allocation, no label hashing. Only the first request of a new
//! label set on a worker takes the registry's lock.

use super::histogram::Histogram;
use actix_web::http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::cell::RefCell;
use std::time::Duration;

/// The route label of requests that matched no route.
pub const UNMATCHED: &str = "unmatched";

/// Method labels, by [`MethodLabel`]; anything else is `OTHER`, so an
/// unusual method cannot grow the label set.
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER",
];

/// Bounds of the request latency histogram, seconds: sub-millisecond answers
/// from memory up to requests that waited on a stalled disk.
const LATENCY_SECONDS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A request's method as a label: an index into `METHODS`, taken when the
/// request arrives (a `Copy` value, where cloning a `Method` may allocate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodLabel(usize);

impl MethodLabel {
    /// The label of `method`.
    pub fn of(method: &Method) -> Self {
        Self(match *method {
            Method::GET => 0,
            Method::HEAD => 1,
            Method::POST => 2,
            Method::PUT => 3,
            Method::DELETE => 4,
            Method::PATCH => 5,
            Method::OPTIONS => 6,
            _ => 7,
        })
    }
}

/// The labels of one request series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route pattern, or [`UNMATCHED`].
    pub route: &'static str,
    /// The method, or `OTHER`.
    pub method: &'static str,
    /// The response status code.
    pub status: u16,
}

/// A fresh latency histogram (the families' constructor).
fn latency_histogram() -> Histogram {
    Histogram::seconds(&LATENCY_SECONDS)
}

/// The request metric families of one application, shared by its workers.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    /// Requests answered, by labels.
    pub requests: Family<RequestLabels, Counter>,
    /// Time from the request reaching the application to its response being
    /// ready (body excluded: every body here is built in memory), by labels.
    pub durations: Family<RequestLabels, Histogram, fn() -> Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            durations: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
        }
    }
}

/// The handles of one label set, cached by a worker.
struct Series {
    /// The status code these handles are for.
    status: u16,
    /// Its request counter.
    requests: Counter,
    /// Its latency histogram.
    duration: Histogram,
}

/// One HTTP worker's cache of metric handles. Not shared between threads:
/// each worker builds its own, so lookups need no synchronisation.
pub struct RequestRecorder {
    /// The families handles are taken from on a cache miss.
    metrics: HttpMetrics,
    /// Route patterns by index; index `routes.len()` is [`UNMATCHED`].
    routes: &'static [&'static str],
    /// Series seen so far, by `route * METHODS.len() + method`, then by
    /// status (a handful per route: a linear scan is fastest).
    series: Box<[RefCell<Vec<Series>>]>,
}

impl RequestRecorder {
    /// A recorder for the routes `routes` (indexes as given to
    /// [`RequestRecorder::record`]), taking handles from `metrics`.
    pub fn new(metrics: HttpMetrics, routes: &'static [&'static str]) -> Self {
        let cells = (routes.len() + 1) * METHODS.len();
        Self {
            metrics,
            routes,
            series: (0..cells).map(|_| RefCell::new(Vec::new())).collect(),
        }
    }

    /// Records one answered request: `route` is the index of the matched
    /// route pattern (`None`: no route matched).
    pub fn record(
        &self,
        route: Option<usize>,
        method: MethodLabel,
        status: u16,
        elapsed: Duration,
    ) {
        let route = route
            .filter(|&r| r < self.routes.len())
            .unwrap_or(self.routes.len());
        let MethodLabel(method) = method;
        let cell = &self.series[route * METHODS.len() + method];
        if let Some(series) = cell.borrow().iter().find(|s| s.status == status) {
            series.requests.inc();
            series.duration.observe_duration(elapsed);
            return;
        }
        // First request of this label set on this worker: take the handles
        // from the families (their lock, once) and keep them.
        let labels = RequestLabels {
            route: self.routes.get(route).copied().unwrap_or(UNMATCHED),
            method: METHODS[method],
            status,
        };
        let series = Series {
            status,
            requests: self.metrics.requests.get_or_create_owned(&labels),
            duration: self.metrics.durations.get_or_create_owned(&labels),
        };
        series.requests.inc();
        series.duration.observe_duration(elapsed);
        cell.borrow_mut().push(series);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &[&str] = &["/a", "/b/{id}"];

    #[test]
    fn workers_share_series_and_unknown_routes_and_methods_fold() {
        let metrics = HttpMetrics::default();
        let one = RequestRecorder::new(metrics.clone(), ROUTES);
        let two = RequestRecorder::new(metrics.clone(), ROUTES);
        let ms = Duration::from_millis(1);
        let post = MethodLabel::of(&Method::POST);
        let get = MethodLabel::of(&Method::GET);
        one.record(Some(1), post, 200, ms);
        two.record(Some(1), post, 200, ms);
        one.record(Some(1), post, 409, ms);
        one.record(None, get, 404, ms);
        one.record(Some(7), get, 404, ms);
        let odd = MethodLabel::of(&Method::from_bytes(b"PURGE").unwrap());
        one.record(Some(0), odd, 405, ms);

        let count = |route, method, status| {
            let labels = RequestLabels {
                route,
                method,
                status,
            };
            let requests = metrics.requests.get(&labels).map(|c| c.get());
            let timed = metrics.durations.get(&labels).map(|h| h.snapshot().count);
            assert_eq!(requests, timed, "{labels:?}");
            requests.unwrap_or(0)
        };
        assert_eq!(count("/b/{id}", "POST", 200), 2);
        assert_eq!(count("/b/{id}", "POST", 409), 1);
        assert_eq!(count(UNMATCHED, "GET", 404), 2);
        assert_eq!(count("/a", "OTHER", 405), 1);
        assert_eq!(count("/a", "GET", 200), 0);
    }
}
