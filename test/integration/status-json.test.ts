import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster } from '../helpers/cluster.js';

interface StatusPage {
  repos: Array<{ repo_id: string }>;
  cursor: string | null;
  next_cursor: string | null;
}

describe('/status.json lists one page of repos', () => {
  let c: TestCluster;
  let admin = '';
  const publicRepos = ['pages/a', 'pages/c', 'pages/e'];
  const privateRepos = ['pages/b', 'pages/d'];
  // Twelve private repos sorted before a public one: an anonymous scan meets them first.
  const hidden = Array.from({ length: 12 }, (_, i) => `hidden/r${String(i).padStart(2, '0')}`);

  async function page(query: string, token: string | null): Promise<StatusPage> {
    const r = await c.api(1, 'GET', `/status.json${query}`, undefined, token);
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    return r.json as unknown as StatusPage;
  }

  /** walk follows next_cursor from the first page and returns every repo id seen, page by page. */
  async function walk(limit: number, token: string | null): Promise<string[][]> {
    const pages: string[][] = [];
    let cursor: string | null = '';
    while (cursor !== null && pages.length < 50) {
      const p = await page(`?limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, token);
      pages.push(p.repos.map((r) => r.repo_id));
      cursor = p.next_cursor;
    }
    return pages;
  }

  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 1, env: { AUTH: 'tokens' } });
    admin = await c.adminToken();
    for (const id of [...publicRepos, ...privateRepos, ...hidden, 'zz/last']) {
      const visibility = publicRepos.includes(id) || id === 'zz/last' ? 'public' : 'private';
      const r = await c.api(1, 'POST', '/repos', { repo_id: id, visibility }, admin);
      expect(r.status, JSON.stringify(r.json)).toBe(201);
    }
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('an admin walks every repo in order, each once, limit at a time', async () => {
    const pages = await walk(4, admin);
    const all = [...hidden, ...publicRepos, ...privateRepos, 'zz/last'].sort();
    expect(pages.flat()).toEqual(all);
    expect(pages.slice(0, -1).every((p) => p.length === 4)).toBe(true);
  });

  it('anonymous pages hold public repos only; a scan past many hidden ones stops and says where to go on', async () => {
    const pages = await walk(2, null);
    expect(pages.flat()).toEqual(['pages/a', 'pages/c', 'pages/e', 'zz/last']);
    // limit 1 reads store pages of 2, at most 5 of them: the 12 hidden repos take two polls.
    // Where the scan stopped is a private repo (hidden/r09): the cursor is sealed, never its name.
    const first = await page('?limit=1', null);
    expect(first.repos).toEqual([]);
    expect(first.next_cursor).toMatch(/^c1~[A-Za-z0-9_-]+$/);
    expect(first.next_cursor).not.toContain('hidden');
    expect(Buffer.from(first.next_cursor!.slice(3), 'base64url').toString('latin1')).not.toContain('hidden');
    const second = await page(`?limit=1&cursor=${encodeURIComponent(first.next_cursor!)}`, null);
    expect(second.repos.map((r) => r.repo_id)).toEqual(['pages/a']);
    // A page ending on a repo the caller sees names it.
    expect(second.next_cursor).toBe('pages/a');
  });

  it('GET /repos pages the same way: a scan past many hidden repos stops with a sealed cursor, and following it finds the rest', async () => {
    const list = async (q: string): Promise<{ repos: string[]; next_cursor: string | null }> => {
      const r = await c.api(1, 'GET', `/repos${q}`, undefined, null);
      expect(r.status, JSON.stringify(r.json)).toBe(200);
      return r.json as unknown as { repos: string[]; next_cursor: string | null };
    };
    const first = await list('?limit=1');
    expect(first.repos).toEqual([]);
    expect(first.next_cursor).toMatch(/^c1~/);
    const seen: string[] = [];
    let cursor: string | null = '';
    for (let i = 0; cursor !== null && i < 50; i++) {
      const p = await list(`?limit=1${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      seen.push(...p.repos);
      cursor = p.next_cursor;
      if (cursor !== null && !cursor.startsWith('c1~')) expect(seen).toContain(cursor);
    }
    expect(seen).toEqual(['pages/a', 'pages/c', 'pages/e', 'zz/last']);
  });

  it('a plain cursor must name a repository the caller may read: a hidden one and a missing one get the same 400', async () => {
    for (const path of ['/status.json', '/repos']) {
      const hidden = await c.api(1, 'GET', `${path}?limit=1&cursor=hidden%2Fr05`, undefined, null);
      const missing = await c.api(1, 'GET', `${path}?limit=1&cursor=hidden%2Fr055`, undefined, null);
      expect([hidden.status, missing.status], path).toEqual([400, 400]);
      expect(hidden.json.error).toBe(missing.json.error);
      expect((await c.api(1, 'GET', `${path}?limit=1&cursor=pages%2Fa`, undefined, null)).status).toBe(200);
      expect((await c.api(1, 'GET', `${path}?limit=1&cursor=hidden%2Fr05`, undefined, admin)).status).toBe(200);
    }
  });

  it('bad paging input is a 400 and nothing else', async () => {
    // A sealed cursor altered, or sealed without the cluster's secret: refused, not read as a name.
    const sealed = (await page('?limit=1', null)).next_cursor!;
    // A character of the ciphertext's middle changed (the last ones may be padding bits).
    const at = Math.floor(sealed.length / 2);
    const altered = `${sealed.slice(0, at)}${sealed[at] === 'A' ? 'B' : 'A'}${sealed.slice(at + 1)}`;
    for (const q of [
      '?limit=abc',
      '?limit=-1',
      '?limit=10000',
      `?cursor=${'x'.repeat(401)}`,
      '?other=1',
      `?cursor=${altered}`,
      '?cursor=c1~AAAA',
    ]) {
      const r = await c.api(1, 'GET', `/status.json${q}`, undefined, null);
      expect(r.status, q).toBe(400);
    }
    expect((await page('?limit=0', admin)).repos).toHaveLength(1);
  });
});
