//! `--serve-http`: the JSON views agree with an oracle recomputed from the topic for the
//! snapshot each response names; `/events` sends one event per committed snapshot; `/metrics`
//! is Prometheus text whose consumer lag (Kafka) or remaining bytes (file) fall to zero at the
//! end of a bounded run; and the binary serves the dashboard, logs where, and stops cleanly.

mod common;
mod http_client;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use http_client::*;
use tidewater::serve_http::HttpServer;
use tidewater::{run, CommitHook, Observer, Pipeline, RunOptions};
use tidewater_connectors::produce::TopicProducer;
use tidewater_connectors::{EmbeddedBroker, SourceControl};

/// Micros since the Unix epoch of an RFC 3339 timestamp from the API.
fn micros(value: &serde_json::Value) -> i64 {
    let text = value.as_str().expect("a timestamp string");
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .timestamp_micros()
}

/// `/api/views/station_hourly` as the oracle's type; also checks `window_end`.
fn view_of_response(body: &serde_json::Value) -> View {
    let mut view = View::new();
    for row in body["rows"].as_array().expect("rows") {
        let (start, end) = (micros(&row["window_start"]), micros(&row["window_end"]));
        assert_eq!(end - start, HOUR_US, "{row}");
        let station = row["station"].as_str().unwrap().to_owned();
        let number = |column: &str| row[column].as_i64().unwrap_or_else(|| panic!("{row}"));
        let totals = (number("readings"), number("entries"), number("exits"));
        assert!(view.insert((start, station), totals).is_none(), "{row}");
    }
    view
}

fn snapshot_id_of(body: &serde_json::Value) -> Option<i64> {
    body["snapshot"]["snapshot_id"].as_i64()
}

/// What a commit hook saw on `/metrics`: (snapshot id, parsed samples).
type Scrapes = Vec<(i64, Vec<Sample>)>;

/// A hook that scrapes `/metrics` at every commit, on the writer's thread after the
/// observer was updated and before the engine goes on: every committed state is seen.
/// Failures are recorded, not panicked on the writer's thread.
fn scraping_hook(address: SocketAddr, scrapes: Arc<Mutex<Scrapes>>) -> CommitHook {
    Arc::new(move |_, info| {
        let response = get(address, "/metrics");
        let samples = match response.status {
            200 => {
                std::panic::catch_unwind(|| parse_prometheus(&response.body)).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        scrapes.lock().unwrap().push((info.snapshot_id, samples));
    })
}

fn sum(samples: &[Sample], name: &str) -> f64 {
    metric_sum(samples, name, &[]).unwrap_or_else(|| panic!("no {name}"))
}

/// The warehouse's snapshots after the run: (id, records_in), in order.
fn committed_snapshots(path: &Path) -> Vec<(i64, i64)> {
    let conn = open_warehouse(path);
    let mut statement = conn
        .prepare("SELECT snapshot_id, records_in FROM _snapshots ORDER BY snapshot_id")
        .unwrap();
    let rows = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap();
    rows.map(Result::unwrap).collect()
}

#[test]
fn views_events_and_metrics_follow_the_committed_snapshots() {
    let started = Instant::now();
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("served", 4).unwrap();
    let data = readings(60_000, 8, 0.05);
    produce(&brokers, "served", &reading_messages(&data));
    let messages = read_topic(&brokers, "served", data.len());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.duckdb");
    let mut config = pipeline(&brokers, "served", &path, 20).config;
    config.sources[0].poll_batch = 256;
    let pipeline = Pipeline::new(config).unwrap();

    let observer = Observer::new();
    let server = HttpServer::start("127.0.0.1:0", Arc::clone(&observer)).unwrap();
    let address = server.address();
    let done = Arc::new(AtomicBool::new(false));

    // Subscribed before the run starts, so it must see every snapshot: it reads until the
    // last one's event (its id is known once the run is over).
    let mut stream = EventStream::open(address, "/events", Duration::from_secs(10));
    let last_id = Arc::new(AtomicI64::new(i64::MAX));
    let events_last = Arc::clone(&last_id);
    let events = std::thread::spawn(move || {
        stream.read_until(Duration::from_secs(60), &mut |events: &[ServerEvent]| {
            let last = events_last.load(Ordering::SeqCst);
            events
                .last()
                .and_then(|e| e.id.as_deref()?.parse::<i64>().ok())
                .is_some_and(|id| id >= last)
        });
        stream.events
    });
    // Reads the view as fast as it can while the run goes on.
    let reads_done = Arc::clone(&done);
    let reads = std::thread::spawn(move || {
        let mut seen: BTreeMap<i64, View> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !reads_done.load(Ordering::SeqCst) && Instant::now() < deadline {
            let response = get(address, "/api/views/station_hourly?limit=100000");
            if response.status == 200 {
                let body = response.json();
                if let Some(id) = snapshot_id_of(&body) {
                    seen.entry(id).or_insert_with(|| view_of_response(&body));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        seen
    });

    let scrapes = Arc::new(Mutex::new(Scrapes::new()));
    let options = RunOptions {
        observe: Some(Arc::clone(&observer)),
        serve_sql: None,
        ..to_the_end(2, Some(scraping_hook(address, Arc::clone(&scrapes))))
    };
    let summary = run(&pipeline, options, SourceControl::new()).expect("the run");
    done.store(true, Ordering::SeqCst);
    let snapshots = committed_snapshots(&path);
    last_id.store(snapshots.last().map_or(0, |s| s.0), Ordering::SeqCst);
    let events = events.join().unwrap();
    let seen = reads.join().unwrap();
    assert_eq!(summary.records_in, messages.len() as u64);
    assert!(snapshots.len() >= 3, "only {} snapshots", snapshots.len());

    // One event per committed snapshot, in order, with its counts.
    let received: Vec<(i64, i64)> = events
        .iter()
        .map(|event| {
            assert_eq!(event.event, "snapshot");
            let body: serde_json::Value = serde_json::from_str(&event.data).unwrap();
            let id = body["snapshot_id"].as_i64().unwrap();
            assert_eq!(event.id.as_deref(), Some(id.to_string().as_str()));
            (id, body["records_in"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(received, snapshots, "events vs _snapshots");

    // Each response equals the oracle over the records below its snapshot's offsets. The
    // first, the last and a few between are checked (each oracle reads the whole topic).
    assert!(
        seen.len() >= 2,
        "the view was read at {} snapshots",
        seen.len()
    );
    let conn = open_warehouse(&path);
    let ids: Vec<i64> = seen.keys().copied().collect();
    let step = (ids.len() / 6).max(1);
    let checked: Vec<i64> = ids
        .iter()
        .step_by(step)
        .chain(ids.last())
        .copied()
        .collect();
    for id in &checked {
        let offsets = snapshot_offsets(&conn, *id);
        assert_views_equal(
            &seen[id],
            &oracle_below(&messages, &offsets),
            &format!("snapshot {id}"),
        );
    }

    // Every commit's scrape parsed; lag fell to zero with the last snapshot, never rose.
    let scrapes = scrapes.lock().unwrap();
    assert_eq!(scrapes.len(), snapshots.len(), "one scrape per commit");
    let mut lags = Vec::new();
    for (index, (id, samples)) in scrapes.iter().enumerate() {
        assert!(!samples.is_empty(), "snapshot {id}: /metrics did not parse");
        assert_eq!(sum(samples, "tidewater_last_snapshot_id"), *id as f64);
        assert_eq!(
            sum(samples, "tidewater_snapshots_committed_total"),
            (index + 1) as f64
        );
        let committed: i64 = snapshots[..=index].iter().map(|(_, r)| r).sum();
        assert_eq!(sum(samples, "tidewater_records_in_total"), committed as f64);
        let partitions = samples
            .iter()
            .filter(|(name, _, _)| name == "tidewater_consumer_lag_records")
            .count();
        assert_eq!(partitions, 4, "snapshot {id}: a lag per partition");
        lags.push(sum(samples, "tidewater_consumer_lag_records") as i64);
    }
    eprintln!(
        "{} snapshots, {} events, the view read at {} snapshots ({} checked against the oracle), lag per commit {lags:?}",
        snapshots.len(),
        events.len(),
        seen.len(),
        checked.len()
    );
    assert!(
        lags[0] > 0,
        "the first snapshot cannot hold everything: {lags:?}"
    );
    assert!(lags.windows(2).all(|w| w[1] <= w[0]), "lag rose: {lags:?}");
    assert_eq!(*lags.last().unwrap(), 0, "lag at the end: {lags:?}");
    let (_, last) = scrapes.last().unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM station_hourly", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        metric_sum(last, "tidewater_view_rows", &[("view", "station_hourly")]),
        Some(rows as f64)
    );
    assert_eq!(sum(last, "tidewater_workers"), 2.0);
    assert_eq!(
        sum(last, "tidewater_snapshot_commit_seconds_count"),
        snapshots.len() as f64
    );

    // Unknown views are a 404 with a JSON error, known ones are listed.
    let missing = get(address, "/api/views/nope");
    assert_eq!(missing.status, 404);
    assert!(
        missing.json()["error"]
            .as_str()
            .unwrap()
            .contains("no view named `nope`"),
        "{}",
        missing.body
    );
    let listing = get(address, "/api/views").json();
    assert_eq!(listing["views"][0]["name"], "station_hourly");
    drop(server);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn file_sources_report_remaining_bytes_down_to_zero() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("readings.jsonl");
    let lines: Vec<String> = readings(80_000, 5, 0.0)
        .iter()
        .map(|r| r.to_json())
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let size = std::fs::metadata(&file).unwrap().len() as f64;
    let path = dir.path().join("w.duckdb");
    let source = format!(
        "path = {:?}\nchunks = 3\nformat = \"json\"",
        file.display().to_string()
    );
    let mut config = station_hourly_pipeline(&source, &path, 10).config;
    config.sources[0].poll_batch = 512;
    let pipeline = Pipeline::new(config).unwrap();
    let observer = Observer::new();
    let server = HttpServer::start("127.0.0.1:0", Arc::clone(&observer)).unwrap();
    let scrapes = Arc::new(Mutex::new(Scrapes::new()));
    let options = RunOptions {
        observe: Some(Arc::clone(&observer)),
        serve_sql: None,
        ..to_the_end(
            2,
            Some(scraping_hook(server.address(), Arc::clone(&scrapes))),
        )
    };
    run(&pipeline, options, SourceControl::new()).expect("the run");
    let scrapes = scrapes.lock().unwrap();
    let remaining: Vec<f64> = scrapes
        .iter()
        .map(|(_, samples)| sum(samples, "tidewater_file_remaining_bytes"))
        .collect();
    assert!(remaining.len() >= 2, "{remaining:?}");
    assert!(remaining[0] > 0.0 && remaining[0] < size, "{remaining:?}");
    assert!(remaining.windows(2).all(|w| w[1] <= w[0]), "{remaining:?}");
    assert_eq!(*remaining.last().unwrap(), 0.0, "{remaining:?}");
    let (_, last) = scrapes.last().unwrap();
    // Chunk positions are byte offsets in the file: the last chunk ends at its size.
    let positions: Vec<f64> = last
        .iter()
        .filter(|(name, _, _)| name == "tidewater_file_committed_bytes")
        .map(|(_, _, value)| *value)
        .collect();
    assert_eq!(positions.len(), 3, "a position per chunk");
    assert_eq!(positions.iter().copied().fold(0.0, f64::max), size);
    assert_eq!(sum(last, "tidewater_records_in_total"), lines.len() as f64);
    assert!(
        metric_sum(last, "tidewater_consumer_lag_records", &[]).is_none(),
        "no Kafka lag for a file"
    );
}

/// Sends readings to `topic` in small batches until `stop` is set.
fn keep_producing(
    brokers: &str,
    topic: &str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    std::thread::spawn(move || {
        let mut producer = TopicProducer::new(&brokers, &topic).unwrap();
        let data = readings(20_000, 9, 0.0);
        let deadline = Instant::now() + Duration::from_secs(60);
        for batch in data.chunks(100) {
            if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                break;
            }
            for reading in batch {
                producer
                    .send(
                        Some(reading.turnstile_id().as_bytes()),
                        reading.to_json().as_bytes(),
                    )
                    .unwrap();
            }
            producer.flush().unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

#[test]
fn the_binary_serves_the_dashboard_logs_its_address_and_stops_cleanly() {
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("live", 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    let pipeline = pipeline(&brokers, "live", &dir.path().join("w.duckdb"), 100);
    std::fs::write(&config, pipeline.to_toml()).unwrap();
    let log = dir.path().join("run.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidewater"))
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--workers",
            "1",
        ])
        .args(["--serve-http", "127.0.0.1:0"])
        .env("RUST_LOG", "warn,tidewater=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = keep_producing(&brokers, "live", Arc::clone(&stop));
    let result = std::panic::catch_unwind(|| {
        let address = logged_dashboard_address(&log);
        assert_ne!(address.port(), 0);

        let page = get(address, "/");
        assert_eq!(page.status, 200);
        assert!(page
            .header("content-type")
            .unwrap()
            .starts_with("text/html"));
        for part in ["id=\"snapshot-id\"", "/dashboard.js", "/dashboard.css"] {
            assert!(page.body.contains(part), "{part} not in the page");
        }
        let script = get(address, "/dashboard.js");
        assert_eq!(script.status, 200);
        assert!(script.body.contains("new EventSource(\"/events\")"));
        assert_eq!(get(address, "/dashboard.css").status, 200);

        let events = read_events(address, "/events", Duration::from_secs(30), |e| {
            e.len() >= 2
        });
        let ids: Vec<i64> = events
            .iter()
            .map(|e| e.id.as_deref().unwrap().parse().unwrap())
            .collect();
        assert!(ids.len() >= 2 && ids[1] > ids[0], "{ids:?}");

        let listing = get(address, "/api/views");
        assert_eq!(listing.status, 200);
        let listing = listing.json();
        assert_eq!(listing["views"][0]["name"], "station_hourly");
        assert!(listing["views"][0]["rows"].as_i64().unwrap() > 0);
        let rows = get(address, "/api/views/station_hourly?limit=3").json();
        assert!(rows["rows"].as_array().unwrap().len() <= 3);
        assert!(rows["total_rows"].as_i64().unwrap() >= 3);
        assert!(snapshot_id_of(&rows).unwrap() >= ids[1]);
        let newest = micros(&rows["rows"][0]["window_start"]);
        let latest = get(address, "/api/views/station_hourly?latest=1&limit=1000").json();
        for row in latest["rows"].as_array().unwrap() {
            assert!(micros(&row["window_start"]) >= newest, "{row}");
        }
        assert_eq!(get(address, "/api/views/nope").status, 404);
        assert_eq!(
            get(address, "/api/views/station_hourly?limit=999999").status,
            400
        );
        let unknown = get(address, "/nowhere");
        assert_eq!(unknown.status, 404);
        assert!(unknown.json()["error"].is_string());

        let metrics = get(address, "/metrics");
        assert!(metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"));
        let samples = parse_prometheus(&metrics.body);
        assert_eq!(sum(&samples, "tidewater_workers"), 1.0);
        assert!(sum(&samples, "tidewater_snapshots_committed_total") >= 2.0);
        assert!(metric_sum(
            &samples,
            "tidewater_consumer_lag_records",
            &[("partition", "1")]
        )
        .is_some());
        address
    });
    stop.store(true, Ordering::SeqCst);
    producer.join().unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = wait_at_most(&mut child, Duration::from_secs(30));
    if status.is_none() {
        let _ = child.kill();
    }
    let mut text = String::new();
    std::fs::File::open(&log)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let address = match result {
        Ok(address) => address,
        Err(panic) => {
            eprintln!("{text}");
            std::panic::resume_unwind(panic);
        }
    };
    assert!(status.is_some_and(|s| s.success()), "{text}");
    assert!(text.contains("tidewater run: stopped"), "{text}");
    // Structured logs: the address at info, each commit at debug (RUST_LOG asked for it).
    assert!(
        text.contains(&format!(
            "INFO tidewater::serve_http: serving the dashboard on http://{address}/"
        )),
        "{text}"
    );
    assert!(
        text.contains("DEBUG tidewater::engine: snapshot committed snapshot_id=1"),
        "{text}"
    );
    // Stopped with the engine: nothing listens any more.
    assert!(std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_err());
}
