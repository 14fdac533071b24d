//! SQL classification: what each statement of a query text does (its
//! [`Kind`]), which tables it touches, whether its rows come back in a
//! defined order, what it does to the transaction or the session, and a
//! literal-free digest for grouping and logging.
//!
//! Parsing uses `pg_query` (libpg_query: the Postgres 18 parser itself), so
//! anything Postgres accepts is understood the way Postgres understands it.
//! Text Postgres would reject is classified conservatively as a write, so it
//! is never sent to the wrong side silently; the proxy still forwards it and
//! the client gets Postgres' own error.
//!
//! [`Classifier`] wraps the parser in bounded caches keyed by the exact
//! statement text, or by its shape when the text inlines literals:
//! applications repeat the same few hundred statements, and a cached lookup
//! costs a hash and a string compare instead of a parse.

mod cache;
mod digest;
mod fallback;
mod functions;
mod kind;
mod parse;
mod quick;
mod reflect;
pub mod shape;
mod tables;

use std::ops::Range;
use std::sync::Arc;

use crate::config::{Kind, TableName};

pub use cache::{Classifier, ClassifierOptions, ClassifierStats, MAX_CACHED_TEXT_BYTES};
pub use functions::DEFAULT_WRITE_FUNCTIONS;
pub use quick::must_parse;

/// Everything routing needs to know about one query text (a simple-protocol
/// Query message or an extended-protocol Parse), computed once and shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// One per statement, in order; empty for an empty query string (or one
    /// holding only comments and semicolons).
    pub statements: Vec<Statement>,
    /// Set when the text did not parse, or was not parsed because it is
    /// longer than [`ClassifierOptions::max_parse_bytes`]. `statements` then
    /// holds exactly one conservative [`Kind::Write`] entry covering the
    /// whole text, with the tables a token scan could find after FROM,
    /// JOIN, INTO, UPDATE, ... Postgres' message may quote a token of the
    /// text (a literal, possibly): log `normalized` rather than this when
    /// literals must stay out of logs.
    pub parse_error: Option<String>,
    /// Groups texts that differ only in constants, whitespace, comments,
    /// keyword and unquoted-identifier case, and the number of constants in
    /// `IN (...)`, `ARRAY[...]` and `VALUES (...), (...)` lists. Stable across
    /// instances and restarts (FNV-1a 64 with a fixed finaliser, the same hash
    /// as sticky buckets: see [`crate::route::bucket`]), so digests from several
    /// proxies can be merged. Not pg_query's fingerprint, on purpose: that one
    /// ignores schema names and replaces relation names by their aliases, so
    /// `SELECT * FROM old.t` and `SELECT * FROM new.t` would share a digest
    /// while being routed differently.
    pub fingerprint: u64,
    /// The text with every literal replaced by `$n` (numbered after the
    /// highest `$n` parameter already present), comments removed and
    /// whitespace folded to single spaces. Safe to log with
    /// `redact_literals: true`, also for text that did not parse. Cut at 4 KiB
    /// with a trailing `…`; the fingerprint still covers the whole text.
    pub normalized: Arc<str>,
}

impl Classification {
    /// The kind that decides where the whole text goes: the strongest of its
    /// statements' kinds in the order Write > Ddl > Copy > Other > Session >
    /// Transaction > Read (Read for an empty text).
    ///
    /// A multi-statement Query runs on one backend connection, in one
    /// implicit transaction, so one kind must win. The order puts first
    /// whatever must not be sent to a read replica or the side that lacks
    /// the data (writes, then schema changes, then COPY whose direction is
    /// only known from the backend's reply), and last what can go anywhere.
    pub fn kind(&self) -> Kind {
        self.statements
            .iter()
            .map(|s| s.kind)
            .max_by_key(|k| kind_strength(*k))
            .unwrap_or(Kind::Read)
    }

    /// Every table any statement touches, each once, in order of first
    /// appearance.
    pub fn tables(&self) -> impl Iterator<Item = &TableName> {
        self.statements.iter().enumerate().flat_map(move |(i, s)| {
            s.tables
                .iter()
                .filter(move |t| !self.statements[..i].iter().any(|p| p.tables.contains(t)))
        })
    }

    /// The first statement that is not transaction control (see
    /// [`TxnControl`]): in `BEGIN; SET LOCAL ...; UPDATE ...; COMMIT` the
    /// UPDATE, whose route decides the transaction's primary (SPEC
    /// guarantee 2).
    pub fn first_routable(&self) -> Option<&Statement> {
        self.statements.iter().find(|s| s.kind != Kind::Transaction)
    }

    /// Writes (or a COPY, which may be one), and only statements that run
    /// the same inside a transaction block
    /// ([`Statement::transaction_safe`]): run outside a transaction, such a
    /// text can be wrapped in one and rolled back after the fact.
    pub fn wrappable_write(&self) -> bool {
        self.parse_error.is_none()
            && self.statements.iter().all(|s| s.transaction_safe)
            && self
                .statements
                .iter()
                .any(|s| matches!(s.kind, Kind::Write | Kind::Copy))
    }

    /// How many `COPY ... FROM STDIN` statements the text holds: a simple
    /// Query may start several, one after another.
    pub fn copies_in(&self) -> usize {
        self.statements.iter().filter(|s| s.copy_in).count()
    }

    /// A rough byte count for the cache's memory budget.
    pub(crate) fn approx_bytes(&self) -> usize {
        let tables: usize = self
            .statements
            .iter()
            .flat_map(|s| &s.tables)
            .map(|t| t.name.len() + t.schema.as_ref().map_or(0, String::len) + 64)
            .sum();
        std::mem::size_of::<Self>()
            + self.normalized.len()
            + self.parse_error.as_ref().map_or(0, String::len)
            + self.statements.len() * std::mem::size_of::<Statement>()
            + tables
    }
}

/// Rank used by [`Classification::kind`]; higher wins.
pub fn kind_strength(kind: Kind) -> u8 {
    match kind {
        Kind::Read => 0,
        Kind::Transaction => 1,
        Kind::Session => 2,
        Kind::Other => 3,
        Kind::Copy => 4,
        Kind::Ddl => 5,
        Kind::Write => 6,
    }
}

/// One statement of a query text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Always [`Kind::Transaction`] when `txn` is set, and only then.
    pub kind: Kind,
    /// Every relation the statement names: FROM and JOIN items at any depth
    /// (subqueries, CTE bodies, set operations), INSERT/UPDATE/DELETE/MERGE
    /// targets and sources, `SELECT INTO` and `CREATE TABLE AS` targets, COPY,
    /// LOCK, TRUNCATE, and the tables, views, indexes and sequences of DDL.
    /// References to a CTE are not tables. Names are folded as Postgres folds
    /// identifiers (see [`TableName`]); the schema is kept only when written.
    /// Each table once, in the order the walk meets them (text order for
    /// queries and DML).
    pub tables: Vec<TableName>,
    /// The top-level query sorts its rows (`SELECT ... ORDER BY`, also of a
    /// set operation, or `COPY (SELECT ... ORDER BY) TO`), so comparing
    /// results row by row is meaningful. An ORDER BY inside a subquery or CTE
    /// does not count: Postgres does not promise to keep that order.
    pub has_order_by: bool,
    /// Byte range of the statement in the classified text, as Postgres
    /// reports it (from its first token to its semicolon or the end of the
    /// text, so a comment before the semicolon is part of it), without
    /// surrounding whitespace and semicolons.
    pub span: Range<usize>,
    pub txn: Option<TxnControl>,
    /// State the statement leaves in the session beyond the current
    /// transaction, which the proxy must recreate on any other backend the
    /// session later uses (SPEC guarantee 8).
    pub session: Option<SessionEffect>,
    /// A query, a plain INSERT/UPDATE/DELETE/MERGE or a COPY: Postgres runs
    /// it the same inside a transaction block as in autocommit. False for what
    /// refuses a block (VACUUM, CREATE INDEX CONCURRENTLY, ...), may end a
    /// transaction itself (CALL, DO), controls transactions, or did not
    /// parse.
    pub transaction_safe: bool,
    /// `COPY ... FROM STDIN`: once the backend answers with CopyInResponse,
    /// the client's next messages are the COPY's data, and Postgres ignores
    /// Sync and Flush until CopyDone or CopyFail.
    pub copy_in: bool,
}

impl Statement {
    /// The statement's own text within the text it was classified from.
    pub fn text<'a>(&self, sql: &'a str) -> &'a str {
        sql.get(self.span.clone()).unwrap_or(sql)
    }
}

/// Statements that control or configure the current transaction. They go
/// wherever the transaction goes, so they never decide its primary (see
/// [`Classification::first_routable`]); their kind is [`Kind::Transaction`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnControl {
    /// BEGIN, BEGIN WORK/TRANSACTION, START TRANSACTION, with any options.
    Begin,
    /// COMMIT or END. `chain` for `COMMIT AND CHAIN`: the transaction ends
    /// and a new one starts at once on the same backend, so its primary
    /// stays pinned instead of being decided afresh.
    Commit {
        chain: bool,
    },
    /// ROLLBACK or ABORT; `chain` as for [`TxnControl::Commit`].
    Rollback {
        chain: bool,
    },
    Savepoint {
        name: String,
    },
    Release {
        name: String,
    },
    RollbackTo {
        name: String,
    },
    /// PREPARE TRANSACTION 'gid': the prepared transaction lives on that
    /// backend until COMMIT/ROLLBACK PREPARED with the same gid.
    PrepareTransaction {
        gid: String,
    },
    CommitPrepared {
        gid: String,
    },
    RollbackPrepared {
        gid: String,
    },
    /// SET TRANSACTION ...: characteristics of the current transaction only.
    SetTransaction,
    /// SET LOCAL name ...: lasts until the transaction ends, so unlike SET it
    /// is not session state and must not pull the transaction to a side.
    SetLocal {
        name: String,
    },
    /// SET CONSTRAINTS ...: deferral mode for the current transaction.
    SetConstraints,
}

/// Session state a statement creates or removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEffect {
    /// SET / SET SESSION of a parameter (also SET ROLE, SET SESSION
    /// AUTHORIZATION, SET TIME ZONE as `timezone`, SET NAMES as
    /// `client_encoding`, and `SET SESSION CHARACTERISTICS AS TRANSACTION`
    /// as `session characteristics`). The name is as Postgres reports it.
    Set {
        name: String,
    },
    /// RESET name; `None` for RESET ALL. (The name, rather than an `all`
    /// flag, so the proxy can drop exactly that parameter from what it
    /// replays.)
    Reset {
        name: Option<String>,
    },
    /// PREPARE name AS query. `query` classifies the prepared statement (its
    /// span is the PREPARE's own), so EXECUTE can be routed by what it runs.
    Prepare {
        name: String,
        query: Box<Statement>,
    },
    /// DEALLOCATE name; `None` for DEALLOCATE ALL.
    Deallocate {
        name: Option<String>,
    },
    Listen {
        channel: String,
    },
    /// UNLISTEN channel; `None` for UNLISTEN *.
    Unlisten {
        channel: Option<String>,
    },
    /// DISCARD ALL (`all`), or DISCARD PLANS / SEQUENCES / TEMP. DISCARD ALL
    /// also resets parameters, deallocates prepared statements, unlistens
    /// and closes cursors.
    Discard {
        all: bool,
    },
    /// DECLARE name CURSOR: FETCH, MOVE and CLOSE must reach the backend that
    /// declared it. `hold` for WITH HOLD, which outlives the transaction.
    DeclareCursor {
        name: String,
        hold: bool,
    },
    /// CLOSE name; `None` for CLOSE ALL.
    CloseCursor {
        name: Option<String>,
    },
}
