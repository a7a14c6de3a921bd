import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { html, ErrorLine } from './html.js';
import { usePolled } from './poll.js';

const SHOWN = 6; // subjects drawn in the chart; the table lists them all
const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2'];

function label(s) {
  return s.org ? `${s.org}/${s.subject}` : s.subject;
}

// Events per second per subject over the broker's window (5 s buckets, 5 minutes).
export function Subjects({ api }) {
  const [doc, error] = usePolled(() => api.get('/v1/activity/subjects'), [api], 5000);
  const subjects = doc ? doc.subjects : [];
  return html`<section id="subjects">
    <${ErrorLine} error=${error} />
    ${doc && html`<${RateChart} doc=${doc} />`}
    <table>
      <thead><tr><th>subject</th><th>events in the window</th><th>last minute (events/s)</th></tr></thead>
      <tbody>
        ${subjects.map((s) => {
          const per = doc.bucket_seconds;
          const last = s.counts.slice(-Math.round(60 / per));
          const rate = last.reduce((a, b) => a + b, 0) / 60;
          return html`<tr key=${label(s)}><td>${label(s)}</td><td>${s.total}</td><td>${rate.toFixed(2)}</td></tr>`;
        })}
      </tbody>
    </table>
    ${doc && !subjects.length && html`<p class="muted">No events stored in the last ${Math.round(doc.bucket_seconds * doc.buckets / 60)} minutes.</p>`}
  </section>`;
}

function RateChart({ doc }) {
  const box = useRef(null);
  const plot = useRef(null);
  useEffect(() => {
    const per = doc.bucket_seconds;
    const shown = doc.subjects.slice(0, SHOWN);
    const n = doc.buckets;
    const end = doc.now_ms / 1000;
    const xs = Array.from({ length: n }, (_, i) => end - (n - i) * per);
    const data = [xs, ...shown.map((s) => s.counts.map((c) => c / per))];
    const series = [{}, ...shown.map((s, i) => ({ label: label(s), stroke: COLORS[i], width: 2 }))];
    const opts = {
      width: Math.max(320, box.current.clientWidth),
      height: 240,
      series,
      axes: [{}, { label: 'events/s' }],
      scales: { x: { time: true } },
    };
    if (plot.current) plot.current.destroy();
    plot.current = new uPlot(opts, data, box.current);
  }, [doc]);
  useEffect(() => () => plot.current && plot.current.destroy(), []);
  return html`<div class="chart" ref=${box}></div>`;
}
