//! One pipeline over several processes: timely's cluster configuration, the start that the
//! writer process (process 0) decides and sends to the others, and the relay that makes a stop
//! in any process a stop everywhere.
//!
//! Process 0 alone opens the warehouse: it reads the resume point, plans every source, and its
//! first worker is the only writer. The other processes learn the plans from it over timely
//! itself (a one-record bootstrap dataflow), so nothing but process 0 ever touches the file.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidewater_connectors::{SourceControl, SourcePlan};
use tidewater_dataflows::operators::SourceClock;
use tidewater_dataflows::Epoch;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::vec::{Broadcast, ToStream};
use timely::dataflow::operators::{Inspect, Probe};
use timely::worker::Worker;

use crate::error::EngineError;

/// This process's place in a cluster (`--processes N --process I --hostfile H`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterOptions {
    /// Index of this process, 0 being the warehouse writer.
    pub process: usize,
    /// `host:port` of every process, in process order.
    pub addresses: Vec<String>,
    /// How long to wait for every peer to connect before giving up.
    pub connect_timeout: Duration,
}

impl ClusterOptions {
    /// Reads a hostfile: one `host:port` per line, in process order (blank lines and `#`
    /// comments ignored); it must list exactly `processes` addresses.
    pub fn from_hostfile(
        path: &Path,
        processes: usize,
        process: usize,
        connect_timeout: Duration,
    ) -> Result<ClusterOptions, EngineError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            EngineError::Cluster(format!("cannot read hostfile {}: {e}", path.display()))
        })?;
        let addresses: Vec<String> = text
            .lines()
            .map(|line| line.split('#').next().unwrap_or("").trim())
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect();
        if addresses.len() != processes {
            return Err(EngineError::Cluster(format!(
                "hostfile {} lists {} addresses for --processes {processes}",
                path.display(),
                addresses.len()
            )));
        }
        if process >= processes {
            return Err(EngineError::Cluster(format!(
                "--process {process} is not below --processes {processes}"
            )));
        }
        if let Some(bad) = addresses.iter().find(|a| a.rsplit_once(':').is_none()) {
            return Err(EngineError::Cluster(format!(
                "hostfile {}: `{bad}` is not host:port",
                path.display()
            )));
        }
        Ok(ClusterOptions {
            process,
            addresses,
            connect_timeout,
        })
    }
}

/// Timely's configuration: `workers` threads in this process, and the cluster if any.
pub fn timely_config(workers: usize, cluster: Option<&ClusterOptions>) -> timely::Config {
    match cluster {
        None => timely::Config::process(workers),
        Some(cluster) => timely::Config {
            communication: timely::CommunicationConfig::Cluster {
                threads: workers,
                process: cluster.process,
                addresses: cluster.addresses.clone(),
                report: false,
                zerocopy: false,
            },
            worker: timely::WorkerConfig::default(),
        },
    }
}

/// Timely retries connecting to its peers for ever; a process whose peers never come must
/// instead say so and stop. Returns the flag to set once the cluster has formed.
pub fn connect_watchdog(cluster: &ClusterOptions) -> Arc<AtomicBool> {
    let connected = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&connected);
    let (timeout, peers) = (cluster.connect_timeout, cluster.addresses.join(", "));
    std::thread::spawn(move || {
        std::thread::sleep(timeout);
        if !flag.load(Ordering::SeqCst) {
            eprintln!(
                "tidewater: error: the cluster did not form within {}s (peers: {peers}); is every process started with the same hostfile?",
                timeout.as_secs()
            );
            std::process::exit(2);
        }
    });
    connected
}

/// What every process needs to build the dataflow, decided by process 0.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Start {
    pub plans: Vec<SourcePlan>,
    /// Per source, the event-time clock of the checkpoint a resumed run starts from.
    pub clocks: Option<Vec<SourceClock>>,
    /// The first epoch that is written (2 when resuming: 0 restores, 1 replays).
    pub live_from: Epoch,
}

/// Sends worker 0's start to every worker of the cluster, through a one-record dataflow.
pub fn share_start(worker: &mut Worker, start: Option<&Start>) -> Start {
    let encoded = start.map(|s| serde_json::to_string(s).expect("a start always serializes"));
    let received: Rc<RefCell<Option<String>>> = Rc::new(RefCell::new(None));
    let sink = Rc::clone(&received);
    let probe = worker.dataflow::<u64, _, _>(|scope| {
        encoded
            .into_iter()
            .to_stream(scope)
            .broadcast()
            .inspect(move |text: &String| *sink.borrow_mut() = Some(text.clone()))
            .probe()
            .0
    });
    while !probe.done() {
        worker.step_or_park(Some(Duration::from_millis(10)));
    }
    let text = received
        .borrow_mut()
        .take()
        .expect("worker 0 always sends the start");
    serde_json::from_str(&text).expect("the start was encoded by the same binary")
}

/// A stop in one process (Ctrl-C, SIGTERM, a fatal source error, a failed commit) becomes a
/// stop in every process, so the last snapshot is taken with all partitions and nobody waits
/// for sources that will never finish. Ends when the main dataflow (`finished`) does.
pub fn relay_stops(worker: &mut Worker, control: Arc<SourceControl>, finished: ProbeHandle<Epoch>) {
    let (index, local) = (worker.index(), Arc::clone(&control));
    worker.dataflow::<u64, _, _>(move |scope| {
        let stops = source::<_, timely::container::CapacityContainerBuilder<Vec<String>>, _, _>(
            scope,
            "StopRelay",
            move |capability, info| {
                let activator = scope.activator_for(info.address);
                let mut capability = Some(capability);
                move |output| {
                    let Some(cap) = capability.as_ref() else {
                        return;
                    };
                    if local.stop_requested() {
                        let reason = local
                            .failure_text()
                            .unwrap_or_else(|| "a stop was requested".to_owned());
                        output
                            .session(cap)
                            .give(format!("worker {index}: {reason}"));
                        capability = None;
                    } else if finished.done() {
                        capability = None;
                    } else {
                        activator.activate_after(Duration::from_millis(50));
                    }
                }
            },
        );
        stops.broadcast().inspect(move |reason: &String| {
            if !control.stop_requested() {
                eprintln!("tidewater: stopping: {reason}");
                control.request_stop();
            }
        });
    });
}

/// The text of a panic's payload (`panic!` gives a `String` or a `&str`).
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
}

/// How timely's panics read when a peer process goes away: the network thread that lost the
/// connection panics with the cause, then every worker finds its channels poisoned, and the
/// join of the network threads panics again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostPeerPanic {
    /// "timely communication error: ...": says what happened.
    Cause,
    /// A consequence of the cause, saying nothing new.
    Echo,
}

pub fn lost_peer_panic(text: &str) -> Option<LostPeerPanic> {
    if text.starts_with("timely communication error") {
        Some(LostPeerPanic::Cause)
    } else if [
        "MergeQueue poisoned",
        "Send thread panic",
        "Recv thread panic",
    ]
    .iter()
    .any(|echo| text.starts_with(echo))
    {
        Some(LostPeerPanic::Echo)
    } else {
        None
    }
}
