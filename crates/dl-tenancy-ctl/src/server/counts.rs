//! The per-table row counts that verify a copy (backup, restore, both ways of moving): the
//! extension's data tables on a platform session, the tenant's tables only in a session of the
//! workspace's load login (a count plans the table, and planning runs the tenant's code).

use crate::server::catalog::end_sessions;
use crate::server::catalog::Sessions;

use crate::base::connection::connect;
use crate::domain::error::{Error, ErrorCode, Result};
use crate::domain::names::WorkspaceNames;
use crate::plan::quote::quote_literal;
use crate::server::archive::TenantLoader;
use std::collections::BTreeMap;

/// The tables of `tenant_custom`, as `regclass` text (read from the catalog only).
const TENANT_TABLES: &str = "SELECT c.oid::regclass::text FROM pg_catalog.pg_class AS c
      WHERE c.relnamespace = 'tenant_custom'::regnamespace AND c.relkind IN ('r', 'p')
      ORDER BY 1";

/// The extension's data tables (those it registers with `pg_extension_config_dump`).
const EXTENSION_TABLES: &str = "SELECT c.oid::regclass::text FROM pg_catalog.pg_extension AS e
      CROSS JOIN LATERAL pg_catalog.unnest(e.extconfig) AS t(oid)
       JOIN pg_catalog.pg_class AS c ON c.oid = t.oid
      WHERE e.extname = 'dl_tenancy' ORDER BY 1";

/// Rows of each of the extension's data tables, on a platform session. Safe to plan there:
/// tenants cannot put code on these tables (indexes, statistics, policies, rules and
/// triggers need ownership or TRIGGER, which no tenant role has).
pub(crate) fn count_extension_rows(
    db: &mut impl postgres::GenericClient,
) -> Result<BTreeMap<String, i64>> {
    db.batch_execute("SET search_path = pg_catalog, pg_temp")?;
    let tables: Vec<String> = db
        .query(EXTENSION_TABLES, &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    count_each(db, &tables)
}

/// Rows of each table of `tenant_custom`, counted in a session of the workspace's
/// [`TenantLoader`] (the tenant's own powers), never on a platform session: planning a query
/// over a tenant's table runs the tenant's code (the planner folds IMMUTABLE calls of its
/// expression indexes and statistics), which would run as whoever plans it. In `snapshot`
/// (exported by the platform session that dumps) when given. `db` is a platform session on the
/// workspace database, used only to read the catalog.
pub(crate) fn count_tenant_rows(
    db: &mut impl postgres::GenericClient,
    admin_conn: &str,
    names: &WorkspaceNames,
    snapshot: Option<&str>,
) -> Result<BTreeMap<String, i64>> {
    let tables: Vec<String> = db
        .query(TENANT_TABLES, &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if tables.is_empty() {
        return Ok(BTreeMap::new());
    }
    // The platform's own statement timeout (what this process's platform sessions have).
    let limit: f64 = db
        .query_one(
            "SELECT pg_catalog.date_part('epoch', pg_catalog.current_setting('statement_timeout')::pg_catalog.interval)",
            &[],
        )?
        .get(0);
    let limit = match std::time::Duration::try_from_secs_f64(limit) {
        Ok(d) if !d.is_zero() => d,
        _ => std::time::Duration::from_millis(crate::domain::limits::PLATFORM_STATEMENT_TIMEOUT_MS),
    };
    let loader = TenantLoader::create(admin_conn, names)?;
    let counted = loader.connect().and_then(|mut tenant| {
        let pid: i32 = tenant
            .query_one("SELECT pg_catalog.pg_backend_pid()", &[])?
            .get(0);
        let mut tx = tenant
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        if let Some(s) = snapshot {
            tx.batch_execute(&format!("SET TRANSACTION SNAPSHOT {}", quote_literal(s)))?;
        }
        let mut rows = BTreeMap::new();
        for table in &tables {
            let deadline = Deadline::start(admin_conn, pid, limit);
            let counted = count_each(&mut tx, std::slice::from_ref(table));
            if deadline.stop() {
                // The tenant's code kept the count past the platform's statement timeout.
                return Err(crate::domain::error::busy());
            }
            rows.extend(counted?);
        }
        tx.commit()?;
        Ok(rows)
    });
    let removed = loader.remove();
    let counted = counted?;
    removed?;
    Ok(counted)
}

/// The end of a load login's session, through a platform session, if one statement of it runs
/// longer than `limit` (a little more: the server's own statement timeout comes first when it
/// can). The tenant's code runs in that session, and no setting bounds it there: it can catch
/// the statement timeout's cancel (`EXCEPTION WHEN query_canceled`) and go on, or turn the
/// timeout off for the next statement (`set_config`), and the watchdog leaves load logins to
/// the platform. Only `pg_terminate_backend` ends it for sure.
struct Deadline {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<bool>,
}

impl Deadline {
    fn start(admin_conn: &str, pid: i32, limit: std::time::Duration) -> Deadline {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let admin_conn = admin_conn.to_string();
        let thread = std::thread::spawn(move || {
            let margin = std::time::Duration::from_secs(1);
            match stopped.recv_timeout(limit + margin) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(mut admin) = connect(&admin_conn, None) {
                        let _ = end_sessions(&mut admin, Sessions::Pid(pid), None);
                    }
                    true
                }
                _ => false,
            }
        });
        Deadline { stop, thread }
    }

    /// Stop watching; whether the session was ended.
    fn stop(self) -> bool {
        let _ = self.stop.send(());
        self.thread.join().unwrap_or(true)
    }
}

/// Rows of every table a copy must carry: the extension's data tables (counted on the
/// platform session `db`) and the tenant's (counted as the tenant: [`count_tenant_rows`]).
pub(crate) fn count_all_rows(
    db: &mut impl postgres::GenericClient,
    admin_conn: &str,
    names: &WorkspaceNames,
) -> Result<BTreeMap<String, i64>> {
    let mut rows = count_extension_rows(db)?;
    rows.extend(count_tenant_rows(db, admin_conn, names, None)?);
    Ok(rows)
}

/// Rows of each table, named as `regclass` text prints them with the search path
/// `pg_catalog, pg_temp` (quoted and qualified).
pub(crate) fn count_each(
    db: &mut impl postgres::GenericClient,
    tables: &[String],
) -> Result<BTreeMap<String, i64>> {
    db.batch_execute("SET search_path = pg_catalog, pg_temp")?;
    let mut rows = BTreeMap::new();
    for t in tables {
        let n: i64 = db
            .query_one(&format!("SELECT count(*) FROM {t}"), &[])?
            .get(0);
        rows.insert(t.clone(), n);
    }
    Ok(rows)
}

/// Every table of the backup has as many rows after the restore (the migrations log may
/// have more: the update appends to it).
pub(crate) fn verify_rows(
    expected: &BTreeMap<String, i64>,
    got: &BTreeMap<String, i64>,
) -> Result<()> {
    for (table, n) in expected {
        let have = got.get(table).copied().unwrap_or(-1);
        let ok = if table == "dl_meta.schema_migrations" {
            have >= *n
        } else {
            have == *n
        };
        if !ok {
            return Err(Error::new(
                ErrorCode::Internal,
                format!("restore verification failed: {table} has {have} rows, the backup {n}"),
            ));
        }
    }
    Ok(())
}
