//! Temporary files per workspace, in total. `temp_file_limit` bounds one process: a workspace's
//! 20 sessions, each sorting within it, filled the shared disk (issue 21). The watchdog, every
//! pass, lists the server's temporary files (`base/pgsql_tmp` and each tablespace's
//! `PG_15_*/pgsql_tmp`: files `pgsql_tmp<pid>.<n>` and shared filesets
//! `pgsql_tmp<pid>.<n>.fileset/`), adds them up by session (a parallel worker's to its leader)
//! and, for a workspace database whose tenant sessions hold more than its limit together,
//! cancels the statements of the biggest holders until it is under.
//!
//! The limit is `dl_tenancy.temp_limit_mb`: the server's value, or the database's own
//! (`ALTER DATABASE ... SET`, a superuser setting, so no tenant raises it). A cancelled
//! statement fails with 53100 naming the limit: the watchdog flags the session in shared
//! memory before it signals it, and the session's error hook reports its cancel as that. A
//! session whose files outlive the cancel of its statement (a `WITH HOLD` cursor), or that
//! holds them between statements, is ended instead. Between two passes a workspace can write
//! past the limit what its sessions write in one interval, each at most its `temp_file_limit`.
//!
//! The directory is read from Rust (the worker runs in the data directory): `pg_ls_tmpdir()`
//! lists one tablespace per call and no fileset's contents. Only the platform's statistics and
//! catalogs are queried; no tenant object is evaluated.

use pgrx::bgworkers::BackgroundWorker;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static LIMIT_MB: GucSetting<i32> = GucSetting::<i32>::new(0);

/// Sessions flagged at once; past it a cancel still happens, reported as plain 57014.
const FLAG_SLOTS: usize = 256;

/// How long a flag explains a cancel: a cancel that reached a session between two statements
/// is dropped by PostgreSQL, and its flag must not explain a later one of the tenant's own.
const FLAG_TTL_US: i64 = 10_000_000;

/// How long a cancelled statement has to remove its files before its session is ended.
const GRACE: Duration = Duration::from_secs(3);

// SAFETY: a name no other library uses.
static FLAGS: PgLwLock<[Flag; FLAG_SLOTS]> = unsafe { PgLwLock::new(c"dl_tenancy.tempfiles") };

/// Whether this process has the shared flags (the library is in shared_preload_libraries).
static SHARED: AtomicBool = AtomicBool::new(false);

/// A session the watchdog is cancelling or ending for its workspace's temporary files.
#[derive(Clone, Copy)]
struct Flag {
    /// 0: a free slot.
    pid: i32,
    /// The session's start (its `MyStartTimestamp`): a pid can be reused.
    started: i64,
    /// When the watchdog flagged it (TimestampTz).
    at: i64,
    limit: i64,
    total: i64,
    ended: bool,
}

// SAFETY: plain integers.
unsafe impl PGRXSharedMemory for Flag {}

const FREE: Flag = Flag {
    pid: 0,
    started: 0,
    at: 0,
    limit: 0,
    total: 0,
    ended: false,
};

/// The setting (every process, so that `ALTER DATABASE ... SET` checks it); with
/// shared_preload_libraries the shared flags and the sessions' error hook.
pub(crate) fn init(preloading: bool) {
    GucRegistry::define_int_guc(
        c"dl_tenancy.temp_limit_mb",
        c"Temporary files a workspace's sessions may hold together, in MB.",
        c"Past it, the dl_tenancy watchdog cancels the statements of its biggest holders (53100). Per database with ALTER DATABASE; 0: no limit.",
        &LIMIT_MB,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_MB,
    );
    if preloading {
        pg_shmem_init!(FLAGS = [FREE; FLAG_SLOTS]);
        SHARED.store(true, Ordering::Release);
        // SAFETY: the postmaster loads the library once, single-threaded, before any backend.
        // Installed before logbound's hook, which calls this one first and then measures the
        // message as rewritten here.
        unsafe {
            PREVIOUS_EMIT_LOG = pg_sys::emit_log_hook;
            pg_sys::emit_log_hook = Some(emit_log);
        }
    }
}

/// Temporary files of one process: bytes, and the names of its files and filesets.
#[derive(Default, Debug)]
struct Held {
    bytes: i64,
    files: Vec<String>,
}

/// The tablespaces' temporary directories (pg_default's first), relative to the data directory.
fn temp_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("base/pgsql_tmp")];
    let version = format!(
        "PG_{}_{}",
        pg_sys::PG_MAJORVERSION.to_string_lossy(),
        pg_sys::CATALOG_VERSION_NO
    );
    if let Ok(links) = std::fs::read_dir("pg_tblspc") {
        for link in links.flatten() {
            dirs.push(link.path().join(&version).join("pgsql_tmp"));
        }
    }
    dirs
}

/// The pid a temporary file's name starts with: `pgsql_tmp<pid>.<n>[.fileset]`.
fn pid_of(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("pgsql_tmp")?;
    rest.split('.').next()?.parse().ok().filter(|pid| *pid > 0)
}

/// Bytes under `path`: a file's length, a fileset directory's files (which a parallel
/// query's workers write into its creator's set).
fn bytes_under(path: &Path, depth: u8) -> i64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0; // removed meanwhile
    };
    if meta.is_file() {
        return meta.len() as i64;
    }
    if !meta.is_dir() || depth == 0 {
        return 0;
    }
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| bytes_under(&e.path(), depth - 1))
                .sum()
        })
        .unwrap_or(0)
}

/// Every process's temporary files now.
fn scan() -> HashMap<i32, Held> {
    let mut held: HashMap<i32, Held> = HashMap::new();
    for dir in temp_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = pid_of(&name) else { continue };
            let h = held.entry(pid).or_default();
            h.bytes += bytes_under(&entry.path(), 2);
            h.files.push(entry.path().to_string_lossy().into_owned());
        }
    }
    held
}

/// For the given pids that hold temporary files: the session each belongs to (a parallel
/// worker's leader), when that session started, its database, whether it runs a statement,
/// and its database's limit in bytes (its own setting, else `$2`, the server's). Tenant
/// sessions only: workspace logins, not superusers, not a `<database>_load` login.
const SESSIONS: &str = concat!(
    crate::logins::workspace_logins_cte!(),
    r#", holder AS MATERIALIZED (
    SELECT a.pid, coalesce(a.leader_pid, a.pid) AS session
      FROM pg_catalog.pg_stat_activity AS a
     WHERE a.pid = ANY ($1::int4[])
       AND a.backend_type IN ('client backend', 'parallel worker')
)
SELECT h.pid, h.session,
       ((pg_catalog.extract('epoch', l.backend_start) * 1000000)::int8 - 946684800000000),
       l.datid::int8, d.datname::text, l.state = 'active',
       coalesce(q.mb, $2::int8) * 1048576
  FROM holder AS h
  JOIN pg_catalog.pg_stat_activity AS l
    ON l.pid = h.session AND l.backend_type = 'client backend'
  JOIN pg_catalog.pg_authid AS r ON r.oid = l.usesysid
  JOIN pg_catalog.pg_database AS d ON d.oid = l.datid
  LEFT JOIN LATERAL (
        SELECT pg_catalog.split_part(c, '=', 2)::int8 AS mb
          FROM pg_catalog.pg_db_role_setting AS s, pg_catalog.unnest(s.setconfig) AS c
         WHERE s.setdatabase = d.oid AND s.setrole = 0
           AND c ~ '^dl_tenancy\.temp_limit_mb=[0-9]{1,9}$'
         LIMIT 1
       ) AS q ON true
 WHERE r.oid IN (SELECT oid FROM workspace_login)
   AND NOT r.rolsuper AND r.rolname NOT LIKE '%\_load'
"#
);

/// A tenant session holding temporary files, its parallel workers' included.
#[derive(Debug, Clone, PartialEq)]
struct Session {
    pid: i32,
    started: i64,
    database: u32,
    datname: String,
    active: bool,
    limit: i64,
    bytes: i64,
    files: Vec<String>,
}

/// A session the watchdog acted on, as it remembers it (its own process only).
#[derive(Debug, Clone)]
struct Acted {
    started: i64,
    at: Instant,
    files: HashSet<String>,
    ended: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Cancel,
    End,
    /// Acted on already, within its grace: counted as going away.
    Wait,
}

thread_local! {
    static ACTED: std::cell::RefCell<HashMap<i32, Acted>> = std::cell::RefCell::new(HashMap::new());
}

/// The watchdog's pass: nothing but a directory listing while no process holds a temporary
/// file; otherwise, in a transaction of its own, finds each workspace over its limit and acts.
pub(crate) fn enforce() {
    if !SHARED.load(Ordering::Acquire) {
        return;
    }
    let held = scan();
    if held.is_empty() {
        ACTED.with_borrow_mut(|acted| acted.clear());
        return;
    }
    BackgroundWorker::transaction(|| {
        let sessions = sessions(&held);
        let now = Instant::now();
        let plan = ACTED.with_borrow(|acted| plan(&sessions, acted, now));
        ACTED.with_borrow_mut(|acted| {
            acted.retain(|pid, _| sessions.iter().any(|s| s.pid == *pid));
        });
        for (session, action, total) in plan {
            act(&session, action, total, now);
        }
    });
}

/// The tenant sessions among the processes holding files.
fn sessions(held: &HashMap<i32, Held>) -> Vec<Session> {
    // As the watchdog's other passes: never waiting long on a lock, nothing of a tenant's on
    // the path.
    Spi::run("SET LOCAL lock_timeout = '5s'; SET LOCAL search_path = pg_catalog, pg_temp")
        .unwrap_or_else(|e| error!("dl_tenancy watchdog: {e}"));
    let pids: Vec<i32> = held.keys().copied().collect();
    // The server's value as this worker sees it: postgresql.conf, unless its own database or
    // role has one of their own.
    let server_limit = i64::from(LIMIT_MB.get());
    let mut sessions: Vec<Session> = vec![];
    Spi::connect(|client| {
        let rows = client
            .select(SESSIONS, None, &[pids.into(), server_limit.into()])
            .unwrap_or_else(|e| error!("dl_tenancy watchdog: {e}"));
        for row in rows {
            let get = |i: usize| row.get::<i64>(i).ok().flatten().unwrap_or_default();
            let pid = row.get::<i32>(1).ok().flatten().unwrap_or_default();
            let session = row.get::<i32>(2).ok().flatten().unwrap_or_default();
            let Some(h) = held.get(&pid) else { continue };
            let i = match sessions.iter().position(|s| s.pid == session) {
                Some(i) => i,
                None => {
                    sessions.push(Session {
                        pid: session,
                        started: get(3),
                        database: get(4) as u32,
                        datname: row.get::<String>(5).ok().flatten().unwrap_or_default(),
                        active: row.get::<bool>(6).ok().flatten().unwrap_or_default(),
                        limit: get(7),
                        bytes: 0,
                        files: vec![],
                    });
                    sessions.len() - 1
                }
            };
            sessions[i].bytes += h.bytes;
            sessions[i].files.extend(h.files.iter().cloned());
        }
    });
    sessions
}

/// For each workspace database over its limit, its biggest holders first, until what is left
/// is within it: (session, action, the workspace's total when it was judged).
fn plan(
    sessions: &[Session],
    acted: &HashMap<i32, Acted>,
    now: Instant,
) -> Vec<(Session, Action, i64)> {
    let mut databases: Vec<u32> = sessions.iter().map(|s| s.database).collect();
    databases.sort_unstable();
    databases.dedup();
    let mut plan = vec![];
    for database in databases {
        let mut mine: Vec<&Session> = sessions.iter().filter(|s| s.database == database).collect();
        let total: i64 = mine.iter().map(|s| s.bytes).sum();
        let limit = mine[0].limit;
        if limit <= 0 || total <= limit {
            continue;
        }
        mine.sort_by_key(|s| std::cmp::Reverse(s.bytes));
        let mut left = total;
        for s in mine {
            if left <= limit {
                break;
            }
            plan.push((s.clone(), action(s, acted.get(&s.pid), now), total));
            left -= s.bytes;
        }
    }
    plan
}

/// Cancel a statement; end the session when that cannot free its files: it runs none (files
/// of a cursor), or files it held at its cancel are still there past the grace.
fn action(s: &Session, before: Option<&Acted>, now: Instant) -> Action {
    let before = before.filter(|b| b.started == s.started);
    let outlived = before.is_some_and(|b| s.files.iter().any(|f| b.files.contains(f)));
    match before {
        Some(b) if outlived => {
            if b.ended || now.duration_since(b.at) < GRACE {
                Action::Wait
            } else {
                Action::End
            }
        }
        _ if !s.active => Action::End,
        _ => Action::Cancel,
    }
}

fn act(s: &Session, action: Action, total: i64, now: Instant) {
    let (signal, what) = match action {
        Action::Wait => return,
        Action::Cancel => (
            "SELECT pg_catalog.pg_cancel_backend($1)",
            format!("cancelled the statement of session {}", s.pid),
        ),
        Action::End => (
            "SELECT pg_catalog.pg_terminate_backend($1)",
            format!(
                "ended session {}, whose temporary files {},",
                s.pid,
                if s.active {
                    "outlived the cancel of its statement"
                } else {
                    "stayed between statements"
                }
            ),
        ),
    };
    let ended = action == Action::End;
    // The listing is older than the session's state: files gone since belonged to a
    // statement that ended, and a session without a statement is ended only for files that
    // are still there.
    if ended && !s.files.iter().any(|f| Path::new(f).exists()) {
        return;
    }
    raise_flag(s, total, ended);
    Spi::get_one_with_args::<bool>(signal, &[s.pid.into()])
        .unwrap_or_else(|e| error!("dl_tenancy watchdog: {e}"));
    ACTED.with_borrow_mut(|acted| {
        acted.insert(
            s.pid,
            Acted {
                started: s.started,
                at: now,
                files: s.files.iter().cloned().collect(),
                ended,
            },
        )
    });
    log!(
        "dl_tenancy watchdog: {what} in database {}: its workspace's sessions held {total} bytes of temporary files, over its limit of {} bytes (this session {} bytes)",
        s.datname,
        s.limit,
        s.bytes
    );
}

/// Marks the session before it is signalled, so that its error hook explains the signal.
fn raise_flag(s: &Session, total: i64, ended: bool) {
    // SAFETY: a plain clock read.
    let at = unsafe { pg_sys::GetCurrentTimestamp() };
    let mut flags = FLAGS.exclusive();
    let slot = flags.iter().position(|f| f.pid == s.pid).or_else(|| {
        flags
            .iter()
            .position(|f| f.pid == 0 || at - f.at > FLAG_TTL_US)
    });
    if let Some(i) = slot {
        flags[i] = Flag {
            pid: s.pid,
            started: s.started,
            at,
            limit: s.limit,
            total,
            ended,
        };
    }
}

/// This session's fresh flag, taken (cleared) so that it explains one signal only.
fn take_flag() -> Option<Flag> {
    // SAFETY: reads of the backend's own globals and the clock.
    let (pid, started, now) = unsafe {
        (
            pg_sys::MyProcPid,
            pg_sys::MyStartTimestamp,
            pg_sys::GetCurrentTimestamp(),
        )
    };
    let mut flags = FLAGS.exclusive();
    let i = flags
        .iter()
        .position(|f| f.pid == pid && f.started == started)?;
    let flag = flags[i];
    flags[i] = FREE;
    (now - flag.at <= FLAG_TTL_US).then_some(flag)
}

static mut PREVIOUS_EMIT_LOG: pg_sys::emit_log_hook_type = None;

/// The session's error hook: a cancel (57014) or an end (57P01) the watchdog flagged for
/// this session is reported as 53100 naming the workspace's limit, to the client and in the
/// server log. PostgreSQL calls it with every error it logs, before it sends it; if it is
/// not called (log_min_messages above ERROR), the tenant gets the plain 57014 and the
/// watchdog's log line says why.
#[pg_guard]
unsafe extern "C-unwind" fn emit_log(edata: *mut pg_sys::ErrorData) {
    if !edata.is_null() {
        explain_signal(edata);
    }
    if let Some(previous) = PREVIOUS_EMIT_LOG {
        previous(edata);
    }
}

unsafe fn explain_signal(edata: *mut pg_sys::ErrorData) {
    let code = (*edata).sqlerrcode;
    let signalled = code == PgSqlErrorCode::ERRCODE_QUERY_CANCELED as i32
        || code == PgSqlErrorCode::ERRCODE_ADMIN_SHUTDOWN as i32;
    // An LWLock needs the process's PGPROC.
    if !signalled
        || (*edata).elevel < pg_sys::PGERROR as i32
        || pg_sys::MyProc.is_null()
        || !SHARED.load(Ordering::Acquire)
    {
        return;
    }
    let Some(flag) = take_flag() else { return };
    let mb = |bytes: i64| bytes / 1_048_576;
    let detail = format!(
        "Its sessions held {} MB of temporary files together (sorts, hashes and results that spill to disk); the limit is {} MB, and the statements holding the most are cancelled{}.",
        mb(flag.total),
        mb(flag.limit),
        if flag.ended {
            "; this session was ended because its files outlived a cancel or were held between statements"
        } else {
            ""
        }
    );
    let text = |s: &str| pg_sys::pstrdup(CString::new(s).unwrap_or_default().as_ptr());
    // EmitErrorReport allocates in the error's own context while the hook runs.
    (*edata).sqlerrcode = PgSqlErrorCode::ERRCODE_DISK_FULL as i32;
    (*edata).message = text("the workspace is over its limit on temporary files");
    (*edata).message_id = (*edata).message;
    (*edata).detail = text(&detail);
    (*edata).hint = text(
        "Run fewer spilling queries at once, sort or hash fewer rows (an index for the ORDER BY), or ask the operator for a larger limit (dl_tenancy.temp_limit_mb).",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(pid: i32, bytes: i64, active: bool, files: &[&str]) -> Session {
        Session {
            pid,
            started: 7,
            database: 1,
            datname: "dlw_x".into(),
            active,
            limit: 100,
            bytes,
            files: files.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn the_biggest_holders_go_first_until_the_workspace_is_under() {
        let now = Instant::now();
        let s = [
            session(1, 30, true, &["a"]),
            session(2, 60, true, &["b"]),
            session(3, 50, false, &["c"]),
        ];
        let plan = plan(&s, &HashMap::new(), now);
        let acted: Vec<(i32, Action)> = plan.iter().map(|(s, a, _)| (s.pid, *a)).collect();
        // 140 > 100: session 2 (60) leaves 80, within the limit.
        assert_eq!(acted, vec![(2, Action::Cancel)]);
        assert!(plan.iter().all(|(_, _, total)| *total == 140));
        // Within the limit, nothing.
        assert!(super::plan(&s[..2], &HashMap::new(), now).is_empty());
    }

    #[test]
    fn a_session_whose_files_outlive_its_cancel_is_ended_after_the_grace() {
        let now = Instant::now();
        let s = session(2, 160, true, &["b", "d"]);
        let cancelled = |at: Instant, files: &[&str]| Acted {
            started: 7,
            at,
            files: files.iter().map(|f| f.to_string()).collect(),
            ended: false,
        };
        assert_eq!(action(&s, Some(&cancelled(now, &["b"])), now), Action::Wait);
        assert_eq!(
            action(&s, Some(&cancelled(now - GRACE, &["b"])), now),
            Action::End
        );
        // New files only: a new statement, cancelled again.
        assert_eq!(
            action(&s, Some(&cancelled(now - GRACE, &["z"])), now),
            Action::Cancel
        );
        // Between statements a cancel does nothing.
        assert_eq!(
            action(&session(3, 160, false, &["c"]), None, now),
            Action::End
        );
    }
}
