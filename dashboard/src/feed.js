import { useEffect, useRef, useState } from 'preact/hooks';
import { html } from './html.js';

const KEEP = 200; // events shown; older ones drop off the end

// The live feed: an ephemeral subscription over /v1/ws to the filter's pattern.
export function Feed({ api }) {
  const [pattern, setPattern] = useState('>');
  const [draft, setDraft] = useState('>');
  const [events, setEvents] = useState([]);
  const [paused, setPaused] = useState(false);
  const [missed, setMissed] = useState(0);
  const [open, setOpen] = useState(null);
  const [status, setStatus] = useState('connecting');
  const pausedRef = useRef(paused);
  pausedRef.current = paused;

  useEffect(() => {
    const ws = api.socket();
    setStatus('connecting');
    ws.onopen = () => ws.send(JSON.stringify({ op: 'subscribe', pattern, ref: 'feed' }));
    ws.onmessage = (msg) => {
      const frame = JSON.parse(msg.data);
      if (frame.op === 'ok' && frame.ref === 'feed') setStatus('live');
      else if (frame.op === 'error') setStatus(`error: ${frame.reason} ${frame.message}`);
      else if (frame.op === 'event') {
        if (pausedRef.current) setMissed((n) => n + 1);
        else setEvents((list) => [frame, ...list].slice(0, KEEP));
      }
    };
    ws.onclose = (e) => setStatus(`closed${e.reason ? `: ${e.reason}` : ''}`);
    return () => ws.close();
  }, [api, pattern]);

  const apply = (e) => {
    e.preventDefault();
    setEvents([]);
    setMissed(0);
    setPattern(draft.trim() || '>');
  };
  const resume = () => {
    setPaused(false);
    setMissed(0);
  };
  return html`<section id="feed">
    <form class="row" onSubmit=${apply}>
      <label>Subject filter <input name="pattern" value=${draft}
        onInput=${(e) => setDraft(e.target.value)} /></label>
      <button type="submit">Apply</button>
      ${paused
        ? html`<button type="button" id="resume" onClick=${resume}>Resume</button>`
        : html`<button type="button" id="pause" onClick=${() => setPaused(true)}>Pause</button>`}
      <span class="muted" id="feed-status">${status}${paused ? ` · paused, ${missed} not shown` : ''}</span>
    </form>
    <div class="split">
      <table class="events">
        <thead><tr><th>id</th><th>subject</th><th>type</th><th>source</th><th>time</th></tr></thead>
        <tbody>
          ${events.map(
            (f) => html`<tr key=${f.id} class=${open && open.id === f.id ? 'sel' : ''}
              onClick=${() => setOpen(f)}>
              <td>${f.id}</td><td>${f.subject}</td><td>${f.event.type}</td>
              <td>${f.event.source}</td><td>${f.event.time || ''}</td></tr>`,
          )}
        </tbody>
      </table>
      ${open && html`<${EventDetail} frame=${open} onClose=${() => setOpen(null)} />`}
    </div>
  </section>`;
}

function EventDetail({ frame, onClose }) {
  const { data, data_base64: b64, ...attributes } = frame.event;
  return html`<aside class="detail" id="event-detail">
    <button class="close" onClick=${onClose} title="close">×</button>
    <h3>Event ${frame.id}</h3>
    <p class="muted">${frame.subject}</p>
    <h4>Attributes</h4>
    <table>
      ${Object.entries(attributes).map(
        ([k, v]) => html`<tr><th>${k}</th><td>${typeof v === 'object' ? JSON.stringify(v) : String(v)}</td></tr>`,
      )}
    </table>
    <h4>Data</h4>
    <pre>${b64 !== undefined ? `(base64) ${b64}` : JSON.stringify(data, null, 2)}</pre>
  </aside>`;
}
