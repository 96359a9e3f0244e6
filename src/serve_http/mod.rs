//! `--serve-http`: a small HTTP server beside the engine, for people and for monitoring.
//!
//! - `GET /`: the live dashboard (HTML, JS and CSS compiled into the binary; no build step, no
//!   CDN), updated at every committed snapshot through `/events`.
//! - `GET /events`: Server-Sent Events, one `snapshot` event per committed snapshot.
//! - `GET /api/views`, `GET /api/views/<name>?limit=N&latest=1`: JSON read from the warehouse
//!   on a connection of its own.
//! - `GET /metrics`: Prometheus text format.
//!
//! Why axum on a tokio runtime: Server-Sent Events hold a connection open per browser tab,
//! which a thread-per-connection server would pay a thread for; axum gives routing, SSE with
//! keep-alives and JSON without writing HTTP by hand. It runs on a thread and runtime of its own
//! (`crate::server_thread`), so it never competes with the timely workers for a scheduler, and it
//! only reads what the engine publishes (`Observer`); DuckDB queries run on blocking threads.

mod api;
mod lag;
mod metrics;

use std::convert::Infallible;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;

use crate::error::EngineError;
use crate::observe::Observer;
use crate::server_thread::ServerThread;

pub use api::ApiFailure;

/// Where `--serve-http` listens when given without an address.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:8642";

const DASHBOARD_HTML: &str = include_str!("dashboard.html");
const DASHBOARD_JS: &str = include_str!("dashboard.js");
const DASHBOARD_CSS: &str = include_str!("dashboard.css");

/// The address to bind for a `--serve-http` value: `HOST:PORT` as given; a bare port,
/// `:PORT` or an empty value on loopback only (exposing the server is a deliberate choice);
/// a host without a port on the default port.
pub fn bind_address(value: &str) -> String {
    let value = value.trim();
    let default_port = DEFAULT_ADDRESS.rsplit(':').next().unwrap_or("8642");
    if value.is_empty() {
        DEFAULT_ADDRESS.to_owned()
    } else if let Some(port) = value.strip_prefix(':') {
        format!("127.0.0.1:{port}")
    } else if value.chars().all(|c| c.is_ascii_digit()) {
        format!("127.0.0.1:{value}")
    } else if value.starts_with('[') && value.ends_with(']') {
        format!("{value}:{default_port}")
    } else if value.contains(':') {
        value.to_owned()
    } else {
        format!("{value}:{default_port}")
    }
}

/// The running server; dropping it stops it.
pub struct HttpServer {
    server: ServerThread,
    _lag: lag::LagRefresher,
}

impl HttpServer {
    /// Binds `address` (see [`bind_address`]) at once, so that a port in use is an error
    /// before anything runs, and serves `observer` until dropped.
    pub fn start(address: &str, observer: Arc<Observer>) -> Result<HttpServer, EngineError> {
        let bind = bind_address(address);
        let failed = |detail: String| EngineError::Serve {
            address: bind.clone(),
            detail,
        };
        let app = router(Arc::clone(&observer));
        let server = ServerThread::start("tidewater-http", &bind, move |listener| async move {
            if let Err(error) = axum::serve(listener, app).into_future().await {
                tracing::warn!("the dashboard server stopped: {error}");
            }
        })
        .map_err(failed)?;
        let local = server.address();
        tracing::info!("serving the dashboard on http://{local}/ (metrics on /metrics)");
        Ok(HttpServer {
            server,
            _lag: lag::LagRefresher::start(observer),
        })
    }

    /// The address it listens on (with the port chosen when asked for port 0).
    pub fn address(&self) -> SocketAddr {
        self.server.address()
    }
}

fn router(observer: Arc<Observer>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { page(DASHBOARD_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/dashboard.js",
            get(|| async { page(DASHBOARD_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/dashboard.css",
            get(|| async { page(DASHBOARD_CSS, "text/css; charset=utf-8") }),
        )
        .route("/events", get(events))
        .route("/metrics", get(metrics))
        .route("/api/views", get(list_views))
        .route("/api/views/{name}", get(view_rows))
        .fallback(|| async {
            ApiFailure {
                status: StatusCode::NOT_FOUND,
                message: "no such endpoint (try /, /events, /metrics, /api/views)".to_owned(),
            }
        })
        .with_state(observer)
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Runs a blocking read (DuckDB) off the runtime's thread.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, ApiFailure> + Send + 'static,
) -> Result<T, ApiFailure> {
    tokio::task::spawn_blocking(read)
        .await
        .unwrap_or_else(|e| Err(ApiFailure::internal(format!("the request failed: {e}"))))
}

async fn list_views(State(observer): State<Arc<Observer>>) -> Result<Response, ApiFailure> {
    let listing = blocking(move || api::list_views(&observer)).await?;
    Ok(Json(listing).into_response())
}

#[derive(serde::Deserialize)]
struct RowsQuery {
    limit: Option<usize>,
    latest: Option<String>,
}

async fn view_rows(
    State(observer): State<Arc<Observer>>,
    Path(name): Path<String>,
    Query(query): Query<RowsQuery>,
) -> Result<Response, ApiFailure> {
    let latest = query
        .latest
        .is_some_and(|v| matches!(v.as_str(), "" | "1" | "true"));
    let limit = query.limit.unwrap_or(api::DEFAULT_LIMIT);
    let rows = blocking(move || api::view_rows(&observer, &name, limit, latest)).await?;
    Ok(Json(rows).into_response())
}

async fn metrics(State(observer): State<Arc<Observer>>) -> Result<Response, ApiFailure> {
    let text = blocking(move || {
        let sizes = api::view_sizes(&observer);
        Ok(metrics::render(&observer.counters(), &sizes))
    })
    .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// One `snapshot` event per committed snapshot, from the moment of connecting. A client that
/// reads too slowly skips the events it missed (the next one still carries the totals).
async fn events(
    State(observer): State<Arc<Observer>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = observer.subscribe();
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(snapshot) => {
                    let event = Event::default()
                        .event("snapshot")
                        .id(snapshot.snapshot_id.to_string())
                        .json_data(&snapshot)
                        .unwrap_or_else(|_| Event::default().comment("unencodable snapshot"));
                    return Some((Ok(event), receiver));
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::bind_address;

    #[test]
    fn addresses_without_a_host_are_loopback() {
        assert_eq!(bind_address(""), "127.0.0.1:8642");
        assert_eq!(bind_address(":9000"), "127.0.0.1:9000");
        assert_eq!(bind_address("9000"), "127.0.0.1:9000");
        assert_eq!(bind_address("0.0.0.0:9000"), "0.0.0.0:9000");
        assert_eq!(bind_address("localhost"), "localhost:8642");
        assert_eq!(bind_address("[::1]"), "[::1]:8642");
        assert_eq!(bind_address("[::1]:80"), "[::1]:80");
    }
}
