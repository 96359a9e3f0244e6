"""Python's duckdb opens Tidewater's published copy again and again while the engine runs.

Used by tests/publish.rs. Each time it opens the copy read-only, reads the copy's last snapshot
and the station_hourly view in one connection, and prints them as one JSON line; the test
compares each line with the view the engine committed with that snapshot. A copy that cannot be
opened ends this script with a traceback and a non-zero exit, which fails the test.

Arguments: COPY STOP_FILE SECONDS. It stops when STOP_FILE exists, after SECONDS, or when the
test has gone (the copy's directory removed, or this process orphaned).
"""

import json
import os
import sys
import time

import duckdb

VIEW = """
SELECT epoch_us(window_start), epoch_us(window_end), station, readings,
       entries::BIGINT, exits::BIGINT
FROM station_hourly
"""

copy, stop_file, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
deadline = time.monotonic() + seconds
parent = os.getppid()
print(json.dumps({"duckdb": duckdb.__version__}), flush=True)


def test_is_running():
    return (
        not os.path.exists(stop_file)
        and time.monotonic() < deadline
        and os.getppid() == parent
        and os.path.isdir(os.path.dirname(copy))
    )


while test_is_running():
    if not os.path.exists(copy):
        time.sleep(0.005)
        continue
    # The copy is replaced by a rename: this connection holds whichever file it opened.
    with duckdb.connect(copy, read_only=True) as connection:
        snapshot = connection.execute("SELECT max(snapshot_id) FROM _snapshots").fetchone()[0]
        rows = connection.execute(VIEW).fetchall()
    print(json.dumps({"snapshot": snapshot, "rows": rows}), flush=True)
    time.sleep(0.005)
