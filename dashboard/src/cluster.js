import { html, ErrorLine, fmtTime } from './html.js';
import { usePolled } from './poll.js';

// The cluster's live nodes (this one among them), the backbone registry, the config store.
export function Cluster({ api }) {
  const [nodes, nError] = usePolled(() => api.get('/v1/activity/nodes'), [api], 5000);
  const [backbones, bError] = usePolled(() => api.get('/v1/backbones'), [api], 15000);
  const [config, cError] = usePolled(() => api.get('/v1/config'), [api], 15000);
  return html`<section id="cluster">
    <h3>Nodes</h3>
    <${ErrorLine} error=${nError} />
    ${nodes && html`<p class="muted">${nodes.nodes.length} live node${nodes.nodes.length === 1 ? '' : 's'}
      (each heartbeats every 5 s; one not heard from for 15 s drops out)</p>
    <table id="nodes">
      <thead><tr><th>node</th><th>worker</th><th>version</th><th>listen</th><th>backbone</th>
        <th>started</th><th>events/s</th><th>subscriptions</th><th>durables</th><th>last heard</th></tr></thead>
      <tbody>
        ${nodes.nodes.map(
          (n) => html`<tr key=${n.node_id}>
            <td>${n.node_id}${n.this_node && html` <small class="muted">(this one: store ${nodes.node.store},
              history lag ${nodes.node.history_lag ?? 'n/a'})</small>`}</td>
            <td>${n.worker_id ?? ''}</td><td>${n.version ?? ''}</td><td>${n.listen ?? ''}</td>
            <td>${n.backbone ?? ''}</td><td>${n.started ? fmtTime(Date.parse(n.started)) : ''}</td>
            <td>${n.events_per_second ?? ''}</td><td>${n.subscriptions ?? ''}</td><td>${n.durables ?? ''}</td>
            <td>${fmtTime(Date.parse(n.last_heard))}</td></tr>`,
        )}
      </tbody>
    </table>`}
    <h3>Backbones (the registry)</h3>
    <${ErrorLine} error=${bError} />
    <table>
      <thead><tr><th>id</th><th>endpoint</th><th>orgs</th><th>region</th><th>status</th><th>updated</th></tr></thead>
      <tbody>
        ${(backbones ? backbones.backbones : []).map(
          (b) => html`<tr key=${b.id}><td>${b.id}</td><td>${b.endpoint}</td><td>${b.org_ids.join(', ')}</td>
            <td>${b.region}</td><td>${b.status}</td><td>${b.updated_time}</td></tr>`,
        )}
      </tbody>
    </table>
    ${backbones && !backbones.backbones.length && html`<p class="muted">No backbones registered.</p>`}
    <h3>Settings (the config store)</h3>
    <${ErrorLine} error=${cError} />
    ${config && html`<p class="muted">version ${config.version.version}${config.version.author ? ` by ${config.version.author}` : ''}</p>
    <table>
      <thead><tr><th>pattern</th><th>setting</th><th>value</th></tr></thead>
      <tbody>
        ${Object.entries(config.settings).flatMap(([pattern, s]) =>
          Object.entries(s).map(([name, value]) => html`<tr key=${pattern + name}><td>${pattern || '(broker)'}</td><td>${name}</td><td>${value}</td></tr>`),
        )}
      </tbody>
    </table>`}
  </section>`;
}
