"""Two-phase commit through psycopg 3's TPC API, as a transaction manager
drives it: prepare on one connection, commit (or roll back) from another,
and a transaction recovered by listing the prepared ones.

Usage: two_phase.py CONNINFO PREFIX. Prints "ok"; the caller compares OLD
and NEW afterwards. PREFIX makes the global ids unique on the cluster.
"""
import sys

import psycopg

conninfo, prefix = sys.argv[1], sys.argv[2]

a = psycopg.connect(conninfo)
b = psycopg.connect(conninfo, autocommit=True)

# Prepared on a, committed from b.
xid = a.xid(1, f"{prefix}-commit", "branch")
a.tpc_begin(xid)
a.execute("INSERT INTO t VALUES (%s)", (1,))
a.tpc_prepare()
b_xid = b.xid(1, f"{prefix}-commit", "branch")
b.tpc_commit(b_xid)

# Prepared on a, rolled back from b.
xid = a.xid(1, f"{prefix}-rollback", "branch")
a.tpc_begin(xid)
a.execute("INSERT INTO t VALUES (%s)", (2,))
a.tpc_prepare()
b.tpc_rollback(b.xid(1, f"{prefix}-rollback", "branch"))

# One-phase: prepared and committed on the same connection.
xid = a.xid(1, f"{prefix}-same", "branch")
a.tpc_begin(xid)
a.execute("INSERT INTO t VALUES (%s)", (3,))
a.tpc_prepare()
a.tpc_commit()

# Recovery: a transaction left prepared is found and committed by b.
xid = a.xid(1, f"{prefix}-recover", "branch")
a.tpc_begin(xid)
a.execute("INSERT INTO t VALUES (%s)", (4,))
a.tpc_prepare()
found = [x for x in b.tpc_recover() if x.gtrid == f"{prefix}-recover"]
assert len(found) == 1, found
b.tpc_commit(found[0])

a.close()
b.close()
print("ok")
