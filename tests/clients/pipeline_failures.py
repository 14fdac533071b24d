"""psycopg pipeline mode against a table whose CHECK only OLD has.

Usage: pipeline_failures.py CONNINFO. Prints what each pipeline raised,
then "ok". The caller compares OLD and NEW afterwards.
"""
import sys

import psycopg

conn = psycopg.connect(sys.argv[1], autocommit=True)

# Autocommit statements in one pipeline: one implicit transaction, which
# the second statement's failure on OLD rolls back whole.
try:
    with conn.pipeline():
        conn.execute("INSERT INTO t VALUES (1, 1)")
        conn.execute("INSERT INTO t VALUES (2, 200)")
        conn.execute("INSERT INTO t VALUES (3, 3)")
except psycopg.errors.CheckViolation:
    print("pipeline 1: CheckViolation")

# A pipelined transaction that fails on OLD.
try:
    with conn.transaction():
        with conn.pipeline():
            conn.execute("INSERT INTO t VALUES (4, 4)")
            conn.execute("INSERT INTO t VALUES (5, 500)")
except psycopg.errors.CheckViolation:
    print("pipeline 2: CheckViolation")

# A pipelined transaction that commits, then a plain autocommit insert.
with conn.pipeline():
    with conn.transaction():
        conn.execute("INSERT INTO t VALUES (6, 6)")
        conn.execute("INSERT INTO t VALUES (7, 7)")
conn.execute("INSERT INTO t VALUES (8, 8)")
print("ok")
