//! A top-level statement's kind and its transaction or session effect.

use pg_query::protobuf::{
    DiscardMode, ExplainStmt, TransactionStmtKind, VariableSetKind, VariableSetStmt,
};
use pg_query::NodeEnum;

use super::tables::Effects;
use super::{SessionEffect, TxnControl};
use crate::config::Kind;

/// Postgres' `CURSOR_OPT_HOLD` (parsenodes.h).
const CURSOR_OPT_HOLD: i32 = 0x0020;

/// Everything about a statement except its tables and span.
pub(super) struct Shape {
    pub kind: Kind,
    pub has_order_by: bool,
    pub txn: Option<TxnControl>,
    pub session: Option<SessionEffect>,
    pub transaction_safe: bool,
    pub copy_in: bool,
}

impl Shape {
    fn kind(kind: Kind) -> Shape {
        Shape {
            kind,
            has_order_by: false,
            txn: None,
            session: None,
            transaction_safe: false,
            copy_in: false,
        }
    }

    /// A query, plain DML or COPY: runs the same inside a transaction block.
    fn transaction_safe(kind: Kind) -> Shape {
        Shape {
            transaction_safe: true,
            ..Shape::kind(kind)
        }
    }

    fn txn(txn: TxnControl) -> Shape {
        Shape {
            txn: Some(txn),
            ..Shape::kind(Kind::Transaction)
        }
    }

    fn session(effect: SessionEffect) -> Shape {
        Shape {
            session: Some(effect),
            ..Shape::kind(Kind::Session)
        }
    }
}

/// `effects` is what the walk found anywhere in the statement; `prepared`
/// classifies the query of a PREPARE.
pub(super) fn shape(
    stmt: &NodeEnum,
    effects: Effects,
    prepared: &dyn Fn(&NodeEnum) -> super::Statement,
) -> Shape {
    use NodeEnum as N;
    match stmt {
        N::SelectStmt(s) => Shape {
            has_order_by: !s.sort_clause.is_empty(),
            ..Shape::transaction_safe(query_kind(effects))
        },
        N::VariableShowStmt(_) => Shape::kind(Kind::Read),
        N::ExplainStmt(e) => explain(e, effects, prepared),

        N::InsertStmt(_) | N::UpdateStmt(_) | N::DeleteStmt(_) | N::MergeStmt(_) => {
            Shape::transaction_safe(Kind::Write)
        }

        // CALL and DO may commit inside; the rest are writes, but not
        // ones the mirror wraps in a transaction of its own.
        N::TruncateStmt(_)
        | N::LockStmt(_)
        | N::NotifyStmt(_)
        | N::CallStmt(_)
        | N::DoStmt(_)
        | N::RefreshMatViewStmt(_)
        // The proxy resolves EXECUTE through its own registry of PREPAREs;
        // on its own the name says nothing, so assume the worst.
        | N::ExecuteStmt(_) => Shape::kind(Kind::Write),

        N::CopyStmt(c) => Shape {
            has_order_by: matches!(
                c.query.as_deref().and_then(|q| q.node.as_ref()),
                Some(N::SelectStmt(s)) if !s.sort_clause.is_empty()
            ),
            // FROM STDIN has no file name (nor PROGRAM command).
            copy_in: c.is_from && c.filename.is_empty(),
            ..Shape::transaction_safe(Kind::Copy)
        },

        N::TransactionStmt(t) => Shape::txn(transaction(t)),
        N::ConstraintsSetStmt(_) => Shape::txn(TxnControl::SetConstraints),
        N::VariableSetStmt(v) => variable_set(v),

        N::PrepareStmt(p) => {
            let query = match p.query.as_deref().and_then(|q| q.node.as_ref()) {
                Some(q) => prepared(q),
                None => prepared(stmt),
            };
            Shape::session(SessionEffect::Prepare {
                name: p.name.clone(),
                query: Box::new(query),
            })
        }
        N::DeallocateStmt(d) => Shape::session(SessionEffect::Deallocate {
            name: (!d.isall).then(|| d.name.clone()),
        }),
        N::ListenStmt(l) => Shape::session(SessionEffect::Listen {
            channel: l.conditionname.clone(),
        }),
        N::UnlistenStmt(u) => Shape::session(SessionEffect::Unlisten {
            channel: non_empty(&u.conditionname),
        }),
        N::DiscardStmt(d) => Shape::session(SessionEffect::Discard {
            all: d.target == DiscardMode::DiscardAll as i32,
        }),

        // Cursors are kind Other, like FETCH, MOVE and CLOSE, so rules that
        // route by kind keep a cursor and its fetches on one side. A cursor
        // over a query that writes (FOR UPDATE, nextval, ...) is a write.
        N::DeclareCursorStmt(d) => Shape {
            session: Some(SessionEffect::DeclareCursor {
                name: d.portalname.clone(),
                hold: d.options & CURSOR_OPT_HOLD != 0,
            }),
            ..Shape::kind(if effects.writes() {
                Kind::Write
            } else {
                Kind::Other
            })
        },
        N::ClosePortalStmt(c) => Shape {
            session: Some(SessionEffect::CloseCursor {
                name: non_empty(&c.portalname),
            }),
            ..Shape::kind(Kind::Other)
        },

        s if is_ddl(s) => Shape::kind(Kind::Ddl),
        // VACUUM, ANALYZE, CHECKPOINT, LOAD, FETCH, MOVE, and whatever a
        // later parser adds.
        _ => Shape::kind(Kind::Other),
    }
}

/// A SELECT or VALUES: read unless something inside writes.
fn query_kind(effects: Effects) -> Kind {
    if effects.select_into {
        Kind::Ddl
    } else if effects.writes() {
        Kind::Write
    } else {
        Kind::Read
    }
}

/// EXPLAIN only plans, so it reads, except with ANALYZE, which runs the
/// statement and so is whatever the statement is.
fn explain(
    e: &ExplainStmt,
    effects: Effects,
    prepared: &dyn Fn(&NodeEnum) -> super::Statement,
) -> Shape {
    let analyze = e.options.iter().any(|o| match &o.node {
        Some(NodeEnum::DefElem(d)) if d.defname == "analyze" => {
            !matches!(d.arg.as_deref().and_then(|a| a.node.as_ref()), Some(arg) if is_false(arg))
        }
        _ => false,
    });
    match e.query.as_deref().and_then(|q| q.node.as_ref()) {
        Some(inner) if analyze => Shape::kind(shape(inner, effects, prepared).kind),
        _ => Shape::kind(Kind::Read),
    }
}

/// The spellings `defGetBoolean` accepts for false.
fn is_false(arg: &NodeEnum) -> bool {
    match arg {
        NodeEnum::String(s) => {
            matches!(s.sval.to_ascii_lowercase().as_str(), "false" | "off" | "0")
        }
        NodeEnum::Integer(i) => i.ival == 0,
        NodeEnum::Boolean(b) => !b.boolval,
        NodeEnum::AConst(c) => match &c.val {
            Some(pg_query::protobuf::a_const::Val::Ival(i)) => i.ival == 0,
            Some(pg_query::protobuf::a_const::Val::Boolval(b)) => !b.boolval,
            Some(pg_query::protobuf::a_const::Val::Sval(s)) => {
                matches!(s.sval.to_ascii_lowercase().as_str(), "false" | "off" | "0")
            }
            _ => false,
        },
        _ => false,
    }
}

fn transaction(t: &pg_query::protobuf::TransactionStmt) -> TxnControl {
    use TransactionStmtKind as K;
    let name = || t.savepoint_name.clone();
    let gid = || t.gid.clone();
    match K::try_from(t.kind) {
        Ok(K::TransStmtCommit) => TxnControl::Commit { chain: t.chain },
        Ok(K::TransStmtRollback) => TxnControl::Rollback { chain: t.chain },
        Ok(K::TransStmtSavepoint) => TxnControl::Savepoint { name: name() },
        Ok(K::TransStmtRelease) => TxnControl::Release { name: name() },
        Ok(K::TransStmtRollbackTo) => TxnControl::RollbackTo { name: name() },
        Ok(K::TransStmtPrepare) => TxnControl::PrepareTransaction { gid: gid() },
        Ok(K::TransStmtCommitPrepared) => TxnControl::CommitPrepared { gid: gid() },
        Ok(K::TransStmtRollbackPrepared) => TxnControl::RollbackPrepared { gid: gid() },
        Ok(K::TransStmtBegin | K::TransStmtStart | K::Undefined) | Err(_) => TxnControl::Begin,
    }
}

/// The parser's name for `SET TRANSACTION ...`.
const SET_TRANSACTION: &str = "TRANSACTION";
/// The parser's name for `SET SESSION CHARACTERISTICS AS TRANSACTION ...`.
const SET_SESSION_CHARACTERISTICS: &str = "SESSION CHARACTERISTICS";

fn variable_set(v: &VariableSetStmt) -> Shape {
    use VariableSetKind as K;
    let kind = K::try_from(v.kind).unwrap_or(K::Undefined);
    match kind {
        K::VarResetAll => Shape::session(SessionEffect::Reset { name: None }),
        K::VarReset => Shape::session(SessionEffect::Reset {
            name: Some(v.name.clone()),
        }),
        K::VarSetMulti if v.name == SET_TRANSACTION => Shape::txn(TxnControl::SetTransaction),
        _ if v.is_local => Shape::txn(TxnControl::SetLocal {
            name: v.name.clone(),
        }),
        K::VarSetMulti if v.name == SET_SESSION_CHARACTERISTICS => {
            Shape::session(SessionEffect::Set {
                name: "session characteristics".to_owned(),
            })
        }
        _ => Shape::session(SessionEffect::Set {
            name: v.name.clone(),
        }),
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// CREATE, ALTER, DROP, GRANT/REVOKE, COMMENT, SECURITY LABEL, REINDEX,
/// CLUSTER and the other schema and catalog changes.
fn is_ddl(stmt: &NodeEnum) -> bool {
    use NodeEnum as N;
    matches!(
        stmt,
        N::CreateSchemaStmt(_)
            | N::CreateStmt(_)
            | N::CreateTableAsStmt(_)
            | N::CreateForeignTableStmt(_)
            | N::ViewStmt(_)
            | N::IndexStmt(_)
            | N::CreateSeqStmt(_)
            | N::AlterSeqStmt(_)
            | N::AlterTableStmt(_)
            | N::AlterTableMoveAllStmt(_)
            | N::AlterTableSpaceOptionsStmt(_)
            | N::ReplicaIdentityStmt(_)
            | N::RenameStmt(_)
            | N::AlterObjectSchemaStmt(_)
            | N::AlterObjectDependsStmt(_)
            | N::AlterOwnerStmt(_)
            | N::DropStmt(_)
            | N::DropOwnedStmt(_)
            | N::ReassignOwnedStmt(_)
            | N::GrantStmt(_)
            | N::GrantRoleStmt(_)
            | N::AlterDefaultPrivilegesStmt(_)
            | N::CommentStmt(_)
            | N::SecLabelStmt(_)
            | N::ReindexStmt(_)
            | N::ClusterStmt(_)
            | N::CreateFunctionStmt(_)
            | N::AlterFunctionStmt(_)
            | N::CreateTrigStmt(_)
            | N::CreateEventTrigStmt(_)
            | N::AlterEventTrigStmt(_)
            | N::RuleStmt(_)
            | N::CreatePolicyStmt(_)
            | N::AlterPolicyStmt(_)
            | N::DefineStmt(_)
            | N::CreateDomainStmt(_)
            | N::AlterDomainStmt(_)
            | N::CompositeTypeStmt(_)
            | N::CreateEnumStmt(_)
            | N::AlterEnumStmt(_)
            | N::CreateRangeStmt(_)
            | N::AlterTypeStmt(_)
            | N::AlterOperatorStmt(_)
            | N::CreateOpClassStmt(_)
            | N::CreateOpFamilyStmt(_)
            | N::AlterOpFamilyStmt(_)
            | N::CreateCastStmt(_)
            | N::CreateConversionStmt(_)
            | N::CreateTransformStmt(_)
            | N::AlterCollationStmt(_)
            | N::CreateStatsStmt(_)
            | N::AlterStatsStmt(_)
            | N::AlterTsdictionaryStmt(_)
            | N::AlterTsconfigurationStmt(_)
            | N::CreateExtensionStmt(_)
            | N::AlterExtensionStmt(_)
            | N::AlterExtensionContentsStmt(_)
            | N::CreateFdwStmt(_)
            | N::AlterFdwStmt(_)
            | N::CreateForeignServerStmt(_)
            | N::AlterForeignServerStmt(_)
            | N::CreateUserMappingStmt(_)
            | N::AlterUserMappingStmt(_)
            | N::DropUserMappingStmt(_)
            | N::ImportForeignSchemaStmt(_)
            | N::CreateAmStmt(_)
            | N::CreatePlangStmt(_)
            | N::CreateRoleStmt(_)
            | N::AlterRoleStmt(_)
            | N::AlterRoleSetStmt(_)
            | N::DropRoleStmt(_)
            | N::CreateTableSpaceStmt(_)
            | N::DropTableSpaceStmt(_)
            | N::CreatedbStmt(_)
            | N::AlterDatabaseStmt(_)
            | N::AlterDatabaseRefreshCollStmt(_)
            | N::AlterDatabaseSetStmt(_)
            | N::DropdbStmt(_)
            | N::AlterSystemStmt(_)
            | N::CreatePublicationStmt(_)
            | N::AlterPublicationStmt(_)
            | N::CreateSubscriptionStmt(_)
            | N::AlterSubscriptionStmt(_)
            | N::DropSubscriptionStmt(_)
    )
}
