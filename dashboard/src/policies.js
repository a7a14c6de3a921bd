import { useEffect, useState } from 'preact/hooks';
import { html, ErrorLine, fmtTime } from './html.js';
import { usePolled } from './poll.js';
import { qs } from './api.js';

// Policy versions with a diff between two of them, and the recent denials by rule.
export function Policies({ api }) {
  const [org, setOrg] = useState('');
  const scope = org ? { org } : { global: 'true' };
  const [versions, vError] = usePolled(
    () => api.get(`/v1/policies/versions${qs(scope)}`),
    [api, org],
    15000,
  );
  const list = versions ? versions.versions : [];
  const [from, setFrom] = useState('');
  const [to, setTo] = useState('');
  const [diff, setDiff] = useState(null);
  const [dError, setDError] = useState(null);
  useEffect(() => {
    if (!list.length) return setDiff(null);
    api.get(`/v1/policies/diff${qs({ ...scope, from, to })}`).then(
      (d) => (setDiff(d), setDError(null)),
      (e) => (setDiff(null), setDError(e)),
    );
  }, [versions, from, to]);
  const [denials, deError] = usePolled(() => api.get('/v1/activity/denials?limit=100'), [api], 3000);
  return html`<section id="policies">
    <h3>Policy versions</h3>
    <form class="row" onSubmit=${(e) => e.preventDefault()}>
      <label>Org <input name="policy-org" placeholder="(the global set)" value=${org}
        onChange=${(e) => setOrg(e.target.value.trim())} /></label>
      <label>From <select name="from" onChange=${(e) => setFrom(e.target.value)}>
        <option value="">(the one before)</option>
        ${list.map((v) => html`<option value=${v.version} selected=${v.version === from}>${v.version}</option>`)}
      </select></label>
      <label>To <select name="to" onChange=${(e) => setTo(e.target.value)}>
        <option value="">(running)</option>
        ${list.map((v) => html`<option value=${v.version} selected=${v.version === to}>${v.version}</option>`)}
      </select></label>
    </form>
    <${ErrorLine} error=${vError} />
    <table>
      <thead><tr><th>version</th><th>created</th><th>origin</th><th>files</th><th></th></tr></thead>
      <tbody>
        ${list.map(
          (v) => html`<tr key=${v.version}><td>${v.version}</td><td>${fmtTime(Date.parse(v.created_time))}</td>
            <td>${v.origin}</td><td>${v.files}</td><td>${v.active ? 'running' : ''}</td></tr>`,
        )}
      </tbody>
    </table>
    <${ErrorLine} error=${dError} />
    ${diff && html`<${Diff} doc=${diff} />`}
    <h3>Recent denials</h3>
    <${ErrorLine} error=${deError} />
    <table id="denials">
      <thead><tr><th>time</th><th>org/agent</th><th>action</th><th>subject</th><th>events</th>
        <th>rule</th><th>reason</th></tr></thead>
      <tbody>
        ${(denials ? denials.denials : []).map(
          (d, i) => html`<tr key=${i}><td>${fmtTime(Date.parse(d.time))}</td><td>${d.org}/${d.agent}</td>
            <td>${d.action}</td><td>${d.subject}</td><td>${d.count}</td>
            <td><code>${d.rule || '(default)'}</code></td><td title=${d.message}>${d.reason}</td></tr>`,
        )}
      </tbody>
    </table>
  </section>`;
}

function Diff({ doc }) {
  if (doc.from === doc.to) return html`<p class="muted">Only one version: nothing to compare.</p>`;
  const lines = doc.diff ? doc.diff.split('\n') : [];
  return html`<div>
    <p class="muted">${doc.from} → ${doc.to}${lines.length ? '' : ': no difference'}</p>
    <pre class="diff">${lines.map((l) => {
      const cls = l.startsWith('+') ? 'add' : l.startsWith('-') ? 'del' : l.startsWith('@@') ? 'hunk' : '';
      return html`<span class=${cls}>${`${l}\n`}</span>`;
    })}</pre>
  </div>`;
}
