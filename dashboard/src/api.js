// The dashboard's calls: the HTTP API with the operator's key as a Bearer token, and the
// WebSocket with it as ?api_key= (browsers cannot set headers on a WebSocket).

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.reason = problem.reason || '';
    this.hint = problem.hint || '';
  }
}

export function makeApi(key) {
  async function call(method, path, body) {
    const headers = {};
    if (key) headers.Authorization = `Bearer ${key}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const doc = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new ApiError(resp.status, doc);
    return doc;
  }
  return {
    get: (path) => call('GET', path),
    post: (path, body) => call('POST', path, body),
    socket() {
      const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
      const q = key ? `?api_key=${encodeURIComponent(key)}` : '';
      return new WebSocket(`${proto}//${location.host}/v1/ws${q}`);
    },
  };
}

export function qs(params) {
  const parts = Object.entries(params)
    .filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`);
  return parts.length ? `?${parts.join('&')}` : '';
}
