// postgres.js (the `postgres` npm package, its own wire protocol code)
// through pgshift. Usage: node postgres_js.js postgres://...
// (NODE_PATH must reach the package.) Prints "N passed, 0 failed".
const postgres = require('postgres');
const { check, assert, run } = require('./checks');

const url = process.argv[2];
run(async () => {
  // One connection, so that concurrent queries are pipelined on it.
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  await check('parameters, named prepared statements', async () => {
    for (let i = 0; i < 20; i++) {
      const [r] = await sql`SELECT ${i}::int * 2 AS v, ${'x'}::text AS t`;
      assert(r.v === i * 2 && r.t === 'x', JSON.stringify(r));
    }
  });
  await check('unprepared statements', async () => {
    const [r] = await sql`SELECT ${7}::int + 1 AS v`.execute();
    assert(r.v === 8, JSON.stringify(r));
    const [u] = await sql.unsafe('SELECT $1::int AS v', [3], { prepare: false });
    assert(u.v === 3, JSON.stringify(u));
  });
  await check('100 queries pipelined on one connection', async () => {
    const rs = await Promise.all([...Array(100).keys()].map((i) => sql`SELECT ${i}::int AS v`));
    rs.forEach((r, i) => assert(r[0].v === i, `query ${i}: ${JSON.stringify(r)}`));
  });
  await check('multi-statement simple query', async () => {
    const r = await sql.unsafe('CREATE TEMP TABLE n (id int); INSERT INTO n VALUES (1), (2); SELECT count(*)::int AS c FROM n').simple();
    assert(r[r.length - 1][0].c === 2, JSON.stringify(r));
  });
  await check('transactions: commit, rollback on error, savepoint', async () => {
    await sql`CREATE TABLE IF NOT EXISTS pjs (id int PRIMARY KEY)`;
    await sql.begin(async (tx) => {
      await tx`INSERT INTO pjs VALUES (1)`;
      await tx.savepoint(async (sp) => {
        await sp`INSERT INTO pjs VALUES (2)`;
      }).catch(() => {});
      await tx.savepoint(async (sp) => {
        await sp`INSERT INTO pjs VALUES (1)`; // duplicate: the savepoint rolls back
      }).catch((e) => assert(e.code === '23505', e.code));
    });
    let failed = false;
    await sql.begin(async (tx) => {
      await tx`INSERT INTO pjs VALUES (3)`;
      await tx`SELECT 1/0`;
    }).catch((e) => { failed = e.code === '22012'; });
    assert(failed, 'division by zero reported');
    const rows = await sql`SELECT id FROM pjs ORDER BY id`;
    assert(rows.map((r) => r.id).join(',') === '1,2', JSON.stringify(rows));
  });
  await check('a cursor fetching 10 rows at a time (PortalSuspended)', async () => {
    let seen = 0;
    let batches = 0;
    await sql`SELECT g FROM generate_series(1, 95) g`.cursor(10, (rows) => {
      batches += 1;
      rows.forEach((r) => { seen += 1; assert(r.g === seen, `row ${seen}`); });
    });
    assert(seen === 95 && batches === 10, `${seen} rows in ${batches} batches`);
  });
  await check('COPY in and out', async () => {
    await sql`CREATE TEMP TABLE c (id int, name text)`;
    const w = await sql`COPY c FROM STDIN`.writable();
    await new Promise((resolve, reject) => {
      w.on('error', reject);
      w.on('finish', resolve);
      for (let i = 0; i < 1000; i++) w.write(`${i}\tname ${i}\n`);
      w.end();
    });
    const [n] = await sql`SELECT count(*)::int AS n, sum(id)::int AS s FROM c`;
    assert(n.n === 1000 && n.s === 499500, JSON.stringify(n));
    const r = await sql`COPY c TO STDOUT`.readable();
    let bytes = '';
    for await (const chunk of r) bytes += chunk;
    assert(bytes.split('\n').length === 1001, `${bytes.length} bytes`);
  });
  await check('cancel a running query', async () => {
    const q = sql`SELECT pg_sleep(30)`;
    const t = Date.now();
    setTimeout(() => q.cancel(), 300);
    let code = null;
    await q.catch((e) => { code = e.code; });
    assert(code === '57014' && Date.now() - t < 10000, `${code} after ${Date.now() - t} ms`);
    const [r] = await sql`SELECT 1 AS one`;
    assert(r.one === 1, 'usable after cancel');
  });
  await check('LISTEN/NOTIFY', async () => {
    const got = new Promise((resolve) => {
      sql.listen('chan', (payload) => resolve(payload));
    });
    await new Promise((r) => setTimeout(r, 200));
    const other = postgres(url, { max: 1 });
    await other`SELECT pg_notify('chan', 'hi')`;
    await other.end();
    const p = await Promise.race([got, new Promise((_, rej) => setTimeout(() => rej(new Error('no notification')), 5000))]);
    assert(p === 'hi', JSON.stringify(p));
  });
  await sql.end();
});
