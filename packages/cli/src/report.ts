import { writeFile } from 'node:fs/promises';
import type { NatsConnection } from 'nats';
import { clusterView, type ClusterView, type HistogramView } from './actor-view.js';
import { chartBody, chartScript, chartStyles, type ChartCard } from './dashboard/charts.js';
import {
  dashboardState,
  pointOf,
  servingFreshnessOf,
  type DashboardPoint,
  type DashboardState,
} from './dashboard/server.js';
import { discoverActors } from './discovery.js';

/**
 * HTML reports of a run (`freshet demo|replay --report FILE`): the samples a command collected
 * (cluster views over time, plus series of its own such as the demo's serving AUC probes),
 * drawn by the dashboard's own chart code into one self-contained file that opens offline.
 */

/** A history point with the command's own series next to the cluster aggregates. */
export type ReportPoint = DashboardPoint & Record<string, number | null>;

export interface ReportOptions {
  title: string;
  /** Line charts beyond the dashboard's, over the extra series given to `sample()`. */
  charts?: ChartCard[];
  /** Shown as a key/value table at the top (the command's summary). */
  summary?: Record<string, unknown>;
}

/** Collects samples during a run and renders them as a report. */
export class ReportRecorder {
  private readonly history: ReportPoint[] = [];
  private view: ClusterView | null = null;
  private servingFreshness: HistogramView | null = null;

  constructor(
    readonly cluster: string | null,
    private readonly maxPoints = 3600,
  ) {}

  get samples(): number {
    return this.history.length;
  }

  /**
   * Adds one sample: the cluster view (aggregated like the dashboard) and `extra` series values
   * at the same time. Reads the serving nodes' freshness buckets when they serve HTTP.
   */
  async sample(view: ClusterView, extra: Record<string, number | null> = {}): Promise<void> {
    this.history.push({ ...pointOf(view), ...extra });
    if (this.history.length > this.maxPoints) this.history.shift();
    this.view = view;
    this.servingFreshness = (await servingFreshnessOf(view).catch(() => null)) ?? this.servingFreshness;
  }

  /** The same state object the dashboard serves on /api/state. */
  state(): DashboardState {
    return dashboardState({
      cluster: this.cluster,
      history: this.history,
      view: this.view,
      servingFreshness: this.servingFreshness,
    });
  }

  html(opts: ReportOptions): string {
    return reportPage(this.state(), opts);
  }

  /** Writes the report; resolves with the number of bytes written. */
  async write(file: string, opts: ReportOptions): Promise<number> {
    const text = this.html(opts);
    await writeFile(file, text);
    return Buffer.byteLength(text);
  }
}

/** JSON that is safe inside a <script> element (no `</script>`, no line separators). */
function scriptJson(v: unknown): string {
  return JSON.stringify(v)
    .replace(/</g, '\\u003c')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

const esc = (s: string) =>
  s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c] ?? c);

function cell(v: unknown): string {
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toFixed(4);
  if (v === null || v === undefined) return '–';
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/** One self-contained HTML document: the dashboard's charts drawn once from `state`. */
export function reportPage(state: DashboardState, opts: ReportOptions): string {
  const summary = Object.entries(opts.summary ?? {});
  const table = summary.length
    ? `<div class="card" style="margin-bottom:12px"><h2>Summary</h2><table id="summary-table"><tbody>${summary
        .map(([k, v]) => `<tr data-key="${esc(k)}"><td>${esc(k)}</td><td>${esc(cell(v))}</td></tr>`)
        .join('')}</tbody></table></div>`
    : '';
  const first = state.history[0]?.t;
  const last = state.history[state.history.length - 1]?.t;
  const span =
    first !== undefined && last !== undefined
      ? `${new Date(first).toISOString()} – ${new Date(last).toISOString()}, ${state.history.length} samples`
      : 'no samples';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(opts.title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
${chartStyles}</style></head>
<body>
<p class="muted">${esc(opts.title)} · ${esc(span)}</p>
${table}
${chartBody(opts.charts)}
<script id="report-data" type="application/json">${scriptJson(state)}</script>
<script>
${chartScript}
render(JSON.parse(document.getElementById('report-data').textContent));
document.body.dataset.rendered = '1';
</script></body></html>`;
}

/**
 * Samples a running cluster into `recorder` every `intervalMs` through the service API (what
 * `replay --report` does while it publishes). `stop()` takes one last sample and ends.
 */
export function sampleCluster(
  nc: NatsConnection,
  cluster: string,
  recorder: ReportRecorder,
  intervalMs = 1000,
): { stop(): Promise<void> } {
  let busy: Promise<void> = Promise.resolve();
  const once = () =>
    (busy = busy.then(async () => {
      try {
        await recorder.sample(clusterView(await discoverActors(nc, { cluster }), cluster));
      } catch {
        // a missed sample is a gap in the charts, not a failed run
      }
    }));
  const timer = setInterval(() => void once(), intervalMs);
  void once();
  return {
    async stop() {
      clearInterval(timer);
      await once();
    },
  };
}
