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
//!   shares (`pg_notify()` itself is revoked in SQL, 0.4.0).
//!
//! A workspace login is one whose session user is a member of `dl_tenant_read` or
//! `dl_tenant_override`; superusers and the platform's logins are never refused.

use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::cell::Cell;

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

/// Why a statement is refused, and what to do instead; `None` for everything else.
unsafe fn refusal(
    statement: *mut pg_sys::Node,
) -> Option<(&'static str, &'static str, &'static str)> {
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

unsafe fn is_workspace_login() -> bool {
    let session_user = pg_sys::GetSessionUserId();
    if pg_sys::superuser_arg(session_user) {
        return false;
    }
    [c"dl_tenant_read", c"dl_tenant_override"]
        .iter()
        .any(|group| {
            let role = pg_sys::get_role_oid(group.as_ptr(), true);
            role != pg_sys::InvalidOid && pg_sys::is_member_of_role(session_user, role)
        })
}

/// Our part of the hook, guarded: refuses with 42501, or returns.
#[pg_guard]
unsafe extern "C-unwind" fn refuse_if_forbidden(pstmt: *mut pg_sys::PlannedStmt) {
    if let Some((message, detail, hint)) = refusal((*pstmt).utilityStmt) {
        if is_workspace_login() {
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                message,
                "dl_tenancy::tenant_guard",
            )
            .set_detail(detail)
            .set_hint(hint)
            .report(PgLogLevel::ERROR);
        }
    }
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
    refuse_if_forbidden(pstmt);
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
