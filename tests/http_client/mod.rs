//! A minimal blocking HTTP/1.1 client for the `--serve-http` tests (GET only, chunked bodies,
//! and a Server-Sent Events reader), so that the tests depend on no HTTP library.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn connect(address: SocketAddr, path: &str, timeout: Duration) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&address, timeout).expect("connect");
    stream.set_read_timeout(Some(timeout)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    BufReader::new(stream)
}

fn read_head(reader: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header line");
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((k, v)) = trimmed.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    (status, headers)
}

fn chunked(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    })
}

/// Reads one chunk of a chunked body; `None` at its end.
fn read_chunk(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
        .map_err(|e| std::io::Error::other(format!("chunk size {line:?}: {e}")))?;
    let mut chunk = vec![0; size];
    reader.read_exact(&mut chunk)?;
    let mut crlf = [0; 2];
    reader.read_exact(&mut crlf)?;
    Ok((size > 0).then_some(chunk))
}

/// `GET path`, the whole response.
pub fn get(address: SocketAddr, path: &str) -> Response {
    let mut reader = connect(address, path, Duration::from_secs(10));
    let (status, headers) = read_head(&mut reader);
    let mut body = Vec::new();
    if chunked(&headers) {
        while let Some(chunk) = read_chunk(&mut reader).expect("chunk") {
            body.extend(chunk);
        }
    } else {
        reader.read_to_end(&mut body).expect("body");
    }
    Response {
        status,
        headers,
        body: String::from_utf8(body).expect("UTF-8 body"),
    }
}

/// One Server-Sent Event.
#[derive(Clone, Debug)]
pub struct ServerEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// Reads `GET path` as an event stream until `enough` says so, the stream ends, or `limit`
/// passes; returns the events read (comments and keep-alives left out).
pub fn read_events(
    address: SocketAddr,
    path: &str,
    limit: Duration,
    mut enough: impl FnMut(&[ServerEvent]) -> bool,
) -> Vec<ServerEvent> {
    let mut stream = EventStream::open(address, path, limit);
    stream.read_until(limit, &mut enough);
    stream.events
}

/// An open event stream: connected, its response head read (so the server has subscribed it).
pub struct EventStream {
    reader: BufReader<TcpStream>,
    chunked: bool,
    text: String,
    pub events: Vec<ServerEvent>,
}

impl EventStream {
    pub fn open(address: SocketAddr, path: &str, limit: Duration) -> EventStream {
        let mut reader = connect(address, path, limit);
        let (status, headers) = read_head(&mut reader);
        assert_eq!(status, 200, "{path}");
        let content_type = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        // Short reads from now on, so that `read_until` looks at its deadline often.
        reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        EventStream {
            reader,
            chunked: chunked(&headers),
            text: String::new(),
            events: Vec::new(),
        }
    }

    /// Reads events until `enough` says so, the stream ends, or `limit` passes.
    pub fn read_until(&mut self, limit: Duration, enough: &mut impl FnMut(&[ServerEvent]) -> bool) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline && !enough(&self.events) {
            let bytes = if self.chunked {
                match read_chunk(&mut self.reader) {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => break,
                    Err(e) if timed_out(&e) => continue,
                    Err(e) => panic!("reading events: {e}"),
                }
            } else {
                let mut buffer = [0; 4096];
                match self.reader.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => buffer[..n].to_vec(),
                    Err(e) if timed_out(&e) => continue,
                    Err(e) => panic!("reading events: {e}"),
                }
            };
            self.text.push_str(&String::from_utf8_lossy(&bytes));
            self.parse_blocks();
        }
    }

    fn parse_blocks(&mut self) {
        let text = &mut self.text;
        let events = &mut self.events;
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let mut event = ServerEvent {
                event: "message".to_owned(),
                id: None,
                data: String::new(),
            };
            let mut has_data = false;
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    event.event = value.trim().to_owned();
                } else if let Some(value) = line.strip_prefix("id:") {
                    event.id = Some(value.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("data:") {
                    if has_data {
                        event.data.push('\n');
                    }
                    event
                        .data
                        .push_str(value.strip_prefix(' ').unwrap_or(value));
                    has_data = true;
                }
            }
            if has_data {
                events.push(event);
            }
        }
    }
}

fn timed_out(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// One Prometheus sample: name, labels, value.
pub type Sample = (String, Vec<(String, String)>, f64);

/// A Prometheus text page: `(name, labels, value)` per sample; panics on a line that is
/// neither a comment nor a sample, or on a sample whose family has no `# TYPE`.
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut typed = std::collections::BTreeSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().expect("a family name");
            let kind = parts.next().expect("a family type");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            typed.insert(name.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value of {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), Vec::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                (name.to_owned(), parse_labels(body, line))
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|f| typed.contains(*f)))
            .unwrap_or(&name);
        assert!(typed.contains(family), "no # TYPE before {line}");
        samples.push((name, labels, value));
    }
    samples
}

fn parse_labels(body: &str, line: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "{line}");
        let mut value = String::new();
        loop {
            match chars.next().unwrap_or_else(|| panic!("{line}")) {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => panic!("{line}"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.push((key.trim().to_owned(), value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

/// The sum of a family's samples whose labels include `filter`.
pub fn metric_sum(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && filter
                    .iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| *v)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// The address a `tidewater` child process logged for its dashboard (`serving the dashboard on
/// http://ADDR/`) in `log`, its stderr; waits up to 30 s for it.
pub fn logged_dashboard_address(log: &std::path::Path) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let found = text
            .split("serving the dashboard on http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|a| a.parse().ok());
        if let Some(address) = found {
            return address;
        }
        assert!(Instant::now() < deadline, "no address logged:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
