//! Watching the primary's answer to a mirrored batch, for the mirror: its
//! result digest when the batch is compared, and how it ended (a COMMIT
//! that came back as ROLLBACK must roll back on the mirror too).

use pgshift_protocol::backend::{tag, ErrorFields};
use tokio::sync::oneshot;

use std::sync::Arc;
use std::time::Instant;

use pgshift_rules::config::BackendId;

use crate::compare::{DigestOptions, ResultDigest, ResultSummary, Role};
use crate::mirror::link::MirrorState;
use crate::prepared::{Prepared, PreparedXacts, TwoPhase};
use crate::stats::DigestStats;
use crate::telemetry::Tally;

/// SQLSTATE of a statement stopped by a cancel request or a timeout.
pub const QUERY_CANCELED: &str = "57014";

/// How the primary's answer ended.
#[derive(Debug, Clone)]
pub struct PrimaryOutcome {
    pub summary: Option<ResultSummary>,
    /// Column positions the primary's digest ignored, so the mirror's
    /// digest ignores the same ones even if its column names differ.
    pub ignore_positions: Vec<usize>,
    /// Some COMMIT of the batch committed (or a PREPARE TRANSACTION kept
    /// the transaction for COMMIT PREPARED), whatever came after it
    /// (`INSERT ...; COMMIT; SELECT 1/0` keeps the insert).
    pub committed_some: bool,
    pub sqlstate: Option<String>,
}

impl PrimaryOutcome {
    /// A transaction-ending batch that really committed: it failed
    /// nowhere and a COMMIT of it reported COMMIT (a failed transaction's
    /// reports ROLLBACK). Statements may follow the COMMIT, in a Query
    /// like `INSERT ...; COMMIT; SELECT ...`.
    pub fn committed(&self) -> bool {
        self.sqlstate.is_none() && self.committed_some
    }
}

/// How the mirror fared with a batch (`mirror.mode: sync` waits for it).
#[derive(Debug, Clone)]
pub struct MirrorResult {
    /// SQLSTATE and message when the batch failed on the mirror, or never
    /// ran there (queue full, backend unreachable).
    pub error: Option<(String, String)>,
}

pub struct Observer {
    /// Sync mirroring: the mirror's result, awaited before the client gets
    /// its ReadyForQuery; `true` when a mirror-only failure fails the client.
    pub mirror_done: Option<(oneshot::Receiver<MirrorResult>, bool)>,
    /// Boxed: a digest is large, and most observers only time their batch
    /// (every byte here is copied into each observer's box).
    digest: Option<Box<ResultDigest>>,
    committed_some: bool,
    sqlstate: Option<String>,
    /// A statement ran: the answer held a CommandComplete, an
    /// EmptyQueryResponse, a PortalSuspended or an error.
    ran: bool,
    done: Option<oneshot::Sender<PrimaryOutcome>>,
    /// Where the batch's latency is recorded, and since when.
    timing: Option<Timing>,
    /// The mirror to tell, and the batch's number, when the primary's run
    /// is cancelled.
    cancel: Option<(Arc<MirrorState>, u64)>,
    two_phase: Option<TwoPhaseWatch>,
}

/// A two-phase commit statement in the batch: what the primary's answer
/// records of it.
struct TwoPhaseWatch {
    xacts: Arc<PreparedXacts>,
    phase: TwoPhase,
    /// Where a PREPARE TRANSACTION ran.
    at: Option<Prepared>,
}

impl TwoPhaseWatch {
    /// Whether `tag` is the statement's success. (A failed transaction's
    /// PREPARE TRANSACTION reports ROLLBACK, and prepares nothing.)
    fn done_by(&self, tag: &[u8]) -> bool {
        match self.phase {
            TwoPhase::Prepare(_) => tag == b"PREPARE TRANSACTION",
            TwoPhase::Finish(_) => tag == b"COMMIT PREPARED" || tag == b"ROLLBACK PREPARED",
        }
    }

    fn record(self) {
        match &self.phase {
            TwoPhase::Prepare(gid) => {
                if let Some(at) = self.at {
                    self.xacts.prepared(gid, at);
                }
            }
            TwoPhase::Finish(gid) => self.xacts.finished(gid),
        }
    }
}

struct Timing {
    stats: Arc<DigestStats>,
    backend: BackendId,
    started: Instant,
    tally: Tally,
    /// Open while the primary answers; closed (and exported) at `finish`.
    _span: tracing::Span,
}

impl Timing {
    fn new(stats: Arc<DigestStats>, backend: BackendId, tally: Tally) -> Self {
        let span = tally.span(backend, Role::Primary, stats.fingerprint());
        Timing {
            stats,
            backend,
            started: Instant::now(),
            tally,
            _span: span,
        }
    }
}

impl Observer {
    /// `digest`: options when the result is compared, `None` when only the
    /// ending matters.
    pub fn new(
        digest: Option<&DigestOptions>,
    ) -> (Box<Observer>, oneshot::Receiver<PrimaryOutcome>) {
        let (done, rx) = oneshot::channel();
        let o = Observer {
            mirror_done: None,
            digest: digest.map(|o| Box::new(ResultDigest::new(o))),
            committed_some: false,
            sqlstate: None,
            ran: false,
            done: Some(done),
            timing: None,
            cancel: None,
            two_phase: None,
        };
        (Box::new(o), rx)
    }

    /// Only times the batch for its digest's latency histogram.
    pub fn timing_only(stats: Arc<DigestStats>, backend: BackendId, tally: Tally) -> Box<Observer> {
        Box::new(Observer {
            mirror_done: None,
            digest: None,
            committed_some: false,
            sqlstate: None,
            ran: false,
            done: None,
            timing: Some(Timing::new(stats, backend, tally)),
            cancel: None,
            two_phase: None,
        })
    }

    pub fn timed(
        mut self: Box<Self>,
        stats: Arc<DigestStats>,
        backend: BackendId,
        tally: Tally,
    ) -> Box<Self> {
        self.timing = Some(Timing::new(stats, backend, tally));
        self
    }

    /// Tells `mirror` when the primary's run of batch `seq` ends in a
    /// cancel, so the mirror can stop its copy.
    pub fn on_cancel(&mut self, mirror: Arc<MirrorState>, seq: u64) {
        self.cancel = Some((mirror, seq));
    }

    /// Records in `xacts` a gid the batch prepares (at `at`) or finishes,
    /// once the primary has done so.
    pub fn on_two_phase(
        &mut self,
        xacts: Arc<PreparedXacts>,
        phase: TwoPhase,
        at: Option<Prepared>,
    ) {
        self.two_phase = Some(TwoPhaseWatch { xacts, phase, at });
    }

    /// Whether DataRows must be seen whole (the digest hashes their values).
    pub fn needs_rows(&self) -> bool {
        self.digest.is_some()
    }

    pub fn frame(&mut self, t: u8, body: &[u8]) {
        match t {
            tag::ROW_DESCRIPTION => {
                if let Some(d) = &mut self.digest {
                    d.row_description(body);
                }
            }
            tag::DATA_ROW => {
                if let Some(d) = &mut self.digest {
                    d.data_row(body);
                }
            }
            tag::COMMAND_COMPLETE => {
                self.ran = true;
                if let Some(d) = &mut self.digest {
                    d.command_complete(body);
                }
                // Only the mirror and two-phase commit ask; timing alone
                // needs no look.
                if self.done.is_some() || self.two_phase.is_some() {
                    let tag = pgshift_protocol::backend::command_complete(body).unwrap_or_default();
                    self.committed_some |= pgshift_protocol::backend::keeps_transaction(tag);
                    // Recorded before the client hears of it, so that its
                    // next statement, or another session's, finds it.
                    if self.two_phase.as_ref().is_some_and(|w| w.done_by(tag)) {
                        if let Some(w) = self.two_phase.take() {
                            w.record();
                        }
                    }
                }
            }
            tag::EMPTY_QUERY_RESPONSE | tag::PORTAL_SUSPENDED => self.ran = true,
            tag::ERROR_RESPONSE => {
                self.ran = true;
                if let Some(d) = &mut self.digest {
                    d.error(body);
                }
                self.sqlstate = ErrorFields::new(body)
                    .sqlstate()
                    .map(|s| String::from_utf8_lossy(s).into_owned());
            }
            _ => {}
        }
    }

    /// The primary failed this batch (so a mirror failure is no news).
    pub fn primary_failed(&self) -> bool {
        self.sqlstate.is_some()
    }

    pub fn finish(self) {
        if let Some((mirror, seq)) = &self.cancel {
            if self.sqlstate.as_deref() == Some(QUERY_CANCELED) {
                mirror.primary_cancelled(*seq);
            }
        }
        // A batch that only prepared or described ran no statement: it is
        // neither counted nor timed as one.
        if let Some(t) = &self.timing {
            if self.ran {
                let elapsed = t.started.elapsed();
                t.stats.record_latency(t.backend, Role::Primary, elapsed);
                t.tally.record(t.backend, Role::Primary, elapsed);
            }
            // A prepare-only batch is where an extended-protocol statement
            // is described: what its Executes will not be told.
            if let Some(d) = self.digest.as_ref().filter(|d| d.described()) {
                t.stats.learn_ignore(&d.ignore_positions());
            }
        }
        let Some(done) = self.done else { return };
        let ignore_positions = self
            .digest
            .as_ref()
            .map(|d| d.ignore_positions())
            .unwrap_or_default();
        let _ = done.send(PrimaryOutcome {
            summary: self.digest.map(|d| d.finish()),
            ignore_positions,
            committed_some: self.committed_some,
            sqlstate: self.sqlstate,
        });
    }
}
