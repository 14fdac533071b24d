"""Nested transactions (savepoints) in psycopg 3 and asyncpg, as ORMs use
them: a transaction that opens with a savepoint, and an INSERT tried under
one and rolled back to it on a unique violation (Django's get_or_create).

Usage: savepoints.py CONNINFO URL. Prints "ok"; the caller compares OLD
and NEW afterwards.
"""
import asyncio
import sys

import asyncpg
import psycopg

conn = psycopg.connect(sys.argv[1], autocommit=True)
with conn.transaction():
    # BEGIN then SAVEPOINT before any other statement.
    with conn.transaction():
        conn.execute("INSERT INTO t VALUES (1)")
    try:
        with conn.transaction():
            conn.execute("INSERT INTO t VALUES (%s)", (1,))
    except psycopg.errors.UniqueViolation:
        pass
    conn.execute("INSERT INTO t VALUES (%s)", (2,))
# A nested block that rolls back on its own, then an outer commit.
with conn.transaction():
    with conn.transaction(force_rollback=True):
        conn.execute("INSERT INTO t VALUES (100)")
    conn.execute("INSERT INTO t VALUES (3)")
conn.close()


async def main():
    c = await asyncpg.connect(sys.argv[2])
    async with c.transaction():
        async with c.transaction():
            await c.execute("INSERT INTO t VALUES (4)")
        try:
            async with c.transaction():
                await c.execute("INSERT INTO t VALUES ($1)", 4)
        except asyncpg.UniqueViolationError:
            pass
        await c.execute("INSERT INTO t VALUES ($1)", 5)
    await c.close()


asyncio.run(main())
print("ok")
