//! Usage per workspace: database size, connections, rows in the extension's data tables and
//! the last activity, read from the server's catalog at call time (nothing is sampled or
//! stored). `usage --workspace W` and `GET /api/v2/tenants/usage` show one workspace;
//! `usage` without a workspace lists every workspace per server, for the operator, from the
//! server's shared catalog alone (one query per server: it enters no workspace database, so
//! it has no row counts and no last activity).

use crate::base::connection::connect;
use crate::control::records::{workspaces_by_server, Recorded};
use crate::domain::error::{Error, ErrorCode, Result};
use crate::domain::names::EXTENSION;
use crate::domain::names::{validate_workspace_id, WorkspaceNames};
use crate::domain::types::Storage;
use crate::ops::Tenancy;
use crate::server::catalog::database_figures;
use postgres::Client;
use serde::Serialize;
use std::collections::BTreeMap;

/// One workspace's figures from the server's shared catalog: all the operator-wide view has.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WorkspaceSummary {
    pub workspace: String,
    /// The recorded state: `active` or `suspended` (a deleted workspace keeps its data).
    pub status: String,
    pub server_id: String,
    pub database: String,
    /// `pg_database_size` of the workspace database.
    pub database_size_bytes: i64,
    /// Sessions on the database now: direct ones and the pooler's server connections
    /// (not the apps' connections to the pooler, which share those), the tool's own excluded.
    pub connections: i64,
    /// The database's connection cap (`dl-tenancy limits`).
    pub connection_limit: i32,
    /// Its storage quota and state.
    pub storage: Storage,
}

/// One workspace's usage: its summary, and what needs entering its database.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WorkspaceUsage {
    #[serde(flatten)]
    pub summary: WorkspaceSummary,
    /// Exact row counts (`count(*)`) of every table the extension keeps data in (those it
    /// registers with `pg_extension_config_dump`), by qualified name.
    pub rows: BTreeMap<String, i64>,
    /// The latest of: the newest `updated_at`/`changed_at` in those tables, and the last
    /// state change of a session on the database now. `null`: no rows and no sessions.
    pub last_activity: Option<String>,
}

/// One server's workspaces in the operator-wide view.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServerUsage {
    pub server_id: String,
    pub workspaces: Vec<WorkspaceSummary>,
    /// Workspaces whose figures could not be read, with why (operator output only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<UsageError>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UsageError {
    pub workspace: String,
    pub error: String,
}

/// `usage` without a workspace.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FleetUsage {
    pub servers: Vec<ServerUsage>,
}

/// The figures of [`WorkspaceUsage`], read on a superuser connection to its database.
struct Figures {
    size: i64,
    connections: i64,
    limit: i32,
    rows: BTreeMap<String, i64>,
    last: Option<String>,
}

fn measure(db: &mut Client) -> Result<Figures> {
    // Names below come back from regclass: qualified, since no schema of ours is on the path.
    db.batch_execute("SET search_path = pg_catalog, pg_temp")?;
    let row = db.query_one(
        "SELECT pg_catalog.pg_database_size(d.oid), d.datconnlimit,
                (SELECT count(*) FROM pg_catalog.pg_stat_activity AS a
                  WHERE a.datname = d.datname AND a.pid <> pg_catalog.pg_backend_pid()),
                (SELECT max(a.state_change)::text FROM pg_catalog.pg_stat_activity AS a
                  WHERE a.datname = d.datname AND a.pid <> pg_catalog.pg_backend_pid())
           FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()",
        &[],
    )?;
    let (size, limit, connections, last_session): (i64, i32, i64, Option<String>) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    // The extension's data tables, with the column that dates their rows (if any).
    let tables = db.query(
        "SELECT c.oid::regclass::text,
                (SELECT a.attname::text FROM pg_catalog.pg_attribute AS a
                  WHERE a.attrelid = c.oid AND a.attname IN ('updated_at', 'changed_at')
                    AND NOT a.attisdropped ORDER BY a.attname DESC LIMIT 1)
           FROM pg_catalog.pg_extension AS e
           CROSS JOIN LATERAL pg_catalog.unnest(e.extconfig) AS t(oid)
           JOIN pg_catalog.pg_class AS c ON c.oid = t.oid
          WHERE e.extname = $1 ORDER BY 1",
        &[&EXTENSION],
    )?;
    let mut rows = BTreeMap::new();
    let mut last = last_session;
    for t in tables {
        let name: String = t.get(0);
        let dated: Option<String> = t.get(1);
        let sql = match &dated {
            Some(col) => format!(
                "SELECT count(*), max({})::text FROM {name}",
                crate::plan::quote::quote_ident(col)
            ),
            None => format!("SELECT count(*), NULL::text FROM {name}"),
        };
        let r = db.query_one(&sql, &[])?;
        rows.insert(name, r.get(0));
        let newest: Option<String> = r.get(1);
        last = latest(last, newest, db)?;
    }
    Ok(Figures {
        size,
        connections,
        limit,
        rows,
        last,
    })
}

/// The later of two timestamps (text from the server), compared by the server.
fn latest(a: Option<String>, b: Option<String>, db: &mut Client) -> Result<Option<String>> {
    Ok(match (a, b) {
        (Some(a), Some(b)) => db
            .query_one(
                "SELECT greatest($1::text::timestamptz, $2::text::timestamptz)::text",
                &[&a, &b],
            )?
            .get(0),
        (a, b) => a.or(b),
    })
}

impl Tenancy {
    /// `usage --workspace W` and `GET /api/v2/tenants/usage`: one workspace's figures
    /// (an active or a suspended one).
    pub fn usage(&self, workspace: &str) -> Result<WorkspaceUsage> {
        validate_workspace_id(workspace)?;
        let mut ctl = self.control()?;
        let row = ctl
            .query_opt(
                "SELECT server_id, state, database_name FROM workspaces
                  WHERE id = $1 AND state IN ('active', 'suspended')",
                &[&workspace],
            )?
            .ok_or_else(|| crate::domain::error::not_provisioned(workspace))?;
        let server = self.load_server(&mut ctl, row.get(0))?;
        drop(ctl);
        let names = WorkspaceNames::recorded(workspace, row.get(2))?;
        self.usage_of(&server.admin_conn, &server.id, &names, row.get(1))
    }

    fn usage_of(
        &self,
        admin_conn: &str,
        server_id: &str,
        names: &WorkspaceNames,
        status: String,
    ) -> Result<WorkspaceUsage> {
        let mut db = connect(admin_conn, Some(&names.database())).map_err(|e| {
            if e.sqlstate() == Some("3D000") {
                Error::new(ErrorCode::NotProvisioned, missing(&names.workspace))
            } else {
                e
            }
        })?;
        let f = measure(&mut db)?;
        let database = names.database();
        let storage = database_figures(&mut db, &[database.as_str()])?
            .remove(&database)
            .map(|d| d.storage)
            .unwrap_or_default();
        Ok(WorkspaceUsage {
            summary: WorkspaceSummary {
                workspace: names.workspace.clone(),
                status,
                server_id: server_id.into(),
                database: names.database(),
                database_size_bytes: f.size,
                connections: f.connections,
                connection_limit: f.limit,
                storage,
            },
            rows: f.rows,
            last_activity: f.last,
        })
    }

    /// `usage`: every active or suspended workspace, per server, one query per server. A
    /// workspace whose figures cannot be read (its database is gone, its server does not
    /// answer) is listed under `errors` instead of failing the whole view.
    pub fn fleet_usage(&self) -> Result<FleetUsage> {
        let mut ctl = self.control()?;
        let listed = workspaces_by_server(&mut ctl)?;
        let mut servers = Vec::with_capacity(listed.len());
        for (server_id, workspaces) in listed {
            let server = self.load_server(&mut ctl, &server_id)?;
            servers.push(server_usage(&server.admin_conn, &server_id, workspaces));
        }
        Ok(FleetUsage { servers })
    }
}

fn missing(workspace: &str) -> String {
    format!("the database of workspace {workspace} is missing; run provision")
}

fn server_usage(admin_conn: &str, server_id: &str, workspaces: Vec<Recorded>) -> ServerUsage {
    let mut out = ServerUsage {
        server_id: server_id.into(),
        workspaces: vec![],
        errors: vec![],
    };
    let names: Vec<&str> = workspaces.iter().map(|w| w.database.as_str()).collect();
    let figures =
        connect(admin_conn, None).and_then(|mut admin| database_figures(&mut admin, &names));
    for Recorded {
        workspace,
        status,
        database,
    } in workspaces
    {
        let found = match &figures {
            Ok(f) => f.get(&database).cloned().ok_or_else(|| missing(&workspace)),
            Err(e) => Err(e.to_string()),
        };
        match found {
            Ok(f) => out.workspaces.push(WorkspaceSummary {
                workspace,
                status,
                server_id: server_id.into(),
                database,
                database_size_bytes: f.bytes,
                connections: f.sessions,
                connection_limit: f.connection_limit,
                storage: f.storage,
            }),
            Err(error) => out.errors.push(UsageError { workspace, error }),
        }
    }
    out
}
