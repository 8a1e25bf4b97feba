//! Admission: the server's connection slots shared between the platform and its tenants. With
//! the library in `shared_preload_libraries`, a workspace login (a member of `dl_tenant_read`
//! or `dl_tenant_override`, not a superuser, not a `<database>_load` login) is let in only
//! while enough slots stay free:
//!
//! - through the pooler (a unix-socket login: PgBouncer runs beside the server; tenants reach
//!   the server over TCP only), while more than `dl_tenancy.pooled_reserve` slots are free.
//!   Otherwise the login is refused with 57P03 (`cannot_connect_now`), which PgBouncer takes
//!   as "try again" (with scripts/pgbouncer/57P03-is-temporary.patch for every client of the
//!   pool): its clients wait in the pool's queue (up to its `query_wait_timeout`) instead of
//!   failing, and get a server connection as soon as one frees up;
//! - directly, while more than `dl_tenancy.direct_reserve` slots are free; otherwise 53300.
//!
//! What is left belongs to the platform (the tool, `serve`, the runtime, an operator), on top
//! of PostgreSQL's `superuser_reserved_connections`. 0 turns a reserve off.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;
use std::ffi::{c_char, c_int, CStr};

static POOLED_RESERVE: GucSetting<i32> = GucSetting::<i32>::new(0);
static DIRECT_RESERVE: GucSetting<i32> = GucSetting::<i32>::new(0);

type ClientAuthenticationHook = Option<unsafe extern "C-unwind" fn(*mut pg_sys::Port, c_int)>;

extern "C-unwind" {
    /// libpq/auth.h (pgrx does not bind it).
    static mut ClientAuthentication_hook: ClientAuthenticationHook;
}

static mut PREVIOUS: ClientAuthenticationHook = None;

/// The start of PostgreSQL 15's `Port` (libpq/libpq-be.h) up to `user_name`: pgrx leaves the
/// struct opaque, and admission needs the socket's family and the login's name. Checked field
/// by field against the 15 headers; [`install`] refuses other versions.
#[repr(C)]
struct PortStart {
    sock: c_int,
    noblock: bool,
    proto: u32,
    laddr: pg_sys::SockAddr,
    raddr: pg_sys::SockAddr,
    remote_host: *mut c_char,
    remote_hostname: *mut c_char,
    remote_hostname_resolv: c_int,
    remote_hostname_errcode: c_int,
    remote_port: *mut c_char,
    can_accept_connections: c_int,
    database_name: *mut c_char,
    user_name: *mut c_char,
}

const AF_UNIX: u16 = 1;

pub fn define_settings() {
    GucRegistry::define_int_guc(
        c"dl_tenancy.pooled_reserve",
        c"Connection slots workspace logins through the pooler leave free.",
        c"Below it, their logins get 57P03 and PgBouncer queues their clients until a slot frees up. 0: off.",
        &POOLED_RESERVE,
        0,
        10_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"dl_tenancy.direct_reserve",
        c"Connection slots workspace logins connecting directly leave free.",
        c"Below it, their logins get 53300; the rest is the platform's. 0: off.",
        &DIRECT_RESERVE,
        0,
        10_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
}

/// Installs the hook (from `_PG_init` while shared_preload_libraries is processed). Only
/// against PostgreSQL 15, whose `Port` [`PortStart`] mirrors: another version's struct may
/// differ, and a misread login name would turn admission off silently.
pub fn install() {
    if cfg!(not(feature = "pg15")) {
        pgrx::warning!(
            "dl_tenancy: connection admission needs PostgreSQL 15's Port layout; not installed"
        );
        return;
    }
    // SAFETY: the postmaster loads the library once, single-threaded, before any backend.
    unsafe {
        PREVIOUS = ClientAuthentication_hook;
        ClientAuthentication_hook = Some(admit);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn admit(port: *mut pg_sys::Port, status: c_int) {
    if let Some(previous) = PREVIOUS {
        previous(port, status);
    }
    let (pooled, direct) = (POOLED_RESERVE.get(), DIRECT_RESERVE.get());
    if status != pg_sys::STATUS_OK as c_int || (pooled == 0 && direct == 0) || port.is_null() {
        return;
    }
    let start = &*(port as *const PortStart);
    if start.user_name.is_null() || !is_workspace_login(CStr::from_ptr(start.user_name)) {
        return;
    }
    let through_pooler = start.raddr.addr.ss_family == AF_UNIX;
    if through_pooler {
        if pooled > 0 && !pg_sys::HaveNFreeProcs(pooled) {
            // Not in the server log: PgBouncer retries every server_login_retry for each pool
            // with clients waiting, and a line each would fill the log during a long burst.
            // The waiting shows in the pooler (SHOW POOLS, serve's metrics).
            pg_sys::log_min_messages = pg_sys::PANIC as c_int;
            ereport!(
                PgLogLevel::FATAL,
                PgSqlErrorCode::ERRCODE_CANNOT_CONNECT_NOW,
                "the server's connection slots for pooled workspaces are taken; retry",
                "PgBouncer retries and its clients wait in the pool's queue."
            );
        }
    } else if direct > 0 && !pg_sys::HaveNFreeProcs(direct) {
        ereport!(
            PgLogLevel::FATAL,
            PgSqlErrorCode::ERRCODE_TOO_MANY_CONNECTIONS,
            "the server's connection slots for workspaces are taken",
            "Retry later, or use the pooled URI: its clients wait for a free slot."
        );
    }
}

/// A workspace login: a member of one of the extension's tenant groups, not a superuser, not
/// a platform load login. Reads only shared catalogs (authentication already did).
unsafe fn is_workspace_login(name: &CStr) -> bool {
    if name.to_bytes().ends_with(b"_load") {
        return false;
    }
    let role = pg_sys::get_role_oid(name.as_ptr(), true);
    if role == pg_sys::InvalidOid || pg_sys::superuser_arg(role) {
        return false;
    }
    [c"dl_tenant_read", c"dl_tenant_override"]
        .iter()
        .any(|group| {
            let group = pg_sys::get_role_oid(group.as_ptr(), true);
            group != pg_sys::InvalidOid && pg_sys::is_member_of_role(role, group)
        })
}
