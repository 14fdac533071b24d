//! Session state that must follow the session to every backend it uses
//! (SPEC guarantee 8): protocol-level prepared statements, and the SQL
//! statements with session-wide effects (SET, RESET, PREPARE, DEALLOCATE,
//! LISTEN, UNLISTEN, DISCARD). A backend that joins the session late, or
//! lags behind, gets what it misses replayed before its next batch.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use pgshift_rules::classify::{Classification, SessionEffect};
use pgshift_rules::config::BackendId;

/// Connections that can hold session state: the session's own link to
/// each backend, and its mirror connection to each.
pub const SLOTS: usize = 4;

/// The slot of the session's own connection to `b`.
pub fn link_slot(b: BackendId) -> usize {
    b.index()
}

/// The slot of the session's mirror connection to `b`.
pub fn mirror_slot(b: BackendId) -> usize {
    2 + b.index()
}

/// A statement a client prepared with Parse.
pub struct Prepared {
    /// The client's Parse message, replayed as it is.
    pub parse: Bytes,
    /// Its text; `None` when the text is not UTF-8.
    pub sql: Option<Arc<str>>,
    pub class: Arc<Classification>,
    /// Executing it starts a COPY ... FROM STDIN.
    pub copy_in: bool,
    /// Which connections have it.
    on: [bool; SLOTS],
}

impl Prepared {
    fn new(parse: &[u8], (class, sql): ParseText, on: [bool; SLOTS]) -> Self {
        Prepared {
            parse: Bytes::copy_from_slice(parse),
            copy_in: class.copies_in() > 0,
            sql,
            class,
            on,
        }
    }

    /// Running it changes the session (a SET sent with the extended
    /// protocol, say), so it is recorded like a Query.
    pub fn changes_session(&self) -> bool {
        self.class.statements.iter().any(|s| s.session.is_some())
    }
}

/// A Parse's classification and its text (`None` when not UTF-8).
pub type ParseText = (Arc<Classification>, Option<Arc<str>>);

/// What a backend must be sent before it serves the session's next batch.
#[derive(Default)]
pub struct Catchup {
    /// Session-level SQL, in the order the client ran it.
    pub sql: Vec<String>,
    /// Names of statements to Close first (closed by the client elsewhere).
    pub closes: Vec<Bytes>,
    /// Parse messages of statements the backend lacks.
    pub parses: Vec<Bytes>,
}

impl Catchup {
    pub fn is_empty(&self) -> bool {
        self.sql.is_empty() && self.closes.is_empty() && self.parses.is_empty()
    }
}

/// A session that sets the same things over and over must not grow its
/// log without bound; past this many distinct entries the oldest go.
const MAX_LOG: usize = 1024;

/// One replayable statement; `key` names what it sets, so a later
/// statement about the same thing replaces it.
struct Entry {
    key: Option<String>,
    text: String,
}

/// Statement names come from the client: hashed with a per-process seed,
/// with a hash cheaper than SipHash for names looked up on every Bind.
type Names = HashMap<Bytes, Prepared, foldhash::fast::RandomState>;

#[derive(Default)]
pub struct SessionState {
    statements: Names,
    log: Vec<Entry>,
    /// Bumped whenever the log changes; a backend is current when its mark
    /// equals it.
    generation: u64,
    /// Where each connection stands: the full log is replayed to one whose
    /// mark is behind (replaying SET/LISTEN twice is harmless).
    applied: [u64; SLOTS],
    pending_close: [Vec<Bytes>; SLOTS],
    /// A connection may lack one of `statements`: set whenever one is
    /// prepared elsewhere, cleared by its catch-up. A mirror catches up
    /// at every batch, and must not walk every statement each time.
    lacking: [bool; SLOTS],
}

impl SessionState {
    pub fn statement(&self, name: &[u8]) -> Option<&Prepared> {
        self.statements.get(name)
    }

    /// The statement `name`, when it was prepared with exactly the Parse
    /// message `parse`: drivers re-send the same Parse of their unnamed
    /// statement in every transaction, and its text need not be checked
    /// and classified again.
    pub fn same_parse(&self, name: &[u8], parse: &[u8]) -> Option<&Prepared> {
        self.statements.get(name).filter(|p| p.parse == parse)
    }

    /// A Parse sent on connection `slot`. The message is copied: a slice
    /// of the client's read buffer would pin the whole buffer for as long
    /// as the statement lives, and force a fresh buffer on every read.
    pub fn parsed(&mut self, name: &[u8], parse: &[u8], text: ParseText, slot: usize) {
        let mut on = [false; SLOTS];
        on[slot] = true;
        for (lacking, here) in self.lacking.iter_mut().zip(on) {
            *lacking |= !here;
        }
        // A client re-parsing the same unnamed statement (every transaction
        // of most drivers) changes only where it is: no copy needed.
        if name.is_empty() {
            if let Some(p) = self.statements.get_mut(name).filter(|p| p.parse == parse) {
                p.on = on;
                return;
            }
        }
        let name = Bytes::copy_from_slice(name);
        // Re-parsing a name (the unnamed statement, or after a Close)
        // replaces it everywhere: other connections' copies are stale.
        self.forget_elsewhere(&name, slot);
        self.statements.insert(name, Prepared::new(parse, text, on));
    }

    /// The same Parse also went to connection `slot` (a mirror).
    pub fn also_parsed_on(&mut self, name: &[u8], slot: usize) {
        if let Some(p) = self.statements.get_mut(name) {
            p.on[slot] = true;
        }
    }

    /// A Parse pgshift answered itself (in a transaction-control batch):
    /// no connection has it yet; each gets it with its next catch-up.
    pub fn parsed_nowhere(&mut self, name: &[u8], parse: &[u8], text: ParseText) {
        let name = Bytes::copy_from_slice(name);
        self.forget_elsewhere(&name, SLOTS);
        self.lacking = [true; SLOTS];
        self.statements
            .insert(name, Prepared::new(parse, text, [false; SLOTS]));
    }

    fn forget_elsewhere(&mut self, name: &Bytes, except: usize) {
        if name.is_empty() {
            return;
        }
        if let Some(old) = self.statements.get(name) {
            for slot in 0..SLOTS {
                if slot != except && old.on[slot] {
                    self.pending_close[slot].push(name.clone());
                }
            }
        }
    }

    /// A Close pgshift answered itself (in a transaction that ended
    /// before reaching a backend): each connection that has the statement
    /// gets the Close with its next catch-up.
    pub fn closed_nowhere(&mut self, name: &[u8]) {
        self.closed(name, SLOTS, None);
    }

    /// A Close of a prepared statement sent on connection `slot`, and with
    /// the same batch on `also` (its mirror's).
    pub fn closed(&mut self, name: &[u8], slot: usize, also: Option<usize>) {
        if let Some(p) = self.statements.remove(name) {
            for other in 0..SLOTS {
                if other != slot && Some(other) != also && p.on[other] {
                    self.pending_close[other].push(Bytes::copy_from_slice(name));
                }
            }
        }
    }

    /// Closes recorded as sent on connection `slot` with a batch that
    /// never reached it: sent with its next catch-up instead. (Closing a
    /// statement a connection does not have is no error.)
    pub fn close_later(&mut self, slot: usize, names: &[Bytes]) {
        self.pending_close[slot].extend(names.iter().cloned());
    }

    /// Connection `slot` was replaced by a new one with no state at all.
    pub fn reset(&mut self, slot: usize) {
        self.applied[slot] = u64::MAX;
        self.pending_close[slot].clear();
        self.lacking[slot] = true;
        for p in self.statements.values_mut() {
            p.on[slot] = false;
        }
    }

    /// Session-wide effects of statements sent to `backend`.
    pub fn ran(&mut self, sql: &str, class: &Classification, slot: usize) {
        let caught_up = self.applied[slot] == self.generation;
        let mut changed = false;
        for stmt in &class.statements {
            let Some(effect) = &stmt.session else {
                continue;
            };
            let text = stmt.text(sql).trim().to_owned();
            match effect {
                SessionEffect::Discard { all: true } => {
                    // DISCARD ALL resets everything, protocol-level
                    // statements included; the other backend must hear of it.
                    self.statements.clear();
                    self.log.clear();
                    self.log.push(Entry { key: None, text });
                }
                SessionEffect::Deallocate { name: None } => {
                    self.statements.clear();
                    self.log
                        .retain(|e| !e.key.as_deref().is_some_and(|k| k.starts_with("prepare:")));
                    self.log.push(Entry { key: None, text });
                }
                SessionEffect::Reset { name: None } => {
                    self.log
                        .retain(|e| !e.key.as_deref().is_some_and(|k| k.starts_with("set:")));
                    self.log.push(Entry { key: None, text });
                }
                SessionEffect::Set { name } | SessionEffect::Reset { name: Some(name) } => {
                    self.replace(format!("set:{name}"), text);
                }
                SessionEffect::Prepare { name, .. }
                | SessionEffect::Deallocate { name: Some(name) } => {
                    self.replace(format!("prepare:{name}"), text);
                }
                SessionEffect::Listen { channel }
                | SessionEffect::Unlisten {
                    channel: Some(channel),
                } => {
                    self.replace(format!("listen:{channel}"), text);
                }
                SessionEffect::Unlisten { channel: None } => {
                    self.log
                        .retain(|e| !e.key.as_deref().is_some_and(|k| k.starts_with("listen:")));
                    self.log.push(Entry { key: None, text });
                }
                // Cursors live and die with their backend's transaction (or,
                // WITH HOLD, on that backend): nothing to replay elsewhere.
                SessionEffect::Discard { all: false }
                | SessionEffect::DeclareCursor { .. }
                | SessionEffect::CloseCursor { .. } => continue,
            }
            if self.log.len() > MAX_LOG {
                let excess = self.log.len() - MAX_LOG;
                self.log.drain(..excess);
            }
            changed = true;
        }
        if changed {
            self.generation += 1;
            if caught_up {
                self.applied[slot] = self.generation;
            }
        }
    }

    /// The latest statement about one thing (a parameter, a prepared
    /// statement, a channel) replaces the earlier ones.
    fn replace(&mut self, key: String, text: String) {
        self.log.retain(|e| e.key.as_deref() != Some(key.as_str()));
        self.log.push(Entry {
            key: Some(key),
            text,
        });
    }

    /// What `backend` must run before the session's next batch there; the
    /// backend is counted as caught up from here on.
    pub fn catch_up(&mut self, slot: usize) -> Catchup {
        let i = slot;
        let mut c = Catchup::default();
        if self.applied[i] != self.generation {
            c.sql = self.log.iter().map(|e| e.text.clone()).collect();
            self.applied[i] = self.generation;
        }
        c.closes = std::mem::take(&mut self.pending_close[i]);
        if std::mem::take(&mut self.lacking[i]) {
            for p in self.statements.values_mut() {
                if !p.on[i] {
                    p.on[i] = true;
                    c.parses.push(p.parse.clone());
                }
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgshift_rules::classify::Classifier;

    fn parse_msg(name: &str, sql: &str) -> Vec<u8> {
        let mut b = bytes::BytesMut::new();
        pgshift_protocol::encode::parse(&mut b, name, sql, &[]);
        b.to_vec()
    }

    fn text(classifier: &Classifier, sql: &str) -> ParseText {
        (classifier.classify(sql), Some(Arc::from(sql)))
    }

    #[test]
    fn a_reparsed_statement_is_only_where_it_was_last_parsed() {
        let classifier = Classifier::new(16);
        let mut st = SessionState::default();
        let first = parse_msg("", "SELECT 1");
        st.parsed(b"", &first, text(&classifier, "SELECT 1"), 0);
        st.also_parsed_on(b"", 2);
        assert!(st.catch_up(2).parses.is_empty());

        // The same text again, on connection 0 only: connection 2's copy
        // is no longer counted on, whether or not the bytes changed.
        st.parsed(b"", &first, text(&classifier, "SELECT 1"), 0);
        assert_eq!(st.catch_up(2).parses, std::slice::from_ref(&first));
        let second = parse_msg("", "SELECT 2");
        st.parsed(b"", &second, text(&classifier, "SELECT 2"), 0);
        assert_eq!(st.catch_up(2).parses, std::slice::from_ref(&second));
        assert_eq!(&st.statement(b"").unwrap().parse[..], &second[..]);
        assert!(st.catch_up(0).parses.is_empty());
    }

    #[test]
    fn a_close_answered_by_pgshift_reaches_every_connection_later() {
        let classifier = Classifier::new(16);
        let mut st = SessionState::default();
        let p = parse_msg("s1", "SELECT 1");
        st.parsed(b"s1", &p, text(&classifier, "SELECT 1"), 0);
        st.also_parsed_on(b"s1", 2);
        st.closed_nowhere(b"s1");
        assert!(st.statement(b"s1").is_none());
        assert_eq!(st.catch_up(0).closes, [Bytes::from_static(b"s1")]);
        assert_eq!(st.catch_up(2).closes, [Bytes::from_static(b"s1")]);
        assert!(st.catch_up(1).closes.is_empty());
    }

    #[test]
    fn only_the_very_same_parse_is_known_again() {
        let classifier = Classifier::new(16);
        let mut st = SessionState::default();
        let copy = parse_msg("s1", "COPY t FROM STDIN");
        st.parsed(b"s1", &copy, text(&classifier, "COPY t FROM STDIN"), 0);
        let known = st.same_parse(b"s1", &copy).expect("the same Parse");
        assert_eq!(known.sql.as_deref(), Some("COPY t FROM STDIN"));
        assert!(known.copy_in);
        assert!(st
            .same_parse(b"s1", &parse_msg("s1", "COPY t TO STDOUT"))
            .is_none());
        assert!(st.same_parse(b"s2", &copy).is_none());
        st.closed(b"s1", 0, None);
        assert!(st.same_parse(b"s1", &copy).is_none());
    }

    #[test]
    fn each_connection_is_sent_what_it_lacks_once() {
        let classifier = Classifier::new(16);
        let mut st = SessionState::default();
        st.parsed(
            b"s1",
            &parse_msg("s1", "SELECT 1"),
            text(&classifier, "SELECT 1"),
            0,
        );
        assert!(st.catch_up(0).parses.is_empty());
        assert_eq!(st.catch_up(2).parses.len(), 1);
        assert!(st.catch_up(2).parses.is_empty());
        // A new connection in the slot has nothing, and still lacks it
        // after something else is parsed there.
        st.reset(2);
        st.parsed(
            b"s9",
            &parse_msg("s9", "SELECT 9"),
            text(&classifier, "SELECT 9"),
            2,
        );
        assert_eq!(st.catch_up(2).parses.len(), 1);
        assert_eq!(st.catch_up(0).parses.len(), 1);
        st.parsed_nowhere(
            b"s2",
            &parse_msg("s2", "SELECT 2"),
            text(&classifier, "SELECT 2"),
        );
        assert_eq!(st.catch_up(0).parses.len(), 1);
        assert_eq!(st.catch_up(2).parses.len(), 1);
        // The unnamed statement parsed again on one connection only.
        let unnamed = parse_msg("", "SELECT 3");
        st.parsed(b"", &unnamed, text(&classifier, "SELECT 3"), 0);
        st.parsed(b"", &unnamed, text(&classifier, "SELECT 3"), 2);
        st.parsed(b"", &unnamed, text(&classifier, "SELECT 3"), 0);
        assert_eq!(st.catch_up(2).parses.len(), 1);
        assert!(st.catch_up(2).parses.is_empty());
    }
}
