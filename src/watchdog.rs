//! The watchdog: a background worker, started when the library is in
//! `shared_preload_libraries`, that ends sessions a tenant must no longer have, whether or not
//! the platform's `serve` process runs:
//!
//! - sessions of retired logins: `NOLOGIN`, or `VALID UNTIL` passed. `rotate --grace` sets the
//!   old login's VALID UNTIL to the end of the grace period, and PostgreSQL checks VALID UNTIL
//!   only when a session starts, so the open ones end here within an interval of it;
//! - transactions open longer than `dl_tenancy.transaction_limit`, whatever the tenant set in
//!   its session (`idle_in_transaction_session_timeout = 0`, `statement_timeout = 0`).
//!   PostgreSQL 15 has no `transaction_timeout`, and an open transaction holds back vacuum and
//!   logical slot creation for the whole server.
//!
//! A workspace login is a member (recursively) of `dl_tenant_read` or `dl_tenant_override`,
//! not a superuser, and not the platform's restore login (`<database>_load`). The worker reads
//! only shared catalogs, so it can sit in any database (`dl_tenancy.watchdog_database`); where
//! the extension's roles do not exist it finds nothing.

use crate::quota;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;
use std::ffi::CString;
use std::time::Duration;

static DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
static INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(1000);
static TRANSACTION_LIMIT_MS: GucSetting<i32> = GucSetting::<i32>::new(300_000);

/// How long the postmaster waits before starting the worker again after it ended: it never
/// stays gone, also not after a `pg_terminate_backend` of it.
const RESTART: Duration = Duration::from_secs(5);

/// One pass: ends the sessions and returns (pid, login, why) for each. Only catalogs, with a
/// short lock_timeout so that a pass never hangs on a busy catalog. `ending` is
/// MATERIALIZED: inlined, its conditions and `pg_terminate_backend` would become quals of one
/// scan of pg_stat_activity, which the planner may evaluate in any order: it then ended the
/// server's own processes, the platform's sessions and the worker itself.
const END_SESSIONS: &str = concat!(
    crate::logins::workspace_logins_cte!(),
    r#", ending AS MATERIALIZED (
    SELECT a.pid, r.rolname::text AS rolname,
           CASE WHEN NOT r.rolcanlogin THEN 'the login is NOLOGIN'
                WHEN r.rolvaliduntil <= pg_catalog.now() THEN 'the login is past its VALID UNTIL'
                ELSE 'its transaction was open longer than dl_tenancy.transaction_limit'
           END AS reason
      FROM pg_catalog.pg_stat_activity AS a
      JOIN pg_catalog.pg_authid AS r ON r.oid = a.usesysid
     WHERE a.backend_type = 'client backend'
       AND a.pid <> pg_catalog.pg_backend_pid()
       AND r.oid IN (SELECT oid FROM workspace_login)
       AND NOT r.rolsuper
       AND r.rolname NOT LIKE '%\_load'
       AND (NOT r.rolcanlogin
            OR r.rolvaliduntil <= pg_catalog.now()
            OR ($1 > 0 AND a.xact_start < pg_catalog.now() - $1::float8 * interval '1 millisecond'))
)
SELECT pid, rolname, reason FROM ending WHERE pg_catalog.pg_terminate_backend(pid)
"#
);

/// The SIGHUP settings are defined whenever the library loads, so that `SHOW` works in every
/// session; the database only with shared_preload_libraries (PostgreSQL refuses a
/// PGC_POSTMASTER setting defined after startup, with a FATAL).
pub(crate) fn define_settings(preloading: bool) {
    if preloading {
        GucRegistry::define_string_guc(
            c"dl_tenancy.watchdog_database",
            c"Database the dl_tenancy watchdog connects to.",
            c"It reads only shared catalogs, so any database will do.",
            &DATABASE,
            GucContext::Postmaster,
            GucFlags::default(),
        );
    }
    GucRegistry::define_int_guc(
        c"dl_tenancy.watchdog_interval",
        c"Time between two passes of the dl_tenancy watchdog.",
        c"",
        &INTERVAL_MS,
        10,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"dl_tenancy.transaction_limit",
        c"Longest transaction of a workspace login; the dl_tenancy watchdog ends its session.",
        c"0 turns the limit off.",
        &TRANSACTION_LIMIT_MS,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
}

/// Registers the worker (from `_PG_init` while shared_preload_libraries is processed).
pub(crate) fn register() {
    BackgroundWorkerBuilder::new("dl_tenancy watchdog")
        .set_type("dl_tenancy watchdog")
        .set_library("dl_tenancy")
        .set_function("dl_tenancy_watchdog_main")
        .enable_spi_access()
        .set_restart_time(Some(RESTART))
        .load();
}

fn end_sessions() -> Vec<(i32, String, String)> {
    let limit = TRANSACTION_LIMIT_MS.get();
    // statement_timeout is never armed for a background worker's SPI; lock_timeout is, and a
    // pass only waits on locks (a tenant cannot hold one on these catalogs: the guard).
    Spi::run("SET LOCAL lock_timeout = '5s'; SET LOCAL search_path = pg_catalog, pg_temp")
        .unwrap_or_else(|e| error!("dl_tenancy watchdog: {e}"));
    Spi::connect(|client| {
        let rows = client
            .select(END_SESSIONS, None, &[limit.into()])
            .unwrap_or_else(|e| error!("dl_tenancy watchdog: {e}"));
        rows.map(|row| {
            let pid = row.get::<i32>(1).ok().flatten().unwrap_or_default();
            let login = row.get::<String>(2).ok().flatten().unwrap_or_default();
            let reason = row.get::<String>(3).ok().flatten().unwrap_or_default();
            (pid, login, reason)
        })
        .collect()
    })
}

/// The worker's main function. An ERROR ends the process and the postmaster starts it again
/// after [`RESTART`]; so does SIGTERM (exit code 1: a worker that exits with 0 is never
/// restarted), unless the whole server is shutting down.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn dl_tenancy_watchdog_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = DATABASE
        .get()
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_else(|| "postgres".into());
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    log!("dl_tenancy watchdog: started in database {database}");
    loop {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        for (pid, login, reason) in BackgroundWorker::transaction(end_sessions) {
            log!("dl_tenancy watchdog: ended session {pid} of {login}: {reason}");
        }
        for (database, from, to, bytes, limit) in BackgroundWorker::transaction(quota::measure) {
            log!(
                "dl_tenancy watchdog: database {database} went from {} to {} of its storage quota ({bytes} of {limit} bytes)",
                from.name(),
                to.name()
            );
        }
        crate::tempfiles::enforce();
        if let Some((low, free, floor)) = crate::disk::check() {
            let mb = |b: u64| b / (1024 * 1024);
            if low {
                warning!(
                    "dl_tenancy watchdog: the server's disk has {} MB free, below dl_tenancy.disk_floor_mb ({} MB): every workspace's writes are refused until it has {} MB free",
                    mb(free), mb(floor), mb(floor + floor / 5)
                );
            } else {
                log!("dl_tenancy watchdog: the server's disk has {} MB free again: workspaces' writes run", mb(free));
            }
        }
        let interval = Duration::from_millis(INTERVAL_MS.get().max(10) as u64);
        if !BackgroundWorker::wait_latch(Some(interval)) {
            break;
        }
    }
    log!(
        "dl_tenancy watchdog: stopping on SIGTERM; restarted in {}s unless the server shuts down",
        RESTART.as_secs()
    );
    unsafe { pg_sys::proc_exit(1) }
}
