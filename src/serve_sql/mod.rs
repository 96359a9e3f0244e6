//! `tidewater run --serve ADDR`: read-only SQL over the Postgres wire protocol, from the engine's
//! own DuckDB database, while the pipeline runs.
//!
//! A DuckDB file that one process writes cannot be opened by another, so analysts' tools (psql,
//! Grafana, BI tools) reach the warehouse through the engine. Every client session gets its own
//! connection to the writer's database instance (`Connection::try_clone`), separate from the
//! writer's: DuckDB's MVCC gives each statement one committed snapshot, never a half-applied one.
//!
//! Only statements that read are run (`tidewater_sinks::statement::check_read_only`), and each
//! runs inside a transaction that is rolled back, so even a text that slipped past the check
//! could not change the warehouse.
//!
//! The server runs on a thread of its own (`crate::server_thread`): the workers and the writer
//! never wait for it, and a slow query only holds one of its blocking threads.

mod encode;
mod session;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use duckdb::Connection;
use tokio::net::TcpListener;

use crate::error::EngineError;
use crate::server_thread::ServerThread;

/// The environment variable holding the password clients must give (none set: no password).
pub const PASSWORD_VARIABLE: &str = "TIDEWATER_SERVE_PASSWORD";

/// What `--serve` asks for.
#[derive(Clone, Debug)]
pub struct ServeSql {
    /// `host:port` to listen on (port 0: any free port).
    pub listen: String,
    /// The password every client must give; `None`: no password asked.
    pub password: Option<String>,
}

/// A running SQL server; dropping it stops accepting clients and removes its address file.
pub struct SqlServer {
    server: Option<ServerThread>,
    address_file: PathBuf,
}

impl SqlServer {
    /// Listens on `listen` (bound before returning, so a taken port is an error now) and serves
    /// sessions on clones of `connection`. Writes the bound address to [`address_file_of`]
    /// `warehouse`, where `tidewater query` finds it.
    pub fn start(
        listen: &str,
        connection: &Connection,
        warehouse: &Path,
        password: Option<String>,
    ) -> Result<SqlServer, EngineError> {
        let serve_error =
            |detail: String| EngineError::SqlServer(format!("--serve {listen}: {detail}"));
        // Sessions clone this connection; it is never used for a query itself.
        let base = connection
            .try_clone()
            .map_err(|e| serve_error(format!("no second connection to the warehouse: {e}")))?;
        let sessions = Arc::new(session::Sessions {
            base: Mutex::new(base),
            password,
        });
        let server = ServerThread::start("tidewater-sql", listen, move |listener| {
            accept_clients(listener, sessions)
        })
        .map_err(serve_error)?;
        let address_file = address_file_of(warehouse);
        std::fs::write(&address_file, format!("{}\n", server.address()))
            .map_err(|e| serve_error(format!("cannot write {}: {e}", address_file.display())))?;
        Ok(SqlServer {
            server: Some(server),
            address_file,
        })
    }

    /// The address clients connect to (the port is the bound one when `:0` was asked for).
    pub fn address(&self) -> SocketAddr {
        self.server
            .as_ref()
            .expect("running until dropped")
            .address()
    }
}

impl Drop for SqlServer {
    fn drop(&mut self) {
        // Stopped first: the address file names a server that answers.
        drop(self.server.take());
        let _ = std::fs::remove_file(&self.address_file);
    }
}

/// Where a running engine announces its SQL server: next to the warehouse file, so that
/// `tidewater query` finds the server of the warehouse it was asked about.
pub fn address_file_of(warehouse: &Path) -> PathBuf {
    let mut name = warehouse.as_os_str().to_owned();
    name.push(".sql-server");
    PathBuf::from(name)
}

/// Accepts clients until the server stops; each session runs as its own task.
async fn accept_clients(listener: TcpListener, sessions: Arc<session::Sessions>) {
    loop {
        match listener.accept().await {
            Ok((socket, _)) => {
                let handlers = session::Handlers::new(Arc::clone(&sessions));
                tokio::spawn(async move {
                    // A client that goes away mid-session is its own business.
                    let _ = pgwire::tokio::process_socket(socket, None, handlers).await;
                });
            }
            Err(error) => {
                tracing::warn!("the SQL server could not accept a client: {error}");
                // Out of file descriptors, say: do not spin on it.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
