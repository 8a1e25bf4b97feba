//! Who a session is: what the guard, the quota and the watchdog's SQL agree on. A workspace
//! login is a member of `dl_tenant_read` or `dl_tenant_override` and not a superuser; the
//! platform's load login of a workspace (`<database>_load`) is one too, with the tenant's
//! powers, but it is the platform acting.

use pgrx::prelude::*;
use std::ffi::CStr;

/// SQL for the watchdog's queries: `WITH RECURSIVE workspace_login(oid)`, every member
/// (recursively) of the two tenant groups, for `concat!` with the rest of a query.
macro_rules! workspace_logins_cte {
    () => {
        "WITH RECURSIVE workspace_login(oid) AS (
    SELECT m.member FROM pg_catalog.pg_auth_members AS m
      JOIN pg_catalog.pg_authid AS g ON g.oid = m.roleid
     WHERE g.rolname IN ('dl_tenant_read', 'dl_tenant_override')
    UNION
    SELECT m.member FROM pg_catalog.pg_auth_members AS m
      JOIN workspace_login AS w ON m.roleid = w.oid
)"
    };
}
pub(crate) use workspace_logins_cte;

pub(crate) unsafe fn role_oid(name: &CStr) -> pg_sys::Oid {
    pg_sys::get_role_oid(name.as_ptr(), true)
}

/// The database's name, which is also the name of the workspace's NOLOGIN role.
pub(crate) unsafe fn database_name() -> String {
    CStr::from_ptr(pg_sys::get_database_name(pg_sys::MyDatabaseId))
        .to_string_lossy()
        .into_owned()
}

/// The platform restores a workspace's objects logged in as `<database>_load` (tenants
/// cannot create roles, so the name is the platform's).
pub(crate) unsafe fn is_load_login() -> bool {
    let name = pg_sys::GetUserNameFromId(pg_sys::GetSessionUserId(), true);
    !name.is_null()
        && CStr::from_ptr(name).to_bytes() == format!("{}_load", database_name()).as_bytes()
}

/// The session user is a workspace login (the platform's load login included).
pub(crate) unsafe fn is_workspace_login() -> bool {
    in_tenant_groups(pg_sys::GetSessionUserId())
}

/// `role` is a member of a tenant group and not a superuser (reads shared catalogs only, so
/// admission can ask before a database is chosen).
pub(crate) unsafe fn in_tenant_groups(role: pg_sys::Oid) -> bool {
    if role == pg_sys::InvalidOid || pg_sys::superuser_arg(role) {
        return false;
    }
    [c"dl_tenant_read", c"dl_tenant_override"]
        .iter()
        .any(|group| {
            let group = role_oid(group);
            group != pg_sys::InvalidOid && pg_sys::is_member_of_role(role, group)
        })
}

thread_local! {
    /// [`is_tenant_session`], once known: the session user does not change in a session (only a
    /// superuser may SET SESSION AUTHORIZATION).
    static TENANT: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// [`is_tenant_session`] if it is known already, without looking anything up (for hooks that
/// must not touch the catalogs, such as the log's).
pub(crate) fn known_tenant_session() -> Option<bool> {
    TENANT.get()
}

/// The process is a tenant's from now on: the login hook found a tenant's login (admission;
/// known from the start, so that even the session's first message, a syntax error of its
/// first statement, is the log fence's), or a tenant's function runs in it (elsewhere.rs).
pub(crate) fn mark_tenant_session() {
    TENANT.set(Some(true));
}

/// A tenant's session: a workspace login, not the platform's load login.
pub(crate) unsafe fn is_tenant_session() -> bool {
    if let Some(known) = TENANT.get() {
        return known;
    }
    let tenant = is_workspace_login() && !is_load_login();
    TENANT.set(Some(tenant));
    tenant
}
