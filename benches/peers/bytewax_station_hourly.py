"""Peer benchmark: hourly-per-station turnstile view on Bytewax.

Usage: PYTHON bytewax_station_hourly.py INPUT.jsonl OUTPUT.csv

FileSource -> json parse -> key by station -> fold_window (1 h tumbling
windows aligned to the epoch, event clock waiting 3 h) -> list.  Windows are
emitted once, when they close (all of them at EOF).  Prints one JSON result
line on stdout.
"""
import csv
import json
import os
import sys
import time
from datetime import datetime, timedelta, timezone

T0 = time.time()
PEER = "bytewax"


def die(msg):
    print(f"{PEER}: {msg}", file=sys.stderr)
    sys.exit(2)


if len(sys.argv) != 3:
    die("usage: PYTHON bytewax_station_hourly.py INPUT.jsonl OUTPUT.csv")
inp, out = sys.argv[1], sys.argv[2]
if not os.path.isfile(inp):
    die(f"input file does not exist: {inp}")
try:
    from importlib.metadata import version

    import bytewax.operators as op
    from bytewax.connectors.files import FileSource
    from bytewax.dataflow import Dataflow
    from bytewax.operators.windowing import EventClock, TumblingWindower, fold_window
    from bytewax.testing import TestingSink, run_main
except ImportError as e:
    die(f"missing package ({e}); install bytewax into this interpreter")

with open(inp, "rb") as f:  # event count = input lines (checked against the output below)
    events = sum(buf.count(b"\n") for buf in iter(lambda: f.read(1 << 20), b""))

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
SETTINGS = "1 worker (run_main), FileSource batch 10000, wait_for_system_duration 3h, unordered fold"


def parse(line):
    r = json.loads(line)
    # Python 3.11 fromisoformat accepts "Z" and an optional fraction.
    return datetime.fromisoformat(r["ts"]), r["station"], r["entries"], r["exits"]


def fold(acc, reading):
    acc[0] += 1
    acc[1] += reading[2]
    acc[2] += reading[3]
    return acc


t_start = time.time()
flow = Dataflow("station_hourly")
readings = op.map("parse", op.input("in", flow, FileSource(inp, batch_size=10_000)), parse)
keyed = op.key_on("station", readings, lambda r: r[1])
windows = fold_window(
    "hourly", keyed,
    # Watermark = newest event time - 3 h (advancing with wall time in between):
    # readings up to 90 min late are never behind it, so none is dropped.
    EventClock(lambda r: r[0], wait_for_system_duration=timedelta(hours=3)),
    TumblingWindower(length=HOUR, align_to=EPOCH),
    lambda: [0, 0, 0], fold, lambda a, b: [x + y for x, y in zip(a, b)],
    # Count and sums commute, so items need not be buffered and sorted by time.
    ordered=False,
)
results = []
op.output("out", windows.down, TestingSink(results))  # TestingSink appends to a list
# run_main runs the flow in this process on one worker thread: no process
# spawning or module re-import as with `python -m bytewax.run`.
run_main(flow)

# down items are (station, (window_id, [readings, entries, exits])).
rows = sorted((EPOCH + wid * HOUR, station, acc) for station, (wid, acc) in results)
with open(out, "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(["station", "window_start", "readings", "entries", "exits"])
    for ws, station, acc in rows:
        w.writerow([station, ws.strftime("%Y-%m-%dT%H:%M:%SZ"), *acc])
t_end = time.time()

counted = sum(acc[0] for _, _, acc in rows)
if counted != events:
    print(f"{PEER}: WARNING output counts {counted} readings, input has {events} lines",
          file=sys.stderr)
print(json.dumps({"peer": PEER, "version": version("bytewax"), "events": events,
                  "rows": len(rows), "seconds": round(t_end - t_start, 3),
                  "total_seconds": round(time.time() - T0, 3), "settings": SETTINGS}))
