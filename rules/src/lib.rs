//! pgshift's configuration model, validation, SQL classification, routing
//! rules and statement rewriting, without IO.
//!
//! The crate is pure: it never touches files, sockets or the process
//! environment. Callers hand in the YAML text and an environment lookup,
//! query texts and session facts.

pub mod classify;
pub mod config;
pub mod hash;
pub mod rewrite;
pub mod route;
mod textcache;

pub use classify::{
    Classification, Classifier, ClassifierOptions, ClassifierStats, SessionEffect, Statement,
    TxnControl,
};
pub use config::{
    parse_config, Auth, AuthMethod, AuthUser, Backend, BackendId, BackendTls, Backends,
    CompareSettings, Config, ConfigError, ConfigErrors, Kind, KindSet, Limits, ListenAddr,
    LogFormat, Match, MirrorErrorPolicy, MirrorMode, MirrorSettings, NameError, OverflowPolicy,
    RewriteMap, Rewrites, Route, Rule, Secret, Sticky, TableName, Telemetry, TlsFiles,
};
pub use rewrite::{validate, Catalog, Rewrite, Rewriter, RewriterStats};
pub use route::{explain, Decision, Router, SessionContext};
