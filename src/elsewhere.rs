//! A tenant's code outside its sessions. A function a tenant wrote runs wherever PostgreSQL
//! evaluates it: in autovacuum's ANALYZE of an index on an expression, in the parallel workers
//! of an index build. It runs as its table's owner, the tenant, but in a process that no login
//! hook and no statement hook of the session ever saw, so none of the session's fences held
//! there: an autovacuum worker held 1,604 locks for one tenant function, and a parallel
//! worker wrote 30 kB warnings to the server log uncut and had no memory share.
//!
//! PostgreSQL asks `needs_fmgr_hook` about every function that is not built in, the first time
//! a process looks it up. In a process other than a client's session, a function owned by a
//! workspace role puts up the session's fences for the rest of that process: the memory share,
//! the lock budget, and the log's cut and budget (it is then a tenant's, for the quota and the
//! guard too). Client sessions decide at login, as before: the platform's own sessions, which
//! also run tenant functions (a restore building an index), keep their room.

use pgrx::prelude::*;

static mut PREVIOUS: pg_sys::needs_fmgr_hook_type = None;

/// The hook (from `_PG_init` while shared_preload_libraries is processed: every process of
/// the server inherits it).
pub(crate) fn install() {
    // SAFETY: the postmaster loads the library once, single-threaded, before any backend.
    unsafe {
        PREVIOUS = pg_sys::needs_fmgr_hook;
        pg_sys::needs_fmgr_hook = Some(needs_fmgr_hook);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn needs_fmgr_hook(function: pg_sys::Oid) -> bool {
    let needed = PREVIOUS.is_some_and(|previous| previous(function));
    // Autovacuum's workers and background workers (parallel workers among them) in a
    // database, inside a transaction: where a tenant's function can run and its owner can be
    // looked up. Not a walsender, not a process without a database (reading pg_proc there
    // ends it with a FATAL).
    let elsewhere = matches!(
        pg_sys::MyBackendType,
        pg_sys::BackendType::B_AUTOVAC_WORKER | pg_sys::BackendType::B_BG_WORKER
    );
    if elsewhere
        && pg_sys::MyDatabaseId != pg_sys::InvalidOid
        && pg_sys::IsTransactionState()
        && crate::logins::known_tenant_session() != Some(true)
        && owner_of(function).is_some_and(|owner| crate::logins::in_tenant_groups(owner))
    {
        crate::admission::fence_memory_once();
        crate::locks::fence();
        crate::logins::mark_tenant_session();
    }
    // Whether PostgreSQL must call an fmgr_hook around the function: never for ours.
    needed
}

unsafe fn owner_of(function: pg_sys::Oid) -> Option<pg_sys::Oid> {
    let tuple = pg_sys::SearchSysCache1(
        pg_sys::SysCacheIdentifier::PROCOID as i32,
        pg_sys::Datum::from(function),
    );
    if tuple.is_null() {
        return None;
    }
    let owner = (*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_proc>(tuple)).proowner;
    pg_sys::ReleaseSysCache(tuple);
    Some(owner)
}
