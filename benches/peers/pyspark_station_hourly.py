"""Peer benchmark: hourly-per-station turnstile view on PySpark Structured Streaming.

Usage: PYTHON pyspark_station_hourly.py INPUT.jsonl OUTPUT.csv

Streaming file source -> 3 h watermark -> 1 h tumbling window per station
(update mode) -> foreachBatch to Parquet; the final rows are the last update
of each (station, window) key.  Prints one JSON result line on stdout.
"""
import csv
import json
import os
import shutil
import sys
import tempfile
import time

T0 = time.time()
PEER = "pyspark"


def die(msg):
    print(f"{PEER}: {msg}", file=sys.stderr)
    sys.exit(2)


if len(sys.argv) != 3:
    die("usage: PYTHON pyspark_station_hourly.py INPUT.jsonl OUTPUT.csv")
inp, out = os.path.abspath(sys.argv[1]), sys.argv[2]
if not os.path.isfile(inp):
    die(f"input file does not exist: {inp}")
try:
    import pyarrow.parquet as pq
    import pyspark
    from pyspark.sql import SparkSession, functions as F, types as T
except ImportError as e:
    die(f"missing package ({e}); install pyspark and pyarrow into this interpreter")

with open(inp, "rb") as f:  # event count = input lines (checked against the output below)
    events = sum(buf.count(b"\n") for buf in iter(lambda: f.read(1 << 20), b""))

# Scratch: the file source watches a directory, so link the input into one.
work = tempfile.mkdtemp(prefix="peers-pyspark-")
src_dir, sink_dir = os.path.join(work, "in"), os.path.join(work, "out")
os.makedirs(src_dir)
os.symlink(inp, os.path.join(src_dir, "input.jsonl"))

SETTINGS = "local[2], shuffle.partitions=2, trigger availableNow, watermark 3h, update mode"
spark = (
    SparkSession.builder.master("local[2]")
    .appName("tidewater-peer-station-hourly")
    # Default 200 shuffle partitions would mean 200 tasks and 200 state-store
    # instances per micro-batch; with 2 cores and ~20k keys, 2 (one per core) is fastest.
    .config("spark.sql.shuffle.partitions", "2")
    .config("spark.sql.session.timeZone", "UTC")  # window bounds and ts parsing in UTC
    .config("spark.ui.enabled", "false")  # no web UI: less startup work, no port
    .config("spark.ui.showConsoleProgress", "false")
    # After the data batch Spark would run an extra empty batch only to evict
    # state; in update mode it emits nothing, so skip it.
    .config("spark.sql.streaming.noDataMicroBatches.enabled", "false")
    .config("spark.driver.memory", "4g")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")

schema = T.StructType([
    T.StructField("station", T.StringType()),
    T.StructField("ts", T.TimestampType()),  # RFC 3339 with optional fraction and Z
    T.StructField("entries", T.LongType()),
    T.StructField("exits", T.LongType()),
])  # the other fields of a reading are not needed, so they are not parsed


def write_batch(df, batch_id):
    # Each micro-batch holds the rows updated in it; keep the batch id so the
    # last update per key can be picked at the end.
    df.withColumn("batch_id", F.lit(batch_id)).write.mode("overwrite").parquet(
        os.path.join(sink_dir, f"batch-{batch_id:06d}"))


t_start = time.time()
view = (
    spark.readStream.schema(schema).json(src_dir)
    .withWatermark("ts", "3 hours")
    .groupBy(F.window("ts", "1 hour"), "station")
    .agg(F.count(F.lit(1)).alias("readings"), F.sum("entries").alias("entries"),
         F.sum("exits").alias("exits"))
    .select("station", F.col("window.start").cast("long").alias("window_start"),
            "readings", "entries", "exits")
)
query = (
    view.writeStream.outputMode("update").foreachBatch(write_batch)
    .option("checkpointLocation", os.path.join(work, "checkpoint"))
    .trigger(availableNow=True).start()
)
query.awaitTermination()

# Final result = last update per (station, window_start), in batch order.
final = {}
if os.path.isdir(sink_dir):
    table = pq.read_table(sink_dir).sort_by("batch_id")
    for r in table.to_pylist():
        final[(r["window_start"], r["station"])] = (r["readings"], r["entries"], r["exits"])
rows = sorted(final.items())
with open(out, "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(["station", "window_start", "readings", "entries", "exits"])
    for (ws, station), vals in rows:
        w.writerow([station, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ws)), *vals])
t_end = time.time()

spark.stop()
shutil.rmtree(work, ignore_errors=True)
counted = sum(v[0] for _, v in rows)
if counted != events:
    print(f"{PEER}: WARNING output counts {counted} readings, input has {events} lines",
          file=sys.stderr)
print(json.dumps({"peer": PEER, "version": pyspark.__version__, "events": events,
                  "rows": len(rows), "seconds": round(t_end - t_start, 3),
                  "total_seconds": round(time.time() - T0, 3), "settings": SETTINGS}))
