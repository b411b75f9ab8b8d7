//! The HTTP server, assembled from actix-web's parts the way
//! `actix_web::HttpServer` assembles it, except that every accepted
//! connection is wrapped in an [`EdgeStream`] before actix-http reads it.
//!
//! actix-http's own timers are set so that they never act before the
//! edge's: no head timeout of its own (the edge holds heads back until they
//! are complete, so actix-http never sees a partial one) and no keep-alive
//! timer (the edge closes idle connections).

use super::admission::Admission;
use super::{EdgeLimits, EdgeStream};
use actix_http::body::MessageBody;
use actix_http::{HttpService, KeepAlive, Protocol, Request, Response};
use actix_rt::net::TcpStream;
use actix_server::{Server, ServerBuilder};
use actix_service::{
    fn_service, map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt,
};
use actix_web::dev::AppConfig;
use std::fmt;
use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// Backlog of connections the kernel queues before they are accepted.
pub const BACKLOG: u32 = 4096;
/// How long a connection whose response is written may take to close
/// before it is dropped (actix-web's default).
pub const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Starts serving `listener` on `workers` threads, each running an
/// application made by `factory`, every connection held to `limits`.
pub fn serve<F, I, S, B>(
    listener: TcpListener,
    workers: usize,
    limits: EdgeLimits,
    factory: F,
) -> io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as actix_service::Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    limits.assert_valid();
    assert!(workers >= 1, "at least one worker");
    let admission = Admission::new(limits.connections_max, limits.connections_per_client_max);
    let addr = listener.local_addr()?;
    let builder: ServerBuilder = Server::build()
        .workers(workers)
        .backlog(BACKLOG)
        .disable_signals();
    let shutdown = builder.graceful_shutdown_signal();
    let server = builder
        .listen("tokend-http", listener, move || {
            let admission = Arc::clone(&admission);
            let shutdown = shutdown.clone();
            let app = factory()
                .into_factory()
                .map_err(|err| err.into().error_response());
            let http = HttpService::build()
                .keep_alive(KeepAlive::Os)
                .client_request_timeout(Duration::ZERO)
                .client_disconnect_timeout(DISCONNECT_TIMEOUT)
                .h1_allow_half_closed(true)
                .local_addr(addr)
                .graceful_shutdown_signal(move || {
                    let shutdown = shutdown.clone();
                    async move { shutdown.notified().await }
                })
                .finish(map_config(app, |_| AppConfig::default()));
            fn_service(move |io: TcpStream| {
                let peer = io.peer_addr().ok();
                let stream = EdgeStream::admit(io, peer, &admission, limits);
                async move { Ok((stream, Protocol::Http1, peer)) }
            })
            .and_then(http)
        })?
        .run();
    Ok(server)
}
