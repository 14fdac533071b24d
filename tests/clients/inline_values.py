"""psycopg 3 with client-side binding (ClientCursor): every statement is a
new text with the values inlined, as psycopg2 and many ORMs send them.

Usage: python3 inline_values.py "host=... port=... user=... password=... dbname=..."
Writes 200 rows of varied types, reads each back by its inlined id, updates
a third of them, and prints "ok <rows>" when every read matched.
"""

import datetime
import decimal
import sys

import psycopg

with psycopg.connect(sys.argv[1], cursor_factory=psycopg.ClientCursor, autocommit=True) as c:
    cur = c.cursor()
    rows = []
    for i in range(200):
        row = (
            i,
            f"name {i} o'reilly" if i % 3 else f"plain{i}",
            decimal.Decimal(f"{i}.{i % 100:02d}"),
            i * 0.25,
            datetime.date(2024, 1, 1) + datetime.timedelta(days=i),
            None if i % 7 == 0 else i % 2 == 0,
        )
        cur.execute("INSERT INTO inline_values VALUES (%s, %s, %s, %s, %s, %s)", row)
        rows.append(row)
    for row in rows:
        cur.execute("SELECT id, name, amount, ratio, day, flag FROM inline_values WHERE id = %s", (row[0],))
        got = cur.fetchone()
        assert got == row, (got, row)
    for row in rows[::3]:
        cur.execute("UPDATE inline_values SET amount = amount + %s WHERE id = %s", (decimal.Decimal("1.5"), row[0]))
        assert cur.rowcount == 1
    print(f"ok {len(rows)}")
