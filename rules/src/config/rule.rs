//! Routing rules as compiled from `rules:`.

use ipnet::IpNet;
use regex::Regex;

use super::backend::BackendId;
use super::ident::TableName;
use super::kind::KindSet;
use super::model::Route;
use super::names::named_enum;

named_enum! {
    /// What a rule's percentage buckets are keyed on.
    pub enum Sticky {
        Session = "session",
        User = "user",
        ApplicationName = "application_name",
        ClientAddr = "client_addr",
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique, non-empty; used in metrics labels and logs.
    pub name: String,
    pub matcher: Match,
    /// Share of sticky buckets the rule applies to, 0-100.
    pub percent: u8,
    pub sticky: Sticky,
    pub primary: BackendId,
    /// Never equal to `primary`.
    pub mirror: Option<BackendId>,
    /// Only with a mirror.
    pub compare: bool,
}

impl Rule {
    pub fn route(&self) -> Route {
        Route {
            primary: self.primary,
            mirror: self.mirror,
            compare: self.compare,
        }
    }
}

/// Conditions that must all hold; within a list, any element may match.
/// Empty lists and None mean "no condition".
#[derive(Debug, Clone, Default)]
pub struct Match {
    pub kinds: Option<KindSet>,
    /// The statement touches any of these tables.
    pub tables: Vec<TableName>,
    /// Searched (not anchored) in the statement text.
    pub sql: Option<Regex>,
    pub user: Vec<String>,
    pub database: Vec<String>,
    pub application_name: Vec<String>,
    /// Bare IPs in the config become /32 or /128 networks.
    pub client_addr: Vec<IpNet>,
}

impl Match {
    /// True when the rule has no conditions and so matches every statement.
    pub fn is_catch_all(&self) -> bool {
        self.kinds.is_none()
            && self.tables.is_empty()
            && self.sql.is_none()
            && self.user.is_empty()
            && self.database.is_empty()
            && self.application_name.is_empty()
            && self.client_addr.is_empty()
    }
}
