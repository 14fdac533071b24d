//! pgshift's configuration model, validation and routing rules, without IO.
//!
//! The crate is pure: it never touches files, sockets or the process
//! environment. Callers hand in the YAML text and an environment lookup.

pub mod config;

pub use config::{
    parse_config, Auth, AuthMethod, AuthUser, Backend, BackendId, BackendTls, Backends,
    CompareSettings, Config, ConfigError, ConfigErrors, Kind, KindSet, Limits, ListenAddr,
    LogFormat, Match, MirrorErrorPolicy, MirrorMode, MirrorSettings, NameError, OverflowPolicy,
    RewriteMap, Rewrites, Route, Rule, Secret, Sticky, TableName, Telemetry, TlsFiles,
};
