/**
 * The chart rendering shared by the live dashboard page (`freshet dashboard`) and the HTML
 * reports of `freshet demo|replay --report`: the same markup, styles and canvas drawing code,
 * so a report looks like the dashboard at the end of the run. Everything is dependency-free
 * (no external scripts, fonts or CDNs). `render(state)` draws a {@link DashboardState}-shaped
 * object; each chart records what it drew in `data-points` / `data-last` / `data-total`
 * attributes, which the end-to-end tests read.
 */

/** An extra line chart: a card titled `title` drawing the history points' `key` field(s). */
export interface ChartCard {
  id: string;
  /** A history point field, or several separated by commas (one line each). */
  key: string;
  title: string;
}

const esc = (s: string) =>
  s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c] ?? c);

/** The page's CSS. */
export const chartStyles = `  body { font: 14px system-ui, sans-serif; margin: 16px; background: #fafafa; color: #222; }
  h1 { font-size: 18px; margin: 0 0 8px; } h2 { font-size: 14px; margin: 0 0 4px; color: #444; }
  .grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 12px; }
  .card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px; }
  .value { font: 600 20px ui-monospace, monospace; } .muted { color: #888; font-size: 12px; }
  canvas { width: 100%; height: 160px; display: block; }
  table { border-collapse: collapse; width: 100%; font: 12px ui-monospace, monospace; }
  th, td { text-align: right; padding: 3px 6px; border-bottom: 1px solid #eee; } th:first-child, td:first-child { text-align: left; }
  #error { color: #b00; }
  #pinned { color: #b00; font-weight: 600; }
`;

/** The page body: title, error line, chart grid (plus `extra` line charts) and actor tables. */
export function chartBody(extra: readonly ChartCard[] = []): string {
  const cards = extra
    .map(
      (c) =>
        `  <div class="card"><h2>${esc(c.title)}</h2><canvas id="chart-${esc(c.id)}" data-key="${esc(c.key)}"></canvas></div>`,
    )
    .join('\n');
  return `<h1>Freshet <span id="cluster"></span> <span class="muted" id="summary"></span></h1>
<div id="error"></div>
<div id="pinned"></div>
<div class="grid">
  <div class="card"><h2>Progressive AUC <span class="value" id="v-auc">–</span></h2><canvas id="chart-auc" data-key="auc"></canvas></div>
  <div class="card"><h2>Progressive logloss <span class="value" id="v-logloss">–</span></h2><canvas id="chart-logloss" data-key="logloss"></canvas></div>
  <div class="card"><h2>Examples / s <span class="value" id="v-examplesPerSec">–</span></h2><canvas id="chart-examples" data-key="examplesPerSec"></canvas></div>
  <div class="card"><h2>Freshness p50 / p99 (ms) <span class="value" id="v-freshnessP99Ms">–</span></h2><canvas id="chart-freshness" data-key="freshnessP50Ms,freshnessP99Ms"></canvas></div>
  <div class="card"><h2>Freshness histogram <span class="muted" id="src-fresh"></span></h2><canvas id="hist-freshness"></canvas></div>
  <div class="card"><h2>Staleness histogram (versions) <span class="muted" id="src-stale"></span></h2><canvas id="hist-staleness"></canvas></div>
${cards}
</div>
<div class="card" style="margin-top:12px;display:none" id="models-card"><h2>Models</h2><table id="models"><thead><tr>
<th>cluster</th><th>role</th><th>learns from</th><th>examples</th><th>AUC</th><th>logloss</th><th>served</th><th>impressions</th><th>CTR</th><th>shadow: compared · top-1 agree · |Δscore|</th>
</tr></thead><tbody></tbody></table></div>
<div class="card" style="margin-top:12px"><h2>Shards</h2><table id="shards"><thead><tr>
<th>id</th><th>state</th><th>rows</th><th>memory</th><th>version</th><th>upd/s</th><th>stale p50</th><th>stale p99</th><th>rejects</th><th>evictions</th><th>delta seq</th>
</tr></thead><tbody></tbody></table></div>
<div class="card" style="margin-top:12px"><h2>Workers and serving nodes</h2><table id="others"><thead><tr>
<th>id</th><th>state</th><th>examples/s | req/s</th><th>AUC | version</th><th>logloss | fresh p99</th><th>partitions</th><th>dead letters</th>
</tr></thead><tbody></tbody></table></div>
`;
}

/** The drawing code: `render(state)` plus its helpers, as script text (strict mode). */
export const chartScript = `"use strict";
const colors = ['#1f77b4', '#d62728', '#2ca02c'];
const fmt = (v, d) => v === null || v === undefined || !isFinite(v) ? '–' : (Math.abs(v) >= 1e4 ? (v / 1e3).toFixed(1) + 'k' : v.toFixed(d));
function setup(c) {
  const r = window.devicePixelRatio || 1, w = c.clientWidth || 400, h = c.clientHeight || 160;
  if (c.width !== w * r) { c.width = w * r; c.height = h * r; }
  const g = c.getContext('2d'); g.setTransform(r, 0, 0, r, 0, 0); g.clearRect(0, 0, w, h);
  g.font = '11px system-ui'; return { g, w, h };
}
function line(c, history) {
  const keys = c.dataset.key.split(',');
  const { g, w, h } = setup(c);
  const series = keys.map((k) => history.map((p) => [p.t, p[k]]).filter((x) => x[1] !== null && isFinite(x[1])));
  const all = series.flat();
  c.dataset.points = String(series[0].length);
  c.dataset.last = series[0].length ? String(series[0][series[0].length - 1][1]) : '';
  if (!all.length) { g.fillStyle = '#999'; g.fillText('no data yet', 10, 20); return; }
  let lo = Math.min(...all.map((x) => x[1])), hi = Math.max(...all.map((x) => x[1]));
  if (hi - lo < 1e-9) { hi += 0.5; lo -= 0.5; }
  const t0 = Math.min(...all.map((x) => x[0])), t1 = Math.max(t0 + 1, ...all.map((x) => x[0]));
  const X = (t) => 40 + ((t - t0) / (t1 - t0)) * (w - 50), Y = (v) => h - 18 - ((v - lo) / (hi - lo)) * (h - 28);
  g.strokeStyle = '#eee'; g.fillStyle = '#888';
  for (const v of [lo, (lo + hi) / 2, hi]) { g.beginPath(); g.moveTo(40, Y(v)); g.lineTo(w - 10, Y(v)); g.stroke(); g.fillText(fmt(v, Math.abs(v) >= 100 ? 0 : 3), 2, Y(v) + 4); }
  g.fillText(Math.round((t1 - t0) / 1000) + ' s', w - 40, h - 4);
  series.forEach((s, i) => { g.strokeStyle = colors[i]; g.lineWidth = 1.5; g.beginPath();
    s.forEach(([t, v], j) => (j ? g.lineTo(X(t), Y(v)) : g.moveTo(X(t), Y(v)))); g.stroke(); });
}
function bars(c, hist) {
  const { g, w, h } = setup(c);
  const total = hist.counts.reduce((a, b) => a + b, 0);
  c.dataset.total = String(total); c.dataset.buckets = String(hist.counts.length);
  const max = Math.max(1, ...hist.counts), bw = (w - 20) / hist.counts.length;
  hist.counts.forEach((n, i) => {
    const bh = (n / max) * (h - 30); g.fillStyle = '#1f77b4'; g.fillRect(10 + i * bw + 2, h - 16 - bh, bw - 4, bh);
    g.fillStyle = '#666'; g.fillText(i < hist.bounds.length ? '≤' + hist.bounds[i] : '>' + hist.bounds[hist.bounds.length - 1], 10 + i * bw + 2, h - 4);
    if (n) g.fillText(String(n), 10 + i * bw + 2, h - 20 - bh);
  });
}
function rows(tbody, list, cells) {
  tbody.innerHTML = '';
  for (const x of list) { const tr = document.createElement('tr'); tr.dataset.id = x.id;
    for (const v of cells(x)) { const td = document.createElement('td'); td.textContent = v; tr.appendChild(td); }
    tbody.appendChild(tr); }
}
function deadLetters(d) {
  const e = Object.entries(d || {}).sort((a, b) => b[1] - a[1]);
  return e.length ? e.map(([r, n]) => r + ' ' + n).join(', ') : '0';
}
function render(s) {
  document.getElementById('error').textContent = s.error || '';
  document.getElementById('cluster').textContent = s.cluster ? '"' + s.cluster + '"' : '';
  const v = s.view || { shards: [], workers: [], serving: [] };
  document.getElementById('summary').textContent = v.shards.length + ' shards · ' + v.workers.length + ' workers · ' + v.serving.length + ' serving';
  const pinned = v.serving.filter((x) => x.pinned);
  document.getElementById('pinned').textContent = pinned.length
    ? 'Serving pinned (' + pinned.map((x) => x.id).join(', ') + ') since ' + new Date(pinned[0].pinned.since).toLocaleTimeString() + ': ' + pinned[0].pinned.reason + '. freshet model rollback TAG or freshet model unpin ends it.'
    : '';
  for (const c of document.querySelectorAll('canvas[data-key]')) line(c, s.history);
  const last = s.history[s.history.length - 1] || {};
  for (const k of ['auc', 'logloss', 'examplesPerSec', 'freshnessP99Ms']) document.getElementById('v-' + k).textContent = fmt(last[k], k === 'auc' || k === 'logloss' ? 4 : 0);
  bars(document.getElementById('hist-freshness'), s.freshnessHistogram);
  bars(document.getElementById('hist-staleness'), s.stalenessHistogram);
  document.getElementById('src-fresh').textContent = '(' + s.freshnessHistogram.source + ')';
  document.getElementById('src-stale').textContent = '(' + s.stalenessHistogram.source + ')';
  const models = s.models || [];
  document.getElementById('models-card').style.display = models.length ? '' : 'none';
  const pct = (x) => x === null || x === undefined ? '–' : (x * 100).toFixed(2) + '%';
  rows(document.querySelector('#models tbody'), models.map((m) => ({ ...m, id: m.cluster })), (m) => [m.cluster,
    m.role === 'canary' ? 'canary ' + pct(m.fraction) : m.role, m.feedbackCluster || '–', fmt(m.examples, 0), fmt(m.auc, 4), fmt(m.logloss, 4),
    fmt(m.served, 0), fmt(m.impressions, 0), pct(m.ctr),
    m.shadow ? fmt(m.shadow.compared, 0) + ' · ' + pct(m.shadow.top1Agreement) + ' · ' + fmt(m.shadow.meanAbsDiff, 4) : '–']);
  rows(document.querySelector('#shards tbody'), v.shards, (x) => [x.id, x.state || '–', fmt(x.rows, 0), x.memoryBytes === null ? '–' : (x.memoryBytes / 1048576).toFixed(1) + ' MiB',
    fmt(x.version, 0), fmt(x.updatesPerSec, 1), fmt(x.stalenessP50, 1), fmt(x.stalenessP99, 1), fmt(x.rejects, 0), fmt(x.evictions, 0), fmt(x.deltaSeq, 0)]);
  rows(document.querySelector('#others tbody'), [...v.workers.map((x) => ({ ...x, kind: 'w' })), ...v.serving.map((x) => ({ ...x, kind: 's' }))], (x) => x.kind === 'w'
    ? [x.id, x.state || '–', fmt(x.examplesPerSec, 1), fmt(x.auc, 4), fmt(x.logloss, 4), x.partitions.join(','), deadLetters(x.deadLetters)]
    : [x.id, x.state || '–', fmt(x.requestsPerSec, 1), fmt(x.version, 0) + (x.pinned ? ' (pinned)' : ''), fmt(x.freshnessP99Ms, 0) + ' ms', '', '']);
}
`;
