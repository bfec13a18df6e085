import { it } from 'vitest';
import { startEtcd } from '../../../test/helpers/etcd.js';
import { EtcdStore } from './etcd-store.js';
it('scratch', async () => {
  const e = await startEtcd();
  const s = new EtcdStore({ hosts: [e.url], prefix: '/x/' });
  try {
    await s.setMetaIfAbsent('a', 'b');
    await e.kill();
    for (let i = 0; i < 4; i++) {
      const t = Date.now();
      try { await s.getMeta('a'); console.log('ok?'); } catch (err) { console.log(Date.now() - t, (err as Error).message, (err as Error).cause?.constructor.name); }
    }
    await e.restart();
    const t = Date.now();
    try { console.log(await s.getMeta('a'), Date.now() - t); } catch (err) { console.log('after restart', Date.now() - t, (err as Error).message); }
    // down for longer, then up
    await e.kill();
    for (let i = 0; i < 10; i++) { try { await s.getMeta('a'); } catch { /* */ } await new Promise(r => setTimeout(r, 300)); }
    await e.restart();
    const t2 = Date.now();
    try { console.log(await s.getMeta('a'), Date.now() - t2); } catch (err) { console.log('after restart2', Date.now() - t2, (err as Error).message); }
    e.pause();
    const t3 = Date.now();
    try { await s.getMeta('a'); } catch (err) { console.log('paused', Date.now() - t3, (err as Error).message); }
    e.resume();
    console.log(await s.getMeta('a'));
  } finally { await s.close(); await e.cleanup(); }
});
