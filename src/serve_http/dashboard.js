// Tidewater's dashboard: plain JS and SVG, no libraries. The page lists the views once
// (/api/views), then follows /events: each committed snapshot updates the status line and the
// throughput chart, and the views are read again (one request per view, never more than one
// round at a time).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const HISTORY = 60;        // snapshots in the throughput chart
const BARS = 12;           // groups in a view's chart
const TABLE_ROWS = 10;     // rows in a view's table
const ROWS_PER_VIEW = 200; // rows read per view and round

const state = { views: [], history: [], reading: false, again: false };
const wanted = new URLSearchParams(location.search).get("views");

function el(tag, attributes, text) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function number(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return value.toLocaleString("en-US", { maximumFractionDigits: 2 });
  return String(value);
}

function setText(id, text) {
  const node = document.getElementById(id);
  if (node.textContent !== text) node.textContent = text;
}

function setConnection(text, kind) {
  const badge = document.getElementById("connection");
  badge.textContent = text;
  badge.className = "badge " + kind;
}

// --- the status line and the throughput chart -------------------------------------------

function showSnapshot(event) {
  setText("snapshot-id", String(event.snapshot_id));
  document.body.dataset.snapshotId = String(event.snapshot_id);
  setText("committed-at", event.committed_at.replace("T", " ").replace("Z", " UTC"));
  setText("records-total", number(event.records_in_total));
  setText("records-last",
    `${number(event.records_in)} in · ${number(event.records_rejected)} rejected · ${number(event.records_late)} late · ${number(event.rows_changed)} rows changed`);
  setText("commit-ms", `${number(event.commit_ms)} ms`);
  setText("freshness-ms", event.freshness_ms === null ? "–" : `${number(event.freshness_ms)} ms`);
  const lag = [];
  if (event.lag_records !== null) lag.push(`${number(event.lag_records)} records`);
  if (event.remaining_bytes !== null) lag.push(`${number(event.remaining_bytes)} bytes`);
  setText("lag", lag.length ? lag.join(" · ") : "–");
  state.history.push(event);
  if (state.history.length > HISTORY) state.history.shift();
  drawThroughput();
}

function drawThroughput() {
  const svg = document.getElementById("throughput");
  svg.replaceChildren();
  const width = 960, height = 140, top = 14, bottom = 18;
  const history = state.history;
  const max = Math.max(1, ...history.map((e) => e.records_in));
  const slot = width / HISTORY;
  svg.appendChild(el("svg:line", { x1: 0, x2: width, y1: height - bottom, y2: height - bottom, class: "axis" }));
  history.forEach((event, i) => {
    const h = ((height - top - bottom) * event.records_in) / max;
    const x = (HISTORY - history.length + i) * slot;
    const bar = el("svg:rect", {
      x: x + 1, y: height - bottom - h, width: Math.max(1, slot - 2), height: h,
      class: i === history.length - 1 ? "bar" : "bar old",
    });
    bar.appendChild(el("svg:title", {}, `snapshot ${event.snapshot_id}: ${event.records_in} records`));
    svg.appendChild(bar);
  });
  if (history.length) {
    const last = history[history.length - 1];
    svg.appendChild(el("svg:text", { x: width - 4, y: 11, "text-anchor": "end" },
      `snapshot ${last.snapshot_id}: ${number(last.records_in)} records`));
    svg.appendChild(el("svg:text", { x: 4, y: height - 4 }, `max ${number(max)} records per snapshot`));
  }
}

// --- the views ------------------------------------------------------------------------------

function buildCards(views) {
  const main = document.getElementById("views");
  main.replaceChildren();
  for (const view of views) {
    const card = el("section", { class: "card", id: `view-${view.name}` });
    const title = el("h2", {}, view.name + " ");
    title.appendChild(el("span", { class: "note", "data-role": "count" }, ""));
    card.appendChild(title);
    card.appendChild(el("div", { class: "describe" }, view.description));
    card.appendChild(el("svg:svg", { viewBox: "0 0 460 10", "data-role": "chart" }));
    const wrap = el("div", { class: "table-wrap" });
    wrap.appendChild(el("table", { "data-role": "table" }));
    card.appendChild(wrap);
    main.appendChild(card);
  }
  if (!views.length) main.appendChild(el("p", { class: "note" }, "No views."));
}

// The first aggregate column holding numbers: what the bars show.
function measureOf(view, rows) {
  const keys = new Set(view.key_columns.concat(["window_start", "window_end", "is_final"]));
  for (const column of view.columns) {
    if (keys.has(column.name)) continue;
    if (rows.some((row) => typeof row[column.name] === "number")) return column.name;
  }
  return null;
}

function groupLabel(view, row) {
  return view.key_columns
    .filter((c) => c !== "window_start")
    .map((c) => String(row[c]))
    .join(" / ");
}

function drawView(view, data) {
  const card = document.getElementById(`view-${view.name}`);
  if (!card) return;
  const rows = data.rows;
  const latestWindow = view.windowed && rows.length ? `latest window ${rows[0].window_start}` : "";
  card.querySelector("[data-role=count]").textContent =
    `${number(data.total_rows)} rows${data.open_rows !== null ? `, ${number(data.open_rows)} open` : ""}${latestWindow ? " · " + latestWindow : ""}`;

  const measure = measureOf(view, rows);
  const chart = card.querySelector("[data-role=chart]");
  chart.replaceChildren();
  const ranked = measure === null ? [] : rows
    .filter((row) => typeof row[measure] === "number")
    .sort((a, b) => b[measure] - a[measure])
    .slice(0, BARS);
  const rowHeight = 17, labelWidth = 170, width = 460;
  const height = Math.max(10, ranked.length * rowHeight + (ranked.length ? 16 : 0));
  chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const max = Math.max(1e-9, ...ranked.map((row) => row[measure]));
  ranked.forEach((row, i) => {
    const y = i * rowHeight;
    const w = ((width - labelWidth - 70) * row[measure]) / max;
    const label = groupLabel(view, row);
    chart.appendChild(el("svg:text", { x: labelWidth - 6, y: y + 12, "text-anchor": "end" },
      label.length > 26 ? label.slice(0, 25) + "…" : label));
    chart.appendChild(el("svg:rect", { x: labelWidth, y: y + 2, width: Math.max(1, w), height: rowHeight - 4, class: "bar" }));
    chart.appendChild(el("svg:text", { x: labelWidth + w + 4, y: y + 12 }, number(row[measure])));
  });
  if (ranked.length) {
    chart.appendChild(el("svg:text", { x: 4, y: height - 3, class: "note" },
      `${measure}, top ${ranked.length} groups${view.windowed ? " of the latest window" : ""}`));
  }

  const table = card.querySelector("[data-role=table]");
  table.replaceChildren();
  const head = el("tr");
  for (const column of view.columns) head.appendChild(el("th", {}, column.name));
  table.appendChild(head);
  for (const row of (ranked.length ? ranked : rows).slice(0, TABLE_ROWS)) {
    const tr = el("tr");
    for (const column of view.columns) {
      const value = row[column.name];
      tr.appendChild(el("td", typeof value === "number" ? { class: "num" } : {}, number(value)));
    }
    table.appendChild(tr);
  }
}

async function readViews() {
  if (state.reading) { state.again = true; return; }
  state.reading = true;
  try {
    do {
      state.again = false;
      for (const view of state.views) {
        const query = `limit=${ROWS_PER_VIEW}${view.windowed ? "&latest=1" : ""}`;
        const response = await fetch(`/api/views/${encodeURIComponent(view.name)}?${query}`);
        if (response.ok) drawView(view, await response.json());
      }
    } while (state.again);
  } catch (error) {
    console.warn("reading the views:", error);
  } finally {
    state.reading = false;
  }
}

// Lists the views (again, if the engine had not started when the page was loaded).
async function listViews() {
  try {
    const listing = await (await fetch("/api/views")).json();
    const names = wanted ? wanted.split(",").map((s) => s.trim()) : null;
    state.views = listing.views.filter((v) => !names || names.includes(v.name));
    buildCards(state.views);
    if (listing.snapshot && !state.history.length) {
      setText("snapshot-id", String(listing.snapshot.snapshot_id));
    }
  } catch (error) {
    document.getElementById("views").textContent = `Could not list the views: ${error}`;
  }
}

async function start() {
  await listViews();
  readViews();
  const events = new EventSource("/events");
  events.onopen = () => setConnection("live", "live");
  events.onerror = () => setConnection("disconnected (retrying)", "down");
  events.addEventListener("snapshot", async (message) => {
    showSnapshot(JSON.parse(message.data));
    if (!state.views.length) await listViews();
    readViews();
  });
}

drawThroughput();
start();
