//! The dashboard in a real browser: headless Chromium (Debian's `chromium`) loads it from a
//! running `tidewater demo --serve-http`, takes a screenshot, waits until the page has received
//! a newer snapshot through Server-Sent Events, takes another, and checks that the page changed.
//!
//! Outside CI the test is skipped, with a message, when Chromium is absent; in CI (`CI` set)
//! its absence is a failure (`.ci/run` installs it). `TIDEWATER_SCREENSHOT_DIR` keeps a copy of
//! the two screenshots there.

mod cdp;
mod common;
mod http_client;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cdp::{chromium_binary, Browser};
use common::KillOnDrop;
use http_client::logged_dashboard_address;
use serde_json::Value;

fn chromium_or_skip() -> Option<PathBuf> {
    let found = chromium_binary();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is not installed; .ci/run installs it (apt-get install chromium)"
        );
        eprintln!("skipped: chromium is not installed (apt-get install chromium)");
    }
    found
}

/// The page's state: the snapshot id it shows, view cards and the bars drawn in them, and
/// whether it has no read of the views in flight (`{}` while the page is still loading).
const PAGE_STATE: &str = "(() => { try { return JSON.stringify({ \
    id: Number(document.getElementById('snapshot-id').textContent), \
    bars: document.querySelectorAll('#views rect').length, \
    cards: document.querySelectorAll('#views section.card').length, \
    settled: !state.reading && !state.again }); } catch (e) { return '{}'; } })()";

fn page_state(value: &Value) -> Value {
    serde_json::from_str(value.as_str().unwrap_or("{}")).unwrap_or_default()
}

#[test]
fn the_dashboard_follows_a_running_demo_in_headless_chromium() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("demo.log");
    // Far more readings than the test needs: the demo is still running when it ends.
    let demo = Command::new(env!("CARGO_BIN_EXE_tidewater"))
        .args(["demo", "--events", "2000000", "--workers", "2"])
        .arg("--warehouse")
        .arg(dir.path().join("demo.duckdb"))
        .args(["--serve-http", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _demo = KillOnDrop(demo);
    let mut browser = Browser::launch(
        &chromium,
        &dir.path().join("profile"),
        1280,
        1100,
        &dir.path().join("chromium.log"),
    );

    let address = logged_dashboard_address(&log);
    browser.navigate(&format!("http://{address}/"));

    // Before: a snapshot shown, every view drawn, no read in flight.
    let before = page_state(&browser.wait_for(PAGE_STATE, Duration::from_secs(40), |v| {
        let s = page_state(v);
        s["id"].as_i64().is_some_and(|id| id > 0)
            && s["cards"].as_i64() == Some(7)
            && s["bars"].as_i64().is_some_and(|b| b > 0)
            && s["settled"] == Value::Bool(true)
    }));
    let first = browser.screenshot();
    let before_id = before["id"].as_i64().unwrap();

    // After: a newer snapshot arrived through /events and the views were read again.
    let after = page_state(&browser.wait_for(PAGE_STATE, Duration::from_secs(40), |v| {
        let s = page_state(v);
        s["id"].as_i64().is_some_and(|id| id > before_id) && s["settled"] == Value::Bool(true)
    }));
    let second = browser.screenshot();
    let after_id = after["id"].as_i64().unwrap();
    let throughput_bars = browser.evaluate("document.querySelectorAll('#throughput rect').length");
    drop(browser);

    let png = b"\x89PNG\r\n\x1a\n";
    assert!(
        first.starts_with(png) && second.starts_with(png),
        "screenshots are PNGs"
    );
    let before_path = dir.path().join("dashboard-before.png");
    let after_path = dir.path().join("dashboard-after.png");
    std::fs::write(&before_path, &first).unwrap();
    std::fs::write(&after_path, &second).unwrap();
    if let Some(keep) = std::env::var_os("TIDEWATER_SCREENSHOT_DIR") {
        let keep = PathBuf::from(keep);
        std::fs::copy(&before_path, keep.join("dashboard-before.png")).unwrap();
        std::fs::copy(&after_path, keep.join("dashboard-after.png")).unwrap();
    }
    eprintln!(
        "snapshot {before_id} then {after_id}; screenshots of {} and {} bytes; {throughput_bars} bars in the throughput chart; {:.1}s",
        first.len(),
        second.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(after_id > before_id);
    assert_ne!(
        first, second,
        "the page did not change between two snapshots"
    );
    assert!(throughput_bars.as_i64().is_some_and(|n| n >= 1));
}
