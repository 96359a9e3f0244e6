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
//! The server runs on its own thread with a small tokio runtime: the workers and the writer never
//! wait for it, and a slow query only holds a blocking-pool thread of its own.

mod encode;
mod session;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use duckdb::Connection;
use tokio::sync::oneshot;

use crate::error::EngineError;

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
    address: SocketAddr,
    address_file: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
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
        let listener = StdListener::bind(listen).map_err(|e| serve_error(e.to_string()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| serve_error(e.to_string()))?;
        let address = listener
            .local_addr()
            .map_err(|e| serve_error(e.to_string()))?;
        // Sessions clone this connection; it is never used for a query itself.
        let base = connection
            .try_clone()
            .map_err(|e| serve_error(format!("no second connection to the warehouse: {e}")))?;
        let address_file = address_file_of(warehouse);
        std::fs::write(&address_file, format!("{address}\n"))
            .map_err(|e| serve_error(format!("cannot write {}: {e}", address_file.display())))?;
        let (stop, stopped) = oneshot::channel();
        let sessions = Arc::new(session::Sessions {
            base: Mutex::new(base),
            password,
        });
        let thread = std::thread::Builder::new()
            .name("tidewater-sql".to_owned())
            .spawn(move || serve(listener, sessions, stopped))
            .map_err(|e| serve_error(e.to_string()))?;
        Ok(SqlServer {
            address,
            address_file,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address clients connect to (the port is the bound one when `:0` was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for SqlServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
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

/// Accepts clients until `stopped`; each session runs as its own task.
fn serve(listener: StdListener, sessions: Arc<session::Sessions>, stopped: oneshot::Receiver<()>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(4)
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tidewater: the SQL server could not start: {error}");
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("tidewater: the SQL server could not listen: {error}");
                return;
            }
        };
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                accepted = listener.accept() => match accepted {
                    Ok((socket, _)) => {
                        let handlers = session::Handlers::new(Arc::clone(&sessions));
                        tokio::spawn(async move {
                            // A client that goes away mid-session is its own business.
                            let _ = pgwire::tokio::process_socket(socket, None, handlers).await;
                        });
                    }
                    Err(error) => eprintln!("tidewater: the SQL server could not accept a client: {error}"),
                },
            }
        }
    });
}
