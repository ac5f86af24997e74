import { chartBody, chartScript, chartStyles } from './charts.js';

/**
 * The dashboard page: one self-contained HTML document (no external scripts, fonts or CDNs, so it
 * works offline and inside a cluster). It polls `/api/state` and draws it with the shared chart
 * code (`charts.ts`, also used by the `--report` files).
 */
export function dashboardPage(opts: { intervalMs: number }): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Freshet dashboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
${chartStyles}</style></head>
<body>
${chartBody()}
<script>
${chartScript}
async function tick() {
  try {
    render(await (await fetch('/api/state', { cache: 'no-store' })).json());
    document.body.dataset.updated = String(Date.now());
  } catch (e) { document.getElementById('error').textContent = 'dashboard server unreachable: ' + e; }
}
tick(); setInterval(tick, ${Math.max(200, opts.intervalMs)});
</script></body></html>`;
}
