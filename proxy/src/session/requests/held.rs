//! A transaction's opening held back until a statement decides its
//! backends (SPEC guarantee 2): BEGIN, and the savepoint commands that may
//! follow it before the first routed statement, are answered by pgshift
//! and sent later, with that statement, to its primary and its mirror.
//! Were `SAVEPOINT s` sent on its own, it would pin the transaction to
//! whichever backend the session was on, unmirrored.

use pgshift_protocol::backend::TransactionStatus;
use pgshift_protocol::frontend::tag;
use pgshift_protocol::Frame;
use pgshift_rules::classify::TxnControl;

/// What is held: frames not yet sent anywhere, and the savepoints they
/// would set, so a RELEASE or ROLLBACK TO of one that does not exist is
/// left for Postgres to refuse.
#[derive(Default)]
pub(super) struct HeldTxn {
    pub frames: Vec<Frame>,
    pub savepoints: Vec<String>,
}

/// ReadyForQuery messages `frames` produce when sent: one per Query and
/// per Sync.
pub(super) fn answers(frames: &[Frame]) -> usize {
    frames
        .iter()
        .filter(|f| matches!(f.tag(), tag::QUERY | tag::SYNC))
        .count()
}

/// How pgshift answers a batch of transaction control it holds.
#[derive(Debug, PartialEq)]
pub(super) enum Hold {
    /// The batch joins the held opening: one command tag per statement,
    /// and the savepoints then set.
    Open {
        tags: Vec<&'static str>,
        savepoints: Vec<String>,
    },
    /// COMMIT or ROLLBACK of a transaction that never reached a backend.
    Close(&'static str),
}

impl Hold {
    /// The command tags of the batch's statements, in order.
    pub fn tags(&self) -> &[&'static str] {
        match self {
            Hold::Open { tags, .. } => tags,
            Hold::Close(t) => std::slice::from_ref(t),
        }
    }

    /// The transaction status the answer reports.
    pub fn status(&self) -> TransactionStatus {
        match self {
            Hold::Open { .. } => TransactionStatus::InTransaction,
            Hold::Close(_) => TransactionStatus::Idle,
        }
    }
}

/// Whether the statements of a batch (`controls`, in the order they run)
/// can be answered without a backend, given the held savepoints (`None`:
/// nothing is held, so the batch must begin the transaction). A batch that
/// runs nothing (it prepares transaction control) joins what is held.
/// `begin_tag` is what a BEGIN of the batch reports (`START TRANSACTION`
/// for that spelling).
pub(super) fn plan(
    held: Option<&[String]>,
    controls: &[&TxnControl],
    begin_tag: &'static str,
) -> Option<Hold> {
    let Some((first, rest)) = controls.split_first() else {
        return held.map(|h| Hold::Open {
            tags: Vec::new(),
            savepoints: h.to_vec(),
        });
    };
    let mut tags = Vec::with_capacity(controls.len());
    let savepoints = match (held, first) {
        (None, TxnControl::Begin) => {
            tags.push(begin_tag);
            return savepoint_commands(Vec::new(), rest, tags);
        }
        (None, _) => return None,
        (Some(_), TxnControl::Commit { chain: false }) if rest.is_empty() => {
            return Some(Hold::Close("COMMIT"))
        }
        (Some(_), TxnControl::Rollback { chain: false }) if rest.is_empty() => {
            return Some(Hold::Close("ROLLBACK"))
        }
        (Some(held), _) => held.to_vec(),
    };
    savepoint_commands(savepoints, controls, tags)
}

/// Applies SAVEPOINT, RELEASE and ROLLBACK TO commands to `savepoints`;
/// `None` when another statement is among them, or one names a savepoint
/// that does not exist (Postgres answers that with an error). COMMIT AND
/// CHAIN and ROLLBACK AND CHAIN end the held transaction and begin
/// another like it, still held: sent on their own they would pin it to
/// the session's backend, unmirrored.
fn savepoint_commands(
    mut savepoints: Vec<String>,
    controls: &[&TxnControl],
    mut tags: Vec<&'static str>,
) -> Option<Hold> {
    for c in controls {
        let tag = match c {
            TxnControl::Savepoint { name } => {
                savepoints.push(name.clone());
                "SAVEPOINT"
            }
            TxnControl::Release { name } => {
                let at = savepoints.iter().rposition(|s| s == name)?;
                savepoints.truncate(at);
                "RELEASE"
            }
            TxnControl::RollbackTo { name } => {
                let at = savepoints.iter().rposition(|s| s == name)?;
                savepoints.truncate(at + 1);
                "ROLLBACK"
            }
            TxnControl::Commit { chain: true } => {
                savepoints.clear();
                "COMMIT"
            }
            TxnControl::Rollback { chain: true } => {
                savepoints.clear();
                "ROLLBACK"
            }
            _ => return None,
        };
        tags.push(tag);
    }
    Some(Hold::Open { tags, savepoints })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(name: &str) -> TxnControl {
        TxnControl::Savepoint { name: name.into() }
    }
    fn release(name: &str) -> TxnControl {
        TxnControl::Release { name: name.into() }
    }
    fn rollback_to(name: &str) -> TxnControl {
        TxnControl::RollbackTo { name: name.into() }
    }

    fn open(tags: &[&'static str], savepoints: &[&str]) -> Option<Hold> {
        Some(Hold::Open {
            tags: tags.to_vec(),
            savepoints: savepoints.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn a_transaction_opens_with_begin_and_its_savepoints() {
        let begin = TxnControl::Begin;
        assert_eq!(plan(None, &[&begin], "BEGIN"), open(&["BEGIN"], &[]));
        assert_eq!(
            plan(None, &[&begin, &sp("a")], "START TRANSACTION"),
            open(&["START TRANSACTION", "SAVEPOINT"], &["a"])
        );
        assert_eq!(plan(None, &[&sp("a")], "BEGIN"), None, "nothing held");
        assert_eq!(plan(None, &[], "BEGIN"), None);
        assert_eq!(plan(Some(&[]), &[], "BEGIN"), open(&[], &[]));
        let held = ["a".to_string()];
        assert_eq!(
            plan(Some(&held), &[&begin], "BEGIN"),
            None,
            "a second BEGIN warns"
        );
    }

    #[test]
    fn savepoints_are_followed_by_name() {
        let held: Vec<String> = ["a", "b", "a", "c"].iter().map(|s| s.to_string()).collect();
        // ROLLBACK TO keeps the savepoint, RELEASE drops it; both drop the
        // later ones, and the latest of a repeated name is meant.
        assert_eq!(
            plan(Some(&held), &[&rollback_to("a")], "BEGIN"),
            open(&["ROLLBACK"], &["a", "b", "a"])
        );
        assert_eq!(
            plan(Some(&held), &[&release("b"), &sp("d")], "BEGIN"),
            open(&["RELEASE", "SAVEPOINT"], &["a", "d"])
        );
        assert_eq!(plan(Some(&held), &[&release("x")], "BEGIN"), None);
        assert_eq!(plan(Some(&[]), &[&rollback_to("a")], "BEGIN"), None);
        assert_eq!(
            plan(Some(&held), &[&release("a"), &release("a")], "BEGIN"),
            open(&["RELEASE", "RELEASE"], &[])
        );
    }

    #[test]
    fn only_a_lone_commit_or_rollback_closes_what_is_held_and_chains_keep_it() {
        let held = ["a".to_string()];
        let commit = TxnControl::Commit { chain: false };
        let rollback = TxnControl::Rollback { chain: false };
        assert_eq!(
            plan(Some(&held), &[&commit], "BEGIN"),
            Some(Hold::Close("COMMIT"))
        );
        assert_eq!(
            plan(Some(&held), &[&rollback], "BEGIN"),
            Some(Hold::Close("ROLLBACK"))
        );
        assert_eq!(plan(Some(&held), &[&sp("b"), &commit], "BEGIN"), None);
        let chain = TxnControl::Commit { chain: true };
        assert_eq!(
            plan(Some(&held), &[&chain, &sp("c")], "BEGIN"),
            open(&["COMMIT", "SAVEPOINT"], &["c"])
        );
        assert_eq!(
            plan(
                Some(&held),
                &[&TxnControl::Rollback { chain: true }, &rollback_to("a")],
                "BEGIN"
            ),
            None,
            "the chained transaction has no savepoint a"
        );
        assert_eq!(plan(None, &[&chain], "BEGIN"), None);
        assert_eq!(plan(None, &[&commit], "BEGIN"), None);
    }
}
