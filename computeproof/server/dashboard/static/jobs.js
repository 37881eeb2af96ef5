// The jobs page, live: when the ledger grows, the newest page is fetched again with the
// same filters (they are the page's URL) and its rows replaced; on an older page a banner
// offers the newest. Server-sent events when the server streams them, else a fetch every
// refresh period. Rows are built with textContent only: job fields are hostile text.

const base = document.body.dataset.base || "";
const table = document.getElementById("jobs");
const body = document.getElementById("jobs-body");
const live = document.getElementById("live");
const banner = document.getElementById("new-banner");
const count = document.getElementById("count");
const params = table.dataset.params;
const firstPage = table.dataset.firstPage === "1";
const refreshS = Number(live.dataset.refreshS) || 10;
let logSize = Number(table.dataset.logSize);
let busy = false, again = false, timer = null;

function num(v, places) {
  return v === null || v === undefined ? ""
    : Number(v).toLocaleString("en-US", { minimumFractionDigits: places, maximumFractionDigits: places });
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text === null || text === undefined ? "" : String(text);
  tr.appendChild(td);
  return td;
}

function row(j, fresh) {
  const tr = document.createElement("tr");
  tr.className = `job st-${j.status}` + (fresh ? " fresh" : "");
  tr.dataset.jobKey = j.job_key;
  const first = document.createElement("td");
  const a = document.createElement("a");
  a.href = `${base}/jobs/${encodeURIComponent(j.job_key)}`;
  a.textContent = j.job;
  first.appendChild(a);
  if (j.run) { const s = document.createElement("span"); s.className = "dim"; s.textContent = ` run ${j.run}`; first.appendChild(s); }
  if (j.synthetic) { const s = document.createElement("span"); s.className = "tag"; s.textContent = "synthetic"; first.append(" ", s); }
  tr.appendChild(first);
  const st = document.createElement("td");
  const badge = document.createElement("span");
  badge.className = `badge st-${j.status}`;
  badge.textContent = j.state;
  st.appendChild(badge);
  tr.appendChild(st);
  cell(tr, j.user); cell(tr, j.account); cell(tr, j.partition);
  cell(tr, j.gpus, "n"); cell(tr, j.gpu_model); cell(tr, j.nodes, "nodes");
  cell(tr, j.start, "t"); cell(tr, j.end, "t"); cell(tr, j.elapsed, "n");
  cell(tr, num(j.busy_gpu_hours, 2), "n"); cell(tr, num(j.energy_kwh, 3), "n");
  return tr;
}

function render(data) {
  const known = new Set([...body.querySelectorAll("tr")].map((tr) => tr.dataset.jobKey));
  const rows = data.jobs.map((j) => row(j, !known.has(j.job_key)));
  body.replaceChildren(...rows);
  const empty = document.getElementById("empty");
  if (empty) empty.hidden = data.jobs.length > 0;
  const n = data.total.toLocaleString("en-US");
  count.textContent = `${data.total_capped ? "more than " : ""}${n} job${data.total === 1 ? "" : "s"} match`
    + (count.dataset.suffix || "");
}

async function refresh(size) {
  if (size !== undefined && size === logSize) return;
  if (busy) { again = true; return; }
  busy = true;
  try {
    const r = await fetch(`${base}/ui/jobs?${params}`, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const data = await r.json();
    if (data.log_size !== logSize) {
      logSize = data.log_size;
      if (firstPage) render(data);
      else banner.hidden = false;
    }
  } catch (e) {
    live.textContent = "update failed; retrying";
  } finally {
    busy = false;
    if (again) { again = false; refresh(); }
  }
}

function poll() {
  if (timer) return;
  live.textContent = `refresh every ${refreshS} s`;
  live.className = "live poll";
  timer = setInterval(() => refresh(), refreshS * 1000);
}

function stream() {
  if (!("EventSource" in window)) { poll(); return; }
  const es = new EventSource(`${base}/ui/stream`);
  let opened = false;
  es.addEventListener("open", () => { opened = true; live.textContent = "live"; live.className = "live on"; });
  es.addEventListener("log", (ev) => {
    let size;
    try { size = JSON.parse(ev.data).size; } catch (e) { return; }
    refresh(size);
  });
  es.addEventListener("problem", () => { es.close(); poll(); });
  es.addEventListener("error", () => {
    // the stream ends after a while and the browser reconnects; if it never opened,
    // or the browser gave up, fall back to polling
    if (!opened || es.readyState === EventSource.CLOSED) { es.close(); poll(); }
  });
}

stream();
