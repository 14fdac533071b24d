//! Telling whether the extended-protocol messages sent ahead of a simple
//! Query (or FunctionCall), with no Sync between, succeeded.
//!
//! Such a Query runs in their implicit transaction and ends it with its
//! ReadyForQuery. But when one of them failed, Postgres skips everything up
//! to the next Sync, that Query included: one ReadyForQuery fewer. Each of
//! Parse, Bind, Describe, Execute and Close is answered by exactly one
//! message that completes it (or by an ErrorResponse, after which nothing
//! else is), so counting completions tells which case it is.

use crate::{backend, frontend};

/// A frontend message Postgres answers with one completing message (or an
/// error).
pub fn awaits_completion(frontend_tag: u8) -> bool {
    use frontend::tag::*;
    matches!(frontend_tag, PARSE | BIND | DESCRIBE | EXECUTE | CLOSE)
}

/// A backend message that completes one of those. A Describe of a
/// statement sends ParameterDescription first, which does not count.
pub fn completes_request(backend_tag: u8) -> bool {
    use backend::tag::*;
    matches!(
        backend_tag,
        PARSE_COMPLETE
            | BIND_COMPLETE
            | CLOSE_COMPLETE
            | ROW_DESCRIPTION
            | NO_DATA
            | COMMAND_COMPLETE
            | EMPTY_QUERY_RESPONSE
            | PORTAL_SUSPENDED
    )
}

/// Where a run of such messages stands, from what came back so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Completions {
    pub completed: u32,
    /// An ErrorResponse came before the run was complete.
    pub failed: bool,
}

impl Completions {
    /// Feeds one backend message of the answer.
    pub fn observe(&mut self, backend_tag: u8, expected: u32) {
        if backend_tag == backend::tag::ERROR_RESPONSE && self.completed < expected {
            self.failed = true;
        } else if completes_request(backend_tag) {
            self.completed += 1;
        }
    }

    /// Whether all `expected` answers (or a failure) are in.
    pub fn settled(&self, expected: u32) -> bool {
        self.failed || self.completed >= expected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tags: &[u8], expected: u32) -> Completions {
        let mut c = Completions::default();
        for &t in tags {
            c.observe(t, expected);
        }
        c
    }

    #[test]
    fn parse_bind_describe_execute_complete_one_each() {
        // Parse, Bind, Describe (portal), Execute with rows.
        let c = run(b"12TDDC", 4);
        assert_eq!(c.completed, 4);
        assert!(c.settled(4) && !c.failed);
        assert!(!run(b"12T", 4).settled(4));
    }

    #[test]
    fn describe_of_a_statement_counts_once() {
        assert_eq!(run(b"1tn", 2).completed, 2);
        assert_eq!(run(b"1tT", 2).completed, 2);
    }

    #[test]
    fn an_error_before_the_end_is_a_failure() {
        let c = run(b"1E", 3);
        assert!(c.failed && c.settled(3));
        // After the run, an error is the Query's own.
        let c = run(b"12CTDE", 3);
        assert!(!c.failed);
    }

    #[test]
    fn suspended_and_empty_executes_complete() {
        assert!(run(b"12DDs", 3).settled(3));
        assert!(run(b"12I", 3).settled(3));
        assert!(run(b"3", 1).settled(1));
    }

    #[test]
    fn what_awaits_completion() {
        for t in *b"PBDEC" {
            assert!(awaits_completion(t));
        }
        for t in *b"SHQFdcf" {
            assert!(!awaits_completion(t));
        }
    }
}
