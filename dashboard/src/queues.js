import { useState } from 'preact/hooks';
import { html, ErrorLine, fmtTime } from './html.js';
import { usePolled } from './poll.js';
import { qs } from './api.js';

// Subscriptions and durables (lag, pending), then dead letters with their redrive.
export function Queues({ api }) {
  const [subs, subsError] = usePolled(() => api.get('/v1/activity/subscriptions'), [api], 3000);
  const [org, setOrg] = useState('');
  const [durable, setDurable] = useState('');
  const [dead, deadError, reload] = usePolled(
    () => api.get(`/v1/deadletters${qs({ org, durable })}`),
    [api, org, durable],
    5000,
  );
  const [note, setNote] = useState(null);
  const redrive = async (d, ids) => {
    try {
      const r = await api.post('/v1/deadletters/redrive', { org: d.org, durable: d.durable, ids });
      setNote({ message: `redriven: ${r.count}` });
    } catch (e) {
      setNote(e);
    }
    reload();
  };
  return html`<section id="queues">
    <h3>Subscriptions</h3>
    <${ErrorLine} error=${subsError} />
    <table id="subscriptions">
      <thead><tr><th>kind</th><th>org</th><th>name</th><th>pattern</th><th>pending</th>
        <th>ready</th><th>lag (batches)</th><th>connected</th></tr></thead>
      <tbody>
        ${(subs ? subs.subscriptions : []).map(
          (s) => html`<tr key=${s.kind + s.org + s.name}><td>${s.kind}</td><td>${s.org}</td>
            <td>${s.name}${s.agent ? html` <small class="muted">(${s.agent})</small>` : ''}</td>
            <td>${s.pattern}</td><td>${s.pending}</td><td>${s.ready}</td><td>${s.lag}</td>
            <td>${s.connected}</td></tr>`,
        )}
      </tbody>
    </table>
    <h3>Dead letters</h3>
    <form class="row" onSubmit=${(e) => e.preventDefault()}>
      <label>Org <input name="dl-org" placeholder="(yours)" value=${org}
        onChange=${(e) => setOrg(e.target.value.trim())} /></label>
      <label>Durable <input name="dl-durable" placeholder="(all)" value=${durable}
        onChange=${(e) => setDurable(e.target.value.trim())} /></label>
    </form>
    <${ErrorLine} error=${deadError} />
    ${durable && dead && dead.dead_letters.length > 0 && html`<button id="redrive-all"
      onClick=${() => redrive({ org, durable }, [])}>Redrive all of ${durable}</button>`}
    ${note && html`<p class=${note.status ? 'error' : 'note'} id="redrive-note">${note.message}</p>`}
    <table id="dead-letters">
      <thead><tr><th>id</th><th>durable</th><th>subject</th><th>attempts</th><th>dead since</th><th></th></tr></thead>
      <tbody>
        ${(dead ? dead.dead_letters : []).map(
          (d) => html`<tr key=${d.durable + d.id}><td>${d.id}</td><td>${d.durable}</td>
            <td>${d.event ? d.event.subject : ''}</td><td>${d.attempts}</td>
            <td>${fmtTime(Date.parse(d.dead_time))}</td>
            <td><button class="redrive" data-id=${d.id} onClick=${() => redrive(d, [d.id])}>Redrive</button></td></tr>`,
        )}
      </tbody>
    </table>
    ${dead && !dead.dead_letters.length && html`<p class="muted">No dead letters.</p>`}
  </section>`;
}
