//! Retention of the override history (issue 21). Every change of an override leaves a row in
//! `dl_override.person_override_history` / `company_override_history` holding the old and the
//! new patches (up to 1 MiB each), and tenants can read those tables but not delete from them:
//! 100 updates of one override with 1 MB patches made 198 MB of history, counted against the
//! workspace's storage quota with no way for the tenant to free it.
//!
//! The retention runs in the write itself, after the layers' trigger has recorded a
//! statement's history rows (src/resolved_store.rs), so it needs neither `serve` nor the
//! watchdog, which is connected to one database only. Per write it costs one lock of a shared
//! ledger (src/history_ledger.rs), which says when the table's files could have passed the
//! bound and when its oldest row could be past the age; only then does it measure the files
//! or probe the index, and more only when there is something to remove:
//!
//! - age (`dl_tenancy.history_max_age`, 90 days; 0: none): the oldest rows past it are
//!   deleted, at most [`AGE_BATCH`] per statement, the rest by the next ones;
//! - size (`dl_tenancy.history_max_mb`, each table; -1: a twentieth of the database's storage
//!   quota, 512 MB without one): measured on the table's files (heap, TOAST, indexes), which
//!   is what the quota counts, by their lengths. A DELETE does not shrink files, and VACUUM
//!   cannot run inside a write, so past the bound the table is rewritten in place (VACUUM
//!   FULL's rewrite, in the write's transaction): what earlier statements deleted is dropped,
//!   then the oldest rows are deleted until the newest ones left fit in half the bound. A
//!   rewrite keeps the rows its own transaction deleted, so those go with the next rewrite:
//!   the files stay within the bound plus the rows of about one statement, and a rewrite
//!   copies at most the bound.
//!
//! No row is kept because of its key: the newest row of a key past the age or the size goes
//! like any other (the override itself holds the current value). Otherwise a tenant could
//! keep any amount of history by using many keys.
//!
//! The rewrite needs the table to itself: it is tried only when the lock is free at once
//! (never waiting while the write holds its own locks) and otherwise left to a later write.
//! The rewrite runs in a subtransaction, and so does the age's DELETE in a transaction with
//! one snapshot (REPEATABLE READ: rows another session pruned since then raise 40001): a step
//! that fails (also a table the statement itself reads, which cannot be rewritten) is logged
//! and costs the write nothing; a cancel still ends the statement. Deletes and the rewrite are never refused by the quota (src/quota.rs refuses INSERT/UPDATE and utility
//! statements; the rewrite is called directly), so the way back under the quota stays open.
//!
//! Both settings are superuser settings, set per database by the platform (`dl-tenancy limits
//! --history-max-mb / --history-max-age`): a tenant cannot widen its own retention. Every
//! statement here names schema-qualified objects of the extension only; no tenant object is
//! evaluated.

use crate::spi;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::pg_sys::Datum;
use pgrx::prelude::*;
use std::ffi::{CStr, CString};

/// 90 days.
const DEFAULT_MAX_AGE_SECONDS: i32 = 90 * 86_400;

static MAX_AGE: GucSetting<i32> = GucSetting::<i32>::new(DEFAULT_MAX_AGE_SECONDS);
static MAX_MB: GucSetting<i32> = GucSetting::<i32>::new(-1);

/// With `dl_tenancy.history_max_mb = -1`, each history table may take this part of the storage
/// quota: both together a tenth, so the history alone never takes a workspace to its quota,
/// and the bound follows the quota when the operator changes it.
const QUOTA_PARTS: i64 = 20;
/// ... and this much without a quota (some 2.5 million rows of 200-byte patches).
const NO_QUOTA_MB: i64 = 512;

/// Rows deleted for their age per statement: bounds what one write pays for a backlog (after
/// an upgrade, or a shorter age); the next writes delete the rest.
const AGE_BATCH: i64 = 100;

/// A row's share of the table beyond its variable-width columns: tuple header, fixed columns
/// (uuid, name, timestamp, booleans) and an entry in each of its three indexes.
const ROW_OVERHEAD: i64 = 200;

pub fn define_settings() {
    GucRegistry::define_int_guc(
        c"dl_tenancy.history_max_age",
        c"Override history rows older than this are deleted (set per database by dl-tenancy).",
        c"Applied at each write of an override, at most 100 rows a statement. 0: no age limit.",
        &MAX_AGE,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"dl_tenancy.history_max_mb",
        c"Disk space each override history table may take, in MB (set per database by dl-tenancy).",
        c"Past it the oldest rows are deleted and the table rewritten. -1: a twentieth of dl_tenancy.storage_limit_mb, or 512 MB without a quota; 0 counts as 1.",
        &MAX_MB,
        -1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_MB,
    );
}

/// The database's storage quota in MB (`dl_tenancy.storage_limit_mb`, src/quota.rs), if any.
fn quota_mb() -> Option<i64> {
    // SAFETY: a lookup of a setting by a NUL-terminated name; the value is copied at once.
    let value = unsafe {
        let value = pg_sys::GetConfigOption(c"dl_tenancy.storage_limit_mb".as_ptr(), true, false);
        (!value.is_null()).then(|| CStr::from_ptr(value).to_string_lossy().into_owned())
    };
    value
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|mb| *mb > 0)
}

/// The bound of each history table, in bytes.
fn max_bytes() -> i64 {
    const MB: i64 = 1024 * 1024;
    match MAX_MB.get() {
        -1 => quota_mb().map_or(NO_QUOTA_MB * MB, |quota| (quota * MB / QUOTA_PARTS).max(MB)),
        mb => i64::from(mb.max(1)) * MB,
    }
}

/// The statements of the retention, one saved plan each per kind.
#[derive(Clone, Copy, Debug)]
enum Statement {
    /// Deletes the oldest rows changed before `$1 timestamptz`, at most [`AGE_BATCH`]; rows
    /// another transaction is deleting are skipped, never waited for.
    Aged,
    /// Deletes the oldest rows beyond the newest ones whose sizes add up to `$1 bigint`.
    Excess,
}

impl Statement {
    fn sql(self, kind: &str) -> String {
        let history = format!("dl_override.{kind}_override_history");
        match self {
            Statement::Aged => format!(
                "DELETE FROM {history} AS h
                  WHERE h.ctid OPERATOR(pg_catalog.=) ANY (ARRAY(
                        SELECT o.ctid FROM {history} AS o
                         WHERE o.changed_at OPERATOR(pg_catalog.<) $1
                         ORDER BY o.changed_at, o.history_id
                         LIMIT {AGE_BATCH}
                           FOR UPDATE SKIP LOCKED))"
            ),
            // pg_column_size of a value stored out of line is its stored size, read from the
            // TOAST pointer: the patches are not fetched. The scan walks the (changed_at,
            // history_id) index backwards and stops at the first row that does not fit.
            Statement::Excess => {
                let size =
                    |column: &str| format!("COALESCE(pg_catalog.pg_column_size(s.{column}), 0)");
                let row_size = [
                    "identity_key",
                    "identity_key",
                    "old_status",
                    "new_status",
                    "old_identity_payload_patch",
                    "new_identity_payload_patch",
                    "old_raw_payload_patch",
                    "new_raw_payload_patch",
                ]
                .iter()
                .fold(ROW_OVERHEAD.to_string(), |sum, column| {
                    format!("{sum} OPERATOR(pg_catalog.+) {}", size(column))
                });
                format!(
                    "WITH boundary AS (
                         SELECT r.changed_at, r.history_id FROM (
                                SELECT s.changed_at, s.history_id,
                                       pg_catalog.sum({row_size}) OVER (
                                           ORDER BY s.changed_at DESC, s.history_id DESC
                                           ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS newer
                                  FROM {history} AS s) AS r
                          WHERE r.newer OPERATOR(pg_catalog.>) $1
                          ORDER BY r.changed_at DESC, r.history_id DESC
                          LIMIT 1)
                     DELETE FROM {history} AS h USING boundary AS b
                      WHERE ROW(h.changed_at, h.history_id) OPERATOR(pg_catalog.<=) ROW(b.changed_at, b.history_id)"
                )
            }
        }
    }

    fn argtype(self) -> pg_sys::Oid {
        match self {
            Statement::Aged => pg_sys::TIMESTAMPTZOID,
            Statement::Excess => pg_sys::INT8OID,
        }
    }
}

/// Runs `statement` for `kind` with its one argument (inside an SPI connection), planned by
/// its index whatever the table's statistics say: the plan is made once per backend and kept,
/// and one made while the history was empty (a fresh workspace, before autovacuum analyzed
/// it) scanned the whole table twice at every later write (bench-ab AB_QUOTA=1: an upsert
/// took 2.2 times 0.5.0's instructions).
unsafe fn execute(kind: &str, statement: Statement, arg: Datum) -> u64 {
    let level = pg_sys::NewGUCNestLevel();
    for setting in [c"enable_seqscan", c"enable_sort", c"enable_bitmapscan"] {
        pg_sys::set_config_option(
            setting.as_ptr(),
            c"off".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
    }
    let deleted = execute_planned(kind, statement, arg);
    pg_sys::AtEOXact_GUC(true, level);
    deleted
}

unsafe fn execute_planned(kind: &str, statement: Statement, arg: Datum) -> u64 {
    let sql = || statement.sql(kind);
    let prepared = spi::Statement {
        key: format!("history/{kind}/{statement:?}"),
        sql: &sql,
        argtypes: &[statement.argtype()],
        // Planned once per backend, by the index on (changed_at, history_id) whatever the
        // argument: the plan cache otherwise re-planned the age's DELETE at every write
        // (custom plans looked cheaper), which cost ten times its run.
        cursor_options: pg_sys::CURSOR_OPT_GENERIC_PLAN,
    };
    spi::execute(&prepared, &[arg], None)
}

/// The history table of `kind`, when this database has the retention's index (0.7.0 on; older
/// databases served by this library get it with `ALTER EXTENSION dl_tenancy UPDATE`).
unsafe fn history_table(kind: &str) -> Option<(pg_sys::Oid, pg_sys::Oid)> {
    let namespace = pg_sys::get_namespace_oid(c"dl_override".as_ptr(), true);
    if namespace == pg_sys::InvalidOid {
        return None;
    }
    let name =
        |suffix: &str| CString::new(format!("{kind}_override_history{suffix}")).expect("no NUL");
    let index = pg_sys::get_relname_relid(name("_changed_at_idx").as_ptr(), namespace);
    let table = pg_sys::get_relname_relid(name("").as_ptr(), namespace);
    (index != pg_sys::InvalidOid && table != pg_sys::InvalidOid).then_some((table, index))
}

/// The time of the oldest row (`changed_at`), or `None` for an empty table: one descent of
/// the `(changed_at, history_id)` index, so that a write with nothing to prune by age (nearly
/// every one) does not pay for the DELETE's statement (some 65,000 instructions through SPI, a
/// tenth of an override write); the ledger keeps the answer for the next writes. A hint: a
/// row another transaction is deleting still counts, and the DELETE skips it.
unsafe fn oldest_row(table: pg_sys::Oid, index: pg_sys::Oid) -> Option<i64> {
    let lock = pg_sys::AccessShareLock as i32;
    let heap = pg_sys::table_open(table, lock);
    let ordered = pg_sys::index_open(index, lock);
    let column = pg_sys::get_attnum(table, c"changed_at".as_ptr());
    let scan = pg_sys::systable_beginscan_ordered(
        heap,
        ordered,
        pg_sys::GetActiveSnapshot(),
        0,
        std::ptr::null_mut(),
    );
    let tuple = pg_sys::systable_getnext_ordered(scan, pg_sys::ScanDirection::ForwardScanDirection);
    let oldest = (!tuple.is_null()).then(|| {
        let mut null = false;
        let at = pg_sys::heap_getattr(tuple, column.into(), (*heap).rd_att, &mut null);
        // NOT NULL column: a null would be a broken row, treated as the oldest there is.
        if null {
            i64::MIN
        } else {
            at.value() as i64
        }
    });
    pg_sys::systable_endscan_ordered(scan);
    pg_sys::index_close(ordered, lock);
    pg_sys::table_close(heap, lock);
    oldest
}

/// Bytes of a relation's main fork and its indexes', with its TOAST table's: the files a
/// table's rows take (the free space and visibility maps, a few pages, left out). One length
/// lookup per file, cheap enough for every write: pg_total_relation_size, which stats every
/// fork of every file, cost ten times as much (some 50 us).
unsafe fn file_bytes(relation: pg_sys::Oid) -> i64 {
    let lock = pg_sys::AccessShareLock as i32;
    let main = pg_sys::ForkNumber::MAIN_FORKNUM;
    let opened = pg_sys::relation_open(relation, lock);
    let mut blocks = i64::from(pg_sys::RelationGetNumberOfBlocksInFork(opened, main));
    let indexes = pg_sys::RelationGetIndexList(opened);
    if !indexes.is_null() {
        for i in 0..(*indexes).length as usize {
            let index = pg_sys::index_open((*(*indexes).elements.add(i)).oid_value, lock);
            blocks += i64::from(pg_sys::RelationGetNumberOfBlocksInFork(index, main));
            pg_sys::index_close(index, lock);
        }
        pg_sys::list_free(indexes);
    }
    let toast = (*(*opened).rd_rel).reltoastrelid;
    pg_sys::relation_close(opened, lock);
    let toast_bytes = if toast == pg_sys::InvalidOid {
        0
    } else {
        file_bytes(toast)
    };
    blocks * i64::from(pg_sys::BLCKSZ) + toast_bytes
}

/// `ClusterParams` of commands/cluster.h (PostgreSQL 14 on).
#[cfg(not(feature = "pg13"))]
#[repr(C)]
struct ClusterParams {
    options: u32,
}

extern "C-unwind" {
    #[cfg(feature = "pg13")]
    #[link_name = "cluster_rel"]
    fn postgres_cluster_rel(table: pg_sys::Oid, index: pg_sys::Oid, options: i32);

    #[cfg(any(feature = "pg14", feature = "pg15", feature = "pg16"))]
    #[link_name = "cluster_rel"]
    fn postgres_cluster_rel(table: pg_sys::Oid, index: pg_sys::Oid, params: *mut ClusterParams);

    #[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16")))]
    #[link_name = "cluster_rel"]
    fn postgres_cluster_rel(
        table: pg_sys::Relation,
        index: pg_sys::Oid,
        params: *mut ClusterParams,
    );
}

/// VACUUM FULL's rewrite of one table (cluster_rel without an index), which unlike the VACUUM
/// statement may run inside a transaction. Guarded: an error comes back as a Rust panic.
#[cfg(feature = "pg13")]
unsafe fn rewrite(table: pg_sys::Oid) {
    pg_sys::ffi::pg_guard_ffi_boundary(|| postgres_cluster_rel(table, pg_sys::InvalidOid, 0));
}

#[cfg(any(feature = "pg14", feature = "pg15", feature = "pg16"))]
unsafe fn rewrite(table: pg_sys::Oid) {
    let mut params = ClusterParams { options: 0 };
    pg_sys::ffi::pg_guard_ffi_boundary(|| {
        postgres_cluster_rel(table, pg_sys::InvalidOid, &mut params)
    });
}

/// From PostgreSQL 17 on, cluster_rel takes the table opened and locked, and closes it.
#[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16")))]
unsafe fn rewrite(table: pg_sys::Oid) {
    let mut params = ClusterParams { options: 0 };
    let relation = pg_sys::table_open(table, pg_sys::AccessExclusiveLock as i32);
    pg_sys::ffi::pg_guard_ffi_boundary(|| {
        postgres_cluster_rel(relation, pg_sys::InvalidOid, &mut params)
    });
}

/// Runs `rebuild` with the index builds' settings of PostgreSQL's defaults, not the tenant's
/// (a session may raise `maintenance_work_mem`, and parallel workers sort outside its memory
/// share): no parallel workers, 64 MB, restored afterwards (and by an error's rollback).
unsafe fn with_platform_maintenance(rebuild: impl FnOnce()) {
    let level = pg_sys::NewGUCNestLevel();
    for (name, value) in [
        (c"max_parallel_maintenance_workers", c"0"),
        (c"maintenance_work_mem", c"64MB"),
    ] {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            PgLogLevel::ERROR as i32,
            false,
        );
    }
    rebuild();
    pg_sys::AtEOXact_GUC(true, level);
}

/// Runs `step` in a subtransaction: an error rolls back only the step, and is logged; a
/// cancel or a shutdown is the session's, not ours to swallow, and ends the statement.
unsafe fn guarded(kind: &str, step: impl FnOnce() + std::panic::UnwindSafe) {
    let context = pg_sys::CurrentMemoryContext;
    let owner = pg_sys::CurrentResourceOwner;
    pg_sys::BeginInternalSubTransaction(std::ptr::null());
    pg_sys::MemoryContextSwitchTo(context);
    let outcome: Result<(), Box<CaughtError>> = PgTryBuilder::new(|| {
        step();
        Ok(())
    })
    .catch_others(|error| Err(Box::new(error)))
    .execute();
    match outcome {
        Ok(()) => pg_sys::ReleaseCurrentSubTransaction(),
        Err(_) => pg_sys::RollbackAndReleaseCurrentSubTransaction(),
    }
    pg_sys::MemoryContextSwitchTo(context);
    pg_sys::CurrentResourceOwner = owner;
    if let Err(error) = outcome {
        let report = match error.as_ref() {
            CaughtError::PostgresError(r)
            | CaughtError::ErrorReport(r)
            | CaughtError::RustPanic { ereport: r, .. } => r,
        };
        if matches!(
            report.sql_error_code(),
            PgSqlErrorCode::ERRCODE_QUERY_CANCELED
                | PgSqlErrorCode::ERRCODE_ADMIN_SHUTDOWN
                | PgSqlErrorCode::ERRCODE_OPERATOR_INTERVENTION
        ) {
            (*error).rethrow();
        }
        log!(
            "dl_tenancy: {kind} override history retention skipped: {}",
            report.message()
        );
    }
}

/// The retention of `kind`'s history ('person' or 'company'), after a statement wrote `rows`
/// history rows (inside the trigger's SPI connection, with the extension's rights). The ledger
/// (src/history_ledger.rs) says when the table must be looked at at all.
pub(crate) unsafe fn retain(kind: &str, rows: i64) {
    let ledger = crate::history_ledger::Table::of(kind);
    let age = MAX_AGE.get();
    let cutoff = pg_sys::GetCurrentTransactionStartTimestamp() - i64::from(age) * 1_000_000;
    let look_for_age = age > 0 && ledger.may_hold_older(cutoff);
    let bound = max_bytes();
    let measure = ledger.wrote(rows, bound);
    if !look_for_age && measure.is_none() {
        return;
    }
    let Some((table, index)) = history_table(kind) else {
        return;
    };
    if look_for_age {
        match oldest_row(table, index) {
            Some(oldest) if oldest < cutoff => {
                let prune = || {
                    execute(kind, Statement::Aged, Datum::from(cutoff));
                };
                // Under READ COMMITTED (the default) nothing but what fails any statement can
                // fail it, so it runs without the subtransaction's cost; with a transaction
                // snapshot, rows another session pruned since then raise 40001.
                if pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 {
                    guarded(kind, prune);
                } else {
                    prune();
                }
                // A batch at most: the next write looks again.
                ledger.forget();
            }
            // Rows written from now on are newer than any there is.
            Some(oldest) => ledger.oldest_is(oldest),
            None => ledger.oldest_is(pg_sys::GetCurrentTransactionStartTimestamp()),
        }
    }
    let Some(pending) = measure else {
        return;
    };
    let bytes = file_bytes(table);
    ledger.measured(bytes, pending);
    if bytes > bound {
        // Rewritten (dropping what earlier statements deleted), then the oldest rows beyond
        // the newest half of the bound deleted, for the next rewrite to drop. Never waiting
        // for the table: the write holds its key locks, and whoever holds the table may wait
        // for them. The lock is taken in the subtransaction, so a failure releases it.
        guarded(kind, || {
            if pg_sys::ConditionalLockRelationOid(table, pg_sys::AccessExclusiveLock as i32) {
                with_platform_maintenance(|| rewrite(table));
                execute(kind, Statement::Excess, Datum::from(bound / 2));
            }
        });
        ledger.forget();
    }
}
