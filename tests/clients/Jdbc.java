// The PostgreSQL JDBC driver through pgshift. Run as a single-file source:
//   java -cp /usr/share/java/postgresql.jar Jdbc.java jdbc:postgresql://host:port/db user password
// Prints "N passed, 0 failed".
import java.sql.*;
import javax.sql.XAConnection;
import javax.transaction.xa.XAResource;
import javax.transaction.xa.Xid;

public class Jdbc {
    static int passed = 0;

    static void ok(String name) {
        passed++;
        System.out.println("ok   " + name);
    }

    static void check(boolean cond, String what) {
        if (!cond) throw new AssertionError(what);
    }

    // Global ids are cluster-wide: unique per run.
    static class TestXid implements Xid {
        final byte[] global;

        TestXid(int n) {
            global = ("pgshift-" + n + "-" + System.nanoTime()).getBytes();
        }

        public int getFormatId() { return 42; }
        public byte[] getGlobalTransactionId() { return global; }
        public byte[] getBranchQualifier() { return new byte[] {1}; }
    }

    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0], args[1], args[2])) {
            // Server-side prepared statements after the first use.
            try (PreparedStatement ps = c.prepareStatement("SELECT ?::int * 2")) {
                ((org.postgresql.PGStatement) ps).setPrepareThreshold(1);
                for (int i = 0; i < 20; i++) {
                    ps.setInt(1, i);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        check(rs.getInt(1) == i * 2, "row " + i);
                    }
                }
            }
            ok("prepared statements");

            // Autocommit off: BEGIN travels with the first statement.
            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                s.execute("CREATE TEMP TABLE j (id int primary key)");
                s.execute("INSERT INTO j VALUES (1)");
                c.commit();
                try {
                    s.execute("INSERT INTO j VALUES (1)");
                    check(false, "duplicate accepted");
                } catch (SQLException e) {
                    check("23505".equals(e.getSQLState()), e.getSQLState());
                }
                c.rollback();
                try (ResultSet rs = s.executeQuery("SELECT count(*) FROM j")) {
                    rs.next();
                    check(rs.getInt(1) == 1, "one row after rollback");
                }
                c.commit();
            }
            ok("transactions, error, rollback");

            // Batched inserts: many Bind/Execute before one Sync.
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO j VALUES (?)")) {
                for (int i = 2; i < 1002; i++) {
                    ps.setInt(1, i);
                    ps.addBatch();
                }
                ps.executeBatch();
            }
            c.commit();
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT count(*) FROM j")) {
                rs.next();
                check(rs.getInt(1) == 1001, "batch inserted");
            }
            ok("batched inserts");

            // Large values and binary transfer of bytea.
            byte[] blob = new byte[5 * 1024 * 1024];
            for (int i = 0; i < blob.length; i++) blob[i] = (byte) (i * 31);
            try (PreparedStatement ps = c.prepareStatement("SELECT ?::bytea")) {
                ps.setBytes(1, blob);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    check(java.util.Arrays.equals(rs.getBytes(1), blob), "bytea round trip");
                }
            }
            ok("5 MB bytea round trip");

            // A transaction that opens with a savepoint (BEGIN and SAVEPOINT
            // in one batch), and a duplicate rolled back to another.
            c.setAutoCommit(true);
            try (Statement s = c.createStatement()) {
                s.execute("CREATE TABLE IF NOT EXISTS jsp (id int primary key)");
            }
            c.setAutoCommit(false);
            Savepoint first = c.setSavepoint();
            try (Statement s = c.createStatement()) {
                s.execute("INSERT INTO jsp VALUES (1)");
                Savepoint dup = c.setSavepoint("dup");
                try {
                    s.execute("INSERT INTO jsp VALUES (1)");
                    check(false, "duplicate accepted");
                } catch (SQLException e) {
                    check("23505".equals(e.getSQLState()), e.getSQLState());
                    c.rollback(dup);
                }
                s.execute("INSERT INTO jsp VALUES (2)");
                c.releaseSavepoint(first);
                c.commit();
                try (ResultSet rs = s.executeQuery("SELECT count(*) FROM jsp")) {
                    rs.next();
                    check(rs.getInt(1) == 2, "two rows after the savepoints");
                }
                c.commit();
            }
            ok("savepoints");

            // Two-phase commit through the driver's XA support: PREPARE
            // TRANSACTION on one connection, COMMIT PREPARED on another.
            org.postgresql.xa.PGXADataSource xads = new org.postgresql.xa.PGXADataSource();
            xads.setUrl(args[0]);
            xads.setUser(args[1]);
            xads.setPassword(args[2]);
            XAConnection x1 = xads.getXAConnection();
            XAConnection x2 = xads.getXAConnection();
            try {
                XAResource r1 = x1.getXAResource();
                XAResource r2 = x2.getXAResource();
                Connection c1 = x1.getConnection();
                Xid commitMe = new TestXid(1);
                Xid rollMe = new TestXid(2);
                r1.start(commitMe, XAResource.TMNOFLAGS);
                try (Statement s = c1.createStatement()) {
                    s.execute("INSERT INTO jsp VALUES (3)");
                }
                r1.end(commitMe, XAResource.TMSUCCESS);
                check(r1.prepare(commitMe) == XAResource.XA_OK, "prepared");
                r2.commit(commitMe, false);
                r1.start(rollMe, XAResource.TMNOFLAGS);
                try (Statement s = c1.createStatement()) {
                    s.execute("INSERT INTO jsp VALUES (4)");
                }
                r1.end(rollMe, XAResource.TMSUCCESS);
                check(r1.prepare(rollMe) == XAResource.XA_OK, "prepared");
                r1.rollback(rollMe);
            } finally {
                x1.close();
                x2.close();
            }
            try (Statement s = c.createStatement();
                 ResultSet rs = s.executeQuery("SELECT string_agg(id::text, ',' ORDER BY id) FROM jsp")) {
                rs.next();
                check("1,2,3".equals(rs.getString(1)), rs.getString(1));
            }
            c.commit();
            ok("two-phase commit (XA), finished by another connection");
        }
        System.out.println(passed + " passed, 0 failed");
    }
}
