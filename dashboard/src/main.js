import { render } from 'preact';
import { useState } from 'preact/hooks';
import { html, ErrorLine } from './html.js';
import { makeApi } from './api.js';
import { Feed } from './feed.js';
import { Subjects } from './subjects.js';
import { Queues } from './queues.js';
import { Policies } from './policies.js';
import { Cluster } from './cluster.js';
import './style.css';

const TABS = [
  ['feed', 'Live feed', Feed],
  ['subjects', 'Subjects', Subjects],
  ['queues', 'Subscriptions & dead letters', Queues],
  ['policies', 'Policies & denials', Policies],
  ['cluster', 'Cluster & settings', Cluster],
];
const STORE = 'lockgate.dashboard.key';

// The key lives in this tab's sessionStorage only: closing the tab forgets it.
function App() {
  const [session, setSession] = useState(null);
  const [tab, setTab] = useState(location.hash.slice(1) || 'feed');
  if (!session) return html`<${Login} onIn=${setSession} />`;
  const [, , Panel] = TABS.find(([id]) => id === tab) || TABS[0];
  const go = (id) => {
    location.hash = id;
    setTab(id);
  };
  const out = () => {
    sessionStorage.removeItem(STORE);
    setSession(null);
  };
  return html`<div>
    <header>
      <strong>Lockgate</strong>
      <nav>${TABS.map(
        ([id, name]) => html`<a href=${`#${id}`} id=${`tab-${id}`} class=${id === tab ? 'on' : ''}
          onClick=${(e) => (e.preventDefault(), go(id))}>${name}</a>`,
      )}</nav>
      <span class="muted">${session.node}</span>
      <button onClick=${out}>Sign out</button>
    </header>
    <main><${Panel} api=${session.api} /></main>
  </div>`;
}

function Login({ onIn }) {
  const [key, setKey] = useState(sessionStorage.getItem(STORE) || '');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    const api = makeApi(key.trim());
    try {
      // An admin-only read: a bad key gets 401, a key without the admin role 403.
      const doc = await api.get('/v1/activity/nodes');
      sessionStorage.setItem(STORE, key.trim());
      onIn({ api, node: doc.node.node_id });
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return html`<form class="login" onSubmit=${submit}>
    <h1>Lockgate dashboard</h1>
    <p class="muted">An API key or token with the <code>admin</code> role (none in the dev mode).</p>
    <input type="password" name="key" placeholder="API key or token" autocomplete="off"
      value=${key} onInput=${(e) => setKey(e.target.value)} />
    <button type="submit" id="sign-in" disabled=${busy}>Sign in</button>
    <${ErrorLine} error=${error} />
  </form>`;
}

render(html`<${App} />`, document.getElementById('app'));
