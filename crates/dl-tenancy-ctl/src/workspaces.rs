//! A workspace's lifecycle: status, provision (idempotent, resumable), metadata, sql-schema,
//! list and deprovision, each serialized per workspace by the workspace lock.

use crate::connection::connect;
use crate::control::LOCK_WORKSPACE;
use crate::credentials::ensure_login;
use crate::error::{Error, ErrorCode, Result};
use crate::fences::{workspace_limits, Limits, SESSION_PRELOAD};
use crate::names::{
    new_handle, quote_ident, quote_literal, validate_workspace_id, Kind, Slot, WorkspaceNames,
    OPAQUE_PREFIX,
};
use crate::servers::{EXTENSION, TEMPLATE_DB};
use crate::suspension::suspended_error;
use crate::types::{
    Endpoint, Metadata, RoleNames, Server, WorkspaceEntry, WorkspaceList, WorkspaceStatus,
};
use crate::Tenancy;
use postgres::Client;
use std::collections::BTreeMap;

/// Environment variable naming a fault point where the process exits at once (tests only).
pub const FAULT_ENV: &str = "DL_TENANCY_FAULT";

/// Exit the process at a named point when `DL_TENANCY_FAULT` says so: a simulated crash
/// half-way for the idempotency tests. Only in test builds (feature `fault-injection`).
#[cfg(feature = "fault-injection")]
pub(crate) fn fault_point(name: &str) {
    if std::env::var(FAULT_ENV).as_deref() == Ok(name) {
        eprintln!("{{\"error\":{{\"code\":\"simulated_crash\",\"message\":\"{name}\"}}}}");
        std::process::exit(97);
    }
}

#[cfg(not(feature = "fault-injection"))]
pub(crate) fn fault_point(_name: &str) {}

/// Whether the workspace's tenants may connect to its database on the server `admin` is on
/// (CONNECT for its group role): shut while a move copies or a suspension holds.
pub(crate) fn set_tenant_connect(
    admin: &mut Client,
    names: &WorkspaceNames,
    allowed: bool,
) -> Result<()> {
    let (verb, prep) = if allowed {
        ("GRANT", "TO")
    } else {
        ("REVOKE", "FROM")
    };
    admin.batch_execute(&format!(
        "{verb} CONNECT ON DATABASE {} {prep} {}",
        quote_ident(&names.database()),
        quote_ident(&names.workspace_role())
    ))?;
    Ok(())
}

pub(crate) fn not_provisioned(ws: &str) -> Error {
    Error::new(
        ErrorCode::NotProvisioned,
        format!("workspace {ws} is not provisioned; run provision"),
    )
}

/// A state other than `active` as an error for operations that need an active workspace.
fn require_active(ws: &str, state: Option<&str>, message: Option<&str>) -> Result<()> {
    match state {
        Some("active") => Ok(()),
        Some("suspended" | "purging") => Err(suspended_error(ws, None)),
        Some("provisioning") => Err(Error::new(
            ErrorCode::ProvisioningInProgress,
            format!("workspace {ws} is being provisioned (or an attempt stopped half-way; run provision)"),
        )),
        Some("error") => Err(Error::new(
            ErrorCode::ProvisioningFailed,
            format!(
                "provisioning workspace {ws} failed: {}; run provision again",
                message.unwrap_or("unknown error")
            ),
        )),
        _ => Err(not_provisioned(ws)),
    }
}

fn lock_workspace(ctl: &mut Client, ws: &str) -> Result<()> {
    ctl.batch_execute("SET lock_timeout = '60s'")?;
    ctl.execute(
        "SELECT pg_catalog.pg_advisory_lock($1, pg_catalog.hashtext($2))",
        &[&LOCK_WORKSPACE, &ws],
    )
    .map_err(|e| match Error::from(e) {
        e if e.sqlstate() == Some("55P03") => Error::new(
            ErrorCode::ProvisioningInProgress,
            "another operation on this workspace is still running; retry later",
        ),
        e => e,
    })?;
    ctl.batch_execute("RESET lock_timeout")?;
    Ok(())
}

fn unlock_workspace(ctl: &mut Client, ws: &str) {
    let _ = ctl.execute(
        "SELECT pg_catalog.pg_advisory_unlock($1, pg_catalog.hashtext($2))",
        &[&LOCK_WORKSPACE, &ws],
    );
}

/// Run `f` holding the workspace's lock (one operation on a workspace at a time, across
/// processes), and release the lock whatever `f` returns.
pub(crate) fn with_workspace_lock<T>(
    ctl: &mut Client,
    ws: &str,
    f: impl FnOnce(&mut Client) -> Result<T>,
) -> Result<T> {
    lock_workspace(ctl, ws)?;
    let res = f(ctl);
    unlock_workspace(ctl, ws);
    res
}

/// A provisioning step (provision, undelete) failed: the workspace shows `error`, and keeps
/// the message for operators (`list`; `status` never shows it).
pub(crate) fn record_failure(ctl: &mut Client, ws: &str, e: &Error) {
    let _ = ctl.execute(
        "UPDATE workspaces SET state = 'error', error_message = $2, updated_at = now()
          WHERE id = $1 AND state IN ('provisioning', 'error')",
        &[&ws, &e.to_string()],
    );
}

impl Tenancy {
    /// `status`: the recorded state, and for `active` a live check that the database exists
    /// and has the extension (`not_provisioned` with a message when it was dropped by hand).
    pub fn status(&self, workspace: &str) -> Result<WorkspaceStatus> {
        validate_workspace_id(workspace)?;
        let mut ctl = self.control()?;
        let row = ctl.query_opt(
            "SELECT server_id, state, database_name, extension_version, purge_after::text
               FROM workspaces WHERE id = $1",
            &[&workspace],
        )?;
        let mut st = WorkspaceStatus {
            workspace: workspace.to_string(),
            status: "not_provisioned".into(),
            database: None,
            extension_version: None,
            server_id: None,
            message: None,
            purge_after: None,
        };
        let Some(row) = row else { return Ok(st) };
        let state: String = row.get(1);
        if state == "deleted" {
            return Ok(st);
        }
        let server_id: String = row.get(0);
        let names = WorkspaceNames::recorded(workspace, row.get(2))?;
        st.database = Some(names.database());
        st.server_id = Some(server_id.clone());
        st.status = state.clone();
        st.extension_version = row.get(3);
        if state == "suspended" || state == "purging" {
            // Deleted, data kept: no live check (the logins are refused on purpose).
            st.status = "suspended".into();
            st.purge_after = row.get(4);
            st.message = Some(suspended_error(workspace, st.purge_after.as_deref()).message);
            return Ok(st);
        }
        if state == "error" {
            // The stored error is the operator's (`dl-tenancy list`): it can name hosts, paths
            // and SQL. A tenant sees only what to do.
            st.message = Some(PROVISIONING_FAILED.into());
        }
        if state == "active" {
            let server = self.load_server(&mut ctl, &server_id)?;
            let logins = active_logins(&mut ctl, workspace)?;
            drop(ctl);
            match live_extension_version(&server, &names)? {
                Some(v) => {
                    st.extension_version = Some(v);
                    let mut admin = connect(&server.admin_conn, None)?;
                    if !logins_usable(&mut admin, &names, &logins)? {
                        st.status = "error".into();
                        st.message = Some(CREDENTIALS_BROKEN.into());
                    }
                }
                None => {
                    st.status = "not_provisioned".into();
                    st.extension_version = None;
                    st.message = Some(format!(
                        "database {} is missing or has no {EXTENSION} extension (removed outside dl-tenancy); run provision",
                        names.database()
                    ));
                }
            }
        }
        Ok(st)
    }

    /// `provision`: idempotent; serialized per workspace by an advisory lock in `dl_control`.
    /// Creates what is missing (database from the template, roles, grants, credentials) and
    /// ends `active`.
    pub fn provision(&self, workspace: &str) -> Result<WorkspaceStatus> {
        validate_workspace_id(workspace)?;
        let mut ctl = self.control()?;
        with_workspace_lock(&mut ctl, workspace, |ctl| {
            let res = self.provision_locked(ctl, workspace);
            if let Err(e) = &res {
                record_failure(ctl, workspace, e);
            }
            res
        })
    }

    pub(crate) fn provision_locked(&self, ctl: &mut Client, ws: &str) -> Result<WorkspaceStatus> {
        let row = ctl.query_opt(
            "SELECT server_id, state, database_name, purge_after::text FROM workspaces WHERE id = $1",
            &[&ws],
        )?;
        // A deleted workspace comes back only through an operator's `undelete`: a tenant's
        // `provision` must not revive it (nor make a new one beside its kept data).
        if let Some(r) = &row {
            if matches!(r.get::<_, &str>(1), "suspended" | "purging") {
                return Err(suspended_error(ws, r.get(3)));
            }
        }
        // A recorded workspace keeps its names; a new one (or one deleted before) gets fresh
        // opaque ones, and nothing of those names may exist yet.
        let (server_id, state, names) = match &row {
            Some(r) if r.get::<_, &str>(1) != "deleted" => (
                r.get::<_, String>(0),
                Some(r.get::<_, String>(1)),
                WorkspaceNames::recorded(ws, r.get(2))?,
            ),
            _ => (
                self.place(ctl)?,
                None,
                WorkspaceNames::opaque(ws, &new_handle())?,
            ),
        };
        let names = &names;
        let server = self.load_server(ctl, &server_id)?;
        if state.as_deref() == Some("active") {
            if let Some(version) = self.verify_complete(ctl, &server, names)? {
                let limits = workspace_limits(ctl, ws)?;
                fence_workspace(&mut connect(&server.admin_conn, None)?, names, &limits)?;
                return Ok(active_status(names, version, server_id));
            }
        }
        let handle = names
            .database()
            .strip_prefix(OPAQUE_PREFIX)
            .map(str::to_string);
        ctl.execute(
            "INSERT INTO workspaces (id, server_id, database_name, handle, state)
             VALUES ($1, $2, $3, $4, 'provisioning')
             ON CONFLICT (id) DO UPDATE
                SET server_id = EXCLUDED.server_id, database_name = EXCLUDED.database_name,
                    handle = coalesce(EXCLUDED.handle, workspaces.handle),
                    state = 'provisioning', error_message = NULL,
                    updated_at = now()",
            &[&ws, &server_id, &names.database(), &handle],
        )?;
        if state.is_none() {
            // A new (or re-created) workspace: no stale credentials, and nothing of its names
            // on the server that dl-tenancy did not create.
            ctl.execute("DELETE FROM credentials WHERE workspace_id = $1", &[&ws])?;
            refuse_to_adopt(&mut connect(&server.admin_conn, None)?, names)?;
        }
        fault_point("after_record");
        let version = self.ensure_workspace(ctl, &server, names)?;
        ctl.execute(
            "UPDATE workspaces SET state = 'active', extension_version = $2, error_message = NULL,
                    updated_at = now() WHERE id = $1",
            &[&ws, &version],
        )?;
        Ok(active_status(names, version, server_id))
    }

    /// Everything an active workspace needs is there: database + extension, roles, credentials.
    fn verify_complete(
        &self,
        ctl: &mut Client,
        server: &Server,
        names: &WorkspaceNames,
    ) -> Result<Option<String>> {
        let active = active_logins(ctl, &names.workspace)?;
        let mut admin = connect(&server.admin_conn, None)?;
        let wanted = names.all_roles();
        let roles: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname = ANY($1)",
                &[&wanted],
            )?
            .get(0);
        if roles != wanted.len() as i64 || !logins_usable(&mut admin, names, &active)? {
            return Ok(None);
        }
        drop(admin);
        live_extension_version(server, names)
    }

    pub(crate) fn ensure_workspace(
        &self,
        ctl: &mut Client,
        server: &Server,
        names: &WorkspaceNames,
    ) -> Result<String> {
        let mut admin = connect(&server.admin_conn, None)?;
        self.ensure_template(ctl, &mut admin, server)?;
        let db = names.database();
        let qdb = quote_ident(&db);
        let wrole = names.workspace_role();
        let qwrole = quote_ident(&wrole);

        // The NOLOGIN role named like the database (pg_hba samerole).
        match admin.query_opt(
            "SELECT rolcanlogin OR rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls
               FROM pg_catalog.pg_roles WHERE rolname = $1",
            &[&wrole],
        )? {
            None => admin.batch_execute(&format!("CREATE ROLE {qwrole} NOLOGIN"))?,
            Some(r) if r.get::<_, bool>(0) => {
                return Err(Error::new(
                    ErrorCode::Conflict,
                    format!("role {wrole} exists and is not a plain NOLOGIN group role"),
                ))
            }
            Some(_) => {}
        }

        if !crate::servers::database_exists(&mut admin, &db)? {
            admin.batch_execute(&format!(
                "CREATE DATABASE {qdb} TEMPLATE {}",
                quote_ident(TEMPLATE_DB)
            ))?;
        }
        fault_point("after_create_database");
        admin.batch_execute(&format!(
            "REVOKE ALL ON DATABASE {qdb} FROM PUBLIC;
             GRANT CONNECT ON DATABASE {qdb} TO {qwrole}, dl_platform_runtime, dl_pooler_auth"
        ))?;

        let version = {
            let mut wsdb = connect(&server.admin_conn, Some(&db))?;
            let q = "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = $1";
            match wsdb.query_opt(q, &[&EXTENSION])? {
                Some(r) => r.get::<_, String>(0),
                None => {
                    wsdb.batch_execute(&format!("CREATE EXTENSION {}", quote_ident(EXTENSION)))?;
                    wsdb.query_one(q, &[&EXTENSION])?.get(0)
                }
            }
        };

        fence_workspace(&mut admin, names, &workspace_limits(ctl, &names.workspace)?)?;
        fault_point("after_roles");
        for kind in Kind::ALL {
            self.ensure_credential(ctl, &mut admin, names, kind)?;
        }
        Ok(version)
    }

    /// An active workspace's recorded names and server (`not_provisioned` otherwise).
    pub(crate) fn active_workspace(
        &self,
        ctl: &mut Client,
        ws: &str,
    ) -> Result<(WorkspaceNames, String)> {
        validate_workspace_id(ws)?;
        let row = ctl.query_opt(
            "SELECT server_id, state, error_message, database_name FROM workspaces WHERE id = $1",
            &[&ws],
        )?;
        let Some(row) = row else {
            return Err(not_provisioned(ws));
        };
        let state: String = row.get(1);
        require_active(ws, Some(&state), row.get(2))?;
        Ok((WorkspaceNames::recorded(ws, row.get(3))?, row.get(0)))
    }

    /// `connection-uris metadata`: where and as whom to connect; no secrets.
    pub fn metadata(&self, workspace: &str) -> Result<Metadata> {
        let mut ctl = self.control()?;
        let (names, server_id) = self.active_workspace(&mut ctl, workspace)?;
        let server = self.load_server(&mut ctl, &server_id)?;
        let version: Option<String> = ctl
            .query_one(
                "SELECT extension_version FROM workspaces WHERE id = $1",
                &[&workspace],
            )?
            .get(0);
        let mut roles = BTreeMap::new();
        for kind in Kind::ALL {
            let slot = self.active_slot(&mut ctl, workspace, kind)?;
            roles.insert(
                kind.as_str().to_string(),
                RoleNames {
                    login: names.login(kind, slot),
                    standby_login: names.login(kind, slot.other()),
                    group_role: kind.group_role().to_string(),
                },
            );
        }
        Ok(Metadata {
            workspace: workspace.into(),
            status: "active".into(),
            project_id: format!("{}/{}", server.id, names.database()),
            server_id: server.id.clone(),
            database: names.database(),
            extension_version: version,
            direct: Endpoint {
                host: server.host.clone(),
                port: server.port,
            },
            pooled: self.pooler_of(&mut ctl, workspace, &server)?,
            workspace_role: names.workspace_role(),
            roles,
        })
    }

    /// `sql-schema`: the extension's `public.dl_sql_schema()` from the workspace's database.
    pub fn sql_schema(&self, workspace: &str) -> Result<serde_json::Value> {
        let mut ctl = self.control()?;
        let (names, server_id) = self.active_workspace(&mut ctl, workspace)?;
        let server = self.load_server(&mut ctl, &server_id)?;
        drop(ctl);
        let mut db = connect(&server.admin_conn, Some(&names.database())).map_err(|e| {
            if e.sqlstate() == Some("3D000") {
                not_provisioned(workspace)
            } else {
                e
            }
        })?;
        Ok(db.query_one("SELECT public.dl_sql_schema()", &[])?.get(0))
    }

    /// `list`: every workspace not deleted, with its recorded state.
    pub fn list(&self) -> Result<WorkspaceList> {
        let mut ctl = self.control()?;
        let rows = ctl.query(
            "SELECT id, state, server_id, database_name, extension_version, updated_at::text
               FROM workspaces WHERE state <> 'deleted' ORDER BY id",
            &[],
        )?;
        Ok(WorkspaceList {
            workspaces: rows
                .iter()
                .map(|r| WorkspaceEntry {
                    workspace: r.get(0),
                    state: r.get(1),
                    server_id: r.get(2),
                    database: r.get(3),
                    extension_version: r.get(4),
                    updated_at: r.get(5),
                })
                .collect(),
        })
    }
}

/// What `provision` answers for a workspace it left active.
fn active_status(names: &WorkspaceNames, version: String, server_id: String) -> WorkspaceStatus {
    WorkspaceStatus {
        workspace: names.workspace.clone(),
        status: "active".into(),
        database: Some(names.database()),
        extension_version: Some(version),
        server_id: Some(server_id),
        message: None,
        purge_after: None,
    }
}

/// The workspace's fences ([`crate::fences`]), put back as they should be: the database's
/// connection cap and preloaded guard, and every login's attributes, cap and defaults.
pub(crate) fn fence_workspace(
    admin: &mut Client,
    names: &WorkspaceNames,
    limits: &Limits,
) -> Result<()> {
    let (preload, library) = SESSION_PRELOAD;
    admin.batch_execute(&format!(
        "ALTER DATABASE {qdb} CONNECTION LIMIT {};
         ALTER DATABASE {qdb} SET {preload} = {}",
        limits.database_connections,
        quote_literal(library),
        qdb = quote_ident(&names.database()),
    ))?;
    for kind in Kind::ALL {
        for slot in [Slot::A, Slot::B] {
            ensure_login(admin, names, kind, slot, limits)?;
        }
    }
    Ok(())
}

/// A new workspace's names must be free on its server: dl-tenancy never takes over a role or
/// database it did not create (the names are random, so a taken one means somebody made it on
/// purpose).
fn refuse_to_adopt(admin: &mut Client, names: &WorkspaceNames) -> Result<()> {
    let taken: Vec<String> = admin
        .query(
            "SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname = ANY($1)
             UNION ALL
             SELECT datname::text FROM pg_catalog.pg_database WHERE datname = $2",
            &[&names.all_roles(), &names.database()],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if taken.is_empty() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::Conflict,
            format!(
                "{} already exist(s) on the server and were not created by dl-tenancy; refusing to use them",
                taken.join(", ")
            ),
        ))
    }
}

/// What `status` says of a workspace whose provisioning failed.
const PROVISIONING_FAILED: &str = "provisioning did not finish; run provision again";

/// What `status` says of an active workspace whose logins were changed outside dl-tenancy.
const CREDENTIALS_BROKEN: &str =
    "the workspace's logins were changed outside dl-tenancy; run provision to repair them";

/// The logins holding the workspace's live credentials, as the control database records them.
fn active_logins(ctl: &mut Client, ws: &str) -> Result<Vec<String>> {
    Ok(ctl
        .query(
            "SELECT login_name FROM credentials WHERE workspace_id = $1 AND active",
            &[&ws],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// One active login per kind, each existing, able to log in, and still belonging to the
/// workspace and its group.
fn logins_usable(admin: &mut Client, names: &WorkspaceNames, logins: &[String]) -> Result<bool> {
    if logins.len() != Kind::ALL.len() {
        return Ok(false);
    }
    let usable: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_roles AS r
              WHERE r.rolname = ANY($1) AND r.rolcanlogin AND NOT r.rolsuper
                AND pg_catalog.pg_has_role(r.oid, $2::text, 'MEMBER')
                AND (pg_catalog.pg_has_role(r.oid, 'dl_tenant_read', 'MEMBER')
                     OR pg_catalog.pg_has_role(r.oid, 'dl_tenant_override', 'MEMBER'))
                AND (r.rolvaliduntil IS NULL OR r.rolvaliduntil > pg_catalog.now())",
            &[&logins, &names.workspace_role()],
        )?
        .get(0);
    Ok(usable == logins.len() as i64)
}

/// The extension version in the workspace database, `None` if the database or extension is gone.
fn live_extension_version(server: &Server, names: &WorkspaceNames) -> Result<Option<String>> {
    let mut admin = connect(&server.admin_conn, None)?;
    let exists = crate::servers::database_exists(&mut admin, &names.database())?;
    drop(admin);
    if !exists {
        return Ok(None);
    }
    let mut db = match connect(&server.admin_conn, Some(&names.database())) {
        Ok(c) => c,
        Err(e) if e.sqlstate() == Some("3D000") => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(db
        .query_opt(
            "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = $1",
            &[&EXTENSION],
        )?
        .map(|r| r.get(0)))
}
