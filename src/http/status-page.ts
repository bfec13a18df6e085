import { createHash } from 'node:crypto';

/*
 * The status page: one self-contained HTML document (no external assets) that polls
 * `/status.json` every second. Data goes into the DOM as text nodes only (textContent), never as
 * markup, and the page's Content-Security-Policy allows only its own inline script and style
 * (by hash) and requests to its own origin.
 */

const STYLE = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; margin: 0 0 .2em; } h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
table { border-collapse: collapse; background: #fff; min-width: 40em; }
th, td { border: 1px solid #ddd; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
.up, .in_sync { color: #176f2c; font-weight: 600; } .down, .missing { color: #b00020; font-weight: 600; }
.stale, .repairing { color: #a15c00; font-weight: 600; }
.replica { display: block; white-space: nowrap; }
#banner { padding: .4em .8em; margin: .6em 0; border-radius: 4px; }
#banner.ok { background: #e6f4ea; } #banner.err { background: #fce8e6; }
#meta { color: #555; } form { margin: .6em 0; } input { width: 28em; }
`;

const SCRIPT = `
'use strict';
const KEY = 'gitrep-status-token';
const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c === null || c === undefined ? '' : String(c)));
  return e;
}
function ago(iso) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 120 ? s + ' s' : s < 7200 ? Math.round(s / 60) + ' min' : Math.round(s / 3600) + ' h';
}
function pct(n) { return typeof n === 'number' ? n.toFixed(1) + ' %' : '?'; }
function renderNodes(nodes) {
  const body = $('nodes');
  body.replaceChildren(...nodes.map((n) => {
    const state = n.live ? 'up' : 'down';
    const since = n.live ? 'up ' + ago(n.started_at) : (n.down_for_ms > 0 ? 'down ' + Math.round(n.down_for_ms / 1000) + ' s' : 'down');
    return el('tr', { 'data-node': n.id, 'data-state': state },
      el('td', {}, n.id + (n.self ? ' (this node)' : '')),
      el('td', { class: state }, state),
      el('td', {}, since),
      el('td', {}, n.load ? pct(n.load.cpu) : ''),
      el('td', {}, n.load ? pct(n.load.memory) : ''),
      el('td', {}, n.version),
      el('td', {}, n.url));
  }));
}
function repairText(r) {
  if (!r || typeof r !== 'object') return '';
  const objs = r.objectsTotal > 0 ? ' ' + r.objectsDone + '/' + r.objectsTotal + ' objects' : '';
  return ' (' + r.mode + ' from ' + r.source + objs + (r.bytes ? ', ' + r.bytes : '') + ', attempt ' + r.attempts + ')';
}
function renderRepos(s) {
  const body = $('repos');
  body.replaceChildren(...s.repos.map((repo) => el('tr', { 'data-repo': repo.repo_id, 'data-generation': repo.generation },
    el('td', {}, repo.repo_id),
    el('td', {}, repo.visibility),
    el('td', {}, repo.generation),
    el('td', {}, repo.replicas.filter((r) => r.state === 'in_sync').length + ' of ' + repo.replicas.length + ' (W=' + repo.write_quorum + ')'),
    el('td', {}, ...repo.replicas.map((r) => el('span', { class: 'replica', 'data-replica': r.node, 'data-state': r.state },
      r.node + ': ', el('span', { class: r.state }, r.state), ' at generation ' + (r.generation === null ? '-' : r.generation) + (r.live ? '' : ' (node down)') + repairText(r.repair)))))));
  next = s.next_cursor;
  $('repos-next').hidden = !next;
  $('repos-first').hidden = !cursor;
  $('repos-empty').textContent = s.repos.length === 0 && !cursor && !next ? (s.user ? 'No repositories you may read.' : 'No public repositories. Paste a token to see private ones you may read.') : '';
}
// The server lists one page of repositories (by id, after cursor): a poll reads what it shows.
// The page's own ?limit= sets the page size.
const LIMIT = new URLSearchParams(location.search).get('limit');
let cursor = '';
let next = null;
function token() { return sessionStorage.getItem(KEY) || ''; }
async function poll() {
  const headers = token() ? { authorization: 'Bearer ' + token() } : {};
  try {
    const query = new URLSearchParams();
    if (LIMIT) query.set('limit', LIMIT);
    if (cursor) query.set('cursor', cursor);
    const qs = query.toString();
    const res = await fetch('/status.json' + (qs ? '?' + qs : ''), { headers, cache: 'no-store' });
    if (!res.ok) {
      const err = await res.json().catch(() => ({}));
      throw new Error(res.status === 401 ? 'token refused: ' + (err.error || 'unauthorized') : 'status ' + res.status + ': ' + (err.error || ''));
    }
    const s = await res.json();
    renderNodes(s.nodes);
    renderRepos(s);
    const live = s.nodes.filter((n) => n.live).length;
    $('banner').className = 'ok';
    $('banner').textContent = live + ' of ' + s.nodes.length + ' nodes up; store ' + s.store.kind + ' ' + (s.store.reachable ? 'reachable' : 'UNREACHABLE');
    $('meta').textContent = 'served by ' + s.node + ' (version ' + s.version + ') at ' + new Date(s.time).toLocaleTimeString() + '; signed in as ' + (s.user || 'anonymous');
  } catch (e) {
    $('banner').className = 'err';
    $('banner').textContent = 'cannot read status: ' + (e && e.message ? e.message : String(e));
  }
}
$('token-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const t = $('token').value.trim();
  if (t) sessionStorage.setItem(KEY, t); else sessionStorage.removeItem(KEY);
  $('token').value = '';
  cursor = '';
  $('signout').hidden = !token();
  void poll();
});
$('signout').addEventListener('click', () => { sessionStorage.removeItem(KEY); cursor = ''; $('signout').hidden = true; void poll(); });
$('repos-next').addEventListener('click', () => { if (next) { cursor = next; void poll(); } });
$('repos-first').addEventListener('click', () => { cursor = ''; void poll(); });
$('signout').hidden = !token();
void poll();
setInterval(poll, 1000);
`;

const sha256 = (s: string): string => createHash('sha256').update(s).digest('base64');

/** STATUS_PAGE_CSP allows the page's own inline script and style only, and fetches to its origin. */
export const STATUS_PAGE_CSP = `default-src 'none'; script-src 'sha256-${sha256(SCRIPT)}'; style-src 'sha256-${sha256(STYLE)}'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'`;

/** STATUS_PAGE is the status page's HTML. */
export const STATUS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>git-replication status</title>
<style>${STYLE}</style>
</head>
<body>
<h1>git-replication</h1>
<div id="meta">loading…</div>
<div id="banner"></div>
<form id="token-form" autocomplete="off">
<label>Token (kept in this tab only): <input id="token" type="password" placeholder="paste a token to see the private repositories you may read"></label>
<button type="submit">Use token</button> <button type="button" id="signout" hidden>Forget token</button>
</form>
<h2>Nodes</h2>
<table><thead><tr><th>node</th><th>state</th><th>since</th><th>CPU</th><th>memory</th><th>version</th><th>URL</th></tr></thead><tbody id="nodes"></tbody></table>
<h2>Repositories</h2>
<table><thead><tr><th>repository</th><th>visibility</th><th>generation</th><th>in sync</th><th>replicas</th></tr></thead><tbody id="repos"></tbody></table>
<p id="repos-empty"></p><p><button type="button" id="repos-first" hidden>First page</button> <button type="button" id="repos-next" hidden>Next page</button></p>
<script>${SCRIPT}</script>
</body>
</html>
`;
