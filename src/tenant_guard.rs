//! Utility statements a workspace login must not run, refused with 42501 while the library is
//! loaded in its session. The provisioning tool loads it into every session of a workspace
//! database (`ALTER DATABASE ... SET session_preload_libraries = 'dl_tenancy'`, a setting
//! tenants cannot change).
//!
//! What no privilege can take away from a login, but it must not have:
//! - `ALTER ROLE CURRENT_USER PASSWORD ...` from a session that is still open after a
//!   rotation would give a retired credential a password of the attacker's choice;
//! - `ALTER ROLE CURRENT_USER SET work_mem = ...` persists settings beyond the session;
//! - `LISTEN` / `NOTIFY` write the notification queue that every database of the server
//!   shares (`pg_notify()` itself is revoked in SQL, 0.4.0);
//! - `GRANT ... TO` / `CREATE POLICY ... TO` a neighbour's login (role names are public in
//!   pg_roles) adds a pg_shdepend row that makes the neighbour's `DROP ROLE` fail (2BP01)
//!   for good: workspace logins grant only to PUBLIC, the tenant groups and their own
//!   workspace's roles (0.6.0);
//! - `LOCK TABLE dl_override.person_overrides IN ACCESS EXCLUSIVE MODE` would block the
//!   platform's reads: workspace logins lock only tables in `tenant_custom` (0.6.0);
//! - statements that lock the relation they name *before* PostgreSQL checks the privilege to
//!   run them: `CREATE RULE ... ON pg_catalog.pg_authid` waits for an ACCESS EXCLUSIVE lock
//!   behind the tenant's own open `SELECT FROM pg_roles`, and while it waits every new session
//!   of the server (superusers' and the watchdog's too) waits behind it to read pg_authid.
//!   Rules, triggers, partitions, inheritance, foreign keys, extended statistics, comments and
//!   `DEPENDS ON EXTENSION` of workspace logins may name only relations in `tenant_custom`.
//!
//! Load mode: the platform restores a tenant's objects logged in as `<database>_load`. A
//! backup of another workspace names that workspace's roles in grants, policies and owner
//! changes; those statements are skipped with a WARNING instead of failing the restore.
//!
//! A workspace login is one whose session user is a member of `dl_tenant_read` or
//! `dl_tenant_override`; superusers and the platform's logins are never refused.

use crate::list_items;
use crate::logins::{
    database_name, is_load_login, is_tenant_session, is_workspace_login, role_oid,
};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::cell::Cell;
use std::ffi::{CStr, CString};

thread_local! {
    /// The hook that was installed before ours (another extension's, or none).
    static PREVIOUS: Cell<pg_sys::ProcessUtility_hook_type> = const { Cell::new(None) };
}

pub(crate) fn install() {
    unsafe {
        PREVIOUS.set(pg_sys::ProcessUtility_hook);
        pg_sys::ProcessUtility_hook = Some(refuse_for_workspace_logins);
    }
}

/// A refusal or a warning: message, detail, hint.
type Text = (&'static str, &'static str, &'static str);

/// Why a statement is refused whatever it names, and what to do instead; `None` for
/// everything else.
unsafe fn refusal(statement: *mut pg_sys::Node) -> Option<Text> {
    match (*statement).type_ {
        pg_sys::NodeTag::T_ListenStmt | pg_sys::NodeTag::T_NotifyStmt => Some((
            "LISTEN and NOTIFY are not available to workspace logins",
            "The notification queue is shared by every database of the server.",
            "Poll a table in tenant_custom, or use your own message broker.",
        )),
        pg_sys::NodeTag::T_AlterRoleStmt => Some((
            "workspace logins cannot alter roles",
            "Passwords and role attributes of a workspace are managed by the platform.",
            "Rotate the credential with POST /api/v2/tenants/connection-uris/rotate.",
        )),
        pg_sys::NodeTag::T_AlterRoleSetStmt => Some((
            "workspace logins cannot change role defaults",
            "Per-role defaults of a workspace login are managed by the platform.",
            "Use SET in your session, or SET LOCAL in a transaction, instead.",
        )),
        _ => None,
    }
}

const FOREIGN_GRANTEE: Text = (
    "workspace logins can grant only to roles of their own workspace",
    "A grant or policy naming a role of another workspace would tie that role to this database.",
    "Grant to PUBLIC, dl_tenant_read, dl_tenant_override or a role of this workspace.",
);

const FOREIGN_LOCK: Text = (
    "workspace logins can lock only tables in tenant_custom",
    "An explicit lock on another relation (or on a view, which locks what it reads) would block the platform.",
    "Lock your own tables in tenant_custom; writes take the row locks they need by themselves.",
);

const FOREIGN_RELATION: Text = (
    "workspace logins can name only relations in tenant_custom in this statement",
    "PostgreSQL locks the relation this statement names before it checks privileges; a lock queued on a catalog or on the extension's tables would block every session that reads them.",
    "Rules, triggers, partitions, inheritance, foreign keys, statistics and comments are for your own tables in tenant_custom.",
);

/// What the load login does with a statement naming a role of another workspace.
const SKIPPED_IN_LOAD: Text = (
    "dl_tenancy: skipped a grant, policy or owner change naming a role outside this workspace",
    "A backup of another workspace names that workspace's roles; they are not restored here.",
    "Objects stay owned by dl_tenant_override; grant to this workspace's roles after the restore.",
);

/// How a statement hands something to roles: privileges and policies are checked for every
/// workspace login, owner changes only in load mode (PostgreSQL already requires membership
/// in the new owner otherwise).
#[derive(PartialEq)]
enum Handover {
    Grant,
    Owner,
}

/// The roles a statement grants to, gives a policy to, or makes owner; None when it does none
/// of that (a REVOKE takes away, so it is never checked).
unsafe fn recipients(
    statement: *mut pg_sys::Node,
) -> Option<(Handover, Vec<*mut pg_sys::RoleSpec>)> {
    let grant = |stmt: *mut pg_sys::GrantStmt| {
        (!stmt.is_null() && (*stmt).is_grant)
            .then(|| (Handover::Grant, list_items((*stmt).grantees)))
    };
    match (*statement).type_ {
        pg_sys::NodeTag::T_GrantStmt => grant(statement.cast()),
        pg_sys::NodeTag::T_AlterDefaultPrivilegesStmt => {
            grant((*statement.cast::<pg_sys::AlterDefaultPrivilegesStmt>()).action)
        }
        pg_sys::NodeTag::T_GrantRoleStmt => {
            let stmt = statement.cast::<pg_sys::GrantRoleStmt>();
            (*stmt)
                .is_grant
                .then(|| (Handover::Grant, list_items((*stmt).grantee_roles)))
        }
        pg_sys::NodeTag::T_CreatePolicyStmt => Some((
            Handover::Grant,
            list_items((*statement.cast::<pg_sys::CreatePolicyStmt>()).roles),
        )),
        pg_sys::NodeTag::T_AlterPolicyStmt => Some((
            Handover::Grant,
            list_items((*statement.cast::<pg_sys::AlterPolicyStmt>()).roles),
        )),
        pg_sys::NodeTag::T_AlterOwnerStmt => Some((
            Handover::Owner,
            vec![(*statement.cast::<pg_sys::AlterOwnerStmt>()).newowner],
        )),
        pg_sys::NodeTag::T_AlterTableStmt => {
            let cmds = list_items::<pg_sys::AlterTableCmd>(
                (*statement.cast::<pg_sys::AlterTableStmt>()).cmds,
            );
            let owners: Vec<_> = cmds
                .into_iter()
                .filter(|cmd| (**cmd).subtype == pg_sys::AlterTableType::AT_ChangeOwner)
                .map(|cmd| (*cmd).newowner)
                .collect();
            (!owners.is_empty()).then_some((Handover::Owner, owners))
        }
        _ => None,
    }
}

/// PUBLIC, the two tenant groups, the workspace role or one of its members. A role that does
/// not exist passes: PostgreSQL reports it as it would anyway.
unsafe fn is_own_role(role: *mut pg_sys::RoleSpec) -> bool {
    if role.is_null() || (*role).roletype == pg_sys::RoleSpecType::ROLESPEC_PUBLIC {
        return true;
    }
    let oid = pg_sys::get_rolespec_oid(role, true);
    if oid == pg_sys::InvalidOid {
        return true;
    }
    if oid == role_oid(c"dl_tenant_read") || oid == role_oid(c"dl_tenant_override") {
        return true;
    }
    let workspace = CString::new(database_name()).unwrap_or_default();
    let workspace = role_oid(&workspace);
    // The nosuper check: a superuser is a member of every role, and is not the workspace's.
    workspace != pg_sys::InvalidOid
        && (oid == workspace || pg_sys::is_member_of_role_nosuper(oid, workspace))
}

/// Whether `relation` is one PostgreSQL reports missing, or lies in tenant_custom (and, with
/// `tables_only`, is a table there: a view would lock what it reads). Looked up without a
/// lock; a schema without USAGE fails here as it would in PostgreSQL, before any lock.
unsafe fn in_tenant_custom(relation: *mut pg_sys::RangeVar, tables_only: bool) -> bool {
    if relation.is_null() {
        return true;
    }
    let oid = pg_sys::RangeVarGetRelidExtended(
        relation,
        pg_sys::NoLock as i32,
        pg_sys::RVROption::RVR_MISSING_OK,
        None,
        std::ptr::null_mut(),
    );
    if oid == pg_sys::InvalidOid {
        return true; // PostgreSQL says it does not exist
    }
    let tenant_custom = pg_sys::get_namespace_oid(c"tenant_custom".as_ptr(), true);
    let kind = pg_sys::get_rel_relkind(oid) as u8;
    pg_sys::get_rel_namespace(oid) == tenant_custom
        && (!tables_only
            || kind == pg_sys::RELKIND_RELATION
            || kind == pg_sys::RELKIND_PARTITIONED_TABLE)
}

/// LOCK TABLE of anything but a table in tenant_custom.
unsafe fn locks_outside_tenant_custom(statement: *mut pg_sys::Node) -> bool {
    if (*statement).type_ != pg_sys::NodeTag::T_LockStmt {
        return false;
    }
    list_items::<pg_sys::RangeVar>((*statement.cast::<pg_sys::LockStmt>()).relations)
        .into_iter()
        .any(|relation| !in_tenant_custom(relation, true))
}

/// The relation a qualified name of `length - drop` parts names (a trigger's, rule's, policy's
/// or column's name ends with its own); None when there is none left.
unsafe fn relation_of_name(names: *mut pg_sys::List, drop: i32) -> Option<*mut pg_sys::RangeVar> {
    if names.is_null() || (*names).type_ != pg_sys::NodeTag::T_List || (*names).length <= drop {
        return None;
    }
    let head = pg_sys::list_truncate(pg_sys::list_copy(names), (*names).length - drop);
    Some(pg_sys::makeRangeVarFromNameList(head))
}

/// The foreign key constraints among a table's elements or an ALTER TABLE's definition: the
/// tables they reference.
unsafe fn referenced_tables(node: *mut pg_sys::Node) -> Vec<*mut pg_sys::RangeVar> {
    if node.is_null() {
        return vec![];
    }
    match (*node).type_ {
        pg_sys::NodeTag::T_Constraint => {
            let constraint = node.cast::<pg_sys::Constraint>();
            if (*constraint).contype == pg_sys::ConstrType::CONSTR_FOREIGN {
                vec![(*constraint).pktable]
            } else {
                vec![]
            }
        }
        pg_sys::NodeTag::T_ColumnDef => {
            list_items::<pg_sys::Node>((*node.cast::<pg_sys::ColumnDef>()).constraints)
                .into_iter()
                .flat_map(|c| referenced_tables(c))
                .collect()
        }
        _ => vec![],
    }
}

/// The relations other than its own target that a statement locks before PostgreSQL checks
/// the privilege to run it (see the module's documentation), each in a mode that can queue
/// ahead of every reader: what a workspace login may name there only in tenant_custom.
unsafe fn relations_locked_before_checks(
    statement: *mut pg_sys::Node,
) -> Vec<*mut pg_sys::RangeVar> {
    use pg_sys::ObjectType::*;
    let relation_kinds = [
        OBJECT_TABLE,
        OBJECT_VIEW,
        OBJECT_MATVIEW,
        OBJECT_INDEX,
        OBJECT_SEQUENCE,
        OBJECT_FOREIGN_TABLE,
    ];
    let subobject_kinds = [
        OBJECT_COLUMN,
        OBJECT_TABCONSTRAINT,
        OBJECT_TRIGGER,
        OBJECT_RULE,
        OBJECT_POLICY,
    ];
    match (*statement).type_ {
        pg_sys::NodeTag::T_RuleStmt => vec![(*statement.cast::<pg_sys::RuleStmt>()).relation],
        pg_sys::NodeTag::T_CreateTrigStmt => {
            vec![(*statement.cast::<pg_sys::CreateTrigStmt>()).relation]
        }
        // CreateForeignTableStmt starts with its CreateStmt.
        pg_sys::NodeTag::T_CreateStmt | pg_sys::NodeTag::T_CreateForeignTableStmt => {
            let stmt = statement.cast::<pg_sys::CreateStmt>();
            let mut relations = list_items::<pg_sys::RangeVar>((*stmt).inhRelations);
            for element in list_items::<pg_sys::Node>((*stmt).tableElts)
                .into_iter()
                .chain(list_items::<pg_sys::Node>((*stmt).constraints))
            {
                relations.extend(referenced_tables(element));
            }
            relations
        }
        pg_sys::NodeTag::T_AlterTableStmt => {
            list_items::<pg_sys::AlterTableCmd>((*statement.cast::<pg_sys::AlterTableStmt>()).cmds)
                .into_iter()
                .flat_map(|cmd| match (*cmd).subtype {
                    pg_sys::AlterTableType::AT_AttachPartition
                    | pg_sys::AlterTableType::AT_DetachPartition
                    | pg_sys::AlterTableType::AT_DetachPartitionFinalize => {
                        let partition = (*cmd).def.cast::<pg_sys::PartitionCmd>();
                        if partition.is_null() {
                            vec![]
                        } else {
                            vec![(*partition).name]
                        }
                    }
                    pg_sys::AlterTableType::AT_AddInherit => {
                        vec![(*cmd).def.cast::<pg_sys::RangeVar>()]
                    }
                    pg_sys::AlterTableType::AT_AddConstraint
                    | pg_sys::AlterTableType::AT_AddColumn => referenced_tables((*cmd).def),
                    _ => vec![],
                })
                .collect()
        }
        pg_sys::NodeTag::T_CreateStatsStmt => {
            list_items::<pg_sys::Node>((*statement.cast::<pg_sys::CreateStatsStmt>()).relations)
                .into_iter()
                .filter(|n| !n.is_null() && (**n).type_ == pg_sys::NodeTag::T_RangeVar)
                .map(|n| n.cast::<pg_sys::RangeVar>())
                .collect()
        }
        pg_sys::NodeTag::T_CommentStmt => {
            let stmt = statement.cast::<pg_sys::CommentStmt>();
            let names = (*stmt).object.cast::<pg_sys::List>();
            let drop = if relation_kinds.contains(&(*stmt).objtype) {
                0
            } else if subobject_kinds.contains(&(*stmt).objtype) {
                1
            } else {
                return vec![];
            };
            relation_of_name(names, drop).into_iter().collect()
        }
        pg_sys::NodeTag::T_DropStmt => {
            let stmt = statement.cast::<pg_sys::DropStmt>();
            if ![OBJECT_TRIGGER, OBJECT_RULE, OBJECT_POLICY].contains(&(*stmt).removeType) {
                return vec![];
            }
            list_items::<pg_sys::List>((*stmt).objects)
                .into_iter()
                .filter_map(|names| relation_of_name(names, 1))
                .collect()
        }
        pg_sys::NodeTag::T_AlterObjectDependsStmt => {
            vec![(*statement.cast::<pg_sys::AlterObjectDependsStmt>()).relation]
        }
        _ => vec![],
    }
}

fn report(level: PgLogLevel, code: PgSqlErrorCode, (message, detail, hint): Text) {
    ErrorReport::new(code, message, "dl_tenancy::tenant_guard")
        .set_detail(detail)
        .set_hint(hint)
        .report(level);
}

/// Statements that sort in `maintenance_work_mem`, with parallel workers (not SET, which must
/// stay free to lower it).
unsafe fn builds_or_sorts(statement: *mut pg_sys::Node) -> bool {
    use pg_sys::NodeTag::*;
    !statement.is_null()
        && matches!(
            (*statement).type_,
            T_IndexStmt | T_ReindexStmt | T_ClusterStmt | T_VacuumStmt | T_AlterTableStmt
        )
}

/// `CREATE SCHEMA IF NOT EXISTS` of a schema that exists, with nothing in it to create: the
/// schema's name. PostgreSQL checks CREATE on the database before it looks for the schema, so
/// a tool that runs it for a schema it may use (drizzle-kit, for `tenant_custom`) got 42501.
unsafe fn existing_schema(statement: *mut pg_sys::Node) -> Option<String> {
    if (*statement).type_ != pg_sys::NodeTag::T_CreateSchemaStmt {
        return None;
    }
    let create = statement.cast::<pg_sys::CreateSchemaStmt>();
    if !(*create).if_not_exists
        || (*create).schemaname.is_null()
        || !(*create).authrole.is_null()
        || !(*create).schemaElts.is_null()
    {
        return None;
    }
    let oid = pg_sys::get_namespace_oid((*create).schemaname, true);
    (oid != pg_sys::InvalidOid).then(|| {
        CStr::from_ptr((*create).schemaname)
            .to_string_lossy()
            .into_owned()
    })
}

/// Our part of the hook, guarded: refuses with 42501, or returns whether to run the statement
/// (false: skipped with a WARNING, in load mode; or with PostgreSQL's own NOTICE, for a schema
/// that exists).
#[pg_guard]
unsafe extern "C-unwind" fn should_run(pstmt: *mut pg_sys::PlannedStmt) -> bool {
    crate::alloc::end_session_if_reserve_used();
    crate::locks::fence_once();
    let statement = (*pstmt).utilityStmt;
    if let Some(schema) = existing_schema(statement) {
        if is_workspace_login() {
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_DUPLICATE_SCHEMA,
                format!("schema \"{schema}\" already exists, skipping"),
                "dl_tenancy::tenant_guard",
            )
            .report(PgLogLevel::NOTICE);
            return false;
        }
    }
    if let Some(text) = refusal(statement) {
        if is_workspace_login() {
            report(
                PgLogLevel::ERROR,
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                text,
            );
        }
    } else if let Some((handover, roles)) = recipients(statement) {
        if !roles.iter().all(|role| is_own_role(*role)) && is_workspace_login() {
            if is_load_login() {
                report(
                    PgLogLevel::WARNING,
                    PgSqlErrorCode::ERRCODE_WARNING,
                    SKIPPED_IN_LOAD,
                );
                return false;
            }
            if handover == Handover::Grant {
                report(
                    PgLogLevel::ERROR,
                    PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                    FOREIGN_GRANTEE,
                );
            }
        }
    } else if locks_outside_tenant_custom(statement) && is_workspace_login() {
        report(
            PgLogLevel::ERROR,
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            FOREIGN_LOCK,
        );
    }
    if is_tenant_session() {
        if builds_or_sorts(statement) {
            crate::admission::check_memory_settings();
        }
        crate::quota::check_utility(statement);
    }
    let named = relations_locked_before_checks(statement);
    if !named.is_empty()
        && is_workspace_login()
        && !named.iter().all(|r| in_tenant_custom(*r, false))
    {
        report(
            PgLogLevel::ERROR,
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            FOREIGN_RELATION,
        );
    }
    true
}

extern "C-unwind" {
    /// PostgreSQL's own `standard_ProcessUtility`, called directly: pgrx's wrapper of it
    /// would turn each error of the statement into a Rust panic and back, and the error a
    /// client sees would carry a Rust backtrace instead of PostgreSQL's own detail.
    #[link_name = "standard_ProcessUtility"]
    fn postgres_process_utility(
        pstmt: *mut pg_sys::PlannedStmt,
        query_string: *const std::ffi::c_char,
        read_only_tree: bool,
        context: pg_sys::ProcessUtilityContext::Type,
        params: pg_sys::ParamListInfo,
        query_env: *mut pg_sys::QueryEnvironment,
        dest: *mut pg_sys::DestReceiver,
        qc: *mut pg_sys::QueryCompletion,
    );
}

/// The hook. Not guarded on purpose: it holds nothing to drop, so an error of the statement
/// itself (a duplicate table, a failed constraint, ...) goes straight from PostgreSQL to
/// PostgreSQL's error handling, exactly as without the extension.
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn refuse_for_workspace_logins(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    if !should_run(pstmt) {
        return;
    }
    // The hook installed before ours, else PostgreSQL's own.
    let next = PREVIOUS.get().unwrap_or(postgres_process_utility);
    next(
        pstmt,
        query_string,
        read_only_tree,
        context,
        params,
        query_env,
        dest,
        qc,
    )
}
