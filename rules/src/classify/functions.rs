//! Functions whose call makes a SELECT a write.
//!
//! A SELECT is only safe to send to the side that is not the write primary
//! when it has no effect there and depends on nothing the session did on the
//! primary. These functions break that: they change data or server state,
//! take locks, or read state only the backend that ran an earlier call has.

use std::collections::HashSet;

/// Built-in functions that classify a SELECT (or VALUES, or a cursor's
/// query) as a write. Sorted, for binary search. Matched on the function's
/// last name part, whatever the schema, since a function shadowing one of
/// these is at least as likely to write.
///
/// - sequences: `nextval`, `setval`; `currval` and `lastval` too, because
///   they read the session's last `nextval`, which happened on the primary;
/// - advisory locks: every `pg_advisory_*` / `pg_try_advisory_*` variant,
///   session and transaction level, lock and unlock (a lock taken on one
///   backend is not held on the other);
/// - large objects: every function named `lo_*` (the large-object API:
///   most of it writes, and `lo_open`'s descriptors exist only on the
///   backend that opened them), plus `loread` and `lowrite`;
/// - `pg_notify`, `set_config` (session state), `txid_current` and
///   `pg_current_xact_id` (they assign a transaction id), `pg_export_snapshot`;
/// - server administration: backend signalling, config reload, log rotation,
///   WAL switch and restore points, backup control, replication slots and
///   origins, logical decoding consumers, statistics resets, `pg_promote`;
/// - `dblink_exec` (runs SQL elsewhere).
///
/// Deployments add their own write-functions with
/// [`super::ClassifierOptions::write_functions`].
pub const DEFAULT_WRITE_FUNCTIONS: &[&str] = &[
    "currval",
    "dblink_exec",
    "lastval",
    "loread",
    "lowrite",
    "nextval",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_advisory_unlock",
    "pg_advisory_unlock_all",
    "pg_advisory_unlock_shared",
    "pg_advisory_xact_lock",
    "pg_advisory_xact_lock_shared",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_cancel_backend",
    "pg_copy_logical_replication_slot",
    "pg_copy_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_create_physical_replication_slot",
    "pg_create_restore_point",
    "pg_current_xact_id",
    "pg_drop_replication_slot",
    "pg_export_snapshot",
    "pg_log_backend_memory_contexts",
    "pg_logical_emit_message",
    "pg_logical_slot_get_binary_changes",
    "pg_logical_slot_get_changes",
    "pg_notify",
    "pg_promote",
    "pg_reload_conf",
    "pg_replication_origin_advance",
    "pg_replication_origin_create",
    "pg_replication_origin_drop",
    "pg_replication_origin_session_reset",
    "pg_replication_origin_session_setup",
    "pg_replication_origin_xact_setup",
    "pg_replication_slot_advance",
    "pg_rotate_logfile",
    "pg_stat_reset",
    "pg_stat_reset_replication_slot",
    "pg_stat_reset_shared",
    "pg_stat_reset_single_function_counters",
    "pg_stat_reset_single_table_counters",
    "pg_stat_reset_slru",
    "pg_stat_reset_subscription_stats",
    "pg_stat_statements_reset",
    "pg_switch_wal",
    "pg_terminate_backend",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "set_config",
    "setval",
    "txid_current",
];

/// The large-object API (`lo_create`, `lo_import`, `lo_open`, `lo_put`,
/// `lo_unlink`, ...): most of it writes, and the descriptors `lo_open`
/// returns exist only on the backend that opened them, so every `lo_*`
/// function counts, readers included.
fn is_large_object_function(name: &str) -> bool {
    name.starts_with("lo_")
}

/// The defaults plus any names a deployment adds.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteFunctions {
    extra: HashSet<String>,
}

impl WriteFunctions {
    pub(crate) fn with_extra(extra: impl IntoIterator<Item = String>) -> Self {
        WriteFunctions {
            extra: extra.into_iter().collect(),
        }
    }

    /// `name` is the last part of the called name, as the parser folded it.
    pub(crate) fn contains(&self, name: &str) -> bool {
        DEFAULT_WRITE_FUNCTIONS.binary_search(&name).is_ok()
            || is_large_object_function(name)
            || self.extra.contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_sorted_and_unique() {
        assert!(DEFAULT_WRITE_FUNCTIONS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn lookup() {
        let f = WriteFunctions::with_extra(["audit_log".to_owned()]);
        for name in [
            "nextval",
            "lo_import",
            "pg_try_advisory_xact_lock",
            "audit_log",
        ] {
            assert!(f.contains(name), "{name}");
        }
        for name in ["now", "NEXTVAL", "count", "pg_sleep"] {
            assert!(!f.contains(name), "{name}");
        }
    }
}
