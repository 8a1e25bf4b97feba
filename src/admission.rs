//! Admission: the server's connection slots shared between the platform and its tenants. With
//! the library in `shared_preload_libraries`, a workspace login (a member of `dl_tenant_read`
//! or `dl_tenant_override`, not a superuser, not a `<database>_load` login) is counted, by
//! the way it arrives, against one of two caps the server keeps in shared memory:
//!
//! - through the pooler (a unix-socket login: PgBouncer runs beside the server; tenants reach
//!   the server over TCP only): at most `dl_tenancy.pooled_slots` sessions together. Past it
//!   the login is refused with 57P03 (`cannot_connect_now`), which PgBouncer takes as "try
//!   again" (with scripts/pgbouncer/57P03-is-temporary.patch for every client of the pool):
//!   its clients wait in the pool's queue (up to its `query_wait_timeout`) instead of failing;
//! - directly: at most `dl_tenancy.direct_slots` sessions together; past it 53300.
//!
//! Two caps, not one reserve of free slots: idle direct sessions of a few workspaces cannot
//! take the slots the pooler's budget counts on, nor a pooled burst the direct logins'. What
//! neither cap covers belongs to the platform (the tool, `serve`, the runtime, an operator)
//! and to the pooler's own `auth_query` logins. 0 turns a cap off.
//!
//! The refusals are counted per database, and `SHOW dl_tenancy.admission` (superusers only)
//! shows both caps, the sessions counted against them and those counts, as JSON. Each admitted
//! workspace session also gets its memory share (`dl_tenancy.session_memory_mb`).

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgAtomic, PgLwLock};
use std::ffi::{c_char, c_int, CStr, CString};
use std::fmt::Write;
use std::sync::atomic::{AtomicI32, Ordering};

static POOLED_SLOTS: GucSetting<i32> = GucSetting::<i32>::new(0);
static DIRECT_SLOTS: GucSetting<i32> = GucSetting::<i32>::new(0);
static FIGURES: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static SESSION_MEMORY_MB: GucSetting<i32> = GucSetting::<i32>::new(0);
/// This process's memory is capped already.
static FENCED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

// SAFETY (the three): names no other library uses.
static POOLED: PgAtomic<AtomicI32> = unsafe { PgAtomic::new(c"dl_tenancy.admission.pooled") };
static DIRECT: PgAtomic<AtomicI32> = unsafe { PgAtomic::new(c"dl_tenancy.admission.direct") };
static REFUSED: PgLwLock<[Refusals; REFUSAL_ENTRIES]> =
    unsafe { PgLwLock::new(c"dl_tenancy.admission.refused") };

/// Databases whose refusals are counted (a server of 1,000 workspaces fills a quarter); past
/// it, refusals of further databases are not counted, the refusals themselves still happen.
const REFUSAL_ENTRIES: usize = 4096;

/// Refusals of one database since the server started.
#[derive(Clone, Copy)]
struct Refusals {
    /// The database's name, NUL-padded (NAMEDATALEN is 64); all zeros: a free entry.
    database: [u8; 64],
    pooled: u64,
    direct: u64,
    /// Direct workspace sessions on it now.
    direct_sessions: u32,
}

// SAFETY: plain bytes and integers, no pointers.
unsafe impl PGRXSharedMemory for Refusals {}

const FREE: Refusals = Refusals {
    database: [0; 64],
    pooled: 0,
    direct: 0,
    direct_sessions: 0,
};

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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    Pooled = 1,
    Direct = 2,
}

pub fn define_settings() {
    GucRegistry::define_int_guc(
        c"dl_tenancy.pooled_slots",
        c"Sessions workspace logins may hold through the pooler, all workspaces together.",
        c"Past it, their logins get 57P03 and PgBouncer queues their clients until one ends. 0: no cap.",
        &POOLED_SLOTS,
        0,
        100_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"dl_tenancy.direct_slots",
        c"Sessions workspace logins may hold connecting directly, all workspaces together.",
        c"Past it, their logins get 53300. 0: no cap.",
        &DIRECT_SLOTS,
        0,
        100_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"dl_tenancy.session_memory_mb",
        c"Memory a workspace login's session may allocate beyond what it starts with, in MB.",
        c"Past it, the allocation fails with 53200 in that session alone (RLIMIT_DATA), instead of the OOM killer restarting the server. 0: no limit.",
        &SESSION_MEMORY_MB,
        0,
        1_048_576,
        GucContext::Sighup,
        GucFlags::UNIT_MB,
    );
}

/// Installs the hook, the shared counters and `dl_tenancy.admission` (from `_PG_init` while
/// shared_preload_libraries is processed). The hook only against PostgreSQL 15, whose `Port`
/// [`PortStart`] mirrors: another version's struct may differ, and a misread login name would
/// turn admission off silently.
pub fn install() {
    pg_shmem_init!(POOLED);
    pg_shmem_init!(DIRECT);
    pg_shmem_init!(REFUSED = [FREE; REFUSAL_ENTRIES]);
    crate::define_figures(
        c"dl_tenancy.admission",
        c"Workspace sessions and refusals by the way they arrive (JSON; superusers only).",
        &FIGURES,
        show_figures,
    );
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
    if status != pg_sys::STATUS_OK as c_int || port.is_null() {
        return;
    }
    let start = &*(port as *const PortStart);
    if start.user_name.is_null() || !is_workspace_login(CStr::from_ptr(start.user_name)) {
        return;
    }
    fence_memory_once();
    crate::locks::fence();
    crate::logins::mark_tenant_session();
    let way = if start.raddr.addr.ss_family == AF_UNIX {
        Way::Pooled
    } else {
        Way::Direct
    };
    let (sessions, cap) = match way {
        Way::Pooled => (POOLED.get(), POOLED_SLOTS.get()),
        Way::Direct => (DIRECT.get(), DIRECT_SLOTS.get()),
    };
    if cap == 0 {
        return;
    }
    // The database's name as the login gave it, not looked up: pg_hba (`samerole`) let a
    // workspace login in only into the database named like its workspace's role, so names
    // cannot be made up; and a lookup here (a scan of pg_database under a lock, which processes
    // pending invalidations before a database is selected) made logins of a burst end with
    // "cannot read pg_class without having selected a database".
    let database =
        (!start.database_name.is_null()).then(|| CStr::from_ptr(start.database_name).to_bytes());
    if take_slot(sessions, cap) {
        // A direct login also within its database's share of what is free.
        let entry = match (way, database) {
            (Way::Direct, Some(name)) => match enter_direct(name, cap, sessions) {
                Ok(entry) => entry,
                Err(()) => {
                    sessions.fetch_sub(1, Ordering::AcqRel);
                    count_refusal(name, way);
                    refuse(way);
                }
            },
            _ => NO_ENTRY,
        };
        // Given back when the session ends, however it ends (a crash resets shared memory).
        let arg = entry * 4 + way as usize;
        pg_sys::before_shmem_exit(Some(give_back), pg_sys::Datum::from(arg));
        return;
    }
    if let Some(name) = database {
        count_refusal(name, way);
    }
    refuse(way);
}

/// No entry of the table: the session counts against the cap alone.
const NO_ENTRY: usize = REFUSAL_ENTRIES;

/// A direct session of `name`'s database, within its share: while a database holds 2 or
/// more, it may hold no more than the cap has free, so idle sessions of a few workspaces
/// cannot take every direct slot from the others. The entry's index, or none past the share.
fn enter_direct(name: &[u8], cap: i32, sessions: &AtomicI32) -> Result<usize, ()> {
    let mut table = REFUSED.exclusive();
    let Some(i) = entry_of(&mut table, name) else {
        return Ok(NO_ENTRY);
    };
    let held = table[i].direct_sessions as i32;
    // `sessions` already counts this one.
    let free = cap - sessions.load(Ordering::Acquire) + 1;
    if held >= 2 && held >= free {
        return Err(());
    }
    table[i].direct_sessions += 1;
    Ok(i)
}

/// The FATAL of a refused login.
unsafe fn refuse(way: Way) -> ! {
    match way {
        Way::Pooled => {
            // Not in the server log: PgBouncer retries every server_login_retry for each pool
            // with clients waiting, and a line each would fill the log during a long burst.
            // The waiting shows in the pooler (SHOW POOLS) and serve's metrics.
            pg_sys::log_min_messages = pg_sys::PANIC as c_int;
            ereport!(
                PgLogLevel::FATAL,
                PgSqlErrorCode::ERRCODE_CANNOT_CONNECT_NOW,
                "the server's connection slots for pooled workspaces are taken; retry",
                "PgBouncer retries and its clients wait in the pool's queue."
            );
        }
        Way::Direct => ereport!(
            PgLogLevel::FATAL,
            PgSqlErrorCode::ERRCODE_TOO_MANY_CONNECTIONS,
            "the server's connection slots for direct workspace logins are taken",
            "Retry later, or use the pooled URI: its clients wait for a free slot."
        ),
    }
    unreachable!("a FATAL does not return")
}

/// Caps the session's private memory (heap and anonymous mappings, not shared memory) at what
/// it holds now plus `dl_tenancy.session_memory_mb`: past it malloc fails, and PostgreSQL
/// answers the query with 53200 `out of memory` and the session goes on. One tenant query
/// within `work_mem` (an `array_agg` of large values) otherwise grew to gigabytes and the
/// OOM killer restarted the whole server.
pub fn fence_memory_once() {
    if FENCED.swap(true, Ordering::AcqRel) {
        return;
    }
    let share = i64::from(SESSION_MEMORY_MB.get()) * 1024 * 1024;
    if share <= 0 {
        return;
    }
    let Some(now) = data_bytes() else {
        pgrx::warning!("dl_tenancy: cannot read this session's memory; not limited");
        return;
    };
    let limit = (now + share) as libc::rlim_t;
    let lim = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: a system call on a local struct, for this process only.
    if unsafe { libc::setrlimit(libc::RLIMIT_DATA, &lim) } != 0 {
        pgrx::warning!("dl_tenancy: cannot limit this session's memory");
    }
}

/// A workspace session's settings must not let one statement's memory outside its share pass
/// it: a parallel hash join builds its hash table in dynamic shared memory, which RLIMIT_DATA
/// does not count, up to `work_mem` × `hash_mem_multiplier` for each process of the query;
/// an index build's parallel workers sort in `maintenance_work_mem` (shared out among its
/// processes), outside the session. All are settable by any session. Checked as each
/// statement starts, in tenant sessions.
pub fn check_memory_settings() {
    let share_kb = f64::from(SESSION_MEMORY_MB.get()) * 1024.0;
    // SAFETY: a read of this backend's setting.
    let maintenance_kb = f64::from(unsafe { pg_sys::maintenance_work_mem });
    if share_kb > 0.0 && maintenance_kb > share_kb {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            "maintenance_work_mem is larger than a workspace session's memory share",
            "dl_tenancy::admission",
        )
        .set_detail(format!(
            "maintenance_work_mem is {:.0} MB; the session's memory share is {:.0} MB \
             (dl_tenancy.session_memory_mb), and an index build's parallel workers use it \
             outside the share.",
            maintenance_kb / 1024.0,
            share_kb / 1024.0
        ))
        .set_hint("Lower maintenance_work_mem.")
        .report(PgLogLevel::ERROR);
    }
    // SAFETY: reads of this backend's settings.
    let (work_mem_kb, multiplier, workers, parallel_hash) = unsafe {
        (
            f64::from(pg_sys::work_mem),
            pg_sys::hash_mem_multiplier,
            pg_sys::max_parallel_workers_per_gather.min(pg_sys::max_parallel_workers),
            pg_sys::enable_parallel_hash,
        )
    };
    if share_kb <= 0.0 || workers <= 0 || !parallel_hash {
        return;
    }
    let shared_kb = work_mem_kb * multiplier * f64::from(workers + 1);
    if shared_kb > share_kb {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            "work_mem is too large for a parallel query of a workspace session",
            "dl_tenancy::admission",
        )
        .set_detail(format!(
            "work_mem × hash_mem_multiplier × {} processes is {:.0} MB of shared memory, past the \
             session's memory share of {:.0} MB (dl_tenancy.session_memory_mb).",
            workers + 1,
            shared_kb / 1024.0,
            share_kb / 1024.0
        ))
        .set_hint(
            "Lower work_mem or hash_mem_multiplier, or SET max_parallel_workers_per_gather = 0 \
             for a query that needs more memory.",
        )
        .report(PgLogLevel::ERROR);
    }
}

/// `VmData` of this process: what RLIMIT_DATA counts.
fn data_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmData:"))?;
    let kb: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// One more session below `cap`, or none.
fn take_slot(sessions: &AtomicI32, cap: i32) -> bool {
    sessions
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < cap).then_some(n + 1)
        })
        .is_ok()
}

#[pg_guard]
unsafe extern "C-unwind" fn give_back(_code: c_int, arg: pg_sys::Datum) {
    let (entry, way) = (arg.value() / 4, arg.value() % 4);
    if way == Way::Pooled as usize {
        POOLED.get().fetch_sub(1, Ordering::AcqRel);
        return;
    }
    if entry < REFUSAL_ENTRIES {
        let mut table = REFUSED.exclusive();
        table[entry].direct_sessions = table[entry].direct_sessions.saturating_sub(1);
    }
    DIRECT.get().fetch_sub(1, Ordering::AcqRel);
}

/// FNV-1a: where a database's entry starts its search.
fn slot_of(name: &[u8]) -> usize {
    let hash = name.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % REFUSAL_ENTRIES as u64) as usize
}

/// The index of `name`'s entry, made if need be; none when the table is full.
fn entry_of(table: &mut [Refusals; REFUSAL_ENTRIES], name: &[u8]) -> Option<usize> {
    let name = &name[..name.len().min(63)];
    if name.is_empty() {
        return None;
    }
    let first = slot_of(name);
    for i in 0..REFUSAL_ENTRIES {
        let at = (first + i) % REFUSAL_ENTRIES;
        let entry = &mut table[at];
        let free = entry.database[0] == 0;
        if free {
            entry.database[..name.len()].copy_from_slice(name);
        }
        if free || stored_name(&entry.database) == name {
            return Some(at);
        }
    }
    None
}

fn count_refusal(name: &[u8], way: Way) {
    let mut table = REFUSED.exclusive();
    if let Some(i) = entry_of(&mut table, name) {
        match way {
            Way::Pooled => table[i].pooled += 1,
            Way::Direct => table[i].direct += 1,
        }
    }
}

fn json_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn stored_name(database: &[u8; 64]) -> &[u8] {
    let end = database.iter().position(|b| *b == 0).unwrap_or(64);
    &database[..end]
}

/// `SHOW dl_tenancy.admission`: the caps, the sessions counted against them, and the refusals
/// per database (names of databases that exist: ours, `dlw_...`).
#[pg_guard]
unsafe extern "C-unwind" fn show_figures() -> *const c_char {
    let mut out = String::new();
    let _ = write!(
        out,
        r#"{{"pooled":{{"sessions":{},"slots":{}}},"direct":{{"sessions":{},"slots":{}}},"refused":["#,
        POOLED.get().load(Ordering::Acquire),
        POOLED_SLOTS.get(),
        DIRECT.get().load(Ordering::Acquire),
        DIRECT_SLOTS.get(),
    );
    let table = REFUSED.share();
    let mut first = true;
    for entry in table.iter().filter(|e| e.database[0] != 0) {
        let name = json_escaped(&String::from_utf8_lossy(stored_name(&entry.database)));
        let _ = write!(
            out,
            r#"{}{{"database":"{}","pooled":{},"direct":{}}}"#,
            if first { "" } else { "," },
            name,
            entry.pooled,
            entry.direct
        );
        first = false;
    }
    drop(table);
    out.push_str("]}");
    let text = CString::new(out).unwrap_or_default();
    pg_sys::pstrdup(text.as_ptr())
}

/// A workspace login: a member of one of the extension's tenant groups, not a superuser, not
/// a platform load login. Reads only shared catalogs (authentication already did).
unsafe fn is_workspace_login(name: &CStr) -> bool {
    !name.to_bytes().ends_with(b"_load")
        && crate::logins::in_tenant_groups(pg_sys::get_role_oid(name.as_ptr(), true))
}
