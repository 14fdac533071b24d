"""psycopg 3, asyncpg and pg8000 through pgshift: each check raises on failure.

Usage: python3 python_clients.py "host=... port=... user=... password=... dbname=..." postgres://...
Prints one line per check and "N passed, 0 failed" at the end.
"""

import asyncio
import sys
import threading
import time

import io
import urllib.parse

import asyncpg
import pg8000.native
import psycopg

DSN = sys.argv[1]
URL = sys.argv[2]
passed = 0


def check(name):
    def wrap(fn):
        global passed
        fn()
        passed += 1
        print(f"ok   {name}")
        return fn

    return wrap


@check("psycopg: backend_pid agrees with pg_backend_pid()")
def _():
    with psycopg.connect(DSN) as c:
        assert c.info.backend_pid == c.execute("SELECT pg_backend_pid()").fetchone()[0]


@check("psycopg: server-side prepared statements, text and binary results")
def _():
    with psycopg.connect(DSN, prepare_threshold=0) as c:
        for i in range(20):
            assert c.execute("SELECT %s::int * 2", (i,)).fetchone()[0] == i * 2
        cur = c.cursor(binary=True)
        cur.execute("SELECT %s::float8, %s::text, now()::date", (1.5, "x"))
        r = cur.fetchone()
        assert r[0] == 1.5 and r[1] == "x"


@check("psycopg: transaction with error, rollback, reuse")
def _():
    with psycopg.connect(DSN) as c:
        c.execute("CREATE TEMP TABLE t (id int primary key)")
        c.commit()
        try:
            with c.transaction():
                c.execute("INSERT INTO t VALUES (1)")
                c.execute("INSERT INTO t VALUES (1)")
            raise AssertionError("duplicate key accepted")
        except psycopg.errors.UniqueViolation:
            pass
        assert c.execute("SELECT count(*) FROM t").fetchone()[0] == 0


@check("psycopg: COPY in and out")
def _():
    with psycopg.connect(DSN) as c:
        c.execute("CREATE TEMP TABLE cp (id int, v text)")
        with c.cursor().copy("COPY cp FROM STDIN") as copy:
            for i in range(10000):
                copy.write_row((i, f"v{i}"))
        out = []
        with c.cursor().copy("COPY cp TO STDOUT") as copy:
            for row in copy.rows():
                out.append(row)
        assert len(out) == 10000


@check("psycopg: pipeline mode")
def _():
    with psycopg.connect(DSN) as c:
        with c.pipeline():
            curs = [c.execute("SELECT %s::int", (i,)) for i in range(50)]
        assert [cur.fetchone()[0] for cur in curs] == list(range(50))


@check("psycopg: cancel stops pg_sleep")
def _():
    with psycopg.connect(DSN) as c:
        threading.Timer(0.3, c.cancel).start()
        started = time.time()
        try:
            c.execute("SELECT pg_sleep(20)")
            raise AssertionError("not cancelled")
        except psycopg.errors.QueryCanceled:
            pass
        assert time.time() - started < 10


@check("psycopg: LISTEN/NOTIFY")
def _():
    with psycopg.connect(DSN, autocommit=True) as a, psycopg.connect(DSN, autocommit=True) as b:
        a.execute("LISTEN chan")
        b.execute("NOTIFY chan, 'hi'")
        n = next(a.notifies(timeout=5))
        assert (n.channel, n.payload) == ("chan", "hi")


async def asyncpg_checks():
    c = await asyncpg.connect(URL)
    try:
        assert await c.fetchval("SELECT $1::int + 1", 41) == 42
        stmt = await c.prepare("SELECT $1::text || '!'")
        for i in range(10):
            assert await stmt.fetchval(str(i)) == f"{i}!"
        await c.execute("CREATE TEMP TABLE a (id int, v text)")
        await c.copy_records_to_table("a", records=[(i, str(i)) for i in range(5000)])
        assert await c.fetchval("SELECT count(*) FROM a") == 5000
        async with c.transaction():
            await c.execute("INSERT INTO a VALUES (-1, 'tx')")
        rows = await c.fetch("SELECT id FROM a WHERE id < 3 ORDER BY id")
        assert [r["id"] for r in rows] == [-1, 0, 1, 2]
        try:
            await c.fetchval("SELECT 1/0")
            raise AssertionError("no error")
        except asyncpg.exceptions.DivisionByZeroError:
            pass
        assert await c.fetchval("SELECT 'still usable'") == "still usable"
    finally:
        await c.close()


@check("asyncpg: prepared statements, COPY, transactions, errors")
def _():
    asyncio.run(asyncpg_checks())


def pg8000_connect():
    u = urllib.parse.urlparse(URL)
    return pg8000.native.Connection(
        user=urllib.parse.unquote(u.username),
        password=urllib.parse.unquote(u.password or ""),
        host=u.hostname,
        port=u.port,
        database=u.path.lstrip("/"),
    )


@check("pg8000: parameters, prepared statements, errors in a transaction")
def _():
    c = pg8000_connect()
    try:
        assert c.run("SELECT :a::int * 2, :b::text", a=21, b="x") == [[42, "x"]]
        ps = c.prepare("SELECT :v::int + 1")
        for i in range(10):
            assert ps.run(v=i) == [[i + 1]]
        ps.close()
        c.run("START TRANSACTION")
        try:
            c.run("SELECT 1/0")
            raise AssertionError("no error")
        except pg8000.native.DatabaseError as e:
            assert e.args[0]["C"] == "22012", e.args
        c.run("ROLLBACK")
        assert c.run("SELECT 'still usable'") == [["still usable"]]
    finally:
        c.close()


@check("pg8000: COPY in and out")
def _():
    c = pg8000_connect()
    try:
        c.run("CREATE TEMP TABLE p (id int, v text)")
        data = "".join(f"{i}\tv{i}\n" for i in range(2000))
        c.run("COPY p FROM STDIN", stream=io.StringIO(data))
        assert c.run("SELECT count(*), sum(id) FROM p") == [[2000, 1999000]]
        out = io.StringIO()
        c.run("COPY p TO STDOUT", stream=out)
        assert out.getvalue() == data
    finally:
        c.close()


print(f"{passed} passed, 0 failed")
