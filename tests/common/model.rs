//! A from-scratch model of declared views, independent of the engine: it takes typed test
//! records (not decoded payloads), applies the documented lateness rule partition by partition,
//! and computes every table and `_late` for the records below a snapshot's offsets.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use duckdb::types::Value as DbValue;
use duckdb::Connection;

pub const SECOND: i64 = 1_000_000;
/// 2024-03-04T00:00:00Z: test event times are seconds after it.
pub const T0: i64 = 1_709_510_400 * SECOND;

/// One test record; its payload is JSON with an RFC 3339 `ts`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rec {
    pub key: String,
    pub sub: i64,
    pub value: Option<i64>,
    pub score: f64,
    pub flag: bool,
    pub ts: i64,
}

/// A message of a partition: a good record, or bytes the engine must reject.
#[derive(Clone, Debug, PartialEq)]
pub enum Msg {
    Good(Rec),
    Bad(Vec<u8>),
}

impl Msg {
    pub fn payload(&self) -> Vec<u8> {
        match self {
            Msg::Bad(bytes) => bytes.clone(),
            Msg::Good(r) => {
                let ts = chrono::DateTime::from_timestamp_micros(r.ts)
                    .unwrap()
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                serde_json::json!({
                    "key": r.key, "sub": r.sub, "value": r.value, "score": r.score,
                    "flag": r.flag, "ts": ts, "ignored": [1, 2],
                })
                .to_string()
                .into_bytes()
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Window {
    Tumbling(i64),
    Hopping(i64, i64),
    Session(i64),
    Global,
}

#[derive(Clone, Copy, Debug)]
pub enum Agg {
    Count,
    CountValue,
    SumValue,
    SumScore,
    MinValue,
    MaxValue,
    MaxScore,
    AvgValue,
    AvgScore,
    DistinctSub,
    MinKey,
    MaxTs,
}

impl Agg {
    /// `(column, fn, field)` as the pipeline file declares it.
    fn declaration(self) -> (&'static str, &'static str, Option<&'static str>) {
        match self {
            Agg::Count => ("n", "count", None),
            Agg::CountValue => ("n_value", "count", Some("value")),
            Agg::SumValue => ("sum_value", "sum", Some("value")),
            Agg::SumScore => ("sum_score", "sum", Some("score")),
            Agg::MinValue => ("min_value", "min", Some("value")),
            Agg::MaxValue => ("max_value", "max", Some("value")),
            Agg::MaxScore => ("max_score", "max", Some("score")),
            Agg::AvgValue => ("avg_value", "avg", Some("value")),
            Agg::AvgScore => ("avg_score", "avg", Some("score")),
            Agg::DistinctSub => ("distinct_sub", "count_distinct", Some("sub")),
            Agg::MinKey => ("min_key", "min", Some("key")),
            Agg::MaxTs => ("max_ts", "max", Some("ts")),
        }
    }

    fn compute(self, recs: &[&Rec]) -> Cell {
        let values: Vec<i64> = recs.iter().filter_map(|r| r.value).collect();
        let float = |v: f64| Cell::Float(v);
        match self {
            Agg::Count => Cell::Int(recs.len() as i128),
            Agg::CountValue => Cell::Int(values.len() as i128),
            Agg::SumValue if values.is_empty() => Cell::Null,
            Agg::SumValue => Cell::Int(values.iter().map(|v| *v as i128).sum()),
            Agg::SumScore => float(recs.iter().map(|r| r.score).sum()),
            Agg::MinValue => values
                .iter()
                .min()
                .map_or(Cell::Null, |v| Cell::Int(*v as i128)),
            Agg::MaxValue => values
                .iter()
                .max()
                .map_or(Cell::Null, |v| Cell::Int(*v as i128)),
            Agg::MaxScore => float(recs.iter().map(|r| r.score).fold(f64::MIN, f64::max)),
            Agg::AvgValue if values.is_empty() => Cell::Null,
            Agg::AvgValue => float(values.iter().sum::<i64>() as f64 / values.len() as f64),
            Agg::AvgScore => float(recs.iter().map(|r| r.score).sum::<f64>() / recs.len() as f64),
            Agg::DistinctSub => {
                Cell::Int(recs.iter().map(|r| r.sub).collect::<BTreeSet<_>>().len() as i128)
            }
            Agg::MinKey => Cell::Str(recs.iter().map(|r| r.key.clone()).min().unwrap()),
            Agg::MaxTs => Cell::Int(recs.iter().map(|r| r.ts).max().unwrap() as i128),
        }
    }
}

pub const ALL_AGGREGATES: [Agg; 12] = [
    Agg::Count,
    Agg::CountValue,
    Agg::SumValue,
    Agg::SumScore,
    Agg::MinValue,
    Agg::MaxValue,
    Agg::MaxScore,
    Agg::AvgValue,
    Agg::AvgScore,
    Agg::DistinctSub,
    Agg::MinKey,
    Agg::MaxTs,
];

/// A view as the test declares it.
#[derive(Clone, Debug)]
pub struct ModelView {
    pub name: &'static str,
    /// Group fields, among `key`, `flag`, `sub`.
    pub group_by: &'static [&'static str],
    pub window: Window,
    pub lateness: i64,
    pub emit_final: bool,
    /// The filter `value > 2 or flag` (the only one the model knows).
    pub filtered: bool,
    pub aggregates: Vec<Agg>,
}

impl ModelView {
    fn passes(&self, r: &Rec) -> bool {
        !self.filtered || r.value.is_some_and(|v| v > 2) || r.flag
    }

    fn group(&self, r: &Rec) -> Vec<Cell> {
        self.group_by
            .iter()
            .map(|field| match *field {
                "key" => Cell::Str(r.key.clone()),
                "flag" => Cell::Bool(r.flag),
                "sub" => Cell::Int(r.sub as i128),
                "value" => r.value.map_or(Cell::Null, |v| Cell::Int(v as i128)),
                other => panic!("model has no group field {other}"),
            })
            .collect()
    }

    pub fn toml(&self) -> String {
        let seconds = |us: i64| format!("\"{}s\"", us / SECOND);
        let window = match self.window {
            Window::Tumbling(size) => format!(
                "window = {{ type = \"tumbling\", size = {} }}\n",
                seconds(size)
            ),
            Window::Hopping(size, slide) => format!(
                "window = {{ type = \"hopping\", size = {}, slide = {} }}\n",
                seconds(size),
                seconds(slide)
            ),
            Window::Session(gap) => format!(
                "window = {{ type = \"session\", gap = {} }}\n",
                seconds(gap)
            ),
            Window::Global => String::new(),
        };
        let aggregates: Vec<String> = self
            .aggregates
            .iter()
            .map(|a| {
                let (column, function, field) = a.declaration();
                match field {
                    Some(field) => format!(
                        "{{ column = \"{column}\", fn = \"{function}\", field = \"{field}\" }}"
                    ),
                    None => format!("{{ column = \"{column}\", fn = \"{function}\" }}"),
                }
            })
            .collect();
        let group: Vec<String> = self.group_by.iter().map(|g| format!("\"{g}\"")).collect();
        format!(
            "[[views]]\nname = \"{}\"\ngroup_by = [{}]\n{window}allowed_lateness = {}\nemit = \"{}\"\n{}aggregates = [{}]\n\n",
            self.name,
            group.join(", "),
            seconds(self.lateness),
            if self.emit_final { "final" } else { "update" },
            if self.filtered { "filter = \"value > 2 or flag\"\n" } else { "" },
            aggregates.join(", ")
        )
    }
}

/// The views of the reference tests: every window kind and every aggregate, shared and
/// unshared arrangements, both emit modes, filtered and unfiltered.
pub fn views(lateness: i64) -> Vec<ModelView> {
    let all = ALL_AGGREGATES.to_vec();
    vec![
        ModelView {
            name: "tumbling",
            group_by: &["key"],
            window: Window::Tumbling(10 * SECOND),
            lateness,
            emit_final: false,
            filtered: false,
            aggregates: all.clone(),
        },
        // Same group, window and lateness as `tumbling`: shares its arrangement.
        ModelView {
            name: "tumbling_shared",
            group_by: &["key"],
            window: Window::Tumbling(10 * SECOND),
            lateness,
            emit_final: true,
            filtered: false,
            aggregates: vec![Agg::MaxValue, Agg::Count],
        },
        ModelView {
            name: "hopping",
            group_by: &["key", "flag"],
            window: Window::Hopping(10 * SECOND, 4 * SECOND),
            lateness,
            emit_final: false,
            filtered: false,
            aggregates: all.clone(),
        },
        ModelView {
            name: "hopping_final",
            group_by: &[],
            window: Window::Hopping(6 * SECOND, 3 * SECOND),
            lateness,
            emit_final: true,
            filtered: true,
            aggregates: vec![Agg::Count, Agg::SumValue, Agg::DistinctSub],
        },
        // Grouped by a nullable field: NULL is a group of its own, and the writer must replace
        // its rows (`IS NOT DISTINCT FROM`) rather than add new ones.
        ModelView {
            name: "by_value",
            group_by: &["value"],
            window: Window::Tumbling(10 * SECOND),
            lateness,
            emit_final: false,
            filtered: false,
            aggregates: vec![Agg::Count, Agg::MaxScore],
        },
        ModelView {
            name: "sessions",
            group_by: &["key"],
            window: Window::Session(3 * SECOND),
            lateness,
            emit_final: false,
            filtered: false,
            aggregates: all.clone(),
        },
        ModelView {
            name: "running",
            group_by: &["key", "sub"],
            window: Window::Global,
            lateness: 0,
            emit_final: false,
            filtered: true,
            aggregates: all,
        },
    ]
}

/// The source part of a test pipeline file (topic `events`; JSON with RFC 3339 `ts`).
pub fn source_toml(brokers: &str, out_of_orderness: i64) -> String {
    format!(
        r#"[[sources]]
name = "events"
brokers = "{brokers}"
topic = "events"
event_time = "ts"
max_out_of_orderness = "{}s"
schema = [
    {{ name = "key", type = "string" }},
    {{ name = "sub", type = "int" }},
    {{ name = "value", type = "int", nullable = true }},
    {{ name = "score", type = "float" }},
    {{ name = "flag", type = "bool" }},
    {{ name = "ts", type = "timestamp" }},
]

"#,
        out_of_orderness / SECOND
    )
}

/// A table cell, compared with a tolerance for floats (sums of floats depend on order).
#[derive(Clone, Debug, PartialOrd)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
}

impl PartialEq for Cell {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Cell::Float(a), Cell::Float(b)) => {
                (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
            }
            (Cell::Null, Cell::Null) => true,
            (Cell::Bool(a), Cell::Bool(b)) => a == b,
            (Cell::Int(a), Cell::Int(b)) => a == b,
            (Cell::Str(a), Cell::Str(b)) => a == b,
            _ => false,
        }
    }
}

fn ordering(a: &[Cell], b: &[Cell]) -> std::cmp::Ordering {
    a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal)
}

/// Tables and `_late` as the model computes them.
#[derive(Debug, Default)]
pub struct Expected {
    pub tables: BTreeMap<&'static str, Vec<Vec<Cell>>>,
    pub late: BTreeSet<(String, i32, i64, i64)>,
    pub rejected: usize,
    pub watermark: Option<i64>,
}

/// Session and global views: (view, group) → (group cells, records).
type SessionGroups<'a> = BTreeMap<(usize, Vec<String>), (Vec<Cell>, Vec<&'a Rec>)>;

/// Computes every view over the records of each partition below `offsets`, with the source
/// watermark `watermark` deciding which windows are final.
pub fn expected(
    views: &[ModelView],
    partitions: &[Vec<Msg>],
    offsets: &BTreeMap<i32, i64>,
    out_of_orderness: i64,
    watermark: i64,
) -> Expected {
    let mut result = Expected::default();
    // (view, group, start, end) → records; sessions and global: (view, group) → records.
    let mut windows: BTreeMap<(usize, Vec<String>, i64, i64), Vec<&Rec>> = BTreeMap::new();
    let mut groups: SessionGroups = BTreeMap::new();
    let mut window_groups: BTreeMap<(usize, Vec<String>), Vec<Cell>> = BTreeMap::new();
    for (partition, messages) in partitions.iter().enumerate() {
        let below = offsets.get(&(partition as i32)).copied().unwrap_or(0) as usize;
        let mut max_ts: Option<i64> = None;
        for (offset, message) in messages[..below].iter().enumerate() {
            let Msg::Good(r) = message else {
                result.rejected += 1;
                continue;
            };
            let pw = max_ts.map_or(i64::MIN, |m| m - out_of_orderness);
            max_ts = Some(max_ts.map_or(r.ts, |m| m.max(r.ts)));
            for (v, view) in views.iter().enumerate() {
                if !view.passes(r) {
                    continue;
                }
                let group = view.group(r);
                let group_key: Vec<String> = group.iter().map(|c| format!("{c:?}")).collect();
                let mut late = |start: i64| {
                    result.late.insert((
                        view.name.to_owned(),
                        partition as i32,
                        offset as i64,
                        start,
                    ));
                };
                let fixed = match view.window {
                    Window::Tumbling(size) => vec![(r.ts.div_euclid(size) * size, size)],
                    Window::Hopping(size, slide) => {
                        let last = r.ts.div_euclid(slide) * slide;
                        (0..)
                            .map(|i| last - i * slide)
                            .take_while(|s| s + size > r.ts)
                            .map(|s| (s, size))
                            .collect()
                    }
                    Window::Session(_) | Window::Global => Vec::new(),
                };
                for (start, size) in fixed {
                    if start + size + view.lateness <= pw {
                        late(start);
                    } else {
                        windows
                            .entry((v, group_key.clone(), start, start + size))
                            .or_default()
                            .push(r);
                        window_groups.insert((v, group_key.clone()), group.clone());
                    }
                }
                match view.window {
                    Window::Session(_) if r.ts.saturating_add(view.lateness) < pw => late(r.ts),
                    Window::Session(_) | Window::Global => groups
                        .entry((v, group_key))
                        .or_insert_with(|| (group, Vec::new()))
                        .1
                        .push(r),
                    _ => {}
                }
            }
        }
    }
    let mut rows: BTreeMap<usize, Vec<Vec<Cell>>> = BTreeMap::new();
    let row = |view: &ModelView, group: &[Cell], window: Option<(i64, i64)>, recs: &[&Rec]| {
        let mut row: Vec<Cell> = group.to_vec();
        if let Some((start, end)) = window {
            row.push(Cell::Int(start as i128));
            row.push(Cell::Int(end as i128));
        }
        row.extend(view.aggregates.iter().map(|a| a.compute(recs)));
        if let Some((_, end)) = window {
            let is_final = end.saturating_add(view.lateness) <= watermark;
            if view.emit_final && !is_final {
                return None;
            }
            row.push(Cell::Bool(is_final));
        }
        Some(row)
    };
    for ((v, group_key, start, end), recs) in &windows {
        let group = &window_groups[&(*v, group_key.clone())];
        rows.entry(*v)
            .or_default()
            .extend(row(&views[*v], group, Some((*start, *end)), recs));
    }
    for ((v, _), (group, recs)) in &mut groups {
        let view = &views[*v];
        match view.window {
            Window::Global => rows
                .entry(*v)
                .or_default()
                .extend(row(view, group, None, recs)),
            Window::Session(gap) => {
                recs.sort_by_key(|r| r.ts);
                let mut begin = 0;
                for i in 1..=recs.len() {
                    if i == recs.len() || recs[i].ts >= recs[i - 1].ts + gap {
                        let window = (recs[begin].ts, recs[i - 1].ts + gap);
                        rows.entry(*v).or_default().extend(row(
                            view,
                            group,
                            Some(window),
                            &recs[begin..i],
                        ));
                        begin = i;
                    }
                }
            }
            _ => unreachable!(),
        }
    }
    for (v, view) in views.iter().enumerate() {
        let mut table = rows.remove(&v).unwrap_or_default();
        table.sort_by(|a, b| ordering(a, b));
        result.tables.insert(view.name, table);
    }
    result.watermark = (watermark > i64::MIN).then_some(watermark);
    result
}

/// The source watermark after a snapshot: the previous one, or the smallest partition watermark
/// over all partitions (below their offsets) if that is larger.
pub fn next_watermark(
    previous: i64,
    partitions: &[Vec<Msg>],
    offsets: &BTreeMap<i32, i64>,
    out_of_orderness: i64,
) -> i64 {
    let minimum = (0..partitions.len())
        .map(|p| {
            let below = offsets.get(&(p as i32)).copied().unwrap_or(0) as usize;
            partitions[p][..below]
                .iter()
                .filter_map(|m| match m {
                    Msg::Good(r) => Some(r.ts),
                    Msg::Bad(_) => None,
                })
                .max()
                .map_or(i64::MIN, |m| m - out_of_orderness)
        })
        .min()
        .unwrap_or(i64::MIN);
    previous.max(minimum)
}

/// A view table as committed: every row, timestamps as microseconds, sorted.
pub fn read_table(conn: &Connection, table: &str) -> Vec<Vec<Cell>> {
    let types: Vec<(String, String)> = conn
        .prepare(&format!("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = '{table}' ORDER BY ordinal_position"))
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let select: Vec<String> = types
        .iter()
        .map(|(name, kind)| match kind.as_str() {
            "TIMESTAMP" => format!("epoch_us({name})"),
            _ => name.clone(),
        })
        .collect();
    let mut statement = conn
        .prepare(&format!("SELECT {} FROM {table}", select.join(", ")))
        .unwrap();
    let mut rows = statement.query([]).unwrap();
    let mut table_rows: Vec<Vec<Cell>> = Vec::new();
    while let Some(row) = rows.next().unwrap() {
        let cells: Vec<Cell> = (0..types.len())
            .map(|i| match row.get::<_, DbValue>(i).unwrap() {
                DbValue::Null => Cell::Null,
                DbValue::Boolean(b) => Cell::Bool(b),
                DbValue::BigInt(v) => Cell::Int(v as i128),
                DbValue::HugeInt(v) => Cell::Int(v),
                DbValue::Double(v) => Cell::Float(v),
                DbValue::Text(s) => Cell::Str(s),
                other => panic!("unexpected value {other:?} in {table}"),
            })
            .collect();
        table_rows.push(cells);
    }
    table_rows.sort_by(|a, b| ordering(a, b));
    table_rows
}

/// Where a model's records come from: the topic and the source name of one pipeline source.
#[derive(Clone, Copy, Debug)]
pub struct Origin<'a> {
    pub topic: &'a str,
    pub source: &'a str,
}

/// The one source of the single-source tests.
pub const EVENTS: Origin<'static> = Origin {
    topic: "events",
    source: "events",
};

/// `_late` rows of all snapshots up to `snapshot_id`, of records from `origin`.
pub fn read_late(
    conn: &Connection,
    snapshot_id: i64,
    origin: Origin,
) -> BTreeSet<(String, i32, i64, i64)> {
    conn.prepare("SELECT \"view\", \"partition\", \"offset\", epoch_us(window_start) FROM _late WHERE snapshot_id <= ? AND topic = ?")
        .unwrap()
        .query_map(duckdb::params![snapshot_id, origin.topic], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Partition → next offset of `origin`'s topic committed with `snapshot_id`.
pub fn read_offsets(conn: &Connection, snapshot_id: i64, origin: Origin) -> BTreeMap<i32, i64> {
    conn.prepare(
        "SELECT \"partition\", next_offset FROM _offsets WHERE snapshot_id = ? AND topic = ?",
    )
    .unwrap()
    .query_map(duckdb::params![snapshot_id, origin.topic], |row| {
        Ok((row.get(0)?, row.get(1)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

pub fn read_watermark(conn: &Connection, snapshot_id: i64, origin: Origin) -> Option<i64> {
    conn.query_row(
        "SELECT epoch_us(watermark) FROM _watermarks WHERE snapshot_id = ? AND source = ?",
        duckdb::params![snapshot_id, origin.source],
        |row| row.get(0),
    )
    .unwrap()
}

pub fn count_rejects(conn: &Connection, snapshot_id: i64, origin: Origin) -> usize {
    conn.query_row(
        "SELECT count(*) FROM _rejects WHERE snapshot_id <= ? AND topic = ?",
        duckdb::params![snapshot_id, origin.topic],
        |row| row.get::<_, i64>(0),
    )
    .unwrap() as usize
}

/// Asserts the committed state of one snapshot equals the model of the records from `origin`
/// (its views' tables, and its rows of `_late` and `_rejects`), with a readable diff.
pub fn assert_snapshot_matches(
    conn: &Connection,
    snapshot_id: i64,
    expected: &Expected,
    origin: Origin,
    context: &str,
) {
    for (table, rows) in &expected.tables {
        let actual = read_table(conn, table);
        if &actual != rows {
            let missing: Vec<_> = rows
                .iter()
                .filter(|r| !actual.contains(r))
                .take(4)
                .collect();
            let extra: Vec<_> = actual
                .iter()
                .filter(|r| !rows.contains(r))
                .take(4)
                .collect();
            panic!(
                "{context}, snapshot {snapshot_id}, table {table}: {} rows, {} expected\n expected, not found: {missing:?}\n found, not expected: {extra:?}",
                actual.len(),
                rows.len()
            );
        }
    }
    let late = read_late(conn, snapshot_id, origin);
    assert_eq!(
        late, expected.late,
        "{context}, snapshot {snapshot_id}: _late"
    );
    assert_eq!(
        count_rejects(conn, snapshot_id, origin),
        expected.rejected,
        "{context}: _rejects"
    );
    assert_eq!(
        read_watermark(conn, snapshot_id, origin),
        expected.watermark,
        "{context}: watermark"
    );
}
