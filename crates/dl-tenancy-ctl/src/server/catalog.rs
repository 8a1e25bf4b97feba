//! What a server has: roles, databases, the extension's version, sessions, read from its
//! catalog. Every catalog check of the library and every `pg_terminate_backend` is here.

use crate::base::connection::connect;
use crate::domain::error::{Error, ErrorCode, Result};
use crate::domain::names::{WorkspaceNames, EXTENSION};
use crate::domain::types::Server;
use crate::domain::types::Storage;
use crate::plan::{RoleSeen, Seen};
use postgres::types::Type;
use postgres::{Client, GenericClient};
use serde::Deserialize;

/// Whether a role of that name exists on the server `admin` is connected to.
pub(crate) fn role_exists(admin: &mut Client, role: &str) -> Result<bool> {
    Ok(admin
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
            &[&role],
        )?
        .is_some())
}

/// Whether a database of that name exists on the server `admin` is connected to.
pub(crate) fn database_exists(admin: &mut Client, db: &str) -> Result<bool> {
    Ok(admin
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1",
            &[&db],
        )?
        .is_some())
}

/// The extension's version in the database `db` is connected to, if it is installed.
pub(crate) fn extension_version(db: &mut impl GenericClient) -> Result<Option<String>> {
    Ok(db
        .query_opt(
            "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = $1",
            &[&EXTENSION],
        )?
        .map(|r| r.get(0)))
}

/// What the server has of a workspace: its roles and database (and, with `extension`, the
/// extension's version in that database).
pub(crate) fn observe(
    admin_conn: &str,
    admin: &mut Client,
    names: &WorkspaceNames,
    extension: bool,
) -> Result<Seen> {
    let mut seen = Seen::default();
    for r in admin.query(
        "SELECT rolname::text, rolcanlogin, rolsuper, rolcreaterole OR rolcreatedb OR rolbypassrls
           FROM pg_catalog.pg_roles WHERE rolname = ANY($1)",
        &[&names.all_roles()],
    )? {
        let role = RoleSeen {
            can_login: r.get(1),
            superuser: r.get(2),
            powers: r.get(3),
        };
        seen.roles.insert(r.get(0), role);
    }
    seen.database = database_exists(admin, &names.database())?;
    if extension && seen.database {
        seen.extension = extension_version(&mut connect(admin_conn, Some(&names.database()))?)?;
    }
    Ok(seen)
}

/// The extension version in the workspace database, `None` if the database or extension is gone.
pub(crate) fn live_extension_version(
    server: &Server,
    names: &WorkspaceNames,
) -> Result<Option<String>> {
    if !database_exists(&mut connect(&server.admin_conn, None)?, &names.database())? {
        return Ok(None);
    }
    match connect(&server.admin_conn, Some(&names.database())) {
        Ok(mut db) => extension_version(&mut db),
        Err(e) if e.sqlstate() == Some("3D000") => Ok(None),
        Err(e) => Err(e),
    }
}

/// The source's extension is still at the version the copy started from (an `upgrade` could
/// have run meanwhile; its changes would not be in the stream).
pub(crate) fn same_version(source_db: &mut Client, from_version: &str) -> Result<()> {
    let now = extension_version(source_db)?.unwrap_or_default();
    if now != from_version {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!("the source's {EXTENSION} went from {from_version} to {now} during the move; run it again"),
        ));
    }
    Ok(())
}

/// Whose sessions to end.
pub(crate) enum Sessions<'a> {
    /// Every session on a database.
    OnDatabase(&'a str),
    /// The clients' sessions on a database (direct and the pooler's server connections),
    /// not its replication workers.
    ClientsOn(&'a str),
    /// Every session of these logins, wherever.
    OfLogins(&'a [String]),
    /// Both: the workspace's database and its logins anywhere.
    OfWorkspace(&'a WorkspaceNames),
    /// One backend.
    Pid(i32),
}

/// End sessions (never this one, nor `keep`); returns how many were asked to end. Ending is
/// `pg_terminate_backend`: a tenant's code cannot catch it.
pub(crate) fn end_sessions(
    admin: &mut Client,
    which: Sessions<'_>,
    keep: Option<i32>,
) -> Result<i64> {
    let keep = keep.unwrap_or(0);
    let (filter, db, logins): (&str, String, Vec<String>) = match which {
        Sessions::OnDatabase(db) => ("datname = $1", db.to_string(), vec![]),
        Sessions::ClientsOn(db) => (
            "datname = $1 AND backend_type = 'client backend'",
            db.to_string(),
            vec![],
        ),
        Sessions::OfLogins(logins) => ("usename = ANY($2)", String::new(), logins.to_vec()),
        Sessions::OfWorkspace(names) => (
            "(datname = $1 OR usename = ANY($2))",
            names.database(),
            names.all_logins(),
        ),
        Sessions::Pid(pid) => {
            admin.execute("SELECT pg_catalog.pg_terminate_backend($1)", &[&pid])?;
            return Ok(1);
        }
    };
    // Materialized first: the list is taken before any backend is signalled.
    let sql = format!(
        "WITH s AS MATERIALIZED (
             SELECT pid FROM pg_catalog.pg_stat_activity
              WHERE {filter} AND pid <> pg_catalog.pg_backend_pid() AND pid <> $3)
         SELECT count(pg_catalog.pg_terminate_backend(pid)) FROM s"
    );
    // Typed up front: a filter leaves some parameters unused.
    let statement = admin.prepare_typed(&sql, &[Type::TEXT, Type::TEXT_ARRAY, Type::INT4])?;
    Ok(admin.query_one(&statement, &[&db, &logins, &keep])?.get(0))
}

/// What the server's shared catalog says of one database, without entering it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DatabaseFigures {
    pub bytes: i64,
    pub connection_limit: i32,
    /// Client sessions on it now (direct ones and a pooler's server connections).
    pub sessions: i64,
    pub storage: Storage,
}

/// The storage quota of each named database ([`STORAGE_LIMIT_SETTING`]) and its state as
/// the extension's watchdog last measured it (`SHOW dl_tenancy.storage`).
const FIGURES: &str = "SELECT d.datname::text, pg_catalog.pg_database_size(d.oid), d.datconnlimit,
        (SELECT count(*) FROM pg_catalog.pg_stat_activity AS a
          WHERE a.datid = d.oid AND a.backend_type = 'client backend'),
        d.oid::bigint,
        (SELECT pg_catalog.substr(c, 29)::bigint
           FROM pg_catalog.pg_db_role_setting AS s, pg_catalog.unnest(s.setconfig) AS c
          WHERE s.setdatabase = d.oid AND s.setrole = 0
            AND c ~ '^dl_tenancy\\.storage_limit_mb=[0-9]{1,9}$'),
        pg_catalog.current_setting('dl_tenancy.storage', true)
   FROM pg_catalog.pg_database AS d WHERE d.datname = ANY($1)";

/// [`DatabaseFigures`] of the named databases, in one query whatever their number; a name
/// with no database (dropped meanwhile) is left out.
pub(crate) fn database_figures(
    admin: &mut Client,
    names: &[&str],
) -> Result<std::collections::BTreeMap<String, DatabaseFigures>> {
    let rows = admin.query(FIGURES, &[&names])?;
    // The watchdog's states, the same text on every row: parsed once.
    let measured: Vec<Measured> = match rows.first().and_then(|r| r.get::<_, Option<String>>(6)) {
        Some(json) => serde_json::from_str(&json).unwrap_or_default(),
        None => vec![],
    };
    Ok(rows
        .iter()
        .map(|r| {
            let bytes: Option<i64> = r.get(1);
            let oid: i64 = r.get(4);
            let limit_mb: Option<i64> = r.get(5);
            let figures = DatabaseFigures {
                bytes: bytes.unwrap_or(0),
                connection_limit: r.get(2),
                sessions: r.get(3),
                storage: storage(oid, limit_mb, &measured),
            };
            (r.get(0), figures)
        })
        .collect())
}

/// One database of `SHOW dl_tenancy.storage`.
#[derive(Debug, Deserialize)]
struct Measured {
    database_oid: i64,
    state: String,
}

fn storage(oid: i64, limit_mb: Option<i64>, measured: &[Measured]) -> Storage {
    let limit_bytes = limit_mb.unwrap_or(0) * 1024 * 1024;
    let state = match measured.iter().find(|m| m.database_oid == oid) {
        _ if limit_bytes == 0 => "none",
        Some(m) => m.state.as_str(),
        // No watchdog on the server (the library not preloaded), or not measured yet.
        None => "unmeasured",
    };
    Storage {
        limit_bytes,
        state: state.into(),
    }
}
