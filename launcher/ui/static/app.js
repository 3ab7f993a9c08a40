// alaunch dashboard: jobs list, job page (live curves + logs), compare, pipelines. No build step.
"use strict";
const TOKEN = document.querySelector('meta[name="alaunch-token"]').content;
const main = document.getElementById("main");
const liveDot = document.getElementById("live");
const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];
// what tests and people can read from the console: arrival times of loss points
window.__alaunch = { lossArrivals: [], events: 0 };

function esc(s) { return String(s ?? "").replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c])); }
function fmt(v, d = 4) { return v == null ? "-" : (typeof v === "number" ? Number(v.toPrecision(d)).toString() : String(v)); }
function dur(s) { if (s == null) return "-"; s = Math.round(s); const h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60);
  return h ? `${h}h${String(m).padStart(2, "0")}m` : m ? `${m}m${String(s % 60).padStart(2, "0")}s` : `${s}s`; }
function badge(state) { return `<span class="state ${esc(state)}">${esc(state)}</span>`; }
// a finished job whose ranks' logs stop short of their last step with no end marker
function logBadge(r) { return r.log_status === "incomplete" ? ` <span class="state incomplete" title="a rank's log stops before its last step with no end marker">incomplete</span>` : ""; }
async function api(path, opts = {}) {
  const r = await fetch(path, opts);
  const body = r.headers.get("content-type")?.includes("json") ? await r.json() : await r.text();
  if (!r.ok) throw new Error(body.error || body || r.statusText);
  return body;
}
function post(path) { return api(path, { method: "POST", headers: { "X-Alaunch-Token": TOKEN } }); }
function progressCell(p) {
  if (!p || p.done == null) return '<span class="muted">-</span>';
  const pct = Math.round(100 * p.fraction);
  return `<span class="bar"><i style="width:${pct}%"></i></span> <span class="muted">${p.done}/${p.total}</span>`;
}
function stream(url, onMessage) {
  const es = new EventSource(url);
  es.onopen = () => liveDot.classList.add("on");
  es.onerror = () => liveDot.classList.remove("on");
  es.onmessage = ev => { window.__alaunch.events++; onMessage(JSON.parse(ev.data)); };
  return es;
}

// ------------------------------------------------------------------ jobs list
// The server filters, counts and pages in SQL (/api/jobs/stream?state=&q=&offset=); a pushed page
// carries no ages: they are counted here from created_at and the server's clock ("now"), so the
// list is re-sent when a job changes, not every second.
const JOBS_PAGE = 100;
let clockSkewMs = 0;  // server time - browser time, from the last pushed page
function isoMs(iso) { return iso ? Date.parse(String(iso).replace(/(\.\d{3})\d+/, "$1")) : NaN; }
function ageOf(iso) { const t = isoMs(iso); return isNaN(t) ? null : Math.max(0, (Date.now() + clockSkewMs - t) / 1000); }
function jobsPage() {
  const params = new URLSearchParams(location.search);
  main.innerHTML = `<h1>Jobs</h1>
    <div class="filters">
      <select id="f-state"><option value="all">all states</option><option value="active">active</option>
        ${["pending","staging","queued","running","succeeded","failed","cancelled"].map(s => `<option>${s}</option>`).join("")}</select>
      <input id="f-name" placeholder="filter by name or id" value="${esc(params.get("q") || "")}">
      <button id="compare-btn" disabled>compare selected</button>
      <button id="page-prev" disabled>&larr; newer</button><button id="page-next" disabled>older &rarr;</button>
      <span class="muted" id="count"></span>
    </div>
    <div class="card"><table id="jobs"><thead><tr><th></th><th>job</th><th>state</th><th>nodes</th><th>cards</th>
      <th>age</th><th>last loss</th><th>progress</th><th>reason</th></tr></thead><tbody></tbody></table></div>`;
  const stateSel = document.getElementById("f-state"), nameIn = document.getElementById("f-name");
  stateSel.value = params.get("state") || "all";
  let offset = Math.max(0, Number(params.get("offset")) || 0);
  const selected = new Set();
  let rows = [], total = 0, es = null, loaded = false;
  const btn = document.getElementById("compare-btn"), prev = document.getElementById("page-prev"), next = document.getElementById("page-next");
  btn.onclick = () => { location.href = "/compare?ids=" + [...selected].map(encodeURIComponent).join(","); };
  function render() {
    const first = rows.length ? offset + 1 : 0;
    document.getElementById("count").textContent = `${first}–${offset + rows.length} of ${total}`;
    prev.disabled = offset === 0; next.disabled = offset + rows.length >= total;
    document.querySelector("#jobs tbody").innerHTML = rows.map(r => `<tr data-id="${esc(r.id)}" data-state="${esc(r.state)}">
      <td><input type="checkbox" class="pick" value="${esc(r.id)}" ${selected.has(r.id) ? "checked" : ""}></td>
      <td><a href="/jobs/${encodeURIComponent(r.id)}">${esc(r.name)}</a><br><span class="muted">${esc(r.id)}</span></td>
      <td>${badge(r.state)}${logBadge(r)}</td><td>${esc(r.nodes.join(", "))}</td><td class="num">${fmt(r.cards)}</td>
      <td class="num age" data-created="${esc(r.created_at)}">${dur(ageOf(r.created_at))}</td><td class="num last-loss">${fmt(r.last_loss)}</td>
      <td>${progressCell(r.progress)}</td><td class="muted">${esc(r.reason || "")}</td></tr>`).join("")
      || `<tr><td colspan="9" class="muted">${loaded ? `no jobs${total || stateSel.value !== "all" || nameIn.value ? " match" : " yet: alaunch submit JOB.yaml"}` : "loading…"}</td></tr>`;
    document.querySelectorAll(".pick").forEach(cb => cb.onchange = () => {
      cb.checked ? selected.add(cb.value) : selected.delete(cb.value);
      btn.disabled = selected.size < 2; btn.textContent = `compare selected (${selected.size})`;
    });
  }
  function query() {
    const p = new URLSearchParams(); if (stateSel.value !== "all") p.set("state", stateSel.value);
    if (nameIn.value.trim()) p.set("q", nameIn.value.trim()); if (offset) p.set("offset", String(offset));
    return p;
  }
  function connect() {
    const p = query();
    history.replaceState(null, "", "/" + (p.toString() ? "?" + p : ""));
    if (es) es.close();
    p.set("limit", String(JOBS_PAGE));
    es = stream("/api/jobs/stream?" + p, m => {
      if (m.type === "error") { document.getElementById("count").textContent = m.error; return; }
      if (m.type !== "jobs") return;
      if (m.now) clockSkewMs = m.now * 1000 - Date.now();
      rows = m.jobs; total = m.total; loaded = true; window.__alaunch.jobs = m; render();
    });
  }
  let typing = null;
  stateSel.onchange = () => { offset = 0; connect(); };
  nameIn.oninput = () => { clearTimeout(typing); typing = setTimeout(() => { offset = 0; connect(); }, 250); };
  prev.onclick = () => { offset = Math.max(0, offset - JOBS_PAGE); connect(); };
  next.onclick = () => { offset += JOBS_PAGE; connect(); };
  setInterval(() => document.querySelectorAll("#jobs td.age").forEach(td => td.textContent = dur(ageOf(td.dataset.created))), 1000);
  render(); connect();
}

// ------------------------------------------------------------------ charts
function makeChart(el, title, seriesNames, height = 300, onZoomX = null) {
  const series = [{ label: "step" }];
  seriesNames.forEach((s, i) => {
    const c = s.colour || COLOURS[i % COLOURS.length];
    series.push({ label: s.label, stroke: s.raw ? c + "55" : c, width: s.raw ? 1 : 2, spanGaps: true,
                  points: { show: false }, show: s.show !== false });
  });
  return new uPlot({ title, width: Math.max(320, el.clientWidth - 10), height, series,
                     scales: { x: { time: false } }, axes: [{ label: "step" }, { label: "loss" }],
                     hooks: onZoomX ? { setScale: [(u, key) => { if (key === "x") onZoomX(u); }] } : {},
                     legend: { live: true } }, [[]].concat(seriesNames.map(() => [])), el);
}
function joined(curves, smoothKey) {
  // uPlot.join aligns curves with different steps on one x axis
  const tables = [];
  curves.forEach(c => { tables.push([c.steps, c.loss]); tables.push([c.steps, c[smoothKey]]); });
  return tables.length ? uPlot.join(tables) : [[]];
}
function ema(values, w) {
  let last = 0, n = 0; return values.map(v => { if (v == null || !isFinite(v)) return v; last = last * w + (1 - w) * v; n++; return last / (1 - Math.pow(w, n)); });
}

// ------------------------------------------------------------------ job page
function jobPage(id) {
  main.innerHTML = `<div id="head"></div>
    <div class="grid2">
      <div>
        <div class="card" id="preds-card" hidden></div>
        <div class="card" id="loss-card"><div class="filters"><b>loss per rank</b>
          <label>smoothing <input id="smooth" type="range" min="0" max="0.99" step="0.01" value="0.6"></label>
          <span id="smooth-v" class="muted">0.6</span><label><input id="show-raw" type="checkbox" checked> raw</label></div>
          <div id="chart" class="chart"></div></div>
        <div class="card"><div class="filters"><b>logs</b>
          <select id="l-rank"><option value="">all ranks</option></select>
          <select id="l-node"><option value="">all nodes</option></select>
          <input id="l-grep" placeholder="grep (regex)">
          <label><input id="l-follow" type="checkbox" checked> follow</label>
          <span class="muted" id="l-count"></span></div>
          <pre class="log" id="log"></pre></div>
      </div>
      <div>
        <div class="card" id="failure" hidden></div>
        <div class="card" id="stragglers" hidden></div>
        <div class="card" id="telemetry" hidden></div>
        <div class="card"><h2 style="margin-top:0">nodes</h2><table id="nodes"><thead><tr><th>node</th><th>host</th><th>state</th><th>exit</th><th>pid</th></tr></thead><tbody></tbody></table>
          <table id="ranks" hidden><thead><tr><th>rank log</th><th>status</th><th>steps</th></tr></thead><tbody></tbody></table></div>
        <div class="card"><h2 style="margin-top:0">notes</h2><div id="notes" class="notes"></div></div>
      </div>
    </div>`;
  let detail = null, chart = null, chartKeys = "", curves = {}, lastSeq = -1, refreshTimer = null;
  const logEl = document.getElementById("log"), rankSel = document.getElementById("l-rank"), nodeSel = document.getElementById("l-node");
  const grepIn = document.getElementById("l-grep"), followCb = document.getElementById("l-follow");
  const smoothIn = document.getElementById("smooth"), rawCb = document.getElementById("show-raw");
  let lineCount = 0;

  function renderHead() {
    const d = detail, p = d.progress || {};
    const terminal = ["succeeded", "failed", "cancelled"].includes(d.state);
    document.getElementById("head").innerHTML = `<h1>${esc(d.name)} ${badge(d.state)}${logBadge(d)}</h1>
      <div class="muted">${esc(d.id)} · ${esc(d.kind)} · ${d.node_count} node(s), ${fmt(d.cards)} card(s)
        ${d.following ? " · following live" : ""}${d.pipeline ? ` · step <b>${esc(d.pipeline_step)}</b> of pipeline <a id="h-pipeline" href="/pipelines/${encodeURIComponent(d.pipeline)}">${esc(d.pipeline)}</a>` : ""}</div>
      <div class="card facts" style="margin-top:10px">
        <div><b>progress</b>${progressCell(d.progress)}</div>
        <div><b>epoch</b>${p.epoch != null ? `${p.epoch}/${p.epochs}` : "-"}</div>
        <div><b>last loss</b><span id="h-loss">${fmt(d.last_loss)}</span> ${esc(p.trend || "")}</div>
        <div><b>step time</b>${p.step_s != null ? fmt(p.step_s * 1000, 3) + " ms" : "-"}</div>
        <div><b>throughput</b>${p.samples_s != null ? fmt(p.samples_s, 3) + " samples/s" : "-"}</div>
        <div><b>ETA</b>${dur(p.eta_s)}</div>
        <div><b>age</b><span id="h-age" data-created="${esc(d.created_at)}">${dur(ageOf(d.created_at))}</span></div>
        <div style="margin-left:auto"><button id="fetch">fetch logs</button>
          <button id="cancel" class="danger" ${terminal ? "disabled" : ""}>cancel</button></div>
      </div>
      ${d.reason ? `<div class="msg" id="reason">${d.state === "queued" ? "<b>queued:</b> " : ""}${esc(d.reason)}</div>` : ""}<div id="action-msg"></div>`;
    if (actionText) say(actionText);
    document.getElementById("cancel").onclick = async ev => {
      if (!confirm(`Cancel ${d.id} on every node?`)) return;
      ev.target.disabled = true; say("cancelling…");
      try { const r = await post(`/api/jobs/${encodeURIComponent(id)}/cancel`);
            say(`${r.id}: ${r.state} — ` + Object.entries(r.outcome).map(([h, m]) => `${h}: ${m}`).join("; ")); }
      catch (e) { say("cancel failed: " + e.message); ev.target.disabled = false; }
      refresh();
    };
    document.getElementById("fetch").onclick = async ev => {
      ev.target.disabled = true; say("fetching logs…");
      try { const r = await post(`/api/jobs/${encodeURIComponent(id)}/fetch?what=logs`);
            say(`fetched into ${r.run_dir} (${r.bytes} bytes in ${r.seconds} s)` + (r.ok ? "" : " — some nodes failed")); }
      catch (e) { say("fetch failed: " + e.message); }
      ev.target.disabled = false;
    };
  }
  let actionText = "";  // the last action's outcome, kept across re-renders
  function say(text) { actionText = text; const el = document.getElementById("action-msg"); if (el) el.innerHTML = `<div class="msg" id="action-text">${esc(text)}</div>`; }
  function renderSide() {
    const d = detail;
    document.querySelector("#nodes tbody").innerHTML = d.nodes.map(n => `<tr data-host="${esc(n.host)}" data-state="${esc(n.state)}"><td>${n.rank}</td><td>${esc(n.host)}</td>
      <td>${badge(n.state)}${n.detail ? `<br><span class="muted node-detail">${esc(n.detail)}</span>` : ""}</td>
      <td>${n.exit_code ?? ""}</td><td>${n.pid ?? ""}</td></tr>`).join("");
    const rk = document.getElementById("ranks"), ss = d.stream_status || [];
    rk.hidden = !ss.length;
    rk.querySelector("tbody").innerHTML = ss.map(x => `<tr><td>${esc(x.stream)}</td><td>${badge(x.status)}</td>
      <td class="num">${x.total != null ? `${x.done}/${x.total}` : "-"}${x.status === "incomplete" ? ' <span class="muted">no end marker</span>' : ""}</td></tr>`).join("");
    const f = d.failure, box = document.getElementById("failure");
    box.hidden = !f;
    if (f) box.className = "card failure", box.innerHTML = `<h2 style="margin-top:0">failure</h2>
      <div class="cause">${esc(f.cause)}</div><div>${esc(f.where)} ${f.kind ? `(${esc(f.kind)})` : ""}${f.family ? ` · <span class="family">${esc(f.family)}${f.code ? " " + esc(f.code) : ""}</span>` : ""}</div>
      ${f.message && f.message !== f.cause ? `<div class="muted">${esc(f.message)}</div>` : ""}
      ${f.hint ? `<div><b>hint:</b> ${esc(f.hint)}</div>` : ""}${f.traceback.length ? `<pre>${esc(f.traceback.join("\n"))}</pre>` : ""}`;
    const sl = d.stragglers || [], sbox = document.getElementById("stragglers");
    sbox.hidden = !sl.length;
    if (sl.length) sbox.innerHTML = `<h2 style="margin-top:0">straggler${sl.length > 1 ? "s" : ""}</h2>` +
      sl.map(s => `<div class="straggler" data-rank="${s.rank}">${esc(s.text)}</div>`).join("");
    document.getElementById("notes").innerHTML = d.notes.map(n => `<div>${esc(n)}</div>`).join("") || '<span class="muted">none</span>';
    const streams = d.streams || [];
    const ranks = [...new Set(streams.map(s => s.split("/").pop()).filter(r => r !== "sched"))];
    const hosts = [...new Set(d.nodes.map(n => n.host))];
    syncOptions(rankSel, ranks, "all ranks"); syncOptions(nodeSel, hosts, "all nodes");
    renderTelemetry(document.getElementById("telemetry"), d.telemetry);
  }
  function syncOptions(sel, values, all) {
    const have = [...sel.options].slice(1).map(o => o.value);
    if (have.join() === values.join()) return;
    const v = sel.value; sel.innerHTML = `<option value="">${all}</option>` + values.map(x => `<option>${esc(x)}</option>`).join(""); sel.value = v;
  }
  function renderChart() {
    const keys = Object.keys(curves);
    const w = Number(smoothIn.value), shown = zoom ? zoom.curves : curves;
    const list = keys.map(k => { const c = shown[k] || { steps: [], loss: [] }; return { steps: c.steps, loss: c.loss, smooth: ema(c.loss, w) }; });
    const sig = keys.join("|") + rawCb.checked;
    const el = document.getElementById("chart");
    if (!keys.length) { el.innerHTML = '<div class="muted">no loss lines yet</div>'; chart = null; chartKeys = ""; return; }
    if (sig !== chartKeys) {
      el.innerHTML = ""; chartKeys = sig;
      const names = []; keys.forEach((k, i) => { const colour = COLOURS[i % COLOURS.length];
        names.push({ label: k + " raw", raw: true, show: rawCb.checked, colour }); names.push({ label: k + " smoothed", colour }); });
      chart = makeChart(el, "", names, 300, zoomed);
      chart.over.addEventListener("dblclick", () => setTimeout(() => { zoom = null; zoomSeq++; renderChart(); }, 0));
    }
    settingData = true;
    try { chart.setData(joined(list, "smooth"), !zoom); } finally { settingData = false; }
    window.__alaunch.chart = chart;
  }
  // zoom: the server sends each curve downsampled to the chart's width (min/max per pixel); a
  // dragged range is asked for again (/curves?from=&to=), at full resolution once it is narrow
  let zoom = null, zoomSeq = 0, settingData = false;
  function chartPoints() { return Math.max(200, Math.round(document.getElementById("chart").clientWidth || 1000)); }
  function zoomed(u) {
    if (settingData) return;
    const min = u.scales.x.min, max = u.scales.x.max, all = Object.values(curves).filter(c => c.steps.length);
    if (min == null || max == null || !all.length) return;
    const lo = Math.min(...all.map(c => c.steps[0])), hi = Math.max(...all.map(c => c.steps[c.steps.length - 1]));
    if (min <= lo && max >= hi) return;
    const mine = ++zoomSeq;
    api(`/api/jobs/${encodeURIComponent(id)}/curves?` + new URLSearchParams({ from: String(Math.floor(min)), to: String(Math.ceil(max)), points: String(chartPoints()) }))
      .then(r => { if (mine !== zoomSeq) return; zoom = { min, max, curves: r.curves }; window.__alaunch.zoom = zoom; renderChart(); })
      .catch(() => {});
  }
  let chartQueued = false;
  function queueChart() { if (!chartQueued) { chartQueued = true; requestAnimationFrame(() => { chartQueued = false; renderChart(); }); } }
  smoothIn.oninput = () => { document.getElementById("smooth-v").textContent = smoothIn.value; renderChart(); };
  rawCb.onchange = () => { chartKeys = ""; renderChart(); };

  function lineHtml(l) {
    const tag = `${l.host}/${l.role === "msrun" ? "msrun" : l.rank == null ? "sched" : l.rank}`;
    const cls = /ERROR|Traceback|Error:/.test(l.text) ? "err" : "";
    return `<span class="tag">${esc(tag.padEnd(15)) + " "}</span><span class="${cls}">${esc(l.text)}</span>\n`;
  }
  function wanted(l) {
    if (rankSel.value !== "" && String(l.rank) !== rankSel.value) return false;
    if (nodeSel.value !== "" && l.host !== nodeSel.value) return false;
    if (grepIn.value) { try { if (!new RegExp(grepIn.value).test(l.text)) return false; } catch (e) { return false; } }
    return true;
  }
  function appendLines(lines) {
    const atBottom = logEl.scrollTop + logEl.clientHeight >= logEl.scrollHeight - 30;
    logEl.insertAdjacentHTML("beforeend", lines.map(lineHtml).join(""));
    lineCount += lines.length;
    while (logEl.childNodes.length > 12000) logEl.removeChild(logEl.firstChild);
    document.getElementById("l-count").textContent = `${lineCount} line(s)`;
    if (followCb.checked && atBottom) logEl.scrollTop = logEl.scrollHeight;
  }
  let logsSeq = 0;  // as refresh: only the newest filter's answer is drawn
  async function loadLogs() {
    const mine = ++logsSeq;
    const q = new URLSearchParams({ limit: "5000" });
    if (rankSel.value) q.set("rank", rankSel.value); if (nodeSel.value) q.set("node", nodeSel.value); if (grepIn.value) q.set("grep", grepIn.value);
    try { const r = await api(`/api/jobs/${encodeURIComponent(id)}/logs?` + q);
          if (mine !== logsSeq) return;
          logEl.innerHTML = ""; lineCount = 0; appendLines(r.lines); lastSeq = Math.max(lastSeq, r.seq); logEl.scrollTop = logEl.scrollHeight;
          // a grep runs over the whole log on the hosts (the page holds only the last lines)
          if (r.whole_log || r.note) document.getElementById("l-count").textContent = r.note || `${r.lines.length} matching line(s) in the whole log`; }
    catch (e) { if (mine === logsSeq) logEl.textContent = e.message; }
  }
  rankSel.onchange = nodeSel.onchange = loadLogs;
  let grepTimer = null; grepIn.oninput = () => { clearTimeout(grepTimer); grepTimer = setTimeout(loadLogs, 300); };

  // answers can come back out of order (the server reads in a thread pool): only the newest
  // refresh asked for is drawn, else a slow early answer overwrites the job's final state
  let refreshSeq = 0;
  async function refresh() {
    const mine = ++refreshSeq;
    let d;
    try { d = await api(`/api/jobs/${encodeURIComponent(id)}?points=${chartPoints()}`); }
    catch (e) { if (mine === refreshSeq) main.innerHTML = `<div class="card failure">${esc(e.message)}</div>`; return; }
    if (mine !== refreshSeq) return;
    // the server's clock from its age_s, so the age counted here (pushes do not re-fetch) agrees
    if (d.age_s != null && !isNaN(isoMs(d.created_at))) clockSkewMs = isoMs(d.created_at) + d.age_s * 1000 - Date.now();
    detail = d; renderHead(); renderSide();
  }
  function queueRefresh() { if (!refreshTimer) refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, 300); }
  function handle(m) {
    if (m.type === "line") {
      if (m.seq <= lastSeq) return; lastSeq = m.seq;
      if (wanted(m)) { pending.push(m); if (pending.length === 1) requestAnimationFrame(() => { appendLines(pending); pending = []; }); }
    } else if (m.type === "loss") {
      const c = curves[m.stream] || (curves[m.stream] = { steps: [], loss: [] });
      // already in the first load (downsampled: not every step of it is there; steps only grow)
      if (c.steps.length && m.step <= c.steps[c.steps.length - 1]) return;
      c.steps.push(m.step); c.loss.push(m.loss);
      window.__alaunch.lossArrivals.push({ stream: m.stream, step: m.step, loss: m.loss, t: Date.now() });
      const hl = document.getElementById("h-loss"); if (hl) hl.textContent = fmt(m.loss);
      queueChart();
    } else if (m.type === "progress" && detail) {
      // pushed with the view: no re-fetch of the whole job for a moving bar
      detail.progress = m.progress; if (m.last_loss != null) detail.last_loss = m.last_loss; renderHead();
    } else if (m.type === "note" && detail) {
      detail.notes.push(m.text); renderSide();
    } else if (m.type === "resync") { location.reload(); }
    else if (m.type !== "hello") queueRefresh();
  }
  setInterval(() => { const a = document.getElementById("h-age"); if (a) a.textContent = dur(ageOf(a.dataset.created)); }, 1000);
  let pending = [], ready = false, early = [], hello;
  const subscribed = new Promise(res => hello = res);
  // subscribe first, then load: nothing said between the two is lost, repeats are dropped
  stream(`/api/jobs/${encodeURIComponent(id)}/events`, m => { if (m.type === "hello") hello(); ready ? handle(m) : early.push(m); });
  (async () => {
    await Promise.race([subscribed, new Promise(res => setTimeout(res, 3000))]);
    await refresh();
    curves = {}; Object.entries(detail.curves).forEach(([k, c]) => curves[k] = { steps: [...c.steps], loss: [...c.loss] });
    renderChart();
    if (["predict", "eval"].includes(detail.kind)) predictionsCard(id, () => Object.keys(curves).length > 0);
    await loadLogs();
    ready = true; early.forEach(handle); early = [];
    pollTelemetry(() => detail && detail.following, queueRefresh);
  })();
}

// ------------------------------------------------------------------ job page: NPU telemetry per card
// detail.telemetry (launcher.metrics.telemetry.chart_json): {every, fields, cards: [{host, card,
// health, aicore_pct: {last, min, max}, ..., points: [[t, aicore, hbm MB, power W, temp C]]}]}
const TELEMETRY_CHARTS = [["AI Core %", 1, 1], ["HBM GiB", 2, 1 / 1024], ["power W", 3, 1]];
function pollTelemetry(following, refresh) {
  // the follower writes the samples every few seconds; nothing else announces them
  const timer = setInterval(() => { if (!document.getElementById("telemetry")) clearInterval(timer); else if (following()) refresh(); }, 5000);
}
function renderTelemetry(box, t) {
  box.hidden = !(t && t.cards.length);
  if (box.hidden) return;
  const key = t.cards.map(c => `${c.host}/${c.card}`).join("|");
  if (box.dataset.key !== key) {
    box.dataset.key = key;
    box.innerHTML = `<h2 style="margin-top:0">cards</h2><table class="telemetry-table"><thead><tr><th>card</th><th>health</th>
      <th>AI Core %</th><th>HBM MB</th><th>power W</th><th>temp C</th></tr></thead><tbody></tbody></table>` +
      TELEMETRY_CHARTS.map((_, i) => `<div class="telemetry-chart" id="tchart-${i}"></div>`).join("");
    box.charts = TELEMETRY_CHARTS.map(([title], i) => {
      const el = document.getElementById(`tchart-${i}`);
      const series = [{}].concat(t.cards.map((c, j) => ({ label: `${c.host}/${c.card}`, stroke: COLOURS[j % COLOURS.length], width: 2, spanGaps: true, points: { show: false } })));
      return new uPlot({ title, width: Math.max(280, el.clientWidth - 10), height: 160, series, legend: { live: false } },
                       [[]].concat(t.cards.map(() => [])), el);
    });
  }
  const cell = v => v.last == null ? "-" : `${fmt(v.last)} <span class="muted">(${fmt(v.min)}-${fmt(v.max)})</span>`;
  box.querySelector("tbody").innerHTML = t.cards.map(c => `<tr data-card="${esc(c.host)}/${c.card}"><td>${esc(c.host)}/${c.card}</td>
    <td>${c.health === "OK" ? esc(c.health) : `<b class="err">${esc(c.health)}</b>`}</td><td class="num">${cell(c.aicore_pct)}</td>
    <td class="num">${cell(c.hbm_used_mb)}</td><td class="num">${cell(c.power_w)}</td><td class="num">${cell(c.temp_c)}</td></tr>`).join("");
  TELEMETRY_CHARTS.forEach(([, idx, scale], i) => {
    const tables = t.cards.map(c => [c.points.map(p => p[0]), c.points.map(p => p[idx] == null ? null : p[idx] * scale)]);
    box.charts[i].setData(uPlot.join(tables));
  });
}

// ------------------------------------------------------------------ predictions (a predict or eval job's page)
// Its predictions (the first 50 matching the search, /api/jobs/ID/predictions?q=) and its score
// take the place of the loss chart, which such a job never draws.
function predictionsCard(id, hasCurves) {
  const card = document.getElementById("preds-card");
  if (!hasCurves()) document.getElementById("loss-card").hidden = true;
  card.hidden = false;
  card.innerHTML = `<div class="filters"><b>predictions</b><input id="p-q" placeholder="search predictions">
    <span class="muted" id="p-count"></span></div><div id="p-score"></div><div id="p-list" class="preds"></div>`;
  const qIn = document.getElementById("p-q");
  let seq = 0, timer = null;
  async function load() {
    const mine = ++seq;
    let r;
    try { r = await api(`/api/jobs/${encodeURIComponent(id)}/predictions?` + new URLSearchParams({ q: qIn.value })); }
    catch (e) { if (mine === seq) document.getElementById("p-list").textContent = e.message; return; }
    if (mine !== seq) return;
    window.__alaunch.predictions = r;
    const saved = r.scores || {}, sc = r.score;
    const parts = [];
    if (sc) parts.push(`EM <b>${fmt(sc.em)}</b> F1 <b>${fmt(sc.f1)}</b> over ${sc.count} example(s) <span class="muted">(from the log's pairs)</span>`);
    if (saved.em != null) parts.push(`saved: EM <b>${fmt(saved.em)}</b> F1 <b>${fmt(saved.f1)}</b>`);
    if (saved.math_accuracy != null) parts.push(`math accuracy <b>${fmt(100 * saved.math_accuracy, 3)}%</b> (${saved.math_correct}/${saved.math_total})`);
    document.getElementById("p-score").innerHTML = parts.length ? `<div class="facts" id="p-scores">${parts.map(x => `<div>${x}</div>`).join("")}</div>` : "";
    document.getElementById("p-count").textContent = r.total ? `${r.items.length} shown of ${r.matches} matching, ${r.total} in all` : "";
    document.getElementById("p-list").innerHTML = r.error ? `<div class="failure">${esc(r.error)}</div>`
      : r.items.length ? `<table id="p-table"><thead><tr><th>#</th><th>prediction</th>${r.items.some(x => x.reference != null) ? "<th>reference</th>" : ""}</tr></thead><tbody>`
        + r.items.map(x => `<tr><td class="num">${x.i}</td><td><pre class="pred">${esc(x.prediction)}</pre></td>${x.reference != null ? `<td><pre class="pred">${esc(x.reference)}</pre></td>` : ""}</tr>`).join("")
        + `</tbody></table>${r.source ? `<div class="muted">from ${esc(r.source)}</div>` : ""}`
      : `<div class="muted">${esc(r.hint || "no predictions" + (qIn.value ? " match" : ""))}</div>`;
  }
  qIn.oninput = () => { clearTimeout(timer); timer = setTimeout(load, 250); };
  load();
}

// ------------------------------------------------------------------ compare
const RESULT_ROWS = ["template", "LoRA", "trainable params", "steps", "duration", "final loss", "EM", "F1", "math accuracy"];
async function comparePage() {
  const ids = new URLSearchParams(location.search).get("ids");
  if (!ids) { main.innerHTML = `<h1>Compare runs</h1><div class="card muted">Pick two or more jobs in the <a href="/">jobs list</a> and press “compare selected”.</div>`; return; }
  main.innerHTML = `<h1>Compare runs</h1><div class="card muted">reading the runs' logs…</div>`;
  let r;
  try { r = await api("/api/compare?ids=" + encodeURIComponent(ids)); }
  catch (e) { main.innerHTML = `<h1>Compare runs</h1><div class="card failure">${esc(e.message)}</div>`; return; }
  // a run not fetched yet: its steps and final loss from the follower's curve, the rest "-"
  const cell = (j, k) => j.scores ? j.scores.cells[k] : k === "steps" && j.curve ? String(j.curve.steps[j.curve.steps.length - 1])
    : k === "final loss" && j.curve ? fmt(j.curve.loss[j.curve.loss.length - 1]) : "-";
  main.innerHTML = `<h1>Compare runs</h1>
    <div class="card"><div class="filters"><b>loss (lowest rank of each run)</b>
      <label><input id="c-raw" type="checkbox" checked> raw</label></div><div id="c-chart" class="chart"></div></div>
    <div class="card"><h2 style="margin-top:0">runs</h2><table id="c-runs"><thead><tr><th></th>
      ${r.jobs.map((j, i) => `<th><span style="color:${COLOURS[i % COLOURS.length]}">■</span> <a href="/jobs/${encodeURIComponent(j.id)}">${esc(j.name)}</a><br><span class="muted">${esc(j.id)}</span></th>`).join("")}</tr></thead><tbody>
      <tr><td>state</td>${r.jobs.map(j => `<td>${badge(j.state)}</td>`).join("")}</tr>
      ${RESULT_ROWS.map(k => `<tr data-key="${esc(k)}"><td>${esc(k)}</td>${r.jobs.map(j => `<td class="num">${esc(cell(j, k))}</td>`).join("")}</tr>`).join("")}
      </tbody></table><div class="muted">As <code>alaunch results</code> prints them, from fetched runs (runs/&lt;job-id&gt;; scores from scores.json, written by <code>alaunch score --save</code>); “-” when not fetched or not scored.</div></div>
    ${r.diffs.map(d => `<div class="card config-diff"><h2 style="margin-top:0">config: ${esc(d.a)} → ${esc(d.b)}</h2>
      <table class="changes"><thead><tr><th>key</th><th>${esc(d.a)}</th><th>${esc(d.b)}</th></tr></thead><tbody>
      ${d.changes.map(c => `<tr><td><code>${esc(c.key)}</code></td><td><code>${esc(c.a)}</code></td><td><code>${esc(c.b)}</code></td></tr>`).join("") || '<tr><td colspan="3" class="muted">identical</td></tr>'}
      </tbody></table><details><summary>unified diff</summary><pre class="diff">${d.diff.split("\n").map(l =>
        `<span class="${l.startsWith("+") ? "add" : l.startsWith("-") ? "del" : l.startsWith("@@") ? "hunk" : ""}">${esc(l)}</span>`).join("\n")}</pre></details></div>`).join("")}`;
  const withCurves = r.jobs.filter(j => j.curve);
  const el = document.getElementById("c-chart");
  function draw() {
    el.innerHTML = "";
    if (!withCurves.length) { el.innerHTML = '<div class="muted">none of these runs has loss lines</div>'; return; }
    const raw = document.getElementById("c-raw").checked, names = [];
    withCurves.forEach(j => { const colour = COLOURS[r.jobs.indexOf(j) % COLOURS.length];  // as in the runs table
      names.push({ label: j.name + " " + j.id.slice(-4) + " raw", raw: true, show: raw, colour });
      names.push({ label: j.name + " " + j.id.slice(-4), colour }); });
    makeChart(el, "", names).setData(joined(withCurves.map(j => j.curve), "smooth"));
  }
  document.getElementById("c-raw").onchange = draw;
  draw();
  window.__alaunch.compare = r;
}

// ------------------------------------------------------------------ pipelines
function stepsSummary(steps) {
  return steps.map(s => `<span class="state ${esc(s.state)}" title="${esc(s.step)}: ${esc(s.state)}">${esc(s.step)}</span>`).join(" ");
}
function pipelinesPage() {
  main.innerHTML = `<h1>Pipelines</h1>
    <div class="card"><table id="pipelines"><thead><tr><th>pipeline run</th><th>state</th><th>steps</th>
      <th>age</th><th>took</th><th>reason</th></tr></thead><tbody></tbody></table></div>`;
  stream("/api/pipelines/stream", m => {
    if (m.type !== "pipelines") return;
    window.__alaunch.pipelines = m.pipelines;
    document.querySelector("#pipelines tbody").innerHTML = m.pipelines.map(r => `<tr data-id="${esc(r.id)}" data-state="${esc(r.state)}">
      <td><a href="/pipelines/${encodeURIComponent(r.id)}">${esc(r.name)}</a><br><span class="muted">${esc(r.id)}</span></td>
      <td>${badge(r.state)}</td><td class="steps">${stepsSummary(r.steps)}</td><td class="num">${dur(r.age_s)}</td>
      <td class="num">${r.ended_at ? dur(r.duration_s) : "-"}</td><td class="muted">${esc(r.reason || "")}</td></tr>`).join("")
      || `<tr><td colspan="6" class="muted">no pipeline runs yet: alaunch run PIPELINE.yaml -H HOSTFILE</td></tr>`;
  });
}
function stepNote(s) {
  if (s.skipped_unchanged) return `unchanged since <a href="/pipelines/${encodeURIComponent(s.reused_from)}">${esc(s.reused_from)}</a>: skipped, outputs reused`;
  if (s.reused) return `not selected: outputs reused from <a href="/pipelines/${encodeURIComponent(s.reused_from)}">${esc(s.reused_from)}</a>`;
  return esc(s.reason || "");
}
function jobCell(s) {
  if (!s.job_id) return '<span class="muted">-</span>';
  const j = s.job, live = j && !["succeeded", "failed", "cancelled"].includes(j.state);
  return `<a class="job-link" href="/jobs/${encodeURIComponent(s.job_id)}">${esc(s.job_id)}</a>`
    + (j ? ` ${badge(j.state)}` : "") + (live && j.progress ? `<br>${progressCell(j.progress)}` : "")
    + (j && j.state === "queued" && j.reason ? `<br><span class="muted">${esc(j.reason)}</span>` : "");
}
function outputsText(o) {
  if (!o || !Object.keys(o).length) return "";
  const paths = o.paths ? Object.entries(o.paths).map(([g, ps]) => `${g}: ${ps.length} file(s)${ps.length ? " — " + ps[ps.length - 1] : ""}`) : [];
  const local = o.local ? Object.entries(o.local).map(([g, p]) => `${g}: ${Array.isArray(p) ? p.join(", ") : p}`) : [];
  const rest = Object.entries(o).filter(([k]) => !["paths", "local", "host", "python", "job_id", "root"].includes(k))
    .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`);
  return [o.host ? `on ${o.host}` + (o.root ? ` ${o.root}` : "") : "", ...paths, ...local, ...rest].filter(Boolean).join("\n");
}
function drawEdges(box, steps) {
  // needs as arrows from the needed step's box to the step's, over the columns
  const svg = box.querySelector("svg"), at = box.getBoundingClientRect();
  svg.setAttribute("width", box.scrollWidth); svg.setAttribute("height", box.scrollHeight);
  svg.innerHTML = `<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="#94a3b8"/></marker></defs>`;
  steps.forEach(s => (s.needs || []).forEach(n => {
    const a = box.querySelector(`.node[data-step="${CSS.escape(n)}"]`), b = box.querySelector(`.node[data-step="${CSS.escape(s.step)}"]`);
    if (!a || !b) return;
    const ra = a.getBoundingClientRect(), rb = b.getBoundingClientRect();
    const x1 = ra.right - at.left + box.scrollLeft, y1 = ra.top + ra.height / 2 - at.top, x2 = rb.left - at.left + box.scrollLeft, y2 = rb.top + rb.height / 2 - at.top;
    const mx = (x1 + x2) / 2, skips = Number(b.dataset.level) - Number(a.dataset.level) > 1;
    // an edge over a column leaves the top of its box and arcs above the others (the graph's top padding)
    const sx = ra.left + ra.width * 0.75 - at.left + box.scrollLeft, sy = ra.top - at.top;
    const ex = rb.left + rb.width * 0.25 - at.left + box.scrollLeft, ey = rb.top - at.top;
    const d = skips ? `M${sx},${sy} C${sx},0 ${ex},0 ${ex},${ey}` : `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
    svg.insertAdjacentHTML("beforeend", `<path class="edge" d="${d}" marker-end="url(#arrow)"/>`);
  }));
}
function pipelinePage(id) {
  main.innerHTML = `<div id="p-head"><h1>${esc(id)}</h1></div><div class="card"><div class="graph" id="p-graph"></div></div>
    <div class="card"><table id="steps"><thead><tr><th>#</th><th>step</th><th>kind</th><th>state</th><th>needs</th>
      <th>job</th><th>tries</th><th>took</th><th>identity</th><th>note</th><th>outputs</th></tr></thead><tbody></tbody></table></div>`;
  function render(p) {
    window.__alaunch.pipeline = p;
    document.getElementById("p-head").innerHTML = `<h1>${esc(p.name)} ${badge(p.state)}</h1>
      <div class="muted" style="margin-bottom:10px">${esc(p.id)} · ${esc(p.source)} · ${p.steps.length} step(s) · started ${dur(p.age_s)} ago${p.ended_at ? ` · took ${dur(p.duration_s)}` : ""}</div>
      ${p.reason ? `<div class="msg" id="p-reason">${esc(p.reason)}</div>` : ""}
      ${p.needs_known ? "" : `<div class="msg">needs unknown: the pipeline file ${esc(p.source)} is not readable here or no longer has these steps; steps shown in run order</div>`}`;
    const cols = [];
    p.steps.forEach(s => (cols[s.level] = cols[s.level] || []).push(s));
    const graph = document.getElementById("p-graph");
    graph.innerHTML = `<svg class="edges"></svg>` + cols.map(col => `<div class="col">${col.map(s => {
      const target = s.job_id ? `/jobs/${encodeURIComponent(s.job_id)}` : null;
      const inner = `<b>${esc(s.step)}</b><span class="muted">${esc(s.kind)}</span>${badge(s.state)}${s.skipped_unchanged ? '<span class="muted">unchanged</span>' : ""}`;
      return target ? `<a class="node ${esc(s.state)}" data-step="${esc(s.step)}" data-level="${s.level}" href="${target}">${inner}</a>`
                    : `<div class="node ${esc(s.state)}" data-step="${esc(s.step)}" data-level="${s.level}">${inner}</div>`;
    }).join("")}</div>`).join("");
    drawEdges(graph, p.steps);
    document.querySelector("#steps tbody").innerHTML = p.steps.map(s => `<tr data-step="${esc(s.step)}" data-state="${esc(s.state)}">
      <td>${s.position + 1}</td><td><b>${esc(s.step)}</b></td><td>${esc(s.kind)}</td><td>${badge(s.state)}</td>
      <td>${s.needs == null ? '<span class="muted">?</span>' : esc(s.needs.join(", ")) || '<span class="muted">-</span>'}</td>
      <td>${jobCell(s)}${s.attempt_jobs.length > 1 ? `<br><span class="muted">attempts: ${s.attempt_jobs.map(a => `<a href="/jobs/${encodeURIComponent(a.id)}">${esc(a.id)}</a> ${esc(a.state)}`).join(", ")}</span>` : ""}</td>
      <td class="num">${s.attempts || ""}</td><td class="num">${s.duration_s != null ? dur(s.duration_s) : "-"}</td>
      <td><code title="${esc(s.identity)}">${esc((s.identity || "").slice(0, 12))}</code></td>
      <td class="muted note">${stepNote(s)}</td><td><pre class="outputs">${esc(outputsText(s.outputs))}</pre></td></tr>`).join("");
  }
  let last = null;
  window.addEventListener("resize", () => { if (last) drawEdges(document.getElementById("p-graph"), last.steps); });
  stream(`/api/pipelines/${encodeURIComponent(id)}/stream`, m => {
    if (m.type === "pipeline") { last = m.pipeline; render(m.pipeline); }
    else if (m.type === "error") main.innerHTML = `<h1>${esc(id)}</h1><div class="card failure">${esc(m.error)}</div>`;
  });
}

// ------------------------------------------------------------------ top: every host's cards
function topPage() {
  main.innerHTML = `<h1>Cards</h1><div id="top-hosts" class="muted">asking the hosts ...</div>
    <div class="card"><table id="top"><thead><tr><th>host</th><th>card</th><th>health</th><th>AICore</th><th>HBM</th>
      <th>power</th><th>temp</th><th>holder</th><th>progress</th></tr></thead><tbody></tbody></table></div>`;
  const gb = mb => mb == null ? "" : (mb / 1024).toFixed(1);
  stream("/api/top/stream", m => {
    if (m.type !== "top") return;
    const box = document.getElementById("top-hosts");
    if (!m.hosts) { box.textContent = m.error || "no hosts"; return; }
    box.innerHTML = m.hosts.map(h => `<div class="top-host" data-host="${esc(h.host)}">${esc(h.host)}: ${h.reachable
      ? `${h.scheduler && !h.cards.length ? esc(h.scheduler) : `${h.free.length}/${h.cards.length} free${h.free.length ? " (" + esc(h.free.join(",")) + ")" : ""}${h.scheduler ? "; " + esc(h.scheduler) : ""}`}${h.note ? "; " + esc(h.note) : ""}`
      : `<span class="state failed">unreachable</span> ${esc(h.error || "")}`}</div>`).join("");
    document.querySelector("#top tbody").innerHTML = m.hosts.flatMap(h => h.reachable ? h.cards.map(c => `
      <tr data-host="${esc(h.host)}" data-card="${c.card}"><td>${esc(h.host)}</td><td class="num">${c.card}</td>
      <td>${esc(c.health || "")}</td><td class="num">${c.aicore_pct == null ? "" : c.aicore_pct + "%"}</td>
      <td class="num">${c.hbm_used_mb == null ? "" : gb(c.hbm_used_mb) + "/" + gb(c.hbm_total_mb) + " GB"}</td>
      <td class="num">${c.power_w == null ? "" : Math.round(c.power_w) + " W"}</td>
      <td class="num">${c.temp_c == null ? "" : c.temp_c + " C"}</td>
      <td class="holder">${c.holder ? (c.holder.job_id ? `${esc(c.holder.user || "")} <a href="/jobs/${encodeURIComponent(c.holder.job_id)}">${esc(c.holder.job_id)}</a>${c.holder.pid ? " pid " + c.holder.pid : ""}` : esc(c.holder.text)) : '<span class="state succeeded">free</span>'}</td>
      <td class="muted">${esc(c.progress || "")}</td></tr>`) : [`<tr data-host="${esc(h.host)}"><td>${esc(h.host)}</td><td colspan="8"><span class="state failed">unreachable</span></td></tr>`]).join("");
  });
}

// ------------------------------------------------------------------ sweeps: the leaderboard, live
// (`alaunch results SWEEP`'s rows from /api/sweeps/ID; a trial's row links to its job's page)
function sweepScale(vals, lo, hi) {
  const nums = vals.filter(v => typeof v === "number" && isFinite(v));
  if (!nums.length) return () => (lo + hi) / 2;
  let a = Math.min(...nums), b = Math.max(...nums);
  const log = a > 0 && b > 50 * a;
  if (log) { a = Math.log10(a); b = Math.log10(b); }
  const span = b - a || 1;
  return v => lo + (hi - lo) * (((log ? Math.log10(v) : v) - a) / span);
}
function sweepScatter(rows, key, metric) {
  // objective against one swept key; a key of strings gets one column per value
  const W = 260, H = 170, pts = rows.filter(r => r.objective != null);
  const xs = pts.map(r => r.params[key]), cat = xs.some(x => typeof x !== "number");
  const cats = cat ? [...new Set(xs.map(String))] : [];
  const fx = cat ? (x => 30 + (W - 40) * (cats.indexOf(String(x)) + 0.5) / cats.length) : sweepScale(xs, 30, W - 10);
  const fy = sweepScale(pts.map(r => r.objective), H - 25, 10);
  const dots = pts.map(r => `<a href="${r.job_id ? "/jobs/" + encodeURIComponent(r.job_id) : "#"}"><circle class="sweep-dot" data-trial="${esc(r.trial)}" cx="${fx(r.params[key]).toFixed(1)}" cy="${fy(r.objective).toFixed(1)}" r="4" fill="${COLOURS[0]}"><title>${esc(r.trial.slice(0, 8))}: ${esc(key)}=${esc(fmt(r.params[key]))} ${esc(metric)}=${esc(fmt(r.objective))}</title></circle></a>`).join("");
  return `<figure class="sweep-plot" style="display:inline-block;margin:0 12px"><svg width="${W}" height="${H}"><line x1="28" y1="${H - 22}" x2="${W - 5}" y2="${H - 22}" stroke="#cbd5e1"/>${dots}</svg>
    <figcaption class="muted">${esc(metric)} vs ${esc(key.split(".").pop())}</figcaption></figure>`;
}
function sweepCurves(rows) {
  const W = 520, H = 170, all = rows.flatMap(r => (r.curve || []).filter(p => p[1] != null));
  if (!all.length) return "";
  const fx = sweepScale(all.map(p => p[0]), 30, W - 10), fy = sweepScale(all.map(p => p[1]), H - 20, 10);
  const lines = rows.map((r, i) => {
    const pts = (r.curve || []).filter(p => p[1] != null).map(p => `${fx(p[0]).toFixed(1)},${fy(p[1]).toFixed(1)}`);
    return pts.length ? `<polyline class="sweep-curve" data-trial="${esc(r.trial)}" fill="none" stroke-width="1.5" stroke="${COLOURS[i % COLOURS.length]}" points="${pts.join(" ")}"><title>${esc(r.trial.slice(0, 8))} (${esc(r.state)})</title></polyline>` : "";
  }).join("");
  return `<figure class="sweep-plot" style="display:inline-block;margin:0 12px"><svg width="${W}" height="${H}">${lines}</svg><figcaption class="muted">loss curves</figcaption></figure>`;
}
function sweepPage(id) {
  main.innerHTML = `<div id="s-head"><h1>${esc(id)}</h1></div><div class="card" id="s-plots"></div>
    <div class="card"><table id="trials"><thead></thead><tbody></tbody></table></div>`;
  stream(`/api/sweeps/${encodeURIComponent(id)}/stream`, m => {
    if (m.type === "error") { main.innerHTML = `<h1>${esc(id)}</h1><div class="card failure">${esc(m.error)}</div>`; return; }
    if (m.type !== "sweep") return;
    const s = m.sweep, metric = s.objective.metric || "objective";
    window.__alaunch.sweep = s;
    const counts = {};
    s.trials.forEach(t => counts[t.state] = (counts[t.state] || 0) + 1);
    document.getElementById("s-head").innerHTML = `<h1>${esc(s.name)} ${badge(s.state)}</h1>
      <div class="muted" style="margin-bottom:10px">${esc(s.id)} · ${esc(s.source)} · by ${esc(metric)} (${esc(s.objective.goal || "min")}) · ${Object.entries(counts).map(([k, n]) => `${n} ${esc(k)}`).join(", ")}</div>`;
    document.getElementById("s-plots").innerHTML = s.keys.map(k => sweepScatter(s.trials, k, metric)).join("") + sweepCurves(s.trials);
    const scores = [...new Set(s.trials.flatMap(t => Object.keys(t.scores || {})))];
    document.querySelector("#trials thead").innerHTML = `<tr><th>#</th><th>trial</th><th>state</th><th>${esc(metric)}</th><th>loss</th><th>steps</th><th>took</th><th>card-h</th><th>params</th>${scores.map(k => `<th>${esc(k)}</th>`).join("")}${s.keys.map(k => `<th>${esc(k.split(".").pop())}</th>`).join("")}<th>note</th></tr>`;
    document.querySelector("#trials tbody").innerHTML = s.trials.map((t, i) => `<tr data-trial="${esc(t.trial)}" data-state="${esc(t.state)}">
      <td>${i + 1}</td><td>${t.job_id ? `<a class="job-link" href="/jobs/${encodeURIComponent(t.job_id)}">${esc(t.trial.slice(0, 8))}</a>` : esc(t.trial.slice(0, 8))}</td>
      <td>${badge(t.state)}</td><td class="num">${fmt(t.objective)}</td><td class="num">${fmt(t.final_loss)}</td>
      <td class="num">${fmt(t.steps)}</td><td class="num">${dur(t.duration_s)}</td><td class="num">${fmt(t.card_hours, 2)}</td>
      <td class="num">${fmt(t.trainable)}</td>${scores.map(k => `<td class="num">${fmt((t.scores || {})[k])}</td>`).join("")}
      ${s.keys.map(k => `<td>${esc(fmt(t.params[k]))}</td>`).join("")}<td class="muted">${esc(t.reason || "")}</td></tr>`).join("");
  });
}

// ------------------------------------------------------------------ sweeps: the list
// (/api/sweeps: every sweep, newest first, with its best trial as `alaunch results SWEEP` ranks them)
function sweepBest(r) {
  if (!r.best) return '<span class="muted">none yet</span>';
  const params = Object.entries(r.best.params || {}).map(([k, v]) => `${esc(k.split(".").pop())}=${esc(fmt(v))}`).join(" ");
  const trial = r.best.job_id ? `<a class="job-link" href="/jobs/${encodeURIComponent(r.best.job_id)}">${esc(r.best.trial.slice(0, 8))}</a>` : esc(r.best.trial.slice(0, 8));
  return `${trial} <span class="num">${esc(fmt(r.best.objective))}</span><br><span class="muted">${params}</span>`;
}
function sweepsPage() {
  main.innerHTML = `<h1>Sweeps</h1>
    <div class="card"><table id="sweeps"><thead><tr><th>sweep</th><th>state</th><th>objective</th><th>best trial</th>
      <th>trials</th><th>age</th><th>reason</th></tr></thead><tbody></tbody></table></div>`;
  stream("/api/sweeps/stream", m => {
    if (m.type !== "sweeps") return;
    window.__alaunch.sweeps = m.sweeps;
    document.querySelector("#sweeps tbody").innerHTML = m.sweeps.map(r => `<tr data-id="${esc(r.id)}" data-state="${esc(r.state)}">
      <td><a href="/sweeps/${encodeURIComponent(r.name)}">${esc(r.name)}</a><br><span class="muted">${esc(r.id)}</span></td>
      <td>${badge(r.state)}</td><td>${esc(r.objective.metric || "final_loss")} (${esc(r.objective.goal || "min")})</td>
      <td class="best">${sweepBest(r)}</td>
      <td>${r.trials}${r.trials ? ": " + Object.entries(r.counts).map(([k, n]) => `${n} ${esc(k)}`).join(", ") : ""}</td>
      <td class="num">${dur(r.age_s)}</td><td class="muted">${esc(r.reason || "")}</td></tr>`).join("")
      || `<tr><td colspan="7" class="muted">no sweeps yet: alaunch sweep jobs/sweeps/FILE.yaml -H HOSTFILE</td></tr>`;
  });
}

// ------------------------------------------------------------------ router
const path = location.pathname;
if (path.startsWith("/jobs/")) jobPage(decodeURIComponent(path.slice(6)));
else if (path === "/compare") comparePage();
else if (path === "/pipelines") pipelinesPage();
else if (path === "/top") topPage();
else if (path.startsWith("/pipelines/")) pipelinePage(decodeURIComponent(path.slice(11)));
else if (path.startsWith("/sweeps/")) sweepPage(decodeURIComponent(path.slice(8)));
else if (path === "/sweeps") sweepsPage();
else jobsPage();
