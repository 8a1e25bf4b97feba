//! Storage quota per workspace database. The database's limit is a setting of the database
//! (`ALTER DATABASE ... SET dl_tenancy.storage_limit_mb = N`, which the tool writes; a
//! superuser setting, so no tenant changes it). The watchdog measures each such database
//! (`pg_database_size`, every `dl_tenancy.storage_interval`) and keeps its state in shared
//! memory:
//!
//! - `under`; `warned` from [`WARN_PERCENT`] of the limit (shown, nothing refused);
//! - `refused` at the limit: a workspace login's statements that can grow the database fail
//!   with 53100 (`disk_full`), and the statements running in the database when it got there
//!   are cancelled, so a burst overshoots by at most what it writes in one interval. SELECT,
//!   DELETE, TRUNCATE, DROP and plain VACUUM still run, so the tenant can get back under;
//! - back to `warned`/`under` only below [`RESUME_PERCENT`] of the limit (no flapping).
//!
//! `SHOW dl_tenancy.storage` (superusers only) lists every measured database as JSON. The
//! platform's own sessions are never refused (loading data, restores, upgrades).

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};
use std::ffi::{c_char, CString};
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Past this share of its limit a workspace is `warned`.
pub const WARN_PERCENT: i64 = 80;
/// A `refused` workspace writes again below this share of its limit.
pub const RESUME_PERCENT: i64 = 90;

static LIMIT_MB: GucSetting<i32> = GucSetting::<i32>::new(0);
static INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(1000);
static FIGURES: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// Databases the shared table holds (a server of 1,000 workspaces fills a quarter).
const ENTRIES: usize = 4096;

// SAFETY: a name no other library uses.
static STATES: PgLwLock<[Entry; ENTRIES]> = unsafe { PgLwLock::new(c"dl_tenancy.quota") };

/// Whether this process has the shared table (the library is in shared_preload_libraries).
static SHARED: AtomicBool = AtomicBool::new(false);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum State {
    Under = 1,
    Warned = 2,
    Refused = 3,
}

impl State {
    /// The state an entry of the shared table holds (a free entry's 0 reads as `under`).
    fn stored(state: u8) -> State {
        match state {
            3 => State::Refused,
            2 => State::Warned,
            _ => State::Under,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Under => "under",
            State::Warned => "warned",
            State::Refused => "refused",
        }
    }

    /// The next state of a database of `bytes` with `limit` bytes, from `self`.
    pub fn next(self, bytes: i64, limit: i64) -> State {
        let share = |percent: i64| limit / 100 * percent;
        if bytes >= limit || (self == State::Refused && bytes >= share(RESUME_PERCENT)) {
            State::Refused
        } else if bytes >= share(WARN_PERCENT) {
            State::Warned
        } else {
            State::Under
        }
    }
}

#[derive(Clone, Copy)]
struct Entry {
    /// 0: a free entry.
    database: u32,
    state: u8,
    bytes: i64,
    limit: i64,
    /// Rows inserted and updated, when last measured.
    writes: i64,
}

// SAFETY: plain integers.
unsafe impl PGRXSharedMemory for Entry {}

const FREE: Entry = Entry {
    database: 0,
    state: 0,
    bytes: 0,
    limit: 0,
    writes: 0,
};

pub fn define_settings() {
    GucRegistry::define_int_guc(
        c"dl_tenancy.storage_limit_mb",
        c"Storage quota of this workspace database, in MB (set per database by dl-tenancy).",
        c"At it, workspace logins' writes that grow the database fail with 53100 until it is back below 90%. 0: none.",
        &LIMIT_MB,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_MB,
    );
    GucRegistry::define_int_guc(
        c"dl_tenancy.storage_interval",
        c"Time between two measurements of the workspace databases' sizes.",
        c"A write burst overshoots a storage quota by at most what it writes in one interval.",
        &INTERVAL_MS,
        100,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
}

/// The shared table and `dl_tenancy.storage` (from `_PG_init` while shared_preload_libraries
/// is processed).
pub fn install() {
    pg_shmem_init!(STATES = [FREE; ENTRIES]);
    SHARED.store(true, Ordering::Release);
    crate::define_figures(
        c"dl_tenancy.storage",
        c"Measured workspace databases: size, quota and state (JSON; superusers only).",
        &FIGURES,
        show_figures,
    );
}

fn slot_of(database: u32) -> usize {
    (database as usize).wrapping_mul(2_654_435_761) % ENTRIES
}

/// The state of `database`, `under` when it has no quota or was not measured yet.
pub fn state_of(database: pg_sys::Oid) -> State {
    if !SHARED.load(Ordering::Acquire) {
        return State::Under;
    }
    let database = database.to_u32();
    let table = STATES.share();
    let first = slot_of(database);
    for i in 0..ENTRIES {
        let e = &table[(first + i) % ENTRIES];
        if e.database == database {
            return State::stored(e.state);
        }
        if e.database == 0 {
            break;
        }
    }
    State::Under
}

/// Databases with a quota: their limits in bytes, what they have written (rows inserted and
/// updated: PostgreSQL's statistics, at each transaction's end) and whether a session is on
/// them now. Catalog and statistics only: no tenant code runs.
const CANDIDATES: &str = r#"
SELECT d.oid::bigint, q.mb * 1048576,
       coalesce(st.tup_inserted + st.tup_updated, 0),
       EXISTS (SELECT FROM pg_catalog.pg_stat_activity AS a
                WHERE a.datid = d.oid AND a.backend_type = 'client backend')
  FROM pg_catalog.pg_database AS d
  JOIN LATERAL (
        SELECT pg_catalog.substr(c, 29)::bigint AS mb
          FROM pg_catalog.pg_db_role_setting AS s, pg_catalog.unnest(s.setconfig) AS c
         WHERE s.setdatabase = d.oid AND s.setrole = 0
           AND c ~ '^dl_tenancy\.storage_limit_mb=[0-9]{1,9}$'
       ) AS q ON q.mb > 0
  LEFT JOIN pg_catalog.pg_stat_database AS st ON st.datid = d.oid
 WHERE d.datallowconn
"#;

/// The sizes of the given databases, from their files.
const SIZES: &str = r#"
SELECT o, pg_catalog.pg_database_size(o::oid)
  FROM pg_catalog.unnest($1::bigint[]) AS o
 WHERE EXISTS (SELECT FROM pg_catalog.pg_database AS d WHERE d.oid = o::oid)
"#;

/// Every this many passes, every database is measured (a shrink nothing else tells of).
const FULL_PASS_EVERY: u32 = 30;

/// Cancels the workspace logins' running statements in a database that just got to its
/// limit: they may be the burst that got it there.
const CANCEL: &str = concat!(
    crate::logins::workspace_logins_cte!(),
    r#", running AS MATERIALIZED (
    SELECT a.pid FROM pg_catalog.pg_stat_activity AS a
      JOIN pg_catalog.pg_authid AS r ON r.oid = a.usesysid
     WHERE a.backend_type = 'client backend' AND a.state = 'active'
       AND a.datid = $1::bigint::oid
       AND r.oid IN (SELECT oid FROM workspace_login)
       AND NOT r.rolsuper AND r.rolname NOT LIKE '%\_load'
)
SELECT pg_catalog.count(*) FROM running WHERE pg_catalog.pg_cancel_backend(pid)
"#
);

thread_local! {
    /// When the watchdog last measured, and how many passes since a full one (its own
    /// process only).
    static LAST: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
    static PASSES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// A database with a quota, as [`CANDIDATES`] tells.
struct Candidate {
    database: u32,
    limit: i64,
    writes: i64,
    session: bool,
}

/// One pass, when the interval has passed: measures the databases that can have grown (a
/// session on them, rows written since the last pass, not `under`, new) and updates the shared
/// table; returns the databases that changed state (oid, from, to, bytes, limit). In the
/// watchdog's transaction.
pub fn measure() -> Vec<(u32, State, State, i64, i64)> {
    let interval = Duration::from_millis(INTERVAL_MS.get().max(100) as u64);
    let due = LAST.get().is_none_or(|at| at.elapsed() >= interval);
    if !due || !SHARED.load(Ordering::Acquire) {
        return vec![];
    }
    LAST.set(Some(Instant::now()));
    // As the watchdog's other pass: never waiting long on a lock, nothing of a tenant's on
    // the path.
    Spi::run("SET LOCAL lock_timeout = '5s'; SET LOCAL search_path = pg_catalog, pg_temp")
        .unwrap_or_else(|e| error!("dl_tenancy watchdog: {e}"));
    let full = PASSES.get().is_multiple_of(FULL_PASS_EVERY);
    PASSES.set(PASSES.get().wrapping_add(1));
    let candidates: Vec<Candidate> = Spi::connect(|client| {
        client
            .select(CANDIDATES, None, &[])
            .unwrap_or_else(|e| error!("dl_tenancy watchdog: {e}"))
            .map(|row| Candidate {
                database: row.get::<i64>(1).ok().flatten().unwrap_or_default() as u32,
                limit: row.get::<i64>(2).ok().flatten().unwrap_or_default(),
                writes: row.get::<i64>(3).ok().flatten().unwrap_or_default(),
                session: row.get::<bool>(4).ok().flatten().unwrap_or_default(),
            })
            .collect()
    });
    let old: Vec<Entry> = STATES
        .share()
        .iter()
        .filter(|e| e.database != 0)
        .copied()
        .collect();
    let known = |database: u32| old.iter().find(|e| e.database == database);
    let due: Vec<i64> = candidates
        .iter()
        .filter(|c| {
            full || c.session
                || known(c.database).is_none_or(|e| {
                    e.state != State::Under as u8 || e.writes != c.writes || e.limit != c.limit
                })
        })
        .map(|c| i64::from(c.database))
        .collect();
    let sizes: Vec<(u32, i64)> = Spi::connect(|client| {
        client
            .select(SIZES, None, &[due.into()])
            .unwrap_or_else(|e| error!("dl_tenancy watchdog: {e}"))
            .map(|row| {
                let oid = row.get::<i64>(1).ok().flatten().unwrap_or_default();
                let bytes = row.get::<i64>(2).ok().flatten().unwrap_or_default();
                (oid as u32, bytes)
            })
            .collect()
    });
    let changes = record(&candidates, &sizes, &old);
    for (oid, _, to, _, _) in &changes {
        if *to == State::Refused {
            Spi::get_one_with_args::<i64>(CANCEL, &[i64::from(*oid).into()])
                .unwrap_or_else(|e| error!("dl_tenancy watchdog: {e}"));
        }
    }
    changes
}

/// The pass into the shared table: each candidate with its new size, or its last one when it
/// was not measured (a database never measured waits for its first); databases no longer
/// candidates (dropped, quota removed) leave it.
fn record(
    candidates: &[Candidate],
    sizes: &[(u32, i64)],
    old: &[Entry],
) -> Vec<(u32, State, State, i64, i64)> {
    let mut fresh = [FREE; ENTRIES];
    let mut changes = vec![];
    for c in candidates {
        let before = old.iter().find(|e| e.database == c.database);
        let Some(bytes) = sizes
            .iter()
            .find(|(d, _)| *d == c.database)
            .map(|(_, b)| *b)
            .or(before.map(|e| e.bytes))
        else {
            continue;
        };
        let from = State::stored(before.map_or(0, |e| e.state));
        // A changed quota is judged afresh: raised above what the database holds, it lets
        // writes in at once, whatever the 90% mark of the old one said.
        let basis = match before {
            Some(e) if e.limit != c.limit => State::Under,
            _ => from,
        };
        let to = basis.next(bytes, c.limit);
        if to != from {
            changes.push((c.database, from, to, bytes, c.limit));
        }
        let first = slot_of(c.database);
        if let Some(i) = (0..ENTRIES)
            .map(|i| (first + i) % ENTRIES)
            .find(|i| fresh[*i].database == 0)
        {
            fresh[i] = Entry {
                database: c.database,
                state: to as u8,
                bytes,
                limit: c.limit,
                writes: c.writes,
            };
        }
    }
    *STATES.exclusive() = fresh;
    changes
}

/// `SHOW dl_tenancy.storage`.
#[pg_guard]
unsafe extern "C-unwind" fn show_figures() -> *const c_char {
    let mut out = String::from("[");
    if SHARED.load(Ordering::Acquire) {
        let table = STATES.share();
        let mut first = true;
        for e in table.iter().filter(|e| e.database != 0) {
            let state = State::stored(e.state);
            let _ = write!(
                out,
                r#"{}{{"database_oid":{},"bytes":{},"limit_bytes":{},"state":"{}"}}"#,
                if first { "" } else { "," },
                e.database,
                e.bytes,
                e.limit,
                state.name()
            );
            first = false;
        }
    }
    out.push(']');
    let text = CString::new(out).unwrap_or_default();
    pg_sys::pstrdup(text.as_ptr())
}

const OVER: (&str, &str, &str) = (
    "the workspace is over its storage quota",
    "Writes that grow the database are refused until it is back below 90% of its quota.",
    "TRUNCATE or DROP tables in tenant_custom (a DELETE frees space only for new rows), or ask the operator for a larger quota (dl-tenancy limits --storage-mb).",
);

/// A relation named in a statement, looked up without a lock (InvalidOid: none).
unsafe fn relation_of(relation: *mut pg_sys::RangeVar) -> pg_sys::Oid {
    if relation.is_null() {
        return pg_sys::InvalidOid;
    }
    pg_sys::RangeVarGetRelidExtended(
        relation,
        pg_sys::NoLock as _,
        pg_sys::RVROption::RVR_MISSING_OK as _,
        None,
        std::ptr::null_mut(),
    )
}

/// Whether `name` exists in `namespace`: where `CREATE ... IF NOT EXISTS` would make it, as
/// PostgreSQL's own check looks (found anywhere on the search path, `CREATE TABLE IF NOT
/// EXISTS pg_class` passed and made tenant_custom.pg_class).
unsafe fn exists_in(name: *const c_char, namespace: pg_sys::Oid) -> bool {
    !name.is_null()
        && namespace != pg_sys::InvalidOid
        && pg_sys::get_relname_relid(name, namespace) != pg_sys::InvalidOid
}

fn refuse() -> ! {
    // SAFETY: reads of the backend's own globals.
    let over = state_of(unsafe { pg_sys::MyDatabaseId }) == State::Refused;
    let (message, detail, hint) = if over { OVER } else { crate::disk::LOW_TEXT };
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_DISK_FULL,
        message,
        "dl_tenancy::quota",
    )
    .set_detail(detail)
    .set_hint(hint)
    .report(PgLogLevel::ERROR);
    unreachable!("an ERROR does not return")
}

/// Whether the current database refuses a workspace login's writes now.
fn refusing() -> bool {
    // SAFETY: reads of the backend's own globals.
    crate::disk::low() || state_of(unsafe { pg_sys::MyDatabaseId }) == State::Refused
}

/// A utility statement of a workspace login while the database refuses writes: only those
/// that cannot grow it run (`tenant_guard` asks, for tenant sessions only).
pub unsafe fn check_utility(statement: *mut pg_sys::Node) {
    if statement.is_null() || !refusing() {
        return;
    }
    use pg_sys::NodeTag::*;
    let allowed = match (*statement).type_ {
        // UNLISTEN and SET CONSTRAINTS: drivers' and frameworks' resets (asyncpg's pool,
        // Django's loaddata) run them, and they store nothing.
        T_DropStmt | T_TruncateStmt | T_TransactionStmt | T_VariableSetStmt | T_UnlistenStmt
        | T_ConstraintsSetStmt | T_VariableShowStmt | T_DiscardStmt | T_DeallocateStmt
        | T_PrepareStmt | T_ExecuteStmt | T_DeclareCursorStmt | T_FetchStmt | T_ClosePortalStmt
        | T_ExplainStmt | T_LockStmt | T_DoStmt | T_CallStmt | T_CheckPointStmt => true,
        T_CopyStmt => !(*(statement as *mut pg_sys::CopyStmt)).is_from,
        // An app or migration tool that makes its tables "if not exists" at start: the
        // relation exists, nothing is made.
        T_CreateStmt => {
            let c = statement as *mut pg_sys::CreateStmt;
            (*c).if_not_exists
                && !(*c).relation.is_null()
                && exists_in(
                    (*(*c).relation).relname,
                    pg_sys::RangeVarGetCreationNamespace((*c).relation),
                )
        }
        T_IndexStmt => {
            let i = statement as *mut pg_sys::IndexStmt;
            // An index is made in its table's schema (a temporary table's: pg_temp).
            let table = relation_of((*i).relation);
            (*i).if_not_exists
                && table != pg_sys::InvalidOid
                && exists_in((*i).idxname, pg_sys::get_rel_namespace(table))
        }
        T_VacuumStmt => {
            // VACUUM FULL and CLUSTER rewrite a table beside the old one.
            let v = statement as *mut pg_sys::VacuumStmt;
            !crate::list_items::<pg_sys::DefElem>((*v).options)
                .iter()
                .any(|d| std::ffi::CStr::from_ptr((**d).defname).to_bytes() == b"full")
        }
        _ => false,
    };
    if !allowed {
        refuse();
    }
}

static mut PREVIOUS_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;

/// Installs the executor's check (every process that loads the library).
pub fn install_session_hook() {
    // SAFETY: single-threaded process start.
    unsafe {
        PREVIOUS_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
    }
}

extern "C-unwind" {
    /// PostgreSQL's own, called directly (see tenant_guard: pgrx's wrapper would turn the
    /// statement's own errors into Rust panics and back).
    #[link_name = "standard_ExecutorStart"]
    fn postgres_executor_start(query: *mut pg_sys::QueryDesc, eflags: i32);
}

/// Our part, guarded: refuses a workspace login's INSERT, UPDATE or MERGE while the database
/// is over its quota (inside functions too: each of their statements starts here).
#[pg_guard]
unsafe extern "C-unwind" fn check_executor(query: *mut pg_sys::QueryDesc, eflags: i32) {
    crate::alloc::end_session_if_reserve_used();
    crate::locks::fence_once();
    // A parallel worker of a workspace session gets the session's memory share too: it never
    // passes the login hook that sets it.
    if pg_sys::ParallelWorkerNumber >= 0 && crate::logins::is_tenant_session() {
        crate::admission::fence_memory_once();
    } else if crate::logins::is_tenant_session() {
        crate::admission::check_memory_settings();
        crate::locks::check_isolation();
    }
    let explain_only = eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 != 0;
    if !query.is_null()
        && !explain_only
        && writes(query)
        && crate::logins::is_tenant_session()
        && refusing()
        && !only_extension_tables(query)
    {
        refuse();
    }
}

/// Whether a plan can grow the database: INSERT, UPDATE, MERGE, a SELECT with a writing WITH
/// clause, or one that fills a new table (CREATE TABLE AS, SELECT INTO, a materialized view,
/// also under EXPLAIN ANALYZE, which runs them without a utility statement of their own).
unsafe fn writes(query: *mut pg_sys::QueryDesc) -> bool {
    use pg_sys::CmdType::*;
    if matches!((*query).operation, CMD_INSERT | CMD_UPDATE | CMD_MERGE) {
        return true;
    }
    let plan = (*query).plannedstmt;
    if !plan.is_null() && (*plan).hasModifyingCTE {
        return true;
    }
    let dest = (*query).dest;
    !dest.is_null()
        && matches!(
            (*dest).mydest,
            pg_sys::CommandDest::DestIntoRel | pg_sys::CommandDest::DestTransientRel
        )
}

/// Whether every table the plan writes (its own and its WITH clauses') is one of the
/// extension's own that only its triggers write (the override history, the resolved tables):
/// their rows follow from a statement of the tenant's that was allowed (a DELETE of overrides
/// records its history), so the way back under the quota stays open.
unsafe fn only_extension_tables(query: *mut pg_sys::QueryDesc) -> bool {
    let plan = (*query).plannedstmt;
    if plan.is_null() {
        return false;
    }
    let indexes = (*plan).resultRelations;
    if indexes.is_null() || (*indexes).length == 0 {
        return false;
    }
    (0..(*indexes).length as usize).all(|i| {
        let index = (*(*indexes).elements.add(i)).int_value;
        let rte = pg_sys::list_nth((*plan).rtable, index - 1) as *mut pg_sys::RangeTblEntry;
        if rte.is_null() {
            return false;
        }
        let relid = (*rte).relid;
        let namespace = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid));
        let name = pg_sys::get_rel_name(relid);
        if namespace.is_null() || name.is_null() {
            return false;
        }
        let (namespace, name) = (
            std::ffi::CStr::from_ptr(namespace).to_bytes(),
            std::ffi::CStr::from_ptr(name).to_bytes(),
        );
        namespace == b"dl_internal"
            || (namespace == b"dl_override" && name.ends_with(b"_override_history"))
    })
}

/// The hook. Not guarded, as tenant_guard's: the statement's own errors go straight to
/// PostgreSQL's error handling.
unsafe extern "C-unwind" fn executor_start(query: *mut pg_sys::QueryDesc, eflags: i32) {
    check_executor(query, eflags);
    match PREVIOUS_EXECUTOR_START {
        Some(previous) => previous(query, eflags),
        None => postgres_executor_start(query, eflags),
    }
}

#[cfg(test)]
mod tests {
    use super::State;

    #[test]
    fn the_states_have_a_gap_between_refusing_and_writing_again() {
        let limit = 1000;
        assert_eq!(State::Under.next(799, limit), State::Under);
        assert_eq!(State::Under.next(800, limit), State::Warned);
        assert_eq!(State::Warned.next(1000, limit), State::Refused);
        // Refused stays refused down to 90%, then writes again (warned).
        assert_eq!(State::Refused.next(950, limit), State::Refused);
        assert_eq!(State::Refused.next(899, limit), State::Warned);
        assert_eq!(State::Refused.next(10, limit), State::Under);
    }
}
