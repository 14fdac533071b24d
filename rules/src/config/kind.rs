//! Statement kinds, as rules match them and the classifier reports them.

use super::names::named_enum;

named_enum! {
    /// What a statement does, for routing. `as usize` gives a dense index.
    pub enum Kind {
        /// SELECT, SHOW, EXPLAIN without ANALYZE, ... : no side effects.
        Read = "read",
        /// INSERT, UPDATE, DELETE, MERGE, SELECT ... FOR UPDATE, ...
        Write = "write",
        /// CREATE, ALTER, DROP, TRUNCATE, GRANT, ...
        Ddl = "ddl",
        /// BEGIN, COMMIT, ROLLBACK, SAVEPOINT, ...
        Transaction = "transaction",
        /// SET, RESET, DISCARD, PREPARE, DEALLOCATE, LISTEN, ...
        Session = "session",
        /// COPY in either direction.
        Copy = "copy",
        /// Anything the classifier cannot place.
        Other = "other",
    }
}

/// A set of [`Kind`]s as a bitset.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KindSet(u8);

impl KindSet {
    pub const EMPTY: KindSet = KindSet(0);

    pub fn all() -> KindSet {
        Kind::ALL.iter().copied().collect()
    }

    pub fn contains(self, kind: Kind) -> bool {
        self.0 & Self::bit(kind) != 0
    }

    pub fn insert(&mut self, kind: Kind) {
        self.0 |= Self::bit(kind);
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn iter(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.iter().copied().filter(move |k| self.contains(*k))
    }

    fn bit(kind: Kind) -> u8 {
        1 << (kind as u8)
    }
}

impl FromIterator<Kind> for KindSet {
    fn from_iter<I: IntoIterator<Item = Kind>>(iter: I) -> Self {
        let mut set = KindSet::EMPTY;
        for k in iter {
            set.insert(k);
        }
        set
    }
}

impl std::fmt::Debug for KindSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl std::fmt::Display for KindSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.iter().map(Kind::as_str).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitset() {
        let mut s = KindSet::EMPTY;
        assert!(s.is_empty());
        s.insert(Kind::Read);
        s.insert(Kind::Copy);
        s.insert(Kind::Read);
        assert_eq!(s.len(), 2);
        assert!(s.contains(Kind::Copy) && !s.contains(Kind::Write));
        assert_eq!(s.to_string(), "read,copy");
        assert_eq!(KindSet::all().len(), 7);
        assert_eq!("ddl".parse::<Kind>(), Ok(Kind::Ddl));
        assert!("DDL"
            .parse::<Kind>()
            .unwrap_err()
            .contains("read, write, ddl"));
    }
}
