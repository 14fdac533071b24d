//! Every rule's `match.sql` answered by one scan of the statement text.
//!
//! With many rules that differ only in their regex, checking them one by one
//! costs a search per rule (about 150 ns each on a short statement). A
//! `RegexSet` of all the patterns finds which of them match in a single
//! pass, computed the first time a rule gets as far as its `sql` criterion
//! and reused for the rest of the rules. Matching is the same as each rule's
//! own `Regex::is_match`, which remains the fallback if the combined set is
//! too large to build.

use regex::{RegexSet, RegexSetBuilder, SetMatches};

use crate::config::Rule;

/// The combined set may be larger than one rule's regex (whose limit is
/// 1 MiB); past this the rules' own regexes are used instead.
const SET_SIZE_LIMIT: usize = 16 << 20;

#[derive(Debug, Clone)]
pub(super) struct SqlPatterns {
    set: Option<RegexSet>,
    /// For each rule, its pattern's index in `set`.
    slots: Vec<Option<usize>>,
}

impl SqlPatterns {
    pub(super) fn new(rules: &[Rule]) -> Self {
        let mut patterns = Vec::new();
        let slots = rules
            .iter()
            .map(|r| {
                r.matcher.sql.as_ref().map(|re| {
                    patterns.push(re.as_str());
                    patterns.len() - 1
                })
            })
            .collect();
        // A set pays off from the second pattern on.
        let set = (patterns.len() > 1)
            .then(|| {
                RegexSetBuilder::new(&patterns)
                    .size_limit(SET_SIZE_LIMIT)
                    .dfa_size_limit(SET_SIZE_LIMIT)
                    .build()
                    .ok()
            })
            .flatten();
        SqlPatterns { set, slots }
    }

    pub(super) fn matcher<'s>(&'s self, sql: &'s str) -> SqlMatcher<'s> {
        SqlMatcher {
            patterns: self,
            sql,
            hits: None,
        }
    }
}

/// The set's answer for one statement, computed on first use.
pub(super) struct SqlMatcher<'s> {
    patterns: &'s SqlPatterns,
    sql: &'s str,
    hits: Option<SetMatches>,
}

impl SqlMatcher<'_> {
    /// Whether rule `index`'s `sql` criterion holds (true without one).
    pub(super) fn is_match(&mut self, index: usize, rule: &Rule) -> bool {
        let Some(re) = &rule.matcher.sql else {
            return true;
        };
        match (
            &self.patterns.set,
            self.patterns.slots.get(index).copied().flatten(),
        ) {
            (Some(set), Some(slot)) => self
                .hits
                .get_or_insert_with(|| set.matches(self.sql))
                .matched(slot),
            _ => re.is_match(self.sql),
        }
    }
}
