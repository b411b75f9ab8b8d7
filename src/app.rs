//! `Application::build(config)`: the engine plus the HTTP server, bound and
//! ready to run — what `main` runs and what tests start on port 0.

use crate::admin_key::AdminKey;
use crate::api;
use crate::api::state::AppState;
use crate::clock::Clock;
use crate::engine::{Engine, EngineConfig};
use actix_web::dev::{Server, ServerHandle};
use actix_web::{middleware, web, App, HttpServer};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Everything the application needs to start.
pub struct AppConfig {
    /// Address to bind (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Shards and timers.
    pub engine: EngineConfig,
    /// The admin key's digest.
    pub admin_key: AdminKey,
    /// The engine clock.
    pub clock: Arc<dyn Clock>,
    /// HTTP worker threads.
    pub http_workers: usize,
}

/// A bound, not yet running, application.
pub struct Application {
    /// The HTTP server future.
    server: Server,
    /// The address actually bound.
    addr: SocketAddr,
    /// The engine, for shutdown and for tests.
    engine: Engine,
}

impl Application {
    /// Starts the engine and binds the server; must run inside an actix
    /// system (`#[actix_web::main]` or `#[actix_web::test]`).
    pub fn build(config: AppConfig) -> io::Result<Self> {
        let engine = Engine::start(&config.engine, config.clock);
        let ready = Arc::new(AtomicBool::new(false));
        let state = web::Data::new(AppState {
            engine: engine.clone(),
            admin_key: config.admin_key,
            ready: Arc::clone(&ready),
        });
        let listener = TcpListener::bind(config.listen)?;
        let addr = listener.local_addr()?;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(middleware::from_fn(api::request_id::middleware))
                .configure(api::routes)
        })
        .workers(config.http_workers.max(1))
        .backlog(4096)
        .listen(listener)?
        .run();
        // Nothing to restore yet: the shards are running.
        ready.store(true, Ordering::Release);
        Ok(Self {
            server,
            addr,
            engine,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A handle that stops the server gracefully.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped (SIGTERM/SIGINT, or the handle), finishing
    /// in-flight requests, then stops the shards.
    pub async fn run_until_stopped(self) -> io::Result<()> {
        let result = self.server.await;
        self.engine.stop();
        result
    }
}
