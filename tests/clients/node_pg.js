// node-postgres through pgshift. Usage: node node_pg.js postgres://...
// (NODE_PATH must reach the `pg` package.) Prints "N passed, 0 failed".
const { Client } = require('pg');
const { check, assert, run } = require('./checks');

const url = process.argv[2];
run(async () => {
  const c = new Client({ connectionString: url });
  await c.connect();
  await check('parameterized queries (extended protocol)', async () => {
    const r = await c.query('SELECT $1::int * 2 AS v, $2::text AS t', [21, 'x']);
    assert(r.rows[0].v === 42 && r.rows[0].t === 'x', JSON.stringify(r.rows));
  });
  await check('named prepared statements', async () => {
    for (let i = 0; i < 20; i++) {
      const r = await c.query({ name: 'double', text: 'SELECT $1::int * 2 AS v', values: [i] });
      assert(r.rows[0].v === i * 2, `row ${i}`);
    }
  });
  await check('multi-statement simple query', async () => {
    const r = await c.query('CREATE TEMP TABLE n (id int); INSERT INTO n VALUES (1), (2); SELECT count(*)::int AS c FROM n');
    assert(r[2].rows[0].c === 2, JSON.stringify(r[2].rows));
  });
  await check('error in a transaction, rollback, reuse', async () => {
    await c.query('BEGIN');
    let failed = false;
    try { await c.query('SELECT 1/0'); } catch (e) { failed = e.code === '22012'; }
    assert(failed, 'division by zero reported');
    await c.query('ROLLBACK');
    const r = await c.query('SELECT 1 AS one');
    assert(r.rows[0].one === 1, 'usable after rollback');
  });
  await check('LISTEN/NOTIFY', async () => {
    const other = new Client({ connectionString: url });
    await other.connect();
    const got = new Promise((resolve) => c.once('notification', resolve));
    await c.query('LISTEN chan');
    await other.query("NOTIFY chan, 'hi'");
    const n = await Promise.race([got, new Promise((_, rej) => setTimeout(() => rej(new Error('no notification')), 5000))]);
    assert(n.channel === 'chan' && n.payload === 'hi', JSON.stringify(n));
    await other.end();
  });
  await c.end();
});
