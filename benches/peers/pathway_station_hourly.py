"""Peer benchmark: hourly-per-station turnstile view on Pathway.

Usage: PYTHON pathway_station_hourly.py INPUT.jsonl OUTPUT.csv

jsonlines reader (static mode) -> parse ts -> windowby(1 h tumbling,
instance=station, cutoff 3 h) -> count/sums -> subscribe callback collecting
the final rows.  Runs with 2 worker threads.  Prints one JSON result line on
stdout.
"""
import csv
import json
import os
import sys
import time
from datetime import timedelta

T0 = time.time()
PEER = "pathway"
THREADS = "2"
# The engine reads its worker count from this variable (what `pathway spawn
# --threads` sets); pw.run has no such argument.  Forced so the run is 2 threads.
os.environ["PATHWAY_THREADS"] = THREADS


def die(msg):
    print(f"{PEER}: {msg}", file=sys.stderr)
    sys.exit(2)


if len(sys.argv) != 3:
    die("usage: PYTHON pathway_station_hourly.py INPUT.jsonl OUTPUT.csv")
inp, out = sys.argv[1], sys.argv[2]
if not os.path.isfile(inp):
    die(f"input file does not exist: {inp}")
try:
    import pathway as pw
except ImportError as e:
    die(f"missing package ({e}); install pathway into this interpreter")

with open(inp, "rb") as f:  # event count = input lines (checked against the output below)
    events = sum(buf.count(b"\n") for buf in iter(lambda: f.read(1 << 20), b""))

SETTINGS = f"{THREADS} threads (PATHWAY_THREADS), static jsonlines, cutoff 3h"


class Reading(pw.Schema):  # only the fields the view needs are parsed
    station: str
    ts: str
    entries: int
    exits: int


t_start = time.time()
readings = pw.io.jsonlines.read(inp, schema=Reading, mode="static")
# %.f takes an optional fraction, %#z accepts "Z": gives a DateTimeUtc.
readings = readings.with_columns(ts=pw.this.ts.dt.strptime("%Y-%m-%dT%H:%M:%S%.f%#z"))
view = readings.windowby(
    readings.ts,
    window=pw.temporal.tumbling(duration=timedelta(hours=1)),  # origin None: epoch-aligned
    instance=readings.station,
    # Rows later than 3 h behind the newest event time would be dropped; the
    # input is at most 90 min late, so nothing is.
    behavior=pw.temporal.common_behavior(cutoff=timedelta(hours=3)),
).reduce(
    station=pw.this._pw_instance,
    window_start=pw.this._pw_window_start.dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
    readings=pw.reducers.count(),
    entries=pw.reducers.sum(pw.this.entries),
    exits=pw.reducers.sum(pw.this.exits),
)

# The output is a stream of row insertions and retractions (in no guaranteed
# order within a batch); the final table is the rows with a positive balance.
balance = {}


def on_change(key, row, time, is_addition):
    r = (row["window_start"], row["station"], row["readings"], row["entries"], row["exits"])
    balance[r] = balance.get(r, 0) + (1 if is_addition else -1)


pw.io.subscribe(view, on_change)
pw.run(monitoring_level=pw.MonitoringLevel.NONE, default_logging=False)

rows = sorted(r for r, n in balance.items() if n > 0)
with open(out, "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(["station", "window_start", "readings", "entries", "exits"])
    for ws, station, *vals in rows:
        w.writerow([station, ws, *vals])
t_end = time.time()

counted = sum(r[2] for r in rows)
if counted != events:
    print(f"{PEER}: WARNING output counts {counted} readings, input has {events} lines",
          file=sys.stderr)
print(json.dumps({"peer": PEER, "version": pw.__version__, "events": events,
                  "rows": len(rows), "seconds": round(t_end - t_start, 3),
                  "total_seconds": round(time.time() - T0, 3), "settings": SETTINGS}))
