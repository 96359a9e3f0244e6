//! A network server beside the engine (`--serve`, `--serve-http`): a listener bound at start, a
//! current-thread tokio runtime on a thread of its own, and a stop that does not wait long.
//!
//! Why a thread and runtime of its own: the servers never compete with the timely workers for a
//! scheduler, and a slow client or query only holds the server's own threads. The listener is
//! bound before the thread starts, so a taken port stops the run before it reads anything.

use std::future::Future;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Blocking work (DuckDB queries) runs on at most this many threads per server.
const BLOCKING_THREADS: usize = 4;

/// How long work in flight (a query, an open event stream) may go on once the server stops.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// A running server; dropping it stops it (see [`STOP_GRACE`]) and joins its thread.
pub struct ServerThread {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ServerThread {
    /// Binds `bind` now, then runs `serve(listener)` on a thread named `name` until dropped.
    /// An error is the step that failed and why (`binding …`, `starting its runtime: …`).
    pub fn start<Serve, Served>(
        name: &str,
        bind: &str,
        serve: Serve,
    ) -> Result<ServerThread, String>
    where
        Serve: FnOnce(TcpListener) -> Served + Send + 'static,
        Served: Future<Output = ()> + 'static,
    {
        let listener = std::net::TcpListener::bind(bind).map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(BLOCKING_THREADS)
            .build()
            .map_err(|e| format!("starting its runtime: {e}"))?;
        let listener = {
            let _entered = runtime.enter();
            TcpListener::from_std(listener).map_err(|e| e.to_string())?
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        () = serve(listener) => {}
                        // Sent or dropped: either way, stop.
                        _ = stopped => {}
                    }
                });
                runtime.shutdown_timeout(STOP_GRACE);
            })
            .map_err(|e| format!("starting its thread: {e}"))?;
        Ok(ServerThread {
            address,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The bound address (with the port chosen when port 0 was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    /// Accepts clients and never answers.
    async fn accept_forever(listener: TcpListener) {
        loop {
            let _ = listener.accept().await;
        }
    }

    #[test]
    fn a_taken_port_is_an_error_at_start() {
        let first = ServerThread::start("first", "127.0.0.1:0", accept_forever).unwrap();
        let taken = first.address().to_string();
        let error = ServerThread::start("second", &taken, accept_forever)
            .err()
            .expect("the port is taken");
        assert!(error.to_lowercase().contains("in use"), "{error}");
    }

    #[test]
    fn dropping_it_stops_serving_without_waiting_for_work_in_flight() {
        let finished = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicBool::new(false));
        let server = {
            let (finished, accepted) = (Arc::clone(&finished), Arc::clone(&accepted));
            ServerThread::start("slow", "127.0.0.1:0", move |listener| async move {
                let (socket, _) = listener.accept().await.unwrap();
                accepted.store(true, Ordering::SeqCst);
                // A query that takes far longer than the stop's grace.
                let _ = tokio::task::spawn_blocking(move || {
                    std::thread::sleep(Duration::from_secs(30));
                    finished.store(true, Ordering::SeqCst);
                    drop(socket);
                })
                .await;
                std::future::pending::<()>().await;
            })
            .unwrap()
        };
        let address = server.address();
        let _client = std::net::TcpStream::connect(address).unwrap();
        for _ in 0..1_000 {
            if accepted.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(accepted.load(Ordering::SeqCst), "the client was accepted");
        drop(server);
        assert!(
            !finished.load(Ordering::SeqCst),
            "the stop waited for the slow work"
        );
        assert!(
            std::net::TcpStream::connect(address).is_err(),
            "nothing listens once stopped"
        );
    }
}
