import { h } from 'preact';
import htm from 'htm';

// JSX-like templates without a compile step: the toolchain stays Vite alone.
export const html = htm.bind(h);


export function fmtTime(ms) {
  if (!ms) return '';
  return new Date(ms).toISOString().replace('T', ' ').replace('Z', '');
}

export function ErrorLine({ error }) {
  if (!error) return null;
  return html`<p class="error" role="alert">
    ${error.status ? `${error.status} ${error.reason}: ` : ''}${error.message}
    ${error.hint ? html`<br /><small>${error.hint}</small>` : ''}
  </p>`;
}
